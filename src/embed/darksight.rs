//! DarkSight (Xu et al. 2018, "Interpreting Deep Classifier by Visual Distillation of Dark
//! Knowledge"): every prediction vector becomes a 2-D point `y_i`, and a Naive-Bayes classifier on
//! those points — Student-t class conditionals (2 degrees of freedom, means `μ_c`, fixed isotropic
//! precision `h·I`) and a categorical prior `softmax(w)` — is trained jointly with them so that its
//! posterior `q(c | y_i)` matches the model's prediction `p(c | x_i)` under the symmetric KL divergence.
//!
//! Defaults follow the official code and demo (github.com/xukai92/darksight): `μ_c ~ N(0, C·I)`,
//! `h = 1/√(ln C)`, `w = ln 10` (a uniform prior), points start at the origin; three Adam optimisers
//! (means 2e-2, points 1e-2, prior 1e-6) over mini-batches of 1,000 in data order, 2,000 epochs; the
//! targets are annealed from temperature 10 down to the target temperature over the first 1,000
//! epochs, refreshed every 100. Everything is configurable; the result depends only on the inputs and
//! the seed (partial gradients are summed in a fixed order, whatever the thread count).
use anyhow::ensure;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::predictions::{argmax, log_softmax, log_softmax_in_place, log_softmax_rows};

/// Temperature annealing of the targets (the official `do_annealing`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Annealing {
    /// Epochs over which the temperature falls to the target.
    pub length: usize,
    /// Starting temperature.
    pub highest: f64,
    /// The targets are recomputed every `step` epochs.
    pub step: usize,
}

impl Default for Annealing {
    fn default() -> Self {
        Self { length: 1000, highest: 10.0, step: 100 }
    }
}

/// Where the points start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DarkSightInit {
    /// All at the origin (the official default).
    Origin,
    /// Each at the initial mean of its predicted class (the official `align()`).
    ClassMeans,
}

/// DarkSight's settings; the defaults are the official demo's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DarkSightConfig {
    pub epochs: usize,
    pub batch: usize,
    pub lr_means: f64,
    pub lr_points: f64,
    pub lr_prior: f64,
    /// The temperature of the predictions being visualised (after annealing).
    pub temperature: f64,
    pub annealing: Option<Annealing>,
    /// Precision `h` of the class conditionals; `None`: `1/√(ln C)`.
    pub precision: Option<f64>,
    pub init: DarkSightInit,
    pub seed: u64,
    pub progress: bool,
}

impl DarkSightConfig {
    /// A shorter schedule: `epochs` epochs with the annealing scaled to the first half (at least 10
    /// epochs per step), other settings as the official demo.
    pub fn quick(epochs: usize) -> Self {
        let length = (epochs / 2).max(1);
        Self {
            epochs,
            annealing: Some(Annealing { length, highest: 10.0, step: (length / 10).max(1) }),
            ..Self::default()
        }
    }
}

impl Default for DarkSightConfig {
    fn default() -> Self {
        Self {
            epochs: 2000,
            batch: 1000,
            lr_means: 2e-2,
            lr_points: 1e-2,
            lr_prior: 1e-6,
            temperature: 1.0,
            annealing: Some(Annealing::default()),
            precision: None,
            init: DarkSightInit::Origin,
            seed: 0,
            progress: false,
        }
    }
}

/// A trained DarkSight embedding.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DarkSight {
    pub num_classes: usize,
    /// `n` points, `[x, y]` each.
    pub points: Vec<[f64; 2]>,
    /// Class means `μ_c`.
    pub means: Vec<[f64; 2]>,
    /// Prior logits `w` (the prior is `softmax(w)`).
    pub prior_logits: Vec<f64>,
    pub precision: f64,
    /// Mean symmetric KL per epoch (at that epoch's temperature).
    pub loss: Vec<f64>,
    /// Mean symmetric KL of the result against the predictions at the target temperature.
    pub final_loss: f64,
    pub seconds: f64,
    pub config: DarkSightConfig,
}

/// Adam as in PyTorch (β = 0.9, 0.999, ε = 1e-8).
pub(crate) struct Adam {
    m: Vec<f64>,
    v: Vec<f64>,
    t: i32,
    lr: f64,
}

