//! The forward and input gradient of a 3x3 / stride 1 / padding 1 convolution in bf16 on AMX tiles
//! (`KDSCOPE_PRECISION=bf16`, [`super::amx`]).
//!
//! One image at a time, as a GEMM `C (16 output channels x N positions) += A (16 x K) . B (K x N)`
//! per tap, on tiles:
//! - A: the packed weights of one tap and block of `kb` input channels (`kb` bf16 per row);
//! - B: `kb / 2` rows of channel pairs, each row `N` positions of one output row's run, the two
//!   channels of a pair side by side (the VNNI layout `tdpbf16ps` reads), from a zero-bordered
//!   copy of the image (`(h + 2) x (w + 2)` per pair of channels), shifted by the tap;
//! - C: 16 output channels x `N = min(w, 16)` positions of one output row, in f32: 2 blocks of 16
//!   output channels x 2 runs at once, or with one block 4 runs, over 9 taps x the channel blocks.
//!
//! Rows wider than 16 take runs of 16 from the left, the last run flush with the right edge
//! (overlapping the one before, whose values it writes again). Whole blocks written or added as
//! they are go straight between the C tiles and the output; the others through a scratch, with
//! the bias, the residual, the ReLU and the batch norm's sums. The input gradient is the same
//! convolution of the output gradient with the flipped weights.

use super::amx::{bf16, load_tile, pair, step, step_single, store_c, store_tile, zero_c, Scratch, TileCfg};
use super::deferred::{bn_relu, Deferred};
pub use super::tight::Out;

/// Input channels per tile row block: all of them (rounded up to even) up to 32, else 32.
fn block(c: usize) -> usize {
    if c <= 32 {
        c.next_multiple_of(2)
    } else {
        32
    }
}

/// A convolution's 3x3 weights (`[co][c][3][3]`) in bf16 as the kernel's A tiles read them:
/// `[tap][channel block][co rounded up to 16][kb]`, zero beyond `co` and `c`.
pub struct Weights {
    data: Vec<u16>,
    c: usize,
    co: usize,
    kb: usize,
}

impl Weights {
    /// Packs PyTorch-layout weights `w` (`[co][c][3][3]`, f32).
    pub fn pack(w: &[f32], co: usize, c: usize) -> Self {
        assert_eq!(w.len(), co * c * 9, "{co} x {c} x 3 x 3 weights, {} values", w.len());
        let (kb, cop) = (block(c), co.next_multiple_of(16));
        let nkb = c.div_ceil(kb);
        let mut data = vec![0u16; 9 * nkb * cop * kb];
        for tap in 0..9 {
            for o in 0..co {
                for ci in 0..c {
                    let (bi, j) = (ci / kb, ci % kb);
                    data[((tap * nkb + bi) * cop + o) * kb + j] = bf16(w[(o * c + ci) * 9 + tap]);
                }
            }
        }
        Self { data, c, co, kb }
    }
}

/// The first value of `out`.
fn out_ptr(out: &mut Out) -> *mut f32 {
    match out {
        Out::Write { out, .. } | Out::Grad { out, .. } => out.as_mut_ptr().cast(),
        Out::Add(out) | Out::ResGrad { out, .. } => out.as_mut_ptr(),
    }
}

