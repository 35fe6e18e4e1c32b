//! Per-op throughput at the ResNet-20 layer shapes (batch 128): `cargo bench --bench ops`.
//! Prints milliseconds per call and GFLOP/s for convolutions.
use dfdx::prelude::*;
use kdscope::nn::{ops, BatchNorm2d, Conv2d, Shape4, Store, Var};
use rand::SeedableRng;
use std::time::Instant;
fn time<F: FnMut()>(name: &str, flop: f64, mut f: F) {
    f();
    let n = 10;
    let s = Instant::now();
    for _ in 0..n {
        f();
    }
    let e = s.elapsed().as_secs_f64() / n as f64;
    println!("{name:<28} {:8.2} ms  {:6.1} GFLOP/s", e * 1e3, flop / e / 1e9);
}
/// `n` inputs of the kernel benches: a fixed pattern in [-1, 1] (no zeros in runs).
fn pattern_input(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect()
}

/// `n` weights of the kernel benches: a fixed pattern in [-0.1, 0.1].
fn pattern_weights(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 53 % 97) as f32 - 48.0) / 480.0).collect()
}

fn main() {
    kdscope::train::tune_allocator();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    for (c, hw) in [(16usize, 32usize), (32, 16), (64, 8)] {
        let mut s = Store::new();
        let conv = Conv2d::new(&mut s, &mut rng, "c", c, c, 3, ops::ConvCfg::new(1, 1), false);
        let bn = BatchNorm2d::new(&mut s, "bn", c);
        let shape = Shape4::new(128, c, hw, hw);
        let x = Var::from_vec(vec![0.3; shape.numel()], shape);
        let flop = 2.0 * (128 * c * c * 9 * hw * hw) as f64;
        time(&format!("conv fwd c{c} hw{hw}"), flop, || {
            std::hint::black_box(conv.forward(&s, x.detach()));
        });
        time(&format!("conv fwd+dW c{c} hw{hw}"), 2.0 * flop, || {
            let y = conv.forward(&s, x.detach().traced_input());
            std::hint::black_box(y.dfdx_matrix().sum::<(), _>().backward());
        });
        time(&format!("conv fwd+dW+dX c{c} hw{hw}"), 3.0 * flop, || {
            let y = conv.forward(&s, x.detach().traced());
            std::hint::black_box(y.dfdx_matrix().sum::<(), _>().backward());
        });
        time(&format!("bn+relu fwd c{c} hw{hw}"), 0.0, || {
            std::hint::black_box(bn.forward(&s, x.detach(), true, true));
        });
        if c < 64 {
            // The stage transition into this shape's successor: 3x3 stride 2 and the 1x1 stride-2 shortcut.
            let ho = hw / 2;
            for (k, pad) in [(3usize, 1usize), (1, 0)] {
                let down =
                    Conv2d::new(&mut s, &mut rng, &format!("d{k}"), c, 2 * c, k, ops::ConvCfg::new(2, pad), false);
                let flop = 2.0 * (128 * c * 2 * c * k * k * ho * ho) as f64;
                time(&format!("conv{k}x{k}/2 fwd c{c} hw{hw}"), flop, || {
                    std::hint::black_box(down.forward(&s, x.detach()));
                });
                time(&format!("conv{k}x{k}/2 fwd+dW c{c} hw{hw}"), 2.0 * flop, || {
                    let y = down.forward(&s, x.detach().traced_input());
                    std::hint::black_box(y.dfdx_matrix().sum::<(), _>().backward());
                });
                time(&format!("conv{k}x{k}/2 fwd+dW+dX c{c} hw{hw}"), 3.0 * flop, || {
                    let y = down.forward(&s, x.detach().traced());
                    std::hint::black_box(y.dfdx_matrix().sum::<(), _>().backward());
                });
            }
        }
        kernels_alone(c, hw);
        batch_streaming(c, hw);
        time(&format!("alloc+zero {}", shape.numel()), 0.0, || {
            std::hint::black_box(vec![0.0f32; shape.numel()]);
        });
    }
}