impl Adam {
    pub(crate) fn new(len: usize, lr: f64) -> Self {
        Self { m: vec![0.0; len], v: vec![0.0; len], t: 0, lr }
    }
    pub(crate) fn step(&mut self, p: &mut [f64], g: &[f64]) {
        const B1: f64 = 0.9;
        const B2: f64 = 0.999;
        self.t += 1;
        let (c1, c2) = (1.0 - B1.powi(self.t), 1.0 - B2.powi(self.t));
        for (((p, &g), m), v) in p.iter_mut().zip(g).zip(&mut self.m).zip(&mut self.v) {
            *m = B1 * *m + (1.0 - B1) * g;
            *v = B2 * *v + (1.0 - B2) * g * g;
            *p -= self.lr * (*m / c1) / ((*v / c2).sqrt() + 1e-8);
        }
    }
}

/// The Naive-Bayes student's parameters, borrowed.
#[derive(Clone, Copy)]
struct Student<'a> {
    means: &'a [f64],
    log_prior: &'a [f64],
    h: f64,
}

impl Student<'_> {
    /// Unnormalised log posterior `a_c = log t(y | μ_c) + log π_c` and `1 + ½h‖y − μ_c‖²`.
    fn scores(&self, y: [f64; 2], a: &mut [f64], s: &mut [f64]) {
        let norm = self.h.ln() - (2.0 * std::f64::consts::PI).ln();
        for c in 0..a.len() {
            let (dx, dy) = (y[0] - self.means[2 * c], y[1] - self.means[2 * c + 1]);
            s[c] = 1.0 + 0.5 * self.h * (dx * dx + dy * dy);
            a[c] = norm - 2.0 * s[c].ln() + self.log_prior[c];
        }
    }
}

/// Partial gradients of one chunk of points.
struct Partial {
    loss: f64,
    d_means: Vec<f64>,
    d_w: Vec<f64>,
}

/// Loss and gradients over `idx` (points `y`, targets `log_p`), scaled by `1/|idx|`; `d_y` receives
/// the points' gradients in `idx` order.
fn batch_gradients(st: Student, y: &[f64], log_p: &[f64], idx: std::ops::Range<usize>, d_y: &mut [f64]) -> Partial {
    let k = st.log_prior.len();
    let scale = 1.0 / idx.len() as f64;
    const CHUNK: usize = 64;
    let parts: Vec<Partial> = d_y
        .par_chunks_mut(2 * CHUNK)
        .enumerate()
        .map(|(ci, dy)| {
            let mut part = Partial { loss: 0.0, d_means: vec![0.0; 2 * k], d_w: vec![0.0; k] };
            let (mut a, mut s, mut g) = (vec![0.0; k], vec![0.0; k], vec![0.0; k]);
            for (j, dyi) in dy.chunks_mut(2).enumerate() {
                let i = idx.start + ci * CHUNK + j;
                let yi = [y[2 * i], y[2 * i + 1]];
                let lp = &log_p[i * k..(i + 1) * k];
                st.scores(yi, &mut a, &mut s);
                log_softmax_in_place(&mut a); // a = log q
                                              // d/d(log q_c) of ½ Σ (q − p)(log q − log p) = ½ (q_c (log q_c − log p_c) + q_c − p_c).
                let mut gsum = 0.0;
                for c in 0..k {
                    let (q, p) = (a[c].exp(), lp[c].exp());
                    part.loss += 0.5 * (q - p) * (a[c] - lp[c]);
                    g[c] = 0.5 * (q * (a[c] - lp[c]) + q - p);
                    gsum += g[c];
                }
                let (mut gx, mut gy) = (0.0, 0.0);
                for c in 0..k {
                    // Through the normalisation: d/da_c = g_c − q_c Σ g.
                    let da = scale * (g[c] - a[c].exp() * gsum);
                    // a_c depends on y − μ_c through −2 log(1 + ½h‖y − μ_c‖²).
                    let f = da * 2.0 * st.h / s[c];
                    let (dx, dyy) = (yi[0] - st.means[2 * c], yi[1] - st.means[2 * c + 1]);
                    gx -= f * dx;
                    gy -= f * dyy;
                    part.d_means[2 * c] += f * dx;
                    part.d_means[2 * c + 1] += f * dyy;
                    part.d_w[c] += da;
                }
                dyi[0] = gx;
                dyi[1] = gy;
            }
            part
        })
        .collect();
    let mut total = Partial { loss: 0.0, d_means: vec![0.0; 2 * k], d_w: vec![0.0; k] };
    for p in parts {
        total.loss += p.loss;
        total.d_means.iter_mut().zip(&p.d_means).for_each(|(a, b)| *a += b);
        total.d_w.iter_mut().zip(&p.d_w).for_each(|(a, b)| *a += b);
    }
    // The softmax prior: d/dw_k = Σ_c dL/da_c (δ_ck − π_k) = dL/da_k, since Σ_c dL/da_c = 0.
    total.loss *= scale;
    total
}