/// The convolution of one `h x w` image with the packed weights `wt` (see the module docs) into
/// `out`. `x` holds the image `[c][h][w]`, mapped by `pre` (a deferred batch norm + ReLU) where
/// given; `buf` is the bf16 copy's scratch. Runs AMX instructions: only where
/// [`super::amx::available`] (asserted).
pub fn conv3x3(
    (x, pre): (&[f32], Option<&Deferred>),
    wt: &Weights,
    (h, w): (usize, usize),
    mut out: Out,
    buf: &mut Vec<u32>,
) {
    let (c, co, kb, hw) = (wt.c, wt.co, wt.kb, h * w);
    let len = match &out {
        Out::Write { out, bias, res, sums, .. } => {
            let ok = bias.is_none_or(|b| b.len() == co) && res.is_none_or(|r| r.len() == co * hw);
            assert!(ok && sums.as_ref().is_none_or(|s| s.len() == co), "conv3x3: bias, residual or sums");
            out.len()
        }
        Out::Add(out) => out.len(),
        Out::Grad { out, z, pre, sums } => {
            assert!(z.len() == co * hw && sums.len() == co && pre.scale.len() == co, "conv3x3: z, pre or sums");
            out.len()
        }
        Out::ResGrad { .. } => panic!("conv3x3 (AMX): a block end's gradient sums are the f32 tight kernel's only"),
    };
    assert!(h > 0 && w > 0 && x.len() == c * hw && len == co * hw, "conv3x3: sizes of x or out");
    let nkb = c.div_ceil(kb);
    let (wp, pl) = (w + 2, (h + 2) * (w + 2));
    // SAFETY: AMX CPUs have AVX-512 F and BW (`available` checks them; asserted by `TileCfg::run`).
    unsafe { pack_image((x, pre), c, (h, w), nkb * kb, buf) };
    let n = w.min(16);
    // Runs of n from the left, the last flush with the right edge; `fresh`: where its new values start.
    let runs: Vec<(usize, usize)> = (0..w.div_ceil(16))
        .map(|r| {
            let x0 = (r * 16).min(w - n);
            (x0, r * 16 - x0)
        })
        .collect();
    let cop = co.next_multiple_of(16);
    let mut scratch = Scratch([[[0.0; 16]; 16]; 4]);
    let (xb, wb) = (buf.as_ptr().cast::<u16>(), wt.data.as_ptr());
    let (sa, sb) = (2 * kb, 4 * pl);
    // Per output channel, the sums' 16 lanes (sum, then squares), added into `sums` in f64 at the end.
    let want_sums = matches!(&out, Out::Write { sums: Some(_), .. });
    let mut lanes = vec![[0.0f32; 32]; if want_sums { co } else { 0 }];
    // The output's row runs, `(y, (x0, fresh))`, taken 2 at a time by 2 blocks of 16 output channels,
    // or, with one block (16 output channels or fewer), 4 at a time: four C tiles, each a chain of
    // dependent tile products, in flight.
    let cells: Vec<(usize, (usize, usize))> = (0..h).flat_map(|y| runs.iter().map(move |&r| (y, r))).collect();
    // Written with no bias, residual, ReLU or sums, or added with no run overlapping another.
    let adding = matches!(out, Out::Add(_));
    let plain = match &out {
        Out::Write { bias, res, relu, sums, .. } => bias.is_none() && res.is_none() && !relu && sums.is_none(),
        Out::Add(_) => runs.iter().all(|&(_, fresh)| fresh == 0),
        Out::Grad { .. } => true,
        Out::ResGrad { .. } => unreachable!("refused above"),
    };
    let single = cop == 16;
    let cfg = if single { TileCfg::gemm_single(4 * n, 2 * kb, kb / 2) } else { TileCfg::gemm(4 * n, 2 * kb, kb / 2) };
    cfg.run(|| {
        for group in cells.chunks(if single { 4 } else { 2 }) {
            for cb0 in (0..cop / 16).step_by(2) {
                let nc = (cop / 16 - cb0).min(2);
                zero_c();
                // Whole blocks of output channels written (or added) as they are: the C tiles go
                // straight to (and, to add, come from) the output; else through the scratch.
                let direct = ((cb0 + nc) * 16 <= co && plain).then(|| {
                    let base = out_ptr(&mut out);
                    let at =
                        (0..nc).flat_map(|ci| group.iter().enumerate().map(move |(j, &(y, (x0, _)))| (ci, j, y, x0)));
                    let at: Vec<(usize, *mut f32)> = at
                        .map(|(ci, j, y, x0)| (ci * 2 + j, base.wrapping_add((cb0 + ci) * 16 * hw + y * w + x0)))
                        .collect();
                    if adding {
                        at.iter().for_each(|&(t, p)| load_tile(t, p, 4 * hw));
                    }
                    at
                });
                for tap in 0..9 {
                    let (ky, kx) = (tap / 3, tap % 3);
                    for bi in 0..nkb {
                        let a0 = wb.wrapping_add(((tap * nkb + bi) * cop + cb0 * 16) * kb);
                        let b_at = |j: usize| {
                            let (y, (x0, _)) = group[j.min(group.len() - 1)];
                            xb.wrapping_add(((bi * kb / 2) * pl + (y + ky) * wp + x0 + kx) * 2)
                        };
                        // SAFETY: tiles configured; every tile reads inside the packed weights or
                        // `buf` (taps shift by at most 2 rows and 2 columns inside the
                        // zero-bordered copy; the last run ends at the row's end).
                        unsafe {
                            if single {
                                step_single(group.len(), (a0, sa), [b_at(0), b_at(1), b_at(2), b_at(3)], sb)
                            } else {
                                step(nc, group.len(), (a0, a0.wrapping_add(16 * kb), sa), (b_at(0), b_at(1), sb))
                            }
                        };
                    }
                }
                if let Some(at) = &direct {
                    at.iter().for_each(|&(t, p)| store_tile(t, p, 4 * hw));
                } else {
                    store_c(&mut scratch);
                    // SAFETY: as for `pack_image`.
                    unsafe { write_tiles((&mut out, &mut lanes), &scratch, (cb0, nc), group, (co, hw, w, n)) };
                }
            }
        }
    });
    if let Out::Grad { out, z, pre, sums } = out {
        // SAFETY: every value of `out` is written now; AVX-512 as for `pack_image`.
        unsafe { grad_sums(std::slice::from_raw_parts(out.as_ptr().cast::<f32>(), out.len()), z, pre, sums) };
    } else if let Out::Write { sums: Some(sums), .. } = out {
        for (s, l) in sums.iter_mut().zip(&lanes) {
            s.0 += l[..16].iter().map(|&v| v as f64).sum::<f64>();
            s.1 += l[16..].iter().map(|&v| v as f64).sum::<f64>();
        }
    }
}

