//! "Distilling Knowledge via Knowledge Review" (Chen, Liu, Zhao & Jia, CVPR 2021), as mdistiller's
//! `ReviewKD`, with every switch of the paper's ablations.
//!
//! The student's stage features (post-activation, shallow to deep) plus its pooled feature are
//! processed **deepest first**. Each level has an attention-based fusion module (ABF): a 1×1 conv + BN
//! to a mid width; below the deepest level the result is fused with the residual coming from the
//! level below it (upsampled to this level's size) by two per-pixel attention maps
//! `sigmoid(conv1×1([x, y]))`; the fused map is resized to the teacher's size if they differ, passed
//! on as the next residual, and projected by a 3×3 conv + BN to the teacher's width. The outputs are
//! compared with the teacher's pre-activation stage features and pooled feature by the hierarchical
//! context loss (HCL): full-resolution MSE plus MSE of adaptive-average-pooled maps at 4×4, 2×2 and
//! 1×1 (levels not smaller than the map are skipped), weighted 1, ½, ¼, ⅛ in order and normalised.
//! The loss weight warms up linearly over the first 20 epochs.
//!
//! Every channel count and size comes from the two models' [`FeatureLayout`]s: levels pair the
//! deepest `k = min(stages)` stages of each model plus the pooled features; the mid width is
//! `min(512, student's pooled width)`.
//!
//! Ablation switches ([`ReviewKdConfig`]):
//! - `review = false`: each level only supervises its own teacher level (conv1 → resize → conv2, L2
//!   at the same level, no fusion);
//! - `residual = false` (review on): student level `i` supervises every teacher level `j ≤ i`
//!   separately, `conv2_j(resize(conv1_i(F_s^i)))` against `F_t^j` (the paper's Eq. 3, with
//!   transforms shared per level) — the review mechanism without the residual framework;
//! - `attention = false`: residual fusion by plain addition `x + y` instead of ABF's attention;
//! - `hcl = false`: plain full-resolution MSE; `hcl_levels`/`hcl_weights` change the pyramid;
//! - `residual_from_output = true`: the residual passed on is the level's output (teacher width,
//!   brought to the mid width by an extra 1×1 conv where it is fused) instead of the fused map.
use dfdx::prelude::{AsArray, NoneTape};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::losses::{cross_entropy, logits_of, mse_to, Loss};
use super::{Distiller, LossParts, Setup, StepCtx};
use super::{Method, MethodInfo};
use crate::models::{FeatureLayout, Outputs};
use crate::nn::ops::{self, ConvCfg};
use crate::nn::{BatchNorm2d, Conv2d, Store, Tracked, Var};

/// ReviewKD's settings (defaults: mdistiller's CIFAR-100 configuration, every part switched on).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReviewKdConfig {
    pub ce_weight: f32,
    pub weight: f32,
    /// Linear warm-up of the distillation weight over this many epochs (0: none).
    pub warmup_epochs: usize,
    pub max_mid_channels: usize,
    /// Use the student's pre-activation features instead of the post-activation ones.
    pub student_preact: bool,
    pub review: bool,
    pub residual: bool,
    pub attention: bool,
    pub hcl: bool,
    /// Pooled sizes of the HCL pyramid (levels `>=` the map size are skipped).
    pub hcl_levels: Vec<usize>,
    /// Weights of the full-resolution term and of the used pooled levels, in order (normalised by
    /// their sum over the terms used). Must have one more entry than `hcl_levels`.
    pub hcl_weights: Vec<f32>,
    pub residual_from_output: bool,
}

impl Default for ReviewKdConfig {
    fn default() -> Self {
        Self {
            ce_weight: 1.0,
            weight: 1.0,
            warmup_epochs: 20,
            max_mid_channels: 512,
            student_preact: false,
            review: true,
            residual: true,
            attention: true,
            hcl: true,
            hcl_levels: vec![4, 2, 1],
            hcl_weights: vec![1.0, 0.5, 0.25, 0.125],
            residual_from_output: false,
        }
    }
}

impl ReviewKdConfig {
    /// The [Re] study's ablation steps, cumulative: `0` same-level L2 (baseline), `1` + review,
    /// `2` + residual framework, `3` + ABF, `4` + HCL (full ReviewKD).
    pub fn ablation_step(step: usize) -> Self {
        Self { review: step >= 1, residual: step >= 2, attention: step >= 3, hcl: step >= 4, ..Self::default() }
    }

