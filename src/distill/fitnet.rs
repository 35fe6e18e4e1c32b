//! "FitNets: Hints for Thin Deep Nets" (Romero et al., ICLR 2015), as mdistiller's `FitNet`: the
//! student's hint stage (default the second stage after the stem, mdistiller's `HINT_LAYER = 2`) is
//! mapped by a convolutional regressor (conv + BN + ReLU) to the teacher's stage feature and compared
//! by MSE, weight 100, plus cross-entropy, in one stage of training.
//!
//! The regressor follows mdistiller's `ConvReg`: 3×3 conv (stride 1, padding 1) at equal sizes,
//! 3×3 conv stride 2 when the student map is twice the teacher's, a `(1 + s − t)` valid conv when it is
//! otherwise larger; when it is half the teacher's, a 2× nearest upsampling followed by a 3×3 conv
//! (mdistiller uses a 4×4 transposed convolution there).
use dfdx::prelude::NoneTape;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::losses::{cross_entropy, logits_of, mse_to};
use super::{Distiller, LossParts, Setup, StepCtx};
use super::{Method, MethodInfo};
use crate::models::{Outputs, Stage};
use crate::nn::ops::{self, ConvCfg};
use crate::nn::{BatchNorm2d, Conv2d, Store, Tracked, Var};

/// FitNet's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FitNetConfig {
    pub ce_weight: f32,
    pub weight: f32,
    /// Stage index after the stem (0-based) of both models.
    pub hint_stage: usize,
}

impl Default for FitNetConfig {
    fn default() -> Self {
        Self { ce_weight: 1.0, weight: 100.0, hint_stage: 1 }
    }
}

/// A convolutional regressor from one feature shape to another (conv + BN + ReLU).
#[derive(Clone, Debug)]
pub struct ConvReg {
    conv: Conv2d,
    bn: BatchNorm2d,
    upsample: Option<(usize, usize)>,
}

impl ConvReg {
    /// Builds `name.conv`/`name.bn` mapping `s` to `t`.
    pub fn new(store: &mut Store, rng: &mut ChaCha8Rng, name: &str, s: &Stage, t: &Stage) -> anyhow::Result<Self> {
        let (sc, tc) = (s.channels, t.channels);
        let conv = |store: &mut Store, rng: &mut ChaCha8Rng, k: usize, cfg: ConvCfg| {
            let c = Conv2d::new(store, rng, &format!("{name}.conv"), sc, tc, k, cfg, true);
            store.set(c.weight, crate::nn::params::uniform_fan_in(rng, tc * sc * k * k, sc * k * k));
            store.set(c.bias.expect("bias"), crate::nn::params::uniform_fan_in(rng, tc, sc * k * k));
            c
        };
        let (conv, upsample) = if s.height == 2 * t.height {
            (conv(store, rng, 3, ConvCfg::new(2, 1)), None)
        } else if s.height == t.height {
            (conv(store, rng, 3, ConvCfg::new(1, 1)), None)
        } else if s.height * 2 == t.height {
            (conv(store, rng, 3, ConvCfg::new(1, 1)), Some((t.height, t.width)))
        } else if s.height > t.height && s.height - t.height == s.width - t.width {
            (conv(store, rng, 1 + s.height - t.height, ConvCfg::new(1, 0)), None)
        } else {
            anyhow::bail!(
                "no regressor from a {}×{} student map to a {}×{} teacher map ('{}' → '{}')",
                s.height,
                s.width,
                t.height,
                t.width,
                s.feat,
                t.feat
            );
        };
        let bn = BatchNorm2d::new(store, &format!("{name}.bn"), tc);
        Ok(Self { conv, bn, upsample })
    }

    pub fn forward(&self, store: &Store, x: Var<Tracked>) -> Var<Tracked> {
        let x = match self.upsample {
            Some((h, w)) => ops::upsample_nearest(x, h, w),
            None => x,
        };
        self.bn.forward(store, self.conv.forward(store, x), true, true)
    }
}

/// FitNet.
pub struct FitNet {
    pub cfg: FitNetConfig,
    taps: Option<(String, String)>,
    reg: Option<ConvReg>,
    store: Store,
}

impl FitNet {
    pub fn new(cfg: FitNetConfig) -> Self {
        Self { cfg, taps: None, reg: None, store: Store::new() }
    }

    /// The hint loss (before its weight) of a student hint feature against the teacher's.
    pub fn hint_loss(&self, student: Var<Tracked>, teacher: &Var) -> super::Loss {
        let reg = self.reg.as_ref().expect("FitNet used before setup");
        mse_to(reg.forward(&self.store, student), teacher.data())
    }

    /// Builds the regressor for two stages (what `setup` does with the models' hint stages).
    pub fn build(&mut self, s: &Stage, t: &Stage, seed: u64) -> anyhow::Result<()> {
        let mut store = Store::new();
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xF17_4E7);
        self.reg = Some(ConvReg::new(&mut store, &mut rng, "conv_reg", s, t)?);
        self.store = store;
        self.taps = Some((s.feat.clone(), t.feat.clone()));
        Ok(())
    }

    pub fn store_mut(&mut self) -> &mut Store {
        &mut self.store
    }
}

impl Default for FitNet {
    fn default() -> Self {
        Self::new(FitNetConfig::default())
    }
}

impl Distiller for FitNet {
    fn name(&self) -> String {
        "fitnet".into()
    }
    fn hyper(&self) -> serde_json::Value {
        json!({"config": self.cfg, "taps": self.taps})
    }
    fn needs_features(&self) -> bool {
        true
    }
    fn setup(&mut self, setup: &Setup) -> anyhow::Result<()> {
        let t = &setup.teacher_layout;
        let i = self.cfg.hint_stage;
        let (Some(s), Some(ts)) = (setup.student_layout.stages.get(i), t.stages.get(i)) else {
            anyhow::bail!(
                "FitNet hint stage {i} does not exist (student has {} stages, teacher {})",
                setup.student_layout.stages.len(),
                t.stages.len()
            );
        };
        self.build(s, ts, setup.seed)
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
        let (s, t) = self.taps.clone().expect("FitNet used before setup");
        let sv = student.features.take(&s).unwrap_or_else(|| panic!("student has no tap '{s}'"));
        let tv = teacher.features.get(&t).unwrap_or_else(|| panic!("teacher has no tap '{t}'"));
        let feat = self.hint_loss(sv, tv);
        let ce = cross_entropy(logits_of(student.logits), labels);
        super::combine(ce, self.cfg.ce_weight, "hint", feat, self.cfg.weight)
    }
}

/// `fitnet` in the registry.
pub const METHOD: MethodInfo = MethodInfo {
    name: "fitnet",
    aliases: &["hint"],
    about: "FitNet hint on the second stage, conv regressor, MSE ×100",
    build: |name, params| Ok(Method::distill(FitNet::new(super::tuned(FitNetConfig::default(), params, name)?))),
};