/// Runs DarkSight on a model's logits (`n × k`, row-major). For probabilities only, pass their
/// logarithms (the temperature then applies to log-probabilities).
pub fn darksight(logits: &[f32], k: usize, cfg: &DarkSightConfig) -> anyhow::Result<DarkSight> {
    ensure!(k >= 2, "DarkSight needs at least 2 classes, got {k}");
    ensure!(
        !logits.is_empty() && logits.len().is_multiple_of(k),
        "logits of length {} are not rows of {k} classes",
        logits.len()
    );
    ensure!(logits.iter().all(|v| v.is_finite()), "DarkSight: the logits contain NaN or infinite values");
    ensure!(cfg.batch > 0 && cfg.temperature > 0.0, "DarkSight: batch and temperature must be positive");
    if let Some(a) = &cfg.annealing {
        ensure!(
            a.length <= cfg.epochs && a.step > 0 && a.highest >= cfg.temperature,
            "DarkSight: annealing over {} epochs (step {}, from T = {}) does not fit {} epochs ending at T = {}",
            a.length,
            a.step,
            a.highest,
            cfg.epochs,
            cfg.temperature
        );
    }
    let started = std::time::Instant::now();
    let n = logits.len() / k;
    let h = cfg.precision.unwrap_or(1.0 / (k as f64).ln().sqrt());
    ensure!(h > 0.0 && h.is_finite(), "DarkSight: precision must be positive, got {h}");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed);
    let sd = (k as f64).sqrt();
    let mut means: Vec<f64> = (0..2 * k)
        .map(|_| {
            let z: f64 = StandardNormal.sample(&mut rng);
            sd * z
        })
        .collect();
    let mut w = vec![10f64.ln(); k];
    let predicted: Vec<usize> = logits.chunks(k).map(argmax).collect();
    let mut y: Vec<f64> = match cfg.init {
        DarkSightInit::Origin => vec![0.0; 2 * n],
        DarkSightInit::ClassMeans => predicted.iter().flat_map(|&c| [means[2 * c], means[2 * c + 1]]).collect(),
    };
    let mut log_p = log_softmax_rows(logits, k, cfg.temperature);
    let (mut opt_m, mut opt_y, mut opt_w) =
        (Adam::new(2 * k, cfg.lr_means), Adam::new(2 * n, cfg.lr_points), Adam::new(k, cfg.lr_prior));
    let mut d_y_full = vec![0.0; 2 * n];
    let mut loss = Vec::with_capacity(cfg.epochs);
    let pb = crate::io::progress_bar(cfg.epochs as u64, "DarkSight", "epochs", cfg.progress);
    for epoch in 1..=cfg.epochs {
        if let Some(a) = &cfg.annealing {
            let target = cfg.temperature;
            let t = if epoch < a.length {
                let down = a.length - epoch + 1;
                (down % a.step == 0).then(|| target + (a.highest - target) * down as f64 / a.length as f64)
            } else {
                (epoch == a.length).then_some(target)
            };
            if let Some(t) = t {
                log_p = log_softmax_rows(logits, k, t);
            }
        }
        let mut run = 0.0;
        let mut batches = 0;
        for start in (0..n).step_by(cfg.batch) {
            let end = (start + cfg.batch).min(n);
            let log_prior = log_softmax(&w);
            let st = Student { means: &means, log_prior: &log_prior, h };
            d_y_full.iter_mut().for_each(|v| *v = 0.0);
            let part = batch_gradients(st, &y, &log_p, start..end, &mut d_y_full[2 * start..2 * end]);
            ensure!(part.loss.is_finite(), "DarkSight diverged at epoch {epoch} (loss {})", part.loss);
            // One Adam over all points, as the official code: points outside the batch keep moving
            // with their momentum.
            opt_y.step(&mut y, &d_y_full);
            opt_w.step(&mut w, &part.d_w);
            opt_m.step(&mut means, &part.d_means);
            run += part.loss;
            batches += 1;
        }
        loss.push(run / batches as f64);
        pb.inc(1);
        if epoch % 100 == 0 {
            pb.set_message(format!("loss {:.4}", run / batches as f64));
        }
    }
    pb.finish_and_clear();
    let mut ds = DarkSight {
        num_classes: k,
        points: y.chunks(2).map(|p| [p[0], p[1]]).collect(),
        means: means.chunks(2).map(|p| [p[0], p[1]]).collect(),
        prior_logits: w,
        precision: h,
        loss,
        final_loss: 0.0,
        seconds: 0.0,
        config: cfg.clone(),
    };
    let target = log_softmax_rows(logits, k, cfg.temperature);
    let student: Vec<f64> = ds.log_posteriors();
    ds.final_loss = super::divergence::mean_symmetric_kl(&student, &target, k);
    ds.seconds = started.elapsed().as_secs_f64();
    Ok(ds)
}

