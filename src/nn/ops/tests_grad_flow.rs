//! Tests of how values and their gradients travel between ops: gradient slots of values used more
//! than once, and the plane sums a convolution hands the batch norm after it.
use dfdx::prelude::Backward;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::tests::{rand_vec, weighted_loss};
use super::*;
use crate::nn::params::{BatchNorm2d, Conv2d, Store};
use crate::nn::var::{Shape4, Var};

/// A value computed by a recorded op, used three times (forks): its gradient slot takes the first
/// consumer's buffer and adds the others' (moved, copied, added in place), whatever path each
/// consumer uses to hand its gradient on.
#[test]
fn intermediate_fanout_accumulates_gradients() {
    let x = vec![-1.0f32, 2.0, -3.0, 0.5, 1.5, -0.25];
    let r = [1.0f32, 0.5, 2.0, -1.0, 0.25, 3.0];
    let shape = Shape4::new(1, 2, 1, 3);
    let xv = Var::from_vec(x.clone(), shape);
    let h = xv.detach();
    let m = scale(xv.traced(), 2.0);
    let (a, rest) = m.fork();
    let (b, c) = rest.fork();
    let flat = Shape4::mat(1, 6);
    let y = add(add(relu(a), scale(b, 3.0), true), reshape(sigmoid(reshape(c, flat)), shape), false);
    let out = y.to_vec();
    let mut grads = weighted_loss(y, &r).backward();
    let got = h.grad(&mut grads);
    for i in 0..6 {
        let v = 2.0 * x[i];
        let sig = 1.0 / (1.0 + (-v).exp());
        // The inner add's fused ReLU passes where relu(v) + 3v > 0.
        let inner = if v.max(0.0) + 3.0 * v > 0.0 { (v > 0.0) as u8 as f32 + 3.0 } else { 0.0 };
        let want = 2.0 * r[i] * (inner + sig * (1.0 - sig));
        assert!((got[i] - want).abs() < 1e-6, "x[{i}]: {} vs {want} (out {:?})", got[i], out);
    }
}

/// A recorded convolution on the tile kernel hands the batch norm after it the sums of its output
/// planes (computed in its output pass): they are the planes' sums, and the batch norm's output
/// and statistics with them match those it computes itself.
#[test]
fn conv_plane_sums_feed_batch_norm() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    // 3x3 stride 1 at 8x8: the tight kernel's sums where the CPU has AVX-512; at 6x6 the planar one's.
    for (k, stride, pad, hw) in [(3, 1, 1, 6), (3, 1, 1, 8), (3, 2, 1, 8), (1, 2, 0, 7)] {
        let mut s = Store::new();
        let conv = Conv2d::new(&mut s, &mut rng, "c", 3, 5, k, ConvCfg::new(stride, pad), false);
        let bn = BatchNorm2d::new(&mut s, "bn", 5);
        let shape = Shape4::new(2, 3, hw, hw);
        let x: Vec<f32> = rand_vec(&mut rng, shape.numel()).iter().map(|v| v + 0.7).collect();
        let y = conv.forward(&s, Var::from_vec(x, shape).traced());
        let sums = y.plane_sums.clone().expect("the tile kernel's output pass sums its planes");
        let plane = y.shape.plane();
        for (i, p) in y.data().chunks(plane).enumerate() {
            let (a, b): (f64, f64) = (p.iter().map(|&v| v as f64).sum(), p.iter().map(|&v| (v as f64).powi(2)).sum());
            assert!(
                (sums[i].0 - a).abs() < 1e-5 * (1.0 + b.sqrt()),
                "k{k} s{stride}: plane {i} sum {} vs {a}",
                sums[i].0
            );
            assert!(
                (sums[i].1 - b).abs() < 1e-5 * (1.0 + b),
                "k{k} s{stride}: plane {i} sum of squares {} vs {b}",
                sums[i].1
            );
        }
        let plain = Var::from_vec(y.to_vec(), y.shape).traced();
        assert!(plain.plane_sums.is_none());
        let with = bn.forward(&s, y, true, true).to_vec();
        let stats_with = s.bns[0].stats.lock().unwrap().clone();
        let without = bn.forward(&s, plain, true, true).to_vec();
        let stats_without = s.bns[0].stats.lock().unwrap().clone();
        for (a, b) in with.iter().zip(&without) {
            assert!((a - b).abs() < 1e-5 * (1.0 + b.abs()), "k{k} s{stride}: batch norm output {a} vs {b}");
        }
        // From zero, the first update leaves 0.1 mu and the second 0.9 * 0.1 mu + 0.1 mu = 1.9 times
        // that: the same batch mean both times.
        for c in 0..5 {
            let (m1, m2) = (stats_with.mean[c], stats_without.mean[c]);
            assert!((1.9 * m1 - m2).abs() < 1e-6 * (1.0 + m2.abs()) && m1 != 0.0, "mean {c}: {m1} then {m2}");
        }
    }
}

