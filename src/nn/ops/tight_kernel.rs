//! The tiles of the tight-plane kernel ([`super::tight`]), written once over `isa::Isa` and
//! compiled behind one `#[target_feature]` entry per width. A tile sums the taps of one stencil
//! `K` ([`super::tight::Taps`]): `0` the whole 3x3, `1..=4` the taps of the stride-2 input
//! gradient's part `K - 1` ([`super::tight_s2`]), `5` the stride-2 forward over each input
//! channel's four phase planes, `6` the whole 3x3 on padded-grid planes (rows [`Args::rs`] apart,
//! zeros between them, [`super::tight::Taps::Grid`]): every tap a plain load, no masks.
use super::deferred::Deferred;

/// Where the stride-2 forward's phase `p` (`2 ry + rx`) finds its taps among an output and input
/// channel's 9 weights: tap `(ky', kx')` (rows `1 - ry..2`, columns `1 - rx..2`) at `PHASE_AT[p] +
/// 3 ky' + kx'`. The four phases' 1 + 2 + 2 + 4 taps fill the 9 slots once each: (1,1) of phase 0
/// at 8; (1,0), (1,1) of phase 1 at 6, 7; (0,1), (1,1) of phase 2 at 2, 5; phase 3 at 0, 1, 3, 4.
/// (Nine slots per phase, 36 a pair, had read 4 times the weights: with 256 -> 512 channels at 8x8
/// 18.9 MB an image.)
pub(super) const PHASE_AT: [usize; 4] = [4, 3, 1, 0];

