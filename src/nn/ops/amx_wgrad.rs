//! The weight gradient of a 3x3 / stride 1 / padding 1 convolution in bf16 on AMX tiles (the
//! training half of `KDSCOPE_PRECISION=bf16`, [`super::amx`]): `dW[o][ci][tap] = sum over images
//! and positions of gy[o][p] x[ci][p + tap]`, with `x` and `gy` rounded to bf16 and the sums in f32.
//!
//! A GEMM per tap with the positions as K: `C (16 input channels x 16 output channels) += A (16 x
//! 32 positions of x, shifted by the tap) . B (16 pairs of positions x 16 output channels of gy)`.
//! - Positions run over each image's output grid with two more columns (`h x (w + 2)`, the output
//!   gradient zero there), so that a tap is one shift, `ky * (w + 2) + kx`, of the input's
//!   zero-bordered `(h + 2) x (w + 2)` grid: A's rows start anywhere, so one plain bf16 copy of
//!   the input serves every tap.
//! - B: the output gradient in bf16 with two positions side by side per output channel (the VNNI
//!   layout `tdpbf16ps` reads), each image's positions rounded up to 32 with zeros.
//! - Up to 2 x 2 C tiles (2 blocks of 16 input channels x 2 of 16 output channels) are carried
//!   over all images and positions of the chunk, then added into the caller's gradient.
use super::amx::{bf16, pair, step, store_c, zero_c, Scratch, TileCfg};
use super::deferred::{bn_relu, Deferred};

/// Positions of one image's output grid (`h x (w + 2)`), rounded up to 32.
fn grid(h: usize, w: usize) -> usize {
    (h * (w + 2)).next_multiple_of(32)
}

/// Values of one channel's input copy: every position a tap reads (`grid + 2 * (w + 2) + 2`).
fn span(h: usize, w: usize) -> usize {
    grid(h, w) + 2 * (w + 2) + 2
}

/// Adds the weight gradient of `nb` images (`x`: `[nb][c][h][w]`, mapped by `pre` where given;
/// `gy`: `[nb][co][h][w]`) into `dw`, laid out `[(ci * 9 + tap) * co + o]`. `buf` holds the bf16
/// copies. Runs AMX instructions: only where [`super::amx::available`].
pub fn weight_grad(
    (x, pre): (&[f32], Option<&Deferred>),
    gy: &[f32],
    (nb, c, co): (usize, usize, usize),
    (h, w): (usize, usize),
    dw: &mut [f32],
    buf: &mut (Vec<u32>, Vec<u32>),
) {
    let (hw, wp, q, sp) = (h * w, w + 2, grid(h, w), span(h, w));
    assert!(x.len() == nb * c * hw && gy.len() == nb * co * hw && dw.len() == 9 * c * co, "weight_grad: sizes");
    let (cp, cop) = (c.next_multiple_of(16), co.next_multiple_of(16));
    let (xb, gb) = (&mut buf.0, &mut buf.1);
    // SAFETY: AMX CPUs have AVX-512 F and BW (`available` checks them; asserted by `TileCfg::run`).
    unsafe {
        pack_input((x, pre), (nb, c, cp), (h, w), xb);
        pack_grad(gy, (nb, co, cop), (h, w), gb);
    }
    let (xb, gb) = (xb.as_ptr().cast::<u16>(), gb.as_ptr().cast::<u16>());
    // A: 16 rows (input channels) of 32 positions, stride one channel's copy; B: 16 rows (pairs
    // of positions) of 16 output channels' pairs, stride all output channels of a pair.
    let (sa, sb) = (2 * sp, 4 * cop);
    let mut scratch = Scratch([[[0.0; 16]; 16]; 4]);
    TileCfg::gemm(64, 64, 16).run(|| {
        for tap in 0..9 {
            let off = (tap / 3) * wp + tap % 3;
            for cb in (0..cp / 16).step_by(2) {
                let nc = (cp / 16 - cb).min(2);
                for ob in (0..cop / 16).step_by(2) {
                    let no = (cop / 16 - ob).min(2);
                    zero_c();
                    for img in 0..nb {
                        for k0 in (0..q).step_by(32) {
                            let a0 = xb.wrapping_add((img * cp + cb * 16) * sp + k0 + off);
                            let b0 = gb.wrapping_add(((img * q / 2 + k0 / 2) * cop + ob * 16) * 2);
                            // SAFETY: tiles configured; A reads 16 channels' copies up to `span`
                            // (zero channels beyond c), B 16 pairs of the image's grid.
                            unsafe { step(nc, no, (a0, a0.wrapping_add(16 * sp), sa), (b0, b0.wrapping_add(32), sb)) };
                        }
                    }
                    store_c(&mut scratch);
                    // C[ci_i * 2 + o_j][ci][o] = dW[o][ci][tap].
                    for ci_i in 0..nc {
                        for oj in 0..no {
                            let tile = &scratch.0[ci_i * 2 + oj];
                            let (c0, o0) = ((cb + ci_i) * 16, (ob + oj) * 16);
                            let width = co.saturating_sub(o0).min(16);
                            for (r, row) in tile.iter().enumerate().take(c.saturating_sub(c0).min(16)) {
                                let at = ((c0 + r) * 9 + tap) * co + o0;
                                dw[at..at + width].iter_mut().zip(row).for_each(|(d, &v)| *d += v);
                            }
                        }
                    }
                }
            }
        }
    })
}

