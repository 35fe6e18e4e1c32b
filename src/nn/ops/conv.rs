//! 2-D convolution (NCHW, stride, zero padding, groups) as a differentiable dfdx op.
//!
//! Forward and both gradients are im2col + GEMM per image and group: `out = W · col(x)`,
//! `dW += dout · col(x)ᵀ`, `dx += col2im(Wᵀ · dout)`. Pointwise convolutions (1x1, stride 1, no
//! padding) skip the im2col copy; depthwise convolutions (one channel per group, MobileNet and
//! ShuffleNet) use direct row loops instead of one tiny GEMM per channel. Batches are split over the rayon pool one image per task with a
//! single-threaded GEMM (no synchronisation inside a layer); batches smaller than the pool use a
//! multi-threaded GEMM instead.
use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::thread::LocalKey;

use dfdx::prelude::Tape;
use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use super::amx_conv;
use super::blas::{add_into, sgemm, sgemm_strided, sgemm_uninit, threads, written, Mat, SyncPtr};
use super::deferred::Deferred;
use super::direct::{self, Padded};
use super::{pointwise_s2, tight, tight_s2, wgrad_blocked};
use crate::nn::var::{accumulate_with, finish, finish_unmapped, Dev, Flat, Grads, Shape4, Var};

use super::bn_grad::DeferredGrad;

/// Convolution hyper-parameters (square kernels are the common case but not required).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvCfg {
    pub stride: usize,
    pub pad: usize,
    pub groups: usize,
}

impl ConvCfg {
    pub const fn new(stride: usize, pad: usize) -> Self {
        Self { stride, pad, groups: 1 }
    }
    pub const fn groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
}

/// Geometry of one convolution call.
#[derive(Clone, Copy, Debug)]
struct Geo {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    co: usize,
    kh: usize,
    kw: usize,
    s: usize,
    p: usize,
    g: usize,
    ho: usize,
    wo: usize,
    /// The vector width of the tight-plane and channel-blocked kernels, 0 where they do not run
    /// ([`super::cpu::kernel_lanes`] on the calling thread).
    lanes: usize,
}

impl Geo {
    /// Names this convolution's kind and shape in the profile (`conv2d 3x3/1 @ 16→16 32x32`: the
    /// kind with the groups where there are several and `bf16` where it runs on the AMX tiles, then
    /// channels in → out and the input plane) with its FLOPs: forward `2 * n * co * c/groups * kh *
    /// kw * ho * wo`, backward that once for the weight gradient and once more where the input
    /// gradient is wanted too.
    fn profile_tag(&self, bf16: bool, x_needs_grad: bool) {
        let flop = 2.0 * (self.n * self.co * self.kk() * self.hwo()) as f64;
        // Formatted only while profiling (`tag` calls it then).
        let kind = || {
            let groups = if self.g > 1 { format!(" g{}", self.g) } else { String::new() };
            let (kh, kw, s, sh) = (self.kh, self.kw, self.s, crate::nn::profile::SHAPE);
            let bf = if bf16 { " bf16" } else { "" };
            format!("conv2d {kh}x{kw}/{s}{groups}{bf}{sh}{}→{} {}x{}", self.c, self.co, self.h, self.w)
        };
        crate::nn::profile::tag(kind, (flop, flop * (1.0 + f64::from(u8::from(x_needs_grad)))));
    }
    fn cg(&self) -> usize {
        self.c / self.g
    }
    fn cog(&self) -> usize {
        self.co / self.g
    }
    fn kk(&self) -> usize {
        self.cg() * self.kh * self.kw
    }
    fn hwo(&self) -> usize {
        self.ho * self.wo
    }
    fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.s == 1 && self.p == 0
    }
    /// One input and one output channel per group: handled by the direct depthwise loops.
    fn depthwise(&self) -> bool {
        self.g == self.c && self.g == self.co && self.g > 1
    }
    /// 3x3, stride 1, padding 1, no groups: handled by the direct kernel.
    fn direct(&self) -> bool {
        self.kh == 3 && self.kw == 3 && self.s == 1 && self.p == 1 && self.g == 1
    }
    /// 3x3, stride 2, padding 1, no groups, even sides: the forward runs the direct kernel on the
    /// input's polyphase planes ([`direct::conv3x3_s2`]).
    fn direct_s2(&self) -> bool {
        self.kh == 3 && self.kw == 3 && self.s == 2 && self.p == 1 && self.g == 1 && direct::s2_applies(self.h, self.w)
    }
    /// [`Self::direct`] on the tight-plane kernel ([`tight::conv_at`]: forward and input
    /// gradient), where it may run and the plane size allows it.
    fn tight(&self) -> bool {
        self.direct() && tight::applies_at(self.lanes, self.h, self.w)
    }
    /// [`Self::direct_s2`]'s forward on the tight-plane kernel over the input's phase planes
    /// ([`tight_s2::forward`], weights from [`tight_s2::phase_weights`]), where it may run.
    fn tight_s2(&self) -> bool {
        self.direct_s2() && tight_s2::forward_applies(self.lanes, self.co, (self.h, self.w))
    }
    /// 1x1, stride 2, no padding, no groups (ResNet shortcuts): the tile kernel with one tap over
    /// the input's even samples, a chunk of images at a time ([`pointwise_s2`]).
    fn pointwise_s2(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.s == 2 && self.p == 0 && self.g == 1
    }
    /// Runs on the tile kernel (forward and input gradient).
    fn tiled(&self) -> bool {
        self.direct() || self.direct_s2() || self.pointwise_s2()
    }
    fn padded(&self) -> Padded {
        Padded { h: self.h, w: self.w }
    }
    /// Padded planes of the output size (the stride-2 kernels' grid).
    fn padded_out(&self) -> Padded {
        Padded { h: self.ho, w: self.wo }
    }
    fn in_len(&self) -> usize {
        self.c * self.h * self.w
    }
    fn out_len(&self) -> usize {
        self.co * self.hwo()
    }
}

/// Output spatial size of a convolution or pooling window.
pub fn out_size(input: usize, k: usize, stride: usize, pad: usize) -> usize {
    assert!(input + 2 * pad >= k, "window {k} larger than padded input {input}+2*{pad}");
    (input + 2 * pad - k) / stride + 1
}

/// Range of output columns whose input column `o*s + k - p` lies inside `[0, w)`.
fn valid_range(k: usize, p: usize, s: usize, w: usize, wo: usize) -> (usize, usize) {
    let lo = if p > k { (p - k).div_ceil(s) } else { 0 };
    let hi = if w + p > k { ((w - 1 + p - k) / s + 1).min(wo) } else { 0 };
    (lo.min(hi), hi)
}

/// One image row split into its `s` stride phases (phase `r` holds columns `r, r + s, …`), so that
/// the columns a window tap reads for consecutive outputs of a strided window are contiguous: shared
/// by [`im2col`] and max pooling.
pub(super) struct RowPhases {
    s: usize,
    plen: usize,
    buf: Vec<f32>,
}

impl RowPhases {
    /// For rows of `w` values at stride `s`.
    pub fn new(w: usize, s: usize) -> Self {
        let plen = w.div_ceil(s);
        Self { s, plen, buf: vec![0.0; s * plen] }
    }

    /// Splits `row` (of the `w` values [`Self::new`] was given), each value mapped by `f`.
    pub fn split(&mut self, row: &[f32], f: impl Fn(f32) -> f32) {
        for (r, ph) in self.buf.chunks_mut(self.plen).enumerate() {
            ph.iter_mut().zip(row[r..].iter().step_by(self.s)).for_each(|(d, &v)| *d = f(v));
        }
    }

    /// Columns `ix, ix + s, …` of the last row split, to the end of the row (and maybe beyond, up
    /// to the phase's length: callers read only columns inside the row).
    pub fn from(&self, ix: usize) -> &[f32] {
        &self.buf[(ix % self.s) * self.plen..][..self.plen][ix / self.s..]
    }
}

