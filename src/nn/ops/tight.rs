//! The direct 3x3 / stride 1 / padding 1 convolution on tight planes (AVX-512, or AVX2 + FMA):
//! no padding column, so the tiles cover the image's own `h * w` positions and are stored straight into the
//! output, with no padded-width scratch, no discarded column and no unpadding pass.
//!
//! [`pad_tight`] copies each plane between a zero row above and one below, with one zero before
//! and after (`plane = (h + 2) * w + 2` values): output position `q = y * w + x`, tap `(ky, kx)`
//! reads element `q + ky * w + kx`. The left taps (`kx = 0`) of column 0 and the right taps
//! (`kx = 2`) of column `w - 1` would read the neighbouring row's last or first value there; those
//! lanes are left out: AVX-512 loads them and leaves them out of a merge-masked FMA (free in the
//! FMA unit; a zero-masking load took a micro-op of the FMA ports: +4-6 % for the kernel alone at
//! 16 and 32 channels on the Intel Xeon with AMX), except in single-vector tiles, whose zero-masked
//! loads let each weight broadcast fold into its FMA; AVX2 loads them as zero (`vmaskmovps`).
//! - AVX-512 (32 registers): a tile is 8 output channels x 3 vectors of 16 positions (24
//!   accumulators; where the channel count is not a multiple of 8, up to 6 x 4): per input channel
//!   and tap, 8 weight broadcasts and 3 loads serve 24 FMAs.
//! - AVX2 (16 registers): 4 output channels x 2 vectors of 8 positions (8 accumulators, the 4 load
//!   masks of the tile's left and right taps, 2 inputs and a broadcast).
//!
//! The epilogue (bias, ReLU, the batch norm's plane sums, or adding to the output) runs on the
//! accumulators before their one store. The kernel is written once over `isa::Isa`, instantiated
//! for each width behind its own `#[target_feature]` entry.
//!
//! Intel Xeon, one thread, 16 images, against the padded-grid kernel with its unpadding pass:
//! 32x32 / 16 channels 139-146 against 137-142 GFLOP/s, 16x16 / 32 150-160 against 135-141, 8x8 /
//! 64 150-155 against 129-138 (6 x 4 tiles, channels 6 + 6 + 4 at 16, had reached 125-128 at 16
//! channels).
use std::mem::MaybeUninit;

use super::cpu;
use super::deferred::{copy_plane, Deferred};
use super::direct::aligned;

/// Whether [`conv`] serves an `h x w` plane on this thread: its tight kernels are on
/// ([`cpu::kernel_lanes`]: AVX-512 or AVX2 + FMA), and the plane is whole vectors of positions.
pub fn applies(h: usize, w: usize) -> bool {
    applies_at(cpu::kernel_lanes(), h, w)
}

