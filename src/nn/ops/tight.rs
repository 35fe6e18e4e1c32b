//! The direct 3x3 / stride 1 / padding 1 convolution on tight planes (AVX-512): no padding
//! column, so the tiles cover the image's own `h * w` positions and are stored straight into the
//! output, with no padded-width scratch, no discarded column and no unpadding pass.
//!
//! [`pad_tight`] copies each plane between a zero row above and one below, with one zero before
//! and after (`plane = (h + 2) * w + 2` values): output position `q = y * w + x`, tap `(ky, kx)`
//! reads element `q + ky * w + kx`. The left taps (`kx = 0`) of column 0 and the right taps
//! (`kx = 2`) of column `w - 1` would read the neighbouring row's last or first value there; those
//! lanes are masked to zero in the load (AVX-512 zero-masking loads cost what a plain load costs).
//! A tile is 8 output channels x 3 vectors of 16 positions (24 accumulators; where the channel
//! count is not a multiple of 8, up to 6 x 4): per input channel and tap, 8 weight broadcasts and
//! 3 loads serve 24 FMAs. The epilogue (bias, ReLU, the batch norm's plane sums, or adding to the
//! output) runs on the accumulators before their one store.
//!
//! Intel Xeon, one thread, 16 images, against the padded-grid kernel with its unpadding pass:
//! 32x32 / 16 channels 139-146 against 137-142 GFLOP/s, 16x16 / 32 150-160 against 135-141, 8x8 /
//! 64 150-155 against 129-138 (6 x 4 tiles, channels 6 + 6 + 4 at 16, had reached 125-128 at 16
//! channels).
use std::mem::MaybeUninit;

use super::cpu;
use super::deferred::{copy_plane, Deferred};
use super::direct::aligned;

/// Whether [`conv`] serves an `h x w` plane on this CPU: AVX-512, whole vectors of positions.
pub fn applies(h: usize, w: usize) -> bool {
    h > 0 && w > 0 && (h * w).is_multiple_of(16) && cpu::f32_lanes() == 16
}

/// Values of one tight plane of an `h x w` image.
pub fn plane(h: usize, w: usize) -> usize {
    (h + 2) * w + 2
}

/// Copies `b` images (`x` holds them NCHW, `c` channels of `h x w`) into tight planes, channel
/// major (`[c][b][plane]`: one channel of all `b` images contiguous, as
/// [`super::direct::pad_chunk`]), in `buf` from a 64-byte line; returns them. Every value is written.
pub fn pad_tight<'b>(
    (x, pre): (&[f32], Option<&Deferred>),
    (b, c): (usize, usize),
    (h, w): (usize, usize),
    buf: &'b mut Vec<f32>,
) -> &'b [f32] {
    let (hw, pl) = (h * w, plane(h, w));
    let out = aligned(buf, b * c * pl, 0);
    for ci in 0..c {
        for bi in 0..b {
            let p = &mut out[(ci * b + bi) * pl..(ci * b + bi + 1) * pl];
            p[..w + 1].fill(0.0);
            copy_plane(pre, ci, &mut p[w + 1..w + 1 + hw], &x[(bi * c + ci) * hw..(bi * c + ci + 1) * hw]);
            p[w + 1 + hw..].fill(0.0);
        }
    }
    out
}

/// Where [`conv`] puts the convolution's values.
pub enum Out<'a> {
    /// Written (`out` need not be initialised): `relu?(v + bias[o] + res)` (a residual `res` of
    /// `out`'s layout, if any), and with `sums` (no bias, residual or ReLU) each output channel's
    /// `(sum, sum of squares)` over the plane.
    Write {
        out: &'a mut [MaybeUninit<f32>],
        bias: Option<&'a [f32]>,
        res: Option<&'a [f32]>,
        relu: bool,
        sums: Option<&'a mut [(f64, f64)]>,
    },
    /// Added to `out`.
    Add(&'a mut [f32]),
    /// Written, plain: the input gradient of a value whose batch norm + ReLU is deferred
    /// ([`super::deferred`]), `z` the value's held data (laid out as `out`), with each channel's
    /// batch-norm backward sums over the plane: `(sum g', sum g' * (z - mean))`, `g'` the output
    /// through the ReLU's backward (its mask recomputed from `z` as the batch norm does).
    Grad { out: &'a mut [MaybeUninit<f32>], z: &'a [f32], pre: &'a Deferred, sums: &'a mut [(f64, f64)] },
}