/// im2col of one image group `x` (`cg x h x w`) into `col` (`cg*kh*kw x ho*wo`).
///
/// Input row by input row: each row a kernel row `ky` reads for output row `oy` is split once into
/// its [`RowPhases`] (at stride 1, the row itself), from which every tap `kx` copies one contiguous
/// run: a strided gather per tap ran at ~1 value a ns (torchvision's 7x7/2 stem: 147 taps over
/// 112x112 positions an image).
fn im2col(x: &[f32], g: &Geo, col: &mut [f32]) {
    let (h, w, ho, wo, s, p) = (g.h, g.w, g.ho, g.wo, g.s, g.p);
    let hwo = ho * wo;
    let mut phases = RowPhases::new(w, s);
    for c in 0..g.cg() {
        let xc = &x[c * h * w..(c + 1) * h * w];
        for ky in 0..g.kh {
            for oy in 0..ho {
                let iy = (oy * s + ky).checked_sub(p).filter(|&iy| iy < h);
                let src = iy.map(|iy| &xc[iy * w..(iy + 1) * w]);
                if let (Some(src), true) = (src, s > 1) {
                    phases.split(src, |v| v);
                }
                for kx in 0..g.kw {
                    let dst = &mut col[((c * g.kh + ky) * g.kw + kx) * hwo + oy * wo..][..wo];
                    let (ox0, ox1) = valid_range(kx, p, s, w, wo);
                    let Some(src) = src.filter(|_| ox0 < ox1) else {
                        dst.fill(0.0);
                        continue;
                    };
                    dst[..ox0].fill(0.0);
                    dst[ox1..].fill(0.0);
                    let ix0 = ox0 * s + kx - p;
                    let run = if s == 1 { &src[ix0..] } else { phases.from(ix0) };
                    dst[ox0..ox1].copy_from_slice(&run[..ox1 - ox0]);
                }
            }
        }
    }
}

/// Adjoint of [`im2col`]: scatters-adds `col` into `dx` (`cg x h x w`).
fn col2im(col: &[f32], g: &Geo, dx: &mut [f32]) {
    let (h, w, ho, wo, s, p) = (g.h, g.w, g.ho, g.wo, g.s, g.p);
    let hwo = ho * wo;
    for c in 0..g.cg() {
        let dxc = &mut dx[c * h * w..(c + 1) * h * w];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let row = &col[((c * g.kh + ky) * g.kw + kx) * hwo..][..hwo];
                let (ox0, ox1) = valid_range(kx, p, s, w, wo);
                if ox0 >= ox1 {
                    continue;
                }
                for oy in 0..ho {
                    let iy = (oy * s + ky) as isize - p as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    let src = &row[oy * wo + ox0..oy * wo + ox1];
                    let dst = &mut dxc[iy as usize * w..(iy as usize + 1) * w];
                    let ix0 = ox0 * s + kx - p;
                    if s == 1 {
                        add_into(&mut dst[ix0..ix0 + src.len()], src);
                    } else {
                        for (o, v) in src.iter().enumerate() {
                            dst[ix0 + o * s] += *v;
                        }
                    }
                }
            }
        }
    }
}

/// Number of image chunks whose weight gradients are summed separately (then in order), at most.
const REDUCE_CHUNKS: usize = 8;

/// Weights from which a chunk's partial weight gradient outgrows the caches (1 MiB of values):
/// from there a chunk holds at least [`MIN_CHUNK_POSITIONS`] output positions.
pub(super) const BIG_PARTIAL: usize = 1 << 18;

/// Output positions per chunk, at least, where the weights are [`BIG_PARTIAL`]: each chunk's
/// partial is zeroed, written and summed once, passes over the memory that, with 512 channels at
/// 4x4 (16 images a chunk, 2.4 M weights), took longer than the products themselves.
const MIN_CHUNK_POSITIONS: usize = 1024;

/// Images per chunk of a convolution's backward pass over `n` images of `hwo` output positions
/// (`w_len` weights): `n / REDUCE_CHUNKS`, or more where the weights are many (at least two
/// chunks, so both threads work), in whole multiples of 8. The same on every CPU and thread count.
pub(super) fn chunk_images(n: usize, hwo: usize, w_len: usize) -> usize {
    let mut chunk = n.div_ceil(REDUCE_CHUNKS);
    if w_len >= BIG_PARTIAL {
        chunk = chunk.max(MIN_CHUNK_POSITIONS.div_ceil(hwo.max(1)).min(n.div_ceil(2)));
    }
    chunk.next_multiple_of(8).min(n)
}

/// The chunks' partial weight gradients of the last calls, kept for the next: allocated afresh (in a
/// worker thread's malloc arena, whose emptied heaps go back to the OS) each chunk's first writes
/// page-faulted, each fault flushing the other core's TLB (`perf`: 6 % of a CIFAR ResNet-18 step,
/// whose 512-channel layers have 2.4 M weights).
static PARTIALS: std::sync::Mutex<Vec<Vec<f32>>> = std::sync::Mutex::new(Vec::new());

/// A partial weight gradient of `len` zeros, in the largest buffer [`keep_partials`] kept.
fn zeroed_partial(len: usize) -> Vec<f32> {
    let mut v = {
        let mut pool = PARTIALS.lock().unwrap_or_else(|e| e.into_inner());
        let big = (0..pool.len()).max_by_key(|&i| pool[i].capacity());
        big.map(|i| pool.swap_remove(i)).unwrap_or_default()
    };
    v.clear();
    v.resize(len, 0.0);
    v
}

/// Keeps `partial` for [`zeroed_partial`], up to one call's chunks.
fn keep_partials(partial: Vec<Vec<f32>>) {
    let mut pool = PARTIALS.lock().unwrap_or_else(|e| e.into_inner());
    pool.extend(partial);
    pool.sort_by_key(|v| std::cmp::Reverse(v.capacity()));
    pool.truncate(REDUCE_CHUNKS);
}

/// Adds to `d` (the weight's gradient, `[groups x cog][kk]`) the chunks' partial weight gradients,
/// each transposed per group (`[groups][kk][cog]`), summed in the chunks' order. Blocks of 16
/// output channels: a block's `kk` rows stay in L1 while every partial is read along its rows of
/// `cog` (read across them, one value per line, the layers of 512 channels at 4x4 spent more time
/// here than in their weight gradient).
pub(super) fn add_partials(d: &mut [f32], partial: &[Vec<f32>], (cog, kk): (usize, usize)) {
    const ROWS: usize = 16;
    d.par_chunks_mut(ROWS * kk).with_min_len((64 / ROWS).max(1)).enumerate().for_each(|(blk, out)| {
        let (o0, n) = (blk * ROWS, out.len() / kk);
        let at = |o: usize, j: usize| o / cog * cog * kk + j * cog + o % cog;
        for j in 0..kk {
            if o0 / cog == (o0 + n - 1) / cog {
                // The block's rows in one group: one run of `n` values in each partial.
                let mut sum = [0.0f32; ROWS];
                for p in partial {
                    sum.iter_mut().zip(&p[at(o0, j)..][..n]).for_each(|(s, v)| *s += v);
                }
                out.chunks_exact_mut(kk).zip(sum).for_each(|(row, s)| row[j] += s);
            } else {
                for (r, row) in out.chunks_exact_mut(kk).enumerate() {
                    row[j] += partial.iter().fold(0.0, |s, p| s + p[at(o0 + r, j)]);
                }
            }
        }
    })
}

thread_local! {
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

thread_local! {
    static DIRECT: RefCell<(Vec<f32>, Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
}

/// Runs `f` on this thread's buffers in `key`, taken out for the call and put back after it: a
/// nested call (a worker that steals another pass's job while it waits, see [`super::on_pool`])
/// gets empty ones instead of a second borrow.
fn with_taken<T: Default, R>(key: &'static LocalKey<RefCell<T>>, f: impl FnOnce(&mut T) -> R) -> R {
    let mut bufs = key.with(|s| std::mem::take(&mut *s.borrow_mut()));
    let r = f(&mut bufs);
    key.with(|s| *s.borrow_mut() = bufs);
    r
}

/// Runs `f` with this thread's three buffers of the direct kernels ([`with_taken`]).
fn with_direct<R>(f: impl FnOnce(&mut Vec<f32>, &mut Vec<f32>, &mut Vec<f32>) -> R) -> R {
    with_taken(&DIRECT, |(a, b, c)| f(a, b, c))
}

/// Weights of the input-gradient convolution of a `taps`-tap kernel (9: 3x3, 1: 1x1):
/// `wf[ci][co][tap] = w[co][ci][taps - 1 - tap]`, the kernel flipped and its channels transposed.
fn flip_transpose(wt: &[f32], co: usize, c: usize, taps: usize) -> Vec<f32> {
    let mut wf = vec![0.0f32; wt.len()];
    wf.par_chunks_mut(co * taps).with_min_len(8).enumerate().for_each(|(i, row)| {
        for o in 0..co {
            for t in 0..taps {
                row[o * taps + t] = wt[(o * c + i) * taps + taps - 1 - t];
            }
        }
    });
    wf
}

/// Runs `f` with this thread's two scratch buffers of `len` values ([`with_taken`]).
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32], &mut [f32]) -> R) -> R {
    with_taken(&SCRATCH, |(a, b)| {
        if a.len() < len {
            a.resize(len, 0.0);
            b.resize(len, 0.0);
        }
        f(&mut a[..len], &mut b[..len])
    })
}

