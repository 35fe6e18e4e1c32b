//! The direct 3x3 / stride 1 / padding 1 convolution on tight planes (AVX-512, or AVX2 + FMA):
//! no padding column, so the tiles cover the image's own `h * w` positions and are stored straight into the
//! output, with no padded-width scratch, no discarded column and no unpadding pass.
//!
//! [`pad_tight`] copies each plane between a zero row above and one below, with one zero before
//! and after (`plane = (h + 2) * w + 2` values): output position `q = y * w + x`, tap `(ky, kx)`
//! reads element `q + ky * w + kx`. The left taps (`kx = 0`) of column 0 and the right taps
//! (`kx = 2`) of column `w - 1` would read the neighbouring row's last or first value there; those
//! lanes are masked to zero in the load (AVX-512 zero-masking loads cost what a plain load costs;
//! AVX2's `vmaskmovps` is a load and one more operation).
//! - AVX-512 (32 registers): a tile is 8 output channels x 3 vectors of 16 positions (24
//!   accumulators; where the channel count is not a multiple of 8, up to 6 x 4): per input channel
//!   and tap, 8 weight broadcasts and 3 loads serve 24 FMAs.
//! - AVX2 (16 registers): 4 output channels x 2 vectors of 8 positions (8 accumulators, the 4 load
//!   masks of the tile's left and right taps, 2 inputs and a broadcast).
//!
//! The epilogue (bias, ReLU, the batch norm's plane sums, or adding to the output) runs on the
//! accumulators before their one store. The kernel is written once over [`Isa`], instantiated
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
    matches!(lanes, 8 | 16) && cpu::f32_lanes() >= lanes && h > 0 && w > 0 && (h * w).is_multiple_of(lanes)
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
    // Per vector of `lanes` positions, the lanes whose left / right taps read inside the image.
    let masks: Vec<(u16, u16)> = (0..hw / lanes)
        .map(|v| {
            (0..lanes).fold((0u16, 0u16), |(l, r), lane| {
                let x = (lanes * v + lane) % w;
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
use isa::{Isa, W16, W8};

/// The vector operations the kernel uses, at one width: [`W16`] (AVX-512) and [`W8`] (AVX2 +
/// FMA). Every method is `#[inline(always)]` and only called from the `#[target_feature]` entries
/// ([`channels16`], [`channels8`]), so each compiles to its instruction there.
#[cfg(target_arch = "x86_64")]
mod isa {
    use std::arch::x86_64::*;

    pub trait Isa {
        /// Positions per vector.
        const N: usize;
        type V: Copy;
        /// A load mask of `N` lanes.
        type M: Copy;
        unsafe fn zero() -> Self::V;
        unsafe fn set1(v: f32) -> Self::V;
        unsafe fn load(p: *const f32) -> Self::V;
        /// Lanes whose bit is set in `m` loaded, the others zero (and not read).
        unsafe fn load_masked(m: Self::M, p: *const f32) -> Self::V;
        unsafe fn store(p: *mut f32, v: Self::V);
        unsafe fn mask(bits: u16) -> Self::M;
        unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
        unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
        unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
        unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
        unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
        /// `y` where `act > 0` (ordered: not where `act` is NaN), else `0`.
        unsafe fn where_positive(act: Self::V, y: Self::V) -> Self::V;
    }

    /// AVX-512: 16 lanes, mask registers.
    pub struct W16;
    /// AVX2 + FMA: 8 lanes, masks as vectors.
    pub struct W8;

    impl Isa for W16 {
        const N: usize = 16;
        type V = __m512;
        type M = __mmask16;
        #[inline(always)]
        unsafe fn zero() -> __m512 {
            _mm512_setzero_ps()
        }
        #[inline(always)]
        unsafe fn set1(v: f32) -> __m512 {
            _mm512_set1_ps(v)
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m512 {
            _mm512_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn load_masked(m: __mmask16, p: *const f32) -> __m512 {
            _mm512_maskz_loadu_ps(m, p)
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m512) {
            _mm512_storeu_ps(p, v)
        }
        #[inline(always)]
        unsafe fn mask(bits: u16) -> __mmask16 {
            bits
        }
        #[inline(always)]
        unsafe fn fmadd(a: __m512, b: __m512, c: __m512) -> __m512 {
            _mm512_fmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn add(a: __m512, b: __m512) -> __m512 {
            _mm512_add_ps(a, b)
        }
        #[inline(always)]
        unsafe fn sub(a: __m512, b: __m512) -> __m512 {
            _mm512_sub_ps(a, b)
        }
        #[inline(always)]
        unsafe fn mul(a: __m512, b: __m512) -> __m512 {
            _mm512_mul_ps(a, b)
        }
        #[inline(always)]
        unsafe fn max(a: __m512, b: __m512) -> __m512 {
            _mm512_max_ps(a, b)
        }
        #[inline(always)]
        unsafe fn where_positive(act: __m512, y: __m512) -> __m512 {
            _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_GT_OQ>(act, _mm512_setzero_ps()), y)
        }
    }

    impl Isa for W8 {
        const N: usize = 8;
        type V = __m256;
        type M = __m256i;
        #[inline(always)]
        unsafe fn zero() -> __m256 {
            _mm256_setzero_ps()
        }
        #[inline(always)]
        unsafe fn set1(v: f32) -> __m256 {
            _mm256_set1_ps(v)
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m256 {
            _mm256_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn load_masked(m: __m256i, p: *const f32) -> __m256 {
            _mm256_maskload_ps(p, m)
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m256) {
            _mm256_storeu_ps(p, v)
        }
        #[inline(always)]
        unsafe fn mask(bits: u16) -> __m256i {
            let lane = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
            _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(i32::from(bits)), lane), lane)
        }
        #[inline(always)]
        unsafe fn fmadd(a: __m256, b: __m256, c: __m256) -> __m256 {
            _mm256_fmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn add(a: __m256, b: __m256) -> __m256 {
            _mm256_add_ps(a, b)
        }
        #[inline(always)]
        unsafe fn sub(a: __m256, b: __m256) -> __m256 {
            _mm256_sub_ps(a, b)
        }
        #[inline(always)]
        unsafe fn mul(a: __m256, b: __m256) -> __m256 {
            _mm256_mul_ps(a, b)
        }
        #[inline(always)]
        unsafe fn max(a: __m256, b: __m256) -> __m256 {
            _mm256_max_ps(a, b)
        }
        #[inline(always)]
        unsafe fn where_positive(act: __m256, y: __m256) -> __m256 {
            _mm256_and_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(act, _mm256_setzero_ps()), y)
        }
    }
}

/// [`channels`] compiled for AVX-512; returns `NB`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn channels16<const NB: usize, const V: usize>(
    a: &Args,
    o0: usize,
    vs: (usize, usize),
    mode: &Mode,
    sl: *mut [f32; 32],
) -> usize {
    channels::<W16, NB, V>(a, o0, vs, mode, sl);
    NB
}

/// [`channels`] compiled for AVX2 + FMA; returns `NB`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn channels8<const NB: usize, const V: usize>(
    a: &Args,
    o0: usize,
    vs: (usize, usize),
    mode: &Mode,
    sl: *mut [f32; 32],
) -> usize {
    channels::<W8, NB, V>(a, o0, vs, mode, sl);
    NB
}

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
                0 => I::load_masked(ml[v], src),
                1 => I::load(src),
                _ => I::load_masked(mr[v], src),
            };
        }
        for b in 0..NB {
            let wb = I::set1(*w.add(b * ws + kx));
            for v in 0..V {
                acc[b][v] = I::fmadd(wb, xv[v], acc[b][v]);
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
    for b in 0..NB {
        let o = o0 + b;
        let dst = a.dst.add(o * a.hw + q0);
        let l = if mode.sums { (*sl.add(b)).as_mut_ptr() } else { std::ptr::null_mut() };
        // The batch norm's backward sums go on from the lanes, vector after vector in position
        // order: the batch norm's own pass adds in that order, so the sums are the same bit for
        // bit. So do 8-lane vectors' sums, each into its half of the 16 lanes. AVX-512's forward
        // sums add a tile's partial to the lanes.
        let in_order = mode.bn.is_some() || I::N < 16;
        let (mut s, mut s2) = (I::zero(), I::zero());
        for v in 0..V {
            let half = if I::N < 16 { (v0 + v) % 2 * I::N } else { 0 };
            if mode.sums && in_order && (v == 0 || I::N < 16) {
                (s, s2) = (I::load(l.add(half)), I::load(l.add(16 + half)));
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
                if I::N < 16 {
                    I::store(l.add(half), s);
                    I::store(l.add(16 + half), s2);
                }
            }
        }
        if mode.sums && I::N == 16 {
            if in_order {
                I::store(l, s);
                I::store(l.add(16), s2);
            } else {
                I::store(l, I::add(I::load(l), s));
                I::store(l.add(16), I::add(I::load(l.add(16)), s2));
            }
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
        let widths: Vec<usize> = [8, 16].into_iter().filter(|&l| applies_at(l, 4, 4)).collect();
        if widths.is_empty() {
            eprintln!("no AVX2 + FMA on this CPU: the tight kernel does not run here");
            assert!(!conv(&[], (1, 1), (4, 4), &[], 1, Out::Add(&mut [])));
        }
        assert!(!applies_at(8, 3, 5) && !applies_at(16, 6, 4) && !applies_at(4, 4, 4));
        // (16, 24, 32, 32): tiles in segments (its planes exceed half of L1), a single vector at
        // each segment's end; (2, 13, ...): blocks of 6, 6 and 1 (AVX-512), 4 x 3 and 1 (AVX2);
        // (3, 7, 4, 4): only singles; (3, 6, 6, 4): 3 vectors of 8, rows of 4 (AVX2 only).
        for (lanes, (c, co, h, w, nb)) in widths.iter().flat_map(|&l| {
            [
                (3, 7, 4, 4, 2),
                (5, 11, 8, 2, 1),
                (16, 16, 16, 16, 3),
                (2, 13, 32, 32, 2),
                (4, 8, 12, 4, 2),
                (16, 24, 32, 32, 1),
                (3, 6, 6, 4, 2),
            ]
            .into_iter()
            .filter(move |&(_, _, h, w, _)| applies_at(l, h, w))
            .map(move |case| (l, case))
        }) {
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
                    "L{lanes} {what} c{c} co{co} {h}x{w}: {got} vs {want}"
                )
            };
            let img = &xp[b * pl..];
            // Written plain, with sums.
            let mut out = vec![MaybeUninit::new(f32::NAN); co * hw];
            let mut sums = vec![(7.0, 7.0); co];
            let mode = Out::Write { out: &mut out, bias: None, res: None, relu: false, sums: Some(&mut sums) };
            assert!(conv_at(lanes, img, (c, nb * pl), (h, w), &wt, co, mode));
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
                assert!(conv_at(lanes, img, (c, nb * pl), (h, w), &wt, co, mode));
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
            assert!(conv_at(
                lanes,
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
            assert!(conv_at(lanes, img, (c, nb * pl), (h, w), &wt, co, Out::Add(&mut acc)));
            for (k, &v) in acc.iter().enumerate() {
                close(v, want[k] + (k as f32 * 0.01) as f64, "added");
            }
        }
    }
}
