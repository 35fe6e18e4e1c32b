//! Weight gradient of the 3x3 / padding 1 convolution (stride 1 or 2) over a channel-blocked copy
//! of the input, for AVX-512 (16 lanes, 32 registers) and input channels in whole blocks of 16.
//!
//! [`pad_blocked`] copies a chunk of `nb` images into zero-padded planes (the layout of
//! [`super::direct::pad_chunk`]: rows of `wp = w + 1`, `nb` planes one after the other) whose
//! positions each hold 16 input channels, one 64-byte line: `[c / 16][position][16]`. For input
//! channel block `cb`, output channel `o` and tap `t`, the 16 lanes of
//! `sum_(b, y, x) g[b][o][y][x] * xb[cb][b * plane + y * wp + x + taps[t]]` are the weight gradients
//! of the 16 input channels. [`weight_grad`] computes them with 3 output channels x 9 taps of
//! accumulators in registers: per output position, 3 broadcasts of the output gradient (read where
//! it lies, unpadded) and 9 whole-line loads of the input serve 27 FMAs, with no horizontal sums and
//! no position outside the images (the planar kernel of [`super::direct::conv3x3_weight_grad`] runs
//! over the padded grid, 9-29 % more positions at 32x32-8x8, with unaligned loads).
use super::cpu;
use super::deferred::Deferred;
use super::direct::{aligned, taps, Padded};
use pulp::{Simd, WithSimd};

/// Input channels per block: one AVX-512 vector.
pub const BLOCK: usize = 16;

/// Whether [`weight_grad`] serves a convolution with `c` input channels on this CPU.
pub fn applies(c: usize) -> bool {
    c > 0 && c.is_multiple_of(BLOCK) && cpu::f32_lanes() == BLOCK
}

/// Positions per channel block in [`pad_blocked`]'s buffer: the `nb` planes and one more, the
/// last tap's read past the last plane.
pub fn block_positions(nb: usize, g: Padded) -> usize {
    nb * g.plane() + 1
}

/// Copies `nb` images (`x` holds them NCHW, `c` channels each, `c` a multiple of [`BLOCK`]) into
/// channel-blocked, zero-padded planes `[c / 16][nb * plane + 1][16]` in `buf`, starting on a
/// 64-byte line, and returns them. Every value is written (data, borders, slack). With AVX-512
/// each 16 consecutive pixels of 16 channels are one in-register 16 x 16 transpose. With `pre` (a
/// deferred batch norm + ReLU) the copied values are its map of `x`'s.
pub fn pad_blocked<'b>(
    (x, pre): (&[f32], Option<&Deferred>),
    nb: usize,
    c: usize,
    g: Padded,
    buf: &'b mut Vec<f32>,
) -> &'b [f32] {
    assert!(c.is_multiple_of(BLOCK) && x.len() >= nb * c * g.h * g.w, "pad_blocked: {c} channels, {} values", x.len());
    let (h, w, wp, plane, hw) = (g.h, g.w, g.wp(), g.plane(), g.h * g.w);
    let bs = block_positions(nb, g);
    let out = aligned(buf, c / BLOCK * bs * BLOCK, 0);
    #[cfg(target_arch = "x86_64")]
    let avx512 = is_x86_feature_detected!("avx512f");
    for (cb, blk) in out.chunks_exact_mut(bs * BLOCK).enumerate() {
        // Each channel's (scale, shift), where the values are mapped.
        let ab: Option<[(f32, f32); BLOCK]> =
            pre.map(|p| std::array::from_fn(|l| (p.scale[cb * BLOCK + l], p.shift[cb * BLOCK + l])));
        for bi in 0..nb {
            let dst = &mut blk[bi * plane * BLOCK..(bi + 1) * plane * BLOCK];
            // The zero row above and the first row's left border; each row's right border (the
            // next row's left one); the rest of the zero row below.
            dst[..(wp + 1) * BLOCK].fill(0.0);
            for y in 0..h {
                dst[(y + 2) * wp * BLOCK..((y + 2) * wp + 1) * BLOCK].fill(0.0);
            }
            dst[((h + 1) * wp + 1) * BLOCK..].fill(0.0);
            let src: [&[f32]; BLOCK] = std::array::from_fn(|l| {
                let p = (bi * c + cb * BLOCK + l) * hw;
                &x[p..p + hw]
            });
            // Pixel `p` (row `p / w`, column `p % w`) goes to padded position `(y + 1) * wp + x + 1`.
            let (mut p, mut y, mut xx) = (0, 0, 0);
            #[cfg(target_arch = "x86_64")]
            while avx512 && p + BLOCK <= hw {
                let rows: [*const f32; BLOCK] = std::array::from_fn(|l| src[l][p..p + BLOCK].as_ptr());
                let mut cols = [std::ptr::null_mut(); BLOCK];
                for col in cols.iter_mut() {
                    *col = dst[((y + 1) * wp + xx + 1) * BLOCK..][..BLOCK].as_mut_ptr();
                    (y, xx) = if xx + 1 == w { (y + 1, 0) } else { (y, xx + 1) };
                }
                // SAFETY: AVX-512F is present; each pointer is 16 values within `x` or `dst`, as
                // the slicing above checked.
                unsafe { transpose16(rows, cols, ab) };
                p += BLOCK;
            }
            for pixel in p..hw {
                let d = &mut dst[((y + 1) * wp + xx + 1) * BLOCK..][..BLOCK];
                for (l, (v, plane)) in d.iter_mut().zip(&src).enumerate() {
                    *v = match pre {
                        Some(p) => p.value(cb * BLOCK + l, plane[pixel]),
                        None => plane[pixel],
                    };
                }
                (y, xx) = if xx + 1 == w { (y + 1, 0) } else { (y, xx + 1) };
            }
        }
        blk[nb * plane * BLOCK..].fill(0.0);
    }
    out
}

