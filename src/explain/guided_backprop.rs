//! Guided backpropagation ("Striving for Simplicity: The All Convolutional Net", Springenberg et al.
//! 2015): the input gradient of the target score where every ReLU passes gradient only where both its
//! output and the incoming gradient are positive. Applied at the op level
//! ([`crate::nn::ops::with_guided_relu`]), so the ReLUs fused into batch norm and the ReLU after each
//! residual add are guided too — module-swapping implementations miss the latter. The map is
//! `max_c |g_c(p)|` at input resolution; [`input_gradient`](super::input_gradient) with
//! `guided = true` gives the colour gradient image.
use super::gradients::input_gradient_map;
use super::{Maps, Saliency};
use crate::models::Model;
use crate::nn::Var;

/// Guided backpropagation (see the module docs).
#[derive(Clone, Copy, Debug, Default)]
pub struct GuidedBackprop;

impl Saliency for GuidedBackprop {
    fn name(&self) -> String {
        "guided-backprop".into()
    }
    fn explain(&self, model: &Model, x: &Var, targets: &[usize]) -> anyhow::Result<Maps> {
        input_gradient_map(model, x, targets, true)
    }
}