/// The tight-plane and channel-blocked kernels, at the widest width and at AVX2's (8 lanes), against
/// the planar paths, on one machine: a convolution and the training batch norm after it,
/// forward, input gradient (written fresh into an empty slot by the tight kernel) and parameter
/// gradients, at 16 and 32 channels and plane sizes that take each kernel's tiles and tails, and
/// at stride 2 (the blocked weight gradient against the polyphase one; the tight stride-2 forward
/// and input gradient against the padded-grid ones where the output planes are whole vectors: 8x8
/// and 16x16 inputs; that input gradient written fresh, and added to the gradient of a 1x1 stride-2
/// shortcut beside it, whose backward runs first or last) (on a CPU without AVX2 every run takes
/// the planar paths).
#[test]
fn tight_and_blocked_kernels_match_the_planar_paths() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for (c, co, hw, n, stride) in [
        (16, 16, 8, 9, 1),
        (16, 32, 12, 3, 1),
        (32, 16, 4, 2, 1),
        (16, 32, 12, 9, 2),
        (32, 8, 4, 2, 2),
        (16, 32, 8, 9, 2),
        (8, 16, 16, 3, 2),
    ] {
        // At stride 2: alone, with the shortcut recorded after the convolution, and before it.
        for shortcut in (0..if stride == 2 { 3 } else { 1 }).map(|k| [None, Some(true), Some(false)][k]) {
            let mut s = Store::new();
            let conv = Conv2d::new(&mut s, &mut rng, "c", c, co, 3, ConvCfg::new(stride, 1), false);
            let bn = BatchNorm2d::new(&mut s, "bn", co);
            let sc = Conv2d::new(&mut s, &mut rng, "sc", c, co, 1, ConvCfg::new(2, 0), false);
            let shape = Shape4::new(n, c, hw, hw);
            let x = rand_vec(&mut rng, shape.numel());
            let r = rand_vec(&mut rng, n * co * hw * hw / stride / stride);
            let run = || {
                let xv = Var::from_vec(x.clone(), shape);
                let h = xv.detach();
                // Through a recorded op, so the convolution's input has a gradient slot that is empty
                // when it runs backward: the tight kernel writes that gradient fresh.
                let xin = scale(xv.traced(), 1.5);
                let y = match shortcut {
                    None => bn.forward(&s, conv.forward(&s, xin), true, true),
                    Some(after) => {
                        let (a, b) = xin.fork();
                        let (main, side) = if after {
                            let m = bn.forward(&s, conv.forward(&s, a), true, true);
                            (m, sc.forward(&s, b))
                        } else {
                            let side = sc.forward(&s, b);
                            (bn.forward(&s, conv.forward(&s, a), true, true), side)
                        };
                        add(main, side, false)
                    }
                };
                let out = y.to_vec();
                let mut grads = weighted_loss(y, &r).backward();
                let dx = h.grad(&mut grads);
                let dw: Vec<Vec<f32>> =
                    s.params.iter().map(|p| grads.get_or_alloc_mut(&p.t).expect("a gradient").to_vec()).collect();
                (out, dx, dw)
            };
            let planar = cpu::with_planar_kernels(run);
            for (kernels, wide) in [("widest", run()), ("AVX2", cpu::with_avx2_kernels(run))] {
                let close = |a: &[f32], b: &[f32], what: &str| {
                    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                    for (i, (u, v)) in a.iter().zip(b).enumerate() {
                        assert!(
                            (u - v).abs() <= 1e-5 * (1.0 + scale),
                            "{kernels} c{c} co{co} {hw}x{hw} s{stride} shortcut {shortcut:?}: {what}[{i}] {u} vs {v}"
                        );
                    }
                };
                close(&wide.0, &planar.0, "output");
                close(&wide.1, &planar.1, "input gradient");
                for (p, (a, b)) in wide.2.iter().zip(&planar.2).enumerate() {
                    close(a, b, &format!("parameter {p} gradient"));
                }
            }
        }
    }
}

