//! Direct 3x3 / stride 1 / padding 1 convolution of one image, without im2col.
//!
//! The input is copied once into zero-padded planes of width `wp = w + 2`, flattened. On that grid
//! every output position `q = y * wp + x` is `sum_taps w[tap] * xp[q + ky * wp + kx]`, so each tap
//! is a contiguous shifted read and a tile of outputs is a block of FMAs with broadcast weights
//! (the two columns per row with `x >= w` are computed and dropped). The same kernel computes the
//! input gradient, as the convolution of the output gradient with the flipped, transposed weights,
//! and [`conv3x3_weight_grad`] the weight gradient from the same padded layout.
//!
//! With AVX-512 the tile is 4 output channels x 64-96 positions held in up to 24 registers;
//! elsewhere a portable version of the same loop runs.

/// Output channels per register block.
const CB: usize = 4;

/// Geometry of a padded, flattened plane set.
#[derive(Clone, Copy, Debug)]
pub struct Padded {
    pub h: usize,
    pub w: usize,
}

impl Padded {
    pub fn wp(&self) -> usize {
        self.w + 2
    }
    /// Elements of one padded plane.
    pub fn plane(&self) -> usize {
        (self.h + 2) * self.wp()
    }
    /// Vectors of 16 positions per tile (4, 5 or 6): the one that wastes the fewest positions on
    /// this plane size (an 8x8 plane has 80 positions on the padded grid: 5 vectors, not 6).
    pub fn tile_vectors(&self) -> usize {
        let q = self.h * self.wp();
        [6, 5, 4].into_iter().min_by_key(|v| q.div_ceil(16 * v) * 16 * v).expect("non-empty")
    }
    /// Output positions computed per plane (rows of the padded width), rounded up to whole tiles.
    pub fn q_len(&self) -> usize {
        let t = 16 * self.tile_vectors();
        (self.h * self.wp()).div_ceil(t) * t
    }
    /// Length of a padded buffer of `c` planes, with slack for the last tile's reads.
    pub fn buf_len(&self, c: usize) -> usize {
        c * self.plane() + self.q_len() + 2 * self.wp() + 2
    }
}

/// Copies `c` planes of `h x w` into zero-padded planes (one image; see [`pad_chunk`]).
pub fn pad_planes(x: &[f32], c: usize, g: Padded, buf: &mut Vec<f32>) {
    pad_chunk(x, 1, c, g, buf)
}

/// Pads `b` images (`x` holds them NCHW, `c` channels each) into channel-major planes
/// `[c][b][plane]`, so one channel of all `b` images is contiguous (batched weight gradients).
/// Only the borders and the slack are zeroed (the interior is overwritten), so re-using `buf` costs
/// one copy of the data.
pub fn pad_chunk(x: &[f32], b: usize, c: usize, g: Padded, buf: &mut Vec<f32>) {
    let (wp, plane) = (g.wp(), g.plane());
    let len = g.buf_len(c * b);
    if buf.len() != len {
        buf.clear();
        buf.resize(len, 0.0);
    }
    for ci in 0..c {
        for bi in 0..b {
            let p = &mut buf[(ci * b + bi) * plane..(ci * b + bi + 1) * plane];
            let src = &x[(bi * c + ci) * g.h * g.w..(bi * c + ci + 1) * g.h * g.w];
            p[..wp + 1].fill(0.0);
            for y in 0..g.h {
                let row = (y + 1) * wp;
                p[row + 1..row + 1 + g.w].copy_from_slice(&src[y * g.w..(y + 1) * g.w]);
                p[row + 1 + g.w..row + wp + 1].fill(0.0);
            }
            p[(g.h + 1) * wp + 1..].fill(0.0);
        }
    }
    buf[c * b * plane..].fill(0.0);
}

/// `out[co][y][x] (+)= sum_ci sum_taps wt[co][ci][tap] * xp[ci * cstride + (y+ky)*wp + x+kx]` for one
/// image; `xp` from [`pad_planes`] (`cstride` = plane size) or an image's offset into
/// [`pad_chunk`]'s buffer (`cstride` = images x plane size); `out` is `co x h x w`. `scratch` holds
/// the padded-width output.
#[allow(clippy::too_many_arguments)]
pub fn conv3x3(
    xp: &[f32],
    c: usize,
    cstride: usize,
    g: Padded,
    wt: &[f32],
    co: usize,
    out: &mut [f32],
    accumulate: bool,
    scratch: &mut Vec<f32>,
) {
    let ql = g.q_len();
    // Every element is written by the kernels; only grow (zero-filled) when needed.
    if scratch.len() < co * ql {
        scratch.resize(co * ql, 0.0);
    }
    let scratch = &mut scratch[..co * ql];
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F; all reads and writes are bounds-checked per tile.
            unsafe { avx512::conv3x3(xp, c, cstride, g, wt, co, scratch) };
            unpad(scratch, co, g, out, accumulate);
            return;
        }
    }
    portable(xp, c, cstride, g, wt, co, scratch);
    unpad(scratch, co, g, out, accumulate);
}

