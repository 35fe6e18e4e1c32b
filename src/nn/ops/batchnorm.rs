//! Fused 2-D batch normalisation with optional ReLU, parallel over channel planes.
//!
//! Training mode normalises with the batch statistics (biased variance) and updates the running
//! statistics as PyTorch does (`running = (1 - momentum) * running + momentum * batch`, unbiased
//! variance). Evaluation mode uses the running statistics. Sums are taken per plane in f32 lanes and
//! combined in f64, so statistics and gradients stay accurate for large batches.

use dfdx::prelude::Tape;
use rayon::prelude::*;

use super::blas::written;
use super::bn_grad::{masked, DeferredGrad, DxPlane, ResidualSums};
use super::deferred::{bn_relu, Deferred};
use super::elementwise::relu_grad;
use super::prefetch::Stream;
use crate::nn::var::{accumulate, finish, finish_deferred, merge_tapes, Dev, Flat, Grads, Saved, Shape4, Var};

/// Running statistics of a batch-norm layer (PyTorch buffers `running_mean`, `running_var`,
/// `num_batches_tracked`).
#[derive(Clone, Debug, PartialEq)]
pub struct RunningStats {
    pub mean: Vec<f32>,
    pub var: Vec<f32>,
    pub batches: i64,
}

impl RunningStats {
    pub fn new(c: usize) -> Self {
        Self { mean: vec![0.0; c], var: vec![1.0; c], batches: 0 }
    }
}

/// Batch-norm settings.
#[derive(Clone, Copy, Debug)]
pub struct BnCfg {
    pub eps: f32,
    pub momentum: f32,
    pub relu: bool,
    /// With `relu` and no residual: the output is not written but deferred to the convolution that
    /// reads it ([`super::deferred`]), which must be the value's only reader.
    pub defer: bool,
}

impl Default for BnCfg {
    fn default() -> Self {
        Self { eps: 1e-5, momentum: 0.1, relu: false, defer: false }
    }
}

/// Two running sums over a plane, kept in 16 f32 lanes (so the loop vectorises) and flushed into f64
/// every 1,024 elements, so long planes keep f64-like accuracy at f32 speed.
struct PairSums {
    a: [f32; 16],
    b: [f32; 16],
    a64: f64,
    b64: f64,
}

impl PairSums {
    /// Sums pairs over the `n` elements of a plane: `chunk(i, l)` gives the f32 pair of lane `l` of
    /// the 16-element chunk starting at `i` (for the first `16 * (n / 16)` elements), `tail(k)` the
    /// f64 pair of each remaining element `k`.
    #[inline(always)]
    fn over(n: usize, chunk: impl Fn(usize, usize) -> (f32, f32), tail: impl Fn(usize) -> (f64, f64)) -> (f64, f64) {
        let mut p = PairSums { a: [0.0; 16], b: [0.0; 16], a64: 0.0, b64: 0.0 };
        for c in 0..n / 16 {
            for l in 0..16 {
                let (a, b) = chunk(16 * c, l);
                p.a[l] += a;
                p.b[l] += b;
            }
            if c % 64 == 63 {
                p.flush();
            }
        }
        p.flush();
        for k in n / 16 * 16..n {
            let (a, b) = tail(k);
            p.a64 += a;
            p.b64 += b;
        }
        (p.a64, p.b64)
    }

    #[inline(always)]
    fn flush(&mut self) {
        self.a64 += self.a.iter().map(|&v| v as f64).sum::<f64>();
        self.b64 += self.b.iter().map(|&v| v as f64).sum::<f64>();
        self.a = [0.0; 16];
        self.b = [0.0; 16];
    }
}

/// The 16 elements of `v` from `i` (one bounds check per chunk, none per lane).
#[inline(always)]
fn lanes(v: &[f32], i: usize) -> &[f32; 16] {
    v[i..i + 16].try_into().unwrap()
}

