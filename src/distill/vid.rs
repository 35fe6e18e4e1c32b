//! "Variational Information Distillation for Knowledge Transfer" (Ahn, Hu, Damianou, Lawrence & Dai,
//! CVPR 2019), as mdistiller's/RepDistiller's `VID`: for each stage pair a regressor (1×1 conv, ReLU,
//! 1×1 conv, ReLU, 1×1 conv, to the teacher's width) predicts the mean of a Gaussian over the teacher
//! feature with a learned per-channel variance `softplus(log_scale) + ε` (initial variance 5); the loss
//! is the negative log-likelihood `mean(½((μ − t)²/σ² + ln σ²))`, summed over stages, weight 1, plus
//! cross-entropy. A larger map is adaptive-average-pooled to the smaller size. The variances are
//! trained (as RepDistiller; mdistiller keeps them outside its optimiser). Stages pair the deepest
//! `min(stages)` of the two models.
use dfdx::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::losses::{constant, cross_entropy, feature_matrix, logits_of, pool_to_smaller, Loss};
use super::{Distiller, LossParts, Setup, StepCtx};
use super::{Method, MethodInfo};
use crate::models::{Outputs, Stage};
use crate::nn::ops::{self, ConvCfg};
use crate::nn::{Conv2d, PId, Store, Tracked, Var};

/// VID's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VidConfig {
    pub ce_weight: f32,
    pub weight: f32,
    pub init_pred_var: f32,
    pub eps: f32,
}

impl Default for VidConfig {
    fn default() -> Self {
        Self { ce_weight: 1.0, weight: 1.0, init_pred_var: 5.0, eps: 1e-5 }
    }
}

#[derive(Clone, Debug)]
struct Regressor {
    convs: [Conv2d; 3],
    log_scale: PId,
    taps: (String, String),
}

/// VID.
pub struct Vid {
    pub cfg: VidConfig,
    regs: Vec<Regressor>,
    store: Store,
}

impl Vid {
    pub fn new(cfg: VidConfig) -> Self {
        Self { cfg, regs: Vec::new(), store: Store::new() }
    }

    /// Builds one regressor per stage pair (`regressors.{i}.{0,2,4}`, `log_scales.{i}`).
    pub fn build(&mut self, pairs: &[(&Stage, &Stage)], seed: u64) {
        let mut store = Store::new();
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x71D);
        let init = ((self.cfg.init_pred_var as f64 - self.cfg.eps as f64).exp() - 1.0).ln() as f32;
        self.regs = pairs
            .iter()
            .enumerate()
            .map(|(i, (s, t))| {
                let (sc, tc) = (s.channels, t.channels);
                let mut conv = |j: usize, cin: usize| {
                    let c = Conv2d::new(
                        &mut store,
                        &mut rng,
                        &format!("regressors.{i}.{j}"),
                        cin,
                        tc,
                        1,
                        ConvCfg::new(1, 0),
                        false,
                    );
                    store.set(c.weight, crate::nn::params::uniform_fan_in(&mut rng, tc * cin, cin));
                    c
                };
                let convs = [conv(0, sc), conv(2, tc), conv(4, tc)];
                let log_scale = store.add(format!("log_scales.{i}"), vec![tc], vec![init; tc]);
                Regressor { convs, log_scale, taps: (s.feat.clone(), t.feat.clone()) }
            })
            .collect();
        self.store = store;
    }

    pub fn store_mut(&mut self) -> &mut Store {
        &mut self.store
    }

    /// The VID loss of stage pair `i` (before the method's weight).
    pub fn stage_loss(&self, i: usize, student: Var<Tracked>, teacher: &Var) -> Loss {
        let r = &self.regs[i];
        let s = &self.store;
        let (student, target) = pool_to_smaller(student, teacher);
        let x = ops::relu(r.convs[0].forward(s, student));
        let x = ops::relu(r.convs[1].forward(s, x));
        let mean = r.convs[2].forward(s, x);
        let sh = mean.shape;
        let (n, c, hw) = (sh.n, sh.c, sh.plane());
        let mean = feature_matrix(mean).reshape_like(&(n, c, hw));
        let log_scale = crate::nn::params::tensor_of(s.get(r.log_scale)).clone().put_tape(Tracked::default());
        let var = ((log_scale.exp() + 1.0).ln() + self.cfg.eps)
            .broadcast_like::<(usize, usize, usize), Axes2<0, 2>>(&(n, c, hw));
        let t = constant(target.to_vec(), n, c * hw).reshape_like(&(n, c, hw));
        (((mean - t).square() / var.with_empty_tape() + var.ln()) * 0.5).mean()
    }
}

impl Default for Vid {
    fn default() -> Self {
        Self::new(VidConfig::default())
    }
}

impl Distiller for Vid {
    fn name(&self) -> String {
        "vid".into()
    }
    fn hyper(&self) -> serde_json::Value {
        json!({"config": self.cfg, "pairs": self.regs.iter().map(|r| &r.taps).collect::<Vec<_>>()})
    }
    fn needs_features(&self) -> bool {
        true
    }
    fn setup(&mut self, setup: &Setup) -> anyhow::Result<()> {
        let t = &setup.teacher_layout;
        let k = setup.student_layout.stages.len().min(t.stages.len());
        let pairs: Vec<(&Stage, &Stage)> = setup.student_layout.last(k).iter().zip(t.last(k)).collect();
        self.build(&pairs, setup.seed);
        Ok(())
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
        assert!(!self.regs.is_empty(), "VID used before setup");
        let feat = (0..self.regs.len())
            .map(|i| {
                let (s, t) = &self.regs[i].taps;
                let sv = student.features.take(s).unwrap_or_else(|| panic!("student has no tap '{s}'"));
                self.stage_loss(i, sv, teacher.features.get(t).unwrap_or_else(|| panic!("teacher has no tap '{t}'")))
            })
            .reduce(|a, b| a + b)
            .expect("at least one stage");
        let ce = cross_entropy(logits_of(student.logits), labels);
        super::combine(ce, self.cfg.ce_weight, "vid", feat, self.cfg.weight)
    }
}

/// `vid` in the registry.
pub const METHOD: MethodInfo = MethodInfo {
    name: "vid",
    aliases: &[],
    about: "variational information distillation on every paired stage",
    build: |name, params| Ok(Method::distill(Vid::new(super::tuned(VidConfig::default(), params, name)?))),
};
