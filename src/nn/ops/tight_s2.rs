//! The 3x3 / stride 2 / padding 1 convolution on the tight-plane kernel ([`super::tight`]): its
//! forward and input gradient, both by the parity of the input position.
//!
//! Forward: the input split into its four phase planes `P_(ry, rx)[i][j] = x[2i + ry][2j + rx]`
//! (tight planes of the `h/2 x w/2` output size), output `(i, j)` reads kernel row `ky = 1` from
//! `P_(0, .)` row `i`, rows `ky = 0` and `2` from `P_(1, .)` rows `i - 1` and `i` (the zero row
//! above for `i = 0`), the columns alike: per phase the tight taps rows `1 - ry..2`, columns `1 -
//! rx..2` ([`Taps::Phases`]; column `-1` a left tap the kernel masks), all four in one pass.
//!
//! Input gradient:
//! Input position `(2i + py, 2j + px)` receives, from output-gradient row `oy = i + dy`, the kernel
//! row `ky = py + 1 - 2 dy`: with `py = 0` only `dy = 0` (`ky = 1`), with `py = 1` both `dy = 0`
//! (`ky = 2`) and `dy = 1` (`ky = 0`); the columns alike. So each of the four parts `(py, px)` is a
//! stride-1 convolution of the output gradient's tight planes (`h/2 x w/2`) with the taps `(1 + dy,
//! 1 + dx)` of the tight stencil ([`Taps`] rows and columns `1..2` or `1..3`): row `oy = h/2` is
//! the plane's zero row below, column `ox = w/2` a right tap the kernel masks. The parts are written
//! to scratch planes and added to the input gradient's rows, two parts' columns interleaved.
//!
//! Against the padded-grid kernel over four polyphase grids of `(h/2 + 1) x (w/2 + 1)` positions
//! with a strided scalar add: see BENCHMARKS.md.
use std::mem::MaybeUninit;

use super::direct::aligned;
use super::tight::{self, Out, Taps};
use super::tight_kernel::PHASE_AT;

/// Whether [`forward`] serves `co` output channels from an `h x w` input on kernel width `lanes`.
pub fn forward_applies(lanes: usize, co: usize, (h, w): (usize, usize)) -> bool {
    h.is_multiple_of(2) && w.is_multiple_of(2) && tight::applies_taps(lanes, (h / 2, w / 2), Taps::Phases(0), co)
}

/// The weights `wt` (`co x c x 3 x 3`) laid out for [`forward`]: per output and input channel 9,
/// phase `p = 2 ry + rx`'s tight tap `(ky', kx')` at `PHASE_AT[p] + 3 ky' + kx'`
/// ([`PHASE_AT`]) holding kernel tap `(ky, kx)` with `ky = 1` where `ry = 0`, `ky = 2 ky'` where
/// `ry = 1` (the columns alike). Every slot is one phase's tap.
pub fn phase_weights(wt: &[f32], co: usize, c: usize) -> Vec<f32> {
    assert!(wt.len() >= co * c * 9, "tight_s2::phase_weights: {} weights for {co} x {c} x 9", wt.len());
    let mut w = vec![0.0f32; co * c * 9];
    for (oc, p) in (0..co * c).flat_map(|oc| (0..4).map(move |p| (oc, p))) {
        let (ry, rx) = (p / 2, p % 2);
        for (ky_, kx_) in (1 - ry..2).flat_map(|a| (1 - rx..2).map(move |b| (a, b))) {
            let (ky, kx) = (if ry == 0 { 1 } else { 2 * ky_ }, if rx == 0 { 1 } else { 2 * kx_ });
            w[oc * 9 + PHASE_AT[p] + ky_ * 3 + kx_] = wt[oc * 9 + ky * 3 + kx];
        }
    }
    w
}