/// What the epilogue does with a tile's sums ([`super::tight::Out`]).
pub(super) struct Mode<'a> {
    pub add: bool,
    pub bias: Option<&'a [f32]>,
    /// The residual's first value (laid out as the output).
    pub res: Option<*const f32>,
    pub relu: bool,
    pub sums: bool,
    /// With `sums`: the batch-norm backward sums against this held data and map
    /// ([`super::tight::Out::Grad`]).
    pub bn: Option<(*const f32, &'a Deferred)>,
    /// With `sums` and `add`: the ReLU's backward on `y` and the batch-norm backward sums against
    /// `z` and the means, `(y, z, mean)` ([`super::tight::Out::ResGrad`]).
    pub res_bn: Option<(*const f32, *const f32, &'a [f32])>,
}

/// The sums [`in_order_sums`] takes (one variant per call, known where it is inlined).
#[derive(Clone, Copy)]
enum Sums<'a> {
    /// Of the values and their squares.
    Plain,
    /// [`Mode::bn`].
    Deferred(*const f32, &'a Deferred),
    /// [`Mode::res_bn`].
    Residual(*const f32, *const f32, &'a [f32]),
}

/// A call's planes and weights.
#[cfg(target_arch = "x86_64")]
pub(super) struct Args<'a> {
    /// The first input plane (of the tile's first position), channel `ci` at `ci * cstride`; with
    /// stencil 5 its phase `p` at `p * pstride` from there.
    pub xp: *const f32,
    pub c: usize,
    pub cstride: usize,
    pub pstride: usize,
    pub w: usize,
    /// Values from one input row to the next (`w`; on the grid, more).
    pub rs: usize,
    pub hw: usize,
    /// Weights: output channel `o`, input channel `ci` at `(o * c + ci) * wstride` (9), tap `(ky,
    /// kx)` at `3 ky + kx` from there; with stencil 5 phase `p`'s at [`PHASE_AT`]`[p]` + `3 ky + kx`.
    pub wt: *const f32,
    pub wstride: usize,
    pub masks: &'a [(u16, u16)],
    pub dst: *mut f32,
}

#[cfg(target_arch = "x86_64")]
use super::isa::{Isa, W16, W8};

/// A `#[target_feature]` entry that compiles [`channels`] for one width; returns `NB`.
macro_rules! entry {
    ($(#[$doc:meta])* $name:ident, $isa:ty, $features:literal) => {
        $(#[$doc])*
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        pub(super) unsafe fn $name<const NB: usize, const V: usize, const K: u8>(
            a: &Args,
            o0: usize,
            vs: (usize, usize),
            mode: &Mode,
            sl: *mut [f32; 32],
        ) -> usize {
            channels::<$isa, NB, V, K>(a, o0, vs, mode, sl);
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
/// vectors for the rest, on stencil `K`. `sl`: their sum lanes (`[o][sum 16 | squares 16]`) when
/// `mode.sums`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn channels<I: Isa, const NB: usize, const V: usize, const K: u8>(
    a: &Args,
    o0: usize,
    (mut v0, nv): (usize, usize),
    mode: &Mode,
    sl: *mut [f32; 32],
) {
    while v0 + V <= nv {
        tile::<I, NB, V, K>(a, o0, v0, mode, sl);
        v0 += V;
    }
    while v0 < nv {
        tile::<I, NB, 1, K>(a, o0, v0, mode, sl);
        v0 += 1;
    }
}

/// The taps `X0..X1` of one kernel row for one input channel: `p` the row's first input (tap
/// `kx` of vector `v` reads `p + xo[v] + kx`), `w` the first output channel's three weights (`ws`
/// apart per channel). On the padded grid (stencil `K` 6) every tap is a plain load; otherwise the
/// edge taps leave out the lanes of their masks. The accumulators go in and out by value, so they
/// stay in registers. One [`tap`] call per tap, written out: as a loop over `kx` the compiler kept
/// it a loop (a branch per tap, the AVX-512 masks reloaded), 9-14 % slower.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn row<I: Isa, const NB: usize, const V: usize, const X0: usize, const X1: usize, const K: u8>(
    mut acc: [[I::V; V]; NB],
    pw: (*const f32, *const f32, usize),
    m: (&[I::M; V], &[I::M; V]),
    xo: &[usize; V],
) -> [[I::V; V]; NB] {
    if X0 == 0 {
        acc = tap::<I, NB, V, 0, K>(acc, pw, m, xo);
    }
    acc = tap::<I, NB, V, 1, K>(acc, pw, m, xo);
    if X1 == 3 {
        acc = tap::<I, NB, V, 2, K>(acc, pw, m, xo);
    }
    acc
}

/// Tap `KX` of [`row`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn tap<I: Isa, const NB: usize, const V: usize, const KX: usize, const K: u8>(
    mut acc: [[I::V; V]; NB],
    (p, w, ws): (*const f32, *const f32, usize),
    (ml, mr): (&[I::M; V], &[I::M; V]),
    xo: &[usize; V],
) -> [[I::V; V]; NB] {
    // The tap's V input vectors first, then one weight broadcast at a time: V + 1 registers beside
    // the NB x V accumulators (all NB weights first would need NB + 1, one more than the 32
    // registers hold at 8 x 3, and the compiler spilled an accumulator).
    let mut xv = [I::zero(); V];
    for v in 0..V {
        let src = p.add(KX + xo[v]);
        xv[v] = match KX {
            _ if K == 6 => I::load(src),
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
        let wb = I::set1(*w.add(b * ws + KX));
        for v in 0..V {
            acc[b][v] = match KX {
                _ if K == 6 => I::fmadd(wb, xv[v], acc[b][v]),
                0 if V > 1 => I::tap_fmadd(ml[v], wb, xv[v], acc[b][v]),
                2 if V > 1 => I::tap_fmadd(mr[v], wb, xv[v], acc[b][v]),
                _ => I::fmadd(wb, xv[v], acc[b][v]),
            };
        }
    }
    acc
}

/// [`row`] for the taps `kx.0..kx.1` (`0..3`, `0..2`, `1..2` or `1..3`; constants where the
/// tiles call it, so each call compiles to one of the arms).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn kernel_row<I: Isa, const NB: usize, const V: usize, const K: u8>(
    acc: [[I::V; V]; NB],
    pw: (*const f32, *const f32, usize),
    kx: (usize, usize),
    m: (&[I::M; V], &[I::M; V]),
    xo: &[usize; V],
) -> [[I::V; V]; NB] {
    match kx {
        (0, 3) => row::<I, NB, V, 0, 3, K>(acc, pw, m, xo),
        (0, 2) => row::<I, NB, V, 0, 2, K>(acc, pw, m, xo),
        (1, 3) => row::<I, NB, V, 1, 3, K>(acc, pw, m, xo),
        _ => row::<I, NB, V, 1, 2, K>(acc, pw, m, xo),
    }
}

/// One tile: output channels `o0..o0 + NB` x vectors `v0..v0 + V` of positions, stencil `K`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn tile<I: Isa, const NB: usize, const V: usize, const K: u8>(
    a: &Args,
    o0: usize,
    v0: usize,
    mode: &Mode,
    sl: *mut [f32; 32],
) {
    let q0 = I::N * v0;
    let grid = K == 6;
    let (mut ml, mut mr) = ([I::mask(0); V], [I::mask(0); V]);
    for v in (0..V).filter(|_| !grid) {
        let (l, r) = a.masks[v0 + v];
        (ml[v], mr[v]) = (I::mask(l), I::mask(r));
    }
    // Each vector's first input from `xb`: on tight planes the tile's positions follow each other
    // (`xb` at the first); on the grid, position `q` is in row `q / w`, rows `rs` apart.
    let rs = a.rs;
    let (base, xo) = if grid && a.w.is_multiple_of(I::N * V) {
        // The tile in one row: its vectors at constant offsets, as on tight planes.
        (q0 / a.w * rs + q0 % a.w, std::array::from_fn(|v| I::N * v))
    } else if grid && a.w == I::N && rs == 2 * I::N {
        // Rows of one vector (8x8 planes with AVX2): a vector a row, at constant offsets too.
        (q0 / a.w * rs, std::array::from_fn(|v| 2 * I::N * v))
    } else if grid {
        (0, std::array::from_fn(|v| (q0 + I::N * v) / a.w * rs + (q0 + I::N * v) % a.w))
    } else {
        (q0, std::array::from_fn(|v| I::N * v))
    };
    let mut acc = [[I::zero(); V]; NB];
    let m = (&ml, &mr);
    let ws = a.c * a.wstride;
    for ci in 0..a.c {
        let xb = a.xp.add(ci * a.cstride + base);
        let wrow = a.wt.add((o0 * a.c + ci) * a.wstride);
        let r = |acc, x: *const f32, w: *const f32, ky: usize, kx: (usize, usize)| {
            kernel_row::<I, NB, V, K>(acc, (x.add(ky * rs), w.add(ky * 3), ws), kx, m, &xo)
        };
        match K {
            0 | 6 => {
                for ky in 0..3 {
                    acc = r(acc, xb, wrow, ky, (0, 3));
                }
            }
            // The input gradient's part (py, px): rows 1..2 or 1..3, columns alike.
            1..=4 => {
                let (py, px) = ((K as usize - 1) / 2, (K as usize - 1) % 2);
                for ky in 1..2 + py {
                    acc = r(acc, xb, wrow, ky, (1, 2 + px));
                }
            }
            // Phase (ry, rx) of the input at `p * pstride` (`p = 2 ry + rx`): rows `1 - ry..2`,
            // columns `1 - rx..2`, written out.
            _ => {
                let at = |p: usize| (xb.add(p * a.pstride), wrow.add(PHASE_AT[p]));
                let ((x0, w0), (x1, w1), (x2, w2), (x3, w3)) = (at(0), at(1), at(2), at(3));
                acc = r(acc, x0, w0, 1, (1, 2));
                acc = r(acc, x1, w1, 1, (0, 2));
                acc = r(acc, x2, w2, 0, (1, 2));
                acc = r(acc, x2, w2, 1, (1, 2));
                acc = r(acc, x3, w3, 0, (0, 2));
                acc = r(acc, x3, w3, 1, (0, 2));
            }
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
    // Sums are of plain values only (`tight::Out` checks it); on 8-lane vectors, and with the
    // batch norm's backward sums at either width, they go on in position order.
    // (Two calls, each with its `bn` known where it is inlined: one call with `mode.bn` left a
    // branch per vector that made the 8-lane forward 12 % slower.)
    if mode.sums {
        return match (mode.bn, mode.res_bn) {
            (Some((z, pre)), _) => in_order_sums::<I, NB, V>(a, (o0, v0), &acc, Sums::Deferred(z, pre), sl),
            (_, Some((y, z, mean))) => in_order_sums::<I, NB, V>(a, (o0, v0), &acc, Sums::Residual(y, z, mean), sl),
            _ => in_order_sums::<I, NB, V>(a, (o0, v0), &acc, Sums::Plain, sl),
        };
    }
    for b in 0..NB {
        let o = o0 + b;
        let dst = a.dst.add(o * a.hw + q0);
        for v in 0..V {
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
        }
    }
}

/// A store of each vector with its channel's sums added on from the lanes vector after vector in
/// position order, 8-lane vectors each into their half of the 16 lanes, as the batch norm's own
/// 16-lane passes add (so the sums are theirs bit for bit), by `sums`:
/// - [`Sums::Deferred`] (the input gradient of a deferred batch norm + ReLU,
///   [`super::tight::Out::Grad`]): the values stored as they are, the sums of `g'` (the gradient
///   where the batch norm + ReLU's output is positive) and of `g' (z - mean)`;
/// - [`Sums::Residual`] (the last contribution to a ResNet block end's gradient,
///   [`super::tight::Out::ResGrad`]): the values added to the gradient there, `g'` (where the
///   block's output is positive) stored, and the same sums;
/// - [`Sums::Plain`]: the values stored, the forward's sums of them and their squares (8-lane
///   vectors; AVX-512 adds a tile's partial instead).
///
/// The running sums stay in registers over the tile's vectors: loaded and stored at every vector,
/// as the general epilogue had done, they cost 0.5 % of a ResNet-20 step with AVX-512; held to
/// AVX2, the 3x3/1 backward went 136-138 -> 134 ms a step (in-process A/B, AMD EPYC family 25
/// model 17), the forward the same within noise.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn in_order_sums<I: Isa, const NB: usize, const V: usize>(
    a: &Args,
    (o0, v0): (usize, usize),
    acc: &[[I::V; V]; NB],
    sums: Sums,
    sl: *mut [f32; 32],
) {
    const HALVES: usize = 2;
    let parts = 16 / I::N;
    // Vector `v`'s half is then `v % parts`, known where the tile is unrolled, so the sums stay in
    // registers (8-lane tiles are 2 vectors from even ones, [`super::tight::conv_taps_at`]).
    assert!(parts <= HALVES && v0.is_multiple_of(parts), "in_order_sums: a tile from vector {v0}");
    for (b, accb) in acc.iter().enumerate() {
        let o = o0 + b;
        let l = (*sl.add(b)).as_mut_ptr();
        let (mut s, mut s2) = ([I::zero(); HALVES], [I::zero(); HALVES]);
        for h in 0..parts {
            (s[h], s2[h]) = (I::load(l.add(h * I::N)), I::load(l.add(16 + h * I::N)));
        }
        // Per channel: the affine and mean of a deferred batch norm, the mean of a residual one.
        let (scale, shift, mean) = match sums {
            Sums::Plain => (I::zero(), I::zero(), I::zero()),
            Sums::Deferred(_, pre) => (I::set1(pre.scale[o]), I::set1(pre.shift[o]), I::set1(pre.mean[o])),
            Sums::Residual(_, _, mean) => (I::zero(), I::zero(), I::set1(mean[o])),
        };
        for (v, &y) in accb.iter().enumerate() {
            let (at, h) = (o * a.hw + I::N * (v0 + v), v % parts);
            // The batch norm's expressions, in its order: multiply, add, compare; g' (z - mu)
            // multiplied, then added.
            let sum_g = |gm: I::V, zv: I::V| (I::add(s[h], gm), I::add(s2[h], I::mul(gm, I::sub(zv, mean))));
            (s[h], s2[h]) = match sums {
                Sums::Plain => {
                    I::store(a.dst.add(at), y);
                    (I::add(s[h], y), I::fmadd(y, y, s2[h]))
                }
                Sums::Deferred(z, _) => {
                    I::store(a.dst.add(at), y);
                    let zv = I::load(z.add(at));
                    sum_g(I::where_positive(I::add(I::mul(zv, scale), shift), y), zv)
                }
                // Added to the gradient there, then masked by the block's output (its ReLU's).
                Sums::Residual(yo, z, _) => {
                    let g = I::add(y, I::load(a.dst.add(at)));
                    let gm = I::where_positive(I::load(yo.add(at)), g);
                    I::store(a.dst.add(at), gm);
                    sum_g(gm, I::load(z.add(at)))
                }
            };
        }
        for h in 0..parts {
            I::store(l.add(h * I::N), s[h]);
            I::store(l.add(16 + h * I::N), s2[h]);
        }
    }
}
