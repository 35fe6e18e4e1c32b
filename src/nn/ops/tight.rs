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
//!   masks of the tile's left and right taps, 2 inputs and a broadcast) on tight planes; where rows
//!   are whole vectors (`w` a multiple of 8), the layers read padded-grid planes instead
//!   ([`Planes`]: rows of `w` values and at least one zero, to a multiple of 8), where no tap needs
//!   a mask, and the tiles are 6 x 2 (12 accumulators).
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

use super::bn_grad::DeferredGrad;
use super::cpu;
use super::deferred::{copy_plane, Deferred};
use super::direct::{self, aligned};
use super::tight_kernel::Mode;
#[cfg(target_arch = "x86_64")]
use super::tight_kernel::{channels16, channels8, Args};

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
    let hw = h * w;
    tight_planes((b, c), (h, w), buf, |ci, bi, dst| copy_plane(pre, ci, dst, &x[(bi * c + ci) * hw..][..hw]))
}

/// [`pad_tight`] of a batch norm's output gradient `g` (`b` images NCHW, the batch's from image
/// `i0` on), each value mapped by `map` to the batch norm's input gradient as it is copied.
pub(crate) fn pad_tight_grad<'b>(
    (g, map, i0): (&[f32], &DeferredGrad, usize),
    (b, c): (usize, usize),
    (h, w): (usize, usize),
    buf: &'b mut Vec<f32>,
) -> &'b [f32] {
    let hw = h * w;
    tight_planes((b, c), (h, w), buf, |ci, bi, dst| {
        map.map_span(((i0 + bi) * c + ci, 0), dst, &g[(bi * c + ci) * hw..][..hw])
    })
}

/// The tight planes of [`pad_tight`], each plane's values written by `fill(channel, image, dst)`.
fn tight_planes(
    (b, c): (usize, usize),
    (h, w): (usize, usize),
    buf: &mut Vec<f32>,
    fill: impl Fn(usize, usize, &mut [f32]),
) -> &[f32] {
    let (hw, pl) = (h * w, plane(h, w));
    let out = aligned(buf, b * c * pl, 0);
    for ci in 0..c {
        for bi in 0..b {
            let p = &mut out[(ci * b + bi) * pl..(ci * b + bi + 1) * pl];
            p[..w + 1].fill(0.0);
            fill(ci, bi, &mut p[w + 1..w + 1 + hw]);
            p[w + 1 + hw..].fill(0.0);
        }
    }
    out
}

/// The planes a convolution's whole stencil reads, on this CPU's kernel: tight ([`pad_tight`]: the
/// edge taps leave out a lane) or the padded grid ([`direct::grid_planes`]: rows [`Self::row`]
/// apart, the zeros between rows the left and right border, so no tap needs a mask).
///
/// The grid is taken with AVX2 where rows are whole vectors of 8 (so a vector never spans two
/// rows): AVX2 has no merge-masked FMA, and its masked loads (`vmaskmovps`) with their four mask
/// registers kept the tiles at 4 x 2 vectors; on the grid they are 6 x 2. The rows are padded to a
/// multiple of 8 values: with one zero a row (`w + 1`), the rows' vectors fell on the cache lines
/// differently row by row and more loads split across two lines, which ate the gain. One thread,
/// 32 images, Intel Xeon with AMX held to AVX2: 80-93 GFLOP/s on tight planes, 88-111 on the grid
/// (16 to 64 channels); in ResNet-20 b128 training the 3x3/1 forward -8 to -11 % and backward -7 %
/// (ms per step). AVX-512 keeps the tight planes: its masked FMA costs nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Planes {
    pub grid: bool,
    pub h: usize,
    pub w: usize,
}