    /// Names of the ablation steps (for tables).
    pub const ABLATION_NAMES: [&'static str; 5] = ["same-level L2", "+ review", "+ residual", "+ ABF", "+ HCL"];
}

/// One level's sizes: the student feature it reads and the teacher feature it is compared with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Level {
    pub student_tap: String,
    pub teacher_tap: String,
    pub in_channels: usize,
    pub mid_channels: usize,
    pub out_channels: usize,
    /// Spatial size of the student feature (`shape` in mdistiller's configuration).
    pub shape: (usize, usize),
    /// Spatial size of the teacher feature (`out_shape`).
    pub out_shape: (usize, usize),
    /// Whether this level fuses a residual from the level below.
    pub fuse: bool,
}

/// The levels of a teacher/student pair, shallow to deep (the last is the pooled feature).
pub fn plan(student: &FeatureLayout, teacher: &FeatureLayout, cfg: &ReviewKdConfig) -> Vec<Level> {
    let k = student.stages.len().min(teacher.stages.len());
    let mid = cfg.max_mid_channels.min(student.pool_channels);
    let mut levels: Vec<Level> = student
        .last(k)
        .iter()
        .zip(teacher.last(k))
        .map(|(s, t)| Level {
            student_tap: if cfg.student_preact { s.preact.clone() } else { s.feat.clone() },
            teacher_tap: t.preact.clone(),
            in_channels: s.channels,
            mid_channels: mid,
            out_channels: t.channels,
            shape: (s.height, s.width),
            out_shape: (t.height, t.width),
            fuse: true,
        })
        .collect();
    levels.push(Level {
        student_tap: "pool".into(),
        teacher_tap: "pool".into(),
        in_channels: student.pool_channels,
        mid_channels: mid,
        out_channels: teacher.pool_channels,
        shape: (1, 1),
        out_shape: (1, 1),
        fuse: false,
    });
    let fusing = cfg.review && cfg.residual;
    for l in &mut levels {
        l.fuse &= fusing;
    }
    levels
}

/// An attention-based fusion module (named as mdistiller's `abfs.{i}`, `i = 0` the deepest level).
#[derive(Clone, Debug)]
struct Abf {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    conv2: Conv2d,
    bn2: BatchNorm2d,
    att: Option<Conv2d>,
    /// 1×1 projection of a residual that comes from the level output (`residual_from_output`).
    res_proj: Option<Conv2d>,
}

/// PyTorch's `kaiming_uniform_(w, a=1)`: `U(±sqrt(3 / fan_in))`.
fn kaiming_uniform_a1(rng: &mut impl Rng, n: usize, fan_in: usize) -> Vec<f32> {
    let b = (3.0 / fan_in as f32).sqrt();
    (0..n).map(|_| rng.gen_range(-b..b)).collect()
}

impl Abf {
    fn new(s: &mut Store, rng: &mut impl Rng, i: usize, l: &Level, cfg: &ReviewKdConfig, res_in: usize) -> Self {
        let p = format!("abfs.{i}");
        let (cin, mid, cout) = (l.in_channels, l.mid_channels, l.out_channels);
        let conv1 = Conv2d::new(s, rng, &format!("{p}.conv1.0"), cin, mid, 1, ConvCfg::new(1, 0), false);
        s.set(conv1.weight, kaiming_uniform_a1(rng, mid * cin, cin));
        let bn1 = BatchNorm2d::new(s, &format!("{p}.conv1.1"), mid);
        let conv2 = Conv2d::new(s, rng, &format!("{p}.conv2.0"), mid, cout, 3, ConvCfg::new(1, 1), false);
        s.set(conv2.weight, kaiming_uniform_a1(rng, cout * mid * 9, mid * 9));
        let bn2 = BatchNorm2d::new(s, &format!("{p}.conv2.1"), cout);
        let att = (l.fuse && cfg.attention).then(|| {
            let c = Conv2d::new(s, rng, &format!("{p}.att_conv.0"), 2 * mid, 2, 1, ConvCfg::new(1, 0), true);
            s.set(c.weight, crate::nn::params::uniform_fan_in(rng, 4 * mid, 2 * mid));
            s.set(c.bias.expect("att_conv has a bias"), crate::nn::params::uniform_fan_in(rng, 2, 2 * mid));
            c
        });
        let res_proj = (l.fuse && cfg.residual_from_output).then(|| {
            let c = Conv2d::new(s, rng, &format!("{p}.res_proj"), res_in, mid, 1, ConvCfg::new(1, 0), false);
            s.set(c.weight, kaiming_uniform_a1(rng, mid * res_in, res_in));
            c
        });
        Self { conv1, bn1, conv2, bn2, att, res_proj }
    }

