//! Vanilla gradient saliency ("Deep Inside Convolutional Networks", Simonyan, Vedaldi & Zisserman
//! 2014): `M(p) = max_c |∂y_t/∂x_c(p)|`, the gradient of the target score with respect to the input
//! image, at input resolution.
use super::gradients::{input_gradient_map, target_gradients};
use super::{Maps, Saliency};
use crate::models::Model;
use crate::nn::Var;

/// Vanilla gradient (see the module docs).
#[derive(Clone, Copy, Debug, Default)]
pub struct VanillaGradient;

impl Saliency for VanillaGradient {
    fn name(&self) -> String {
        "gradient".into()
    }
    fn explain(&self, model: &Model, x: &Var, targets: &[usize]) -> anyhow::Result<Maps> {
        input_gradient_map(model, x, targets, false)
    }
}

/// The raw input gradient `∂(Σ_i y_i[t_i])/∂x` (NCHW, same layout as `x`), vanilla or guided.
pub fn input_gradient(model: &Model, x: &Var, targets: &[usize], guided: bool) -> anyhow::Result<Vec<f32>> {
    Ok(target_gradients(model, x, &[], targets, true, guided)?.input.unwrap_or_default())
}
