//! Direct 3x3 / stride 1 / padding 1 convolution of one image, without im2col.
//!
//! The input is copied once into zero-padded planes of width `wp = w + 1`, flattened: one zero
//! column per row serves as the right border of that row and the left border of the next. On that
//! grid every output position `q = y * wp + x` is `sum_taps w[tap] * xp[q + ky * wp + kx]`, so each
//! tap is a contiguous shifted read and a tile of outputs is a block of FMAs with broadcast weights
//! (the column `x = w` of each row is computed and dropped). The same kernel computes the
//! input gradient, as the convolution of the output gradient with the flipped, transposed weights,
//! and [`conv3x3_weight_grad`] the weight gradient from the same padded layout.
//!
//! The kernels are written once over `pulp`'s SIMD vectors and dispatched at run time: with AVX-512
//! a tile is 4 output channels x 64-96 positions held in up to 24 registers, with AVX2 + FMA 4
//! output channels x 16 positions; without either a portable version of the same loop runs.
//! Where the CPU has AVX-512 or AVX2 + FMA, the convolution layers take two other kernels for
//! stride 1 instead: `super::tight` for the forward and the input gradient (no padding column, no
//! unpadding pass) and `super::wgrad_blocked` for the weight gradient (channel-blocked input); the
//! stride-2 and 1x1 paths below serve every CPU.

use std::mem::MaybeUninit;

use super::deferred::{copy_plane, Deferred};

/// Output channels per register block.
const CB: usize = 4;

/// Geometry of a padded, flattened plane set.
#[derive(Clone, Copy, Debug)]
pub struct Padded {
    pub h: usize,
    pub w: usize,
}

impl Padded {
    /// Row length: the `w` values and one zero column (the right border of this row, the left
    /// border of the next; the zero rows above and below close the first and last).
    pub fn wp(&self) -> usize {
        self.w + 1
    }
    /// Elements of one padded plane.
    pub fn plane(&self) -> usize {
        (self.h + 2) * self.wp()
    }
    /// Vectors of 16 positions per tile (4, 5 or 6): the one that wastes the fewest positions on
    /// this plane size (an 8x8 plane has 72 positions on the padded grid: 5 vectors, not 6).
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

/// `len` values of `buf` (grown as needed) starting where the slice's element `lead` falls on a
/// 64-byte boundary: the kernels' vector loads at that element and at every 16th after it (one
/// cache line each) do not straddle two lines. Their contents are whatever the buffer held.
pub fn aligned(buf: &mut Vec<f32>, len: usize, lead: usize) -> &mut [f32] {
    if buf.len() < len + 16 {
        buf.resize(len + 16, 0.0);
    }
    let at = (buf.as_ptr() as usize / 4 + lead) % 16;
    let off = (16 - at) % 16;
    &mut buf[off..off + len]
}

/// Copies `c` planes of `h x w` into zero-padded planes (one image; see [`pad_chunk`]).
pub fn pad_planes<'b>(x: (&[f32], Option<&Deferred>), c: usize, g: Padded, buf: &'b mut Vec<f32>) -> &'b [f32] {
    pad_chunk_with(x, 1, c, g, buf, 0)
}

/// Pads `b` images (`x` holds them NCHW, `c` channels each) into channel-major planes
/// `[c][b][plane]`, so one channel of all `b` images is contiguous (batched weight gradients), in
/// `buf` at the place where element `lead` is 64-byte aligned ([`aligned`]); returns them. Every
/// value is written (data, borders, slack), so re-using `buf` costs one copy of the data.
pub fn pad_chunk<'b>(x: &[f32], b: usize, c: usize, g: Padded, buf: &'b mut Vec<f32>, lead: usize) -> &'b [f32] {
    pad_chunk_with((x, None), b, c, g, buf, lead)
}

/// [`pad_chunk`] of the values of `x` mapped by `pre` (a deferred batch norm + ReLU), if any.
pub fn pad_chunk_with<'b>(
    (x, pre): (&[f32], Option<&Deferred>),
    b: usize,
    c: usize,
    g: Padded,
    buf: &'b mut Vec<f32>,
    lead: usize,
) -> &'b [f32] {
    pad_grid((x, pre), (b, c), (g.h, g.w, g.wp()), (buf, g.buf_len(c * b), lead))
}

/// [`grid_planes`] of `b` images (`x` holds them NCHW, `c` channels of `h x w`), mapped by `pre`
/// if any.
pub fn pad_grid<'b>(
    (x, pre): (&[f32], Option<&Deferred>),
    (b, c): (usize, usize),
    (h, w, rs): (usize, usize, usize),
    (buf, len, lead): (&'b mut Vec<f32>, usize, usize),
) -> &'b [f32] {
    grid_planes((b, c), (h, w, rs), (buf, len, lead), |ci, bi, y, dst| {
        copy_plane(pre, ci, dst, &x[((bi * c + ci) * h + y) * w..][..w])
    })
}

/// Planes of `h x w` values in rows `rs` apart (`rs > w`), channel major (`[c][b][plane]`, `plane
/// = (h + 2) rs`), `len` values in all from the element `lead` of [`aligned`]: value `(y, x)` of
/// channel `ci`, image `bi` at `(y + 1) rs + x + 1` of its plane, written row by row by `fill(ci,
/// bi, y, dst)`; every other value (the zero rows above and below, the `rs - w` zeros between
/// rows, the slack after the planes) zero. [`pad_chunk`]'s planes are those of `rs = w + 1`.
pub fn grid_planes(
    (b, c): (usize, usize),
    (h, w, rs): (usize, usize, usize),
    (buf, len, lead): (&mut Vec<f32>, usize, usize),
    fill: impl Fn(usize, usize, usize, &mut [f32]),
) -> &[f32] {
    let plane = (h + 2) * rs;
    assert!(rs > w && len >= c * b * plane, "grid_planes: rows of {w} in {rs}, {len} values");
    let buf = aligned(buf, len, lead);
    for ci in 0..c {
        for bi in 0..b {
            let p = &mut buf[(ci * b + bi) * plane..(ci * b + bi + 1) * plane];
            p[..rs + 1].fill(0.0);
            for y in 0..h {
                let row = (y + 1) * rs;
                fill(ci, bi, y, &mut p[row + 1..row + 1 + w]);
                p[row + 1 + w..row + rs + 1].fill(0.0);
            }
            p[(h + 1) * rs + 1..].fill(0.0);
        }
    }
    buf[c * b * plane..].fill(0.0);
    buf
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
    let s = tiles(xp, (c, cstride), g, (taps(g), 9), (wt, co), scratch);
    unpad(s, co, g, out, accumulate);
}

/// What a forward does with each output value of channel `o` before storing it: `+ bias[o]`, then
/// the ReLU; and, when given (without bias and ReLU only), the `(sum, sum of squares)` of each
/// output channel's plane, into its `co` pairs (for the batch norm that follows in training).
pub type Epilogue<'a> = (Option<&'a [f32]>, bool, Option<&'a mut [(f64, f64)]>);

/// [`conv3x3`] writing `relu?(v + bias[o])` into `out`, which need not be initialised: every one of
/// its `co x h x w` values is written.
#[allow(clippy::too_many_arguments)]
pub fn conv3x3_into(
    xp: &[f32],
    (c, cstride): (usize, usize),
    g: Padded,
    wt: &[f32],
    co: usize,
    out: &mut [MaybeUninit<f32>],
    epilogue: Epilogue,
    scratch: &mut Vec<f32>,
) {
    let s = tiles(xp, (c, cstride), g, (taps(g), 9), (wt, co), scratch);
    unpad_into(s, co, g, out, epilogue);
}

