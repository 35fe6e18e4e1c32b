//! "Relational Knowledge Distillation" (Park, Kim, Lu & Cho, CVPR 2019), as mdistiller's `RKD` on the
//! pooled features: the distance term compares pairwise Euclidean distances (each set normalised by
//! its mean positive distance) and the angle term the cosines of the angles `∠(e_i − e_j, e_k − e_j)`,
//! both with smooth-L1 (β = 1); weights 25 and 50, plus cross-entropy.
use dfdx::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::losses::{constant, cross_entropy, feature_matrix, logits_of, Logits, Loss};
use super::{Distiller, LossParts, StepCtx};
use super::{Method, MethodInfo};
use crate::models::Outputs;
use crate::nn::Tracked;

/// RKD's settings (mdistiller's CIFAR defaults).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rkd {
    pub ce_weight: f32,
    pub weight: f32,
    pub distance_weight: f32,
    pub angle_weight: f32,
    /// Floor of the squared distances.
    pub eps: f32,
    /// Compare squared distances instead of distances.
    pub squared: bool,
}

impl Default for Rkd {
    fn default() -> Self {
        Self { ce_weight: 1.0, weight: 1.0, distance_weight: 25.0, angle_weight: 50.0, eps: 1e-12, squared: false }
    }
}

/// Pairwise distances of the rows of `e` (`n × d`, f64), diagonal 0, divided by their mean over the
/// positive entries.
fn teacher_distances(e: &[f32], n: usize, eps: f64, squared: bool) -> Vec<f32> {
    let d = e.len() / n;
    let mut out = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..n {
            if i != j {
                let s: f64 = (0..d).map(|k| (e[i * d + k] as f64 - e[j * d + k] as f64).powi(2)).sum::<f64>().max(eps);
                out[i * n + j] = if squared { s } else { s.sqrt() };
            }
        }
    }
    let pos: Vec<f64> = out.iter().copied().filter(|v| *v > 0.0).collect();
    let mean = pos.iter().sum::<f64>() / pos.len().max(1) as f64;
    out.iter().map(|v| (v / mean) as f32).collect()
}

/// Cosines `⟨u_ij, u_kj⟩` for `u_ij = (e_i − e_j)/‖e_i − e_j‖` (zero vectors stay zero), laid out as
/// PyTorch's `bmm(norm_sd, norm_sdᵀ).view(-1)`: index `(j, i, k)` with `sd[j][i] = e_i − e_j`.
fn teacher_angles(e: &[f32], n: usize) -> Vec<f32> {
    let d = e.len() / n;
    let mut u = vec![0.0f64; n * n * d];
    for j in 0..n {
        for i in 0..n {
            let v: Vec<f64> = (0..d).map(|k| e[i * d + k] as f64 - e[j * d + k] as f64).collect();
            let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
            for k in 0..d {
                u[(j * n + i) * d + k] = v[k] / norm;
            }
        }
    }
    let mut out = Vec::with_capacity(n * n * n);
    for j in 0..n {
        for i in 0..n {
            for k in 0..n {
                let a = &u[(j * n + i) * d..(j * n + i + 1) * d];
                let b = &u[(j * n + k) * d..(j * n + k + 1) * d];
                out.push(a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>() as f32);
            }
        }
    }
    out
}

/// Student pairwise distances with the same conventions (recorded).
fn student_distances(e: Logits, eps: f32, squared: bool) -> Tensor<(usize, usize), f32, crate::nn::Dev, Tracked> {
    let (n, d) = *e.shape();
    let sq = e.with_empty_tape().square().sum::<_, Axis<1>>();
    let prod = e.with_empty_tape().matmul(e.permute::<_, Axes2<1, 0>>() * 1.0);
    // Broadcasts and permutes keep the tensor id, and a binary op needs two ids: one side is copied.
    let s = (sq.with_empty_tape().broadcast_like::<(usize, usize), Axis<1>>(&(n, n))
        + (sq * 1.0).broadcast_like::<(usize, usize), Axis<0>>(&(n, n))
        - prod * 2.0)
        .maximum(crate::nn::dev().tensor_from_vec(vec![eps; n * n], (n, n)));
    let s = if squared { s } else { s.sqrt() };
    let _ = d;
    let off_diag: Vec<f32> = (0..n * n).map(|i| if i / n == i % n { 0.0 } else { 1.0 }).collect();
    s * constant(off_diag, n, n)
}

/// The RKD loss (`distance_weight · L_d + angle_weight · L_a`) of student features `(n, d)` against the
/// teacher's (`n × d'` values).
pub fn rkd_loss(student: Logits, teacher: &[f32], cfg: &Rkd) -> Loss {
    let (n, d) = *student.shape();
    let dev = crate::nn::dev();
    // Distance term.
    let td = teacher_distances(teacher, n, cfg.eps as f64, cfg.squared);
    let sdist = student_distances(student.with_empty_tape(), cfg.eps, cfg.squared);
    let data = sdist.as_vec();
    let count = data.iter().filter(|v| **v > 0.0).count().max(1) as f32;
    let mean = sdist.with_empty_tape().sum::<(), _>() / count;
    let normed = sdist / mean.broadcast_like::<(usize, usize), Axes2<0, 1>>(&(n, n));
    let loss_d = dfdx::losses::smooth_l1_loss(normed, constant(td, n, n), 1.0);
    // Angle term: sd[j][i] = e_i − e_j, normalised along the feature axis.
    let sd = student.with_empty_tape().broadcast_like::<(usize, usize, usize), Axis<0>>(&(n, n, d))
        - (student * 1.0).broadcast_like::<(usize, usize, usize), Axis<1>>(&(n, n, d));
    // sqrt(|v|² + 1e-24) instead of max(|v|, 1e-12): equal but for zero vectors, which stay zero with a
    // finite gradient.
    let norm = (sd.with_empty_tape().square().sum::<_, Axis<2>>() + 1e-24).sqrt();
    let unit = sd / norm.broadcast_like::<(usize, usize, usize), Axis<2>>(&(n, n, d));
    let angles = unit.with_empty_tape().matmul(unit.permute::<_, Axes3<0, 2, 1>>() * 1.0);
    let ta = dev.tensor_from_vec(teacher_angles(teacher, n), (n, n, n));
    let loss_a = dfdx::losses::smooth_l1_loss(angles, ta, 1.0);
    loss_d * cfg.distance_weight + loss_a * cfg.angle_weight
}

impl Distiller for Rkd {
    fn name(&self) -> String {
        "rkd".into()
    }
    fn hyper(&self) -> serde_json::Value {
        json!(self)
    }
    fn needs_features(&self) -> bool {
        true
    }
    fn loss(
        &mut self,
        mut student: Outputs<Tracked>,
        teacher: &Outputs<NoneTape>,
        labels: &[usize],
        _: StepCtx<'_>,
    ) -> LossParts {
        let t = teacher.features.get("pool").expect("teacher pooled feature");
        let s = student.features.take("pool").expect("student pooled feature");
        let feat = rkd_loss(feature_matrix(s), t.data(), self);
        let ce = cross_entropy(logits_of(student.logits), labels);
        super::combine(ce, self.ce_weight, "rkd", feat, self.weight)
    }
}

/// `rkd` in the registry.
pub const METHOD: MethodInfo = MethodInfo {
    name: "rkd",
    aliases: &[],
    about: "relational KD on pooled features (distance 25, angle 50)",
    build: |name, params| Ok(Method::distill(super::tuned(Rkd::default(), params, name)?)),
};
