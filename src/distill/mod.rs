//! Distillation methods. Each method is one file behind the [`Distiller`] trait (as in mdistiller):
//! it turns the student's outputs (with tape), the teacher's outputs and the labels into a loss.
pub mod hinton_kd;
pub mod losses;
pub mod vanilla;

use dfdx::prelude::NoneTape;

pub use hinton_kd::{HintonKd, KdForm};
pub use losses::Loss;
pub use vanilla::Vanilla;

use crate::models::Outputs;
use crate::nn::Tracked;

/// Where in training a loss is computed (for warm-ups and schedules inside a method).
#[derive(Clone, Copy, Debug)]
pub struct StepCtx {
    pub epoch: usize,
    pub epochs: usize,
}

/// A loss and its named components (for logging).
pub struct LossParts {
    pub total: Loss,
    pub parts: Vec<(&'static str, f32)>,
}

/// A knowledge-distillation method.
pub trait Distiller: Send {
    /// Short name (`"ce"`, `"kd"`, …) used in reports and run names.
    fn name(&self) -> String;
    /// Hyper-parameters, for reports and the reproducibility appendix.
    fn hyper(&self) -> serde_json::Value;
    /// Whether the method reads the teacher's outputs.
    fn needs_teacher(&self) -> bool;
    /// Whether the method reads intermediate features (the forward passes then keep them).
    fn needs_features(&self) -> bool {
        false
    }
    /// The training loss for one batch.
    fn loss(
        &mut self,
        student: Outputs<Tracked>,
        teacher: Option<&Outputs<NoneTape>>,
        labels: &[usize],
        ctx: StepCtx,
    ) -> LossParts;
}

/// Builds a distiller from its name: `ce` (no distillation), `kd` (Hinton KD, KL·T², T=4,
/// CE/KD weights 0.1/0.9), `kd-mse` (CE + T²·MSE of softened outputs, T=20, 0.5/0.5).
pub fn by_name(name: &str) -> anyhow::Result<Box<dyn Distiller>> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "ce" | "vanilla" | "none" => Box::new(Vanilla),
        "kd" | "hinton" | "kd-kl" => Box::new(HintonKd::repdistiller()),
        "kd-mse" | "kdlib" => Box::new(HintonKd::kd_lib()),
        other => anyhow::bail!("unknown distillation method '{other}' (known: ce, kd, kd-mse)"),
    })
}