/// [`applies`] for the kernel of vectors of `lanes` positions (16: AVX-512, 8: AVX2 + FMA),
/// which this CPU's dispatch level must reach.
pub fn applies_at(lanes: usize, h: usize, w: usize) -> bool {
    cpu::width_runs(lanes) && h > 0 && w > 0 && (h * w).is_multiple_of(lanes)
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
/// `co x h x w`, on this thread's kernel width ([`cpu::kernel_lanes`]). Returns `false` (nothing
/// written) where [`applies`] is false.
pub fn conv(xp: &[f32], cs: (usize, usize), hw: (usize, usize), wt: &[f32], co: usize, out: Out) -> bool {
    conv_at(cpu::kernel_lanes(), xp, cs, hw, wt, co, out)
}

/// [`conv`] on the kernel of vectors of `lanes` positions (16 or 8), where [`applies_at`] allows.
pub fn conv_at(
    lanes: usize,
    xp: &[f32],
    (c, cstride): (usize, usize),
    (h, w): (usize, usize),
    wt: &[f32],
    co: usize,
    out: Out,
) -> bool {
    if !applies_at(lanes, h, w) {
        return false;
    }
    let hw = h * w;
    assert!(c > 0 && cstride >= plane(h, w) && xp.len() >= (c - 1) * cstride + plane(h, w));
    assert!(wt.len() >= co * c * 9);
    let masks = edge_masks(lanes, h, w);
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
        // Per output channel, 16 lanes of sums then 16 of squares (8-lane vectors fill them in
        // halves: vector `v` adds to lanes `8 (v % 2)..`, as the batch norm's 16-lane pass does).
        let mut lanes_of = vec![[0.0f32; 32]; if mode.sums { co } else { 0 }];
        // Output channel blocks in turn over the whole plane where the image's planes fit in half
        // the L1 cache; otherwise every block over a segment of 384 positions before the next
        // segment, so most input rows are read from L1 (AVX-512: segments of 48, 192 or the whole
        // plane measured 1-8 % slower at 16 and 32 channels).
        let nv = hw / lanes;
        let seg = if 4 * c * plane(h, w) > cpu::cache_bytes(1, 32 << 10) / 2 { 384 / lanes } else { nv };
        for v0 in (0..nv).step_by(seg) {
            let vs = (v0, (v0 + seg).min(nv));
            let mut o0 = 0;
            while o0 < co {
                let sl = lanes_of.get_mut(o0..).map_or(std::ptr::null_mut(), |s| s.as_mut_ptr());
                // SAFETY: `applies_at` found the instructions of the `lanes` kernel; a tile reads
                // `xp[ci * cstride + q + ky * w + kx]` with `q < hw`, at most `plane - 1` past the
                // channel's start (asserted above), weights `wt[(o * c + ci) * 9 + t]` with
                // `o < co`, and writes `out[o * hw + q]`.
                o0 += unsafe {
                    if lanes == 16 {
                        match co - o0 {
                            r if r.is_multiple_of(8) => channels16::<8, 3>(&a, o0, vs, &mode, sl),
                            r => match r.min(6) {
                                6 => channels16::<6, 4>(&a, o0, vs, &mode, sl),
                                5 => channels16::<5, 4>(&a, o0, vs, &mode, sl),
                                4 => channels16::<4, 4>(&a, o0, vs, &mode, sl),
                                3 => channels16::<3, 4>(&a, o0, vs, &mode, sl),
                                2 => channels16::<2, 4>(&a, o0, vs, &mode, sl),
                                _ => channels16::<1, 4>(&a, o0, vs, &mode, sl),
                            },
                        }
                    } else {
                        match (co - o0).min(4) {
                            4 => channels8::<4, 2>(&a, o0, vs, &mode, sl),
                            3 => channels8::<3, 2>(&a, o0, vs, &mode, sl),
                            2 => channels8::<2, 2>(&a, o0, vs, &mode, sl),
                            _ => channels8::<1, 2>(&a, o0, vs, &mode, sl),
                        }
                    }
                };
            }
        }
        if let Some(sums) = sums {
            for (s, l) in sums.iter_mut().zip(&lanes_of) {
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

/// Per vector of a plane's positions, the lanes whose left / right taps read inside the image.
type Masks = std::rc::Rc<[(u16, u16)]>;

thread_local! {
    /// The masks of the plane size (`lanes, h, w`) this thread ran last: a layer's images share it.
    static MASKS: std::cell::RefCell<((usize, usize, usize), Masks)> = std::cell::RefCell::new(((0, 0, 0), Masks::from([])));
}

/// [`Masks`] of vectors of `lanes` positions on an `h x w` plane, kept per thread for the last size
/// (built per image and call, they had taken ~1 % of a training step).
fn edge_masks(lanes: usize, h: usize, w: usize) -> Masks {
    MASKS.with_borrow_mut(|(size, masks)| {
        if *size != (lanes, h, w) {
            // The lanes of vector `v` off the image's column `edge`.
            let bits =
                |v: usize, edge: usize| (0..lanes).fold(0u16, |m, l| m | u16::from((lanes * v + l) % w != edge) << l);
            *masks = (0..h * w / lanes).map(|v| (bits(v, 0), bits(v, w - 1))).collect();
            *size = (lanes, h, w);
        }
        masks.clone()
    })
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

#[cfg(target_arch = "x86_64")]
use super::isa::{Isa, W16, W8};

/// A `#[target_feature]` entry that compiles [`channels`] for one width; returns `NB`.
macro_rules! entry {
    ($(#[$doc:meta])* $name:ident, $isa:ty, $features:literal) => {
        $(#[$doc])*
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $name<const NB: usize, const V: usize>(
            a: &Args,
            o0: usize,
            vs: (usize, usize),
            mode: &Mode,
            sl: *mut [f32; 32],
        ) -> usize {
            channels::<$isa, NB, V>(a, o0, vs, mode, sl);
            NB
        }
    };
}

entry!(
    /// [`channels`] compiled for AVX-512.
    channels16,
    W16,
    "avx512f"
);
entry!(
    /// [`channels`] compiled for AVX2 + FMA.
    channels8,
    W8,
    "avx2,fma"
);

/// Output channels `o0..o0 + NB`, vectors of positions `v0..nv`: tiles of `V` vectors, then single
/// vectors for the rest. `sl`: their sum lanes (`[o][sum 16 | squares 16]`) when `mode.sums`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn channels<I: Isa, const NB: usize, const V: usize>(
    a: &Args,
    o0: usize,
    (mut v0, nv): (usize, usize),
    mode: &Mode,
    sl: *mut [f32; 32],
) {
    while v0 + V <= nv {
        tile::<I, NB, V>(a, o0, v0, mode, sl);
        v0 += V;
    }
    while v0 < nv {
        tile::<I, NB, 1>(a, o0, v0, mode, sl);
        v0 += 1;
    }
}

/// The three taps of one kernel row for one input channel: `p` the row's first input (tap
/// `kx` reads `p + kx + q`), `w` the first output channel's three weights (`ws` apart per channel).
/// The accumulators go in and out by value, so they stay in registers.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn row<I: Isa, const NB: usize, const V: usize>(
    mut acc: [[I::V; V]; NB],
    (p, w, ws): (*const f32, *const f32, usize),
    (ml, mr): (&[I::M; V], &[I::M; V]),
) -> [[I::V; V]; NB] {
    // The tap's V input vectors first, then one weight broadcast at a time: V + 1 registers beside
    // the NB x V accumulators (all NB weights first would need NB + 1, one more than the 32
    // registers hold at 8 x 3, and the compiler spilled an accumulator).
    for kx in 0..3 {
        let mut xv = [I::zero(); V];
        for v in 0..V {
            let src = p.add(kx + I::N * v);
            xv[v] = match kx {
                1 => I::load(src),
                // A single vector's taps: zero-masking loads, so each broadcast can fold into its
                // one FMA (an operand the masked FMA's assembly does not take).
                0 if V == 1 => I::load_masked(ml[v], src),
                _ if V == 1 => I::load_masked(mr[v], src),
                0 => I::tap_load(ml[v], src),
                _ => I::tap_load(mr[v], src),
            };
        }
        for b in 0..NB {
            let wb = I::set1(*w.add(b * ws + kx));
            for v in 0..V {
                acc[b][v] = match kx {
                    0 if V > 1 => I::tap_fmadd(ml[v], wb, xv[v], acc[b][v]),
                    2 if V > 1 => I::tap_fmadd(mr[v], wb, xv[v], acc[b][v]),
                    _ => I::fmadd(wb, xv[v], acc[b][v]),
                };
            }
        }
    }
    acc
}

/// One tile: output channels `o0..o0 + NB` x vectors `v0..v0 + V` of positions.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn tile<I: Isa, const NB: usize, const V: usize>(
    a: &Args,
    o0: usize,
    v0: usize,
    mode: &Mode,
    sl: *mut [f32; 32],
) {
    let q0 = I::N * v0;
    let (mut ml, mut mr) = ([I::mask(0); V], [I::mask(0); V]);
    for v in 0..V {
        let (l, r) = a.masks[v0 + v];
        (ml[v], mr[v]) = (I::mask(l), I::mask(r));
    }
    let mut acc = [[I::zero(); V]; NB];
    for ci in 0..a.c {
        let xb = a.xp.add(ci * a.cstride + q0);
        let wrow = a.wt.add((o0 * a.c + ci) * 9);
        for ky in 0..3 {
            acc = row::<I, NB, V>(acc, (xb.add(ky * a.w), wrow.add(ky * 3), a.c * 9), (&ml, &mr));
        }
    }
    // Through memory (as the compiler would spill them anyway): left in registers, the epilogues
    // below made it spill accumulators inside the loop above.
    let acc = std::hint::black_box(acc);
    let plain = !mode.add && mode.bias.is_none() && mode.res.is_none() && !mode.relu;
    // The common epilogues on their own, unrolled without the general one's per-vector branches: a
    // plain store, and a plain store with the forward batch norm's sums (16 lanes: a tile's partial
    // added to the lanes).
    if plain && !mode.sums {
        for b in 0..NB {
            for v in 0..V {
                I::store(a.dst.add((o0 + b) * a.hw + q0 + I::N * v), acc[b][v]);
            }
        }
        return;
    }
    if plain && mode.sums && mode.bn.is_none() && I::N == 16 {
        for b in 0..NB {
            let (mut s, mut s2) = (I::zero(), I::zero());
            for v in 0..V {
                let y = acc[b][v];
                I::store(a.dst.add((o0 + b) * a.hw + q0 + I::N * v), y);
                s = I::add(s, y);
                s2 = I::fmadd(y, y, s2);
            }
            let l = (*sl.add(b)).as_mut_ptr();
            I::store(l, I::add(I::load(l), s));
            I::store(l.add(16), I::add(I::load(l.add(16)), s2));
        }
        return;
    }
    for b in 0..NB {
        let o = o0 + b;
        let dst = a.dst.add(o * a.hw + q0);
        let l = if mode.sums { (*sl.add(b)).as_mut_ptr() } else { std::ptr::null_mut() };
        // The batch norm's backward sums go on from the lanes, vector after vector in position
        // order: the batch norm's own pass adds in that order, so the sums are the same bit for
        // bit. So do 8-lane vectors' sums, each into its half of the 16 lanes (`at`). AVX-512's
        // forward sums add a tile's partial to the lanes.
        let in_order = mode.bn.is_some() || I::N < 16;
        let (mut s, mut s2) = (I::zero(), I::zero());
        for v in 0..V {
            let at = (v0 + v) % (16 / I::N) * I::N;
            if mode.sums && in_order {
                (s, s2) = (I::load(l.add(at)), I::load(l.add(16 + at)));
            }
            let mut y = acc[b][v];
            if let Some(bias) = mode.bias {
                y = I::add(y, I::set1(bias[o]));
            }
            if let Some(r) = mode.res {
                y = I::add(y, I::load(r.add(o * a.hw + q0 + I::N * v)));
            }
            if mode.relu {
                y = I::max(y, I::zero());
            }
            if mode.add {
                y = I::add(y, I::load(dst.add(I::N * v)));
            }
            I::store(dst.add(I::N * v), y);
            if mode.sums {
                match mode.bn {
                    // The batch norm's expressions, in its order: multiply, add, compare; g' (z - mu)
                    // multiplied, then added.
                    Some((z, pre)) => {
                        let zv = I::load(z.add(o * a.hw + q0 + I::N * v));
                        let act = I::add(I::mul(zv, I::set1(pre.scale[o])), I::set1(pre.shift[o]));
                        let gm = I::where_positive(act, y);
                        s = I::add(s, gm);
                        s2 = I::add(s2, I::mul(gm, I::sub(zv, I::set1(pre.mean[o]))));
                    }
                    None => {
                        s = I::add(s, y);
                        s2 = I::fmadd(y, y, s2);
                    }
                }
                if in_order {
                    I::store(l.add(at), s);
                    I::store(l.add(16 + at), s2);
                }
            }
        }
        if mode.sums && !in_order {
            I::store(l, I::add(I::load(l), s));
            I::store(l.add(16), I::add(I::load(l.add(16)), s2));
        }
    }
}
