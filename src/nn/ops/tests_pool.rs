//! [`max_pool2d`]'s row-phase kernel against the scalar window scan it replaced (the rule of
//! PyTorch's CPU kernel), with ties and NaNs, and on a deferred batch norm + ReLU.
use dfdx::prelude::Backward;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::tests::{rand_vec, weighted_loss};
use super::tests_deferred::run;
use super::*;
use crate::nn::params::{BatchNorm2d, Conv2d, Store};
use crate::nn::var::{Shape4, Var};

/// Max pooling one window at a time: taps in row-major order, a strict `>` or a NaN takes over.
/// Returns the output and, for each output, the plane index it came from.
fn scan(x: &[f32], sh: Shape4, (k, s, p): (usize, usize, usize)) -> (Vec<f32>, Vec<usize>) {
    let (ho, wo) = ((sh.h + 2 * p - k) / s + 1, (sh.w + 2 * p - k) / s + 1);
    let (mut out, mut arg) = (vec![], vec![]);
    for plane in x.chunks(sh.h * sh.w) {
        for oy in 0..ho {
            for ox in 0..wo {
                let (mut best, mut at) = (f32::NEG_INFINITY, 0);
                for ky in 0..k {
                    for kx in 0..k {
                        let (iy, ix) = ((oy * s + ky) as isize - p as isize, (ox * s + kx) as isize - p as isize);
                        if iy < 0 || ix < 0 || iy >= sh.h as isize || ix >= sh.w as isize {
                            continue;
                        }
                        let j = iy as usize * sh.w + ix as usize;
                        if plane[j] > best || plane[j].is_nan() {
                            (best, at) = (plane[j], j);
                        }
                    }
                }
                out.push(best);
                arg.push(at);
            }
        }
    }
    (out, arg)
}

/// Values in a few levels (many ties, as after a ReLU), some NaNs and infinities; every window
/// shape the zoo and torchvision use, and uneven ones.
#[test]
fn max_pool_matches_the_window_scan() {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    for (k, s, p) in [(3, 2, 1), (2, 2, 0), (3, 1, 1), (3, 3, 0), (5, 2, 2), (2, 1, 1), (4, 3, 1)] {
        for (h, w) in [(7, 9), (12, 12), (5, 16), (33, 6)] {
            let sh = Shape4::new(2, 3, h, w);
            let x: Vec<f32> = (0..sh.numel())
                .map(|_| match rng.gen_range(0..40) {
                    0 => f32::NAN,
                    1 => f32::INFINITY,
                    2 => f32::NEG_INFINITY,
                    _ => rng.gen_range(-3..4).max(0) as f32 * 0.5,
                })
                .collect();
            let case = format!("k{k} s{s} p{p} {h}x{w}");
            let (want, at) = scan(&x, sh, (k, s, p));
            let got = max_pool2d(Var::from_vec(x.clone(), sh), k, s, p);
            assert_eq!(got.data().len(), want.len(), "{case}");
            for (i, (g, e)) in got.data().iter().zip(&want).enumerate() {
                assert!(g.to_bits() == e.to_bits(), "{case}: output {i}: {g} vs {e}");
            }
            // The gradient goes where the scan found the maximum: output i's weight r[i] lands at at[i].
            let r: Vec<f32> = (0..want.len()).map(|i| 1.0 + i as f32).collect();
            let xv = Var::from_vec(x.clone(), sh);
            let h = xv.detach();
            let mut grads = weighted_loss(max_pool2d(xv.traced(), k, s, p), &r).backward();
            let mut expect = vec![0.0f32; x.len()];
            let ohw = want.len() / (sh.n * sh.c);
            for (i, &a) in at.iter().enumerate() {
                expect[(i / ohw) * h.shape.plane() + a] += r[i];
            }
            assert_eq!(h.grad(&mut grads), expect, "{case}: input gradient");
        }
    }
}

/// A batch norm + ReLU deferred into the pooling's reads gives the output and gradients of the
/// written one, bit for bit, in training and evaluation (torchvision's stem: conv, bn, relu, pool).
#[test]
fn max_pool_of_a_deferred_batch_norm_matches_the_written_one() {
    for train in [true, false] {
        let outcome = |defer: bool| {
            let mut rng = ChaCha8Rng::seed_from_u64(4);
            let mut s = Store::new();
            let conv = Conv2d::new(&mut s, &mut rng, "c1", 3, 8, 3, ConvCfg::new(1, 1), false);
            let mut bn = BatchNorm2d::new(&mut s, "bn", 8);
            bn.cfg.defer = defer;
            let shape = Shape4::new(3, 3, 11, 11);
            let x = rand_vec(&mut rng, shape.numel());
            let r = rand_vec(&mut rng, 3 * 8 * 6 * 6);
            run(&s, &x, shape, &r, |x| {
                let y = bn.forward(&s, conv.forward(&s, x), train, true);
                assert_eq!(y.pre.is_some(), defer);
                max_pool2d(y, 3, 2, 1)
            })
        };
        let (deferred, written) = (outcome(true), outcome(false));
        assert!(deferred.0.iter().zip(&written.0).all(|(a, b)| a == b), "train {train}: output");
        assert!(deferred.1.iter().zip(&written.1).all(|(a, b)| a == b), "train {train}: input gradient");
        assert_eq!(deferred.2, written.2, "train {train}: parameter gradients");
        assert!(deferred.1.iter().any(|&g| g != 0.0), "train {train}: some gradient flows");
    }
}
