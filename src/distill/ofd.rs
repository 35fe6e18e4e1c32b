//! "A Comprehensive Overhaul of Feature Distillation" (Heo et al., ICCV 2019), as mdistiller's `OFD`:
//! student pre-activation features of the paired stages go through a connector (1×1 conv + BN to the
//! teacher's width, conv init N(0, 2/(k²·out))); the teacher's pre-activations (adaptive-average-pooled
//! to the student's size) are the targets, with a per-channel margin `m` from the teacher's batch norm
//! before the ReLU (`E[x | x < 0]` of N(β, |γ|): `β − |γ|·φ(β/|γ|)/Φ(−β/|γ|)`, or `−3|γ|` when
//! `Φ(−β/|γ|) ≤ 0.001`). The partial L2 loss per element is `(s − t)²` where `t > 0`, `(s − t)²` where
//! `m < t ≤ 0` and `s > t`, `(s − m)²` where `t ≤ m` and `s > m`, else 0; summed and divided by the
//! batch size; stage `i` of `k` weighted `1/2^(k−1−i)` (the deepest 1); weight 0.001, plus
//! cross-entropy. Stages pair the deepest `min(stages)` of the two models and each uses the margin of
//! its own teacher stage (mdistiller zips margins from the shallowest stage, which differs only when
//! the teacher has more stages than the student).
//!
//! The teacher runs in evaluation mode, as for every other method here (mdistiller's `OFD.train()`
//! also switches the teacher to training-mode batch statistics).
use dfdx::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::losses::{constant, cross_entropy, feature_matrix, logits_of, pool_teacher_to, Loss};
use super::{Distiller, LossParts, Setup, StepCtx};
use super::{Method, MethodInfo};
use crate::models::{Outputs, Stage};
use crate::nn::ops::ConvCfg;
use crate::nn::{BatchNorm2d, Conv2d, Store, Tracked, Var};

/// OFD's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OfdConfig {
    pub ce_weight: f32,
    pub weight: f32,
    /// Connector kernel size (1 in mdistiller's CIFAR setting; odd, "same" padding).
    pub kernel_size: usize,
}

impl Default for OfdConfig {
    fn default() -> Self {
        Self { ce_weight: 1.0, weight: 1e-3, kernel_size: 1 }
    }
}

/// OFD's margin per channel from a batch norm's weight `γ` and bias `β`.
pub fn margins(gamma: &[f32], beta: &[f32]) -> Vec<f32> {
    gamma
        .iter()
        .zip(beta)
        .map(|(&g, &b)| {
            let (s, m) = ((g as f64).abs(), b as f64);
            let cdf = 0.5 * libm::erfc(m / s / std::f64::consts::SQRT_2); // Φ(−m/s)
            if cdf > 0.001 {
                (-s * (-(m / s).powi(2) / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt() / cdf + m) as f32
            } else {
                (-3.0 * s) as f32
            }
        })
        .collect()
}

#[derive(Clone, Debug)]
struct Connector {
    conv: Conv2d,
    bn: BatchNorm2d,
    taps: (String, String),
    margin: Vec<f32>,
}

/// OFD (see the module docs).
pub struct Ofd {
    pub cfg: OfdConfig,
    store: Store,
    connectors: Vec<Connector>,
}

impl Ofd {
    pub fn new(cfg: OfdConfig) -> Self {
        Self { cfg, store: Store::new(), connectors: Vec::new() }
    }

    /// Builds one connector per (student, teacher) stage pair with that teacher stage's margins.
    pub fn build(&mut self, pairs: &[(&Stage, &Stage)], margins: Vec<Vec<f32>>, seed: u64) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.cfg.kernel_size % 2 == 1,
            "OFD connector kernel must be odd, got {}",
            self.cfg.kernel_size
        );
        anyhow::ensure!(pairs.len() == margins.len(), "{} stage pairs but {} margin sets", pairs.len(), margins.len());
        let mut store = Store::new();
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0FD);
        let k = self.cfg.kernel_size;
        self.connectors = pairs
            .iter()
            .zip(margins)
            .enumerate()
            .map(|(i, ((s, t), margin))| {
                anyhow::ensure!(
                    margin.len() == t.channels,
                    "teacher stage '{}' has {} channels but {} margins",
                    t.preact,
                    t.channels,
                    margin.len()
                );
                let name = format!("connectors.{i}");
                // Kaiming-normal with fan-out k²·out, as the reference.
                let conv = Conv2d::new(
                    &mut store,
                    &mut rng,
                    &format!("{name}.0"),
                    s.channels,
                    t.channels,
                    k,
                    ConvCfg::new(1, (k - 1) / 2),
                    false,
                );
                let bn = BatchNorm2d::new(&mut store, &format!("{name}.1"), t.channels);
                Ok(Connector { conv, bn, taps: (s.preact.clone(), t.preact.clone()), margin })
            })
            .collect::<anyhow::Result<_>>()?;
        self.store = store;
        Ok(())
    }

    pub fn store_mut(&mut self) -> &mut Store {
        &mut self.store
    }

    /// The partial L2 loss of stage pair `i` (unweighted): connector output against the teacher's
    /// pre-activation pooled to the student's size.
    pub fn stage_loss(&self, i: usize, student: Var<Tracked>, teacher: &Var) -> Loss {
        let c = &self.connectors[i];
        let s = c.bn.forward(&self.store, c.conv.forward(&self.store, student), true, false);
        let sh = s.shape;
        let target = pool_teacher_to(teacher, sh.h, sh.w);
        assert_eq!(target.shape, sh, "OFD: connector output {} vs teacher {}", sh, target.shape);
        // Per element: a goal (t or m) and whether it counts, from the forward values.
        let hw = sh.plane();
        let (mut goal, mut mask) = (Vec::with_capacity(sh.numel()), Vec::with_capacity(sh.numel()));
        for (j, (&sv, &tv)) in s.data().iter().zip(target.data()).enumerate() {
            let m = c.margin[(j / hw) % sh.c];
            let (g, on) = if tv > 0.0 {
                (tv, true)
            } else if tv > m {
                (tv, sv > tv)
            } else {
                (m, sv > m)
            };
            goal.push(g);
            mask.push(if on { 1.0 } else { 0.0 });
        }
        let (n, len) = (sh.n, sh.per_sample());
        let f = feature_matrix(s);
        ((f - constant(goal, n, len)).square() * constant(mask, n, len)).sum() / n as f32
    }

    /// The weighted sum over stage pairs (`1/2^(k−1−i)`, deepest 1), before the method's weight.
    pub fn feature_loss(&self, student: &mut Outputs<Tracked>, teacher: &Outputs<NoneTape>) -> Loss {
        let k = self.connectors.len();
        (0..k)
            .map(|i| {
                let (s, t) = &self.connectors[i].taps;
                let sv = student.features.take(s).unwrap_or_else(|| panic!("student has no tap '{s}'"));
                let tv = teacher.features.get(t).unwrap_or_else(|| panic!("teacher has no tap '{t}'"));
                self.stage_loss(i, sv, tv) / (1u64 << (k - 1 - i)) as f32
            })
            .reduce(|a, b| a + b)
            .expect("at least one stage")
    }
}