/// Forward of one image: `out_img (co x hwo) = W · col(x_img)` (+ bias, + a residual `res`, ReLU),
/// every value of `out` written: the GEMMs overwrite it, no zero fill first.
fn forward_image(
    x: &[f32],
    wt: &[f32],
    (bias, res): (Option<&[f32]>, Option<&[f32]>),
    g: &Geo,
    out: &mut [MaybeUninit<f32>],
    gemm_threads: usize,
    relu: bool,
) {
    let (cg, cog, kk, hwo) = (g.cg(), g.cog(), g.kk(), g.hwo());
    if g.depthwise() {
        out.iter_mut().for_each(|o| _ = o.write(0.0));
    } else {
        let run = |col: &[f32], out: &mut [MaybeUninit<f32>], gi: usize| {
            let wg = &wt[gi * cog * kk..(gi + 1) * cog * kk];
            let og = &mut out[gi * cog * hwo..(gi + 1) * cog * hwo];
            sgemm_uninit(cog, hwo, kk, Mat::rm(wg, kk), Mat::rm(col, hwo), og, hwo, gemm_threads);
        };
        for gi in 0..g.g {
            let xg = &x[gi * cg * g.h * g.w..(gi + 1) * cg * g.h * g.w];
            if g.pointwise() {
                run(xg, out, gi);
            } else {
                with_scratch(kk * hwo, |col, _| {
                    im2col(xg, g, col);
                    run(col, out, gi);
                });
            }
        }
    }
    // SAFETY: every value was written above (zeros, or each group's GEMM block).
    let out = unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<f32>(), out.len()) };
    if g.depthwise() {
        depthwise_forward(x, wt, g, out);
    }
    add_bias(out, bias, res, hwo, relu);
}

/// Forward of one image on the tile kernel ([`Geo::tiled`]), or of consecutive images (`x` and `out`
/// hold them) where [`Geo::pointwise_s2`]: every value of `out` is written, `relu?(conv + bias (+
/// res))`, the plane sums image by image; a residual `res` only on tight planes. `wt`: the weights,
/// laid out by [`tight_s2::phase_weights`] where [`Geo::tight_s2`].
fn direct_image(
    (x, pre): (&[f32], Option<&Deferred>),
    wt: &[f32],
    g: &Geo,
    out: &mut [MaybeUninit<f32>],
    epilogue: direct::Epilogue,
    res: Option<&[f32]>,
) {
    assert!(res.is_none() || g.tight(), "a residual in the output pass of tight planes only");
    assert!(pre.is_none() || g.direct(), "a deferred batch norm in the stride-1 copies only");
    let k = out.len() / g.out_len().max(1);
    assert!(k == 1 || g.pointwise_s2(), "one image a call but for the 1x1 stride-2 convolution's chunks");
    with_direct(|buf, scratch, eo| {
        if g.tight() {
            let planes = tight::Planes::of(g.lanes, (g.h, g.w));
            let xp = planes.pad((x, pre), (1, g.c), buf);
            let (bias, relu, sums) = epilogue;
            let out = tight::Out::Write { out, bias, res, relu, sums };
            assert!(planes.conv(g.lanes, xp, (g.c, planes.plane()), wt, g.co, out));
        } else if g.direct() {
            let xp = direct::pad_planes((x, pre), g.c, g.padded(), buf);
            direct::conv3x3_into(xp, (g.c, g.padded().plane()), g.padded(), wt, g.co, out, epilogue, scratch);
        } else if g.tight_s2() {
            let out = tight::Out::Write { out, bias: epilogue.0, res: None, relu: epilogue.1, sums: epilogue.2 };
            assert!(tight_s2::forward(g.lanes, x, (g.c, g.h, g.w), (wt, g.co), out, buf));
        } else if g.pointwise_s2() {
            pointwise_s2::forward(x, k, (g.c, g.h, g.w), (wt, g.co), out, epilogue, (buf, scratch));
        } else {
            direct::conv3x3_s2(x, g.c, (g.h, g.w), wt, g.co, out, epilogue, (buf, eo, scratch));
        }
    })
}

/// Calls `f(ky, kx, oy, iy, ox0, ox1, ix0)` for every kernel tap and output row whose input row is
/// inside the image, with the valid output columns `[ox0, ox1)` and the input column of `ox0`.
fn depthwise_taps(g: &Geo, mut f: impl FnMut(usize, usize, usize, usize, usize, usize, usize)) {
    for ky in 0..g.kh {
        for kx in 0..g.kw {
            let (ox0, ox1) = valid_range(kx, g.p, g.s, g.w, g.wo);
            if ox0 >= ox1 {
                continue;
            }
            for oy in 0..g.ho {
                let iy = (oy * g.s + ky) as isize - g.p as isize;
                if iy >= 0 && iy < g.h as isize {
                    f(ky, kx, oy, iy as usize, ox0, ox1, ox0 * g.s + kx - g.p);
                }
            }
        }
    }
}

/// Depthwise convolution of one image: `out[c] = Σ_taps w[c, ky, kx] · shift(x[c])`, row by row.
fn depthwise_forward(x: &[f32], wt: &[f32], g: &Geo, out: &mut [f32]) {
    let (plane, hwo, kk) = (g.h * g.w, g.hwo(), g.kh * g.kw);
    for c in 0..g.c {
        let (xc, wc, oc) =
            (&x[c * plane..(c + 1) * plane], &wt[c * kk..(c + 1) * kk], &mut out[c * hwo..(c + 1) * hwo]);
        depthwise_taps(g, |ky, kx, oy, iy, ox0, ox1, ix0| {
            let wv = wc[ky * g.kw + kx];
            let (o, xr) = (&mut oc[oy * g.wo + ox0..oy * g.wo + ox1], &xc[iy * g.w..(iy + 1) * g.w]);
            if g.s == 1 {
                o.iter_mut().zip(&xr[ix0..]).for_each(|(o, x)| *o += wv * x);
            } else {
                o.iter_mut().enumerate().for_each(|(j, o)| *o += wv * xr[ix0 + j * g.s]);
            }
        });
    }
}

/// Backward of [`depthwise_forward`] for one image: `dw[c, ky, kx] += Σ dout · shift(x)` and
/// `dx[c] += w · unshift(dout)`.
fn depthwise_backward(
    x: &[f32],
    wt: &[f32],
    gout: &[f32],
    g: &Geo,
    mut dw: Option<&mut [f32]>,
    mut dx: Option<&mut [f32]>,
) {
    let (plane, hwo, kk) = (g.h * g.w, g.hwo(), g.kh * g.kw);
    for c in 0..g.c {
        let (xc, wc, gc) = (&x[c * plane..(c + 1) * plane], &wt[c * kk..(c + 1) * kk], &gout[c * hwo..(c + 1) * hwo]);
        let mut dwc = dw.as_deref_mut().map(|d| &mut d[c * kk..(c + 1) * kk]);
        let mut dxc = dx.as_deref_mut().map(|d| &mut d[c * plane..(c + 1) * plane]);
        depthwise_taps(g, |ky, kx, oy, iy, ox0, ox1, ix0| {
            let gr = &gc[oy * g.wo + ox0..oy * g.wo + ox1];
            let xr = &xc[iy * g.w..(iy + 1) * g.w];
            if let Some(d) = dwc.as_deref_mut() {
                let sum: f32 = if g.s == 1 {
                    gr.iter().zip(&xr[ix0..]).map(|(a, b)| a * b).sum()
                } else {
                    gr.iter().enumerate().map(|(j, a)| a * xr[ix0 + j * g.s]).sum()
                };
                d[ky * g.kw + kx] += sum;
            }
            if let Some(d) = dxc.as_deref_mut() {
                let wv = wc[ky * g.kw + kx];
                let dr = &mut d[iy * g.w..(iy + 1) * g.w];
                if g.s == 1 {
                    dr[ix0..].iter_mut().zip(gr).for_each(|(d, a)| *d += wv * a);
                } else {
                    gr.iter().enumerate().for_each(|(j, a)| dr[ix0 + j * g.s] += wv * a);
                }
            }
        });
    }
}