/// The epilogue of the C tiles in `scratch`: output channel blocks `cb0..cb0 + nc` by the row runs
/// `cells` (`(y, (x0, fresh))`, each `n` values; tile `block * 2 + cell`) of planes of `hw` values;
/// with `lanes` (one per output channel, where the sums are wanted), the values' sums and squares
/// per lane. The sums are of the convolution's values: only without bias, residual and ReLU (the
/// training forward's).
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn write_tiles(
    (out, lanes): (&mut Out, &mut [[f32; 32]]),
    scratch: &Scratch,
    (cb0, nc): (usize, usize),
    cells: &[(usize, (usize, usize))],
    (co, hw, w, n): (usize, usize, usize, usize),
) {
    for (ci, cb) in (cb0..cb0 + nc).enumerate() {
        for (j, &(y, (x0, fresh))) in cells.iter().enumerate() {
            let tile = &scratch.0[ci * 2 + j];
            for (r, row) in tile.iter().enumerate().take(co.saturating_sub(cb * 16).min(16)) {
                let o = cb * 16 + r;
                epilogue(out, o, o * hw + y * w + x0, (&row[..n], fresh));
                if let Some(l) = lanes.get_mut(o) {
                    // Each position once: from where the run's new values start.
                    for j in fresh..n {
                        (l[j], l[16 + j]) = (l[j] + row[j], l[16 + j] + row[j] * row[j]);
                    }
                }
            }
        }
    }
}

/// [`Out::Grad`]'s sums of the written gradient `g` of each of the channels (planes of `z`'s
/// size), in 16 f32 lanes per plane added into `sums` in f64.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn grad_sums(g: &[f32], z: &[f32], pre: &Deferred, sums: &mut [(f64, f64)]) {
    let hw = z.len() / sums.len();
    let ahead = super::prefetch::Stream::of(z);
    for (o, s) in sums.iter_mut().enumerate() {
        ahead.ahead(o, hw);
        let (a, b, mu) = (pre.scale[o], pre.shift[o], pre.mean[o]);
        let (mut l, mut l2) = ([0.0f32; 16], [0.0f32; 16]);
        let mut add = |j: usize, g: f32, zv: f32| {
            let gm = if zv * a + b > 0.0 { g } else { 0.0 };
            (l[j], l2[j]) = (l[j] + gm, l2[j] + gm * (zv - mu));
        };
        let (mut gs, mut zs) = (g[o * hw..(o + 1) * hw].chunks_exact(16), z[o * hw..(o + 1) * hw].chunks_exact(16));
        for (gc, zc) in (&mut gs).zip(&mut zs) {
            (0..16).for_each(|j| add(j, gc[j], zc[j]));
        }
        gs.remainder().iter().zip(zs.remainder()).enumerate().for_each(|(j, (&g, &zv))| add(j, g, zv));
        s.0 += l.iter().map(|&v| v as f64).sum::<f64>();
        s.1 += l2.iter().map(|&v| v as f64).sum::<f64>();
    }
}