/// Copies one image `x` (`c x h x w`, even sides) into its phase planes: channel `ci`'s phase `p`
/// at `(4 ci + p) * plane` (`plane` = [`tight::plane`] of `h/2 x w/2`), in `buf` from a 64-byte
/// line; returns them. Every value is written.
pub fn split<'b>(lanes: usize, x: &[f32], (c, h, w): (usize, usize, usize), buf: &'b mut Vec<f32>) -> &'b [f32] {
    let (ho, wo) = (h / 2, w / 2);
    assert!(h == 2 * ho && w == 2 * wo && x.len() >= c * h * w, "tight_s2::split: even sides only, got {h}x{w}");
    let pl = tight::plane(ho, wo);
    let out = aligned(buf, 4 * c * pl, 0);
    for (ci, phases) in out.chunks_exact_mut(4 * pl).enumerate() {
        for ph in phases.chunks_exact_mut(pl) {
            ph[..wo + 1].fill(0.0);
            ph[wo + 1 + ho * wo..].fill(0.0);
        }
        for (y, src) in x[ci * h * w..(ci + 1) * h * w].chunks_exact(w).enumerate() {
            let (ry, i) = (y % 2, y / 2);
            let at = |p: usize| p * pl + wo + 1 + i * wo;
            let (lo, hi) = phases.split_at_mut(at(2 * ry + 1));
            deinterleave(lanes, src, &mut lo[at(2 * ry)..at(2 * ry) + wo], &mut hi[..wo]);
        }
    }
    out
}

/// The forward of one image `x` (`c x h x w`) with the weights from [`phase_weights`], into `out`
/// ([`Out::Write`] of the `co x h/2 x w/2` output), where [`forward_applies`]; `false` (nothing
/// written) elsewhere. `buf` holds the phase planes.
pub fn forward(
    lanes: usize,
    x: &[f32],
    (c, h, w): (usize, usize, usize),
    (w36, co): (&[f32], usize),
    out: Out,
    buf: &mut Vec<f32>,
) -> bool {
    if !forward_applies(lanes, co, (h, w)) {
        return false;
    }
    let pl = tight::plane(h / 2, w / 2);
    let xp = split(lanes, x, (c, h, w), buf);
    assert!(tight::conv_taps_at(lanes, xp, (c, 4 * pl), (h / 2, w / 2), (w36, Taps::Phases(pl)), co, out));
    true
}

/// Per part `py * 2 + px`, its weights in the tight kernel's layout: `w[(ci * co + o) * 9 + ky' * 3 +
/// kx']` (the kernel's outputs are the `c` input channels, its inputs the `co` output-gradient
/// channels), zero at the taps the part does not sum.
pub struct Parts([Vec<f32>; 4]);

/// The taps of part `p` (`py * 2 + px`).
fn taps(p: usize) -> Taps {
    Taps::Part(p / 2, p % 2)
}

/// [`Parts`] of the weights `wt` (`co x c x 3 x 3`).
pub fn parts(wt: &[f32], co: usize, c: usize) -> Parts {
    assert!(wt.len() >= co * c * 9, "tight_s2::parts: {} weights for {co} x {c} x 9", wt.len());
    Parts(std::array::from_fn(|p| {
        let (py, px) = (p / 2, p % 2);
        let mut w = vec![0.0f32; c * co * 9];
        for (ci, o) in (0..c).flat_map(|ci| (0..co).map(move |o| (ci, o))) {
            // Part (py, px) sums the tight taps (ky', kx') in rows 1..2 + py, columns 1..2 + px.
            for (ky_, kx_) in (1..2 + py).flat_map(|a| (1..2 + px).map(move |b| (a, b))) {
                // Tight tap (1 + dy, 1 + dx) is kernel tap (py + 1 - 2 dy, px + 1 - 2 dx).
                let (ky, kx) = (py + 3 - 2 * ky_, px + 3 - 2 * kx_);
                w[(ci * co + o) * 9 + ky_ * 3 + kx_] = wt[(o * c + ci) * 9 + ky * 3 + kx];
            }
        }
        w
    }))
}

/// Whether [`input_grad`] serves a convolution with `c` input channels of `h x w` on this thread's
/// kernel width `lanes`: even sides, the output plane whole vectors, `c` whole channel blocks.
pub fn applies(lanes: usize, c: usize, (h, w): (usize, usize)) -> bool {
    h.is_multiple_of(2) && w.is_multiple_of(2) && (0..4).all(|p| tight::applies_taps(lanes, (h / 2, w / 2), taps(p), c))
}