/// Adds the bias (if any) to each output plane, then the residual `res` (if any, of `out`'s
/// layout), then applies the ReLU (if `relu`), in one pass: `relu?((v + b) + r)`, the order of the
/// separate bias and `add` passes it replaces.
fn add_bias(out: &mut [f32], bias: Option<&[f32]>, res: Option<&[f32]>, hwo: usize, relu: bool) {
    let relu_of = |v: f32| if relu { v.max(0.0) } else { v };
    match (bias, res) {
        (Some(b), None) => {
            out.chunks_mut(hwo).zip(b).for_each(|(p, &b)| p.iter_mut().for_each(|v| *v = relu_of(*v + b)))
        }
        (Some(b), Some(r)) => out.chunks_mut(hwo).zip(r.chunks(hwo)).zip(b).for_each(|((p, r), &b)| {
            p.iter_mut().zip(r).for_each(|(v, &r)| *v = relu_of((*v + b) + r));
        }),
        (None, Some(r)) => out.iter_mut().zip(r).for_each(|(v, &r)| *v = relu_of(*v + r)),
        (None, None) if relu => out.iter_mut().for_each(|v| *v = v.max(0.0)),
        (None, None) => {}
    }
}

/// Backward of one image: accumulates `dW` (each group's block transposed, `kk x cog`) into `dw`
/// and (optionally) `dx` into `dx`.
#[allow(clippy::too_many_arguments)]
fn backward_image(
    x: &[f32],
    wt: &[f32],
    gout: &[f32],
    g: &Geo,
    dw: &mut [f32],
    dx: Option<&mut [f32]>,
    gemm_threads: usize,
    want_dw: bool,
) {
    if g.depthwise() {
        depthwise_backward(x, wt, gout, g, if want_dw { Some(dw) } else { None }, dx);
        return;
    }
    let (cg, cog, kk, hwo) = (g.cg(), g.cog(), g.kk(), g.hwo());
    let plane_in = g.h * g.w;
    let mut dx = dx;
    for gi in 0..g.g {
        let xg = &x[gi * cg * plane_in..(gi + 1) * cg * plane_in];
        let wg = &wt[gi * cog * kk..(gi + 1) * cog * kk];
        let gg = &gout[gi * cog * hwo..(gi + 1) * cog * hwo];
        let dwg: &mut [f32] = if want_dw { &mut dw[gi * cog * kk..(gi + 1) * cog * kk] } else { &mut [] };
        if g.pointwise() {
            if want_dw {
                sgemm_strided(cog, kk, hwo, Mat::rm(gg, hwo), Mat::rm_t(xg, hwo), dwg, (1, cog), true, gemm_threads);
            }
            if let Some(dx) = dx.as_deref_mut() {
                let dxg = &mut dx[gi * cg * plane_in..(gi + 1) * cg * plane_in];
                sgemm(kk, hwo, cog, Mat::rm_t(wg, kk), Mat::rm(gg, hwo), dxg, hwo, true, gemm_threads);
            }
        } else {
            with_scratch(kk * hwo, |col, dcol| {
                if want_dw {
                    im2col(xg, g, col);
                    sgemm_strided(
                        cog,
                        kk,
                        hwo,
                        Mat::rm(gg, hwo),
                        Mat::rm_t(col, hwo),
                        dwg,
                        (1, cog),
                        true,
                        gemm_threads,
                    );
                }
                if let Some(dx) = dx.as_deref_mut() {
                    sgemm(kk, hwo, cog, Mat::rm_t(wg, kk), Mat::rm(gg, hwo), dcol, hwo, false, gemm_threads);
                    col2im(dcol, g, &mut dx[gi * cg * plane_in..(gi + 1) * cg * plane_in]);
                }
            });
        }
    }
}

/// A chunk's input gradient: added to (`.0`), or written fresh (`.1`).
/// With a fresh one, the deferred batch norm's sums of it, if wanted ([`Chunk::dx_sums`]); with
/// one added to, a block end's sums ([`Chunk::res_bn`]).
type Dxs<'a> = (Option<&'a mut [f32]>, Option<&'a mut [MaybeUninit<f32>]>, Option<&'a mut [(f64, f64)]>);

/// A ResNet block end's input `z` (a chunk's images) and means, whose ReLU's backward and batch-norm
/// sums the tight kernel takes as it adds the last contribution to the block output's gradient
/// ([`super::bn_grad::ResidualSums`]).
type ResBn<'a> = (&'a [f32], &'a [f32]);

/// The backward work of `nb` consecutive images: their inputs and output gradients (NCHW), the
/// weight gradient they add into (if `want_dw`) and their input gradients (if wanted), and the
/// threads a GEMM may use.
struct Chunk<'a> {
    x: &'a [f32],
    /// A deferred batch norm + ReLU whose map of `x` is the convolution's input (direct path only).
    pre: Option<&'a Deferred>,
    gout: &'a [f32],
    nb: usize,
    dw: &'a mut [f32],
    dx: Option<&'a mut [f32]>,
    /// Where `dx` is not given: the chunk's input gradient to be written, every value (only on the
    /// tight kernel's path).
    dx_fresh: Option<&'a mut [MaybeUninit<f32>]>,
    /// With `dx_fresh` and `pre`: the deferred batch norm's backward sums of the written gradient,
    /// per `(image, channel)` plane of the chunk ([`tight::Out::Grad`]).
    dx_sums: Option<&'a mut [(f64, f64)]>,
    /// Where `gout` is a batch norm's output gradient left unmapped: the map and the chunk's first
    /// image in the batch ([`backward_chunk_mapped`] only).
    gmap: Option<(&'a DeferredGrad, usize)>,
    /// With `dx` and `dx_sums`: the block end whose output is `x` and whose ReLU's backward and
    /// batch-norm sums the tight kernel takes as it adds into `dx` ([`ResBn`]).
    res_bn: Option<ResBn<'a>>,
    want_dw: bool,
    gemm_threads: usize,
}

/// The weight gradient of `nb` consecutive images (`x`, `gout` NCHW) of a 3x3 convolution (stride
/// 1 or 2) over a channel-blocked copy of the input ([`wgrad_blocked`]), added into `dw`, where the
/// CPU and the channel count allow it (AVX-512 or AVX2 + FMA, `c` a multiple of the vector's 16 or 8
/// lanes); at stride 1 with the input as it is (no deferred map) and the output channels in whole
/// blocks instead (a first layer), over a blocked copy of the output gradient; `false` (nothing
/// done) elsewhere.
fn blocked_weight_grad(
    (x, pre, gout, nb): (&[f32], Option<&Deferred>, &[f32], usize),
    g: &Geo,
    dw: &mut [f32],
    (buf, scratch): (&mut Vec<f32>, &mut Vec<f32>),
) -> bool {
    let (shape, pg) = ((g.c, g.co, nb, g.lanes), g.padded());
    if wgrad_blocked::applies(g.c, g.lanes) {
        let xb = wgrad_blocked::pad_blocked((x, pre), (nb, g.c, g.lanes), pg, buf);
        wgrad_blocked::weight_grad(xb, gout, shape, (pg, g.s), dw, scratch)
    } else if g.s == 1 && pre.is_none() && wgrad_blocked::applies_by_output(g.c, g.co, g.lanes) {
        let gb = wgrad_blocked::pad_blocked((gout, None), (nb, g.co, g.lanes), pg, buf);
        wgrad_blocked::weight_grad_by_output(x, gb, shape, pg, dw, scratch)
    } else {
        false
    }
}

