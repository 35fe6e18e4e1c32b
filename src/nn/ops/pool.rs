//! Pooling and resampling: max / average pooling, adaptive average pooling (PyTorch's bin rule),
//! global average pooling and nearest-neighbour upsampling. All parallel over NCHW planes.
use dfdx::prelude::Tape;
use rayon::prelude::*;

use super::blas::zeroed;
use super::conv::{out_size, RowPhases};
use super::deferred::bn_relu;
use crate::nn::var::{finish, Dev, Grads, Shape4, Var};

/// Max pooling with window `k`, stride `s`, padding `p` (padding never wins the max). Where the
/// input's batch norm + ReLU is deferred ([`super::deferred`]), its values are mapped as they are
/// read, not written out first. Each output keeps PyTorch's choice among equal values (the first in
/// row-major window order; a NaN wins), which is where its gradient goes.
pub fn max_pool2d<T: Tape<f32, Dev>>(x: Var<T>, k: usize, s: usize, p: usize) -> Var<T> {
    assert!(p * 2 <= k, "max_pool2d: padding {p} must be at most half the window {k}");
    let (xs, tape, sh, needs, pre) = x.split_deferred();
    let (ho, wo) = (out_size(sh.h, k, s, p), out_size(sh.w, k, s, p));
    let oshape = Shape4::new(sh.n, sh.c, ho, wo);
    let (hw, ohw) = (sh.plane(), ho * wo);
    let want_arg = T::OWNS_TAPE && needs;
    let mut arg = vec![0u32; if want_arg { oshape.numel() } else { 0 }];
    let xd = xs.data();
    let pool = |i: usize, o: &mut [f32], a: &mut [u32]| {
        let map = pre.as_deref().map(|d| (d.scale[i % sh.c], d.shift[i % sh.c]));
        max_pool_plane(&xd[i * hw..(i + 1) * hw], map, (sh.h, sh.w), (k, s, p), (ho, wo), o, a);
    };
    let mut out = zeroed(oshape.numel());
    if want_arg {
        out.par_chunks_mut(ohw).zip(arg.par_chunks_mut(ohw)).enumerate().for_each(|(i, (o, a))| pool(i, o, a));
    } else {
        out.par_chunks_mut(ohw).enumerate().for_each(|(i, o)| pool(i, o, &mut []));
    }
    finish(out, oshape, tape, move |grads: &mut Grads, gout, _| {
        if needs {
            let mut dx = xs.grad_buf(grads)?;
            dx.par_chunks_mut(hw).enumerate().for_each(|(i, d)| {
                for (g, &a) in gout[i * ohw..(i + 1) * ohw].iter().zip(&arg[i * ohw..(i + 1) * ohw]) {
                    d[a as usize] += *g;
                }
            });
        }
        Ok(())
    })
}

/// One plane of [`max_pool2d`]: every value of `out` written, and the plane index each came from
/// into `arg` unless it is empty. `map`: a deferred batch norm + ReLU's `(scale, shift)`.
///
/// Row by row: each input row the windows of an output row cover is mapped (where deferred) and
/// split into its [`RowPhases`], so a window column `kx` reads one phase at consecutive positions
/// for consecutive outputs, and the loop over the output row vectorises. The taps run in the
/// window's row-major order with a strict `>`, as the scalar rule.
fn max_pool_plane(
    x: &[f32],
    map: Option<(f32, f32)>,
    (h, w): (usize, usize),
    (k, s, p): (usize, usize, usize),
    (ho, wo): (usize, usize),
    out: &mut [f32],
    arg: &mut [u32],
) {
    let mut phases = RowPhases::new(w, s);
    // Where each maximum came from: in `arg` itself, or here where nothing keeps it.
    let mut scratch = if arg.is_empty() { vec![0u32; wo] } else { Vec::new() };
    for oy in 0..ho {
        let best = &mut out[oy * wo..(oy + 1) * wo];
        let from = if arg.is_empty() { &mut scratch[..] } else { &mut arg[oy * wo..(oy + 1) * wo] };
        best.fill(f32::NEG_INFINITY);
        from.fill(0);
        for ky in 0..k {
            let Some(iy) = (oy * s + ky).checked_sub(p).filter(|&iy| iy < h) else { continue };
            phases.split(&x[iy * w..(iy + 1) * w], |v| map.map_or(v, |(a, b)| bn_relu(v, a, b)));
            for kx in 0..k {
                // Input column ix = ox * s + kx - p, inside the row for ox in [lo, hi).
                let lo = p.saturating_sub(kx).div_ceil(s);
                let hi = ((w + p).saturating_sub(kx)).div_ceil(s).min(wo);
                if lo >= hi {
                    continue;
                }
                let ix0 = lo * s + kx - p;
                let j0 = (iy * w + ix0) as u32;
                let (b, f) = (&mut best[lo..hi], &mut from[lo..hi]);
                for (m, ((b, f), &v)) in b.iter_mut().zip(f.iter_mut()).zip(&phases.from(ix0)[..hi - lo]).enumerate() {
                    // NaN propagates like PyTorch's max pooling. Selected by mask, without a
                    // branch, so the loop vectorises.
                    let take = ((v > *b) | v.is_nan()) as u32;
                    let keep = take.wrapping_sub(1);
                    *b = f32::from_bits((b.to_bits() & keep) | (v.to_bits() & !keep));
                    *f = (*f & keep) | ((j0 + (m * s) as u32) & !keep);
                }
            }
        }
    }
}