    /// conv1 + BN of a student feature.
    fn reduce(&self, s: &Store, x: Var<Tracked>) -> Var<Tracked> {
        self.bn1.forward(s, self.conv1.forward(s, x), true, false)
    }

    /// conv2 + BN: the level's output at the teacher's width.
    fn project(&self, s: &Store, x: Var<Tracked>) -> Var<Tracked> {
        self.bn2.forward(s, self.conv2.forward(s, x), true, false)
    }

    /// Fuses the reduced feature `x` with the residual `y` from the level below.
    fn fuse(&self, s: &Store, x: Var<Tracked>, y: Var<Tracked>) -> Var<Tracked> {
        let y = match &self.res_proj {
            Some(p) => p.forward(s, y),
            None => y,
        };
        let y = resize(y, (x.shape.h, x.shape.w));
        match &self.att {
            Some(att) => {
                let (x1, x2) = x.fork();
                let (y1, y2) = y.fork();
                let z = ops::sigmoid(att.forward(s, ops::concat_channels(x1, y1)));
                ops::attention_mix(x2, y2, z)
            }
            None => ops::add(x, y, false),
        }
    }
}

/// Nearest-neighbour resize when the size differs.
fn resize(x: Var<Tracked>, to: (usize, usize)) -> Var<Tracked> {
    if (x.shape.h, x.shape.w) == to {
        x
    } else {
        ops::upsample_nearest(x, to.0, to.1)
    }
}

/// The hierarchical context loss between a student output and a (constant) teacher feature:
/// `(w₀·MSE + Σ_k w_k·MSE(pool_{l_k}(s), pool_{l_k}(t))) / Σ w` over the pooled levels `l_k` smaller
/// than the map (`w_k` taken in order of the levels used).
pub fn hcl(student: Var<Tracked>, teacher: &Var<NoneTape>, levels: &[usize], weights: &[f32]) -> Loss {
    assert_eq!(
        student.shape, teacher.shape,
        "HCL: student output {} vs teacher feature {}",
        student.shape, teacher.shape
    );
    assert_eq!(
        weights.len(),
        levels.len() + 1,
        "HCL: {} weights for {} pooled levels + full size",
        weights.len(),
        levels.len()
    );
    let h = student.shape.h;
    let used: Vec<usize> = levels.iter().copied().filter(|&l| l < h).collect();
    let mut handles = Vec::with_capacity(used.len());
    let mut s = student;
    for _ in &used {
        let (a, b) = s.fork();
        s = a;
        handles.push(b);
    }
    let mut loss = mse_to(s, teacher.data()) * weights[0];
    let mut total = weights[0];
    for ((l, sv), w) in used.iter().zip(handles).zip(&weights[1..]) {
        let tp = ops::adaptive_avg_pool2d(teacher.detach(), *l, *l);
        loss = loss + mse_to(ops::adaptive_avg_pool2d(sv, *l, *l), tp.data()) * *w;
        total += w;
    }
    loss / total
}

/// ReviewKD.
pub struct ReviewKd {
    pub cfg: ReviewKdConfig,
    levels: Vec<Level>,
    /// ABFs shallow to deep (index = level).
    abfs: Vec<Abf>,
    store: Store,
}

impl ReviewKd {
    pub fn new(cfg: ReviewKdConfig) -> Self {
        Self { cfg, levels: Vec::new(), abfs: Vec::new(), store: Store::new() }
    }

    /// The levels derived at setup (empty before).
    pub fn levels(&self) -> &[Level] {
        &self.levels
    }

