//! Grad-CAM++ ("Grad-CAM++: Improved Visual Explanations for Deep Convolutional Networks",
//! Chattopadhay et al. 2018), in the closed form of its eq. 19 that pytorch-grad-cam uses, with the
//! first-order gradients `g = ∂y_t/∂A` of the target score:
//! `a_c(p) = g² / (2g² + (Σ_q A_c(q)) g³ + ε)` (0 where `g = 0`, `ε = 1e-6`),
//! `w_c = Σ_p a_c(p) ReLU(g_c(p))`, `M = ReLU(Σ_c w_c A_c)`.
use super::gradients::{tap_name, target_cam};
use super::{Maps, Saliency};
use crate::models::Model;
use crate::nn::Var;

/// Grad-CAM++ at `tap` (`None`: the last stage).
#[derive(Clone, Debug, Default)]
pub struct GradCamPlusPlus {
    pub tap: Option<String>,
}

impl GradCamPlusPlus {
    pub fn at(tap: &str) -> Self {
        Self { tap: Some(tap.into()) }
    }
}

/// The channel weights `w_c` of one feature plane and its gradient plane.
pub(crate) fn plus_plus_weight(a: &[f32], g: &[f32]) -> f32 {
    let sum_a: f32 = a.iter().sum();
    g.iter()
        .map(|&g| {
            if g == 0.0 {
                return 0.0;
            }
            let g2 = g * g;
            let aij = g2 / (2.0 * g2 + sum_a * g2 * g + 1e-6);
            aij * g.max(0.0)
        })
        .sum()
}

impl Saliency for GradCamPlusPlus {
    fn name(&self) -> String {
        tap_name("grad-cam++", &self.tap)
    }
    fn explain(&self, model: &Model, x: &Var, targets: &[usize]) -> anyhow::Result<Maps> {
        target_cam(model, x, targets, self.tap.as_deref(), plus_plus_weight)
    }
}