/// `cols[k][l] = rows[l][k]` for a 16 x 16 block: 16 loads, three rounds of 16 shuffles (pairs of
/// rows interleaved, 4 x 4 transposes within each 128-bit lane, then of the 128-bit lanes), 16
/// stores.
///
/// # Safety
/// The CPU has AVX-512F; each `rows[l]` is 16 readable values, each `cols[k]` 16 writable ones.
/// With `ab`, row `l` is mapped to `max(v · a_l + b_l, 0)` as it is loaded (multiply, add, max: the
/// batch norm's own order).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose16(rows: [*const f32; BLOCK], cols: [*mut f32; BLOCK], ab: Option<[(f32, f32); BLOCK]>) {
    use std::arch::x86_64::*;
    let mut r = [_mm512_setzero_ps(); BLOCK];
    for l in 0..BLOCK {
        r[l] = _mm512_loadu_ps(rows[l]);
    }
    if let Some(ab) = ab {
        let zero = _mm512_setzero_ps();
        for l in 0..BLOCK {
            let v = _mm512_add_ps(_mm512_mul_ps(r[l], _mm512_set1_ps(ab[l].0)), _mm512_set1_ps(ab[l].1));
            r[l] = _mm512_max_ps(v, zero);
        }
    }
    // t[2i] / t[2i + 1], 128-bit lane k: (r[2i][4k], r[2i+1][4k], r[2i][4k+1], r[2i+1][4k+1]) / the
    // same of 4k + 2 and 4k + 3.
    let mut t = [_mm512_setzero_ps(); BLOCK];
    for i in 0..BLOCK / 2 {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // u[4i + j], lane k: rows 4i..4i + 4 of column 4k + j.
    let mut u = [_mm512_setzero_ps(); BLOCK];
    for i in 0..BLOCK / 4 {
        u[4 * i] = _mm512_shuffle_ps::<0x44>(t[4 * i], t[4 * i + 2]);
        u[4 * i + 1] = _mm512_shuffle_ps::<0xEE>(t[4 * i], t[4 * i + 2]);
        u[4 * i + 2] = _mm512_shuffle_ps::<0x44>(t[4 * i + 1], t[4 * i + 3]);
        u[4 * i + 3] = _mm512_shuffle_ps::<0xEE>(t[4 * i + 1], t[4 * i + 3]);
    }
    // Column 4k + j is lane k of u[j], u[4 + j], u[8 + j], u[12 + j]: a 4 x 4 transpose of lanes.
    for j in 0..4 {
        let v0 = _mm512_shuffle_f32x4::<0x44>(u[j], u[4 + j]);
        let v1 = _mm512_shuffle_f32x4::<0xEE>(u[j], u[4 + j]);
        let v2 = _mm512_shuffle_f32x4::<0x44>(u[8 + j], u[12 + j]);
        let v3 = _mm512_shuffle_f32x4::<0xEE>(u[8 + j], u[12 + j]);
        _mm512_storeu_ps(cols[j], _mm512_shuffle_f32x4::<0x88>(v0, v2));
        _mm512_storeu_ps(cols[4 + j], _mm512_shuffle_f32x4::<0xDD>(v0, v2));
        _mm512_storeu_ps(cols[8 + j], _mm512_shuffle_f32x4::<0x88>(v1, v3));
        _mm512_storeu_ps(cols[12 + j], _mm512_shuffle_f32x4::<0xDD>(v1, v3));
    }
}

