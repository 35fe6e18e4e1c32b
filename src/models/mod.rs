//! The model zoo. A [`Model`] is an architecture ([`ModelSpec`]) plus its parameters ([`Store`]);
//! its forward pass returns logits and named intermediate features ([`Outputs`]).
pub mod lenet;
pub mod mobilenetv2;
mod network;
pub mod registry;
pub mod resnet;
pub mod resnetv2;
pub mod shufflenetv1;
pub mod shufflenetv2;
pub mod tv_mobilenetv2;
pub mod tv_vgg;
pub mod vgg;
pub mod wrn;

use std::fmt;

use dfdx::prelude::{NoneTape, Tape};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

pub use network::{numbered_stages, Facts, ModelTape, Network};
pub use registry::{zoo, zoo_table, Arch, Body, Family, Shapes, FAMILIES};

use crate::nn::ops::{grad_probe, grad_probe_cut, GradProbe};
use crate::nn::{Dev, Shape4, Store, Tracked, Var};

/// Everything needed to build a model: architecture, input channels and number of classes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSpec {
    pub arch: Arch,
    pub in_channels: usize,
    pub num_classes: usize,
}

impl ModelSpec {
    /// `arch` with its family's default input channels (colour images; grey ones for LeNet-5, the
    /// MNIST model); set `in_channels` to change.
    pub fn new(arch: &str, num_classes: usize) -> anyhow::Result<Self> {
        let arch: Arch = arch.parse()?;
        let in_channels = arch.family().in_channels;
        Ok(Self { arch, in_channels, num_classes })
    }
}

impl fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} classes)", self.arch, self.num_classes)
    }
}

/// The three stages of a CIFAR ResNet or WRN: `n` blocks at each of `widths[1..]`, the first block
/// of stages 2 and 3 with stride 2. `make(stage, index, cin, cout, stride)` builds one block
/// (`stage` and `index` from 0).
pub(crate) fn stages<B>(
    widths: [usize; 4],
    n: usize,
    mut make: impl FnMut(usize, usize, usize, usize, usize) -> B,
) -> Vec<Vec<B>> {
    let mut cin = widths[0];
    let mut out = Vec::new();
    for (si, &w) in widths[1..].iter().enumerate() {
        let mut blocks = Vec::with_capacity(n);
        for bi in 0..n {
            let stride = if si > 0 && bi == 0 { 2 } else { 1 };
            blocks.push(make(si, bi, cin, w, stride));
            cin = w;
        }
        out.push(blocks);
    }
    out
}

/// Named intermediate features collected during a forward pass.
pub struct Features<T> {
    enabled: bool,
    pub items: Vec<(String, Var<T>)>,
    /// Taps whose gradient is recorded (see [`Model::forward_probed`]) and their probes.
    probe_names: Vec<String>,
    /// Whether the earliest probe stops the gradient (nothing before it needs one).
    cut: bool,
    pub probes: Vec<(String, GradProbe)>,
}

impl<T: Tape<f32, Dev>> Features<T> {
    pub fn new(enabled: bool) -> Self {
        Self { enabled, items: Vec::new(), probe_names: Vec::new(), cut: false, probes: Vec::new() }
    }
    /// Whether [`Self::tap`] records or probes `name`.
    fn wants(&self, name: &str) -> bool {
        self.enabled || self.probe_names.iter().any(|p| p == name)
    }

    /// The end of residual stage `stage` (1-based): `last(relu)` runs the stage's last block, its
    /// final ReLU fused in when `relu`. Where the pre-activation `layerN.pre` is tapped or probed,
    /// the block runs without it and the ReLU apart; otherwise (training without feature
    /// distillation, inference) the ReLU is fused. Taps `layerN`.
    pub fn stage_end(&mut self, stage: usize, last: impl FnOnce(bool) -> Var<T>) -> Var<T> {
        let pre = format!("layer{stage}.pre");
        let out = if self.wants(&pre) {
            let p = last(false);
            crate::nn::ops::relu(self.tap(&pre, p))
        } else {
            last(true)
        };
        self.tap(&format!("layer{stage}"), out)
    }

