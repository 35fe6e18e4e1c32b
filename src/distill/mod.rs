//! Distillation methods. Each method is one file behind the [`Distiller`] trait (as in mdistiller):
//! it turns the student's outputs (with tape), the teacher's outputs and the labels into a loss. Each
//! file also declares its [`MethodInfo`] (name, aliases, description, constructor), registered by one
//! line in [`METHODS`]; a training run's [`Method`] is either the student alone (cross-entropy) or a
//! distiller, so needing a teacher is a matter of type.
pub mod attention_transfer;
pub mod crd;
pub mod dkd;
pub mod fitnet;
pub mod hinton_kd;
pub mod losses;
pub mod ofd;
pub mod pkt;
mod registry;
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
pub use registry::{by_name, by_name_with, info, methods_table, Method, MethodInfo, METHODS};
pub use review_kd::{ReviewKd, ReviewKdConfig};
pub use rkd::Rkd;
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
    pub teacher: &'a Model,
    pub student_layout: FeatureLayout,
    pub teacher_layout: FeatureLayout,
    pub train_len: usize,
    /// Labels of the training images (by dataset index).
    pub train_labels: &'a [usize],
    pub num_classes: usize,
    pub seed: u64,
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

/// A knowledge-distillation method: a loss of the student's and the teacher's outputs.
pub trait Distiller: Send {
    /// Short name (`"ce"`, `"kd"`, …) used in reports and run names.
    fn name(&self) -> String;
    /// Hyper-parameters, for reports and the reproducibility appendix.
    fn hyper(&self) -> serde_json::Value;
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
    /// The training loss for one batch (`teacher`: the teacher's outputs on the same images).
    fn loss(
        &mut self,
        student: Outputs<Tracked>,
        teacher: &Outputs<NoneTape>,
        labels: &[usize],
        ctx: StepCtx<'_>,
    ) -> LossParts;
}

/// Hyper-parameter overrides by field name of a method's settings (`{"weight": 2.0, "temperature": 8}`),
/// as JSON values.
pub type Params = serde_json::Map<String, serde_json::Value>;

/// `c` with the fields named in `params` replaced; an unknown name or a value of the wrong type is an
/// error that lists the method's hyper-parameters.
pub(crate) fn tuned<C: serde::Serialize + serde::de::DeserializeOwned>(
    c: C,
    params: &Params,
    method: &str,
) -> anyhow::Result<C> {
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