/// `dw[(i * 9 + t) * co + o] += sum_b sum_(y, x) gy[b][o][y][x] * x[b][i][s y + ky - 1][s x + kx - 1]`
/// (tap `t = 3 ky + kx`, zero outside the image; stride `s` 1, or 2 on even sides: output `h/s x
/// w/s`), with `xb` from [`pad_blocked`] of the same `nb` images (`g` their input size) and `gy`
/// the output gradient of those images, NCHW. `acc` is scratch (grown to `c * co * 9` values).
/// Returns `false` and leaves `dw` untouched where [`applies`] is false.
pub fn weight_grad(
    xb: &[f32],
    gy: &[f32],
    (c, co, nb): (usize, usize, usize),
    g: Padded,
    s: usize,
    dw: &mut [f32],
    acc: &mut Vec<f32>,
) -> bool {
    if !applies(c) {
        return false;
    }
    assert!(
        s == 1 || (s == 2 && g.h.is_multiple_of(2) && g.w.is_multiple_of(2)),
        "weight_grad: stride {s} on {}x{}",
        g.h,
        g.w
    );
    let acc = aligned(acc, c * co * 9, 0);
    acc.fill(0.0);
    let ran = pulp::Arch::new().dispatch(Kernel { xb, gy, c, co, nb, g, s, acc: &mut acc[..] });
    if ran {
        // `acc` is `[c / 16][co][9][16]`: lane `l` of block `cb` is input channel `16 cb + l`.
        for (cb, blk) in acc.chunks_exact(co * 9 * BLOCK).enumerate() {
            for (o, per_o) in blk.chunks_exact(9 * BLOCK).enumerate() {
                for (t, lanes) in per_o.chunks_exact(BLOCK).enumerate() {
                    for (l, v) in lanes.iter().enumerate() {
                        dw[((cb * BLOCK + l) * 9 + t) * co + o] += v;
                    }
                }
            }
        }
    }
    ran
}

struct Kernel<'a> {
    xb: &'a [f32],
    gy: &'a [f32],
    c: usize,
    co: usize,
    nb: usize,
    g: Padded,
    s: usize,
    acc: &'a mut [f32],
}