/// The batch norm with the residual add and ReLU fused in (a ResNet block's end) against the two
/// ops it replaces, in training and evaluation, with plain and guided ReLU gradients and without
/// the ReLU: the same output, statistics and gradients of the input, the residual (a value used
/// twice, so its copy meets another contribution) and gamma / beta.
#[test]
fn batch_norm_with_residual_matches_norm_then_add() {
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let shape = Shape4::new(3, 4, 5, 4);
    let x: Vec<f32> = rand_vec(&mut rng, shape.numel()).iter().map(|v| 2.0 * v + 0.3).collect();
    let res = rand_vec(&mut rng, shape.numel());
    let r = rand_vec(&mut rng, shape.numel());
    for (train, relu, guided) in [(true, true, false), (true, true, true), (true, false, false), (false, true, false)] {
        let mut s = Store::new();
        let bn = BatchNorm2d::new(&mut s, "bn", 4);
        s.set(bn.gamma, vec![0.5, -1.2, 2.0, 0.9]);
        s.set(bn.beta, vec![0.1, 0.4, -0.3, 0.0]);
        let run = |fused: bool| {
            let (xv, rv) = (Var::from_vec(x.clone(), shape), Var::from_vec(res.clone(), shape));
            let (hx, hr) = (xv.detach(), rv.detach());
            let (rv, again) = scale(rv.traced(), 1.0).fork();
            let (xv, rv) = (scale(xv.traced(), 1.0), add(rv, scale(again, 0.5), false));
            let y = if fused {
                bn.forward_add(&s, xv, Some(rv), train, relu)
            } else {
                add(bn.forward(&s, xv, train, false), rv, relu)
            };
            let out = y.to_vec();
            let mut grads = weighted_loss(y, &r).backward();
            let stats = s.bns[0].stats.lock().unwrap().clone();
            let gb: Vec<Vec<f32>> = s.params.iter().map(|p| grads.get_or_alloc_mut(&p.t).unwrap().to_vec()).collect();
            (out, hx.grad(&mut grads), hr.grad(&mut grads), gb, stats)
        };
        let with_mode = |fused| if guided { with_guided_relu(|| run(fused)) } else { run(fused) };
        let (fused, plain) = (with_mode(true), with_mode(false));
        let what = format!("train {train} relu {relu} guided {guided}");
        assert_eq!(fused.0, plain.0, "{what}: output");
        assert_eq!(fused.1, plain.1, "{what}: input gradient");
        assert_eq!(fused.2, plain.2, "{what}: residual gradient");
        assert_eq!(fused.3, plain.3, "{what}: gamma / beta gradients");
        assert!(fused.1.iter().chain(&fused.2).all(|v| v.is_finite()) && fused.2.iter().any(|&v| v != 0.0));
        // Both runs updated the statistics from the same batch in training (the second from the
        // first's values), left them alone in evaluation.
        assert_eq!(fused.4.batches, if train { 1 } else { 0 }, "{what}: batches");
        assert_eq!(plain.4.batches, 2 * fused.4.batches, "{what}: batches");
    }
}

/// A batch norm's input gradient left to the convolution before it (mapped in the tight copy that
/// its weight and input gradients read, [`bn_grad::DeferredGrad`]) against the same gradient
/// written out by the batch norm: bit for bit, through two convolution + batch norm layers (the
/// first with and without a ReLU), in training and evaluation, at the widest kernels and AVX2's;
/// and where the tight kernel does not take the plane (6x6), the gradient mapped before the
/// convolution's backward. Each tight case takes the deferred path twice.
#[test]
fn deferred_batch_norm_gradient_matches_the_written_one() {
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    for (c, hw, n, train, relu) in
        [(16, 8, 9, true, true), (16, 16, 3, true, false), (32, 4, 2, false, true), (16, 6, 2, true, true)]
    {
        let mut s = Store::new();
        let conv1 = Conv2d::new(&mut s, &mut rng, "c1", c, c, 3, ConvCfg::new(1, 1), false);
        let bn1 = BatchNorm2d::new(&mut s, "bn1", c);
        let conv2 = Conv2d::new(&mut s, &mut rng, "c2", c, c, 3, ConvCfg::new(1, 1), false);
        let bn2 = BatchNorm2d::new(&mut s, "bn2", c);
        let shape = Shape4::new(n, c, hw, hw);
        let x = rand_vec(&mut rng, shape.numel());
        let r = rand_vec(&mut rng, shape.numel());
        let run = || {
            bn_grad::MAPPED_IN_COPY.set(0);
            let xv = Var::from_vec(x.clone(), shape);
            let h = xv.detach();
            let y1 = bn1.forward(&s, conv1.forward(&s, scale(xv.traced(), 1.5)), train, relu);
            let y = bn2.forward(&s, conv2.forward(&s, y1), train, true);
            gradient_bits(y, &r, &s, &h)
        };
        let tight = super::tight::applies(hw, hw);
        for (kernels, lanes) in [("widest", 0), ("AVX2", 8)] {
            let pass = || if lanes == 8 { cpu::with_avx2_kernels(run) } else { run() };
            let written = bn_grad::with_maps_written(pass);
            let deferred = pass();
            let what = format!("{kernels} c{c} {hw}x{hw} train {train} relu {relu}");
            assert_eq!(written.2, 0, "{what}: the reference maps nothing in a copy");
            let runs_tight = if lanes == 8 { tight && super::tight::applies_at(8, hw, hw) } else { tight };
            assert_eq!(deferred.2, if runs_tight { 2 } else { 0 }, "{what}: convolutions that took the map");
            assert!(deferred.0 == written.0, "{what}: input gradient");
            for (p, (a, b)) in deferred.1.iter().zip(&written.1).enumerate() {
                assert!(a == b, "{what}: parameter {p} gradient");
            }
        }
    }
}