/// The tile kernel (or its portable loop) for taps `(off, nt)` into `scratch`, `co` planes of the
/// padded-width grid; returns them.
fn tiles<'s>(
    xp: &[f32],
    (c, cstride): (usize, usize),
    g: Padded,
    taps: ([usize; 9], usize),
    (wt, co): (&[f32], usize),
    scratch: &'s mut Vec<f32>,
) -> &'s [f32] {
    let ql = g.q_len();
    // Every element is written by the kernels; aligned, so the tiles' stores are too.
    let s = aligned(scratch, co * ql, 0);
    let kernel = simd::Conv { xp, c, plane: cstride, g, taps, wt, co, s: &mut *s };
    if !super::cpu::arch().dispatch(kernel) {
        portable(xp, c, cstride, g, taps, wt, co, s);
    }
    s
}

/// Whether [`conv3x3_s2`] serves a 3x3 / stride 2 / padding 1 convolution of an `h x w` plane.
pub fn s2_applies(h: usize, w: usize) -> bool {
    h.is_multiple_of(2) && w.is_multiple_of(2) && h > 0 && w > 0
}

/// The 3x3 / stride 2 / padding 1 convolution of one image `x` (`c x h x w`, even sides) into `out`
/// (`co x h/2 x w/2`, need not be initialised, every value written as in [`conv3x3_into`]), by the
/// same tile kernel: the zero-padded input split into its four polyphase planes
/// `P_ab[i][j] = xpad[2i + a][2j + b]` (laid out like padded planes of the output size), so that tap
/// `(ky, kx)` is the contiguous shifted read `P_(ky%2, kx%2)[q + (ky/2) * wp + kx/2]` of output
/// position `q`. `buf` holds the phase planes, `eo` the even and odd columns of one plane.
#[allow(clippy::too_many_arguments)]
pub fn conv3x3_s2(
    x: &[f32],
    c: usize,
    (h, w): (usize, usize),
    wt: &[f32],
    co: usize,
    out: &mut [MaybeUninit<f32>],
    epilogue: Epilogue,
    (buf, eo, scratch): (&mut Vec<f32>, &mut Vec<f32>, &mut Vec<f32>),
) {
    assert!(s2_applies(h, w), "conv3x3_s2: even sides only, got {h}x{w}");
    let g = Padded { h: h / 2, w: w / 2 };
    let phases = split_phases(x, (1, c), (h, w), buf, eo);
    let s = tiles(phases, (c, 4 * g.plane()), g, (s2_taps(g), 9), (wt, co), scratch);
    unpad_into(s, co, g, out, epilogue);
}

/// The stride-2 input gradient's four polyphase parts ([`conv3x3_s2_input_grad`]): part `a * 2 + b`
/// (the input positions `(2i + a - 1, 2j + b - 1)`) receives the taps `(ky, kx) = (a + 2m, b + 2n)`
/// from output-gradient position `(i - m, j - n)`; per part its weights `w[ci][o][t]` (`c` outputs
/// from `co` inputs), its offsets on the padded output-gradient planes and its number of taps.
pub struct S2Parts([(Vec<f32>, [usize; 9], usize); 4]);

/// [`S2Parts`] of the weights `wt` (`co x c x 3 x 3`) for output planes `g`.
pub fn s2_parts(wt: &[f32], co: usize, c: usize, g: Padded) -> S2Parts {
    S2Parts(std::array::from_fn(|p| {
        let (a, b) = (p >> 1, p & 1);
        let taps: Vec<(usize, usize)> = (0..2 - a).flat_map(|m| (0..2 - b).map(move |n| (m, n))).collect();
        let mut off = [0; 9];
        for (t, &(m, n)) in taps.iter().enumerate() {
            off[t] = (1 - m) * g.wp() + (1 - n);
        }
        let nt = taps.len();
        let mut w = vec![0.0f32; c * co * nt];
        for ci in 0..c {
            for o in 0..co {
                for (t, &(m, n)) in taps.iter().enumerate() {
                    w[(ci * co + o) * nt + t] = wt[(o * c + ci) * 9 + (a + 2 * m) * 3 + b + 2 * n];
                }
            }
        }
        (w, off, nt)
    }))
}

/// `dx (c x h x w) += ` the input gradient of the stride-2 convolution for one image, from its
/// padded output gradient `gp` (`co` planes `cs` apart, [`pad_chunk`] of the output size), part by
/// part: each part is the tile kernel over the output-gradient planes (on a grid of `h/2 + 1` rows)
/// with that part's taps, added into every other column of every other row of `dx`.
#[allow(clippy::too_many_arguments)]
pub fn conv3x3_s2_input_grad(
    gp: &[f32],
    (co, cs): (usize, usize),
    parts: &S2Parts,
    c: usize,
    (h, w): (usize, usize),
    dx: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    assert!(s2_applies(h, w) && dx.len() >= c * h * w);
    let g = Padded { h: h / 2, w: w / 2 };
    let grid = Padded { h: g.h + 1, w: g.w };
    let (wp, ql) = (g.wp(), grid.q_len());
    for (p, (wts, off, nt)) in parts.0.iter().enumerate() {
        let (a, b) = (p >> 1, p & 1);
        let sc = tiles(gp, (co, cs), grid, (*off, *nt), (wts, c), scratch);
        for (src, dxc) in sc.chunks_exact(ql).zip(dx.chunks_exact_mut(h * w)) {
            for i in 0..=g.h {
                // Input row 2i + a - 1, columns 2j + b - 1.
                let y = (2 * i + a).wrapping_sub(1);
                if y >= h {
                    continue;
                }
                let (row, s) = (&mut dxc[y * w..(y + 1) * w], &src[i * wp..(i + 1) * wp]);
                if b == 1 {
                    row.iter_mut().step_by(2).zip(s).for_each(|(d, v)| *d += v);
                } else {
                    row[1..].iter_mut().step_by(2).zip(&s[1..]).for_each(|(d, v)| *d += v);
                }
            }
        }
    }
}

/// Zeros after the last row of a flat layout ([`conv1x1_flat`]): the kernel's last tile reads up
/// to a whole tile (at most 6 vectors of 16) past a row's `n` positions.
pub const FLAT_SLACK: usize = 96;

/// The row length of a flat layout of `n` positions ([`gather_flat`]): whole cache lines and one
/// more, so that rows are never a multiple of 4 KiB apart (at 16 images of 16x16, 16 KiB: the
/// GEMM's packing of the weight gradient's operands, reading down such rows, hit the same cache
/// sets and took 4 times as long).
pub fn flat_stride(n: usize) -> usize {
    n.next_multiple_of(16) + 16
}

/// The input of the 1x1 / stride 2 / no padding convolutions over a chunk of images: the even
/// rows and columns `x[ci][2y][2x]` of the `nb` images `x` (NCHW, `c x h x w`), channel major,
/// `nb * ho * wo` positions a row (`ho x wo` = `ceil(h/2) x ceil(w/2)`; image `bi`'s sample `(y,
/// x)` at `bi * ho * wo + y * wo + x`), rows [`flat_stride`] apart, then [`FLAT_SLACK`] zeros.
pub fn even_samples<'b>(
    x: &[f32],
    (nb, c): (usize, usize),
    (h, w): (usize, usize),
    buf: &'b mut Vec<f32>,
) -> &'b [f32] {
    let (ho, wo) = (h.div_ceil(2), w.div_ceil(2));
    assert!(x.len() >= nb * c * h * w, "even_samples: {} values for {nb} x {c} x {h} x {w}", x.len());
    flat_rows((nb, c), ho * wo, buf, |ci, bi, dst| {
        let xs = &x[(bi * c + ci) * h * w..(bi * c + ci + 1) * h * w];
        for (y, row) in dst.chunks_exact_mut(wo).enumerate() {
            row.iter_mut().zip(xs[2 * y * w..].iter().step_by(2)).for_each(|(d, &v)| *d = v);
        }
    })
}

/// The planes of `nb` images (`x` NCHW, `c` planes of `hw` values each) channel major, `nb * hw`
/// positions a row, rows [`flat_stride`] apart, then [`FLAT_SLACK`] zeros: the layout
/// [`conv1x1_flat`] reads.
pub fn gather_flat<'b>(x: &[f32], (nb, c): (usize, usize), hw: usize, buf: &'b mut Vec<f32>) -> &'b [f32] {
    assert!(x.len() >= nb * c * hw, "gather_flat: {} values for {nb} x {c} x {hw}", x.len());
    flat_rows((nb, c), hw, buf, |ci, bi, dst| dst.copy_from_slice(&x[(bi * c + ci) * hw..][..hw]))
}