/// The direct 3x3 kernels alone on one thread, 16 images (one backward chunk) already padded: the
/// forward tile kernel and the weight gradient, GFLOP/s on the image positions (the padded grid's
/// extra columns and the copies not counted), to set against one core's FMA peak.
fn kernels_alone(c: usize, hw: usize) {
    use kdscope::nn::ops::direct::{conv3x3, conv3x3_weight_grad, pad_chunk, Padded};
    let nb = 16;
    let g = Padded { h: hw, w: hw };
    let (x, wt) = (pattern_input(nb * c * hw * hw), pattern_weights(c * c * 9));
    // Aligned as the backward aligns them (planes at 64 bytes, the gradient's first value too).
    let (mut xbuf, mut gbuf, mut pbuf, mut scratch) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let xp = pad_chunk(&x, nb, c, g, &mut xbuf, 0);
    let gp = pad_chunk(&x, nb, c, g, &mut gbuf, g.wp() + 1);
    let flop = 2.0 * (nb * c * c * 9 * hw * hw) as f64;
    let mut out = vec![0.0f32; c * hw * hw];
    time(&format!("  1 thread: fwd kernel x{nb}"), flop, || {
        for b in 0..nb {
            conv3x3(&xp[b * g.plane()..], c, nb * g.plane(), g, &wt, c, &mut out, false, &mut scratch);
        }
    });
    // The same on tight planes (AVX-512, no padding column), written straight into the output.
    use kdscope::nn::ops::tight;
    if tight::applies(hw, hw) {
        let mut tbuf = Vec::new();
        let xt = tight::pad_tight((&x, None), (nb, c), (hw, hw), &mut tbuf);
        let pl = tight::plane(hw, hw);
        time(&format!("  1 thread: fwd tight x{nb}"), flop, || {
            for b in 0..nb {
                let o = unsafe { std::mem::transmute::<&mut [f32], &mut [std::mem::MaybeUninit<f32>]>(&mut out[..]) };
                let mode = tight::Out::Write { out: o, bias: None, res: None, relu: false, sums: None };
                assert!(tight::conv(&xt[b * pl..], (c, nb * pl), (hw, hw), &wt, c, mode));
            }
        });
    }
    // The copy into padded planes: its "GFLOP/s" column reads as GB/s (bytes read + written).
    let bytes = (x.len() * 4 + xp.len() * 4) as f64;
    time(&format!("  1 thread: pad x{nb} (GB/s)"), bytes, || {
        pad_chunk(&x, nb, c, g, &mut pbuf, 0);
    });
    let mut dw = vec![0.0f32; c * c * 9];
    time(&format!("  1 thread: dW kernel x{nb}"), flop, || {
        assert!(conv3x3_weight_grad(xp, gp, c, c, nb, g, &mut dw), "no SIMD weight-gradient kernel on this CPU");
    });
    // The same weight gradient over the channel-blocked copy (blocks of 16 channels with AVX-512,
    // of 8 with AVX2 + FMA or KDSCOPE_SIMD=avx2).
    use kdscope::nn::ops::wgrad_blocked as wb;
    let l = kdscope::nn::ops::cpu::kernel_lanes();
    if wb::applies(c, l) {
        let (mut bbuf, mut acc) = (Vec::new(), Vec::new());
        let bytes = (x.len() * 8 + wb::block_positions(nb, g) * c * 4) as f64;
        time(&format!("  1 thread: pad blocked x{nb} (GB/s)"), bytes, || {
            wb::pad_blocked((&x, None), (nb, c, l), g, &mut bbuf);
        });
        // Where it lies (a 64-byte line, as in training): a copy of it would start anywhere, and
        // every load of the kernel would then split across two lines (-25 % at 16-64 channels).
        let xb = wb::pad_blocked((&x, None), (nb, c, l), g, &mut bbuf);
        time(&format!("  1 thread: dW blocked L{l} x{nb}"), flop, || {
            assert!(wb::weight_grad(xb, &x, (c, c, nb, l), (g, 1), &mut dw, &mut acc));
        });
    }
    if c < 64 {
        kernels_alone_s2(c, hw);
    }
    std::hint::black_box((&out, &dw));
}