    /// Builds the modules for two layouts (what [`Distiller::setup`] does with the run's models).
    pub fn build(&mut self, student: &FeatureLayout, teacher: &FeatureLayout, seed: u64) -> anyhow::Result<()> {
        let c = &self.cfg;
        anyhow::ensure!(
            c.hcl_weights.len() == c.hcl_levels.len() + 1,
            "ReviewKD: hcl_weights needs one weight for the full size and one per HCL level ({} levels, {} weights)",
            c.hcl_levels.len(),
            c.hcl_weights.len()
        );
        anyhow::ensure!(
            c.hcl_weights.iter().all(|w| *w >= 0.0) && c.hcl_weights[0] > 0.0,
            "ReviewKD: HCL weights must be >= 0 with a positive full-size weight"
        );
        let levels = plan(student, teacher, c);
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5EED_4B1D);
        let mut store = Store::new();
        let d = levels.len() - 1;
        // mdistiller numbers the ABFs deepest first.
        let mut abfs: Vec<Abf> = (0..levels.len())
            .rev()
            .map(|li| {
                let res_in = if li < d { levels[li + 1].out_channels } else { 0 };
                Abf::new(&mut store, &mut rng, d - li, &levels[li], c, res_in)
            })
            .collect();
        abfs.reverse();
        self.levels = levels;
        self.abfs = abfs;
        self.store = store;
        Ok(())
    }

    /// Outputs to compare with the teacher, as `(teacher level, output)`, from the student features
    /// shallow to deep.
    fn outputs(&self, feats: Vec<Var<Tracked>>) -> Vec<(usize, Var<Tracked>)> {
        let s = &self.store;
        let d = self.levels.len() - 1;
        let mut out = Vec::new();
        if !self.cfg.review {
            for (li, f) in feats.into_iter().enumerate() {
                let x = resize(self.abfs[li].reduce(s, f), self.levels[li].out_shape);
                out.push((li, self.abfs[li].project(s, x)));
            }
            return out;
        }
        if !self.cfg.residual {
            // Student level i supervises teacher levels j <= i, each through conv2_j.
            for (li, f) in feats.into_iter().enumerate() {
                // `fork` leaves the tape with its first handle: the last use takes that one.
                let mut x = self.abfs[li].reduce(s, f);
                for tj in 0..li {
                    let (a, b) = x.fork();
                    x = a;
                    out.push((tj, self.abfs[tj].project(s, resize(b, self.levels[tj].out_shape))));
                }
                out.push((li, self.abfs[li].project(s, resize(x, self.levels[li].out_shape))));
            }
            return out;
        }
        let mut feats: Vec<Option<Var<Tracked>>> = feats.into_iter().map(Some).collect();
        let mut residual: Option<Var<Tracked>> = None;
        for li in (0..=d).rev() {
            let abf = &self.abfs[li];
            let f = feats[li].take().expect("each level read once");
            let mut x = abf.reduce(s, f);
            if let Some(y) = residual.take() {
                x = abf.fuse(s, x, y);
            }
            let x = resize(x, self.levels[li].out_shape);
            let (x, keep) = x.fork();
            let y = abf.project(s, x);
            if self.cfg.residual_from_output {
                let (y, r) = y.fork();
                residual = Some(r);
                out.push((li, y));
            } else {
                residual = Some(keep);
                out.push((li, y));
            }
        }
        out
    }
}

impl ReviewKd {
    /// The review loss (before its weight and warm-up) for the student's level features and the
    /// teacher's, both shallow to deep as in [`ReviewKd::levels`]: the sum over compared outputs of
    /// HCL (or plain MSE with `hcl` off).
    pub fn feature_loss(&self, student: Vec<Var<Tracked>>, teacher: &[Var]) -> Loss {
        assert!(!self.levels.is_empty(), "ReviewKD used before setup");
        assert!(
            student.len() == self.levels.len() && teacher.len() == self.levels.len(),
            "ReviewKD: {} levels, {} student and {} teacher features",
            self.levels.len(),
            student.len(),
            teacher.len()
        );
        let (levels, weights): (&[usize], &[f32]) =
            if self.cfg.hcl { (&self.cfg.hcl_levels, &self.cfg.hcl_weights) } else { (&[], &[1.0]) };
        self.outputs(student)
            .into_iter()
            .map(|(tj, y)| hcl(y, &teacher[tj], levels, weights))
            .reduce(|a, b| a + b)
            .expect("at least the pooled level")
    }

    /// The method's modules (to inspect or set parameters, e.g. in tests).
    pub fn store_mut(&mut self) -> &mut Store {
        &mut self.store
    }
}

impl Default for ReviewKd {
    fn default() -> Self {
        Self::new(ReviewKdConfig::default())
    }
}