fn unpad(s: &[f32], co: usize, g: Padded, out: &mut [f32], accumulate: bool) {
    let (wp, ql) = (g.wp(), g.q_len());
    for o in 0..co {
        for y in 0..g.h {
            let src = &s[o * ql + y * wp..o * ql + y * wp + g.w];
            let dst = &mut out[(o * g.h + y) * g.w..(o * g.h + y + 1) * g.w];
            if accumulate {
                dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
            } else {
                dst.copy_from_slice(src);
            }
        }
    }
}

/// Weight gradient of the convolution over a chunk of `nb` images, without im2col:
/// `dw[(i * 9 + t) * co + o] += sum_b sum_q gp[o][b][q] * xp[i][b][q + taps[t]]`, with `xp` and `gp`
/// (the output gradient) both from [`pad_chunk`] (channel-major `[channel][image][plane]`). The sum
/// runs over every position of a channel's `nb` consecutive padded planes, where the zero border of
/// `gp` masks what lies outside the images; each input channel is one pass with up to 3 output
/// channels x 9 taps of accumulators in registers. Returns `false` and leaves `dw` untouched where
/// AVX-512 is missing (the caller falls back to one GEMM per tap).
#[allow(clippy::too_many_arguments)]
pub fn conv3x3_weight_grad(xp: &[f32], gp: &[f32], c: usize, co: usize, nb: usize, g: Padded, dw: &mut [f32]) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F; the buffer sizes are asserted inside.
            unsafe { avx512::weight_grad(xp, gp, c, co, nb, g, dw) };
            return true;
        }
    }
    let _ = (xp, gp, c, co, nb, g, dw);
    false
}

/// Offsets of the 9 taps on the padded grid.
pub fn taps(g: Padded) -> [usize; 9] {
    let wp = g.wp();
    [0, 1, 2, wp, wp + 1, wp + 2, 2 * wp, 2 * wp + 1, 2 * wp + 2]
}