/// The input in bf16, `[image][channel (cp, zero from c)][span]` (two values per `u32`): the
/// zero-bordered `(h + 2) x (w + 2)` grid, zero beyond it; mapped by `pre` where given.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn pack_input(
    (x, pre): (&[f32], Option<&Deferred>),
    (nb, c, cp): (usize, usize, usize),
    (h, w): (usize, usize),
    out: &mut Vec<u32>,
) {
    let (hw, wp, sp) = (h * w, w + 2, span(h, w));
    out.clear();
    out.resize((nb * cp * sp).div_ceil(2), 0);
    // SAFETY: the u32 buffer viewed as the u16 values it holds (u16 needs less alignment).
    let out = std::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<u16>(), nb * cp * sp);
    for img in 0..nb {
        for ci in 0..c {
            let (a, b) = pre.map_or((1.0, 0.0), |p| (p.scale[ci], p.shift[ci]));
            let src = &x[(img * c + ci) * hw..(img * c + ci + 1) * hw];
            let dst = &mut out[(img * cp + ci) * sp + wp + 1..];
            for (d, s) in dst.chunks_mut(wp).zip(src.chunks(w)) {
                match pre {
                    Some(_) => d.iter_mut().zip(s).for_each(|(d, &v)| *d = bf16(bn_relu(v, a, b))),
                    None => d.iter_mut().zip(s).for_each(|(d, &v)| *d = bf16(v)),
                }
            }
        }
    }
}

/// The output gradient in bf16, `[image][pair of positions][o (cop, zero from co)]` (one pair per
/// `u32`) over the `h x (w + 2)` grid (rounded up to 32 positions), zero on the two extra columns.
/// With `w` even (a row is whole pairs): each block of 16 output channels is converted a channel
/// at a time into a grid of pairs, then transposed 16 x 16 pairs at a time into place.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn pack_grad(gy: &[f32], (nb, co, cop): (usize, usize, usize), (h, w): (usize, usize), out: &mut Vec<u32>) {
    let (hw, wp, q) = (h * w, w + 2, grid(h, w));
    let (q2, wp2) = (q / 2, wp / 2);
    out.clear();
    out.resize(nb * q2 * cop, 0);
    if w % 2 != 0 {
        for img in 0..nb {
            let dst = &mut out[img * q2 * cop..(img + 1) * q2 * cop];
            let dst = std::slice::from_raw_parts_mut(dst.as_mut_ptr().cast::<u16>(), dst.len() * 2);
            for o in 0..co {
                let src = &gy[(img * co + o) * hw..(img * co + o + 1) * hw];
                for (y, row) in src.chunks(w).enumerate() {
                    for (xx, &v) in row.iter().enumerate() {
                        let p = y * wp + xx;
                        dst[((p / 2) * cop + o) * 2 + p % 2] = bf16(v);
                    }
                }
            }
        }
        return;
    }
    let mut pairs = vec![0u32; 16 * q2];
    for img in 0..nb {
        let dst = &mut out[img * q2 * cop..(img + 1) * q2 * cop];
        for ob in (0..cop).step_by(16) {
            for (r, t) in pairs.chunks_exact_mut(q2).enumerate() {
                let o = ob + r;
                if o >= co {
                    t.fill(0);
                    continue;
                }
                let src = &gy[(img * co + o) * hw..(img * co + o + 1) * hw];
                for (y, row) in src.chunks_exact(w).enumerate() {
                    let t = &mut t[y * wp2..(y + 1) * wp2];
                    t.iter_mut().zip(row.chunks_exact(2)).for_each(|(d, v)| *d = pair(v[0], v[1]));
                    t[w / 2] = 0;
                }
                t[h * wp2..].fill(0);
            }
            // q2 is a multiple of 16: the grid is rounded up to 32 positions.
            for m0 in (0..q2).step_by(16) {
                let rows = std::array::from_fn(|r| pairs[r * q2 + m0..].as_ptr().cast::<f32>());
                let cols = std::array::from_fn(|k| dst[(m0 + k) * cop + ob..].as_mut_ptr().cast::<f32>());
                super::wgrad_blocked::transpose16(rows, cols, None);
            }
        }
    }
}
