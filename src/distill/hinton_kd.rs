//! "Distilling the Knowledge in a Neural Network" (Hinton, Vinyals & Dean 2015), in both published
//! forms:
//! - [`KdForm::Kl`]: `w_ce · CE(s, y) + w_kd · KL(softmax(t/T) ‖ softmax(s/T)) · T²`
//!   (RepDistiller/mdistiller; defaults T = 4, weights 0.1 / 0.9);
//! - [`KdForm::Mse`]: `w_ce · CE(s, y) + w_kd · T² · MSE(softmax(t/T), softmax(s/T))`
//!   (KD-Lib `VanillaKD`, used by KD-Explorer; defaults T = 20, weights 0.5 / 0.5).
use dfdx::prelude::{AsArray, NoneTape, WithEmptyTape};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::losses::{cross_entropy, kd_kl, kd_mse, logits_of};
use super::{Distiller, LossParts, StepCtx};
use super::{Method, MethodInfo};
use crate::models::Outputs;
use crate::nn::Tracked;

/// Which divergence compares the softened outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KdForm {
    /// Written `KL` (earlier files: `Kl`, still read).
    #[serde(rename = "KL", alias = "Kl")]
    Kl,
    /// Written `MSE` (earlier files: `Mse`, still read).
    #[serde(rename = "MSE", alias = "Mse")]
    Mse,
}

/// Hinton KD.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct HintonKd {
    pub form: KdForm,
    pub temperature: f32,
    pub ce_weight: f32,
    pub kd_weight: f32,
}

impl HintonKd {
    /// RepDistiller defaults: KL form, T = 4, CE 0.1, KD 0.9.
    pub fn repdistiller() -> Self {
        Self { form: KdForm::Kl, temperature: 4.0, ce_weight: 0.1, kd_weight: 0.9 }
    }
    /// KD-Lib defaults: MSE form, T = 20, CE 0.5, KD 0.5.
    pub fn kd_lib() -> Self {
        Self { form: KdForm::Mse, temperature: 20.0, ce_weight: 0.5, kd_weight: 0.5 }
    }
}

impl Distiller for HintonKd {
    fn name(&self) -> String {
        match self.form {
            KdForm::Kl => "kd".into(),
            KdForm::Mse => "kd-mse".into(),
        }
    }
    fn hyper(&self) -> serde_json::Value {
        json!({"form": self.form, "temperature": self.temperature, "ce_weight": self.ce_weight, "kd_weight": self.kd_weight})
    }
    fn loss(
        &mut self,
        student: Outputs<Tracked>,
        teacher: &Outputs<NoneTape>,
        labels: &[usize],
        _: StepCtx<'_>,
    ) -> LossParts {
        let s = logits_of(student.logits);
        let s2 = s.with_empty_tape();
        let t = teacher.logits.data();
        let ce = cross_entropy(s, labels);
        let kd = match self.form {
            KdForm::Kl => kd_kl(s2, t, self.temperature),
            KdForm::Mse => kd_mse(s2, t, self.temperature),
        };
        let (cv, kv) = (ce.array(), kd.array());
        LossParts { total: ce * self.ce_weight + kd * self.kd_weight, parts: vec![("ce", cv), ("kd", kv)] }
    }
}

/// `kd`: Hinton KD as RepDistiller.
pub const KD: MethodInfo = MethodInfo {
    name: "kd",
    aliases: &["hinton", "kd-kl"],
    about: "Hinton KD, KL·T² (T 4, CE 0.1 / KD 0.9)",
    build: |name, params| Ok(Method::distill(super::tuned(HintonKd::repdistiller(), params, name)?)),
};

/// `kd-mse`: Hinton KD as KD-Lib.
pub const KD_MSE: MethodInfo = MethodInfo {
    name: "kd-mse",
    aliases: &["kdlib"],
    about: "Hinton KD, CE + T²·MSE of softened outputs (T 20, 0.5 / 0.5)",
    build: |name, params| Ok(Method::distill(super::tuned(HintonKd::kd_lib(), params, name)?)),
};