/// A pooling window over one axis: `[start, end)` in input coordinates for each output index.
type Bins = Vec<(usize, usize)>;

/// Averages over rectangular bins (`rows x cols`), dividing by `div(bin)`.
fn bin_average<T: Tape<f32, Dev>>(x: Var<T>, rows: Bins, cols: Bins, divisors: Vec<f32>) -> Var<T> {
    let (xs, tape, sh, needs) = x.split();
    let (ho, wo) = (rows.len(), cols.len());
    let oshape = Shape4::new(sh.n, sh.c, ho, wo);
    let (hw, ohw) = (sh.plane(), ho * wo);
    let mut out = zeroed(oshape.numel());
    let xd = xs.data();
    out.par_chunks_mut(ohw).enumerate().for_each(|(i, o)| {
        let xp = &xd[i * hw..(i + 1) * hw];
        for (oy, &(y0, y1)) in rows.iter().enumerate() {
            for (ox, &(x0, x1)) in cols.iter().enumerate() {
                let mut acc = 0.0f32;
                for y in y0..y1 {
                    acc += xp[y * sh.w + x0..y * sh.w + x1].iter().sum::<f32>();
                }
                o[oy * wo + ox] = acc / divisors[oy * wo + ox];
            }
        }
    });
    finish(out, oshape, tape, move |grads: &mut Grads, gout, _| {
        if needs {
            let mut dx = xs.grad_buf(grads)?;
            dx.par_chunks_mut(hw).enumerate().for_each(|(i, d)| {
                let gp = &gout[i * ohw..(i + 1) * ohw];
                for (oy, &(y0, y1)) in rows.iter().enumerate() {
                    for (ox, &(x0, x1)) in cols.iter().enumerate() {
                        let g = gp[oy * wo + ox] / divisors[oy * wo + ox];
                        for y in y0..y1 {
                            d[y * sh.w + x0..y * sh.w + x1].iter_mut().for_each(|v| *v += g);
                        }
                    }
                }
            });
        }
        Ok(())
    })
}

/// Average pooling with window `k`, stride `s`, zero padding `p`; padded cells count in the divisor
/// (PyTorch's default `count_include_pad=True`).
pub fn avg_pool2d<T: Tape<f32, Dev>>(x: Var<T>, k: usize, s: usize, p: usize) -> Var<T> {
    let sh = x.shape;
    let axis = |len: usize| -> Bins {
        (0..out_size(len, k, s, p))
            .map(|o| {
                let a = (o * s) as isize - p as isize;
                (a.max(0) as usize, ((a + k as isize) as usize).min(len))
            })
            .collect()
    };
    let (rows, cols) = (axis(sh.h), axis(sh.w));
    let div = vec![(k * k) as f32; rows.len() * cols.len()];
    bin_average(x, rows, cols, div)
}

/// Adaptive average pooling to `(oh, ow)`: bin `i` covers `[floor(i*L/o), ceil((i+1)*L/o))`.
pub fn adaptive_avg_pool2d<T: Tape<f32, Dev>>(x: Var<T>, oh: usize, ow: usize) -> Var<T> {
    let sh = x.shape;
    let axis = |len: usize, o: usize| -> Bins { (0..o).map(|i| (i * len / o, ((i + 1) * len).div_ceil(o))).collect() };
    let (rows, cols) = (axis(sh.h, oh), axis(sh.w, ow));
    let div = rows.iter().flat_map(|r| cols.iter().map(move |c| ((r.1 - r.0) * (c.1 - c.0)) as f32)).collect();
    bin_average(x, rows, cols, div)
}

/// Global average pooling: `(n, c, h, w)` to the matrix `(n, c)`.
pub fn global_avg_pool<T: Tape<f32, Dev>>(x: Var<T>) -> Var<T> {
    let v = adaptive_avg_pool2d(x, 1, 1);
    let s = v.shape;
    v.with_shape(Shape4::mat(s.n, s.c))
}

/// Nearest-neighbour resampling to `(oh, ow)`: output cell `i` reads input `floor(i * L / o)`
/// (PyTorch's `mode="nearest"`).
pub fn upsample_nearest<T: Tape<f32, Dev>>(x: Var<T>, oh: usize, ow: usize) -> Var<T> {
    let (xs, tape, sh, needs) = x.split();
    let oshape = Shape4::new(sh.n, sh.c, oh, ow);
    let (hw, ohw) = (sh.plane(), oh * ow);
    let src: Vec<usize> = (0..ohw).map(|j| ((j / ow) * sh.h / oh) * sh.w + (j % ow) * sh.w / ow).collect();
    let mut out = zeroed(oshape.numel());
    let xd = xs.data();
    out.par_chunks_mut(ohw).enumerate().for_each(|(i, o)| {
        let xp = &xd[i * hw..(i + 1) * hw];
        for (o, &j) in o.iter_mut().zip(&src) {
            *o = xp[j];
        }
    });
    finish(out, oshape, tape, move |grads: &mut Grads, gout, _| {
        if needs {
            let mut dx = xs.grad_buf(grads)?;
            dx.par_chunks_mut(hw).enumerate().for_each(|(i, d)| {
                for (g, &j) in gout[i * ohw..(i + 1) * ohw].iter().zip(&src) {
                    d[j] += *g;
                }
            });
        }
        Ok(())
    })
}
