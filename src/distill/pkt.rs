//! "Learning Deep Representations with Probabilistic Knowledge Transfer" (Passalis & Tefas, ECCV
//! 2018), as mdistiller's `PKT`: the pooled features of a batch become conditional probability
//! distributions over the batch through the cosine-similarity kernel `(cos + 1) / 2` (rows
//! normalised to sum 1); the loss is `mean(P_t · ln((P_t + ε) / (P_s + ε)))` over all `n²` entries,
//! weighted 30,000 (mdistiller's CIFAR setting), plus cross-entropy.
use dfdx::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::losses::{constant, cross_entropy, feature_matrix, logits_of, Logits, Loss};
use super::{Distiller, LossParts, StepCtx};
use super::{Method, MethodInfo};
use crate::models::Outputs;
use crate::nn::Tracked;

/// PKT's settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pkt {
    pub ce_weight: f32,
    pub weight: f32,
    pub eps: f32,
}

impl Default for Pkt {
    fn default() -> Self {
        Self { ce_weight: 1.0, weight: 30000.0, eps: 1e-7 }
    }
}

/// The teacher's similarity distributions (`n × n`, rows summing to 1), computed in f64.
fn teacher_probabilities(t: &[f32], n: usize, eps: f64) -> Vec<f32> {
    let d = t.len() / n;
    let rows: Vec<Vec<f64>> = t
        .chunks(d)
        .map(|r| {
            let norm = r.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt() + eps;
            r.iter().map(|&v| v as f64 / norm).collect()
        })
        .collect();
    let mut out = Vec::with_capacity(n * n);
    for a in &rows {
        let sims: Vec<f64> =
            rows.iter().map(|b| (a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>() + 1.0) / 2.0).collect();
        let total: f64 = sims.iter().sum();
        out.extend(sims.iter().map(|s| (s / total) as f32));
    }
    out
}

/// The PKT loss of student features `(n, d)` against the teacher's (`n × d'` values, any width).
pub fn pkt_loss(student: Logits, teacher: &[f32], eps: f32) -> Loss {
    let (n, d) = *student.shape();
    let p = teacher_probabilities(teacher, n, eps as f64);
    // Σ p ln(p + ε) is a constant of the loss.
    let plogp: f32 = p.iter().map(|&v| v * (v + eps).ln()).sum();
    let norm = student.with_empty_tape().square().sum::<_, Axis<1>>().sqrt() + eps;
    let unit = student / norm.broadcast_like::<(usize, usize), Axis<1>>(&(n, d));
    // dfdx's permute keeps the tensor id, and a binary op needs two ids: the transpose is copied.
    let sim = (unit.with_empty_tape().matmul(unit.permute::<_, Axes2<1, 0>>() * 1.0) + 1.0) / 2.0;
    let rows = sim.with_empty_tape().sum::<_, Axis<1>>();
    let q = sim / rows.broadcast_like::<(usize, usize), Axis<1>>(&(n, n));
    let cross = ((q + eps).ln() * constant(p, n, n)).sum();
    (cross.negate() + plogp) / (n * n) as f32
}

impl Distiller for Pkt {
    fn name(&self) -> String {
        "pkt".into()
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
        let feat = pkt_loss(feature_matrix(s), t.data(), self.eps);
        let ce = cross_entropy(logits_of(student.logits), labels);
        super::combine(ce, self.ce_weight, "pkt", feat, self.weight)
    }
}

/// `pkt` in the registry.
pub const METHOD: MethodInfo = MethodInfo {
    name: "pkt",
    aliases: &[],
    about: "probabilistic knowledge transfer on pooled features, ×30000",
    build: |name, params| Ok(Method::distill(super::tuned(Pkt::default(), params, name)?)),
};
