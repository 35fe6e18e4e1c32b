//! "Decoupled Knowledge Distillation" (Zhao, Cui, Song, Qiu & Liang, CVPR 2022), as mdistiller's
//! `DKD`: the KD loss split into target-class KD (TCKD: binary KL between the probabilities of the
//! true class and of all others) and non-target-class KD (NCKD: KL between the distributions over the
//! other classes), `α·TCKD + β·NCKD`, both `· T²`, warmed up linearly over 20 epochs; defaults
//! α = 1, β = 8, T = 4, plus cross-entropy.
use dfdx::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::losses::{constant, cross_entropy, logits_of, Logits, Loss};
use super::{Distiller, LossParts, StepCtx};
use super::{Method, MethodInfo};
use crate::models::Outputs;
use crate::nn::Tracked;
use crate::predictions::log_softmax_rows;

/// DKD's settings (mdistiller's CIFAR-100 defaults).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Dkd {
    pub ce_weight: f32,
    pub alpha: f32,
    pub beta: f32,
    pub temperature: f32,
    pub warmup_epochs: usize,
}

impl Default for Dkd {
    fn default() -> Self {
        Self { ce_weight: 1.0, alpha: 1.0, beta: 8.0, temperature: 4.0, warmup_epochs: 20 }
    }
}

/// `(TCKD, NCKD)`, each `· T²` and averaged over the batch, for student logits `(n, k)` and the
/// teacher's.
pub fn dkd_parts(student: Logits, teacher: &[f32], labels: &[usize], t: f32) -> (Loss, Loss) {
    let (n, k) = *student.shape();
    let lt = log_softmax_rows(teacher, k, t as f64);
    let mut gt = vec![0.0f32; n * k];
    let (mut bt, mut nt, mut const_b, mut const_n) = (vec![0.0f32; n * 2], vec![0.0f32; n * k], 0.0f64, 0.0f64);
    for (i, &y) in labels.iter().enumerate() {
        gt[i * k + y] = 1.0;
        let row = &lt[i * k..(i + 1) * k];
        let p_gt = row[y].exp();
        let p_other = 1.0 - p_gt;
        bt[i * 2] = p_gt as f32;
        bt[i * 2 + 1] = p_other as f32;
        for (p, lp) in [(p_gt, p_gt.ln()), (p_other, p_other.ln())] {
            if p > 0.0 {
                const_b += p * lp;
            }
        }
        // The teacher's distribution over the non-target classes.
        let m = row.iter().enumerate().filter(|(c, _)| *c != y).fold(f64::NEG_INFINITY, |a, (_, v)| a.max(*v));
        let z: f64 = row.iter().enumerate().filter(|(c, _)| *c != y).map(|(_, v)| (v - m).exp()).sum();
        for (c, v) in row.iter().enumerate() {
            if c != y {
                let lq = v - m - z.ln();
                nt[i * k + c] = lq.exp() as f32;
                if lq.exp() > 0.0 {
                    const_n += lq.exp() * lq;
                }
            }
        }
    }
    let scale = t * t / n as f32;
    // TCKD: student probabilities of the target class and of the rest.
    let p = (student.with_empty_tape() / t).softmax::<Axis<1>>();
    let gt_m = constant(gt.clone(), n, k);
    let other_m = constant(gt.iter().map(|g| 1.0 - g).collect(), n, k);
    let ps_gt = (p.with_empty_tape() * gt_m).sum::<_, Axis<1>>().ln();
    let ps_other = (p * other_m).sum::<_, Axis<1>>().ln();
    let bt_gt: Vec<f32> = bt.iter().step_by(2).copied().collect();
    let bt_other: Vec<f32> = bt.iter().skip(1).step_by(2).copied().collect();
    let dev = crate::nn::dev();
    let cross_b =
        (ps_gt * dev.tensor_from_vec(bt_gt, (n,))).sum() + (ps_other * dev.tensor_from_vec(bt_other, (n,))).sum();
    let tckd = (cross_b.negate() + const_b as f32) * scale;
    // NCKD: log-softmax over the non-target classes (the target pushed down by 1000 as mdistiller).
    let masked = student / t - constant(gt.iter().map(|g| 1000.0 * g).collect(), n, k);
    let lq = masked.log_softmax::<Axis<1>>();
    let nckd = ((lq * constant(nt, n, k)).sum().negate() + const_n as f32) * scale;
    (tckd, nckd)
}

impl Distiller for Dkd {
    fn name(&self) -> String {
        "dkd".into()
    }
    fn hyper(&self) -> serde_json::Value {
        json!(self)
    }
    fn loss(
        &mut self,
        student: Outputs<Tracked>,
        teacher: &Outputs<NoneTape>,
        labels: &[usize],
        ctx: StepCtx<'_>,
    ) -> LossParts {
        let t = teacher;
        let s = logits_of(student.logits);
        let (tckd, nckd) = dkd_parts(s.with_empty_tape(), t.logits.data(), labels, self.temperature);
        let ce = cross_entropy(s, labels);
        let dkd = tckd * self.alpha + nckd * self.beta;
        super::combine(ce, self.ce_weight, "dkd", dkd, ctx.warmup(self.warmup_epochs))
    }
}

/// `dkd` in the registry.
pub const METHOD: MethodInfo = MethodInfo {
    name: "dkd",
    aliases: &[],
    about: "decoupled KD (α 1, β 8, T 4, warm-up 20 epochs)",
    build: |name, params| Ok(Method::distill(super::tuned(Dkd::default(), params, name)?)),
};