/// `out[o][y][x] (+)= sum_ci sum_taps wt[o][ci][ky][kx] * x[ci][y + ky - 1][x + kx - 1]` for one
/// image, `xp` its first tight plane from [`pad_tight`] (channel `ci` at `ci * cstride`), `out`
/// `co x h x w`. Returns `false` (nothing written) where [`applies`] is false.
pub fn conv(xp: &[f32], (c, cstride): (usize, usize), (h, w): (usize, usize), wt: &[f32], co: usize, out: Out) -> bool {
    if !applies(h, w) {
        return false;
    }
    let hw = h * w;
    assert!(c > 0 && cstride >= plane(h, w) && xp.len() >= (c - 1) * cstride + plane(h, w));
    assert!(wt.len() >= co * c * 9);
    // Per vector of 16 positions, the lanes whose left / right taps read inside the image.
    let masks: Vec<(u16, u16)> = (0..hw / 16)
        .map(|v| {
            (0..16).fold((0u16, 0u16), |(l, r), lane| {
                let x = (16 * v + lane) % w;
                (l | (u16::from(x != 0) << lane), r | (u16::from(x != w - 1) << lane))
            })
        })
        .collect();
    let (dst, mode, sums) = match out {
        Out::Write { out, bias, res, relu, sums } => {
            assert!(out.len() >= co * hw && res.is_none_or(|r| r.len() >= co * hw));
            let plain = bias.is_none() && res.is_none() && !relu;
            assert!(sums.is_none() || plain, "plane sums are of the plain convolution only");
            assert!(bias.is_none_or(|b| b.len() >= co) && sums.as_ref().is_none_or(|s| s.len() >= co));
            let res = res.map(|r| r.as_ptr());
            let mode = Mode { add: false, bias, res, relu, sums: sums.is_some(), bn: None };
            (out.as_mut_ptr().cast::<f32>(), mode, sums)
        }
        Out::Grad { out, z, pre, sums } => {
            assert!(out.len() >= co * hw && z.len() >= co * hw && sums.len() >= co && pre.scale.len() >= co);
            let mode = Mode { add: false, bias: None, res: None, relu: false, sums: true, bn: Some((z.as_ptr(), pre)) };
            (out.as_mut_ptr().cast::<f32>(), mode, Some(sums))
        }
        Out::Add(out) => {
            assert!(out.len() >= co * hw);
            (out.as_mut_ptr(), Mode { add: true, bias: None, res: None, relu: false, sums: false, bn: None }, None)
        }
    };
    #[cfg(target_arch = "x86_64")]
    {
        let a = Args { xp: xp.as_ptr(), c, cstride, w, hw, wt: wt.as_ptr(), masks: &masks, dst };
        let mut lanes = vec![[0.0f32; 32]; if mode.sums { co } else { 0 }];
        // Output channel blocks in turn over the whole plane where the image's planes fit in half
        // the L1 cache; otherwise every block over a segment of 24 vectors (384 positions) before
        // the next segment, so most input rows are read from L1 (segments of 3, 12 or the whole
        // plane measured 1-8 % slower at 16 and 32 channels).
        let nv = hw / 16;
        let seg = if 4 * c * plane(h, w) > cpu::cache_bytes(1, 32 << 10) / 2 { 24 } else { nv };
        for v0 in (0..nv).step_by(seg) {
            let vs = (v0, (v0 + seg).min(nv));
            let mut o0 = 0;
            while o0 < co {
                let n = match co - o0 {
                    r if r.is_multiple_of(8) => 8,
                    r => r.min(6),
                };
                // SAFETY: `applies` found AVX-512; a tile reads `xp[ci * cstride + q + ky * w + kx]`
                // with `q < hw`, at most `plane - 1` past the channel's start (asserted above),
                // weights `wt[(o * c + ci) * 9 + t]` with `o < co`, and writes `out[o * hw + q]`.
                unsafe {
                    let sl = lanes.get_mut(o0..).map_or(std::ptr::null_mut(), |s| s.as_mut_ptr());
                    match n {
                        8 => channels::<8, 3>(&a, o0, vs, &mode, sl),
                        6 => channels::<6, 4>(&a, o0, vs, &mode, sl),
                        5 => channels::<5, 4>(&a, o0, vs, &mode, sl),
                        4 => channels::<4, 4>(&a, o0, vs, &mode, sl),
                        3 => channels::<3, 4>(&a, o0, vs, &mode, sl),
                        2 => channels::<2, 4>(&a, o0, vs, &mode, sl),
                        _ => channels::<1, 4>(&a, o0, vs, &mode, sl),
                    }
                }
                o0 += n;
            }
        }
        if let Some(sums) = sums {
            for (s, l) in sums.iter_mut().zip(&lanes) {
                let total = |h: &[f32]| h.iter().map(|&v| v as f64).sum::<f64>();
                *s = (total(&l[..16]), total(&l[16..]));
            }
        }
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (xp, cstride, wt, masks, dst, mode, sums);
        false
    }
}