fn portable(xp: &[f32], c: usize, cstride: usize, g: Padded, wt: &[f32], co: usize, s: &mut [f32]) {
    let (ql, off) = (g.q_len(), taps(g));
    for o in 0..co {
        let acc = &mut s[o * ql..(o + 1) * ql];
        acc.fill(0.0);
        for ci in 0..c {
            let base = &xp[ci * cstride..];
            for (t, &d) in off.iter().enumerate() {
                let w = wt[(o * c + ci) * 9 + t];
                let src = &base[d..d + ql];
                acc.iter_mut().zip(src).for_each(|(a, x)| *a += w * x);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{taps, Padded, CB};

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn conv3x3(xp: &[f32], c: usize, plane: usize, g: Padded, wt: &[f32], co: usize, s: &mut [f32]) {
        let (ql, off) = (g.q_len(), taps(g));
        assert!(xp.len() >= (c - 1) * plane + ql + off[8]);
        assert!(wt.len() >= co * c * 9 && s.len() >= co * ql);
        let full = co / CB * CB;
        match g.tile_vectors() {
            6 => run::<6>(xp, c, plane, &off, wt, co, full, ql, s),
            5 => run::<5>(xp, c, plane, &off, wt, co, full, ql, s),
            _ => run::<4>(xp, c, plane, &off, wt, co, full, ql, s),
        }
    }

    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn run<const V: usize>(
        xp: &[f32],
        c: usize,
        plane: usize,
        off: &[usize; 9],
        wt: &[f32],
        co: usize,
        full: usize,
        ql: usize,
        s: &mut [f32],
    ) {
        for o0 in (0..full).step_by(CB) {
            block::<CB, V>(xp, c, plane, off, wt, o0, ql, s);
        }
        for o0 in full..co {
            block::<1, V>(xp, c, plane, off, wt, o0, ql, s);
        }
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn weight_grad(
        xp: &[f32],
        gp: &[f32],
        c: usize,
        co: usize,
        nb: usize,
        g: Padded,
        dw: &mut [f32],
    ) {
        // Each channel's loop covers `nb * plane` positions (the masked tail reads no lane past
        // that), shifted by at most `wp + 1` in `gp` and `2 * wp + 2` in `xp`: the slack of
        // `pad_chunk`'s buffers.
        let (len, wp) = (nb * g.plane(), g.wp());
        assert!(gp.len() > co * len + wp && xp.len() >= c * len + 2 * wp + 2 && dw.len() >= c * 9 * co);
        let mut o0 = 0;
        while o0 < co {
            // Blocks of 3 output channels (27 accumulators); 4 left over become 2 + 2.
            let nbk = match co - o0 {
                1 => 1,
                2 | 4 => 2,
                _ => 3,
            };
            for i in 0..c {
                let args = (xp.as_ptr(), gp.as_ptr(), i, o0, nb, g, dw.as_mut_ptr(), co);
                match nbk {
                    3 => wg_block::<3>(args),
                    2 => wg_block::<2>(args),
                    _ => wg_block::<1>(args),
                }
            }
            o0 += nbk;
        }
    }

    type WgArgs = (*const f32, *const f32, usize, usize, usize, Padded, *mut f32, usize);

    /// Weight gradient of input channel `i` and output channels `o0..o0 + NO` over all images: one
    /// loop over the channel's `nb` consecutive padded planes (the zero rows and columns of `gp` mask
    /// the positions outside the images), the taps read through three row pointers with constant
    /// column offsets, the 9 x NO accumulators in vector registers.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::needless_range_loop)]
    unsafe fn wg_block<const NO: usize>((xp, gp, i, o0, nb, g, dw, co): WgArgs) {
        let (plane, wp) = (g.plane(), g.wp());
        let len = nb * plane;
        let full = len / 16 * 16;
        let tail: __mmask16 = ((1u32 << (len - full)) - 1) as __mmask16;
        let xb = xp.add(i * len);
        let rows = [xb, xb.add(wp), xb.add(2 * wp)];
        let gb: [*const f32; NO] = std::array::from_fn(|o| gp.add((o0 + o) * len + wp + 1));
        let mut acc = [[_mm512_setzero_ps(); 9]; NO];
        for q in (0..len).step_by(16) {
            let m = if q < full { !0 } else { tail };
            let gv: [__m512; NO] = std::array::from_fn(|o| _mm512_maskz_loadu_ps(m, gb[o].add(q)));
            for ky in 0..3 {
                for kx in 0..3 {
                    let xv = _mm512_maskz_loadu_ps(m, rows[ky].add(q + kx));
                    for o in 0..NO {
                        acc[o][ky * 3 + kx] = _mm512_fmadd_ps(gv[o], xv, acc[o][ky * 3 + kx]);
                    }
                }
            }
        }
        for o in 0..NO {
            for t in 0..9 {
                *dw.add((i * 9 + t) * co + o0 + o) += _mm512_reduce_add_ps(acc[o][t]);
            }
        }
    }

    /// `NB` output channels starting at `o0`, all tiles; accumulators stay in registers because
    /// every loop bound is a constant.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
    unsafe fn block<const NB: usize, const V: usize>(
        xp: &[f32],
        c: usize,
        plane: usize,
        off: &[usize; 9],
        wt: &[f32],
        o0: usize,
        ql: usize,
        s: &mut [f32],
    ) {
        let xptr = xp.as_ptr();
        let wptr = wt.as_ptr();
        let sptr = s.as_mut_ptr();
        for q0 in (0..ql).step_by(16 * V) {
            let mut acc = [[_mm512_setzero_ps(); V]; NB];
            for ci in 0..c {
                let xb = xptr.add(ci * plane + q0);
                let wrow = wptr.add((o0 * c + ci) * 9);
                for t in 0..9 {
                    let p = xb.add(off[t]);
                    let mut xv = [_mm512_setzero_ps(); V];
                    for v in 0..V {
                        xv[v] = _mm512_loadu_ps(p.add(16 * v));
                    }
                    for b in 0..NB {
                        let w = _mm512_set1_ps(*wrow.add(b * c * 9 + t));
                        for v in 0..V {
                            acc[b][v] = _mm512_fmadd_ps(w, xv[v], acc[b][v]);
                        }
                    }
                }
            }
            for b in 0..NB {
                let dst = sptr.add((o0 + b) * ql + q0);
                for v in 0..V {
                    _mm512_storeu_ps(dst.add(16 * v), acc[b][v]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(x: &[f32], c: usize, h: usize, w: usize, wt: &[f32], co: usize) -> Vec<f32> {
        let mut out = vec![0.0; co * h * w];
        for o in 0..co {
            for y in 0..h {
                for xx in 0..w {
                    let mut acc = 0.0;
                    for ci in 0..c {
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let (iy, ix) = (y as isize + ky as isize - 1, xx as isize + kx as isize - 1);
                                if iy >= 0 && iy < h as isize && ix >= 0 && ix < w as isize {
                                    acc += wt[(o * c + ci) * 9 + ky * 3 + kx]
                                        * x[(ci * h + iy as usize) * w + ix as usize];
                                }
                            }
                        }
                    }
                    out[(o * h + y) * w + xx] = acc;
                }
            }
        }
        out
    }

    #[test]
    fn weight_grad_matches_naive() {
        for (c, co, h, w, nb) in [(3, 5, 7, 9, 2), (2, 4, 32, 32, 3), (4, 7, 8, 8, 1), (1, 1, 1, 1, 2), (2, 3, 5, 3, 4)]
        {
            let x: Vec<f32> = (0..nb * c * h * w).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
            let gy: Vec<f32> = (0..nb * co * h * w).map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0).collect();
            // dw[o][i][ky][kx] = sum_b sum_(y,x) g[b][o][y][x] * x[b][i][y + ky - 1][x + kx - 1]
            let mut want = vec![0.0f64; co * c * 9];
            for b in 0..nb {
                for o in 0..co {
                    for i in 0..c {
                        for t in 0..9 {
                            let (ky, kx) = (t / 3, t % 3);
                            for y in 0..h {
                                for xx in 0..w {
                                    let (iy, ix) = (y as isize + ky as isize - 1, xx as isize + kx as isize - 1);
                                    if iy >= 0 && iy < h as isize && ix >= 0 && ix < w as isize {
                                        want[(o * c + i) * 9 + t] += (gy[((b * co + o) * h + y) * w + xx]
                                            * x[((b * c + i) * h + iy as usize) * w + ix as usize])
                                            as f64;
                                    }
                                }
                            }
                        }
                    }
                }
            }
            let g = Padded { h, w };
            let (mut xp, mut gp) = (Vec::new(), Vec::new());
            pad_chunk(&x, nb, c, g, &mut xp);
            pad_chunk(&gy, nb, co, g, &mut gp);
            let mut dw = vec![0.5f32; c * 9 * co];
            if !conv3x3_weight_grad(&xp, &gp, c, co, nb, g, &mut dw) {
                return; // no AVX-512 here: the GEMM fallback is covered by the op's gradient checks
            }
            for o in 0..co {
                for i in 0..c {
                    for t in 0..9 {
                        let got = dw[(i * 9 + t) * co + o] - 0.5;
                        let w = want[(o * c + i) * 9 + t] as f32;
                        assert!((got - w).abs() < 1e-3 * (1.0 + w.abs()), "c{c} co{co} {h}x{w}: {got} vs {w}");
                    }
                }
            }
        }
    }

    #[test]
    fn direct_matches_naive_on_odd_sizes() {
        for (c, co, h, w) in [(3, 5, 7, 9), (16, 16, 8, 8), (2, 9, 32, 32), (1, 1, 1, 1)] {
            let x: Vec<f32> = (0..c * h * w).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
            let wt: Vec<f32> = (0..co * c * 9).map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0).collect();
            let g = Padded { h, w };
            let mut xp = Vec::new();
            pad_planes(&x, c, g, &mut xp);
            let mut out = vec![0.0; co * h * w];
            let mut s = Vec::new();
            conv3x3(&xp, c, g.plane(), g, &wt, co, &mut out, false, &mut s);
            let want = naive(&x, c, h, w, &wt, co);
            for (a, b) in out.iter().zip(&want) {
                assert!((a - b).abs() < 1e-4, "{a} vs {b}");
            }
            let mut port = vec![0.0; co * g.q_len()];
            portable(&xp, c, g.plane(), g, &wt, co, &mut port);
            let mut out2 = vec![1.0; co * h * w];
            unpad(&port, co, g, &mut out2, true);
            for (a, b) in out2.iter().zip(&want) {
                assert!((a - 1.0 - b).abs() < 1e-4);
            }
            // The same image as the second of three in a channel-major chunk.
            let mut three = x.iter().map(|v| v * 3.0).collect::<Vec<f32>>();
            three.extend_from_slice(&x);
            three.extend(x.iter().map(|v| -v));
            let mut chunk = Vec::new();
            pad_chunk(&three, 3, c, g, &mut chunk);
            let mut out3 = vec![0.0; co * h * w];
            conv3x3(&chunk[g.plane()..], c, 3 * g.plane(), g, &wt, co, &mut out3, false, &mut s);
            for (a, b) in out3.iter().zip(&want) {
                assert!((a - b).abs() < 1e-4);
            }
        }
    }
}