/// Direct-path backward of `nb` consecutive images (`x`, `gout` hold them NCHW): `dW` by one
/// strided GEMM per tap over channel-major padded planes of all `nb` images (k = nb x plane), and
/// `dx` per image as the direct convolution of the output gradient with the flipped weights `wf`.
fn backward_chunk_direct(k: Chunk, wf: &[f32], g: &Geo) {
    let Chunk { x, pre, gout, nb, dw, dx, dx_fresh, dx_sums, res_bn, want_dw, .. } = k;
    let pg = g.padded();
    let (wp, plane) = (pg.wp(), pg.plane());
    let cs = nb * plane;
    with_direct(|xbuf, gbuf, scratch| {
        let blocked = want_dw && blocked_weight_grad((x, pre, gout, nb), g, dw, (xbuf, scratch));
        let tight_dx = (dx.is_some() || dx_fresh.is_some()) && g.tight();
        assert!(dx_fresh.is_none() || tight_dx, "a fresh input gradient is written by the tight kernel only");
        // The padded planes of the planar kernels, where one of them runs.
        let planar = (want_dw && !blocked) || (dx.is_some() && !tight_dx);
        // Aligned where the weight-gradient kernel's vector loads start: x's planes, g's first value.
        let xp: &[f32] = if want_dw && !blocked { direct::pad_chunk_with((x, pre), nb, g.c, pg, xbuf, 0) } else { &[] };
        let gp: &[f32] = if planar { direct::pad_chunk(gout, nb, g.co, pg, gbuf, wp + 1) } else { &[] };
        // dW_tap (co x c) = G (co x nb*plane) . X_tap^T: a direct kernel, or one strided GEMM per tap.
        let direct_dw = blocked || want_dw && direct::conv3x3_weight_grad(xp, gp, g.c, g.co, nb, pg, dw);
        for (t, off) in direct::taps(pg).into_iter().enumerate().filter(|_| want_dw && !direct_dw) {
            let a = Mat { data: &gp[wp + 1..], rs: cs as isize, cs: 1 };
            let b = Mat { data: &xp[off..], rs: 1, cs: cs as isize };
            sgemm_strided(g.co, g.c, cs, a, b, &mut dw[t * g.co..], (1, 9 * g.co), true, 1);
        }
        if tight_dx {
            // The output gradient's tight planes take `gbuf` once the weight gradient is done with it.
            let gt = tight::Planes::of(g.lanes, (g.h, g.w)).pad((gout, None), (nb, g.co), gbuf);
            tight_input_grad(gt, (x, pre, nb, res_bn), wf, g, (dx, dx_fresh, dx_sums));
        } else if let Some(dx) = dx {
            for (bi, dxi) in dx.chunks_mut(g.in_len()).enumerate().take(nb) {
                direct::conv3x3(&gp[bi * plane..], g.co, cs, pg, wf, g.c, dxi, true, scratch);
            }
        }
    });
}

/// The input gradient of a chunk of `nb` images (`x` their input, mapped by `pre` if deferred) on
/// the tight kernel from `gt`, their output gradient's planes ([`tight::Planes::pad`]): added to
/// `dx`, or written fresh (with the deferred batch norm's backward sums where `pre` and `sums`).
fn tight_input_grad(
    gt: &[f32],
    (x, pre, nb, res_bn): (&[f32], Option<&Deferred>, usize, Option<ResBn>),
    wf: &[f32],
    g: &Geo,
    (dx, dx_fresh, mut dx_sums): Dxs,
) {
    let planes = tight::Planes::of(g.lanes, (g.h, g.w));
    let pl = planes.plane();
    let image =
        |bi: usize, out: tight::Out| assert!(planes.conv(g.lanes, &gt[bi * pl..], (g.co, nb * pl), wf, g.c, out));
    let n = g.in_len();
    if let Some(dx) = dx {
        for (bi, out) in dx.chunks_mut(n).take(nb).enumerate() {
            match (res_bn, dx_sums.as_deref_mut()) {
                (Some((z, mean)), Some(sums)) => {
                    let (y, z, sums) = (&x[bi * n..(bi + 1) * n], &z[bi * n..(bi + 1) * n], &mut sums[bi * g.c..]);
                    image(bi, tight::Out::ResGrad { out, y, z, mean, sums })
                }
                _ => image(bi, tight::Out::Add(out)),
            }
        }
    } else if let Some(dx) = dx_fresh {
        for (bi, out) in dx.chunks_mut(g.in_len()).take(nb).enumerate() {
            match (pre, dx_sums.as_deref_mut()) {
                (Some(pre), Some(sums)) => {
                    let (z, sums) = (&x[bi * g.in_len()..(bi + 1) * g.in_len()], &mut sums[bi * g.c..]);
                    image(bi, tight::Out::Grad { out, z, pre, sums })
                }
                _ => image(bi, tight::Out::Write { out, bias: None, res: None, relu: false, sums: None }),
            }
        }
    }
}

/// Whether [`backward_chunk_mapped`] serves this convolution: the tight kernel's input gradient
/// and the blocked weight gradient, both of which can read the output gradient's tight planes.
fn maps_in_copy(g: &Geo) -> bool {
    g.tight() && wgrad_blocked::applies(g.c, g.lanes)
}

/// [`backward_chunk_direct`] where the output gradient is a batch norm's left unmapped
/// ([`DeferredGrad`], where [`maps_in_copy`]): mapped as it is copied into tight planes, from which
/// the weight gradient and the input gradient both read it. The batch norm's own pass over it (a
/// read and a write of the activation) goes away.
fn backward_chunk_mapped(k: Chunk, wf: &[f32], g: &Geo) {
    let Chunk { x, pre, gout, nb, dw, dx, dx_fresh, dx_sums, gmap, res_bn, want_dw, .. } = k;
    let (map, i0) = gmap.expect("backward_chunk_mapped: a deferred gradient");
    with_direct(|xbuf, gbuf, scratch| {
        let planes = tight::Planes::of(g.lanes, (g.h, g.w));
        let pl = planes.plane();
        let gt = planes.pad_grad((gout, map, i0), (nb, g.co), gbuf);
        if want_dw {
            let xb = wgrad_blocked::pad_blocked((x, pre), (nb, g.c, g.lanes), g.padded(), xbuf);
            // Image b, channel o's plane starts at its plane's first value, rows as laid out.
            let gy = (&gt[planes.first()..], (pl, nb * pl, planes.row()));
            let shape = (g.c, g.co, nb, g.lanes);
            assert!(wgrad_blocked::weight_grad_planes(xb, gy, shape, (g.padded(), 1), dw, scratch));
        }
        tight_input_grad(gt, (x, pre, nb, res_bn), wf, g, (dx, dx_fresh, dx_sums));
    });
}

/// The weights of a stride-2 3x3 convolution's input gradient, as its kernel takes them.
enum S2Dx {
    /// On the tight-plane kernel by input parity ([`tight_s2`]).
    Tight(tight_s2::Parts),
    /// On the padded-grid tile kernel by polyphase part ([`direct::conv3x3_s2_input_grad`]).
    Grid(Box<direct::S2Parts>),
}

impl S2Dx {
    fn new(wt: &[f32], g: &Geo) -> Self {
        if tight_s2::applies(g.lanes, g.c, (g.h, g.w)) {
            S2Dx::Tight(tight_s2::parts(wt, g.co, g.c))
        } else {
            S2Dx::Grid(Box::new(direct::s2_parts(wt, g.co, g.c, g.padded_out())))
        }
    }
}