/// Where [`input_grad`] puts an image's input gradient (`c x h x w`).
pub enum Dx<'a> {
    /// Added to what is there.
    Add(&'a mut [f32]),
    /// Written, every value (need not be initialised): the first contribution to a gradient, with
    /// no zero fill before it and no read of it.
    Write(&'a mut [MaybeUninit<f32>]),
}

/// The input gradient of one image from `gt`, its output gradient's first tight plane
/// ([`tight::pad_tight`] of the `h/2 x w/2` output, `co` channels `cstride` apart), into `dx`,
/// where [`applies`]; `false` (nothing done) elsewhere. `scratch` holds the four parts.
pub fn input_grad(
    lanes: usize,
    gt: &[f32],
    (co, cstride): (usize, usize),
    parts: &Parts,
    (c, h, w): (usize, usize, usize),
    dx: Dx,
    scratch: &mut Vec<f32>,
) -> bool {
    if !applies(lanes, c, (h, w)) {
        return false;
    }
    let (dst, len, add) = match dx {
        Dx::Add(d) => (d.as_mut_ptr(), d.len(), true),
        Dx::Write(d) => (d.as_mut_ptr().cast::<f32>(), d.len(), false),
    };
    assert!(len >= c * h * w, "tight_s2::input_grad: {len} values for {c} x {h} x {w}");
    let (ho, wo) = (h / 2, w / 2);
    let n = c * ho * wo;
    let s = aligned(scratch, 4 * n, 0);
    for (p, part) in s.chunks_exact_mut(n).enumerate() {
        // SAFETY: `MaybeUninit<f32>` has `f32`'s layout; the kernel writes every value.
        let out = unsafe { &mut *(part as *mut [f32] as *mut [std::mem::MaybeUninit<f32>]) };
        let out = Out::Write { out, bias: None, res: None, relu: false, sums: None };
        let ran = tight::conv_taps_at(lanes, gt, (co, cstride), (ho, wo), (&parts.0[p], taps(p)), c, out);
        assert!(ran, "tight_s2::input_grad: the kernel turned down a part `applies` accepted");
    }
    for ci in 0..c {
        for y in 0..h {
            let (py, i) = (y % 2, y / 2);
            let at = |p: usize| p * n + (ci * ho + i) * wo;
            let (even, odd) = (&s[at(py * 2)..at(py * 2) + wo], &s[at(py * 2 + 1)..at(py * 2 + 1) + wo]);
            // SAFETY: row `y` of channel `ci` is inside the `c x h x w` values checked above, and
            // `2 wo = w` values long.
            unsafe { interleave(lanes, add, dst.add((ci * h + y) * w), even, odd) };
        }
    }
    true
}

/// `row[2j] (+)= even[j]`, `row[2j + 1] (+)= odd[j]` for `j < even.len()` (added with `add`, else
/// written): 8 pairs at a time on the kernel width's vectors (a permute of the two halves with
/// AVX-512, unpacks and a lane exchange with AVX), the rest one by one.
///
/// # Safety
/// `row` valid for `2 * even.len()` values (initialised where `add`); `odd` as long as `even`.
unsafe fn interleave(lanes: usize, add: bool, row: *mut f32, even: &[f32], odd: &[f32]) {
    assert_eq!(odd.len(), even.len());
    // SAFETY: the entries run on the instructions `lanes` implies (the tight kernel's width, which
    // this CPU's dispatch reached); the lengths are the caller's.
    #[cfg(target_arch = "x86_64")]
    match (lanes, add) {
        (16, true) => return interleave16::<true>(row, even, odd),
        (16, false) => return interleave16::<false>(row, even, odd),
        (8, true) => return interleave8::<true>(row, even, odd),
        (8, false) => return interleave8::<false>(row, even, odd),
        _ => {}
    }
    if add {
        pairs_from::<true>(0, row, even, odd)
    } else {
        pairs_from::<false>(0, row, even, odd)
    }
}

/// [`interleave`] of the pairs from `j0` on, one by one.
#[inline(always)]
unsafe fn pairs_from<const ADD: bool>(j0: usize, row: *mut f32, even: &[f32], odd: &[f32]) {
    for j in j0..even.len() {
        let (e, o) = (row.add(2 * j), row.add(2 * j + 1));
        if ADD {
            (*e, *o) = (*e + even[j], *o + odd[j]);
        } else {
            e.write(even[j]);
            o.write(odd[j]);
        }
    }
}

/// [`interleave`] on AVX-512: 8 pairs a vector.
///
/// # Safety
/// AVX-512F; as [`interleave`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn interleave16<const ADD: bool>(row: *mut f32, even: &[f32], odd: &[f32]) {
    use std::arch::x86_64::*;
    let idx = _mm512_setr_epi32(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15);
    let mut j = 0;
    while j + 8 <= even.len() {
        let (r, e, o) = (row.add(2 * j), even.as_ptr().add(j), odd.as_ptr().add(j));
        let v = _mm512_insertf32x8::<1>(_mm512_castps256_ps512(_mm256_loadu_ps(e)), _mm256_loadu_ps(o));
        let v = _mm512_permutexvar_ps(idx, v);
        _mm512_storeu_ps(r, if ADD { _mm512_add_ps(_mm512_loadu_ps(r), v) } else { v });
        j += 8;
    }
    pairs_from::<ADD>(j, row, even, odd);
}