struct Mode<'a> {
    add: bool,
    bias: Option<&'a [f32]>,
    /// The residual's first value (laid out as the output).
    res: Option<*const f32>,
    relu: bool,
    sums: bool,
    /// With `sums`: the batch-norm backward sums against this held data and map ([`Out::Grad`]).
    bn: Option<(*const f32, &'a Deferred)>,
}

#[cfg(target_arch = "x86_64")]
struct Args<'a> {
    xp: *const f32,
    c: usize,
    cstride: usize,
    w: usize,
    hw: usize,
    wt: *const f32,
    masks: &'a [(u16, u16)],
    dst: *mut f32,
}

/// Output channels `o0..o0 + NB`, vectors of positions `v0..nv`: tiles of `V` vectors, then single
/// vectors for the rest. `sl`: their sum lanes (`[o][sum 16 | squares 16]`) when `mode.sums`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn channels<const NB: usize, const V: usize>(
    a: &Args,
    o0: usize,
    (mut v0, nv): (usize, usize),
    mode: &Mode,
    sl: *mut [f32; 32],
) {
    while v0 + V <= nv {
        tile::<NB, V>(a, o0, v0, mode, sl);
        v0 += V;
    }
    while v0 < nv {
        tile::<NB, 1>(a, o0, v0, mode, sl);
        v0 += 1;
    }
}

/// The three taps of one kernel row for one input channel: `p` the row's first input (tap
/// `kx` reads `p + kx + q`), `w` the first output channel's three weights (`ws` apart per channel).
/// The accumulators go in and out by value, so they stay in registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
#[allow(clippy::needless_range_loop)]
unsafe fn row<const NB: usize, const V: usize>(
    mut acc: [[std::arch::x86_64::__m512; V]; NB],
    (p, w, ws): (*const f32, *const f32, usize),
    (ml, mr): (&[u16; V], &[u16; V]),
) -> [[std::arch::x86_64::__m512; V]; NB] {
    use std::arch::x86_64::*;
    // The tap's V input vectors first, then one weight broadcast at a time: V + 1 registers beside
    // the NB x V accumulators (all NB weights first would need NB + 1, one more than the 32
    // registers hold at 8 x 3, and the compiler spilled an accumulator).
    for kx in 0..3 {
        let mut xv = [_mm512_setzero_ps(); V];
        for v in 0..V {
            let src = p.add(kx + 16 * v);
            xv[v] = match kx {
                0 => _mm512_maskz_loadu_ps(ml[v], src),
                1 => _mm512_loadu_ps(src),
                _ => _mm512_maskz_loadu_ps(mr[v], src),
            };
        }
        for b in 0..NB {
            let wb = _mm512_set1_ps(*w.add(b * ws + kx));
            for v in 0..V {
                acc[b][v] = _mm512_fmadd_ps(wb, xv[v], acc[b][v]);
            }
        }
    }
    acc
}

