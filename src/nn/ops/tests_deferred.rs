//! The deferred batch norm + ReLU ([`super::deferred`]) against the written one it replaces.
use dfdx::prelude::Backward;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::tests::{rand_vec, weighted_loss};
use super::*;
use crate::nn::params::{BatchNorm2d, Conv2d, Store};
use crate::nn::var::{Shape4, Tracked, Var};

/// Output, input gradient, every parameter's gradient and the running statistics of `f` applied to
/// `x` with a weighted-sum loss `r`, recorded.
pub(super) type Outcome = (Vec<f32>, Vec<f32>, Vec<Vec<f32>>, Vec<Vec<f32>>);

pub(super) fn run(s: &Store, x: &[f32], shape: Shape4, r: &[f32], f: impl Fn(Var<Tracked>) -> Var<Tracked>) -> Outcome {
    let xv = Var::from_vec(x.to_vec(), shape);
    let h = xv.detach();
    // Through a recorded op, so the first layer's input gradient goes to a slot as inside a model.
    let y = f(scale(xv.traced(), 1.25));
    let out = y.to_vec();
    let mut grads = weighted_loss(y, r).backward();
    let dx = h.grad(&mut grads);
    let dp = s.params.iter().map(|p| grads.get_or_alloc_mut(&p.t).expect("a gradient").to_vec()).collect();
    let stats = s.bns.iter().flat_map(|b| {
        let st = b.stats.lock().unwrap();
        [st.mean.clone(), st.var.clone()]
    });
    (out, dx, dp, stats.collect())
}

fn same(a: &Outcome, b: &Outcome, case: &str) {
    let eq = |u: &[f32], v: &[f32], what: &str| {
        assert_eq!(u.len(), v.len(), "{case}: {what} lengths");
        for (i, (p, q)) in u.iter().zip(v).enumerate() {
            assert!(p == q, "{case}: {what}[{i}] {p} vs {q}");
        }
    };
    eq(&a.0, &b.0, "output");
    eq(&a.1, &b.1, "input gradient");
    for (i, (u, v)) in a.2.iter().zip(&b.2).enumerate() {
        eq(u, v, &format!("parameter {i} gradient"));
    }
    for (i, (u, v)) in a.3.iter().zip(&b.3).enumerate() {
        eq(u, v, &format!("running statistic {i}"));
    }
}

/// `conv2(relu(bn(conv1(x))))` with the batch norm deferred to conv2's input copies gives the same
/// output, statistics and gradients, bit for bit, as with its output written: on the tight planes
/// and channel-blocked weight gradient (16 channels, 8x8; 8 channels block at AVX2's width only),
/// at the widest width and at AVX2's, the planar kernels (6x6 planes, and every case with the tight
/// and blocked kernels off), and the paths that write the mapped values out first (a stride-2 and a
/// 1x1 conv2), in training and in evaluation.
#[test]
fn deferred_batch_norm_matches_the_written_one() {
    for (c, hw, n, k2, stride2) in
        [(16, 8, 9, 3, 1), (8, 8, 3, 3, 1), (16, 6, 4, 3, 1), (16, 8, 3, 3, 2), (8, 6, 2, 1, 1)]
    {
        for train in [true, false] {
            let outcome = |defer: bool| {
                let mut rng = ChaCha8Rng::seed_from_u64(5);
                let mut s = Store::new();
                let conv1 = Conv2d::new(&mut s, &mut rng, "c1", 3, c, 3, ConvCfg::new(1, 1), false);
                let mut bn = BatchNorm2d::new(&mut s, "bn", c);
                bn.cfg.defer = defer;
                let conv2 = Conv2d::new(&mut s, &mut rng, "c2", c, 8, k2, ConvCfg::new(stride2, k2 / 2), false);
                // Running statistics away from (0, 1), so evaluation maps with values of their own.
                *s.bns[0].stats.lock().unwrap() = RunningStats {
                    mean: (0..c).map(|i| 0.1 * i as f32 - 0.3).collect(),
                    var: vec![0.7; c],
                    batches: 3,
                };
                let shape = Shape4::new(n, 3, hw, hw);
                let mut xr = ChaCha8Rng::seed_from_u64(9);
                let x = rand_vec(&mut xr, shape.numel());
                let ho = (hw + 2 * (k2 / 2) - k2) / stride2 + 1;
                let r = rand_vec(&mut xr, n * 8 * ho * ho);
                let f = |x: Var<Tracked>| {
                    let y = bn.forward(&s, conv1.forward(&s, x), train, true);
                    assert_eq!(y.pre.is_some(), defer);
                    conv2.forward(&s, y)
                };
                let wide = run(&s, &x, shape, &r, f);
                let avx2 = cpu::with_avx2_kernels(|| run(&s, &x, shape, &r, f));
                (wide, avx2, cpu::with_planar_kernels(|| run(&s, &x, shape, &r, f)))
            };
            let (deferred, written) = (outcome(true), outcome(false));
            let case = format!("c{c} {hw}x{hw} n{n} conv2 {k2}x{k2}/{stride2} train {train}");
            same(&deferred.0, &written.0, &format!("{case}, widest kernels"));
            same(&deferred.1, &written.1, &format!("{case}, AVX2 kernels"));
            same(&deferred.2, &written.2, &format!("{case}, planar kernels"));
        }
    }
}