/// A convolution's output read by a batch norm and by another op (forked): the batch norm's
/// deferred gradient meets the other contribution in the value's slot, before it (the batch norm
/// then maps and adds) or after it (the other op's add maps what the batch norm left first). Both
/// orders give the written gradient bit for bit, and the convolution never receives a map to apply.
#[test]
fn deferred_gradient_meets_another_contribution() {
    let mut rng = ChaCha8Rng::seed_from_u64(29);
    let (c, hw, n) = (16, 8, 4);
    let mut s = Store::new();
    let conv = Conv2d::new(&mut s, &mut rng, "c", c, c, 3, ConvCfg::new(1, 1), false);
    let bn = BatchNorm2d::new(&mut s, "bn", c);
    let shape = Shape4::new(n, c, hw, hw);
    let x = rand_vec(&mut rng, shape.numel());
    let r = rand_vec(&mut rng, shape.numel());
    for bn_backward_first in [false, true] {
        let run = || {
            bn_grad::MAPPED_IN_COPY.set(0);
            let xv = Var::from_vec(x.clone(), shape);
            let h = xv.detach();
            let (za, zb) = conv.forward(&s, scale(xv.traced(), 1.5)).fork();
            // The op recorded last runs its backward first.
            let y = if bn_backward_first {
                let b = scale(zb, 0.5);
                add(b, bn.forward(&s, za, true, true), false)
            } else {
                let a = bn.forward(&s, za, true, true);
                add(a, scale(zb, 0.5), false)
            };
            gradient_bits(y, &r, &s, &h)
        };
        let written = bn_grad::with_maps_written(run);
        let deferred = run();
        let what = format!("batch norm's backward first: {bn_backward_first}");
        assert_eq!((written.2, deferred.2), (0, 0), "{what}: a map reached the convolution");
        assert!(deferred.0 == written.0, "{what}: input gradient");
        assert!(deferred.1 == written.1, "{what}: parameter gradients");
    }
}

/// The backward of `weighted_loss(y, r)`: the bits of the input `h`'s gradient and of every
/// parameter's in `s`, and how many convolutions took a deferred gradient into their copy.
fn gradient_bits(y: Var<crate::nn::var::Tracked>, r: &[f32], s: &Store, h: &Var) -> (Vec<u32>, Vec<Vec<u32>>, usize) {
    let mut grads = weighted_loss(y, r).backward();
    let dw = s
        .params
        .iter()
        .map(|p| grads.get_or_alloc_mut(&p.t).expect("a gradient").iter().map(|v| v.to_bits()).collect())
        .collect();
    let dx = h.grad(&mut grads).iter().map(|v| v.to_bits()).collect();
    (dx, dw, bn_grad::MAPPED_IN_COPY.get())
}