    /// Records `v` under `name` (a second handle sharing its tape) and hands `v` back; a probed name
    /// also gets a gradient probe on the main path.
    pub fn tap(&mut self, name: &str, v: Var<T>) -> Var<T> {
        let v = if self.probe_names.iter().any(|p| p == name) {
            let (v, probe) = if self.cut && self.probes.is_empty() { grad_probe_cut(v) } else { grad_probe(v) };
            self.probes.push((name.to_string(), probe));
            v
        } else {
            v
        };
        if !self.enabled {
            return v;
        }
        let (main, kept) = v.fork();
        self.items.push((name.to_string(), kept));
        main
    }
    /// Records a value that is not on the main path (it keeps its own tape, so losses on it
    /// back-propagate into the layers that produced it); dropped when features are off.
    pub fn keep(&mut self, name: &str, v: Var<T>) {
        if self.enabled {
            self.items.push((name.to_string(), v));
        }
    }
    pub fn get(&self, name: &str) -> Option<&Var<T>> {
        self.items.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
    /// Removes and returns the feature `name`.
    pub fn take(&mut self, name: &str) -> Option<Var<T>> {
        let i = self.items.iter().position(|(n, _)| n == name)?;
        Some(self.items.remove(i).1)
    }
    pub fn names(&self) -> Vec<&str> {
        self.items.iter().map(|(n, _)| n.as_str()).collect()
    }
}

/// Result of a forward pass.
pub struct Outputs<T> {
    pub logits: Var<T>,
    pub features: Features<T>,
}

/// One stage's output as the feature-distillation methods see it: the tap after the stage's last
/// activation (`feat`, mdistiller's `feats`) and before it (`preact`, mdistiller's `preact_feats`; the
/// same tap where the architecture has no separate pre-activation), with its shape for one image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stage {
    pub feat: String,
    pub preact: String,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

/// The stages of a model after its stem, shallow to deep, and the width of its pooled feature (the
/// input of the classifier, tap `pool`), measured by a forward pass at a given input size. Feature
/// methods derive every connector's channels and every resize from two layouts, so no teacher/student
/// pair needs a hand-written table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeatureLayout {
    pub stages: Vec<Stage>,
    pub pool_channels: usize,
}

impl FeatureLayout {
    /// The last `k` stages (the deepest ones), for pairing models with different stage counts.
    pub fn last(&self, k: usize) -> &[Stage] {
        &self.stages[self.stages.len() - k.min(self.stages.len())..]
    }
}

/// A short description of a class list for messages: the count and the first names.
pub fn class_list_summary(names: &[String]) -> String {
    let head: Vec<&str> = names.iter().take(4).map(String::as_str).collect();
    format!("{} classes: {}{}", names.len(), head.join(", "), if names.len() > 4 { ", …" } else { "" })
}

/// Checks that a model trained on `classes` (when recorded) is used on a dataset with the same class
/// names in the same order; `what` names the model in the error.
pub fn check_classes(model: &Model, what: &str, dataset: &str, classes: &[String]) -> anyhow::Result<()> {
    if let Some(c) = &model.classes {
        if c != classes {
            let at = c.iter().zip(classes).position(|(a, b)| a != b).unwrap_or(c.len().min(classes.len()));
            anyhow::bail!(
                "{what} was trained on other classes than {dataset} has: {} vs {} (first difference at class {at}: {:?} vs {:?})",
                class_list_summary(c),
                class_list_summary(classes),
                c.get(at),
                classes.get(at)
            );
        }
    }
    Ok(())
}

/// A model of the zoo with its parameters.
pub struct Model {
    pub spec: ModelSpec,
    pub store: Store,
    /// The class names it was trained on, when known (recorded in kdscope checkpoints as
    /// `kdscope.classes`; a report refuses a dataset whose classes differ).
    pub classes: Option<Vec<String>>,
    body: Body,
}

impl Model {
    /// Builds a freshly initialised model; the same `seed` gives the same parameters.
    pub fn new(spec: ModelSpec, seed: u64) -> Self {
        Self::try_new(spec, seed).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// [`Model::new`], with an error for a spec its family cannot build.
    pub fn try_new(spec: ModelSpec, seed: u64) -> anyhow::Result<Self> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut store = Store::new();
        let body = spec.arch.build(&mut store, &mut rng, spec.in_channels, spec.num_classes)?;
        Ok(Self { spec, store, classes: None, body })
    }

