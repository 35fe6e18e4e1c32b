//! Distillation methods. Each method is one file behind the [`Distiller`] trait (as in mdistiller):
//! it turns the student's outputs (with tape), the teacher's outputs and the labels into a loss.
pub mod hinton_kd;
pub mod losses;
pub mod review_kd;
pub mod vanilla;

use dfdx::prelude::NoneTape;

pub use hinton_kd::{HintonKd, KdForm};
pub use losses::Loss;
pub use review_kd::{ReviewKd, ReviewKdConfig};
pub use vanilla::Vanilla;

use crate::models::{FeatureLayout, Model, Outputs};
use crate::nn::{Store, Tracked};

/// Where in training a loss is computed (for warm-ups and schedules inside a method), and which
/// training images the batch holds (for methods with per-sample memories, as CRD).
#[derive(Clone, Copy, Debug)]
pub struct StepCtx<'a> {
    /// Epoch index from 0.
    pub epoch: usize,
    pub epochs: usize,
    /// Dataset indices of the batch's images.
    pub indices: &'a [usize],
}

impl StepCtx<'_> {
    /// A linear warm-up factor `min(1, (epoch + 1) / warmup)` (mdistiller counts epochs from 1);
    /// 1 when `warmup` is 0.
    pub fn warmup(&self, warmup: usize) -> f32 {
        if warmup == 0 {
            1.0
        } else {
            ((self.epoch + 1) as f32 / warmup as f32).min(1.0)
        }
    }
}

/// What a method learns about the run before its first step: both models, their stage layouts at the
/// dataset's image size, the training-set size and a seed for its own modules.
pub struct Setup<'a> {
    pub student: &'a Model,
    pub teacher: Option<&'a Model>,
    pub student_layout: FeatureLayout,
    pub teacher_layout: Option<FeatureLayout>,
    pub train_len: usize,
    pub num_classes: usize,
    pub seed: u64,
}

impl Setup<'_> {
    /// The teacher's layout, or an error naming the method that needs it.
    pub fn teacher_layout(&self, method: &str) -> anyhow::Result<&FeatureLayout> {
        self.teacher_layout.as_ref().ok_or_else(|| anyhow::anyhow!("method '{method}' needs a teacher model"))
    }
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
    /// Builds the method's own modules (connectors, regressors, embeddings, memories) from the two
    /// models' layouts. `fit` calls it once before the first step, and before restoring a checkpoint.
    fn setup(&mut self, _setup: &Setup) -> anyhow::Result<()> {
        Ok(())
    }
    /// The method's trainable modules: optimised together with the student by the same SGD (as
    /// mdistiller's `get_learnable_parameters`) and saved with training checkpoints.
    fn modules(&self) -> Option<&Store> {
        None
    }
    fn modules_mut(&mut self) -> Option<&mut Store> {
        None
    }
    /// The training loss for one batch.
    fn loss(
        &mut self,
        student: Outputs<Tracked>,
        teacher: Option<&Outputs<NoneTape>>,
        labels: &[usize],
        ctx: StepCtx<'_>,
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