/// A ResNet block: conv1, bn1 (+ ReLU), conv2, bn2 (+ the residual and ReLU).
type Block = (Conv2d, BatchNorm2d, Conv2d, BatchNorm2d);

/// A stem (3 -> 16 channels, batch norm) and `k` blocks of 16 channels, their first batch norms
/// deferred where `defer`.
fn stem_and_blocks(s: &mut Store, rng: &mut ChaCha8Rng, k: usize, defer: bool) -> ((Conv2d, BatchNorm2d), Vec<Block>) {
    let stem = Conv2d::new(s, rng, "stem", 3, 16, 3, ConvCfg::new(1, 1), false);
    let bn0 = BatchNorm2d::new(s, "bn0", 16);
    let blocks = (0..k)
        .map(|i| {
            let c1 = Conv2d::new(s, rng, &format!("{i}.c1"), 16, 16, 3, ConvCfg::new(1, 1), false);
            let mut b1 = BatchNorm2d::new(s, &format!("{i}.b1"), 16);
            b1.cfg.defer = defer;
            let c2 = Conv2d::new(s, rng, &format!("{i}.c2"), 16, 16, 3, ConvCfg::new(1, 1), false);
            (c1, b1, c2, BatchNorm2d::new(s, &format!("{i}.b2"), 16))
        })
        .collect();
    ((stem, bn0), blocks)
}

/// A whole ResNet block (shortcut, conv1, deferred bn1, conv2, bn2 with the residual and ReLU), two
/// blocks in a row, as the written one.
#[test]
fn deferred_batch_norm_in_resnet_blocks() {
    let outcome = |defer: bool| {
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        let mut s = Store::new();
        let ((stem, bn0), layers) = stem_and_blocks(&mut s, &mut rng, 2, defer);
        let shape = Shape4::new(16, 3, 32, 32);
        let x = rand_vec(&mut rng, shape.numel());
        let r = rand_vec(&mut rng, 16 * 16 * 32 * 32);
        run(&s, &x, shape, &r, |x| {
            let mut out = bn0.forward_conv(&s, &stem, x, true, true);
            for (c1, b1, c2, b2) in &layers {
                let (a, res) = out.fork();
                let h = b1.forward_conv(&s, c1, a, true, true);
                out = b2.forward_conv_add(&s, c2, h, Some(res), true, true);
            }
            out
        })
    };
    same(&outcome(true), &outcome(false), "two ResNet blocks");
    let avx2 = |defer| cpu::with_avx2_kernels(|| outcome(defer));
    same(&avx2(true), &avx2(false), "two ResNet blocks, AVX2 kernels");
}

/// On a plane of more than 1,024 values the batch norm's backward sums that the tight kernel takes
/// with the input gradient (one f32 run per lane) and its own pass (flushed to f64 every 1,024)
/// round differently: the results agree to f32 accuracy. With guided ReLUs (whose mask also needs
/// the gradient's sign) the kernel takes no sums and the results are the same bit for bit.
#[test]
fn deferred_batch_norm_on_a_large_plane_and_with_guided_relus() {
    let outcome = |defer: bool, guided: bool| {
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let mut s = Store::new();
        let conv1 = Conv2d::new(&mut s, &mut rng, "c1", 3, 16, 3, ConvCfg::new(1, 1), false);
        let mut bn = BatchNorm2d::new(&mut s, "bn", 16);
        bn.cfg.defer = defer;
        let conv2 = Conv2d::new(&mut s, &mut rng, "c2", 16, 4, 3, ConvCfg::new(1, 1), false);
        let shape = Shape4::new(2, 3, 48, 48);
        let x = rand_vec(&mut rng, shape.numel());
        let r = rand_vec(&mut rng, 2 * 4 * 48 * 48);
        let f = |x| conv2.forward(&s, bn.forward(&s, conv1.forward(&s, x), true, true));
        if guided {
            with_guided_relu(|| run(&s, &x, shape, &r, f))
        } else {
            run(&s, &x, shape, &r, f)
        }
    };
    same(&outcome(true, true), &outcome(false, true), "48x48, guided");
    let (a, b) = (outcome(true, false), outcome(false, false));
    let close = |u: &[f32], v: &[f32], what: &str| {
        let scale = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        for (i, (p, q)) in u.iter().zip(v).enumerate() {
            assert!((p - q).abs() <= 1e-5 * scale, "48x48: {what}[{i}] {p} vs {q}");
        }
    };
    close(&a.1, &b.1, "input gradient");
    for (i, (u, v)) in a.2.iter().zip(&b.2).enumerate() {
        close(u, v, &format!("parameter {i} gradient"));
    }
}