impl Default for Ofd {
    fn default() -> Self {
        Self::new(OfdConfig::default())
    }
}

impl Distiller for Ofd {
    fn name(&self) -> String {
        "ofd".into()
    }
    fn hyper(&self) -> serde_json::Value {
        let taps: Vec<_> = self.connectors.iter().map(|c| &c.taps).collect();
        json!({"ce_weight": self.cfg.ce_weight, "weight": self.cfg.weight, "kernel_size": self.cfg.kernel_size, "pairs": taps})
    }
    fn needs_features(&self) -> bool {
        true
    }
    fn setup(&mut self, setup: &Setup) -> anyhow::Result<()> {
        let t = &setup.teacher_layout;
        let teacher = setup.teacher;
        let bns = teacher.bn_before_relu()?;
        anyhow::ensure!(
            bns.len() == t.stages.len(),
            "{}: {} batch norms for {} stages",
            teacher.name(),
            bns.len(),
            t.stages.len()
        );
        let k = setup.student_layout.stages.len().min(t.stages.len());
        let values = |name: String| -> anyhow::Result<Vec<f32>> {
            let id = teacher.store.find(&name).ok_or_else(|| anyhow::anyhow!("{} has no {name}", teacher.name()))?;
            Ok(teacher.store.get(id).values())
        };
        let margins = bns[bns.len() - k..]
            .iter()
            .map(|b| Ok(margins(&values(format!("{b}.weight"))?, &values(format!("{b}.bias"))?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let pairs: Vec<(&Stage, &Stage)> = setup.student_layout.last(k).iter().zip(t.last(k)).collect();
        self.build(&pairs, margins, setup.seed)
    }
    fn modules(&self) -> Option<&Store> {
        Some(&self.store)
    }
    fn modules_mut(&mut self) -> Option<&mut Store> {
        Some(&mut self.store)
    }
    fn loss(
        &mut self,
        mut student: Outputs<Tracked>,
        teacher: &Outputs<NoneTape>,
        labels: &[usize],
        _: StepCtx<'_>,
    ) -> LossParts {
        assert!(!self.connectors.is_empty(), "OFD used before setup");
        let feat = self.feature_loss(&mut student, teacher);
        let ce = cross_entropy(logits_of(student.logits), labels);
        super::combine(ce, self.cfg.ce_weight, "ofd", feat, self.cfg.weight)
    }
}

/// `ofd` in the registry.
pub const METHOD: MethodInfo = MethodInfo {
    name: "ofd",
    aliases: &["overhaul"],
    about: "overhaul of feature distillation: pre-ReLU features, margins, partial L2, ×0.001",
    build: |name, params| Ok(Method::distill(Ofd::new(super::tuned(OfdConfig::default(), params, name)?))),
};

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand values: β = 0, γ = 1 gives `−φ(0)/Φ(0) = −2/√(2π)`; |γ| is used; a large positive β
    /// (Φ(−β/γ) ≤ 0.001) falls back to `−3|γ|`.
    #[test]
    fn margins_by_hand() {
        let m = margins(&[1.0, -2.0, 0.5], &[0.0, 0.0, 2.0]);
        let want0 = -2.0 / (2.0 * std::f64::consts::PI).sqrt();
        assert!((m[0] as f64 - want0).abs() < 1e-7);
        assert!((m[1] as f64 - 2.0 * want0).abs() < 1e-6);
        assert_eq!(m[2], -1.5);
    }
}
