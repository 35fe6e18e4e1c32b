//! Weight gradient of the 3x3 / padding 1 convolution (stride 1 or 2) over a channel-blocked copy
//! of the input: blocks of 16 input channels with AVX-512 (32 registers), of 8 with AVX2 + FMA (16
//! registers), input channels in whole blocks.
//!
//! [`pad_blocked`] copies a chunk of `nb` images into zero-padded planes (the layout of
//! [`super::direct::pad_chunk`]: rows of `wp = w + 1`, `nb` planes one after the other) whose
//! positions each hold one block of `L` input channels, one vector: `[c / L][position][L]`. For
//! input channel block `cb`, output channel `o` and tap `t`, the `L` lanes of
//! `sum_(b, y, x) g[b][o][y][x] * xb[cb][b * plane + y * wp + x + taps[t]]` are the weight
//! gradients of the block's `L` input channels, with no horizontal sums and no position outside the
//! images (the planar kernel of [`super::direct::conv3x3_weight_grad`] runs over the padded grid,
//! 9-29 % more positions at 32x32-8x8, with unaligned loads). [`weight_grad`] holds in registers:
//! - AVX-512: 3 output channels x 9 taps. Per output position, 3 broadcasts of the output gradient
//!   (read where it lies, unpadded) and 9 whole-line loads of the input serve 27 FMAs.
//! - AVX2: 3 output channels x the 3 taps of one kernel row, one pass per row over a segment of
//!   positions held in L1. Per position, 3 broadcasts and 3 input loads serve 9 FMAs (4 x 3
//!   accumulators, all 16 registers, spilled and ran slower).
use super::cpu;
use super::deferred::Deferred;
use super::direct::{aligned, taps, Padded};
use pulp::{Simd, WithSimd};

/// Whether [`weight_grad`] serves a convolution with `c` input channels in blocks of `lanes` (8 or
/// 16) on this CPU.
pub fn applies(c: usize, lanes: usize) -> bool {
    cpu::width_runs(lanes) && c > 0 && c.is_multiple_of(lanes)
}

/// Positions per channel block in [`pad_blocked`]'s buffer: the `nb` planes and one more, the
/// last tap's read past the last plane.
pub fn block_positions(nb: usize, g: Padded) -> usize {
    nb * g.plane() + 1
}

/// Copies `nb` images (`x` holds them NCHW, `c` channels each, `c` a multiple of `lanes`, 8 or
/// 16) into channel-blocked, zero-padded planes `[c / lanes][nb * plane + 1][lanes]` in `buf`,
/// starting on a 64-byte line, and returns them. Every value is written (data, borders, slack).
/// Each `lanes` consecutive pixels of a block's channels are one in-register transpose (16 x 16
/// with AVX-512, 8 x 8 with AVX). With `pre` (a deferred batch norm + ReLU) the copied values are
/// its map of `x`'s.
pub fn pad_blocked<'b>(
    (x, pre): (&[f32], Option<&Deferred>),
    (nb, c, lanes): (usize, usize, usize),
    g: Padded,
    buf: &'b mut Vec<f32>,
) -> &'b [f32] {
    match lanes {
        16 => pad_blocked_at::<16>((x, pre), nb, c, g, buf),
        8 => pad_blocked_at::<8>((x, pre), nb, c, g, buf),
        _ => panic!("pad_blocked: blocks of {lanes} channels (8 or 16 only)"),
    }
}