/// Sum and sum of squares of a slice, in f32 lanes combined in f64.
fn sums(x: &[f32]) -> (f64, f64) {
    PairSums::over(
        x.len(),
        |i, l| {
            let v = lanes(x, i)[l];
            (v, v * v)
        },
        |k| (x[k] as f64, x[k] as f64 * x[k] as f64),
    )
}

/// `(sum g', sum g' * (x - mu) * is)` of one plane, in f32 lanes combined in f64 (as [`sums`]),
/// where `g'` is `g` through the fused ReLU's backward if `relu` gives the plane's `(scale, shift)`:
/// the ReLU's output is recomputed as `x * scale + shift` (the forward's very expression, so the
/// same mask) instead of read back, one pass over memory fewer.
fn grad_sums(g: &[f32], x: &[f32], relu: Option<(f32, f32)>, guided: bool, mu: f32, is: f32) -> (f64, f64) {
    match relu {
        Some(ab) => grad_sums_with::<true>(g, x, ab, guided, mu, is),
        None => grad_sums_with::<false>(g, x, (1.0, 0.0), guided, mu, is),
    }
}

/// [`grad_sums`]; without `MASK`, the affine `ab` is ignored.
#[inline(always)]
fn grad_sums_with<const MASK: bool>(
    g: &[f32],
    x: &[f32],
    ab: (f32, f32),
    guided: bool,
    mu: f32,
    is: f32,
) -> (f64, f64) {
    let (a, b) = PairSums::over(
        g.len(),
        |i, l| {
            let xi = lanes(x, i)[l];
            let gi = masked::<MASK>(lanes(g, i)[l], xi, ab, guided);
            (gi, gi * (xi - mu))
        },
        |k| {
            let gi = masked::<MASK>(g[k], x[k], ab, guided);
            (gi as f64, (gi * (x[k] - mu)) as f64)
        },
    );
    (a, b * is as f64)
}

/// Per-channel totals of per-plane pairs computed by `f` over all `n*c` planes.
fn channel_totals(s: Shape4, f: impl Fn(usize) -> (f64, f64) + Sync + Send) -> Vec<(f64, f64)> {
    plane_totals(s, (0..s.n * s.c).into_par_iter().map(&f).collect())
}

/// Per-channel totals of the pairs of all `n*c` planes, in plane order.
fn plane_totals(s: Shape4, per_plane: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    let mut tot = vec![(0.0, 0.0); s.c];
    for (i, (a, b)) in per_plane.into_iter().enumerate() {
        tot[i % s.c].0 += a;
        tot[i % s.c].1 += b;
    }
    tot
}

/// `1 / sqrt(var + eps)` of the running variances (evaluation mode).
fn running_invstd(stats: &RunningStats, eps: f32) -> Vec<f32> {
    stats.var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect()
}

/// Per-channel `(scale, shift)` with `bn(x) = x * scale + shift`: `scale = gamma * invstd`,
/// `shift = beta - mean * scale`.
fn affine(gamma: &[f32], beta: &[f32], mean: &[f32], invstd: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let scale: Vec<f32> = gamma.iter().zip(invstd).map(|(g, i)| g * i).collect();
    let shift = beta.iter().zip(mean).zip(&scale).map(|((b, m), k)| b - m * k).collect();
    (scale, shift)
}

/// The evaluation-mode batch norm as a per-channel `(scale, shift)` (what [`batch_norm`] applies
/// with `train` false), for folding it into the convolution before it.
pub fn eval_affine(gamma: &[f32], beta: &[f32], stats: &RunningStats, eps: f32) -> (Vec<f32>, Vec<f32>) {
    affine(gamma, beta, &stats.mean, &running_invstd(stats, eps))
}