impl WithSimd for Kernel<'_> {
    type Output = bool;

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> bool {
        let Kernel { xb, gy, c, co, nb, g, s, acc } = self;
        if S::F32_LANES != BLOCK {
            return false;
        }
        // Output rows and columns.
        let (h, w) = (g.h / s, g.w / s);
        let hw = h * w;
        let bs = block_positions(nb, g);
        // The reads: block `cb`, image `b`, position `s y * wp + s x + taps[t]` < `b * plane + plane + 1`.
        assert!(xb.len() >= c / BLOCK * bs * BLOCK && gy.len() >= nb * co * hw && acc.len() >= c * co * 9);
        // Rows per segment (of all the images' `nb * h` rows, so small planes share one): about
        // 256 positions, whose input lines (plus 2 rows) stay in L1 while every output channel
        // block passes over them.
        let rows = (256 / w.max(1)).clamp(1, (nb * h).max(1));
        for cb in 0..c / BLOCK {
            for r0 in (0..nb * h).step_by(rows) {
                let rs = (r0, (r0 + rows).min(nb * h));
                let mut o0 = 0;
                while o0 < co {
                    let n = match co - o0 {
                        1 => 1,
                        2 | 4 => 2,
                        _ => 3,
                    };
                    // SAFETY: the pointers stay within the lengths asserted above.
                    unsafe {
                        let xp = xb.as_ptr().add(cb * bs * BLOCK);
                        let gp = gy.as_ptr().add(o0 * hw);
                        let ap = acc.as_mut_ptr().add((cb * co + o0) * 9 * BLOCK);
                        match n {
                            3 => segment::<S, 3>(simd, (xp, gp, ap), rs, (g, s, co)),
                            2 => segment::<S, 2>(simd, (xp, gp, ap), rs, (g, s, co)),
                            _ => segment::<S, 1>(simd, (xp, gp, ap), rs, (g, s, co)),
                        }
                    }
                    o0 += n;
                }
            }
        }
        true
    }
}

/// One vector load at `p` (whole lines here).
///
/// # Safety
/// `p..p + 16` must be readable.
#[inline(always)]
unsafe fn load<S: Simd>(p: *const f32) -> S::f32s {
    p.cast::<S::f32s>().read_unaligned()
}

