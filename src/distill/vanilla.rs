//! Plain supervised training: cross-entropy on the labels, no teacher ([`Method::Alone`]).
use dfdx::prelude::AsArray;

use super::losses::{cross_entropy, logits_of};
use super::{LossParts, Method, MethodInfo};
use crate::models::Outputs;
use crate::nn::Tracked;

/// The cross-entropy loss of a student trained alone.
pub fn loss(student: Outputs<Tracked>, labels: &[usize]) -> LossParts {
    let ce = cross_entropy(logits_of(student.logits), labels);
    let v = ce.array();
    LossParts { total: ce, parts: vec![("ce", v)] }
}

/// `ce`: the student alone.
pub const METHOD: MethodInfo = MethodInfo {
    name: "ce",
    aliases: &["vanilla", "none"],
    about: "cross-entropy only (no teacher)",
    build: |name, params| {
        anyhow::ensure!(params.is_empty(), "method '{name}' has no hyper-parameters");
        Ok(Method::Alone)
    },
};