/// Writes (or adds) one output row's run of values `v` of channel `o` at `at`; the values before
/// `fresh` were written (or added) by the run before: written again, but not added twice.
#[inline(always)]
fn epilogue(out: &mut Out, o: usize, at: usize, (v, fresh): (&[f32], usize)) {
    let n = v.len();
    match out {
        Out::Add(out) => out[at + fresh..at + n].iter_mut().zip(&v[fresh..]).for_each(|(d, &v)| *d += v),
        Out::Grad { out, .. } => out[at..at + n].iter_mut().zip(v).for_each(|(d, &v)| _ = d.write(v)),
        Out::ResGrad { .. } => unreachable!("refused by conv3x3"),
        Out::Write { out, bias, res, relu, .. } => {
            let (b, relu, dst) = (bias.map_or(0.0, |b| b[o]), *relu, &mut out[at..at + n]);
            match res {
                Some(res) => dst.iter_mut().zip(v).zip(&res[at..at + n]).for_each(|((d, &v), &r)| {
                    d.write(if relu { (v + b + r).max(0.0) } else { v + b + r });
                }),
                None => dst.iter_mut().zip(v).for_each(|(d, &v)| {
                    d.write(if relu { (v + b).max(0.0) } else { v + b });
                }),
            }
        }
    }
}

/// Copies the `c` channels of an `h x w` image into `buf` in bf16: `c2 / 2` planes of channel
/// pairs (`c2` >= `c` even; channels from `c` on are zero), each `(h + 2) x (w + 2)` positions of
/// one pair (32 bits), zero on the border; mapped by `pre` where given.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn pack_image(
    (x, pre): (&[f32], Option<&Deferred>),
    c: usize,
    (h, w): (usize, usize),
    c2: usize,
    buf: &mut Vec<u32>,
) {
    let (wp, hw, pl) = (w + 2, h * w, (h + 2) * (w + 2));
    buf.clear();
    buf.resize(c2 / 2 * pl, 0);
    let map = |ci: usize| match pre {
        Some(p) if ci < c => (p.scale[ci], p.shift[ci]),
        _ => (1.0, 0.0),
    };
    for (k, plane) in buf.chunks_exact_mut(pl).enumerate() {
        let (c0, c1) = (2 * k, 2 * k + 1);
        let ((a0, b0), (a1, b1)) = (map(c0), map(c1));
        let zero = [0.0; 0];
        for y in 0..h {
            let row = &mut plane[(y + 1) * wp + 1..(y + 1) * wp + 1 + w];
            let src = |ci: usize| if ci < c { &x[ci * hw + y * w..ci * hw + (y + 1) * w] } else { &zero[..] };
            let (s0, s1) = (src(c0), src(c1));
            match (pre, s1.is_empty()) {
                (Some(_), false) => row.iter_mut().zip(s0.iter().zip(s1)).for_each(|(p, (&u, &v))| {
                    *p = pair(bn_relu(u, a0, b0), bn_relu(v, a1, b1));
                }),
                (None, false) => row.iter_mut().zip(s0.iter().zip(s1)).for_each(|(p, (&u, &v))| *p = pair(u, v)),
                (Some(_), true) => row.iter_mut().zip(s0).for_each(|(p, &u)| *p = pair(bn_relu(u, a0, b0), 0.0)),
                (None, true) => row.iter_mut().zip(s0).for_each(|(p, &u)| *p = pair(u, 0.0)),
            }
        }
    }
}