impl Distiller for ReviewKd {
    fn name(&self) -> String {
        "reviewkd".into()
    }
    fn hyper(&self) -> serde_json::Value {
        json!({"config": self.cfg, "levels": self.levels.iter().map(|l| json!({
            "student": l.student_tap, "teacher": l.teacher_tap, "in": l.in_channels, "mid": l.mid_channels,
            "out": l.out_channels, "shape": [l.shape.0, l.shape.1], "out_shape": [l.out_shape.0, l.out_shape.1], "fuse": l.fuse,
        })).collect::<Vec<_>>()})
    }
    fn needs_features(&self) -> bool {
        true
    }
    fn setup(&mut self, setup: &Setup) -> anyhow::Result<()> {
        let t = &setup.teacher_layout;
        self.build(&setup.student_layout, t, setup.seed)
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
        ctx: StepCtx<'_>,
    ) -> LossParts {
        assert!(!self.levels.is_empty(), "ReviewKD used before setup");
        let feats: Vec<Var<Tracked>> = self
            .levels
            .iter()
            .map(|l| {
                student
                    .features
                    .take(&l.student_tap)
                    .unwrap_or_else(|| panic!("student has no tap '{}'", l.student_tap))
            })
            .collect();
        let targets: Vec<Var> = self
            .levels
            .iter()
            .map(|l| {
                teacher
                    .features
                    .get(&l.teacher_tap)
                    .unwrap_or_else(|| panic!("teacher has no tap '{}'", l.teacher_tap))
                    .detach()
            })
            .collect();
        let ce = cross_entropy(logits_of(student.logits), labels);
        let review = self.feature_loss(feats, &targets);
        let (cv, rv) = (ce.array(), review.array());
        let w = self.cfg.weight * ctx.warmup(self.cfg.warmup_epochs);
        LossParts { total: ce * self.cfg.ce_weight + review * w, parts: vec![("ce", cv), ("reviewkd", rv)] }
    }
}

/// `reviewkd` in the registry.
pub const METHOD: MethodInfo = MethodInfo {
    name: "reviewkd",
    aliases: &["review"],
    about: "ReviewKD: ABF fusion deepest-first, HCL, warm-up 20 epochs",
    build: |name, params| Ok(Method::distill(ReviewKd::new(super::tuned(ReviewKdConfig::default(), params, name)?))),
};

/// The ablation steps of the [Re] ReviewKD study's Table 3.
pub const ABLATION: MethodInfo = MethodInfo {
    name: "reviewkd-step0 … reviewkd-step4",
    aliases: &["reviewkd-step0", "reviewkd-step1", "reviewkd-step2", "reviewkd-step3", "reviewkd-step4"],
    about: "ReviewKD ablation steps: same-level L2, + review, + residual, + ABF, + HCL",
    build: |name, params| {
        let k: usize =
            name.strip_prefix("reviewkd-step").and_then(|k| k.parse().ok()).filter(|k| *k <= 4).ok_or_else(|| {
                anyhow::anyhow!("ReviewKD ablation steps are reviewkd-step0 … reviewkd-step4, got '{name}'")
            })?;
        Ok(Method::distill(ReviewKd::new(super::tuned(ReviewKdConfig::ablation_step(k), params, name)?)))
    },
};

#[cfg(test)]
mod tests {
    use dfdx::prelude::*;

    use super::*;
    use crate::models::Model;
    use crate::nn::Shape4;

