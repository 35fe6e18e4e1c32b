//! Grad-CAM ("Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization",
//! Selvaraju et al. 2017) at a named feature tap: `α_c = mean_{h,w} ∂y_t/∂A_c` (gradients from the
//! tape, via a gradient probe on the real forward pass) and `M = ReLU(Σ_c α_c A_c)`.
use super::gradients::{last_stage_tap, target_gradients, weighted_sum};
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
        match &self.tap {
            Some(t) => format!("grad-cam@{t}"),
            None => "grad-cam".into(),
        }
    }
    fn explain(&self, model: &Model, x: &Var, targets: &[usize]) -> anyhow::Result<Maps> {
        let tap = self.tap.as_deref().unwrap_or_else(|| last_stage_tap(model));
        let g = target_gradients(model, x, &[tap], targets, false, false)?;
        let (shape, a, grads) = &g.taps[0];
        let hw = shape.plane() as f32;
        let alpha: Vec<f32> = grads.chunks(shape.plane()).map(|p| p.iter().sum::<f32>() / hw).collect();
        Ok(weighted_sum(*shape, a, &alpha, true))
    }
}
