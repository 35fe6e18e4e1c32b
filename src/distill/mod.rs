//! Distillation methods. Each method is one file behind the [`Distiller`] trait (as in mdistiller):
//! it turns the student's outputs (with tape), the teacher's outputs and the labels into a loss.
pub mod attention_transfer;
pub mod crd;
pub mod dkd;
pub mod fitnet;
pub mod hinton_kd;
pub mod losses;
pub mod ofd;
pub mod pkt;
pub mod review_kd;
pub mod rkd;
pub mod vanilla;
pub mod vid;

use dfdx::prelude::NoneTape;

pub use attention_transfer::AttentionTransfer;
pub use crd::{Crd, CrdConfig};
pub use dkd::Dkd;
pub use fitnet::{FitNet, FitNetConfig};
pub use hinton_kd::{HintonKd, KdForm};
pub use losses::Loss;
pub use ofd::{Ofd, OfdConfig};
pub use pkt::Pkt;
pub use review_kd::{ReviewKd, ReviewKdConfig};
pub use rkd::Rkd;
pub use vanilla::Vanilla;
pub use vid::{Vid, VidConfig};

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
    /// Labels of the training images (by dataset index).
    pub train_labels: &'a [usize],
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

/// `ce_weight · CE + weight · term`, logged as `ce` and `name`.
pub(crate) fn combine(ce: Loss, ce_weight: f32, name: &'static str, term: Loss, weight: f32) -> LossParts {
    use dfdx::prelude::AsArray;
    let (cv, tv) = (ce.array(), term.array());
    LossParts { total: ce * ce_weight + term * weight, parts: vec![("ce", cv), (name, tv)] }
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

/// Names [`by_name`] knows, with a one-line description each.
pub const METHODS: &[(&str, &str)] = &[
    ("ce", "cross-entropy only (no teacher)"),
    ("kd", "Hinton KD, KL·T² (T 4, CE 0.1 / KD 0.9)"),
    ("kd-mse", "Hinton KD, CE + T²·MSE of softened outputs (T 20, 0.5 / 0.5)"),
    ("fitnet", "FitNet hint on the second stage, conv regressor, MSE ×100"),
    ("at", "attention transfer on every paired stage, p 2, ×1000"),
    ("pkt", "probabilistic knowledge transfer on pooled features, ×30000"),
    ("rkd", "relational KD on pooled features (distance 25, angle 50)"),
    ("vid", "variational information distillation on every paired stage"),
    ("crd", "contrastive representation distillation (128-d, 16384 negatives, T 0.07), ×0.8"),
    ("ofd", "overhaul of feature distillation: pre-ReLU features, margins, partial L2, ×0.001"),
    ("dkd", "decoupled KD (α 1, β 8, T 4, warm-up 20 epochs)"),
    ("reviewkd", "ReviewKD: ABF fusion deepest-first, HCL, warm-up 20 epochs"),
    ("reviewkd-step0 … reviewkd-step4", "ReviewKD ablation steps: same-level L2, + review, + residual, + ABF, + HCL"),
];

/// Builds a distiller from its name (see [`METHODS`]), with the defaults of mdistiller's CIFAR-100
/// configurations.
pub fn by_name(name: &str) -> anyhow::Result<Box<dyn Distiller>> {
    by_name_with(name, &Params::new())
}

/// Hyper-parameter overrides by field name of a method's settings (`{"weight": 2.0, "temperature": 8}`),
/// as JSON values.
pub type Params = serde_json::Map<String, serde_json::Value>;

/// `c` with the fields named in `params` replaced; an unknown name or a value of the wrong type is an
/// error that lists the method's hyper-parameters.
fn tuned<C: serde::Serialize + serde::de::DeserializeOwned>(c: C, params: &Params, method: &str) -> anyhow::Result<C> {
    if params.is_empty() {
        return Ok(c);
    }
    let mut v = serde_json::to_value(&c)?;
    let obj = v.as_object_mut().ok_or_else(|| anyhow::anyhow!("method '{method}' has no hyper-parameters"))?;
    for (k, val) in params {
        if !obj.contains_key(k) {
            let known: Vec<&str> = obj.keys().map(String::as_str).collect();
            anyhow::bail!("method '{method}' has no hyper-parameter '{k}' (it has: {})", known.join(", "));
        }
        obj.insert(k.clone(), val.clone());
    }
    serde_json::from_value(v).map_err(|e| anyhow::anyhow!("method '{method}': bad hyper-parameter value ({e})"))
}

/// [`by_name`] with hyper-parameters overridden by field name (see each method's settings type, e.g.
/// [`ReviewKdConfig`]); `kdscope info` lists the methods.
pub fn by_name_with(name: &str, params: &Params) -> anyhow::Result<Box<dyn Distiller>> {
    let l = name.to_ascii_lowercase();
    if let Some(step) = l.strip_prefix("reviewkd-step") {
        let k: usize = step.parse().ok().filter(|k| *k <= 4).ok_or_else(|| {
            anyhow::anyhow!("ReviewKD ablation steps are reviewkd-step0 … reviewkd-step4, got '{name}'")
        })?;
        return Ok(Box::new(ReviewKd::new(tuned(ReviewKdConfig::ablation_step(k), params, name)?)));
    }
    Ok(match l.as_str() {
        "ce" | "vanilla" | "none" => {
            anyhow::ensure!(params.is_empty(), "method '{name}' has no hyper-parameters");
            Box::new(Vanilla)
        }
        "kd" | "hinton" | "kd-kl" => Box::new(tuned(HintonKd::repdistiller(), params, name)?),
        "kd-mse" | "kdlib" => Box::new(tuned(HintonKd::kd_lib(), params, name)?),
        "fitnet" | "hint" => Box::new(FitNet::new(tuned(FitNetConfig::default(), params, name)?)),
        "at" => Box::new(tuned(AttentionTransfer::default(), params, name)?),
        "pkt" => Box::new(tuned(Pkt::default(), params, name)?),
        "rkd" => Box::new(tuned(Rkd::default(), params, name)?),
        "vid" => Box::new(Vid::new(tuned(VidConfig::default(), params, name)?)),
        "dkd" => Box::new(tuned(Dkd::default(), params, name)?),
        "crd" => Box::new(Crd::new(tuned(CrdConfig::default(), params, name)?)),
        "ofd" | "overhaul" => Box::new(Ofd::new(tuned(OfdConfig::default(), params, name)?)),
        "reviewkd" | "review" => Box::new(ReviewKd::new(tuned(ReviewKdConfig::default(), params, name)?)),
        other => anyhow::bail!(
            "unknown distillation method '{other}' (known: {})",
            METHODS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Overrides reach the method's settings (visible in `hyper`), and unknown names or wrong types are
    /// refused with the list of known ones.
    #[test]
    fn hyper_parameters_by_name() {
        let mut p = Params::new();
        p.insert("weight".into(), serde_json::json!(2.5));
        let m = by_name_with("reviewkd", &p).unwrap();
        assert_eq!(m.hyper()["config"]["weight"], serde_json::json!(2.5));
        let m = by_name_with("reviewkd-step2", &p).unwrap();
        let c = &m.hyper()["config"];
        assert_eq!((c["weight"].as_f64(), c["attention"].as_bool()), (Some(2.5), Some(false)));
        p.insert("nope".into(), serde_json::json!(1));
        let e = by_name_with("at", &p).err().unwrap().to_string();
        assert!(e.contains("no hyper-parameter 'nope'") && e.contains("weight"), "{e}");
        let mut bad = Params::new();
        bad.insert("weight".into(), serde_json::json!("heavy"));
        assert!(by_name_with("ofd", &bad).is_err());
        assert!(by_name_with("ce", &bad).is_err());
    }
}