    /// HCL on a 4×4 map, student 0 and teacher 1…16: full MSE Σk²/16 = 93.5; level 4 is skipped (not
    /// smaller than the map); 2×2 quadrant means 3.5, 5.5, 11.5, 13.5 → 89.25 (weight ½); the 1×1 mean
    /// 8.5 → 72.25 (weight ¼); normalised by 1.75.
    #[test]
    fn hcl_hand_computed() {
        let t = Var::from_vec((1..=16).map(|v| v as f32).collect(), Shape4::new(1, 1, 4, 4));
        let s = Var::from_vec(vec![0.0; 16], Shape4::new(1, 1, 4, 4));
        let h = s.detach();
        let loss = hcl(s.traced(), &t, &[4, 2, 1], &[1.0, 0.5, 0.25, 0.125]);
        let want = (93.5 + 0.5 * 89.25 + 0.25 * 72.25) / 1.75;
        assert!((loss.array() as f64 - want).abs() < 1e-4, "{} vs {want}", loss.array());
        // d/ds_p = (2(s−t_p)/16 + ½·2(0−q(p))/4·¼ + ¼·2(0−8.5)·1/16) / 1.75 for the quadrant mean q(p).
        let g = h.grad(&mut loss.backward());
        let q = [3.5, 3.5, 5.5, 5.5, 3.5, 3.5, 5.5, 5.5, 11.5, 11.5, 13.5, 13.5, 11.5, 11.5, 13.5, 13.5];
        for p in 0..16 {
            let want = (-2.0 * (p + 1) as f64 / 16.0 - 0.5 * 2.0 * q[p] / 4.0 / 4.0 - 0.25 * 2.0 * 8.5 / 16.0) / 1.75;
            assert!((g[p] as f64 - want).abs() < 1e-5, "grad {p}: {} vs {want}", g[p]);
        }
        // Without HCL only the full-size term remains; a 1×1 map has no pooled levels at all.
        let s = Var::from_vec(vec![0.0; 16], Shape4::new(1, 1, 4, 4)).traced();
        assert!((hcl(s, &t, &[], &[1.0]).array() - 93.5).abs() < 1e-4);
        let one = Var::from_vec(vec![3.0], Shape4::new(1, 1, 1, 1));
        let s = Var::from_vec(vec![1.0], Shape4::new(1, 1, 1, 1)).traced();
        assert!((hcl(s, &one, &[4, 2, 1], &[1.0, 0.5, 0.25, 0.125]).array() - 4.0).abs() < 1e-6);
    }

    /// The levels derived from the models match mdistiller's hand-written CIFAR-100 configurations
    /// (`IN_CHANNELS`, `OUT_CHANNELS`, `SHAPES`, `OUT_SHAPES`, mid width `min(512, in[-1])`).
    #[test]
    fn levels_match_mdistiller_configs() {
        let lay = |a: &str| Model::build(a, 100, 0).unwrap().feature_layout(32, 32);
        let check =
            |t: &str, s: &str, ins: [usize; 4], outs: [usize; 4], shapes: [usize; 4], out_shapes: [usize; 4]| {
                let levels = plan(&lay(s), &lay(t), &ReviewKdConfig::default());
                assert_eq!(levels.iter().map(|l| l.in_channels).collect::<Vec<_>>(), ins, "{t}->{s} in");
                assert_eq!(levels.iter().map(|l| l.out_channels).collect::<Vec<_>>(), outs, "{t}->{s} out");
                assert_eq!(levels.iter().map(|l| l.shape.0).collect::<Vec<_>>(), shapes, "{t}->{s} shapes");
                assert_eq!(levels.iter().map(|l| l.out_shape.0).collect::<Vec<_>>(), out_shapes, "{t}->{s} out shapes");
                assert!(levels.iter().all(|l| l.mid_channels == ins[3].min(512)));
                assert_eq!(levels.iter().map(|l| l.fuse).collect::<Vec<_>>(), [true, true, true, false]);
            };
        check("resnet56", "resnet20", [16, 32, 64, 64], [16, 32, 64, 64], [32, 16, 8, 1], [32, 16, 8, 1]);
        check("resnet32x4", "resnet8x4", [64, 128, 256, 256], [64, 128, 256, 256], [32, 16, 8, 1], [32, 16, 8, 1]);
        check("wrn_40_2", "wrn_16_2", [32, 64, 128, 128], [32, 64, 128, 128], [32, 16, 8, 1], [32, 16, 8, 1]);
        // Different families: VGG-8 has four stages after its stem, a ResNet three (the deepest pair).
        check("resnet32x4", "vgg8", [256, 512, 512, 512], [64, 128, 256, 256], [8, 4, 4, 1], [32, 16, 8, 1]);
        // mdistiller's ShuffleV2 student setting (stages at half the teacher's resolution; mid 512).
        check("resnet32x4", "shufflev2", [116, 232, 464, 1024], [64, 128, 256, 256], [16, 8, 4, 1], [32, 16, 8, 1]);
        let levels = plan(&lay("resnet20"), &lay("resnet56"), &ReviewKdConfig::default());
        assert_eq!(levels[0].student_tap, "layer1");
        assert_eq!(levels[0].teacher_tap, "layer1.pre");
        assert_eq!(levels[3].teacher_tap, "pool");
        let off = plan(&lay("resnet20"), &lay("resnet56"), &ReviewKdConfig::ablation_step(1));
        assert!(off.iter().all(|l| !l.fuse));
    }
}