/// Backward of `nb` consecutive images of a stride-2 3x3 convolution ([`Geo::direct_s2`]): `dW` by
/// the direct weight-gradient kernel over the input's polyphase planes and the padded output
/// gradient, `dx` by the tight kernel over the output gradient's tight planes ([`tight_s2`]) or the
/// tile kernel over its padded planes, one part of `dx` at a time (`parts`, given whenever `dx` is
/// wanted). Where the CPU has no SIMD weight-gradient kernel, `dW` is GEMM + im2col per image.
fn backward_chunk_s2(k: Chunk, (wt, parts): (&[f32], Option<&S2Dx>), g: &Geo) {
    let Chunk { x, gout, nb, dw, mut dx, mut dx_fresh, want_dw, gemm_threads, .. } = k;
    let pg = g.padded_out();
    let direct_dw = with_direct(|xbuf, gbuf, sc| {
        match parts {
            Some(S2Dx::Tight(parts)) if dx.is_some() || dx_fresh.is_some() => {
                let (ho, wo) = (g.h / 2, g.w / 2);
                let pl = tight::plane(ho, wo);
                let gt = tight::pad_tight((gout, None), (nb, g.co), (ho, wo), gbuf);
                let (n, cs, shape) = (g.in_len(), (g.co, nb * pl), (g.c, g.h, g.w));
                for bi in 0..nb {
                    let dxi = match (dx.as_deref_mut(), dx_fresh.as_deref_mut()) {
                        (Some(d), _) => tight_s2::Dx::Add(&mut d[bi * n..(bi + 1) * n]),
                        (None, Some(d)) => tight_s2::Dx::Write(&mut d[bi * n..(bi + 1) * n]),
                        (None, None) => unreachable!("one of them, above"),
                    };
                    assert!(tight_s2::input_grad(g.lanes, &gt[bi * pl..], cs, parts, shape, dxi, sc));
                }
            }
            _ => assert!(dx_fresh.is_none(), "a fresh stride-2 input gradient is written by the tight kernel only"),
        }
        // The padded output gradient, where the grid kernel takes the input gradient or the
        // polyphase kernel the weight gradient.
        let grid_dx = matches!((&dx, parts), (Some(_), Some(S2Dx::Grid(_))));
        let polyphase_dw = want_dw && !wgrad_blocked::applies(g.c, g.lanes);
        let gp: &[f32] =
            if grid_dx || polyphase_dw { direct::pad_chunk(gout, nb, g.co, pg, gbuf, pg.wp() + 1) } else { &[] };
        if let (Some(dx), Some(S2Dx::Grid(parts))) = (dx, parts) {
            for (bi, dxi) in dx.chunks_mut(g.in_len()).enumerate().take(nb) {
                let cs = (g.co, nb * pg.plane());
                direct::conv3x3_s2_input_grad(&gp[bi * pg.plane()..], cs, parts, g.c, (g.h, g.w), dxi, sc);
            }
        }
        // Else over the input's polyphase planes.
        let blocked = want_dw && blocked_weight_grad((x, None, gout, nb), g, dw, (xbuf, sc));
        blocked
            || want_dw && {
                let xp = direct::split_phases(x, (nb, g.c), (g.h, g.w), xbuf, sc);
                direct::conv3x3_s2_weight_grad(xp, gp, g.c, g.co, nb, pg, dw)
            }
    });
    if want_dw && !direct_dw {
        for i in 0..nb {
            let (x_i, g_i) = (&x[i * g.in_len()..(i + 1) * g.in_len()], &gout[i * g.out_len()..(i + 1) * g.out_len()]);
            backward_image(x_i, wt, g_i, g, dw, None, gemm_threads, true);
        }
    }
}

/// Backward of `nb` consecutive images of a 1x1 stride-2 convolution ([`Geo::pointwise_s2`]) over
/// their gathered even samples and output gradient ([`pointwise_s2::backward`]): `dW` as one GEMM,
/// `dx` with the transposed weights `wt_t` (given whenever `dx` is wanted).
fn backward_chunk_1x1s2(k: Chunk, wt_t: Option<&[f32]>, g: &Geo) {
    let Chunk { x, gout, nb, dw, dx, want_dw, gemm_threads, .. } = k;
    let dx = dx.zip(wt_t);
    with_direct(|xbuf, gbuf, sc| {
        let dw = want_dw.then_some(dw);
        pointwise_s2::backward((x, gout, nb), (g.c, g.h, g.w, g.co), (dw, gemm_threads), dx, (xbuf, gbuf, sc))
    });
}

/// The geometry of a convolution of `s` by weights of shape `w_shape`, checked.
fn geometry(s: Shape4, w_shape: [usize; 4], w_len: usize, cfg: ConvCfg) -> Geo {
    let [co, cg, kh, kw] = w_shape;
    assert!(
        cfg.groups >= 1 && s.c.is_multiple_of(cfg.groups) && co % cfg.groups == 0,
        "conv2d: channels {} / out {co} not divisible by groups {}",
        s.c,
        cfg.groups
    );
    assert_eq!(
        cg,
        s.c / cfg.groups,
        "conv2d: weight expects {} input channels per group, input has {} channels in {} groups",
        cg,
        s.c,
        cfg.groups
    );
    assert_eq!(w_len, co * cg * kh * kw);
    assert!(cfg.stride >= 1);
    Geo {
        n: s.n,
        c: s.c,
        h: s.h,
        w: s.w,
        co,
        kh,
        kw,
        s: cfg.stride,
        p: cfg.pad,
        g: cfg.groups,
        ho: out_size(s.h, kh, cfg.stride, cfg.pad),
        wo: out_size(s.w, kw, cfg.stride, cfg.pad),
        lanes: super::cpu::kernel_lanes(),
    }
}

/// The forward of a whole batch `xd`: one image per rayon task, or the images in turn with a
/// multi-threaded GEMM when the batch is smaller than the pool.
fn forward_batch(xd: &[f32], w_data: &[f32], bias: Option<&[f32]>, g: &Geo, relu: bool) -> Vec<f32> {
    forward_batch_sums((xd, None), w_data, (bias, relu), g, false).0
}

/// [`forward_batch`] with a residual `res` (of the output's layout) added in the output pass,
/// before the ReLU: on tight planes ([`Geo::tight`]) and on the GEMM path (not [`Geo::tiled`]).
fn forward_batch_res(xd: &[f32], w_data: &[f32], bias: &[f32], res: &[f32], g: &Geo, relu: bool) -> Vec<f32> {
    assert_eq!(res.len(), g.n * g.out_len(), "residual of {} values for {} outputs", res.len(), g.n * g.out_len());
    if !g.tiled() {
        return forward_batch_gemm(xd, w_data, (Some(bias), Some(res)), g, relu);
    }
    let (out, _) = written(g.n * g.out_len(), g.out_len(), g.n >= threads(), |i, o| {
        let (x, r) = (&xd[i * g.in_len()..(i + 1) * g.in_len()], &res[i * g.out_len()..(i + 1) * g.out_len()]);
        direct_image((x, None), w_data, g, o, (Some(bias), relu, None), Some(r))
    });
    out
}

/// The forward of the convolutions off the tile kernel: a GEMM per image (and group), its
/// output written once (no zero fill), then `relu?(v + bias + res)` per image while it is in cache.
fn forward_batch_gemm(
    xd: &[f32],
    w_data: &[f32],
    (bias, res): (Option<&[f32]>, Option<&[f32]>),
    g: &Geo,
    relu: bool,
) -> Vec<f32> {
    let nthreads = threads();
    // Images in parallel with one-thread GEMMs, or (fewer images than threads) one at a time with
    // all threads in each GEMM.
    let (par, gemm_threads) = if g.n >= nthreads { (true, 1) } else { (false, nthreads) };
    written(g.n * g.out_len(), g.out_len(), par, |i, o| {
        let r = res.map(|r| &r[i * g.out_len()..(i + 1) * g.out_len()]);
        forward_image(&xd[i * g.in_len()..(i + 1) * g.in_len()], w_data, (bias, r), g, o, gemm_threads, relu)
    })
    .0
}

/// [`forward_batch`], with the `(sum, sum of squares)` of every `(image, channel)` plane of the
/// output when `want_sums` and the convolution runs on the tile kernel (its output pass has them at
/// hand; only without bias and ReLU).
fn forward_batch_sums(
    (xd, pre): (&[f32], Option<&Deferred>),
    w_data: &[f32],
    (bias, relu): (Option<&[f32]>, bool),
    g: &Geo,
    want_sums: bool,
) -> (Vec<f32>, Option<Vec<(f64, f64)>>) {
    let nthreads = threads();
    if g.tiled() {
        // The direct kernels write every output value: no zero fill first.
        let want_sums = want_sums && bias.is_none() && !relu;
        // The tight stride-2 kernel's weights, laid out once for the batch.
        let w36 = g.tight_s2().then(|| tight_s2::phase_weights(w_data, g.co, g.c));
        let w_data = w36.as_deref().unwrap_or(w_data);
        // One image a task; 1x1 stride-2 convolutions a chunk of images, one product over them all.
        let per = if g.pointwise_s2() { pointwise_s2::chunk_images(g.n, g.hwo(), nthreads) } else { 1 };
        let (out, sums) = written(g.n * g.out_len(), per * g.out_len(), g.n >= nthreads, |i, o| {
            let k = o.len() / g.out_len();
            let mut sums = want_sums.then(|| vec![(0.0, 0.0); k * g.co]);
            let x = &xd[i * per * g.in_len()..(i * per + k) * g.in_len()];
            direct_image((x, pre), w_data, g, o, (bias, relu, sums.as_deref_mut()), None);
            sums
        });
        return (out, want_sums.then(|| sums.into_iter().flatten().flatten().collect()));
    }
    assert!(pre.is_none(), "a deferred batch norm on the tile kernel's path only");
    (forward_batch_gemm(xd, w_data, (bias, None), g, relu), None)
}