impl Planes {
    /// The layout for the kernel of `lanes` on `h x w` planes (see [`Planes`]).
    pub fn of(lanes: usize, (h, w): (usize, usize)) -> Self {
        Self { grid: lanes == 8 && w.is_multiple_of(8), h, w }
    }
    /// Values of one plane.
    pub fn plane(self) -> usize {
        if self.grid {
            (self.h + 2) * self.row()
        } else {
            plane(self.h, self.w)
        }
    }
    /// Values from one row to the next: on the grid `w` and at least one zero, to whole vectors
    /// of 8, so every row's vectors sit alike on the cache lines.
    pub fn row(self) -> usize {
        if self.grid {
            (self.w + 1).next_multiple_of(8)
        } else {
            self.w
        }
    }
    /// Values of `n` planes on the grid.
    fn all(self, n: usize) -> usize {
        n * self.plane()
    }
    /// Where a plane's first value (row 0, column 0) lies in it.
    pub fn first(self) -> usize {
        self.row() + 1
    }
    /// The taps [`conv_taps_at`] sums over these planes: the whole stencil.
    pub fn taps(self) -> Taps {
        if self.grid {
            Taps::Grid(self.row())
        } else {
            Taps::All
        }
    }
    /// [`pad_tight`] in this layout.
    pub fn pad<'b>(self, x: (&[f32], Option<&Deferred>), (b, c): (usize, usize), buf: &'b mut Vec<f32>) -> &'b [f32] {
        if self.grid {
            direct::pad_grid(x, (b, c), (self.h, self.w, self.row()), (buf, self.all(b * c), 0))
        } else {
            pad_tight(x, (b, c), (self.h, self.w), buf)
        }
    }
    /// [`pad_tight_grad`] in this layout.
    pub(crate) fn pad_grad<'b>(
        self,
        (g, map, i0): (&[f32], &DeferredGrad, usize),
        (b, c): (usize, usize),
        buf: &'b mut Vec<f32>,
    ) -> &'b [f32] {
        if !self.grid {
            return pad_tight_grad((g, map, i0), (b, c), (self.h, self.w), buf);
        }
        let (hw, w) = (self.h * self.w, self.w);
        let rows = (self.h, self.w, self.row());
        direct::grid_planes((b, c), rows, (buf, self.all(b * c), 0), |ci, bi, y, dst| {
            map.map_span(((i0 + bi) * c + ci, y * w), dst, &g[(bi * c + ci) * hw + y * w..][..w])
        })
    }
    /// [`conv_at`] over planes of this layout.
    pub fn conv(self, lanes: usize, xp: &[f32], cs: (usize, usize), wt: &[f32], co: usize, out: Out) -> bool {
        conv_taps_at(lanes, xp, cs, (self.h, self.w), (wt, self.taps()), co, out)
    }
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
    /// Added to `out`, then through the ReLU's backward on `y` (kept where `y > 0`, else 0): the
    /// last contribution to the gradient of a ResNet block's end `y = relu(bn(z) + res)`, with each
    /// channel's batch-norm backward sums over the plane, `(sum g', sum g' * (z - mean))`
    /// (`bn_grad::ResidualSums`); `y` and `z` laid out as `out`.
    ResGrad { out: &'a mut [f32], y: &'a [f32], z: &'a [f32], mean: &'a [f32], sums: &'a mut [(f64, f64)] },
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
    cs: (usize, usize),
    hw: (usize, usize),
    wt: &[f32],
    co: usize,
    out: Out,
) -> bool {
    conv_taps_at(lanes, xp, cs, hw, (wt, Taps::All), co, out)
}

/// The taps a call sums ([`conv_taps_at`]); tap `(ky, kx)` of output `q` reads `q + ky * w + kx` of
/// a tight plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Taps {
    /// The whole 3x3 stencil.
    All,
    /// Part `(py, px)` of the stride-2 input gradient ([`super::tight_s2`]): rows `1..2 + py`,
    /// columns `1..2 + px`.
    Part(usize, usize),
    /// The stride-2 forward over each input channel's four phase planes, `pstride` apart (phase
    /// `2 ry + rx`: rows `1 - ry..2`, columns `1 - rx..2`), the 9 weights of an output and input
    /// channel shared by the phases (`tight_kernel::PHASE_AT`).
    Phases(usize),
    /// The whole stencil on padded-grid planes ([`Planes`] with `grid`; rows whole vectors), rows
    /// this many values apart: AVX2 only (AVX-512 keeps the tight planes).
    Grid(usize),
}

