//! Ops for feature fusion and channel bookkeeping (ReviewKD's attention-based fusion, ShuffleNet's
//! split/concat/shuffle): logistic sigmoid, channel concatenation and selection, and the per-pixel
//! attention mix `x·z₀ + y·z₁`.
use dfdx::prelude::Tape;
use rayon::prelude::*;

use super::blas::zeroed;
use crate::nn::var::{finish, merge_tapes, Dev, Grads, Shape4, Var};

/// `1 / (1 + e^(−x))`, element-wise.
pub fn sigmoid<T: Tape<f32, Dev>>(x: Var<T>) -> Var<T> {
    let (xs, tape, s, needs) = x.split();
    let mut out = Vec::with_capacity(s.numel());
    xs.data().par_iter().with_min_len(1 << 14).map(|&v| 1.0 / (1.0 + (-v).exp())).collect_into_vec(&mut out);
    finish(out, s, tape, move |grads: &mut Grads, gout, y| {
        if needs {
            let mut d = xs.grad_buf(grads)?;
            d.par_iter_mut().zip(gout.par_iter().zip(y.data().par_iter())).with_min_len(1 << 14).for_each(
                |(d, (g, y))| {
                    *d += g * y * (1.0 - y);
                },
            );
        }
        Ok(())
    })
}

/// `[a, b]` along the channel axis (same batch size and spatial size).
pub fn concat_channels<T: Tape<f32, Dev>>(a: Var<T>, b: Var<T>) -> Var<T> {
    assert!(
        a.shape.n == b.shape.n && a.shape.h == b.shape.h && a.shape.w == b.shape.w,
        "concat_channels: shapes {} and {} differ outside the channels",
        a.shape,
        b.shape
    );
    let (asv, ta, sa, na) = a.split();
    let (bsv, tb, sb, nb) = b.split();
    let tape = merge_tapes(ta, tb);
    let (pa, pb) = (sa.per_sample(), sb.per_sample());
    let s = Shape4::new(sa.n, sa.c + sb.c, sa.h, sa.w);
    let mut out = zeroed(s.numel());
    out.par_chunks_mut(pa + pb).enumerate().for_each(|(i, o)| {
        o[..pa].copy_from_slice(&asv.data()[i * pa..(i + 1) * pa]);
        o[pa..].copy_from_slice(&bsv.data()[i * pb..(i + 1) * pb]);
    });
    finish(out, s, tape, move |grads: &mut Grads, gout, _| {
        for (sv, needs, off, len) in [(&asv, na, 0, pa), (&bsv, nb, pa, pb)] {
            if needs {
                let mut d = sv.grad_buf(grads)?;
                d.par_chunks_mut(len).zip(gout.par_chunks(pa + pb)).for_each(|(d, g)| {
                    for (d, g) in d.iter_mut().zip(&g[off..off + len]) {
                        *d += g;
                    }
                });
            }
        }
        Ok(())
    })
}