/// Fused batch norm (+ residual add) (+ ReLU): `relu?(bn(x) + res)`. `gamma`/`beta` are the affine
/// parameters with current values `g_data`/`b_data`. In training the running statistics are updated.
/// With a residual `res` (a ResNet block's shortcut), the add is one more read in the output pass
/// instead of a pass of its own, and its backward (the ReLU's mask and the shortcut's copy of the
/// gradient) is done plane by plane in the batch norm's first backward pass; with the ReLU, where
/// the convolution that reads the output adds the last contribution to its gradient on the tight
/// kernel, the mask and that pass's sums are taken in its epilogue instead (`bn_grad::ResidualSums`).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm<T: Tape<f32, Dev>>(
    x: Var<T>,
    res: Option<Var<T>>,
    gamma: &Flat,
    g_data: Vec<f32>,
    beta: &Flat,
    b_data: Vec<f32>,
    stats: &mut RunningStats,
    train: bool,
    cfg: BnCfg,
) -> Var<T> {
    let s = x.shape;
    assert_eq!(g_data.len(), s.c, "batch_norm: {} channels, gamma has {}", s.c, g_data.len());
    let m = s.n * s.plane();
    let hw = s.plane();
    // Per-plane sums its producer (a convolution's output pass) computed, when it did.
    let plane_sums = x.plane_sums.clone().filter(|p| p.len() == s.n * s.c);
    let (xs, tape, _, x_needs_grad) = x.split();
    let (res, tape) = match res {
        Some(r) => {
            assert_eq!(r.shape, s, "batch_norm: residual of shape {}, output {s}", r.shape);
            let (rs, rt, _, r_needs_grad) = r.split();
            (Some((rs, r_needs_grad)), merge_tapes(tape, rt))
        }
        None => (None, tape),
    };
    let xd = xs.data();
    let (mean, invstd): (Vec<f32>, Vec<f32>) = if train {
        assert!(m > 1, "batch_norm in training mode needs more than one value per channel");
        let tot = match plane_sums {
            Some(p) => channel_totals(s, |i| p[i]),
            None => channel_totals(s, |i| sums(&xd[i * hw..(i + 1) * hw])),
        };
        let mut mean = Vec::with_capacity(s.c);
        let mut invstd = Vec::with_capacity(s.c);
        for (c, (sm, sq)) in tot.into_iter().enumerate() {
            let mu = sm / m as f64;
            let var = (sq / m as f64 - mu * mu).max(0.0);
            mean.push(mu as f32);
            invstd.push((1.0 / (var + cfg.eps as f64).sqrt()) as f32);
            let unbiased = var * m as f64 / (m as f64 - 1.0);
            let mo = cfg.momentum as f64;
            stats.mean[c] = ((1.0 - mo) * stats.mean[c] as f64 + mo * mu) as f32;
            stats.var[c] = ((1.0 - mo) * stats.var[c] as f64 + mo * unbiased) as f32;
        }
        stats.batches += 1;
        (mean, invstd)
    } else {
        (stats.mean.clone(), running_invstd(stats, cfg.eps))
    };
    let (scales, shifts) = affine(&g_data, &b_data, &mean, &invstd);
    let defer = cfg.defer && cfg.relu && res.is_none();
    let rd = res.as_ref().map(|(r, _)| r.data());
    let out = (!defer).then(|| {
        written(s.numel(), hw, true, |i, o| {
            let (scale, shift) = (scales[i % s.c], shifts[i % s.c]);
            let xi = &xd[i * hw..(i + 1) * hw];
            match (rd, cfg.relu) {
                (None, false) => o.iter_mut().zip(xi).for_each(|(o, &v)| _ = o.write(v * scale + shift)),
                (None, true) => o.iter_mut().zip(xi).for_each(|(o, &v)| _ = o.write(bn_relu(v, scale, shift))),
                (Some(rd), relu) => {
                    let it = o.iter_mut().zip(xi).zip(&rd[i * hw..(i + 1) * hw]);
                    if relu {
                        it.for_each(|((o, &v), &r)| _ = o.write((v * scale + shift + r).max(0.0)));
                    } else {
                        it.for_each(|((o, &v), &r)| _ = o.write(v * scale + shift + r));
                    }
                }
            }
        })
        .0
    });
    let deferred =
        defer.then(|| (xs.clone(), Deferred { scale: scales.clone(), shift: shifts.clone(), mean: mean.clone() }));
    // A block's end asks the convolution that reads its output for the ReLU's backward and its sums.
    let asked = (res.is_some() && cfg.relu && super::bn_grad::asking_residual_sums())
        .then(|| ResidualSums { z: xs.without_slot(), mean: mean.clone().into() });
    let ask = asked.is_some();
    let (gt, bt) = (gamma.clone(), beta.clone());
    let backward = move |grads: &mut Grads, mut gout: Vec<f32>, y: &Saved| {
        // The request has served (it holds the input `z`, which handles to the output kept after
        // the backward would otherwise keep alive).
        if ask {
            y.forget_residual_sums();
        }
        if super::elementwise::all_zero(&gout) {
            return Ok(());
        }
        let xd = xs.data();
        let guided = super::elementwise::guided();
        // Without a residual, the fused ReLU's backward is applied on the fly in both passes (g'
        // below), its output recomputed from x with the forward's (scale, shift).
        let relu_of = |c: usize| (cfg.relu && res.is_none()).then_some((scales[c], shifts[c]));
        // dbeta = sum g' ; dgamma = sum g' * xhat
        // Where the convolution that read the deferred output computed these sums with its input
        // gradient (which is then all of `gout`), they are taken as they are; so too where the
        // convolution that added the last contribution to a block end's gradient took them, with
        // the ReLU's backward ([`ResidualSums`]: `gout` is then g').
        let given = y.take_grad_sums().filter(|p| (defer || ask) && !guided && p.len() == s.n * s.c);
        #[cfg(test)]
        if ask && given.is_some() {
            super::bn_grad::RESIDUAL_SUMS_TAKEN.set(super::bn_grad::RESIDUAL_SUMS_TAKEN.get() + 1);
        }
        let tot = match (&res, given) {
            (_, Some(p)) => channel_totals(s, |i| (p[i].0, p[i].1 * invstd[i % s.c] as f64)),
            (None, None) => {
                let ahead = [Stream::of(&gout), Stream::of(xd)];
                channel_totals(s, |i| {
                    let c = i % s.c;
                    ahead.iter().for_each(|s| s.ahead(i, hw));
                    grad_sums(
                        &gout[i * hw..(i + 1) * hw],
                        &xd[i * hw..(i + 1) * hw],
                        relu_of(c),
                        guided,
                        mean[c],
                        invstd[c],
                    )
                })
            }
            (Some(_), None) => {
                let yd = y.data();
                // g' (through the ReLU of the output y, if any) over g, a plane at a time with its
                // sums while it is in cache. g' is also the residual's gradient: it is handed on as it
                // is, and the input gradient gets a buffer of its own.
                let ahead = [Stream::of(&gout), Stream::of(yd), Stream::of(xd)];
                let per_plane = gout.par_chunks_mut(hw).enumerate().map(|(i, gi)| {
                    ahead.iter().for_each(|s| s.ahead(i, hw));
                    if cfg.relu {
                        gi.iter_mut().zip(&yd[i * hw..]).for_each(|(g, &v)| *g = relu_grad(*g, v, guided));
                    }
                    let c = i % s.c;
                    grad_sums(gi, &xd[i * hw..(i + 1) * hw], None, guided, mean[c], invstd[c])
                });
                plane_totals(s, per_plane.collect())
            }
        };
        let dbeta: Vec<f32> = tot.iter().map(|t| t.0 as f32).collect();
        let dgamma: Vec<f32> = tot.iter().map(|t| t.1 as f32).collect();
        let plane = |i: usize| {
            let c = i % s.c;
            let (is, gm) = (invstd[c], g_data[c]);
            let k = if train { gm * is / m as f32 } else { gm * is };
            (c, DxPlane { train, k, m: m as f32, db: dbeta[c], dg: dgamma[c], mu: mean[c], is })
        };
        match (&res, x_needs_grad) {
            (Some((rs, r_needs_grad)), _) => {
                if x_needs_grad {
                    let ahead = [Stream::of(&gout), Stream::of(xd)];
                    let (dx, _) = written(gout.len(), hw, true, |i, o| {
                        ahead.iter().for_each(|s| s.ahead(i, hw));
                        plane(i).1.write(o, &gout[i * hw..(i + 1) * hw], &xd[i * hw..(i + 1) * hw])
                    });
                    xs.give(grads, dx)?;
                }
                if *r_needs_grad {
                    rs.give(grads, gout)?;
                }
            }
            (None, true) => {
                // Written over the output gradient, element by element: its lines are in cache from
                // the read, where a separate buffer would be fetched before being written. Or not
                // written at all where nothing else has flowed into x's gradient: its producer maps
                // the values as it copies them, if it can ([`DeferredGrad`]).
                let relu = (0..s.c).map(relu_of).collect();
                let map = DeferredGrad::new((0..s.c).map(|c| plane(c).1).collect(), relu, guided, xs.without_slot(), s);
                xs.give_mapped(grads, gout, map)?;
            }
            (None, false) => {}
        }
        if super::elementwise::params_frozen() {
            return Ok(());
        }
        accumulate(grads, &gt, &dgamma)?;
        accumulate(grads, &bt, &dbeta)
    };
    match (out, deferred) {
        (Some(out), _) => {
            let y = finish(out, s, tape, backward);
            if let Some(a) = asked {
                y.want_residual_sums(a);
            }
            y
        }
        (None, Some((x, pre))) => finish_deferred(&x, s, pre, tape, backward),
        (None, None) => unreachable!("an output is written unless deferred"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lane sums (16 lanes, f64 flush every 1,024 elements, scalar tail) against plain f64 sums,
    /// on a plane long enough for two flushes and a tail.
    #[test]
    fn lane_sums_match_f64_sums() {
        let n = 2 * 1024 + 16 * 3 + 5;
        let x: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0 + 3.0).collect();
        let g: Vec<f32> = (0..n).map(|i| ((i * 53 % 97) as f32 - 48.0) / 11.0).collect();
        // The fused ReLU's mask comes from its recomputed output y = x * scale + shift.
        let ab = (-0.7f32, 2.0f32);
        let y: Vec<f32> = x.iter().map(|&v| v * ab.0 + ab.1).collect();
        let (s, q) = sums(&x);
        let s_ref: f64 = x.iter().map(|&v| v as f64).sum();
        let q_ref: f64 = x.iter().map(|&v| v as f64 * v as f64).sum();
        // f32 lanes: relative error of the order of f32 epsilon times the 64 adds per lane and flush.
        let abs: f64 = x.iter().map(|&v| v.abs() as f64).sum();
        assert!((s - s_ref).abs() < 1e-6 * abs, "{s} vs {s_ref}");
        assert!((q - q_ref).abs() < 1e-6 * q_ref, "{q} vs {q_ref}");
        let (mu, is) = (2.5f32, 0.8f32);
        for (mask, guided) in [(false, false), (true, false), (true, true)] {
            let (a, b) = grad_sums(&g, &x, mask.then_some(ab), guided, mu, is);
            let gv = |k: usize| {
                let keep = !mask || (y[k] > 0.0 && (!guided || g[k] >= 0.0));
                if keep {
                    g[k] as f64
                } else {
                    0.0
                }
            };
            let a_ref: f64 = (0..n).map(gv).sum();
            let b_ref: f64 = (0..n).map(|k| gv(k) * (x[k] as f64 - mu as f64)).sum::<f64>() * is as f64;
            assert!(
                (a - a_ref).abs() < 1e-6 * g.iter().map(|&v| v.abs() as f64).sum::<f64>(),
                "mask {mask} guided {guided}: {a} vs {a_ref}"
            );
            assert!((b - b_ref).abs() < 1e-4 * b_ref.abs().max(1.0), "mask {mask} guided {guided}: {b} vs {b_ref}");
            assert!(a_ref.abs() > 1.0 && b_ref.abs() > 1.0, "non-trivial sums");
        }
    }
}