fn pad_blocked_at<'b, const L: usize>(
    (x, pre): (&[f32], Option<&Deferred>),
    nb: usize,
    c: usize,
    g: Padded,
    buf: &'b mut Vec<f32>,
) -> &'b [f32] {
    assert!(c.is_multiple_of(L) && x.len() >= nb * c * g.h * g.w, "pad_blocked: {c} channels, {} values", x.len());
    let (h, w, wp, plane, hw) = (g.h, g.w, g.wp(), g.plane(), g.h * g.w);
    let bs = block_positions(nb, g);
    let out = aligned(buf, c / L * bs * L, 0);
    #[cfg(target_arch = "x86_64")]
    let fast = match L {
        16 => is_x86_feature_detected!("avx512f"),
        _ => is_x86_feature_detected!("avx"),
    };
    for (cb, blk) in out.chunks_exact_mut(bs * L).enumerate() {
        // Each channel's (scale, shift), where the values are mapped.
        let ab: Option<[(f32, f32); L]> =
            pre.map(|p| std::array::from_fn(|l| (p.scale[cb * L + l], p.shift[cb * L + l])));
        for bi in 0..nb {
            let dst = &mut blk[bi * plane * L..(bi + 1) * plane * L];
            // The zero row above and the first row's left border; each row's right border (the
            // next row's left one); the rest of the zero row below.
            dst[..(wp + 1) * L].fill(0.0);
            for y in 0..h {
                dst[(y + 2) * wp * L..((y + 2) * wp + 1) * L].fill(0.0);
            }
            dst[((h + 1) * wp + 1) * L..].fill(0.0);
            let src: [&[f32]; L] = std::array::from_fn(|l| {
                let p = (bi * c + cb * L + l) * hw;
                &x[p..p + hw]
            });
            // Pixel `p` (row `p / w`, column `p % w`) goes to padded position `(y + 1) * wp + x + 1`.
            let (mut p, mut y, mut xx) = (0, 0, 0);
            #[cfg(target_arch = "x86_64")]
            while fast && p + L <= hw {
                let rows: [*const f32; L] = std::array::from_fn(|l| src[l][p..p + L].as_ptr());
                let mut cols = [std::ptr::null_mut(); L];
                for col in cols.iter_mut() {
                    *col = dst[((y + 1) * wp + xx + 1) * L..][..L].as_mut_ptr();
                    (y, xx) = if xx + 1 == w { (y + 1, 0) } else { (y, xx + 1) };
                }
                // SAFETY: `fast` found the instructions of the transpose for `L`; each pointer is
                // `L` values within `x` or `dst`, as the slicing above checked.
                unsafe {
                    match (<[_; 16]>::try_from(&rows[..]), <[_; 16]>::try_from(&cols[..])) {
                        (Ok(r), Ok(cl)) => transpose16(r, cl, ab.map(|ab| std::array::from_fn(|l| ab[l]))),
                        _ => transpose8(
                            std::array::from_fn(|l| rows[l]),
                            std::array::from_fn(|l| cols[l]),
                            ab.map(|ab| std::array::from_fn(|l| ab[l])),
                        ),
                    }
                }
                p += L;
            }
            for pixel in p..hw {
                let d = &mut dst[((y + 1) * wp + xx + 1) * L..][..L];
                for (l, (v, plane)) in d.iter_mut().zip(&src).enumerate() {
                    *v = match pre {
                        Some(p) => p.value(cb * L + l, plane[pixel]),
                        None => plane[pixel],
                    };
                }
                (y, xx) = if xx + 1 == w { (y + 1, 0) } else { (y, xx + 1) };
            }
        }
        blk[nb * plane * L..].fill(0.0);
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
pub(super) unsafe fn transpose16(rows: [*const f32; 16], cols: [*mut f32; 16], ab: Option<[(f32, f32); 16]>) {
    use std::arch::x86_64::*;
    let mut r = [_mm512_setzero_ps(); 16];
    for l in 0..16 {
        r[l] = _mm512_loadu_ps(rows[l]);
    }
    if let Some(ab) = ab {
        let zero = _mm512_setzero_ps();
        for l in 0..16 {
            let v = _mm512_add_ps(_mm512_mul_ps(r[l], _mm512_set1_ps(ab[l].0)), _mm512_set1_ps(ab[l].1));
            r[l] = _mm512_max_ps(v, zero);
        }
    }
    // t[2i] / t[2i + 1], 128-bit lane k: (r[2i][4k], r[2i+1][4k], r[2i][4k+1], r[2i+1][4k+1]) / the
    // same of 4k + 2 and 4k + 3.
    let mut t = [_mm512_setzero_ps(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // u[4i + j], lane k: rows 4i..4i + 4 of column 4k + j.
    let mut u = [_mm512_setzero_ps(); 16];
    for i in 0..4 {
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

/// `cols[k][l] = rows[l][k]` for an 8 x 8 block: 8 loads, pairs of rows interleaved, 4 x 4
/// transposes within each 128-bit half, then the halves exchanged, 8 stores.
///
/// # Safety
/// The CPU has AVX; each `rows[l]` is 8 readable values, each `cols[k]` 8 writable ones. `ab` as
/// [`transpose16`]'s.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn transpose8(rows: [*const f32; 8], cols: [*mut f32; 8], ab: Option<[(f32, f32); 8]>) {
    use std::arch::x86_64::*;
    let mut r = [_mm256_setzero_ps(); 8];
    for l in 0..8 {
        r[l] = _mm256_loadu_ps(rows[l]);
    }
    if let Some(ab) = ab {
        let zero = _mm256_setzero_ps();
        for l in 0..8 {
            let v = _mm256_add_ps(_mm256_mul_ps(r[l], _mm256_set1_ps(ab[l].0)), _mm256_set1_ps(ab[l].1));
            r[l] = _mm256_max_ps(v, zero);
        }
    }
    // t[2i] / t[2i + 1], half k: (r[2i][4k], r[2i+1][4k], r[2i][4k+1], r[2i+1][4k+1]) / the same of
    // 4k + 2 and 4k + 3.
    let mut t = [_mm256_setzero_ps(); 8];
    for i in 0..4 {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // u[4i + j], half k: rows 4i..4i + 4 of column 4k + j.
    let mut u = [_mm256_setzero_ps(); 8];
    for i in 0..2 {
        u[4 * i] = _mm256_shuffle_ps::<0x44>(t[4 * i], t[4 * i + 2]);
        u[4 * i + 1] = _mm256_shuffle_ps::<0xEE>(t[4 * i], t[4 * i + 2]);
        u[4 * i + 2] = _mm256_shuffle_ps::<0x44>(t[4 * i + 1], t[4 * i + 3]);
        u[4 * i + 3] = _mm256_shuffle_ps::<0xEE>(t[4 * i + 1], t[4 * i + 3]);
    }
    // Column j is the low halves of u[j] and u[4 + j], column 4 + j their high halves.
    for j in 0..4 {
        _mm256_storeu_ps(cols[j], _mm256_permute2f128_ps::<0x20>(u[j], u[4 + j]));
        _mm256_storeu_ps(cols[4 + j], _mm256_permute2f128_ps::<0x31>(u[j], u[4 + j]));
    }
}

/// `dw[(i * 9 + t) * co + o] += sum_b sum_(y, x) gy[b][o][y][x] * x[b][i][s y + ky - 1][s x + kx - 1]`
/// (tap `t = 3 ky + kx`, zero outside the image; stride `s` 1, or 2 on even sides: output `h/s x
/// w/s`), with `xb` from [`pad_blocked`] of the same `nb` images in blocks of `lanes` channels (`g`
/// their input size) and `gy` the output gradient of those images, NCHW. `acc` is scratch (grown
/// to `c * co * 9` values). Returns `false` and leaves `dw` untouched where [`applies`] is false.
pub fn weight_grad(
    xb: &[f32],
    gy: &[f32],
    (c, co, nb, lanes): (usize, usize, usize, usize),
    (g, s): (Padded, usize),
    dw: &mut [f32],
    acc: &mut Vec<f32>,
) -> bool {
    let (ho, wo) = (g.h / s, g.w / s);
    weight_grad_planes(xb, (gy, (co * ho * wo, ho * wo, wo)), (c, co, nb, lanes), (g, s), dw, acc)
}

/// [`weight_grad`] with the output gradient's planes laid out otherwise: image `b`, channel `o`'s
/// plane at `b * strides.0 + o * strides.1` of `gy`, its rows `strides.2` apart (NCHW: `(co * hw,
/// hw, w)`; a chunk's planes from their first value: `(plane, nb * plane, row)`, the row `w` on tight
/// planes, more on the padded grid ([`super::tight::Planes::row`])).
pub fn weight_grad_planes(
    xb: &[f32],
    gy: (&[f32], (usize, usize, usize)),
    (c, co, nb, lanes): (usize, usize, usize, usize),
    (g, s): (Padded, usize),
    dw: &mut [f32],
    acc: &mut Vec<f32>,
) -> bool {
    let Some(acc) = accumulate(xb, gy, (c, co, nb, lanes), (g, s), acc) else {
        return false;
    };
    // `acc` is `[c / L][co][9][L]`: lane `l` of block `cb` is input channel `L cb + l`. `dw` is
    // `[c][9][co]`: per block and tap, `co x L` values transposed, in tiles of `L` output channels
    // (the tile's `L` source lines stay in L1; `dw`'s rows are written along. Value by value, one
    // line each, this took longer than the kernel with 512 channels at 4x4).
    for (cb, blk) in acc.chunks_exact(co * 9 * lanes).enumerate() {
        for t in 0..9 {
            for o0 in (0..co).step_by(lanes) {
                for l in 0..lanes {
                    let row = &mut dw[((cb * lanes + l) * 9 + t) * co..][o0..co.min(o0 + lanes)];
                    for (i, d) in row.iter_mut().enumerate() {
                        *d += blk[((o0 + i) * 9 + t) * lanes + l];
                    }
                }
            }
        }
    }
    true
}

/// Whether [`weight_grad_by_output`] serves a stride-1 convolution with `c` input and `co` output
/// channels where [`weight_grad`] does not: the input channels not in whole blocks, the output
/// channels in whole blocks of `lanes` (a network's first layer: 3 channels in, 16 out).
pub fn applies_by_output(c: usize, co: usize, lanes: usize) -> bool {
    !applies(c, lanes) && c > 0 && applies(co, lanes)
}

/// [`weight_grad`] of a stride-1 convolution where the output channels are blocked instead
/// ([`applies_by_output`]): the same kernel with the two operands' roles swapped. By the shift
/// `sum_q g[o][q] x[i][q + d] = sum_q x[i][q] g[o][q - d]`, the output gradient's blocked, padded
/// copy `gb` ([`pad_blocked`] of the `nb` images' output gradient, `co` channels) is read at the
/// mirrored taps while the input `x` (NCHW, `c` channels, `g` the plane size) is broadcast where it
/// lies: the kernel's tap `t` is the weight's tap `8 - t` and its lanes are output channels. Adds
/// into `dw` (`[i][9][co]`) and returns `true`; `false` (nothing done) where it does not apply.
pub fn weight_grad_by_output(
    x: &[f32],
    gb: &[f32],
    (c, co, nb, lanes): (usize, usize, usize, usize),
    g: Padded,
    dw: &mut [f32],
    acc: &mut Vec<f32>,
) -> bool {
    if !applies_by_output(c, co, lanes) {
        return false;
    }
    let hw = g.h * g.w;
    let Some(acc) = accumulate(gb, (x, (c * hw, hw, g.w)), (co, c, nb, lanes), (g, 1), acc) else {
        return false;
    };
    // `acc` is `[co / L][c][9][L]`: lane `l` of block `ob` is output channel `L ob + l`.
    for (ob, blk) in acc.chunks_exact(c * 9 * lanes).enumerate() {
        for (i, per_i) in blk.chunks_exact(9 * lanes).enumerate() {
            for (t, v) in per_i.chunks_exact(lanes).enumerate() {
                let at = (i * 9 + 8 - t) * co + ob * lanes;
                dw[at..at + lanes].iter_mut().zip(v).for_each(|(d, v)| *d += v);
            }
        }
    }
    true
}

/// The kernel's sums `[c / L][co][9][L]` in `acc` (see [`weight_grad`]); `None` where it does not
/// run on this CPU.
fn accumulate<'a>(
    xb: &[f32],
    gy: (&[f32], (usize, usize, usize)),
    (c, co, nb, lanes): (usize, usize, usize, usize),
    (g, s): (Padded, usize),
    acc: &'a mut Vec<f32>,
) -> Option<&'a [f32]> {
    if !applies(c, lanes) {
        return None;
    }
    assert!(
        s == 1 || (s == 2 && g.h.is_multiple_of(2) && g.w.is_multiple_of(2)),
        "weight_grad: stride {s} on {}x{}",
        g.h,
        g.w
    );
    let acc = aligned(acc, c * co * 9, 0);
    acc.fill(0.0);
    let kernel = Kernel { xb, gy, c, co, nb, g, s, acc: &mut acc[..] };
    #[cfg(target_arch = "x86_64")]
    let ran = {
        use pulp::x86::{V3, V4};
        match lanes {
            16 => V4::try_new().is_some_and(|simd| Simd::vectorize(simd, kernel)),
            _ => V3::try_new().is_some_and(|simd| Simd::vectorize(simd, kernel)),
        }
    };
    #[cfg(not(target_arch = "x86_64"))]
    let ran = cpu::arch().dispatch(kernel);
    ran.then_some(&acc[..])
}

struct Kernel<'a> {
    xb: &'a [f32],
    /// The output gradient and its strides per image, channel and row (see [`weight_grad_planes`]).
    gy: (&'a [f32], (usize, usize, usize)),
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
        let l = S::F32_LANES;
        if l != 16 && l != 8 {
            return false;
        }
        // Output rows and columns.
        let (h, w) = (g.h / s, g.w / s);
        let bs = block_positions(nb, g);
        // The reads: block `cb`, image `b`, position `s y * wp + s x + taps[t]` < `b * plane + plane + 1`.
        let (gy, (gi, gc, gr)) = gy;
        assert!(gr >= w, "weight_grad: rows {gr} apart, {w} long");
        // The last plane's end: image nb - 1, channel co - 1, its last row.
        let g_end = (nb.max(1) - 1) * gi + (co.max(1) - 1) * gc + (h.max(1) - 1) * gr + w;
        assert!(xb.len() >= c / l * bs * l && gy.len() >= g_end && acc.len() >= c * co * 9);
        // Rows per segment (of all the images' `nb * h` rows, so small planes share one): about
        // 256 positions, whose input lines (plus 2 rows) stay in L1 while every output channel
        // block passes over them.
        let rows = (256 / w.max(1)).clamp(1, (nb * h).max(1));
        for cb in 0..c / l {
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
                        let xp = xb.as_ptr().add(cb * bs * l);
                        let gp = gy.as_ptr().add(o0 * gc);
                        let ap = acc.as_mut_ptr().add((cb * co + o0) * 9 * l);
                        let p = (xp, gp, ap);
                        if l == 16 {
                            match n {
                                3 => segment::<S, 3, 9>(simd, p, rs, (g, s, (gi, gc, gr)), 0),
                                2 => segment::<S, 2, 9>(simd, p, rs, (g, s, (gi, gc, gr)), 0),
                                _ => segment::<S, 1, 9>(simd, p, rs, (g, s, (gi, gc, gr)), 0),
                            }
                        } else {
                            for t0 in [0, 3, 6] {
                                match n {
                                    3 => segment::<S, 3, 3>(simd, p, rs, (g, s, (gi, gc, gr)), t0),
                                    2 => segment::<S, 2, 3>(simd, p, rs, (g, s, (gi, gc, gr)), t0),
                                    _ => segment::<S, 1, 3>(simd, p, rs, (g, s, (gi, gc, gr)), t0),
                                }
                            }
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
/// `p..p + S::F32_LANES` must be readable.
#[inline(always)]
unsafe fn load<S: Simd>(p: *const f32) -> S::f32s {
    p.cast::<S::f32s>().read_unaligned()
}

/// Rows `r0..r1` of the chunk's `nb * h` output rows (row `r`: image `r / h`, row `r % h`; `h x w`
/// the output size, the input's `g` over stride `s`) for `NO` output channels (`gp`: the first
/// one's plane in image 0, the next ones `gc` apart, images `gi` apart, rows `gr` apart), taps
/// `t0..t0 + T` and one input channel block (`xp`: its first padded position), the `NO x T`
/// accumulators added to `ap` (`[o][9][L]`) at the end.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn segment<S: Simd, const NO: usize, const T: usize>(
    simd: S,
    (xp, gp, ap): (*const f32, *const f32, *mut f32),
    (r0, r1): (usize, usize),
    (g, s, (gi, gc, gr)): (Padded, usize, (usize, usize, usize)),
    t0: usize,
) {
    let l = S::F32_LANES;
    let (h, w, wp, plane) = (g.h / s, g.w / s, g.wp(), g.plane());
    let all = taps(g).map(|t| t * l);
    let off: [usize; T] = std::array::from_fn(|t| all[t0 + t]);
    let mut acc = [[simd.splat_f32s(0.0); T]; NO];
    let (mut b, mut y) = (r0 / h, r0 % h);
    for _ in r0..r1 {
        let (xr, grow) = (xp.add((b * plane + s * y * wp) * l), gp.add(b * gi + y * gr));
        (b, y) = if y + 1 == h { (b + 1, 0) } else { (b, y + 1) };
        for x in 0..w {
            let xq = xr.add(s * x * l);
            // The broadcasts first, then one input at a time: NO + 1 registers beside the
            // accumulators (AVX-512: 3 + 1 + 27 of 32; AVX2: 3 + 1 + 9 of 16).
            let gv: [S::f32s; NO] = std::array::from_fn(|o| simd.splat_f32s(*grow.add(o * gc + x)));
            for t in 0..T {
                let xv = load::<S>(xq.add(off[t]));
                for o in 0..NO {
                    acc[o][t] = simd.mul_add_f32s(gv[o], xv, acc[o][t]);
                }
            }
        }
    }
    for o in 0..NO {
        for t in 0..T {
            let p = ap.add((o * 9 + t0 + t) * l).cast::<S::f32s>();
            p.write_unaligned(simd.add_f32s(p.read_unaligned(), acc[o][t]));
        }
    }
}
