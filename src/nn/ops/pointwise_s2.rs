//! The 1x1 / stride 2 / no padding convolution (the projection of ResNet shortcuts) over a chunk of
//! images at once: the chunk's even samples gathered channel major and tight, `[c][nb * ho * wo]`
//! ([`direct::even_samples`]), so that one product on the tile kernel ([`direct::conv1x1_flat`])
//! reads the weights once for all the chunk's positions, and the output gradient gathered the same
//! way for the input gradient (the product with the transposed weights) and the weight gradient
//! (one GEMM over the chunk's positions).
//!
//! Image by image, the tile kernel ran over each image's padded grid of the output size: with 256
//! -> 512 channels at 8x8 (a 4x4 output, 20 grid positions in two vectors of 16) the 512 KB of
//! weights were read again for every image's 16 positions, and half the lanes were padding (47
//! GFLOP/s, 20 % of the FMA peak of the AMD EPYC family 25 model 17; BENCHMARKS.md).
use std::mem::MaybeUninit;

use super::blas::{sgemm_strided, Mat};
use super::direct::{self, Epilogue};

/// Output positions of one product, about: the sums (`co x 256` values, 512 KB at 512 channels)
/// stay in L2 until they are written out.
const CHUNK_POSITIONS: usize = 256;

/// Images per chunk of the forward over `n` images of `hwo` output positions on `threads` workers:
/// about [`CHUNK_POSITIONS`] positions, at least one image, and at least two chunks per worker
/// where there are enough images.
pub(super) fn chunk_images(n: usize, hwo: usize, threads: usize) -> usize {
    (CHUNK_POSITIONS / hwo.max(1)).clamp(1, n.div_ceil(2 * threads.max(1)).max(1))
}

/// The forward of `nb` images `x` (NCHW, `c x h x w` each) with the weights `wt[o][ci]` into
/// `out` (their `co x ceil(h/2) x ceil(w/2)` outputs, NCHW; need not be initialised, every value
/// is written through the epilogue, whose plane sums are `nb x co`). `bufs`: scratch.
pub(super) fn forward(
    x: &[f32],
    nb: usize,
    (c, h, w): (usize, usize, usize),
    (wt, co): (&[f32], usize),
    out: &mut [MaybeUninit<f32>],
    (bias, relu, mut sums): Epilogue,
    (buf, scratch): (&mut Vec<f32>, &mut Vec<f32>),
) {
    let hwo = h.div_ceil(2) * w.div_ceil(2);
    let n = nb * hwo;
    assert!(out.len() >= nb * co * hwo && sums.as_ref().is_none_or(|s| s.len() >= nb * co));
    let xs = direct::even_samples(x, (nb, c), (h, w), buf);
    let (s, ql) = direct::conv1x1_flat(xs, (c, direct::flat_stride(n), n), (wt, co), scratch);
    for (b, o) in out.chunks_mut(co * hwo).take(nb).enumerate() {
        let sums = sums.as_deref_mut().map(|s| &mut s[b * co..(b + 1) * co]);
        direct::unpad_flat(&s[b * hwo..], (co, ql), hwo, o, (bias, relu, sums));
    }
}