/// The stride-2 3x3 kernels alone on one thread, 16 images from `c` channels of `hw x hw` into `2c`
/// of `hw/2`: the forward over the phase planes, the input gradient by parity part (its copies
/// into scratch and the interleaving add included) and the blocked weight gradient.
fn kernels_alone_s2(c: usize, hw: usize) {
    use kdscope::nn::ops::direct::Padded;
    use kdscope::nn::ops::{cpu, tight, tight_s2, wgrad_blocked as wb};
    let (nb, co, ho, l) = (16, 2 * c, hw / 2, cpu::kernel_lanes());
    let (x, wt) = (pattern_input(nb * c * hw * hw), pattern_weights(co * c * 9));
    let gy: Vec<f32> = (0..nb * co * ho * ho).map(|i| ((i * 41 % 103) as f32 - 51.0) / 50.0).collect();
    let flop = 2.0 * (nb * c * co * 9 * ho * ho) as f64;
    let (mut buf, mut scratch) = (Vec::new(), Vec::new());
    if tight_s2::forward_applies(l, co, (hw, hw)) {
        let w36 = tight_s2::phase_weights(&wt, co, c);
        let mut out = vec![std::mem::MaybeUninit::<f32>::uninit(); co * ho * ho];
        time(&format!("  1 thread: s2 fwd tight x{nb}"), flop, || {
            for b in 0..nb {
                let mode = tight::Out::Write { out: &mut out, bias: None, res: None, relu: false, sums: None };
                let xi = &x[b * c * hw * hw..(b + 1) * c * hw * hw];
                assert!(tight_s2::forward(l, xi, (c, hw, hw), (&w36, co), mode, &mut buf));
            }
        });
    }
    if tight_s2::applies(l, c, (hw, hw)) {
        let parts = tight_s2::parts(&wt, co, c);
        let (mut gbuf, mut dx) = (Vec::new(), vec![0.0f32; c * hw * hw]);
        let pl = tight::plane(ho, ho);
        time(&format!("  1 thread: s2 dX tight x{nb}"), flop, || {
            let gt = tight::pad_tight((&gy, None), (nb, co), (ho, ho), &mut gbuf);
            for b in 0..nb {
                assert!(tight_s2::input_grad(
                    l,
                    &gt[b * pl..],
                    (co, nb * pl),
                    &parts,
                    (c, hw, hw),
                    tight_s2::Dx::Add(&mut dx),
                    &mut scratch
                ));
            }
        });
        std::hint::black_box(&dx);
    }
    if wb::applies(c, l) {
        let g = Padded { h: hw, w: hw };
        let (mut dw, mut acc) = (vec![0.0f32; c * co * 9], Vec::new());
        time(&format!("  1 thread: s2 dW blocked x{nb}"), flop, || {
            let xb = wb::pad_blocked((&x, None), (nb, c, l), g, &mut buf);
            assert!(wb::weight_grad(xb, &gy, (c, co, nb, l), (g, 2), &mut dw, &mut acc));
        });
        std::hint::black_box(&dw);
    }
}

/// The tight forward over a whole batch of 128 images on both threads, each image copied into its
/// tight planes and convolved (as the training forward does, without its batch-norm sums), against
/// the same kernel over one image's planes held in cache: what streaming the batch through the
/// caches costs beside the kernel (`kernels_alone` runs 16 images that stay in L2).
fn batch_streaming(c: usize, hw: usize) {
    use kdscope::nn::ops::tight;
    use rayon::prelude::*;
    use std::mem::MaybeUninit;
    let n = 128;
    if !tight::applies(hw, hw) {
        return;
    }
    let il = c * hw * hw;
    let (x, wt) = (pattern_input(n * il), pattern_weights(c * c * 9));
    let flop = 2.0 * (n * c * c * 9 * hw * hw) as f64;
    let mut out = vec![MaybeUninit::<f32>::uninit(); n * il];
    let conv = |xt: &[f32], o: &mut [MaybeUninit<f32>]| {
        let mode = tight::Out::Write { out: o, bias: None, res: None, relu: false, sums: None };
        assert!(tight::conv(xt, (c, tight::plane(hw, hw)), (hw, hw), &wt, c, mode));
    };
    time(&format!("  2 threads: pad+fwd tight x{n}"), flop, || {
        out.par_chunks_mut(il).enumerate().for_each_init(Vec::new, |buf, (b, o)| {
            conv(tight::pad_tight((&x[b * il..(b + 1) * il], None), (1, c), (hw, hw), buf), o)
        });
    });
    let mut buf = Vec::new();
    let xt = tight::pad_tight((&x[..il], None), (1, c), (hw, hw), &mut buf).to_vec();
    time(&format!("  2 threads: fwd tight x{n}, one image"), flop, || {
        out.par_chunks_mut(il).for_each(|o| conv(&xt, o));
    });
}