/// Images per chunk of a backward pass: `n / 8` in whole multiples of 8, and where the weights
/// are many (2.4 M: 512 channels) at least 1024 output positions a chunk, in two chunks or more.
#[test]
fn backward_chunks_by_batch_and_weights() {
    use super::conv::chunk_images;
    let (few, many) = (64 * 64 * 9, 512 * 512 * 9);
    for (n, hwo, w, want) in [
        (128, 64, few, 16),  // ResNet-20's 8x8 layers: 8 chunks, as before
        (32, 64, few, 8),    // batch 32: 4 chunks of 8
        (128, 16, few, 16),  // small planes, few weights: unchanged
        (128, 16, many, 64), // 512 channels at 4x4: 2 chunks of 1024 positions
        (32, 16, many, 16),  // at least two chunks
        (128, 64, many, 16), // 8x8: 16 images are 1024 positions already
        (128, 1024, many, 16),
        (4, 16, many, 4),  // fewer images than a multiple of 8: one chunk
        (10, 49, many, 8), // 7x7: 21 images wanted, half the batch (5) rounded to 8
    ] {
        assert_eq!(chunk_images(n, hwo, w), want, "n {n}, {hwo} positions, {w} weights");
    }
}

/// The chunks' partials (`[groups][kk][cog]` each) are summed in order and transposed into
/// `[groups x cog][kk]`, added to what the gradient holds: bit for bit the sum in chunk order,
/// with blocks of 16 rows inside one group (1 group of 40; 2 of 32) and across groups (3 of 5, 2
/// of 20, depthwise 1 x 12).
#[test]
fn chunk_partials_add_in_order() {
    use super::conv::add_partials;
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    for (groups, cog, kk) in [(1, 40, 9), (2, 32, 9), (3, 5, 9), (2, 20, 1), (12, 1, 9)] {
        let len = groups * cog * kk;
        let partial: Vec<Vec<f32>> = (0..3).map(|_| rand_vec(&mut rng, len)).collect();
        let start = rand_vec(&mut rng, len);
        let mut d = start.clone();
        add_partials(&mut d, &partial, (cog, kk));
        for (row, j) in (0..groups * cog).flat_map(|r| (0..kk).map(move |j| (r, j))) {
            let at = row / cog * cog * kk + j * cog + row % cog;
            let want = start[row * kk + j] + partial.iter().fold(0.0, |s, p| s + p[at]);
            assert_eq!(d[row * kk + j].to_bits(), want.to_bits(), "{groups} x {cog}, row {row}, tap {j}");
        }
    }
}

/// A convolution with many weights (176 x 176 x 3 x 3, over `conv::BIG_PARTIAL`) over 16 images
/// at 4x4 runs its backward in two chunks: the weight gradient matches the definition, and a
/// second backward (the kept partial buffers reused) gives it bit for bit; so does a small
/// convolution after it (two chunks of eight images, in buffers that held the big one's values).
#[test]
fn chunked_weight_gradients_match_the_definition() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for (c, hw, n) in [(176usize, 4usize, 16usize), (8, 6, 16)] {
        let mut s = Store::new();
        let conv = Conv2d::new(&mut s, &mut rng, "c", c, c, 3, ConvCfg::new(1, 1), false);
        let shape = Shape4::new(n, c, hw, hw);
        let (x, r) = (rand_vec(&mut rng, shape.numel()), rand_vec(&mut rng, shape.numel()));
        let grad = || {
            let y = conv.forward(&s, Var::from_vec(x.clone(), shape).traced_input());
            weighted_loss(y, &r).backward().get_or_alloc_mut(&s.params[0].t).unwrap().to_vec()
        };
        let (a, b) = (grad(), grad());
        assert_eq!(a, b, "{c} channels at {hw}x{hw}: two backward passes differ");
        let (hw, plane) = (hw as isize, hw * hw);
        for (o, i, ky, kx) in (0..c).flat_map(|o| (0..c).flat_map(move |i| (0..9).map(move |t| (o, i, t / 3, t % 3)))) {
            let mut want = 0.0f64;
            for (bi, y, xx) in (0..n).flat_map(|b| (0..hw).flat_map(move |y| (0..hw).map(move |x| (b, y, x)))) {
                let (iy, ix) = (y + ky as isize - 1, xx + kx as isize - 1);
                if (0..hw).contains(&iy) && (0..hw).contains(&ix) {
                    let g = r[(bi * c + o) * plane + (y * hw + xx) as usize] as f64;
                    want += g * x[(bi * c + i) * plane + (iy * hw + ix) as usize] as f64;
                }
            }
            let got = a[(o * c + i) * 9 + ky * 3 + kx] as f64;
            assert!((got - want).abs() < 1e-4 * (1.0 + want.abs()), "{c} ch: dW[{o}][{i}][{ky}][{kx}] {got} vs {want}");
        }
    }
}
