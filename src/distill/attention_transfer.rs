//! "Paying More Attention to Attention" (Zagoruyko & Komodakis, ICLR 2017), as mdistiller's `AT`: for
//! each stage pair, the attention map `normalize(mean_c(f^p))` (flattened, L2-normalised) of student
//! and teacher, squared difference averaged; summed over stages; weight 1000, `p = 2`, plus
//! cross-entropy. A larger map is adaptive-average-pooled to the smaller size. Stages pair the deepest
//! `min(stages)` of the two models (mdistiller zips from the shallowest; identical for models with
//! equal stage counts).
use dfdx::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::losses::{constant, cross_entropy, feature_matrix, logits_of, pool_to_smaller, Loss};
use super::{Distiller, LossParts, Setup, StepCtx};
use super::{Method, MethodInfo};
use crate::models::Outputs;
use crate::nn::{Shape4, Tracked, Var};

/// AT's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttentionTransfer {
    pub ce_weight: f32,
    pub weight: f32,
    pub p: i32,
    /// (student tap, teacher tap) pairs, set up from the models.
    #[serde(skip)]
    pairs: Vec<(String, String)>,
}

impl Default for AttentionTransfer {
    fn default() -> Self {
        Self { ce_weight: 1.0, weight: 1000.0, p: 2, pairs: Vec::new() }
    }
}

/// The teacher's attention map per image: `mean_c(f^p)`, L2-normalised (f64, rounded).
fn teacher_attention(t: &[f32], s: Shape4, p: i32) -> Vec<f32> {
    let hw = s.plane();
    let mut out = Vec::with_capacity(s.n * hw);
    for img in t.chunks(s.per_sample()) {
        let a: Vec<f64> =
            (0..hw).map(|j| (0..s.c).map(|c| (img[c * hw + j] as f64).powi(p)).sum::<f64>() / s.c as f64).collect();
        let norm = a.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
        out.extend(a.iter().map(|v| (v / norm) as f32));
    }
    out
}

/// One stage's AT loss: student map (recorded) against the teacher's (constant), pooled to the smaller
/// size first.
pub fn at_stage_loss(student: Var<Tracked>, teacher: &Var, p: i32) -> Loss {
    let (student, teacher) = pool_to_smaller(student, teacher);
    let s = student.shape;
    let (n, c, hw) = (s.n, s.c, s.plane());
    let target = teacher_attention(teacher.data(), teacher.shape, p);
    let f = feature_matrix(student).reshape_like(&(n, c, hw));
    let a = f.powi(p).mean::<_, Axis<1>>();
    // sqrt(|a|² + 1e-24) for max(|a|, 1e-12): equal except for an all-zero map, which stays finite.
    let norm = (a.with_empty_tape().square().sum::<_, Axis<1>>() + 1e-24).sqrt();
    let unit = a / norm.broadcast_like::<(usize, usize), Axis<1>>(&(n, hw));
    (unit - constant(target, n, hw)).square().mean()
}

impl Distiller for AttentionTransfer {
    fn name(&self) -> String {
        "at".into()
    }
    fn hyper(&self) -> serde_json::Value {
        json!({"ce_weight": self.ce_weight, "weight": self.weight, "p": self.p, "pairs": self.pairs})
    }
    fn needs_features(&self) -> bool {
        true
    }
    fn setup(&mut self, setup: &Setup) -> anyhow::Result<()> {
        let t = &setup.teacher_layout;
        let k = setup.student_layout.stages.len().min(t.stages.len());
        self.pairs =
            setup.student_layout.last(k).iter().zip(t.last(k)).map(|(s, t)| (s.feat.clone(), t.feat.clone())).collect();
        Ok(())
    }
    fn loss(
        &mut self,
        mut student: Outputs<Tracked>,
        teacher: &Outputs<NoneTape>,
        labels: &[usize],
        _: StepCtx<'_>,
    ) -> LossParts {
        assert!(!self.pairs.is_empty(), "AT used before setup");
        let feat = self
            .pairs
            .iter()
            .map(|(s, t)| {
                let sv = student.features.take(s).unwrap_or_else(|| panic!("student has no tap '{s}'"));
                at_stage_loss(sv, teacher.features.get(t).unwrap_or_else(|| panic!("teacher has no tap '{t}'")), self.p)
            })
            .reduce(|a, b| a + b)
            .expect("at least one stage");
        let ce = cross_entropy(logits_of(student.logits), labels);
        super::combine(ce, self.ce_weight, "at", feat, self.weight)
    }
}

/// `at` in the registry.
pub const METHOD: MethodInfo = MethodInfo {
    name: "at",
    aliases: &[],
    about: "attention transfer on every paired stage, p 2, ×1000",
    build: |name, params| Ok(Method::distill(super::tuned(AttentionTransfer::default(), params, name)?)),
};
