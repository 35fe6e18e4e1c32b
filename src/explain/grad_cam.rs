//! Grad-CAM ("Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization",
//! Selvaraju et al. 2017) at a named feature tap: `α_c = mean_{h,w} ∂y_t/∂A_c` (gradients from the
//! tape, via a gradient probe on the real forward pass) and `M = ReLU(Σ_c α_c A_c)`.
use super::gradients::{mean_gradient, tap_name, target_cam};
use super::{Maps, Saliency};
use crate::models::Model;
use crate::nn::Var;

/// Grad-CAM at `tap` (`None`: the last stage).
#[derive(Clone, Debug, Default)]
pub struct GradCam {
    pub tap: Option<String>,
}

impl GradCam {
    /// Grad-CAM at the feature tap `tap` (`stem`, `layer1`, `layer2.pre` …).
    pub fn at(tap: &str) -> Self {
        Self { tap: Some(tap.into()) }
    }
}

impl Saliency for GradCam {
    fn name(&self) -> String {
        tap_name("grad-cam", &self.tap)
    }
    fn explain(&self, model: &Model, x: &Var, targets: &[usize]) -> anyhow::Result<Maps> {
        target_cam(model, x, targets, self.tap.as_deref(), mean_gradient)
    }
}