impl Taps {
    /// The kernel's stencil number (see [`super::tight_kernel`]) and weights per channel pair.
    fn stencil(self) -> (u8, usize) {
        match self {
            Taps::All => (0, 9),
            Taps::Part(py, px) => (1 + 2 * py.min(1) as u8 + px.min(1) as u8, 9),
            Taps::Phases(_) => (5, 9),
            Taps::Grid(_) => (6, 9),
        }
    }
}

/// Whether [`conv_taps_at`] serves `taps` with `co` output channels on `h x w` planes: the whole
/// stencil wherever [`applies_at`]; the stride-2 stencils where `co` is whole blocks (8 channels
/// with AVX-512, 4 with AVX2).
pub fn applies_taps(lanes: usize, (h, w): (usize, usize), taps: Taps, co: usize) -> bool {
    let whole_blocks = co > 0 && co.is_multiple_of(if lanes == 16 { 8 } else { 4 });
    applies_at(lanes, h, w)
        && match taps {
            Taps::All => true,
            Taps::Grid(rs) => lanes == 8 && w.is_multiple_of(8) && rs > w + 1,
            Taps::Part(py, px) => py < 2 && px < 2 && whole_blocks,
            Taps::Phases(_) => whole_blocks,
        }
}

/// [`conv_at`] summing only `taps` (weights `wt` laid out as for the whole stencil; the others are
/// not read), where [`applies_taps`] allows; `false` (nothing written) elsewhere.
pub fn conv_taps_at(
    lanes: usize,
    xp: &[f32],
    (c, cstride): (usize, usize),
    (h, w): (usize, usize),
    (wt, taps): (&[f32], Taps),
    co: usize,
    out: Out,
) -> bool {
    if !applies_taps(lanes, (h, w), taps, co) {
        return false;
    }
    let hw = h * w;
    let (k, wstride) = taps.stencil();
    // The phase planes' stride (stencil 5 reads each channel's 4 planes).
    let pstride = if let Taps::Phases(ps) = taps { ps } else { 0 };
    // The values a channel's taps read, and from one input row to the next.
    let (span, rs) = match taps {
        Taps::Grid(rs) => ((h + 2) * rs, rs),
        _ => (3 * pstride + plane(h, w), w),
    };
    assert!(pstride == 0 || pstride >= plane(h, w));
    assert!(c > 0 && cstride >= span && xp.len() >= (c - 1) * cstride + span);
    assert!(wt.len() >= co * c * wstride);
    let masks = edge_masks(lanes, h, w);
    let (dst, mode, sums) = match out {
        Out::Write { out, bias, res, relu, sums } => {
            assert!(out.len() >= co * hw && res.is_none_or(|r| r.len() >= co * hw));
            let plain = bias.is_none() && res.is_none() && !relu;
            assert!(sums.is_none() || plain, "plane sums are of the plain convolution only");
            assert!(bias.is_none_or(|b| b.len() >= co) && sums.as_ref().is_none_or(|s| s.len() >= co));
            let res = res.map(|r| r.as_ptr());
            let mode = Mode { add: false, bias, res, relu, sums: sums.is_some(), bn: None, res_bn: None };
            (out.as_mut_ptr().cast::<f32>(), mode, sums)
        }
        Out::Grad { out, z, pre, sums } => {
            assert!(out.len() >= co * hw && z.len() >= co * hw && sums.len() >= co && pre.scale.len() >= co);
            let bn = Some((z.as_ptr(), pre));
            let mode = Mode { add: false, bias: None, res: None, relu: false, sums: true, bn, res_bn: None };
            (out.as_mut_ptr().cast::<f32>(), mode, Some(sums))
        }
        Out::ResGrad { out, y, z, mean, sums } => {
            assert!(out.len() >= co * hw && y.len() >= co * hw && z.len() >= co * hw);
            assert!(mean.len() >= co && sums.len() >= co);
            let res_bn = Some((y.as_ptr(), z.as_ptr(), mean));
            let mode = Mode { add: true, bias: None, res: None, relu: false, sums: true, bn: None, res_bn };
            (out.as_mut_ptr(), mode, Some(sums))
        }
        Out::Add(out) => {
            assert!(out.len() >= co * hw);
            let mode = Mode { add: true, bias: None, res: None, relu: false, sums: false, bn: None, res_bn: None };
            (out.as_mut_ptr(), mode, None)
        }
    };
    #[cfg(target_arch = "x86_64")]
    {
        let a = Args { xp: xp.as_ptr(), c, cstride, pstride, w, rs, hw, wt: wt.as_ptr(), wstride, masks: &masks, dst };
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
                // SAFETY: `applies_taps` found the instructions of the `lanes` kernel and whole
                // blocks where the stencil takes only those; a tile reads `xp[ci * cstride + p *
                // pstride + q + ky * w + kx]` with `q < hw`, at most `plane - 1` past the phase
                // plane's start (asserted above), weights `wt[(o * c + ci) * wstride + t]` with
                // `o < co`, `t < wstride`, and writes `out[o * hw + q]`.
                o0 += unsafe {
                    match (lanes, k) {
                        (16, 0) => match co - o0 {
                            r if r.is_multiple_of(8) => channels16::<8, 3, 0>(&a, o0, vs, &mode, sl),
                            r => match r.min(6) {
                                6 => channels16::<6, 4, 0>(&a, o0, vs, &mode, sl),
                                5 => channels16::<5, 4, 0>(&a, o0, vs, &mode, sl),
                                4 => channels16::<4, 4, 0>(&a, o0, vs, &mode, sl),
                                3 => channels16::<3, 4, 0>(&a, o0, vs, &mode, sl),
                                2 => channels16::<2, 4, 0>(&a, o0, vs, &mode, sl),
                                _ => channels16::<1, 4, 0>(&a, o0, vs, &mode, sl),
                            },
                        },
                        (16, 1) => channels16::<8, 3, 1>(&a, o0, vs, &mode, sl),
                        (16, 2) => channels16::<8, 3, 2>(&a, o0, vs, &mode, sl),
                        (16, 3) => channels16::<8, 3, 3>(&a, o0, vs, &mode, sl),
                        (16, 4) => channels16::<8, 3, 4>(&a, o0, vs, &mode, sl),
                        (16, _) => channels16::<8, 3, 5>(&a, o0, vs, &mode, sl),
                        // The grid's 12 accumulators: 6 x 2 (16 channels: 6 + 6 + 4; 32: 6 x 4 + 4 + 4).
                        (_, 6) => match co - o0 {
                            r if r.is_multiple_of(6) || r >= 10 => channels8::<6, 2, 6>(&a, o0, vs, &mode, sl),
                            5 => channels8::<5, 2, 6>(&a, o0, vs, &mode, sl),
                            r if r >= 4 => channels8::<4, 2, 6>(&a, o0, vs, &mode, sl),
                            3 => channels8::<3, 2, 6>(&a, o0, vs, &mode, sl),
                            2 => channels8::<2, 2, 6>(&a, o0, vs, &mode, sl),
                            _ => channels8::<1, 2, 6>(&a, o0, vs, &mode, sl),
                        },
                        (_, 0) => match (co - o0).min(4) {
                            4 => channels8::<4, 2, 0>(&a, o0, vs, &mode, sl),
                            3 => channels8::<3, 2, 0>(&a, o0, vs, &mode, sl),
                            2 => channels8::<2, 2, 0>(&a, o0, vs, &mode, sl),
                            _ => channels8::<1, 2, 0>(&a, o0, vs, &mode, sl),
                        },
                        (_, 1) => channels8::<4, 2, 1>(&a, o0, vs, &mode, sl),
                        (_, 2) => channels8::<4, 2, 2>(&a, o0, vs, &mode, sl),
                        (_, 3) => channels8::<4, 2, 3>(&a, o0, vs, &mode, sl),
                        (_, 4) => channels8::<4, 2, 4>(&a, o0, vs, &mode, sl),
                        (_, _) => channels8::<4, 2, 5>(&a, o0, vs, &mode, sl),
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
        let _ = (xp, cstride, wt, masks, dst, mode, sums, k, wstride);
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