    /// Shorthand: `Model::build("resnet20", 100, seed)`.
    pub fn build(arch: &str, num_classes: usize, seed: u64) -> anyhow::Result<Self> {
        Ok(Self::new(ModelSpec::new(arch, num_classes)?, seed))
    }

    pub fn name(&self) -> String {
        self.spec.arch.to_string()
    }

    pub fn num_params(&self) -> usize {
        self.store.num_params()
    }

    /// The name of the final linear classifier (`fc`, `classifier` for VGGs, …).
    pub fn classifier_name(&self) -> &'static str {
        self.body.net().facts().classifier
    }

    /// The last convolutional feature map (the one CAM-style explanations weight), and whether the
    /// classifier reads its global average directly (what CAM needs; LeNet's fully connected head
    /// does not).
    pub fn last_conv_tap(&self) -> (&'static str, bool) {
        self.body.net().facts().last_conv
    }

    /// For each stage of [`feature_layout`](Model::feature_layout), the batch norm whose output feeds
    /// the stage's final ReLU (mdistiller's `get_bn_before_relu`; for ResNets the stage's pre-activation
    /// is that output plus the residual): OFD's margins come from these. ShuffleNets (whose
    /// pre-activations concatenate an un-normalised half) and LeNet (no batch norm) have none, as in
    /// mdistiller.
    pub fn bn_before_relu(&self) -> anyhow::Result<Vec<String>> {
        self.body.net().facts().bn_before_relu.ok_or_else(|| {
            anyhow::anyhow!("{} has no batch norm before each stage's ReLU (OFD cannot use it as teacher)", self.name())
        })
    }

    /// Names of the post-activation and pre-activation taps of each stage after the stem.
    fn stage_taps(&self) -> Vec<(String, String)> {
        self.body.net().facts().stages
    }

    /// The stage layout for inputs of `height × width` (one evaluation-mode forward pass of a blank
    /// image; running statistics are not touched).
    pub fn feature_layout(&self, height: usize, width: usize) -> FeatureLayout {
        let x = Var::from_vec(
            vec![0.0; self.spec.in_channels * height * width],
            Shape4::new(1, self.spec.in_channels, height, width),
        );
        let out = self.forward_with(x, false, true);
        let shape =
            |name: &str| out.features.get(name).unwrap_or_else(|| panic!("{} has no tap '{name}'", self.name())).shape;
        let stages = self
            .stage_taps()
            .into_iter()
            .map(|(feat, preact)| {
                let s = shape(&feat);
                assert_eq!(s, shape(&preact), "{}: '{feat}' and '{preact}' differ in shape", self.name());
                Stage { feat, preact, channels: s.c, height: s.h, width: s.w }
            })
            .collect();
        FeatureLayout { stages, pool_channels: shape("pool").c }
    }

    /// Forward pass with any tape; `train` selects batch statistics (and updates running ones).
    pub fn forward_with<T: ModelTape>(&self, x: Var<T>, train: bool, features: bool) -> Outputs<T> {
        assert_eq!(
            x.shape.c,
            self.spec.in_channels,
            "{} expects {} input channels, got input {}",
            self.name(),
            self.spec.in_channels,
            x.shape
        );
        let mut feats = Features::new(features);
        // Logits-only evaluation (inference, predictions, a logit-distilling teacher) folds each batch
        // norm into its convolution (`BatchNorm2d::forward_conv`); a forward that returns features
        // keeps the two ops, so its features equal a recorded forward's bit for bit.
        let run = || T::run(self.body.net(), &self.store, x, train, &mut feats);
        let logits = if !train && !features { crate::nn::with_folded_batch_norm(run) } else { run() };
        Outputs { logits, features: feats }
    }

    /// Recorded forward pass that also records the gradient flowing through each named feature tap
    /// (`stem`, `layer3`, `pool` …) once the caller runs `backward` on a loss of the outputs.
    pub fn forward_probed(&self, x: Var<Tracked>, train: bool, taps: &[&str]) -> anyhow::Result<Outputs<Tracked>> {
        self.forward_probed_with(x, train, taps, false)
    }

    /// [`forward_probed`](Model::forward_probed); with `cut`, the gradient stops at the earliest probed
    /// tap, so `backward` skips the layers before it (for explanations that need no input gradient).
    pub fn forward_probed_with(
        &self,
        x: Var<Tracked>,
        train: bool,
        taps: &[&str],
        cut: bool,
    ) -> anyhow::Result<Outputs<Tracked>> {
        let mut feats = Features::new(true);
        feats.probe_names = taps.iter().map(|t| t.to_string()).collect();
        feats.cut = cut;
        let logits = <Tracked as ModelTape>::run(self.body.net(), &self.store, x, train, &mut feats);
        for t in taps {
            anyhow::ensure!(
                feats.probes.iter().any(|(n, _)| n == t),
                "{} has no feature tap '{t}' (taps: {})",
                self.name(),
                feats.items.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
            );
        }
        Ok(Outputs { logits, features: feats })
    }

    /// Recorded forward pass (training or gradient-based analysis).
    pub fn forward(&self, x: Var<Tracked>, train: bool) -> Outputs<Tracked> {
        self.forward_with(x, train, true)
    }

    /// Inference: evaluation mode, no tape, logits only; on a worker of rayon's pool
    /// ([`crate::nn::ops::on_pool`]).
    pub fn logits(&self, x: Var<NoneTape>) -> Var<NoneTape> {
        crate::nn::ops::on_pool(|| self.forward_with(x, false, false).logits)
    }

    /// Shape of the logits for an input batch shape.
    pub fn logits_shape(&self, input: Shape4) -> Shape4 {
        Shape4::mat(input.n, self.spec.num_classes)
    }
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Model({}, {} params)", self.spec, self.num_params())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::params::tensor_of;

    /// The probes record the tape's gradients at intermediate features: for the loss `Σ_i logit[i][t_i]`
    /// the gradient at `pool` is the FC weight row `W[t_i]`, and at `layer3` (before the global average
    /// pool over 8x8) it is `W[t_i][c] / 64` at every position.
    #[test]
    fn gradient_probes_see_feature_gradients() {
        use dfdx::prelude::*;
        let m = Model::build("resnet8", 10, 3).unwrap();
        let (n, k) = (2, 10);
        let x: Vec<f32> = (0..n * 3 * 32 * 32).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
        let xv = Var::from_vec(x, Shape4 { n, c: 3, h: 32, w: 32 }).traced_input();
        let out = m.forward_probed(xv, false, &["layer3", "pool"]).unwrap();
        let targets = [4usize, 7];
        let mut mask = vec![0.0f32; n * k];
        for (i, &t) in targets.iter().enumerate() {
            mask[i * k + t] = 1.0;
        }
        let probes = out.features.probes.clone();
        let loss = (out.logits.dfdx_matrix() * crate::nn::dev().tensor_from_vec(mask, (n, k))).sum();
        let _grads = loss.backward();
        let w = m.store.get(m.store.find("fc.weight").unwrap()).values(); // (10, 64)
        let got = |name: &str| probes.iter().find(|(p, _)| p == name).unwrap().1.get().unwrap();
        let pool = got("pool");
        let l3 = got("layer3");
        assert_eq!((pool.len(), l3.len()), (n * 64, n * 64 * 64));
        for (i, &t) in targets.iter().enumerate() {
            for c in 0..64 {
                assert!((pool[i * 64 + c] - w[t * 64 + c]).abs() < 1e-6);
                for p in 0..64 {
                    assert!((l3[(i * 64 + c) * 64 + p] - w[t * 64 + c] / 64.0).abs() < 1e-7);
                }
            }
        }
        assert!(m
            .forward_probed(
                Var::from_vec(vec![0.0; 3072], Shape4 { n: 1, c: 3, h: 32, w: 32 }).traced_input(),
                false,
                &["nope"]
            )
            .is_err());
    }

    /// ShuffleNetV2's `layerN.pre` is not on the main path (it is the unshuffled concatenation); a
    /// loss on it must still reach the layers that made it: `d Σ pre / d bn3.bias = n·h·w` per channel
    /// of the last block's final batch norm (4×4 maps, 2 images → 32).
    #[test]
    fn side_taps_carry_gradients() {
        use dfdx::prelude::*;
        let m = Model::build("shufflev2", 10, 1).unwrap();
        let x: Vec<f32> = (0..2 * 3 * 32 * 32).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
        let mut out = m.forward(Var::from_vec(x, Shape4::new(2, 3, 32, 32)).traced_input(), true);
        let pre = out.features.take("layer3.pre").unwrap();
        assert_eq!(pre.shape, Shape4::new(2, 464, 4, 4));
        // The backward ops of the main path travel with the logits (as in any training loss).
        let loss = pre.dfdx_matrix().sum() + out.logits.dfdx_matrix().sum() * 0.0;
        let mut grads = loss.backward();
        let mut g =
            |name: &str| grads.get_or_alloc_mut(tensor_of(m.store.get(m.store.find(name).unwrap()))).unwrap().to_vec();
        let b = g("layer3.3.bn3.bias");
        assert!(b.iter().all(|&v| (v - 32.0).abs() < 1e-3), "{:?}", &b[..4]);
    }

    /// OFD's batch norms exist and match their stage's width for every family that has them.
    #[test]
    fn bn_before_relu_matches_the_stages() {
        for arch in ["resnet8", "resnet32x4", "wrn_16_2", "vgg8", "vgg13", "mobilenetv2"] {
            let m = Model::build(arch, 10, 0).unwrap();
            let layout = m.feature_layout(32, 32);
            let bns = m.bn_before_relu().unwrap();
            assert_eq!(bns.len(), layout.stages.len(), "{arch}");
            for (b, st) in bns.iter().zip(&layout.stages) {
                let id = m.store.find(&format!("{b}.weight")).unwrap_or_else(|| panic!("{arch}: no {b}"));
                assert_eq!(m.store.get(id).numel(), st.channels, "{arch}: {b} vs {}", st.feat);
            }
        }
        assert!(Model::build("shufflev2", 10, 0).unwrap().bn_before_relu().is_err());
    }

    #[test]
    fn parse_and_display_archs() {
        for name in
            ["resnet8", "resnet20", "resnet110", "resnet8x4", "resnet32x4", "wrn_40_2", "wrn_16_2", "vgg8", "vgg13"]
        {
            assert_eq!(name.parse::<Arch>().unwrap().to_string(), name);
        }
        assert_eq!("WRN-40-2".parse::<Arch>().unwrap(), "wrn_40_2".parse::<Arch>().unwrap());
        assert!("resnet21".parse::<Arch>().is_err());
        assert!("mobilenetv3".parse::<Arch>().is_err());
        for (alias, arch) in [("MobileNetV2", "mobilenetv2"), ("ShuffleV1", "shufflev1"), ("shufflenetv2", "shufflev2")]
        {
            assert_eq!(alias.parse::<Arch>().unwrap().to_string(), arch);
        }
    }

    /// Parameter counts of the PyTorch definitions (RepDistiller `resnet.py`/`wrn.py`), counted with
    /// `sum(p.numel() for p in model.parameters())` at 100 classes (PyTorch 2.x, the anchor's model
    /// definitions).
    #[test]
    fn parameter_counts_match_pytorch_definitions() {
        let count = |a: &str| Model::build(a, 100, 0).unwrap().num_params();
        assert_eq!(count("resnet8"), 83_892);
        assert_eq!(count("resnet14"), 181_108);
        assert_eq!(count("resnet32"), 472_756);
        assert_eq!(count("resnet44"), 667_188);
        assert_eq!(count("wrn_40_1"), 569_780);
        assert_eq!(count("wrn_16_1"), 180_916);
        assert_eq!(count("resnet20"), 278_324);
        assert_eq!(count("resnet56"), 861_620);
        assert_eq!(count("resnet110"), 1_736_564);
        assert_eq!(count("resnet8x4"), 1_233_540);
        assert_eq!(count("resnet32x4"), 7_433_860);
        assert_eq!(count("wrn_40_2"), 2_255_156);
        assert_eq!(count("wrn_16_2"), 703_284);
        // RepDistiller's vgg*_bn (conv biases, BN, one 512→100 classifier), counted in PyTorch.
        assert_eq!(count("vgg8"), 3_965_028);
        assert_eq!(count("vgg11"), 9_277_284);
        assert_eq!(count("vgg13"), 9_462_180);
        assert_eq!(count("vgg16"), 14_774_436);
        assert_eq!(count("vgg19"), 20_086_692);
        assert_eq!("VGG13_bn".parse::<Arch>().unwrap().to_string(), "vgg13");
        assert!("vgg10".parse::<Arch>().is_err());
    }
}
