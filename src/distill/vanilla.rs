//! Plain supervised training: cross-entropy on the labels, no teacher.
use dfdx::prelude::{AsArray, NoneTape};
use serde_json::json;

use super::losses::{cross_entropy, logits_of};
use super::{Distiller, LossParts, StepCtx};
use crate::models::Outputs;
use crate::nn::Tracked;

/// Cross-entropy only (the baseline every KD method is compared with).
#[derive(Clone, Copy, Debug, Default)]
pub struct Vanilla;

impl Distiller for Vanilla {
    fn name(&self) -> String {
        "ce".into()
    }
    fn hyper(&self) -> serde_json::Value {
        json!({})
    }
    fn needs_teacher(&self) -> bool {
        false
    }
    fn loss(
        &mut self,
        student: Outputs<Tracked>,
        _: Option<&Outputs<NoneTape>>,
        labels: &[usize],
        _: StepCtx<'_>,
    ) -> LossParts {
        let ce = cross_entropy(logits_of(student.logits), labels);
        let v = ce.array();
        LossParts { total: ce, parts: vec![("ce", v)] }
    }
}
