//! The convolutions off the tile kernel (a GEMM per image) write their output once, with no zero
//! fill first, and take a folded batch norm's bias, a ResNet block's residual and the ReLU in one
//! pass: the same values, bit for bit, as the separate bias and `add` passes they replace; and
//! their strided im2col against the definition.
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::tests::rand_vec;
use super::*;
use dfdx::prelude::NoneTape;

use crate::nn::var::{Shape4, Var};

/// The reference: the convolution with its bias (as before, a pass of its own), then `add`.
fn conv_then_add(
    x: &[f32],
    sh: Shape4,
    w: (&[f32], [usize; 4]),
    bias: &[f32],
    cfg: ConvCfg,
    res: Var<NoneTape>,
    relu: bool,
) -> Vec<f32> {
    let y = conv2d_folded(Var::from_vec(x.to_vec(), sh), None, w.0, w.1, bias, cfg, false);
    add(y, res, relu).data().to_vec()
}

/// The convolution by its definition, in f64: `out[i, o, y, x] = bias[o] + Σ w · x` over the
/// input channels of `o`'s group and the taps inside the image.
fn naive(x: &[f32], sh: Shape4, w: &[f32], (co, k): (usize, usize), bias: &[f32], cfg: ConvCfg) -> Vec<f64> {
    let (s, p, cg) = (cfg.stride, cfg.pad, sh.c / cfg.groups);
    let (ho, wo) = (out_size(sh.h, k, s, p), out_size(sh.w, k, s, p));
    let mut out = vec![];
    for i in 0..sh.n {
        for o in 0..co {
            let g = o / (co / cfg.groups);
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut acc = bias[o] as f64;
                    for ci in 0..cg {
                        for ky in 0..k {
                            for kx in 0..k {
                                let (iy, ix) =
                                    ((oy * s + ky) as isize - p as isize, (ox * s + kx) as isize - p as isize);
                                if iy >= 0 && ix >= 0 && (iy as usize) < sh.h && (ix as usize) < sh.w {
                                    let xv = x[((i * sh.c + g * cg + ci) * sh.h + iy as usize) * sh.w + ix as usize];
                                    acc += w[((o * cg + ci) * k + ky) * k + kx] as f64 * xv as f64;
                                }
                            }
                        }
                    }
                    out.push(acc);
                }
            }
        }
    }
    out
}

/// 1x1 (ResNet-50's block ends), a grouped and a depthwise 3x3, one image (all threads in the GEMM)
/// and three (images in parallel), on an allocator whose free blocks hold NaNs: no stale value
/// gets through, and every output is the reference's.
#[test]
fn gemm_path_writes_every_output_with_bias_residual_and_relu() {
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    let cases = [
        (8, 16, 1, ConvCfg::new(1, 0)),
        (8, 12, 3, ConvCfg::new(1, 1).groups(4)),
        (8, 8, 3, ConvCfg::new(2, 1).groups(8)),
    ];
    for (c, co, k, cfg) in cases {
        for n in [1, 3] {
            let sh = Shape4::new(n, c, 9, 7);
            let x = rand_vec(&mut rng, sh.numel());
            let w = rand_vec(&mut rng, co * (c / cfg.groups) * k * k);
            let wshape = [co, c / cfg.groups, k, k];
            let bias = rand_vec(&mut rng, co);
            let side = |v| out_size(v, k, cfg.stride, cfg.pad);
            let osh = Shape4::new(n, co, side(sh.h), side(sh.w));
            let r = rand_vec(&mut rng, osh.numel());
            for relu in [false, true] {
                let case = format!("{k}x{k} groups {} n{n} relu {relu}", cfg.groups);
                let want = conv_then_add(&x, sh, (&w, wshape), &bias, cfg, Var::from_vec(r.clone(), osh), relu);
                // Freed blocks of the output's size full of NaNs, for the allocator to hand out again.
                drop((0..4).map(|_| vec![f32::NAN; osh.numel()]).collect::<Vec<_>>());
                let res = Some(Var::from_vec(r.clone(), osh));
                let got = conv2d_folded(Var::from_vec(x.clone(), sh), res, &w, wshape, &bias, cfg, relu);
                assert_eq!(got.shape, osh, "{case}");
                for (i, (a, b)) in got.data().iter().zip(&want).enumerate() {
                    assert!(a.to_bits() == b.to_bits(), "{case}: output {i}: {a} vs {b}");
                }
                assert_eq!(relu, want.contains(&0.0), "{case}: the ReLU clips some outputs");
                let conv = naive(&x, sh, &w, (co, k), &bias, cfg);
                for (i, (a, (c, r))) in got.data().iter().zip(conv.iter().zip(&r)).enumerate() {
                    let e = if relu { (c + *r as f64).max(0.0) } else { c + *r as f64 };
                    assert!(
                        (*a as f64 - e).abs() <= 1e-5 * (1.0 + e.abs()),
                        "{case}: output {i}: {a} vs {e} by definition"
                    );
                }
            }
        }
    }
}

/// im2col's row phases ([`super::conv`]): strided convolutions off the tile kernel (torchvision's
/// 7x7/2 stem, a 3x3/2 on odd sides, 5x5/3, a grouped 1x1/2) equal the definition.
#[test]
fn strided_im2col_matches_the_definition() {
    let mut rng = ChaCha8Rng::seed_from_u64(32);
    for (c, co, k, cfg, (h, w)) in [
        (3, 8, 7, ConvCfg::new(2, 3), (17, 14)),
        (4, 8, 3, ConvCfg::new(2, 1), (9, 7)),
        (2, 4, 5, ConvCfg::new(3, 2), (11, 13)),
        (4, 6, 1, ConvCfg::new(2, 0).groups(2), (7, 10)),
    ] {
        let sh = Shape4::new(2, c, h, w);
        let x = rand_vec(&mut rng, sh.numel());
        let w = rand_vec(&mut rng, co * (c / cfg.groups) * k * k);
        let bias = vec![0.0; co];
        let got = conv2d_folded(Var::from_vec(x.clone(), sh), None, &w, [co, c / cfg.groups, k, k], &bias, cfg, false);
        let want = naive(&x, sh, &w, (co, k), &bias, cfg);
        assert_eq!(got.data().len(), want.len());
        for (i, (a, e)) in got.data().iter().zip(&want).enumerate() {
            assert!((*a as f64 - e).abs() <= 1e-5 * (1.0 + e.abs()), "{k}x{k} {cfg:?}: output {i}: {a} vs {e}");
        }
    }
}