/// `x · z[:, 0] + y · z[:, 1]`: two feature maps of equal shape mixed per pixel by the two channels of
/// `z` (shape `(n, 2, h, w)`), broadcast over the feature channels.
pub fn attention_mix<T: Tape<f32, Dev>>(x: Var<T>, y: Var<T>, z: Var<T>) -> Var<T> {
    assert_eq!(x.shape, y.shape, "attention_mix: features {} and {} differ", x.shape, y.shape);
    assert_eq!(
        z.shape,
        Shape4::new(x.shape.n, 2, x.shape.h, x.shape.w),
        "attention_mix: attention must be (n, 2, h, w) for features {}",
        x.shape
    );
    let (xs, tx, s, nx) = x.split();
    let (ys, ty, _, ny) = y.split();
    let (zs, tz, _, nz) = z.split();
    let tape = merge_tapes(merge_tapes(tx, ty), tz);
    let (c, hw, ps) = (s.c, s.plane(), s.per_sample());
    let mut out = zeroed(s.numel());
    out.par_chunks_mut(ps).enumerate().for_each(|(i, o)| {
        let (xd, yd) = (&xs.data()[i * ps..(i + 1) * ps], &ys.data()[i * ps..(i + 1) * ps]);
        let (z0, z1) = zs.data()[i * 2 * hw..(i + 1) * 2 * hw].split_at(hw);
        for ch in 0..c {
            let r = ch * hw..(ch + 1) * hw;
            for (((o, a), b), (p, q)) in o[r.clone()].iter_mut().zip(&xd[r.clone()]).zip(&yd[r]).zip(z0.iter().zip(z1))
            {
                *o = a * p + b * q;
            }
        }
    });
    finish(out, s, tape, move |grads: &mut Grads, gout, _| {
        // dx = g·z0, dy = g·z1, dz0 = Σ_c g·x, dz1 = Σ_c g·y.
        for (sv, needs, zi) in [(&xs, nx, 0), (&ys, ny, 1)] {
            if needs {
                let mut d = sv.grad_buf(grads)?;
                d.par_chunks_mut(ps).enumerate().for_each(|(i, d)| {
                    let zr = &zs.data()[(i * 2 + zi) * hw..(i * 2 + zi + 1) * hw];
                    for (ch, d) in d.chunks_mut(hw).enumerate() {
                        let g = &gout[i * ps + ch * hw..i * ps + (ch + 1) * hw];
                        for ((d, g), z) in d.iter_mut().zip(g).zip(zr) {
                            *d += g * z;
                        }
                    }
                });
            }
        }
        if nz {
            let mut d = zs.grad_buf(grads)?;
            d.par_chunks_mut(2 * hw).enumerate().for_each(|(i, d)| {
                let (d0, d1) = d.split_at_mut(hw);
                for ch in 0..c {
                    let r = i * ps + ch * hw..i * ps + (ch + 1) * hw;
                    let (g, xd, yd) = (&gout[r.clone()], &xs.data()[r.clone()], &ys.data()[r]);
                    for p in 0..hw {
                        d0[p] += g[p] * xd[p];
                        d1[p] += g[p] * yd[p];
                    }
                }
            });
        }
        Ok(())
    })
}

/// The channels `idx` of `x`, in that order (`out[:, j] = x[:, idx[j]]`; an index may repeat, its
/// gradients add up). Slicing a channel range and ShuffleNet's channel shuffle are both this op.
pub fn select_channels<T: Tape<f32, Dev>>(x: Var<T>, idx: &[usize]) -> Var<T> {
    let c = x.shape.c;
    assert!(idx.iter().all(|&i| i < c), "select_channels: index out of range for {} channels", c);
    let (xs, tape, sx, needs) = x.split();
    let hw = sx.h * sx.w;
    let s = Shape4::new(sx.n, idx.len(), sx.h, sx.w);
    let idx = idx.to_vec();
    let mut out = zeroed(s.numel());
    out.par_chunks_mut(s.per_sample()).enumerate().for_each(|(n, o)| {
        let x = &xs.data()[n * sx.per_sample()..(n + 1) * sx.per_sample()];
        for (o, &i) in o.chunks_mut(hw).zip(&idx) {
            o.copy_from_slice(&x[i * hw..(i + 1) * hw]);
        }
    });
    finish(out, s, tape, move |grads: &mut Grads, gout, _| {
        if needs {
            let mut d = xs.grad_buf(grads)?;
            d.par_chunks_mut(c * hw).zip(gout.par_chunks(idx.len() * hw)).for_each(|(d, g)| {
                for (g, &i) in g.chunks(hw).zip(&idx) {
                    for (d, g) in d[i * hw..(i + 1) * hw].iter_mut().zip(g) {
                        *d += g;
                    }
                }
            });
        }
        Ok(())
    })
}

/// Channels `[from, to)` of `x`.
pub fn slice_channels<T: Tape<f32, Dev>>(x: Var<T>, from: usize, to: usize) -> Var<T> {
    select_channels(x, &(from..to).collect::<Vec<_>>())
}

/// ShuffleNet's channel shuffle with `g` groups: channels viewed as `(g, c/g)`, transposed to
/// `(c/g, g)` and flattened, so output channel `j` is input channel `(j mod g)·(c/g) + ⌊j/g⌋`.
pub fn channel_shuffle<T: Tape<f32, Dev>>(x: Var<T>, g: usize) -> Var<T> {
    let c = x.shape.c;
    assert!(g >= 1 && c.is_multiple_of(g), "channel_shuffle: {c} channels not divisible into {g} groups");
    let per = c / g;
    select_channels(x, &(0..c).map(|j| (j % g) * per + j / g).collect::<Vec<_>>())
}