/// [`forward_batch_sums`] (with a residual `res` added before the ReLU, if any) of a 3x3 stride-1
/// convolution in bf16 on AMX tiles ([`amx_conv::conv3x3`]), where [`super::bf16_active`]: the sums
/// (without bias, residual and ReLU) in f32 per image, combined in f64.
#[cfg(target_arch = "x86_64")]
fn forward_batch_bf16(
    (xd, pre): (&[f32], Option<&Deferred>),
    w_data: &[f32],
    (bias, res, relu): (Option<&[f32]>, Option<&[f32]>, bool),
    g: &Geo,
    want_sums: bool,
) -> (Vec<f32>, Option<Vec<(f64, f64)>>) {
    thread_local!(static BUF: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) });
    let wt = amx_conv::Weights::pack(w_data, g.co, g.c);
    let want_sums = want_sums && bias.is_none() && res.is_none() && !relu;
    let (out, sums) = written(g.n * g.out_len(), g.out_len(), g.n >= threads(), |i, out| {
        let x = &xd[i * g.in_len()..(i + 1) * g.in_len()];
        let res = res.map(|r| &r[i * g.out_len()..(i + 1) * g.out_len()]);
        let mut sums = want_sums.then(|| vec![(0.0, 0.0); g.co]);
        let o = amx_conv::Out::Write { out, bias, res, relu, sums: sums.as_deref_mut() };
        with_taken(&BUF, |buf| amx_conv::conv3x3((x, pre), &wt, (g.h, g.w), o, buf));
        sums
    });
    (out, want_sums.then(|| sums.into_iter().flatten().flatten().collect()))
}

/// Backward of `nb` consecutive images of a 3x3 stride-1 convolution in bf16 on AMX tiles, where
/// [`super::bf16_active`]: `dW` by [`super::amx_wgrad::weight_grad`], `dx` (added, or written
/// fresh, with the deferred batch norm's backward sums where wanted) by [`amx_conv::conv3x3`] of
/// the output gradient with the flipped weights packed once per backward, `wf` (given whenever `dx`
/// is wanted).
#[cfg(target_arch = "x86_64")]
fn backward_chunk_bf16(k: Chunk, wf: Option<&amx_conv::Weights>, g: &Geo) {
    thread_local!(static BUFS: RefCell<(Vec<u32>, Vec<u32>)> = const { RefCell::new((Vec::new(), Vec::new())) });
    let Chunk { x, pre, gout, nb, dw, dx, dx_fresh, mut dx_sums, want_dw, .. } = k;
    with_taken(&BUFS, |bufs| {
        if want_dw {
            super::amx_wgrad::weight_grad((x, pre), gout, (nb, g.c, g.co), (g.h, g.w), dw, bufs);
        }
        let image = |bi: usize, out: amx_conv::Out, buf: &mut Vec<u32>| {
            let gy = &gout[bi * g.out_len()..(bi + 1) * g.out_len()];
            amx_conv::conv3x3((gy, None), wf.expect("packed when dx is wanted"), (g.h, g.w), out, buf)
        };
        if let Some(dx) = dx {
            dx.chunks_mut(g.in_len())
                .take(nb)
                .enumerate()
                .for_each(|(bi, d)| image(bi, amx_conv::Out::Add(d), &mut bufs.0));
        } else if let Some(dx) = dx_fresh {
            for (bi, out) in dx.chunks_mut(g.in_len()).take(nb).enumerate() {
                let o = match (pre, dx_sums.as_deref_mut()) {
                    (Some(pre), Some(sums)) => {
                        let (z, sums) =
                            (&x[bi * g.in_len()..(bi + 1) * g.in_len()], &mut sums[bi * g.c..(bi + 1) * g.c]);
                        amx_conv::Out::Grad { out, z, pre, sums }
                    }
                    _ => amx_conv::Out::Write { out, bias: None, res: None, relu: false, sums: None },
                };
                image(bi, o, &mut bufs.0);
            }
        }
    })
}

/// `relu?(conv(x, w) + bias (+ res))` in evaluation, where nothing records gradients: a batch norm
/// folded into `w_data` and `bias` (`BatchNorm2d::forward_conv`), its ReLU (and a ResNet block's
/// residual, `BatchNorm2d::forward_conv_add`) applied in the same pass as the bias.
///
/// # Panics
/// If `x`'s tape records (this op has no backward).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_folded<T: Tape<f32, Dev>>(
    x: Var<T>,
    res: Option<Var<T>>,
    w_data: &[f32],
    w_shape: [usize; 4],
    bias: &[f32],
    cfg: ConvCfg,
    relu: bool,
) -> Var<T> {
    assert!(!T::OWNS_TAPE, "conv2d_folded has no backward: call it only without a tape");
    let g = geometry(x.shape, w_shape, w_data.len(), cfg);
    assert_eq!(bias.len(), g.co, "conv2d_folded: {} output channels, {} biases", g.co, bias.len());
    let oshape = Shape4::new(g.n, g.co, g.ho, g.wo);
    let res = match res {
        Some(r) => {
            assert_eq!(r.shape, oshape, "conv2d_folded: residual of shape {}, output {oshape}", r.shape);
            if g.tiled() && !g.tight() {
                // On the other tile kernels the residual takes the add op's own pass.
                let y = conv2d_folded(x, None, w_data, w_shape, bias, cfg, false);
                return super::elementwise::add(y, r, relu);
            }
            Some(r)
        }
        None => None,
    };
    let (xs, tape, _, _) = x.split();
    let bf = g.direct() && super::bf16_active();
    let out = match res {
        #[cfg(target_arch = "x86_64")]
        _ if bf => {
            forward_batch_bf16((xs.data(), None), w_data, (Some(bias), res.as_ref().map(|r| r.data()), relu), &g, false)
                .0
        }
        Some(r) => forward_batch_res(xs.data(), w_data, bias, r.data(), &g, relu),
        None => forward_batch(xs.data(), w_data, Some(bias), &g, relu),
    };
    g.profile_tag(bf, false);
    finish(out, oshape, tape, |_: &mut Grads, _, _| unreachable!("no tape"))
}