/// `c` rows of `nb` planes of `hw` values, plane `(ci, bi)` written by `fill` (every value), rows
/// [`flat_stride`] apart from a 64-byte line; the gaps between rows and [`FLAT_SLACK`] values after
/// the last are zero.
fn flat_rows(
    (nb, c): (usize, usize),
    hw: usize,
    buf: &mut Vec<f32>,
    fill: impl Fn(usize, usize, &mut [f32]),
) -> &[f32] {
    let (n, rs) = (nb * hw, flat_stride(nb * hw));
    let buf = aligned(buf, c * rs + FLAT_SLACK, 0);
    for (ci, row) in buf.chunks_exact_mut(rs).take(c).enumerate() {
        for (bi, plane) in row[..n].chunks_exact_mut(hw).enumerate() {
            fill(ci, bi, plane);
        }
        row[n..].fill(0.0);
    }
    buf[c * rs..].fill(0.0);
    buf
}

/// The 1x1 convolution (a matrix product) over `n` positions of `c` input rows, row `ci` at `ci *
/// cstride` of `xs` (at least [`FLAT_SLACK`] values after the last row's `n`): `s[o][q] = sum_ci wt[o * c + ci] *
/// xs[ci * cstride + q]` for `q < n`, on the tile kernel (one tap, the positions as one row). Into
/// `scratch`; returns the sums and their row length (`ql >= n`, the values past `n` undefined).
pub fn conv1x1_flat<'s>(
    xs: &[f32],
    (c, cstride, n): (usize, usize, usize),
    (wt, co): (&[f32], usize),
    scratch: &'s mut Vec<f32>,
) -> (&'s [f32], usize) {
    assert!(n > 0 && cstride >= n, "conv1x1_flat: {n} positions, rows {cstride} apart");
    let g = Padded { h: 1, w: n - 1 };
    assert!(g.q_len() - n <= FLAT_SLACK);
    (tiles(xs, (c, cstride), g, ([0; 9], 1), (wt, co), scratch), g.q_len())
}

/// Writes one image's output (`co` planes of `hw`) from sums laid out `[co][ql]` (the image's first
/// value at `s[0]`, its channel `o` at `o * ql`), each value through the epilogue (as
/// [`conv3x3_into`]); `out` need not be initialised.
pub fn unpad_flat(s: &[f32], (co, ql): (usize, usize), hw: usize, out: &mut [MaybeUninit<f32>], epilogue: Epilogue) {
    unpad_rows(s, Sums { co, h: 1, w: hw, ql, wp: hw }, out, epilogue);
}

/// Offsets of the 9 taps of the stride-2 convolution on a channel's four polyphase planes of the
/// output size `g`: tap `(ky, kx)` reads phase `(ky % 2, kx % 2)` shifted by `(ky / 2, kx / 2)`.
fn s2_taps(g: Padded) -> [usize; 9] {
    std::array::from_fn(|t| {
        let (ky, kx) = (t / 3, t % 3);
        ((ky & 1) * 2 + (kx & 1)) * g.plane() + (ky >> 1) * g.wp() + (kx >> 1)
    })
}

/// The four polyphase planes of each zero-padded channel of the `nb` images `x` (NCHW, see
/// [`conv3x3_s2`]), as padded planes of the output size: image `bi`'s channel `ci`, phase
/// `a * 2 + b` at `((ci * 4 + a * 2 + b) * nb + bi) * plane`, every value of every plane written
/// (data or zero), then a zero tail for the last tile's reads. The even and odd columns of a channel are
/// split first in one long loop (which vectorises), then each phase row is one contiguous copy.
pub fn split_phases<'b>(
    x: &[f32],
    (nb, c): (usize, usize),
    (h, w): (usize, usize),
    buf: &'b mut Vec<f32>,
    eo: &mut Vec<f32>,
) -> &'b [f32] {
    let g = Padded { h: h / 2, w: w / 2 };
    let (ho, wo, wp, plane) = (g.h, g.w, g.wp(), g.plane());
    let buf = aligned(buf, 4 * c * nb * plane + g.q_len() + wp + 2, 0);
    if eo.len() < h * w {
        eo.resize(h * w, 0.0);
    }
    let (ev, od) = eo[..h * w].split_at_mut(h * wo);
    for (ci, bi) in (0..c).flat_map(|ci| (0..nb).map(move |bi| (ci, bi))) {
        let xs = &x[(bi * c + ci) * h * w..(bi * c + ci + 1) * h * w];
        for ((e, o), pair) in ev.iter_mut().zip(od.iter_mut()).zip(xs.chunks_exact(2)) {
            *e = pair[0];
            *o = pair[1];
        }
        for p in 0..4 {
            let ph = &mut buf[((ci * 4 + p) * nb + bi) * plane..((ci * 4 + p) * nb + bi + 1) * plane];
            let (a, b) = (p >> 1, p & 1);
            for (i, row) in ph.chunks_exact_mut(wp).enumerate() {
                // Input row 2i + a - 1; phase column j is input column 2j + b - 1.
                let y = (2 * i + a).wrapping_sub(1);
                if i > ho || y >= h {
                    row.fill(0.0);
                } else if b == 1 {
                    row[..wo].copy_from_slice(&ev[y * wo..(y + 1) * wo]);
                    row[wo] = 0.0;
                } else {
                    row[0] = 0.0;
                    row[1..].copy_from_slice(&od[y * wo..(y + 1) * wo]);
                }
            }
        }
    }
    buf[4 * c * nb * plane..].fill(0.0);
    buf
}

/// [`unpad`] into memory that need not be initialised, each value through the epilogue (compiled
/// for the CPU's widest vectors: [`super::cpu::multiversioned`]).
fn unpad_into(s: &[f32], co: usize, g: Padded, out: &mut [MaybeUninit<f32>], epilogue: Epilogue) {
    unpad_rows(s, Sums { co, h: g.h, w: g.w, ql: g.q_len(), wp: g.wp() }, out, epilogue);
}

/// Where a kernel left its sums: `co` planes of `h x w` values, the planes `ql` apart, their rows
/// `wp` apart.
#[derive(Clone, Copy)]
struct Sums {
    co: usize,
    h: usize,
    w: usize,
    ql: usize,
    wp: usize,
}

/// [`unpad_into`] of sums laid out as `at` says.
fn unpad_rows(s: &[f32], at: Sums, out: &mut [MaybeUninit<f32>], (bias, relu, sums): Epilogue) {
    let Sums { co, h, w, ql, wp } = at;
    super::cpu::multiversioned(
        #[inline(always)]
        || {
            assert!(out.len() >= co * h * w);
            assert!(co == 0 || s.len() >= (co - 1) * ql + (h - 1) * wp + w);
            assert!(sums.is_none() || (bias.is_none() && !relu), "plane sums are of the plain convolution only");
            if let Some(sums) = sums {
                return unpad_summed(s, at, out, sums);
            }
            for o in 0..co {
                for y in 0..h {
                    let src = &s[o * ql + y * wp..o * ql + y * wp + w];
                    let dst = out[(o * h + y) * w..(o * h + y + 1) * w].iter_mut().zip(src);
                    match (bias.map(|b| b[o]), relu) {
                        (None, false) => dst.for_each(|(d, &v)| _ = d.write(v)),
                        (None, true) => dst.for_each(|(d, &v)| _ = d.write(v.max(0.0))),
                        (Some(b), false) => dst.for_each(|(d, &v)| _ = d.write(v + b)),
                        (Some(b), true) => dst.for_each(|(d, &v)| _ = d.write((v + b).max(0.0))),
                    }
                }
            }
        },
    )
}