/// [`interleave`] on AVX: 8 pairs two vectors.
///
/// # Safety
/// AVX; as [`interleave`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn interleave8<const ADD: bool>(row: *mut f32, even: &[f32], odd: &[f32]) {
    use std::arch::x86_64::*;
    let mut j = 0;
    while j + 8 <= even.len() {
        let (r, e, o) = (row.add(2 * j), even.as_ptr().add(j), odd.as_ptr().add(j));
        let (ev, ov) = (_mm256_loadu_ps(e), _mm256_loadu_ps(o));
        // (e0 o0 e1 o1 | e4 o4 e5 o5) and (e2 o2 e3 o3 | e6 o6 e7 o7).
        let (lo, hi) = (_mm256_unpacklo_ps(ev, ov), _mm256_unpackhi_ps(ev, ov));
        let (a, b) = (_mm256_permute2f128_ps::<0x20>(lo, hi), _mm256_permute2f128_ps::<0x31>(lo, hi));
        if ADD {
            _mm256_storeu_ps(r, _mm256_add_ps(_mm256_loadu_ps(r), a));
            _mm256_storeu_ps(r.add(8), _mm256_add_ps(_mm256_loadu_ps(r.add(8)), b));
        } else {
            _mm256_storeu_ps(r, a);
            _mm256_storeu_ps(r.add(8), b);
        }
        j += 8;
    }
    pairs_from::<ADD>(j, row, even, odd);
}

/// `even[j] = row[2j]`, `odd[j] = row[2j + 1]` for `j < even.len()`: 8 pairs at a time as
/// [`interleave`], the rest one by one.
fn deinterleave(lanes: usize, row: &[f32], even: &mut [f32], odd: &mut [f32]) {
    assert!(odd.len() == even.len() && row.len() >= 2 * even.len());
    // SAFETY: as in `interleave`.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        if lanes == 16 {
            return deinterleave16(row, even, odd);
        }
        if lanes == 8 {
            return deinterleave8(row, even, odd);
        }
    }
    split_from(0, row, even, odd);
}

/// [`deinterleave`] of the pairs from `j0` on, one by one.
#[inline(always)]
fn split_from(j0: usize, row: &[f32], even: &mut [f32], odd: &mut [f32]) {
    for j in j0..even.len() {
        even[j] = row[2 * j];
        odd[j] = row[2 * j + 1];
    }
}

/// [`deinterleave`] on AVX-512: 8 pairs a vector.
///
/// # Safety
/// AVX-512F; `odd` as long as `even`, `row` twice as long.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn deinterleave16(row: &[f32], even: &mut [f32], odd: &mut [f32]) {
    use std::arch::x86_64::*;
    let idx = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    let mut j = 0;
    while j + 8 <= even.len() {
        let v = _mm512_permutexvar_ps(idx, _mm512_loadu_ps(row.as_ptr().add(2 * j)));
        _mm256_storeu_ps(even.as_mut_ptr().add(j), _mm512_castps512_ps256(v));
        _mm256_storeu_ps(odd.as_mut_ptr().add(j), _mm512_extractf32x8_ps::<1>(v));
        j += 8;
    }
    split_from(j, row, even, odd);
}

/// [`deinterleave`] on AVX2: 8 pairs two vectors.
///
/// # Safety
/// AVX2; `odd` as long as `even`, `row` twice as long.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn deinterleave8(row: &[f32], even: &mut [f32], odd: &mut [f32]) {
    use std::arch::x86_64::*;
    let mut j = 0;
    while j + 8 <= even.len() {
        let r = row.as_ptr().add(2 * j);
        let (a, b) = (_mm256_loadu_ps(r), _mm256_loadu_ps(r.add(8)));
        // (a0 a2 b0 b2 | a4 a6 b4 b6), then the 64-bit pairs in order 0, 2, 1, 3.
        let pick = |v: __m256| _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(_mm256_castps_pd(v)));
        _mm256_storeu_ps(even.as_mut_ptr().add(j), pick(_mm256_shuffle_ps::<0x88>(a, b)));
        _mm256_storeu_ps(odd.as_mut_ptr().add(j), pick(_mm256_shuffle_ps::<0xDD>(a, b)));
        j += 8;
    }
    split_from(j, row, even, odd);
}