/// The backward of `nb` images (`x` their inputs, `gout` their output gradients, NCHW): with `dw`
/// the weight gradient added into it transposed, `dw[ci * co + o] += sum_q g[o][q] x[ci][2q]`
/// (`gemm_threads` for the GEMM); with `dx` (the images' input gradients and the transposed weights
/// `wt_t[ci][o]`) `dx[ci][2y][2x] += sum_o wt_t[ci][o] g[o][y][x]`, the other positions untouched.
/// `bufs`: scratch.
#[allow(clippy::type_complexity)]
pub(super) fn backward(
    (x, gout, nb): (&[f32], &[f32], usize),
    (c, h, w, co): (usize, usize, usize, usize),
    (dw, gemm_threads): (Option<&mut [f32]>, usize),
    dx: Option<(&mut [f32], &[f32])>,
    (xbuf, gbuf, scratch): (&mut Vec<f32>, &mut Vec<f32>, &mut Vec<f32>),
) {
    let (ho, wo) = (h.div_ceil(2), w.div_ceil(2));
    let (hwo, n) = (ho * wo, nb * ho * wo);
    let rs = direct::flat_stride(n);
    let gs = direct::gather_flat(gout, (nb, co), hwo, gbuf);
    if let Some(dw) = dw {
        // dW[o][ci] = sum_q G[o][q] Xs[ci][q] over the chunk's positions, stored [ci][o].
        let xs = direct::even_samples(x, (nb, c), (h, w), xbuf);
        let a = Mat { data: gs, rs: rs as isize, cs: 1 };
        let b = Mat { data: xs, rs: 1, cs: rs as isize };
        sgemm_strided(co, c, n, a, b, dw, (1, co), true, gemm_threads);
    }
    let Some((dx, wt_t)) = dx else { return };
    assert!(dx.len() >= nb * c * h * w && wt_t.len() >= c * co);
    // A few images' product at a time, its sums added while they are in cache.
    let sub = (CHUNK_POSITIONS / hwo.max(1)).max(1);
    for b0 in (0..nb).step_by(sub) {
        let m = sub.min(nb - b0);
        let (s, ql) = direct::conv1x1_flat(&gs[b0 * hwo..], (co, rs, m * hwo), (wt_t, c), scratch);
        for (b, dxi) in dx[b0 * c * h * w..].chunks_exact_mut(c * h * w).take(m).enumerate() {
            for (ci, plane) in dxi.chunks_exact_mut(h * w).enumerate() {
                let src = &s[ci * ql + b * hwo..][..hwo];
                for (y, sr) in src.chunks_exact(wo).enumerate() {
                    let row = &mut plane[2 * y * w..(2 * y + 1) * w];
                    row.iter_mut().step_by(2).zip(sr).for_each(|(d, v)| *d += v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Forward (with and without the plane sums, bias and ReLU), input gradient and weight gradient
    /// against their definitions, in chunks of several sizes, even and odd sides, on the dispatch's
    /// SIMD level (`KDSCOPE_SIMD` selects the others; `direct`'s tests run the kernel per level).
    #[test]
    fn chunks_match_definition() {
        let cases: [(usize, usize, usize, usize, usize); 5] =
            [(3, 5, 6, 10, 4), (16, 32, 32, 32, 3), (5, 7, 7, 5, 3), (2, 3, 1, 1, 2), (256, 40, 8, 8, 9)];
        for (c, co, h, w, nb) in cases {
            let (ho, wo) = (h.div_ceil(2), w.div_ceil(2));
            let hwo = ho * wo;
            let x: Vec<f32> = (0..nb * c * h * w).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
            let wt: Vec<f32> = (0..co * c).map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0).collect();
            let bias: Vec<f32> = (0..co).map(|o| o as f32 / 7.0 - 0.3).collect();
            let gy: Vec<f32> = (0..nb * co * hwo).map(|i| ((i * 29 % 89) as f32 - 44.0) / 44.0).collect();
            let at = |b: usize, ci: usize, y: usize, xx: usize| x[((b * c + ci) * h + y) * w + xx];
            let conv: Vec<f64> = (0..nb * co * hwo)
                .map(|k| {
                    let (b, o, y, xx) = (k / (co * hwo), k / hwo % co, k / wo % ho, k % wo);
                    (0..c).map(|ci| (wt[o * c + ci] * at(b, ci, 2 * y, 2 * xx)) as f64).sum::<f64>()
                })
                .collect();
            let what = format!("c{c} co{co} {h}x{w} x{nb}");
            let close = |got: &[f32], want: &[f64], how: &str| {
                assert_eq!(got.len(), want.len());
                for (k, (a, b)) in got.iter().zip(want).enumerate() {
                    assert!((*a as f64 - b).abs() < 1e-4 * (1.0 + b.abs()), "{how} {what} at {k}: {a} vs {b}");
                }
            };
            // The forward in chunks of 1, 2 and all images; the plane sums with the plain one.
            for chunk in [1, 2, nb] {
                for (with_bias, relu) in [(false, false), (true, true), (true, false)] {
                    let mut out = vec![MaybeUninit::new(f32::NAN); nb * co * hwo];
                    let mut sums = vec![(f64::NAN, f64::NAN); nb * co];
                    let (mut buf, mut sc) = (vec![f32::NAN; 3], Vec::new());
                    for (i, o) in out.chunks_mut(chunk * co * hwo).enumerate() {
                        let k = o.len() / (co * hwo);
                        let xi = &x[i * chunk * c * h * w..];
                        let sums = (!with_bias && !relu).then(|| &mut sums[i * chunk * co..(i * chunk + k) * co]);
                        let epi = (with_bias.then_some(&bias[..]), relu, sums);
                        forward(xi, k, (c, h, w), (&wt, co), o, epi, (&mut buf, &mut sc));
                    }
                    // SAFETY: initialised (NaN) before; the NaN check below catches a value not written.
                    let got: Vec<f32> = out.iter().map(|v| unsafe { v.assume_init() }).collect();
                    let want: Vec<f64> = conv
                        .iter()
                        .enumerate()
                        .map(|(k, &v)| {
                            let v = if with_bias { v + bias[k / hwo % co] as f64 } else { v };
                            if relu {
                                v.max(0.0)
                            } else {
                                v
                            }
                        })
                        .collect();
                    close(&got, &want, &format!("forward, chunks of {chunk}, bias {with_bias} relu {relu}"));
                    if !with_bias && !relu {
                        for (p, (s, s2)) in sums.iter().enumerate() {
                            let plane = &conv[p * hwo..(p + 1) * hwo];
                            let (ws, ws2) = (plane.iter().sum::<f64>(), plane.iter().map(|v| v * v).sum::<f64>());
                            assert!((s - ws).abs() < 1e-3 && (s2 - ws2).abs() < 1e-3 * (1.0 + ws2), "sums {what} {p}");
                        }
                    }
                }
            }
            // The backward of all images in one chunk: dx from 0.25, dW (transposed) from 0.5.
            let wt_t: Vec<f32> = (0..c * co).map(|k| wt[(k % co) * c + k / co]).collect();
            let mut dx = vec![0.25f32; nb * c * h * w];
            let mut dw = vec![0.5f32; c * co];
            let (mut xb, mut gb, mut sc) = (Vec::new(), vec![f32::NAN; 7], Vec::new());
            backward(
                (&x, &gy, nb),
                (c, h, w, co),
                (Some(&mut dw), 1),
                Some((&mut dx, &wt_t)),
                (&mut xb, &mut gb, &mut sc),
            );
            let want_dx: Vec<f64> = (0..nb * c * h * w)
                .map(|k| {
                    let (b, ci, y, xx) = (k / (c * h * w), k / (h * w) % c, k / w % h, k % w);
                    let g_at = |o: usize| gy[((b * co + o) * ho + y / 2) * wo + xx / 2];
                    let sum = if y % 2 == 0 && xx % 2 == 0 {
                        (0..co).map(|o| (wt[o * c + ci] * g_at(o)) as f64).sum::<f64>()
                    } else {
                        0.0
                    };
                    0.25 + sum
                })
                .collect();
            close(&dx, &want_dx, "input gradient");
            let want_dw: Vec<f64> = (0..c * co)
                .map(|k| {
                    let (ci, o) = (k / co, k % co);
                    let sum = (0..nb * hwo)
                        .map(|q| {
                            let (b, y, xx) = (q / hwo, q / wo % ho, q % wo);
                            (gy[(b * co + o) * hwo + y * wo + xx] * at(b, ci, 2 * y, 2 * xx)) as f64
                        })
                        .sum::<f64>();
                    0.5 + sum
                })
                .collect();
            let scale = 1.0 + (nb * hwo) as f64 / 64.0;
            for (k, (a, b)) in dw.iter().zip(&want_dw).enumerate() {
                assert!(
                    (*a as f64 - b).abs() < 1e-4 * scale * (1.0 + b.abs()),
                    "weight gradient {what} at {k}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn chunks_hold_about_256_positions_and_feed_every_worker() {
        assert_eq!(chunk_images(128, 16, 2), 16); // 4x4 outputs
        assert_eq!(chunk_images(128, 64, 2), 4); // 8x8
        assert_eq!(chunk_images(128, 256, 2), 1); // 16x16
        assert_eq!(chunk_images(128, 3136, 2), 1); // 56x56: one image
        assert_eq!(chunk_images(8, 16, 2), 2); // few images: two chunks per worker
        assert_eq!(chunk_images(1, 16, 2), 1);
        assert_eq!(chunk_images(3, 1, 1), 2);
    }
}