/// Every op other than the convolution reads a deferred value as the written one: its values are
/// written out when the op takes it (here a ReLU and an add with the value used twice), with the
/// same gradients; `to_vec` gives the values, and `data` refuses.
#[test]
fn other_readers_of_a_deferred_value_see_its_values() {
    let outcome = |defer: bool| {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut s = Store::new();
        let conv = Conv2d::new(&mut s, &mut rng, "c", 2, 4, 3, ConvCfg::new(1, 1), false);
        let mut bn = BatchNorm2d::new(&mut s, "bn", 4);
        bn.cfg.defer = defer;
        let shape = Shape4::new(3, 2, 5, 5);
        let x = rand_vec(&mut rng, shape.numel());
        let r = rand_vec(&mut rng, 3 * 4 * 25);
        run(&s, &x, shape, &r, |x| {
            let y = bn.forward(&s, conv.forward(&s, x), true, true);
            let (a, b) = y.fork();
            let b = scale(b, 0.5);
            let v = a.to_vec();
            assert!(v.iter().all(|&u| u >= 0.0) && v.iter().any(|&u| u > 0.0), "the mapped values, ReLU'd");
            add(relu(a), b, false)
        })
    };
    same(&outcome(true), &outcome(false), "a ReLU and an add");
}

#[test]
#[should_panic(expected = "read by its convolution only")]
fn a_deferred_values_data_is_not_read_directly() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let mut s = Store::new();
    let conv = Conv2d::new(&mut s, &mut rng, "c", 2, 4, 3, ConvCfg::new(1, 1), false);
    let mut bn = BatchNorm2d::new(&mut s, "bn", 4);
    bn.cfg.defer = true;
    let x = Var::from_vec(rand_vec(&mut rng, 2 * 2 * 4 * 4), Shape4::new(2, 2, 4, 4)).traced();
    let y = bn.forward(&s, conv.forward(&s, x), true, true);
    let _ = y.data();
}

/// The ReLU's backward and batch-norm sums of a ResNet block's end taken by the next block's first
/// convolution as it adds its input gradient ([`bn_grad::ResidualSums`]) give the same output,
/// statistics and gradients, bit for bit, as the batch norm's own first pass: three blocks in a row
/// (the first two block ends read by a convolution), at the widest width and at AVX2's; and where
/// they must not be taken, the same values too: a contribution added after the convolution's (a side
/// branch off the first block's end, recorded before it), planes of more than 1,024 values (whose
/// lane sums the batch norm flushes to f64) and guided ReLUs (whose mask needs the gradient's sign).
#[test]
fn residual_sums_from_the_convolution_match_the_batch_norms_own() {
    // (planes' side, side branch, guided ReLUs, block ends whose sums the convolution takes)
    for (hw, side, guided, taken) in
        [(32, false, false, 2), (8, false, false, 2), (32, true, false, 1), (48, false, false, 0), (8, false, true, 0)]
    {
        let outcome = || {
            let mut rng = ChaCha8Rng::seed_from_u64(21);
            let mut s = Store::new();
            let ((stem, bn0), layers) = stem_and_blocks(&mut s, &mut rng, 3, true);
            let shape = Shape4::new(8, 3, hw, hw);
            let x = rand_vec(&mut rng, shape.numel());
            let r = rand_vec(&mut rng, 8 * 16 * hw * hw);
            let f = |x| {
                let mut out = bn0.forward_conv(&s, &stem, x, true, true);
                let mut branch = None;
                for (i, (c1, b1, c2, b2)) in layers.iter().enumerate() {
                    if side && i == 1 {
                        let (o, b) = out.fork();
                        (out, branch) = (o, Some(scale(b, 0.5)));
                    }
                    let (a, res) = out.fork();
                    let h = b1.forward_conv(&s, c1, a, true, true);
                    out = b2.forward_conv_add(&s, c2, h, Some(res), true, true);
                }
                match branch {
                    Some(b) => add(out, b, false),
                    None => out,
                }
            };
            let counted = |f: &dyn Fn() -> Outcome| {
                bn_grad::RESIDUAL_SUMS_TAKEN.set(0);
                let o = f();
                (o, bn_grad::RESIDUAL_SUMS_TAKEN.get())
            };
            let run_once = || {
                if guided {
                    with_guided_relu(|| run(&s, &x, shape, &r, f))
                } else {
                    run(&s, &x, shape, &r, f)
                }
            };
            (counted(&run_once), counted(&|| cpu::with_avx2_kernels(run_once)))
        };
        let case = format!("{hw}x{hw}, side branch {side}, guided {guided}");
        let (asked, own) = (outcome(), bn_grad::with_residual_pass_own(outcome));
        assert_eq!((asked.0 .1, asked.1 .1, own.0 .1), (taken, taken, 0), "{case}: block ends whose sums were taken");
        same(&asked.0 .0, &own.0 .0, &format!("{case}, widest kernels"));
        same(&asked.1 .0, &own.1 .0, &format!("{case}, AVX2 kernels"));
    }
}