/// Rows `r0..r1` of the chunk's `nb * h` output rows (row `r`: image `r / h`, row `r % h`; `h x w`
/// the output size, the input's `g` over stride `s`) for `NO` output channels (`gp`: the first
/// one's plane in image 0, the next ones `h * w` apart, images `co * h * w` apart) and one input
/// channel block (`xp`: its first padded position), the 9 x `NO` accumulators added to `ap`
/// (`[o][t][16]`) at the end.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn segment<S: Simd, const NO: usize>(
    simd: S,
    (xp, gp, ap): (*const f32, *const f32, *mut f32),
    (r0, r1): (usize, usize),
    (g, s, co): (Padded, usize, usize),
) {
    let (h, w, wp, plane) = (g.h / s, g.w / s, g.wp(), g.plane());
    let hw = h * w;
    let off = taps(g).map(|t| t * BLOCK);
    let mut acc = [[simd.splat_f32s(0.0); 9]; NO];
    let (mut b, mut y) = (r0 / h, r0 % h);
    for _ in r0..r1 {
        let (xr, gr) = (xp.add((b * plane + s * y * wp) * BLOCK), gp.add(b * co * hw + y * w));
        (b, y) = if y + 1 == h { (b + 1, 0) } else { (b, y + 1) };
        for x in 0..w {
            let gv: [S::f32s; NO] = std::array::from_fn(|o| simd.splat_f32s(*gr.add(o * hw + x)));
            let xq = xr.add(s * x * BLOCK);
            for t in 0..9 {
                let xv = load::<S>(xq.add(off[t]));
                for o in 0..NO {
                    acc[o][t] = simd.mul_add_f32s(gv[o], xv, acc[o][t]);
                }
            }
        }
    }
    for o in 0..NO {
        for t in 0..9 {
            let p = ap.add((o * 9 + t) * BLOCK).cast::<S::f32s>();
            p.write_unaligned(simd.add_f32s(p.read_unaligned(), acc[o][t]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::ops::direct::tests::{check_weight_grad, naive_weight_grad};

    /// The blocked copy puts channel `16 cb + l` of image `b`, pixel `(y, x)` at lane `l` of
    /// position `b * plane + (y + 1) * wp + x + 1` of block `cb`, and zeros everywhere else, over
    /// whatever the buffer held: planes of fewer than 16 pixels (no transpose), and of 35 and 64
    /// (16-pixel transposes that cross rows, then a tail of 3 or none).
    #[test]
    fn pad_blocked_places_every_value() {
        for (h, w) in [(3, 5), (5, 7), (8, 8)] {
            pad_blocked_case(2, 32, Padded { h, w });
        }
    }

    fn pad_blocked_case(nb: usize, c: usize, g: Padded) {
        let x: Vec<f32> = (0..nb * c * g.h * g.w).map(|i| i as f32 + 1.0).collect();
        let mut buf = vec![f32::NAN; 10];
        let xb = pad_blocked((&x, None), nb, c, g, &mut buf);
        let bs = block_positions(nb, g);
        assert_eq!(xb.len(), c / BLOCK * bs * BLOCK);
        assert_eq!(xb.as_ptr() as usize % 64, 0);
        let mut nonzero = 0;
        for (k, &v) in xb.iter().enumerate() {
            let (l, p, cb) = (k % BLOCK, k / BLOCK % bs, k / (BLOCK * bs));
            let (b, q) = (p / g.plane(), p % g.plane());
            let (row, col) = (q / g.wp(), q % g.wp());
            let want = if b < nb && (1..=g.h).contains(&row) && col >= 1 {
                nonzero += 1;
                x[((b * c + cb * BLOCK + l) * g.h + row - 1) * g.w + col - 1]
            } else {
                0.0
            };
            assert_eq!(v, want, "{g:?}: block {cb} position {p} lane {l}");
        }
        assert_eq!(nonzero, x.len());
    }

    /// Against the definition, on planes from 1x1 to 32x32, odd and even sides, segments that
    /// split an image's rows (32 wide: 8 rows a segment), output channel counts that leave blocks
    /// of 1, 2 and 2 + 2, and a `dw` that already holds values (the kernel adds to it).
    #[test]
    fn blocked_weight_grad_matches_naive() {
        if !applies(BLOCK) {
            eprintln!("no AVX-512 on this CPU: the blocked weight gradient does not run here");
            assert!(!weight_grad(&[], &[], (16, 1, 1), Padded { h: 1, w: 1 }, 1, &mut [], &mut Vec::new()));
            return;
        }
        // Stride 2 (even sides): 32x32 (16x16 out, 16 rows a segment), 8x6 (4x3), 2x2 (1x1).
        for (c, co, h, w, nb, s) in [
            (16, 3, 7, 9, 2, 1),
            (32, 4, 32, 32, 2, 1),
            (16, 7, 8, 8, 3, 1),
            (16, 1, 1, 1, 2, 1),
            (48, 5, 5, 3, 1, 1),
            (16, 5, 32, 32, 2, 2),
            (32, 7, 8, 6, 3, 2),
            (16, 2, 2, 2, 2, 2),
        ] {
            let x: Vec<f32> = (0..nb * c * h * w).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
            let gy: Vec<f32> = (0..nb * co * h * w / s / s).map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0).collect();
            let want = naive_weight_grad(&x, &gy, (nb, c, co), (h, w), s);
            let g = Padded { h, w };
            let (mut xbuf, mut acc) = (vec![f32::NAN; 3], vec![f32::NAN; 5]);
            let xb = pad_blocked((&x, None), nb, c, g, &mut xbuf);
            let mut dw = vec![0.5f32; c * 9 * co];
            assert!(weight_grad(xb, &gy, (c, co, nb), g, s, &mut dw, &mut acc));
            check_weight_grad(&dw, 0.5, &want, (c, co), &format!("blocked {h}x{w} nb{nb} stride {s}"));
        }
        assert!(!weight_grad(&[], &[], (8, 1, 1), Padded { h: 1, w: 1 }, 1, &mut [], &mut Vec::new()));
    }
}