impl DarkSight {
    pub fn len(&self) -> usize {
        self.points.len()
    }
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// `(log q(c | y), log p(y))` at each of `points`, the student built once.
    fn posterior_parts(&self, points: &[[f64; 2]]) -> Vec<(Vec<f64>, f64)> {
        let means: Vec<f64> = self.means.iter().flat_map(|m| [m[0], m[1]]).collect();
        let log_prior = log_softmax(&self.prior_logits);
        let st = Student { means: &means, log_prior: &log_prior, h: self.precision };
        points
            .par_iter()
            .map(|&y| {
                let (mut a, mut s) = (vec![0.0; self.num_classes], vec![0.0; self.num_classes]);
                st.scores(y, &mut a, &mut s);
                let log_marginal = log_softmax_in_place(&mut a);
                (a, log_marginal)
            })
            .collect()
    }

    /// `log q(c | y)` of the Naive-Bayes student at any 2-D location.
    pub fn log_posterior_at(&self, y: [f64; 2]) -> Vec<f64> {
        self.posterior_parts(&[y]).remove(0).0
    }

    /// `log q(c | y_i)` of every point (`n × k`, row-major).
    pub fn log_posteriors(&self) -> Vec<f64> {
        self.posterior_parts(&self.points).into_iter().flat_map(|(a, _)| a).collect()
    }

    /// The student's probabilities at every point (`n × k`).
    pub fn probabilities(&self) -> Vec<f32> {
        self.log_posteriors().iter().map(|v| v.exp() as f32).collect()
    }

    /// The student's arg-max class at every point.
    pub fn predicted(&self) -> Vec<usize> {
        let k = self.num_classes;
        self.probabilities().chunks(k).map(argmax).collect()
    }

    /// Fraction of points where the student's class equals `predicted` (the model's arg-max).
    pub fn agreement(&self, predicted: &[usize]) -> f64 {
        let own = self.predicted();
        own.iter().zip(predicted).filter(|(a, b)| a == b).count() as f64 / own.len().max(1) as f64
    }

    /// The student's marginal density `p(y) = Σ_c π_c t(y | μ_c)` at every point (the official
    /// output's `p_y`).
    pub fn marginal_density(&self) -> Vec<f64> {
        self.posterior_parts(&self.points).into_iter().map(|(_, lm)| lm.exp()).collect()
    }

    /// The points as a flat `n × 2` f32 buffer.
    pub fn flat(&self) -> Vec<f32> {
        super::flat_points(&self.points)
    }
}

#[doc(hidden)]
/// Loss and analytic gradients at given parameters, for the finite-difference test.
pub fn loss_and_gradients(
    y: &[f64],
    means: &[f64],
    w: &[f64],
    h: f64,
    log_p: &[f64],
) -> (f64, Vec<f64>, Vec<f64>, Vec<f64>) {
    let k = w.len();
    let n = log_p.len() / k;
    let log_prior = log_softmax(w);
    let st = Student { means, log_prior: &log_prior, h };
    let mut d_y = vec![0.0; 2 * n];
    let p = batch_gradients(st, y, log_p, 0..n, &mut d_y);
    (p.loss, d_y, p.d_means, p.d_w)
}