/// 2-D convolution. `w` has logical shape `[co, c/groups, kh, kw]` (PyTorch layout) and `bias`, if
/// any, `[co]`; `w_data`/`b_data` are their current values.
#[allow(clippy::too_many_arguments)]
pub fn conv2d<T: Tape<f32, Dev>>(
    x: Var<T>,
    w: &Flat,
    w_data: Vec<f32>,
    w_shape: [usize; 4],
    bias: Option<(&Flat, Vec<f32>)>,
    cfg: ConvCfg,
) -> Var<T> {
    let co = w_shape[0];
    let g = geometry(x.shape, w_shape, w_data.len(), cfg);
    let (xs, tape, xshape, x_needs_grad, pre) = x.split_deferred();
    // A deferred batch norm + ReLU is applied in the direct path's input copies; elsewhere its
    // values are written out first.
    let (xs, pre) = match pre {
        Some(p) if !g.direct() => (xs.mapped(&p, xshape), None),
        p => (xs, p),
    };
    let b_vals = bias.as_ref().map(|(_, b)| b.as_slice());
    // While recording (training), the output pass also sums each plane for the batch norm after.
    let bf = g.direct() && super::bf16_active();
    let (out, sums) = match (xs.data(), pre.as_deref()) {
        #[cfg(target_arch = "x86_64")]
        x if bf => forward_batch_bf16(x, &w_data, (b_vals, None, false), &g, T::OWNS_TAPE),
        x => forward_batch_sums(x, &w_data, (b_vals, false), &g, T::OWNS_TAPE),
    };
    let oshape = Shape4::new(g.n, co, g.ho, g.wo);
    let wt = w.clone();
    let bt = bias.map(|(b, _)| b.clone());
    g.profile_tag(bf, x_needs_grad);
    let mut y = finish_unmapped(out, oshape, tape, move |grads: &mut Grads, mut gout: Vec<f32>, yo| {
        let xd = xs.data();
        let want_dw = !super::elementwise::params_frozen();
        // A batch norm's output gradient left unmapped (zero where it is all zero): mapped in the
        // tight copy the kernels read, where both do; here first elsewhere.
        let gmap = match yo.take_grad_map() {
            Some(m) if maps_in_copy(&g) && !bf && bt.is_none() => Some(m),
            Some(m) => {
                m.apply(&mut gout);
                None
            }
            None => None,
        };
        #[cfg(test)]
        super::bn_grad::MAPPED_IN_COPY.set(super::bn_grad::MAPPED_IN_COPY.get() + usize::from(gmap.is_some()));
        if (!want_dw && !x_needs_grad) || super::elementwise::all_zero(&gout) {
            return Ok(());
        }
        let nthreads = threads();
        // Where nothing has flowed into x's gradient yet and the tight kernel computes all of it,
        // it is written into a fresh buffer (no zero fill, no read back) and handed on whole.
        // So too the stride-2 input gradient on the tight kernel ([`S2Dx::Tight`]).
        let s2_tight = g.direct_s2() && tight_s2::applies(g.lanes, g.c, (g.h, g.w));
        let fresh = x_needs_grad && (g.tight() || bf || s2_tight) && g.n >= nthreads && xs.slot_is_empty();
        // A fresh input gradient of a deferred batch norm's value comes with that batch norm's
        // backward sums, computed as it is written (not with guided ReLUs: their mask differs).
        let bn_sums = fresh && pre.is_some() && !super::elementwise::guided();
        // Added in place as the last contribution to a ResNet block end's gradient (its output is
        // this input): with that block's ReLU backward and batch-norm sums, on the tight kernel,
        // where its in-order lane sums are the batch norm's own (whole 16-lane chunks, no f64 flush
        // inside a plane).
        let hw = g.h * g.w;
        let res_bn = (x_needs_grad && !fresh && g.tight() && !bf && pre.is_none() && g.n >= nthreads)
            .then(|| xs.residual_sums_wanted())
            .flatten()
            .filter(|_| !super::elementwise::guided() && hw.is_multiple_of(16) && hw <= 1024);
        let take_sums = bn_sums || res_bn.is_some();
        let mut fresh_dx: Vec<f32> = Vec::with_capacity(if fresh { g.n * g.in_len() } else { 0 });
        let mut dx_buf = if x_needs_grad && !fresh { Some(xs.grad_buf(grads)?) } else { None };
        let wf = g.direct().then(|| flip_transpose(&w_data, g.co, g.c, 9));
        // For the bf16 kernels, the flipped weights packed once for all chunks.
        #[cfg(target_arch = "x86_64")]
        let wf_bf16 = wf.as_deref().filter(|_| bf && x_needs_grad).map(|wf| amx_conv::Weights::pack(wf, g.c, g.co));
        let wt_t = (g.pointwise_s2() && x_needs_grad).then(|| flip_transpose(&w_data, g.co, g.c, 1));
        let s2 = (g.direct_s2() && x_needs_grad).then(|| S2Dx::new(&w_data, &g));
        // Images [i0, i1) of the batch: accumulate their weight gradient into `acc` and write their
        // input gradients into `dxs` (the matching slice of dx), if wanted.
        let run = |i0: usize, i1: usize, acc: &mut [f32], dxs: Dxs, gemm_threads: usize| {
            let xs_ = &xd[i0 * g.in_len()..i1 * g.in_len()];
            let gs = &gout[i0 * g.out_len()..i1 * g.out_len()];
            let (dxs, dx_fresh, dx_sums) = dxs;
            let pre = pre.as_deref();
            let chunk = |dw, dx| Chunk {
                x: xs_,
                pre,
                gout: gs,
                nb: i1 - i0,
                dw,
                dx,
                dx_fresh: None,
                dx_sums: None,
                gmap: gmap.as_ref().map(|m| (m, i0)),
                res_bn: res_bn.as_ref().map(|r| (&r.z.data()[i0 * g.in_len()..i1 * g.in_len()], &r.mean[..])),
                want_dw,
                gemm_threads,
            };
            match &wf {
                #[cfg(target_arch = "x86_64")]
                Some(_) if bf => {
                    backward_chunk_bf16(Chunk { dx_fresh, dx_sums, ..chunk(acc, dxs) }, wf_bf16.as_ref(), &g)
                }
                Some(wf) if gmap.is_some() => {
                    backward_chunk_mapped(Chunk { dx_fresh, dx_sums, ..chunk(acc, dxs) }, wf, &g)
                }
                Some(wf) => backward_chunk_direct(Chunk { dx_fresh, dx_sums, ..chunk(acc, dxs) }, wf, &g),
                None if g.pointwise_s2() => backward_chunk_1x1s2(chunk(acc, dxs), wt_t.as_deref(), &g),
                None if g.direct_s2() => {
                    backward_chunk_s2(Chunk { dx_fresh, ..chunk(acc, dxs) }, (&w_data, s2.as_ref()), &g)
                }
                None => {
                    let mut dxs = dxs;
                    for i in 0..i1 - i0 {
                        let dxi = dxs.as_deref_mut().map(|d| &mut d[i * g.in_len()..(i + 1) * g.in_len()]);
                        let x_i = &xs_[i * g.in_len()..(i + 1) * g.in_len()];
                        let g_i = &gs[i * g.out_len()..(i + 1) * g.out_len()];
                        backward_image(x_i, &w_data, g_i, &g, acc, dxi, gemm_threads, want_dw);
                    }
                }
            }
        };
        // The weight gradient of each chunk of images (one where the images run in turn).
        let (partial, sums): (Vec<Vec<f32>>, Vec<_>) = if g.n >= nthreads {
            let dxp = dx_buf.as_mut().map(|d| SyncPtr(d.as_mut_ptr()));
            let fresh_p = fresh.then_some(SyncPtr(fresh_dx.as_mut_ptr()));
            // Fixed chunks reduced in order: the result does not depend on scheduling.
            // Whole multiples of 8 images: with an even plane size, every channel of a chunk's padded
            // planes starts 64-byte aligned as its first does (the weight-gradient kernel's loads).
            let chunk = chunk_images(g.n, g.hwo(), w_data.len());
            (0..g.n.div_ceil(chunk))
                .into_par_iter()
                .map(|ci| {
                    // Without the weight's gradient, no partial (nothing reads it).
                    let mut acc = zeroed_partial(if want_dw { w_data.len() } else { 0 });
                    let (i0, i1) = (ci * chunk, ((ci + 1) * chunk).min(g.n));
                    // SAFETY: images [i0, i1) of dx are written by this task only.
                    let dxs = dxp.map(|p| unsafe { p.slice(i0 * g.in_len(), (i1 - i0) * g.in_len()) });
                    // SAFETY: as above, within the fresh buffer's capacity; its values are written there.
                    let fresh = fresh_p.map(|p| unsafe { p.slice_uninit(i0 * g.in_len(), (i1 - i0) * g.in_len()) });
                    let mut sums = vec![(0.0, 0.0); if take_sums { (i1 - i0) * g.c } else { 0 }];
                    run(i0, i1, &mut acc, (dxs, fresh, take_sums.then_some(&mut sums[..])), 1);
                    (acc, sums)
                })
                .unzip()
        } else {
            let mut dw = zeroed_partial(if want_dw { w_data.len() } else { 0 });
            run(0, g.n, &mut dw, (dx_buf.as_deref_mut(), None, None), nthreads);
            (vec![dw], vec![])
        };
        drop(dx_buf);
        if res_bn.is_some() {
            xs.set_grad_sums(sums.concat());
        }
        if fresh {
            // SAFETY: the chunks cover images 0..n and the tight kernel wrote every value of each.
            unsafe { fresh_dx.set_len(g.n * g.in_len()) };
            if bn_sums {
                xs.give_with_sums(grads, fresh_dx, sums.concat())?;
            } else {
                xs.give(grads, fresh_dx)?;
            }
        }
        if !want_dw {
            return Ok(());
        }
        // The partials hold each group's block transposed (kk x cog): summed in order, brought to
        // [co, cg, kh, kw] and added to the weight's gradient in one pass by all threads.
        accumulate_with(grads, &wt, w_data.len(), |d| add_partials(d, &partial, (g.cog(), g.kk())))?;
        keep_partials(partial);
        if let Some(bt) = bt {
            let db = grads.get_or_alloc_mut(&bt)?;
            for img in gout.chunks(g.out_len()) {
                for (c, plane) in img.chunks(g.hwo()).enumerate() {
                    db[c] += plane.iter().sum::<f32>();
                }
            }
        }
        Ok(())
    });
    y.plane_sums = sums.map(Into::into);
    y
}
