//! Fused 2-D batch normalisation with optional ReLU, parallel over channel planes.
//!
//! Training mode normalises with the batch statistics (biased variance) and updates the running
//! statistics as PyTorch does (`running = (1 - momentum) * running + momentum * batch`, unbiased
//! variance). Evaluation mode uses the running statistics. Sums are taken per plane in f32 lanes and
//! combined in f64, so statistics and gradients stay accurate for large batches.
use dfdx::prelude::Tape;
use rayon::prelude::*;

use super::blas::zeroed;
use super::elementwise::mask_relu_grad;
use crate::nn::var::{accumulate, finish, Dev, Flat, Grads, Shape4, Var};

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
}

impl Default for BnCfg {
    fn default() -> Self {
        Self { eps: 1e-5, momentum: 0.1, relu: false }
    }
}

/// Sum and sum of squares of a slice, in f32 lanes combined in f64.
fn sums(x: &[f32]) -> (f64, f64) {
    let mut s = [0.0f32; 16];
    let mut q = [0.0f32; 16];
    let chunks = x.chunks_exact(16);
    let rem = chunks.remainder();
    let (mut s64, mut q64) = (0.0f64, 0.0f64);
    for (i, ch) in chunks.enumerate() {
        for l in 0..16 {
            s[l] += ch[l];
            q[l] += ch[l] * ch[l];
        }
        if i % 64 == 63 {
            s64 += s.iter().map(|&v| v as f64).sum::<f64>();
            q64 += q.iter().map(|&v| v as f64).sum::<f64>();
            s = [0.0; 16];
            q = [0.0; 16];
        }
    }
    s64 += s.iter().map(|&v| v as f64).sum::<f64>();
    q64 += q.iter().map(|&v| v as f64).sum::<f64>();
    for &v in rem {
        s64 += v as f64;
        q64 += (v as f64) * (v as f64);
    }
    (s64, q64)
}

/// Per-channel totals of per-plane pairs computed by `f` over all `n*c` planes.
fn channel_totals(s: Shape4, f: impl Fn(usize) -> (f64, f64) + Sync + Send) -> Vec<(f64, f64)> {
    let per_plane: Vec<(f64, f64)> = (0..s.n * s.c).into_par_iter().map(&f).collect();
    let mut tot = vec![(0.0, 0.0); s.c];
    for (i, (a, b)) in per_plane.into_iter().enumerate() {
        tot[i % s.c].0 += a;
        tot[i % s.c].1 += b;
    }
    tot
}

/// Fused batch norm (+ ReLU). `gamma`/`beta` are the affine parameters with current values
/// `g_data`/`b_data`. With `stats: Some(..)` and `train`, the running statistics are updated.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm<T: Tape<f32, Dev>>(
    x: Var<T>,
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
    let (xs, tape, _, x_needs_grad) = x.split();
    let xd = xs.data();
    let (mean, invstd): (Vec<f32>, Vec<f32>) = if train {
        assert!(m > 1, "batch_norm in training mode needs more than one value per channel");
        let tot = channel_totals(s, |i| sums(&xd[i * hw..(i + 1) * hw]));
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
        (stats.mean.clone(), stats.var.iter().map(|v| 1.0 / (v + cfg.eps).sqrt()).collect())
    };
    let mut out = zeroed(s.numel());
    out.par_chunks_mut(hw).enumerate().for_each(|(i, o)| {
        let c = i % s.c;
        let scale = g_data[c] * invstd[c];
        let shift = b_data[c] - mean[c] * scale;
        let xi = &xd[i * hw..(i + 1) * hw];
        if cfg.relu {
            for (o, &v) in o.iter_mut().zip(xi) {
                *o = (v * scale + shift).max(0.0);
            }
        } else {
            for (o, &v) in o.iter_mut().zip(xi) {
                *o = v * scale + shift;
            }
        }
    });
    let (gt, bt) = (gamma.clone(), beta.clone());
    finish(out, s, tape, move |grads: &mut Grads, mut gout: Vec<f32>, y| {
        if super::elementwise::all_zero(&gout) {
            return Ok(());
        }
        let xd = xs.data();
        if cfg.relu {
            mask_relu_grad(&mut gout, y.data());
        }
        // dbeta = sum g ; dgamma = sum g * xhat
        let tot = channel_totals(s, |i| {
            let c = i % s.c;
            let (mu, is) = (mean[c], invstd[c]);
            let (mut sg, mut sgx) = (0.0f64, 0.0f64);
            for (ch_g, ch_x) in gout[i * hw..(i + 1) * hw].chunks(256).zip(xd[i * hw..(i + 1) * hw].chunks(256)) {
                let (mut a, mut b) = (0.0f32, 0.0f32);
                for (&g, &v) in ch_g.iter().zip(ch_x) {
                    a += g;
                    b += g * (v - mu) * is;
                }
                sg += a as f64;
                sgx += b as f64;
            }
            (sg, sgx)
        });
        let dbeta: Vec<f32> = tot.iter().map(|t| t.0 as f32).collect();
        let dgamma: Vec<f32> = tot.iter().map(|t| t.1 as f32).collect();
        if x_needs_grad {
            let dx = grads.get_or_alloc_mut(&xs.t)?;
            dx.par_chunks_mut(hw).enumerate().for_each(|(i, dx)| {
                let c = i % s.c;
                let (mu, is, gm) = (mean[c], invstd[c], g_data[c]);
                let gi = &gout[i * hw..(i + 1) * hw];
                let xi = &xd[i * hw..(i + 1) * hw];
                if train {
                    let k = gm * is / m as f32;
                    let (db, dg) = (dbeta[c], dgamma[c]);
                    for ((d, &g), &v) in dx.iter_mut().zip(gi).zip(xi) {
                        let xhat = (v - mu) * is;
                        *d += k * (m as f32 * g - db - xhat * dg);
                    }
                } else {
                    let k = gm * is;
                    for (d, &g) in dx.iter_mut().zip(gi) {
                        *d += k * g;
                    }
                }
            });
        }
        if super::elementwise::params_frozen() {
            return Ok(());
        }
        accumulate(grads, &gt, &dgamma)?;
        accumulate(grads, &bt, &dbeta)
    })
}