/// [`unpad_rows`] without bias and ReLU, with each channel's `(sum, sum of squares)` into `sums`:
/// 16 f32 lanes per channel, kept in registers across the rows and flushed into f64 about every
/// 1,024 values (as the batch norm's own sums).
#[inline(always)]
fn unpad_summed(s: &[f32], at: Sums, out: &mut [MaybeUninit<f32>], sums: &mut [(f64, f64)]) {
    let Sums { co, h, w, ql, wp } = at;
    let flush_rows = (1024 / w.max(1)).max(1);
    let total = |a: &[f32; 16]| a.iter().map(|&v| v as f64).sum::<f64>();
    for (o, sum) in sums.iter_mut().enumerate().take(co) {
        let (mut a, mut b, mut a64, mut b64) = ([0.0f32; 16], [0.0f32; 16], 0.0f64, 0.0f64);
        for y in 0..h {
            let src = &s[o * ql + y * wp..o * ql + y * wp + w];
            let dst = &mut out[(o * h + y) * w..(o * h + y + 1) * w];
            dst.iter_mut().zip(src).for_each(|(d, &v)| _ = d.write(v));
            // Rows longer than 1,024 values (a flat layout's one row per plane) flush per 1,024.
            for piece in src.chunks(1024) {
                let mut it = piece.chunks_exact(16);
                for c in &mut it {
                    for l in 0..16 {
                        a[l] += c[l];
                        b[l] += c[l] * c[l];
                    }
                }
                for (l, &v) in it.remainder().iter().enumerate() {
                    a[l] += v;
                    b[l] += v * v;
                }
                if w > 1024 {
                    (a64, b64) = (a64 + total(&a), b64 + total(&b));
                    (a, b) = ([0.0; 16], [0.0; 16]);
                }
            }
            if w <= 1024 && (y + 1) % flush_rows == 0 {
                (a64, b64) = (a64 + total(&a), b64 + total(&b));
                (a, b) = ([0.0; 16], [0.0; 16]);
            }
        }
        *sum = (a64 + total(&a), b64 + total(&b));
    }
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
/// the CPU has neither AVX-512 nor AVX2 + FMA (the caller falls back to one GEMM per tap). With
/// AVX2 (16 registers) a pass holds 4 output channels x the 3 taps of one kernel row instead, one
/// pass per row.
#[allow(clippy::too_many_arguments)]
pub fn conv3x3_weight_grad(xp: &[f32], gp: &[f32], c: usize, co: usize, nb: usize, g: Padded, dw: &mut [f32]) -> bool {
    weight_grad(xp, gp, (c, co, nb), g, false, dw)
}

/// [`conv3x3_weight_grad`] of the stride-2 convolution: `xp` holds the input's polyphase planes
/// ([`split_phases`] of the `nb` images), `gp` the padded output gradient (`g` = output size).
pub fn conv3x3_s2_weight_grad(
    xp: &[f32],
    gp: &[f32],
    c: usize,
    co: usize,
    nb: usize,
    g: Padded,
    dw: &mut [f32],
) -> bool {
    weight_grad(xp, gp, (c, co, nb), g, true, dw)
}

fn weight_grad(
    xp: &[f32],
    gp: &[f32],
    (c, co, nb): (usize, usize, usize),
    g: Padded,
    s2: bool,
    dw: &mut [f32],
) -> bool {
    // Positions are taken in segments whose input planes (all `c` channels) fit in half the L2
    // cache, so the passes of every output channel re-read them from L2, not from L3 or memory.
    let per = if s2 { 4 * c } else { c };
    let seg = (super::cpu::cache_bytes(2, 512 << 10) / 2 / (4 * (per + 3))).max(128);
    super::cpu::arch().dispatch(simd::WeightGrad { xp, gp, c, co, nb, g, s2, dw, seg })
}

/// Offsets of the 9 taps on the padded grid.
pub fn taps(g: Padded) -> [usize; 9] {
    let wp = g.wp();
    [0, 1, 2, wp, wp + 1, wp + 2, 2 * wp, 2 * wp + 1, 2 * wp + 2]
}

#[allow(clippy::too_many_arguments)]
fn portable(
    xp: &[f32],
    c: usize,
    cstride: usize,
    g: Padded,
    (off, nt): ([usize; 9], usize),
    wt: &[f32],
    co: usize,
    s: &mut [f32],
) {
    let ql = g.q_len();
    for o in 0..co {
        let acc = &mut s[o * ql..(o + 1) * ql];
        acc.fill(0.0);
        for ci in 0..c {
            let base = &xp[ci * cstride..];
            for (t, &d) in off[..nt].iter().enumerate() {
                let w = wt[(o * c + ci) * nt + t];
                let src = &base[d..d + ql];
                acc.iter_mut().zip(src).for_each(|(a, x)| *a += w * x);
            }
        }
    }
}

/// The register-blocked kernels, written once over `pulp`'s [`Simd`] vectors and instantiated by
/// [`pulp::Arch`]'s run-time dispatch for AVX-512 (16 lanes) and AVX2 + FMA (8 lanes); narrower
/// vectors decline (the callers then run [`portable`] or the GEMM fallback).
mod simd {
    use pulp::{Simd, WithSimd};

    use super::{Padded, CB};

    /// Unaligned load of one vector at `p`.
    ///
    /// # Safety
    /// `p..p + lanes` must be readable.
    #[inline(always)]
    unsafe fn load<S: Simd>(p: *const f32) -> S::f32s {
        p.cast::<S::f32s>().read_unaligned()
    }

    /// Forward tile kernel (see [`super::conv3x3`]); `true` when it ran. With `taps = (off, nt)`,
    /// tap `t < nt` of channel `ci` and output position `q` reads `xp[ci * plane + off[t] + q]`,
    /// weighted by `wt[(o * c + ci) * nt + t]`.
    pub(super) struct Conv<'a> {
        pub xp: &'a [f32],
        pub c: usize,
        pub plane: usize,
        pub g: Padded,
        pub taps: ([usize; 9], usize),
        pub wt: &'a [f32],
        pub co: usize,
        pub s: &'a mut [f32],
    }

    impl WithSimd for Conv<'_> {
        type Output = bool;

        #[inline(always)]
        fn with_simd<S: Simd>(self, simd: S) -> bool {
            let Conv { xp, c, plane, g, taps: (off, nt), wt, co, s } = self;
            let ql = g.q_len();
            assert!((1..=9).contains(&nt));
            assert!(xp.len() >= (c - 1) * plane + ql + off[..nt].iter().max().expect("a tap"));
            assert!(wt.len() >= co * c * nt && s.len() >= co * ql);
            let a = Args { xp: xp.as_ptr(), c, plane, off, nt, wt: wt.as_ptr(), ql, s: s.as_mut_ptr() };
            // SAFETY (all arms): a tile reads `xp[ci * plane + q0 + off[t] ..][..step]` with
            // `q0 + step <= ql`, inside the length asserted above, and writes `s[o * ql + q0..][..step]`.
            unsafe {
                // `T = 9`: the 3x3 taps, a constant loop bound; `T = 0`: `nt` taps (the input
                // gradient's polyphase parts).
                match (S::F32_LANES, g.tile_vectors(), nt) {
                    // A tile of 16 x V positions: V vectors x 4 channels = up to 24 of 32 registers.
                    (16, 6, 9) => run::<S, 6, 9>(simd, &a, co),
                    (16, 5, 9) => run::<S, 5, 9>(simd, &a, co),
                    (16, _, 9) => run::<S, 4, 9>(simd, &a, co),
                    (16, 6, _) => run::<S, 6, 0>(simd, &a, co),
                    (16, 5, _) => run::<S, 5, 0>(simd, &a, co),
                    (16, _, _) => run::<S, 4, 0>(simd, &a, co),
                    // 16 registers: 2 vectors x 4 channels of accumulators, 4 weights, 1 input.
                    (8, _, 9) => run::<S, 2, 9>(simd, &a, co),
                    (8, _, _) => run::<S, 2, 0>(simd, &a, co),
                    _ => return false,
                }
            }
            true
        }
    }

    struct Args {
        xp: *const f32,
        c: usize,
        plane: usize,
        off: [usize; 9],
        nt: usize,
        wt: *const f32,
        ql: usize,
        s: *mut f32,
    }

    #[inline(always)]
    unsafe fn run<S: Simd, const V: usize, const T: usize>(simd: S, a: &Args, co: usize) {
        let full = co / CB * CB;
        for o0 in (0..full).step_by(CB) {
            block::<S, CB, V, T>(simd, a, o0);
        }
        for o0 in full..co {
            block::<S, 1, V, T>(simd, a, o0);
        }
    }

    /// `NB` output channels starting at `o0`, all tiles of `V` vectors; accumulators stay in
    /// registers because every loop bound is a constant.
    #[inline(always)]
    #[allow(clippy::needless_range_loop)]
    unsafe fn block<S: Simd, const NB: usize, const V: usize, const T: usize>(simd: S, a: &Args, o0: usize) {
        let (lanes, nt) = (S::F32_LANES, if T > 0 { T } else { a.nt });
        for q0 in (0..a.ql).step_by(lanes * V) {
            let mut acc = [[simd.splat_f32s(0.0); V]; NB];
            for ci in 0..a.c {
                let xb = a.xp.add(ci * a.plane + q0);
                let wrow = a.wt.add((o0 * a.c + ci) * nt);
                for t in 0..nt {
                    let p = xb.add(a.off[t]);
                    let w: [S::f32s; NB] = std::array::from_fn(|b| simd.splat_f32s(*wrow.add(b * a.c * nt + t)));
                    for v in 0..V {
                        let xv = load::<S>(p.add(lanes * v));
                        for b in 0..NB {
                            acc[b][v] = simd.mul_add_f32s(w[b], xv, acc[b][v]);
                        }
                    }
                }
            }
            for b in 0..NB {
                let dst = a.s.add((o0 + b) * a.ql + q0);
                for v in 0..V {
                    dst.add(lanes * v).cast::<S::f32s>().write_unaligned(acc[b][v]);
                }
            }
        }
    }

    /// Weight-gradient kernel (see [`super::conv3x3_weight_grad`]); `true` when it ran.
    pub(super) struct WeightGrad<'a> {
        pub xp: &'a [f32],
        pub gp: &'a [f32],
        pub c: usize,
        pub co: usize,
        pub nb: usize,
        pub g: Padded,
        /// Stride 2: `xp` holds polyphase planes (four per channel), see [`super::split_phases`].
        pub s2: bool,
        pub dw: &'a mut [f32],
        /// Positions per segment (rounded up to whole vectors).
        pub seg: usize,
    }

    impl WithSimd for WeightGrad<'_> {
        type Output = bool;

        #[inline(always)]
        fn with_simd<S: Simd>(self, simd: S) -> bool {
            let WeightGrad { xp, gp, c, co, nb, g, s2, dw, seg } = self;
            // Each channel's loop covers `nb * plane` positions (the tail is a partial load that
            // reads no element past that), shifted by at most `wp + 1` in `gp` and `2 * wp + 2` in
            // `xp` (stride 2: `3 * len` in the channel's four phases of `len`): the slack of
            // `pad_chunk`'s and `split_phases`'s buffers.
            let (len, wp) = (nb * g.plane(), g.wp());
            let xlen = if s2 { 4 * c * len + 1 } else { c * len + 2 * wp + 2 };
            assert!(gp.len() > co * len + wp && xp.len() >= xlen && dw.len() >= c * 9 * co);
            // Output channels per pass: their 9 x NO accumulators must fit the register file.
            let wide = match S::F32_LANES {
                16 => true,
                8 => false,
                _ => return false,
            };
            let seg = seg.clamp(1, len.max(1)).div_ceil(S::F32_LANES) * S::F32_LANES;
            for lo in (0..len).step_by(seg) {
                let hi = (lo + seg).min(len);
                let mut o0 = 0;
                while o0 < co {
                    // 32 registers: blocks of 3 output channels x 9 taps (27 accumulators), 4 left
                    // over become 2 + 2. 16 registers: blocks of 4 output channels x the 3 taps of
                    // one kernel row (12 accumulators, the row's 3 inputs), one pass per row: 7 loads
                    // per 12 FMAs instead of 10 per 9 with one channel x 9 taps.
                    let nbk = match co - o0 {
                        r if !wide => r.min(4),
                        1 => 1,
                        2 | 4 => 2,
                        _ => 3,
                    };
                    for i in 0..c {
                        // SAFETY: the reads stay within the lengths asserted above (see the comment).
                        unsafe {
                            let args = (xp.as_ptr(), gp.as_ptr(), i, o0, (len, lo, hi), g, dw.as_mut_ptr(), co);
                            match (wide, nbk, s2) {
                                (true, 3, false) => wg_block::<S, 3, false>(simd, args),
                                (true, 2, false) => wg_block::<S, 2, false>(simd, args),
                                (true, _, false) => wg_block::<S, 1, false>(simd, args),
                                (true, 3, true) => wg_block::<S, 3, true>(simd, args),
                                (true, 2, true) => wg_block::<S, 2, true>(simd, args),
                                (true, _, true) => wg_block::<S, 1, true>(simd, args),
                                (false, n, false) => {
                                    for ky in 0..3 {
                                        match n {
                                            4 => wg_row::<S, 4, false>(simd, args, ky),
                                            3 => wg_row::<S, 3, false>(simd, args, ky),
                                            2 => wg_row::<S, 2, false>(simd, args, ky),
                                            _ => wg_row::<S, 1, false>(simd, args, ky),
                                        }
                                    }
                                }
                                (false, n, true) => {
                                    for ky in 0..3 {
                                        match n {
                                            4 => wg_row::<S, 4, true>(simd, args, ky),
                                            3 => wg_row::<S, 3, true>(simd, args, ky),
                                            2 => wg_row::<S, 2, true>(simd, args, ky),
                                            _ => wg_row::<S, 1, true>(simd, args, ky),
                                        }
                                    }
                                }
                            }
                        }
                    }
                    o0 += nbk;
                }
            }
            true
        }
    }

    /// One vector of positions `q..` of [`wg_block`], read through `ld`. The accumulators go in and
    /// come out by value: through a `&mut` LLVM kept a stack copy of all 27 (AVX-512, 3 channels)
    /// and stored each one after its FMA, 27 vector stores per 27 FMAs (12 % of peak on Intel).
    #[inline(always)]
    #[allow(clippy::needless_range_loop)]
    unsafe fn wg_step<S: Simd, const NO: usize>(
        simd: S,
        mut acc: [[S::f32s; 9]; NO],
        (rows, cx): ([*const f32; 3], [usize; 3]),
        gb: &[*const f32; NO],
        q: usize,
        ld: impl Fn(*const f32) -> S::f32s,
    ) -> [[S::f32s; 9]; NO] {
        let gv: [S::f32s; NO] = std::array::from_fn(|o| ld(gb[o].add(q)));
        for ky in 0..3 {
            for kx in 0..3 {
                let xv = ld(rows[ky].add(q + cx[kx]));
                for o in 0..NO {
                    acc[o][ky * 3 + kx] = simd.mul_add_f32s(gv[o], xv, acc[o][ky * 3 + kx]);
                }
            }
        }
        acc
    }

    /// The three kernel rows' pointers for input channel `i` and the column offsets of the three
    /// taps of a row: on padded planes (`[0, 1, 2]` from rows `wp` apart) or, with `S2`, on a
    /// channel's four polyphase planes of `len` (tap `(ky, kx)` reads phase `(ky % 2, kx % 2)`
    /// shifted by `(ky / 2, kx / 2)`).
    #[inline(always)]
    unsafe fn tap_rows<const S2: bool>(
        xp: *const f32,
        i: usize,
        len: usize,
        wp: usize,
    ) -> ([*const f32; 3], [usize; 3]) {
        if S2 {
            let xb = xp.add(4 * i * len);
            ([xb, xb.add(2 * len), xb.add(wp)], [0, len, 1])
        } else {
            let xb = xp.add(i * len);
            ([xb, xb.add(wp), xb.add(2 * wp)], [0, 1, 2])
        }
    }

    /// `(xp, gp, i, o0, (len, lo, hi), g, dw, co)`: positions `lo..hi` of the `len` of each channel.
    type WgArgs = (*const f32, *const f32, usize, usize, (usize, usize, usize), Padded, *mut f32, usize);

    /// Weight gradient of input channel `i` and output channels `o0..o0 + NO` over positions
    /// `lo..hi` of the channel's `nb` consecutive padded planes (`len` positions; `lo` is a whole
    /// number of vectors, the zero rows and columns of `gp` mask the positions outside the images),
    /// the taps read through three row pointers with constant column offsets, the 9 x NO
    /// accumulators in vector registers, added to `dw` at the end.
    #[inline(always)]
    #[allow(clippy::needless_range_loop)]
    unsafe fn wg_block<S: Simd, const NO: usize, const S2: bool>(
        simd: S,
        (xp, gp, i, o0, (len, lo, hi), g, dw, co): WgArgs,
    ) {
        let (wp, lanes) = (g.wp(), S::F32_LANES);
        let full = lo + (hi - lo) / lanes * lanes;
        let rows = tap_rows::<S2>(xp, i, len, wp);
        let gb: [*const f32; NO] = std::array::from_fn(|o| gp.add((o0 + o) * len + wp + 1));
        let mut acc = [[simd.splat_f32s(0.0); 9]; NO];
        for q in (lo..full).step_by(lanes) {
            acc = wg_step(simd, acc, rows, &gb, q, |p| load::<S>(p));
        }
        if full < hi {
            let n = hi - full;
            acc = wg_step(simd, acc, rows, &gb, full, |p| simd.partial_load_f32s(std::slice::from_raw_parts(p, n)));
        }
        for o in 0..NO {
            for t in 0..9 {
                *dw.add((i * 9 + t) * co + o0 + o) += simd.reduce_sum_f32s(acc[o][t]);
            }
        }
    }

    /// One vector of positions `q..` of [`wg_row`], read through `ld`.
    #[inline(always)]
    #[allow(clippy::needless_range_loop)]
    unsafe fn wg_row_step<S: Simd, const NO: usize>(
        simd: S,
        acc: &mut [[S::f32s; 3]; NO],
        (row, cx): (*const f32, [usize; 3]),
        gb: &[*const f32; NO],
        q: usize,
        ld: impl Fn(*const f32) -> S::f32s,
    ) {
        let xv: [S::f32s; 3] = std::array::from_fn(|kx| ld(row.add(q + cx[kx])));
        for o in 0..NO {
            let gv = ld(gb[o].add(q));
            for kx in 0..3 {
                acc[o][kx] = simd.mul_add_f32s(gv, xv[kx], acc[o][kx]);
            }
        }
    }

    /// [`wg_block`] for the 3 taps of kernel row `ky` only, with `NO` output channels: per vector
    /// the row's 3 shifted inputs are loaded once, then each channel's gradient is loaded and
    /// multiplied with all three (12 accumulators at `NO` = 4 fit 16 registers with the inputs).
    #[inline(always)]
    #[allow(clippy::needless_range_loop)]
    unsafe fn wg_row<S: Simd, const NO: usize, const S2: bool>(
        simd: S,
        (xp, gp, i, o0, (len, lo, hi), g, dw, co): WgArgs,
        ky: usize,
    ) {
        let (wp, lanes) = (g.wp(), S::F32_LANES);
        let full = lo + (hi - lo) / lanes * lanes;
        let (rows, cx) = tap_rows::<S2>(xp, i, len, wp);
        let row = (rows[ky], cx);
        let gb: [*const f32; NO] = std::array::from_fn(|o| gp.add((o0 + o) * len + wp + 1));
        let mut acc = [[simd.splat_f32s(0.0); 3]; NO];
        for q in (lo..full).step_by(lanes) {
            wg_row_step(simd, &mut acc, row, &gb, q, |p| load::<S>(p));
        }
        if full < hi {
            let n = hi - full;
            wg_row_step(simd, &mut acc, row, &gb, full, |p| simd.partial_load_f32s(std::slice::from_raw_parts(p, n)));
        }
        for o in 0..NO {
            for kx in 0..3 {
                *dw.add((i * 9 + ky * 3 + kx) * co + o0 + o) += simd.reduce_sum_f32s(acc[o][kx]);
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Runs a kernel on SIMD level `level` (0: AVX2 + FMA, 1: AVX-512) where this CPU has it, so
    /// both instantiations are checked on an AVX-512 machine, not only the one dispatch picks.
    #[cfg(target_arch = "x86_64")]
    fn on_level<K: pulp::WithSimd<Output = bool>>(level: usize, k: K) -> Option<bool> {
        use pulp::{x86, Simd};
        let ran = match level {
            0 => x86::V3::try_new().map(|s| Simd::vectorize(s, k)),
            _ => x86::V4::try_new().map(|s| Simd::vectorize(s, k)),
        };
        if level == 0 && is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            assert_eq!(ran, Some(true), "the AVX2 + FMA kernel must run on this CPU");
        }
        ran
    }

    /// The 3x3 / padding 1 convolution of one image by its definition, stride `s` (output
    /// `h/s x w/s`), summed in f64.
    fn naive(x: &[f32], (c, h, w): (usize, usize, usize), wt: &[f32], co: usize, s: usize) -> Vec<f32> {
        let (ho, wo) = (h / s, w / s);
        let mut out = vec![0.0; co * ho * wo];
        for o in 0..co {
            for y in 0..ho {
                for xx in 0..wo {
                    let mut acc = 0.0f64;
                    for ci in 0..c {
                        for t in 0..9 {
                            let (iy, ix) = ((s * y + t / 3) as isize - 1, (s * xx + t % 3) as isize - 1);
                            if iy >= 0 && iy < h as isize && ix >= 0 && ix < w as isize {
                                acc += (wt[(o * c + ci) * 9 + t] * x[(ci * h + iy as usize) * w + ix as usize]) as f64;
                            }
                        }
                    }
                    out[(o * ho + y) * wo + xx] = acc as f32;
                }
            }
        }
        out
    }

    /// `dw[o][i][ky][kx] = sum_b sum_(y,x) g[b][o][y][x] * x[b][i][s*y + ky - 1][s*x + kx - 1]`, the
    /// output gradient `gy` of `h/s x w/s` planes.
    pub(crate) fn naive_weight_grad(
        x: &[f32],
        gy: &[f32],
        (nb, c, co): (usize, usize, usize),
        (h, w): (usize, usize),
        s: usize,
    ) -> Vec<f64> {
        let (ho, wo) = (h / s, w / s);
        let mut want = vec![0.0f64; co * c * 9];
        for (b, o, i, t) in
            (0..nb).flat_map(|b| (0..co).flat_map(move |o| (0..c).flat_map(move |i| (0..9).map(move |t| (b, o, i, t)))))
        {
            for y in 0..ho {
                for xx in 0..wo {
                    let (iy, ix) = ((s * y + t / 3) as isize - 1, (s * xx + t % 3) as isize - 1);
                    if iy >= 0 && iy < h as isize && ix >= 0 && ix < w as isize {
                        want[(o * c + i) * 9 + t] += (gy[((b * co + o) * ho + y) * wo + xx]
                            * x[((b * c + i) * h + iy as usize) * w + ix as usize])
                            as f64;
                    }
                }
            }
        }
        want
    }

    /// Asserts that `dw` (`[(i * 9 + t) * co + o]`, less `base`) is `want` (`[(o * c + i) * 9 + t]`).
    pub(crate) fn check_weight_grad(dw: &[f32], base: f32, want: &[f64], (c, co): (usize, usize), what: &str) {
        for (o, i, t) in (0..co).flat_map(|o| (0..c).flat_map(move |i| (0..9).map(move |t| (o, i, t)))) {
            let (got, w) = (dw[(i * 9 + t) * co + o] - base, want[(o * c + i) * 9 + t] as f32);
            assert!((got - w).abs() < 1e-3 * (1.0 + w.abs()), "{what} c{c} co{co}: {got} vs {w}");
        }
    }

    /// `aligned` puts the requested element on a 64-byte boundary, whatever the buffer's own
    /// alignment and size, and `pad_chunk`'s result does not depend on where it lands.
    #[test]
    fn aligned_places_the_lead_on_a_cache_line() {
        let mut buf = Vec::new();
        for (len, lead) in [(10, 0), (100, 34), (5, 15), (1000, 16), (3, 1)] {
            let s = aligned(&mut buf, len, lead);
            assert_eq!(s.len(), len);
            assert_eq!((s.as_ptr() as usize + 4 * lead) % 64, 0, "len {len} lead {lead}");
        }
        let g = Padded { h: 3, w: 4 };
        let x: Vec<f32> = (0..2 * 3 * 12).map(|i| i as f32).collect();
        let (mut a, mut b) = (Vec::new(), vec![7.0f32; 3]);
        let first = pad_chunk(&x, 2, 3, g, &mut a, 0).to_vec();
        assert_eq!(pad_chunk(&x, 2, 3, g, &mut b, 5), &first[..]);
        assert_eq!(first[g.wp() + 1..g.wp() + 5], [0.0, 1.0, 2.0, 3.0]);
    }

    #[test]
    fn weight_grad_matches_naive() {
        for (c, co, h, w, nb) in
            [(3, 5, 7, 9, 2), (2, 4, 32, 32, 3), (4, 7, 8, 8, 1), (1, 1, 1, 1, 2), (2, 3, 5, 3, 4), (5, 4, 8, 8, 7)]
        {
            let x: Vec<f32> = (0..nb * c * h * w).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
            let gy: Vec<f32> = (0..nb * co * h * w).map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0).collect();
            let want = naive_weight_grad(&x, &gy, (nb, c, co), (h, w), 1);
            let g = Padded { h, w };
            let (mut xp, mut gp) = (Vec::new(), Vec::new());
            let xp = pad_chunk(&x, nb, c, g, &mut xp, 0);
            let gp = pad_chunk(&gy, nb, co, g, &mut gp, g.wp() + 1);
            let check = |dw: &[f32], what: &str| check_weight_grad(dw, 0.5, &want, (c, co), &format!("{what} {h}x{w}"));
            let mut dw = vec![0.5f32; c * 9 * co];
            // Without AVX2 the GEMM fallback runs instead, covered by the op's gradient checks.
            if conv3x3_weight_grad(xp, gp, c, co, nb, g, &mut dw) {
                check(&dw, "dispatched");
            }
            #[cfg(target_arch = "x86_64")]
            for level in 0..2 {
                // One segment, and segments of 1 to 4 vectors that end inside planes and images.
                for seg in [usize::MAX, 1, 24, 40] {
                    let mut dw = vec![0.5f32; c * 9 * co];
                    let k = simd::WeightGrad { xp, gp, c, co, nb, g, s2: false, dw: &mut dw, seg };
                    if on_level(level, k) == Some(true) {
                        check(&dw, &format!("{} segments of {seg}", ["avx2", "avx512"][level]));
                    }
                }
            }
        }
    }

    #[test]
    fn stride_two_matches_naive() {
        for (c, co, h, w) in [(3, 5, 6, 10), (16, 32, 32, 32), (5, 7, 2, 2), (32, 9, 16, 8)] {
            let x: Vec<f32> = (0..c * h * w).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
            let wt: Vec<f32> = (0..co * c * 9).map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0).collect();
            let (ho, wo) = (h / 2, w / 2);
            let want = naive(&x, (c, h, w), &wt, co, 2);
            let close = |got: &[f32], what: &str| {
                for (k, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert!((a - b).abs() < 1e-4, "{what} c{c} co{co} {h}x{w} at {k}: {a} vs {b}");
                }
            };
            let (mut buf, mut eo, mut sc) = (vec![f32::NAN; 7], vec![f32::NAN; 3], Vec::new());
            let mut uninit = vec![MaybeUninit::new(f32::NAN); co * ho * wo];
            conv3x3_s2(&x, c, (h, w), &wt, co, &mut uninit, (None, false, None), (&mut buf, &mut eo, &mut sc));
            // SAFETY: initialised (NaN) before, and every value written by the call.
            let mut out: Vec<f32> = uninit.iter().map(|v| unsafe { v.assume_init() }).collect();
            close(&out, "dispatched");
            // Each SIMD level and the portable loop on the same phase planes.
            let buf = split_phases(&x, (1, c), (h, w), &mut buf, &mut eo).to_vec();
            let g = Padded { h: ho, w: wo };
            let off = s2_taps(g);
            let mut port = vec![f32::NAN; co * g.q_len()];
            portable(&buf, c, 4 * g.plane(), g, (off, 9), &wt, co, &mut port);
            unpad(&port, co, g, &mut out, false);
            close(&out, "portable");
            #[cfg(target_arch = "x86_64")]
            for level in 0..2 {
                let mut sc = vec![f32::NAN; co * g.q_len()];
                let k = simd::Conv { xp: &buf, c, plane: 4 * g.plane(), g, taps: (off, 9), wt: &wt, co, s: &mut sc };
                if on_level(level, k) == Some(true) {
                    unpad(&sc, co, g, &mut out, false);
                    close(&out, ["avx2", "avx512"][level]);
                }
            }
        }
    }

    /// The flat product of the 1x1 / stride 2 convolution (ResNet shortcuts) on the tile kernel,
    /// over a chunk's even samples (even and odd sides) and over a part of their positions at an
    /// offset: dispatched, portable and each SIMD level, against the definition; then one image's
    /// output through [`unpad_flat`].
    #[test]
    fn flat_pointwise_matches_naive() {
        for (c, co, h, w, nb) in
            [(3, 5, 6, 10, 2), (16, 32, 32, 32, 1), (5, 7, 7, 5, 3), (2usize, 3usize, 1usize, 1usize, 2usize)]
        {
            let (ho, wo) = (h.div_ceil(2), w.div_ceil(2));
            let (hwo, n) = (ho * wo, nb * ho * wo);
            let x: Vec<f32> = (0..nb * c * h * w).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
            let wt: Vec<f32> = (0..co * c).map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0).collect();
            let at = |b: usize, ci: usize, y: usize, xx: usize| x[((b * c + ci) * h + y) * w + xx];
            // want[o][q]: output channel o at chunk position q (image q / hwo).
            let want: Vec<f32> = (0..co * n)
                .map(|k| {
                    let (o, q) = (k / n, k % n);
                    let (b, y, xx) = (q / hwo, q % hwo / wo, q % wo);
                    (0..c).map(|ci| (wt[o * c + ci] * at(b, ci, 2 * y, 2 * xx)) as f64).sum::<f64>() as f32
                })
                .collect();
            let what = format!("c{c} co{co} {h}x{w} x{nb}");
            let rs = flat_stride(n);
            let mut buf = vec![f32::NAN; 5];
            let xs = even_samples(&x, (nb, c), (h, w), &mut buf);
            assert_eq!(xs.len(), c * rs + FLAT_SLACK);
            // The positions from `q0` on (the input-gradient's part of a chunk), `m` of them.
            for (q0, m) in [(0, n), (hwo * (nb - 1), hwo)] {
                let close = |s: &[f32], ql: usize, how: &str| {
                    for (o, q) in (0..co).flat_map(|o| (0..m).map(move |q| (o, q))) {
                        let (a, b) = (s[o * ql + q], want[o * n + q0 + q]);
                        assert!((a - b).abs() < 1e-4, "{how} {what} from {q0} at {o},{q}: {a} vs {b}");
                    }
                };
                let mut sc = vec![f32::NAN; 3];
                let (s, ql) = conv1x1_flat(&xs[q0..], (c, rs, m), (&wt, co), &mut sc);
                close(s, ql, "dispatched");
                let g = Padded { h: 1, w: m - 1 };
                let mut port = vec![f32::NAN; co * g.q_len()];
                portable(&xs[q0..], c, rs, g, ([0; 9], 1), &wt, co, &mut port);
                close(&port, g.q_len(), "portable");
                #[cfg(target_arch = "x86_64")]
                for level in 0..2 {
                    let mut s = vec![f32::NAN; co * g.q_len()];
                    let k = simd::Conv { xp: &xs[q0..], c, plane: rs, g, taps: ([0; 9], 1), wt: &wt, co, s: &mut s };
                    if on_level(level, k) == Some(true) {
                        close(&s, g.q_len(), ["avx2", "avx512"][level]);
                    }
                }
            }
            // The last image's output planes, with bias and ReLU, from the chunk's sums.
            let mut sc = Vec::new();
            let (s, ql) = conv1x1_flat(xs, (c, rs, n), (&wt, co), &mut sc);
            let bias: Vec<f32> = (0..co).map(|o| o as f32 * 0.1 - 0.2).collect();
            let mut out = vec![MaybeUninit::new(f32::NAN); co * hwo];
            unpad_flat(&s[(nb - 1) * hwo..], (co, ql), hwo, &mut out, (Some(&bias), true, None));
            for (k, v) in out.iter().enumerate() {
                // SAFETY: initialised (NaN) before, and written by the call.
                let (o, q, v) = (k / hwo, k % hwo, unsafe { v.assume_init() });
                let want = (want[o * n + (nb - 1) * hwo + q] + bias[o]).max(0.0);
                assert!((v - want).abs() < 1e-4, "unpad_flat {what} at {k}: {v} vs {want}");
            }
        }
    }

    #[test]
    fn stride_two_weight_grad_matches_naive() {
        for (c, co, h, w, nb) in [(3, 5, 6, 10, 2), (16, 32, 32, 32, 3), (2, 4, 2, 2, 5), (5, 7, 16, 8, 1)] {
            let (ho, wo) = (h / 2, w / 2);
            let x: Vec<f32> = (0..nb * c * h * w).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
            let gy: Vec<f32> = (0..nb * co * ho * wo).map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0).collect();
            let want = naive_weight_grad(&x, &gy, (nb, c, co), (h, w), 2);
            let g = Padded { h: ho, w: wo };
            let (mut xp, mut eo, mut gp) = (Vec::new(), Vec::new(), Vec::new());
            let xp = split_phases(&x, (nb, c), (h, w), &mut xp, &mut eo);
            let gp = pad_chunk(&gy, nb, co, g, &mut gp, g.wp() + 1);
            let check = |dw: &[f32], what: &str| check_weight_grad(dw, 0.0, &want, (c, co), &format!("{what} {h}x{w}"));
            let mut dw = vec![0.0f32; c * 9 * co];
            if conv3x3_s2_weight_grad(xp, gp, c, co, nb, g, &mut dw) {
                check(&dw, "dispatched");
            }
            #[cfg(target_arch = "x86_64")]
            for level in 0..2 {
                for seg in [usize::MAX, 24] {
                    let mut dw = vec![0.0f32; c * 9 * co];
                    let k = simd::WeightGrad { xp, gp, c, co, nb, g, s2: true, dw: &mut dw, seg };
                    if on_level(level, k) == Some(true) {
                        check(&dw, &format!("{} segments of {seg}", ["avx2", "avx512"][level]));
                    }
                }
            }
        }
    }

    #[test]
    fn stride_two_input_grad_matches_naive() {
        for (c, co, h, w, nb) in [(3, 5, 6, 10, 2), (16, 32, 32, 32, 3), (2, 4, 2, 2, 1), (5, 7, 16, 8, 2)] {
            let (ho, wo) = (h / 2, w / 2);
            let wt: Vec<f32> = (0..co * c * 9).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
            let gy: Vec<f32> = (0..nb * co * ho * wo).map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0).collect();
            // dx[b][ci][2y + ky - 1][2x + kx - 1] += w[o][ci][ky][kx] * g[b][o][y][x]
            let mut want = vec![0.0f64; nb * c * h * w];
            for b in 0..nb {
                for o in 0..co {
                    for ci in 0..c {
                        for t in 0..9 {
                            for y in 0..ho {
                                for xx in 0..wo {
                                    let (iy, ix) = ((2 * y + t / 3) as isize - 1, (2 * xx + t % 3) as isize - 1);
                                    if iy >= 0 && iy < h as isize && ix >= 0 && ix < w as isize {
                                        want[((b * c + ci) * h + iy as usize) * w + ix as usize] +=
                                            (wt[(o * c + ci) * 9 + t] * gy[((b * co + o) * ho + y) * wo + xx]) as f64;
                                    }
                                }
                            }
                        }
                    }
                }
            }
            let g = Padded { h: ho, w: wo };
            let mut gp = Vec::new();
            let gp = pad_chunk(&gy, nb, co, g, &mut gp, g.wp() + 1);
            let parts = s2_parts(&wt, co, c, g);
            // Added onto 1.
            let mut dx = vec![1.0f32; nb * c * h * w];
            let mut sc = Vec::new();
            for (b, dxb) in dx.chunks_mut(c * h * w).enumerate() {
                conv3x3_s2_input_grad(&gp[b * g.plane()..], (co, nb * g.plane()), &parts, c, (h, w), dxb, &mut sc);
            }
            for (k, (a, b)) in dx.iter().zip(&want).enumerate() {
                assert!((*a as f64 - 1.0 - b).abs() < 1e-4, "c{c} co{co} {h}x{w} at {k}: {a} vs 1 + {b}");
            }
            // Each part's taps (1, 2 or 4: the kernel's run-time tap count) on each SIMD level, against
            // the portable loop.
            let grid = Padded { h: ho + 1, w: wo };
            for (wts, off, nt) in &parts.0 {
                let mut port = vec![0.0; c * grid.q_len()];
                portable(gp, co, nb * g.plane(), grid, (*off, *nt), wts, c, &mut port);
                #[cfg(target_arch = "x86_64")]
                for level in 0..2 {
                    let mut sc = vec![f32::NAN; c * grid.q_len()];
                    let k = simd::Conv {
                        xp: gp,
                        c: co,
                        plane: nb * g.plane(),
                        g: grid,
                        taps: (*off, *nt),
                        wt: wts,
                        co: c,
                        s: &mut sc,
                    };
                    if on_level(level, k) == Some(true) {
                        for (a, b) in sc.iter().zip(&port) {
                            assert!((a - b).abs() < 1e-4, "level {level}, {nt} taps: {a} vs {b}");
                        }
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
            let xp = pad_planes((&x, None), c, g, &mut xp);
            let mut out = vec![0.0; co * h * w];
            let mut s = Vec::new();
            conv3x3(xp, c, g.plane(), g, &wt, co, &mut out, false, &mut s);
            let want = naive(&x, (c, h, w), &wt, co, 1);
            for (a, b) in out.iter().zip(&want) {
                assert!((a - b).abs() < 1e-4, "{a} vs {b}");
            }
            #[cfg(target_arch = "x86_64")]
            for level in 0..2 {
                let mut sc = vec![f32::NAN; co * g.q_len()];
                let k = simd::Conv { xp, c, plane: g.plane(), g, taps: (taps(g), 9), wt: &wt, co, s: &mut sc };
                if on_level(level, k) == Some(true) {
                    let mut o = vec![0.0; co * h * w];
                    unpad(&sc, co, g, &mut o, false);
                    for (a, b) in o.iter().zip(&want) {
                        assert!((a - b).abs() < 1e-4, "level {level}: {a} vs {b}");
                    }
                }
            }
            let mut port = vec![0.0; co * g.q_len()];
            portable(xp, c, g.plane(), g, (taps(g), 9), &wt, co, &mut port);
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
            let chunk = pad_chunk(&three, 3, c, g, &mut chunk, 0);
            let mut out3 = vec![0.0; co * h * w];
            conv3x3(&chunk[g.plane()..], c, 3 * g.plane(), g, &wt, co, &mut out3, false, &mut s);
            for (a, b) in out3.iter().zip(&want) {
                assert!((a - b).abs() < 1e-4);
            }
        }
    }
}