/// One tile: output channels `o0..o0 + NB` x vectors `v0..v0 + V` of positions.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::needless_range_loop)]
unsafe fn tile<const NB: usize, const V: usize>(a: &Args, o0: usize, v0: usize, mode: &Mode, sl: *mut [f32; 32]) {
    use std::arch::x86_64::*;
    let q0 = 16 * v0;
    let (mut ml, mut mr) = ([0u16; V], [0u16; V]);
    for v in 0..V {
        (ml[v], mr[v]) = a.masks[v0 + v];
    }
    let mut acc = [[_mm512_setzero_ps(); V]; NB];
    for ci in 0..a.c {
        let xb = a.xp.add(ci * a.cstride + q0);
        let wrow = a.wt.add((o0 * a.c + ci) * 9);
        for ky in 0..3 {
            acc = row::<NB, V>(acc, (xb.add(ky * a.w), wrow.add(ky * 3), a.c * 9), (&ml, &mr));
        }
    }
    for b in 0..NB {
        let o = o0 + b;
        let dst = a.dst.add(o * a.hw + q0);
        let l = if mode.sums { (*sl.add(b)).as_mut_ptr() } else { std::ptr::null_mut() };
        // The batch norm's backward sums go on from the lanes, vector after vector in position
        // order: the batch norm's own pass adds in that order, so the sums are the same bit for bit.
        let in_order = mode.bn.is_some();
        let (mut s, mut s2) = if in_order {
            (_mm512_loadu_ps(l), _mm512_loadu_ps(l.add(16)))
        } else {
            (_mm512_setzero_ps(), _mm512_setzero_ps())
        };
        for v in 0..V {
            let mut y = acc[b][v];
            if let Some(bias) = mode.bias {
                y = _mm512_add_ps(y, _mm512_set1_ps(bias[o]));
            }
            if let Some(r) = mode.res {
                y = _mm512_add_ps(y, _mm512_loadu_ps(r.add(o * a.hw + q0 + 16 * v)));
            }
            if mode.relu {
                y = _mm512_max_ps(y, _mm512_setzero_ps());
            }
            if mode.add {
                y = _mm512_add_ps(y, _mm512_loadu_ps(dst.add(16 * v)));
            }
            _mm512_storeu_ps(dst.add(16 * v), y);
            if mode.sums {
                match mode.bn {
                    // The batch norm's expressions, in its order: multiply, add, compare; g' (z - mu)
                    // multiplied, then added.
                    Some((z, pre)) => {
                        let zv = _mm512_loadu_ps(z.add(o * a.hw + q0 + 16 * v));
                        let act = _mm512_add_ps(
                            _mm512_mul_ps(zv, _mm512_set1_ps(pre.scale[o])),
                            _mm512_set1_ps(pre.shift[o]),
                        );
                        let keep = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(act, _mm512_setzero_ps());
                        let gm = _mm512_maskz_mov_ps(keep, y);
                        s = _mm512_add_ps(s, gm);
                        s2 = _mm512_add_ps(s2, _mm512_mul_ps(gm, _mm512_sub_ps(zv, _mm512_set1_ps(pre.mean[o]))));
                    }
                    None => {
                        s = _mm512_add_ps(s, y);
                        s2 = _mm512_fmadd_ps(y, y, s2);
                    }
                }
            }
        }
        if in_order {
            _mm512_storeu_ps(l, s);
            _mm512_storeu_ps(l.add(16), s2);
        } else if mode.sums {
            _mm512_storeu_ps(l, _mm512_add_ps(_mm512_loadu_ps(l), s));
            _mm512_storeu_ps(l.add(16), _mm512_add_ps(_mm512_loadu_ps(l.add(16)), s2));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 3x3 / padding 1 convolution of one image by its definition, in f64.
    fn naive(x: &[f32], (c, h, w): (usize, usize, usize), wt: &[f32], co: usize) -> Vec<f64> {
        let mut out = vec![0.0; co * h * w];
        for (o, y, xx, ci, t) in (0..co).flat_map(|o| {
            (0..h).flat_map(move |y| {
                (0..w).flat_map(move |xx| (0..c).flat_map(move |ci| (0..9).map(move |t| (o, y, xx, ci, t))))
            })
        }) {
            let (iy, ix) = ((y + t / 3) as isize - 1, (xx + t % 3) as isize - 1);
            if iy >= 0 && iy < h as isize && ix >= 0 && ix < w as isize {
                out[(o * h + y) * w + xx] +=
                    (wt[(o * c + ci) * 9 + t] * x[(ci * h + iy as usize) * w + ix as usize]) as f64;
            }
        }
        out
    }

    /// Every output mode against the definition, on planes whose rows are shorter, as long as, and
    /// longer than a vector (4x4, 8x2, 16x16, 32x32, 12x4: tails of single vectors), output channel
    /// counts that leave blocks of 1 to 8, and the last image of a chunk.
    #[test]
    fn tight_matches_naive_in_every_mode() {
        if !applies(16, 16) {
            eprintln!("no AVX-512 on this CPU: the tight kernel does not run here");
            assert!(!conv(&[], (1, 1), (4, 4), &[], 1, Out::Add(&mut [])));
            return;
        }
        assert!(!applies(3, 5) && !applies(7, 7) && applies(8, 2));
        // (16, 24, 32, 32): 8 x 3 tiles in segments (its planes exceed half of L1), a single vector
        // at each segment's end; (2, 13, ...): blocks of 6, 6 and 1; (3, 7, 4, 4): only singles.
        for (c, co, h, w, nb) in [
            (3, 7, 4, 4, 2),
            (5, 11, 8, 2, 1),
            (16, 16, 16, 16, 3),
            (2, 13, 32, 32, 2),
            (4, 8, 12, 4, 2),
            (16, 24, 32, 32, 1),
        ] {
            let x: Vec<f32> = (0..nb * c * h * w).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
            let wt: Vec<f32> = (0..co * c * 9).map(|i| ((i * 53 % 97) as f32 - 48.0) / 96.0).collect();
            let bias: Vec<f32> = (0..co).map(|o| o as f32 * 0.25 - 1.0).collect();
            let mut buf = vec![f32::NAN; 7];
            let xp = pad_tight((&x, None), (nb, c), (h, w), &mut buf);
            let (pl, hw) = (plane(h, w), h * w);
            let b = nb - 1;
            let want = naive(&x[b * c * hw..(b + 1) * c * hw], (c, h, w), &wt, co);
            let close = |got: f32, want: f64, what: &str| {
                assert!(
                    (got as f64 - want).abs() < 1e-4 * (1.0 + want.abs()),
                    "{what} c{c} co{co} {h}x{w}: {got} vs {want}"
                )
            };
            let img = &xp[b * pl..];
            // Written plain, with sums.
            let mut out = vec![MaybeUninit::new(f32::NAN); co * hw];
            let mut sums = vec![(7.0, 7.0); co];
            let mode = Out::Write { out: &mut out, bias: None, res: None, relu: false, sums: Some(&mut sums) };
            assert!(conv(img, (c, nb * pl), (h, w), &wt, co, mode));
            for (k, v) in out.iter().enumerate() {
                close(unsafe { v.assume_init() }, want[k], "plain");
            }
            for (o, &(s, s2)) in sums.iter().enumerate() {
                let plane = &want[o * hw..(o + 1) * hw];
                close(s as f32, plane.iter().sum(), "sum");
                close(s2 as f32, plane.iter().map(|v| v * v).sum(), "sum of squares");
            }
            // Written with bias and ReLU, without and with a residual.
            let res: Vec<f32> = (0..co * hw).map(|k| ((k * 29 % 31) as f32 - 15.0) / 8.0).collect();
            for r in [None, Some(&res[..])] {
                let mode = Out::Write { out: &mut out, bias: Some(&bias), res: r, relu: true, sums: None };
                assert!(conv(img, (c, nb * pl), (h, w), &wt, co, mode));
                for (k, v) in out.iter().enumerate() {
                    let want = want[k] + bias[k / hw] as f64 + r.map_or(0.0, |r| r[k] as f64);
                    close(unsafe { v.assume_init() }, want.max(0.0), "bias (+ residual) + relu");
                }
            }
            // Written as a deferred batch norm's input gradient, with its backward sums against
            // held data `z` (about half of it masked by the ReLU).
            let z: Vec<f32> = (0..co * hw).map(|k| ((k * 13 % 23) as f32 - 11.0) / 7.0).collect();
            let pre = Deferred {
                scale: (0..co).map(|o| 0.5 + o as f32 * 0.1).collect(),
                shift: (0..co).map(|o| o as f32 * 0.05 - 0.2).collect(),
                mean: (0..co).map(|o| o as f32 * 0.03).collect(),
            };
            let mut bsums = vec![(7.0, 7.0); co];
            assert!(conv(
                img,
                (c, nb * pl),
                (h, w),
                &wt,
                co,
                Out::Grad { out: &mut out, z: &z, pre: &pre, sums: &mut bsums }
            ));
            for (o, &(s, s2)) in bsums.iter().enumerate() {
                let (mut ws, mut ws2) = (0.0, 0.0);
                for k in o * hw..(o + 1) * hw {
                    close(unsafe { out[k].assume_init() }, want[k], "input gradient");
                    if z[k] * pre.scale[o] + pre.shift[o] > 0.0 {
                        ws += want[k];
                        ws2 += want[k] * (z[k] - pre.mean[o]) as f64;
                    }
                }
                close(s as f32, ws, "masked sum");
                close(s2 as f32, ws2, "masked sum against z");
            }
            // Added to what the output holds.
            let mut acc: Vec<f32> = (0..co * hw).map(|k| k as f32 * 0.01).collect();
            assert!(conv(img, (c, nb * pl), (h, w), &wt, co, Out::Add(&mut acc)));
            for (k, &v) in acc.iter().enumerate() {
                close(v, want[k] + (k as f32 * 0.01) as f64, "added");
            }
        }
    }
}
