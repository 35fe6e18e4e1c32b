//! Four-stage ResNets with basic or bottleneck blocks (He et al. 2016), in the two forms KD code uses:
//!
//! - **CIFAR** (`resnetv2_18/34/50/101/152`): RepDistiller's / mdistiller's `resnetv2.py` (`ResNet18`, …
//!   in their model tables): a 3x3 stride-1 stem without max-pool, widths 64-128-256-512 (×4 for
//!   bottlenecks), strides 1-2-2-2, `shortcut.0` / `shortcut.1` projections, classifier `linear`.
//! - **torchvision** (`tv_resnet18/34/50/101/152`): `torchvision.models.resnet*` at any input size from
//!   32 px: a 7x7 stride-2 stem (padding 3), 3x3 stride-2 max-pool (padding 1, padding never wins the
//!   max), the stride of a bottleneck on its 3x3 convolution (ResNet v1.5), `downsample.0` /
//!   `downsample.1` projections, adaptive average pooling to 1x1, classifier `fc`. A
//!   `torchvision.models.resnet50(num_classes=…)` state dict loads as is.
//!
//! Both initialise convolutions Kaiming-normal (fan-out), batch norms to 1/0 and the classifier with
//! PyTorch's default. Taps: `stem` (after the stem's ReLU, before the max-pool, as mdistiller's ImageNet
//! ResNets), `layerK.pre` / `layerK` (each stage's output before / after its last ReLU), `pool`.
use anyhow::Context;
use dfdx::prelude::Tape;
use rand::Rng;

use super::registry::{Family, Shapes};
use super::{numbered_stages, Facts, Features};
use crate::nn::ops::{self, ConvCfg};
use crate::nn::{BatchNorm2d, Conv2d, Dev, Linear, Store, Var};

/// Blocks per stage and whether they are bottlenecks, by depth.
fn layout(depth: usize) -> Option<([usize; 4], bool)> {
    Some(match depth {
        18 => ([2, 2, 2, 2], false),
        34 => ([3, 4, 6, 3], false),
        50 => ([3, 4, 6, 3], true),
        101 => ([3, 4, 23, 3], true),
        152 => ([3, 8, 36, 3], true),
        _ => return None,
    })
}

/// The depths of this family, for messages.
const DEPTHS: &str = "18, 34, 50, 101 or 152";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Style {
    Cifar,
    Torchvision,
}

#[derive(Clone, Debug)]
struct Block {
    convs: Vec<(Conv2d, BatchNorm2d)>,
    shortcut: Option<(Conv2d, BatchNorm2d)>,
}

impl Block {
    #[allow(clippy::too_many_arguments)]
    fn new(
        s: &mut Store,
        rng: &mut impl Rng,
        name: &str,
        style: Style,
        cin: usize,
        planes: usize,
        stride: usize,
        bottleneck: bool,
    ) -> Self {
        let mut cb = |i: usize, io: (usize, usize), k: usize, stride: usize| {
            let c = Conv2d::new(s, rng, &format!("{name}.conv{i}"), io.0, io.1, k, ConvCfg::new(stride, k / 2), false);
            (c, BatchNorm2d::new(s, &format!("{name}.bn{i}"), io.1))
        };
        let (mut convs, cout) = if bottleneck {
            let c =
                vec![cb(1, (cin, planes), 1, 1), cb(2, (planes, planes), 3, stride), cb(3, (planes, 4 * planes), 1, 1)];
            (c, 4 * planes)
        } else {
            (vec![cb(1, (cin, planes), 3, stride), cb(2, (planes, planes), 3, 1)], planes)
        };
        // Every batch norm but the last is read by the next convolution alone: deferred to its input.
        let last = convs.len() - 1;
        convs[..last].iter_mut().for_each(|(_, bn)| bn.cfg.defer = true);
        let short = if style == Style::Cifar { "shortcut" } else { "downsample" };
        let shortcut = (stride != 1 || cin != cout).then(|| {
            let c = Conv2d::new(s, rng, &format!("{name}.{short}.0"), cin, cout, 1, ConvCfg::new(stride, 0), false);
            (c, BatchNorm2d::new(s, &format!("{name}.{short}.1"), cout))
        });
        Self { convs, shortcut }
    }

    /// The block output; its last ReLU fused into the residual add when `relu`.
    fn forward<T: Tape<f32, Dev>>(&self, s: &Store, x: Var<T>, train: bool, relu: bool) -> Var<T> {
        let (mut out, res) = x.fork();
        let res = match &self.shortcut {
            Some((c, bn)) => bn.forward_conv(s, c, res, train, false),
            None => res,
        };
        let ((c, bn), first) = self.convs.split_last().expect("a block has convolutions");
        for (c, bn) in first {
            out = bn.forward_conv(s, c, out, train, true);
        }
        bn.forward_conv_add(s, c, out, Some(res), train, relu)
    }
}

/// The network both styles share.
#[derive(Clone, Debug)]
struct Net {
    style: Style,
    stem: (Conv2d, BatchNorm2d),
    layers: Vec<Vec<Block>>,
    classifier: Linear,
    bottleneck: bool,
}

impl Net {
    fn new(s: &mut Store, rng: &mut impl Rng, style: Style, depth: usize, in_ch: usize, classes: usize) -> Self {
        let (blocks, bottleneck) = layout(depth).expect("depth checked by the parser");
        let (k, stride) = if style == Style::Cifar { (3, 1) } else { (7, 2) };
        let conv1 = Conv2d::new(s, rng, "conv1", in_ch, 64, k, ConvCfg::new(stride, k / 2), false);
        let stem = (conv1, BatchNorm2d::new(s, "bn1", 64));
        let mut cin = 64;
        let mut layers = Vec::new();
        for (li, &n) in blocks.iter().enumerate() {
            let planes = 64 << li;
            let stage = (0..n)
                .map(|bi| {
                    let stride = if li > 0 && bi == 0 { 2 } else { 1 };
                    let b =
                        Block::new(s, rng, &format!("layer{}.{bi}", li + 1), style, cin, planes, stride, bottleneck);
                    cin = if bottleneck { 4 * planes } else { planes };
                    b
                })
                .collect();
            layers.push(stage);
        }
        let name = if style == Style::Cifar { "linear" } else { "fc" };
        let classifier = Linear::new(s, rng, name, cin, classes, true);
        Self { style, stem, layers, classifier, bottleneck }
    }

    fn forward<T: Tape<f32, Dev>>(&self, s: &Store, x: Var<T>, train: bool, feats: &mut Features<T>) -> Var<T> {
        let mut out = feats.tap("stem", self.stem.1.forward_conv(s, &self.stem.0, x, train, true));
        if self.style == Style::Torchvision {
            out = ops::max_pool2d(out, 3, 2, 1);
        }
        for (li, blocks) in self.layers.iter().enumerate() {
            let last = blocks.len() - 1;
            for (bi, b) in blocks.iter().enumerate() {
                if bi < last {
                    out = b.forward(s, out, train, true);
                } else {
                    out = feats.stage_end(li + 1, |relu| b.forward(s, out, train, relu));
                }
            }
        }
        let pooled = feats.tap("pool", ops::global_avg_pool(out));
        self.classifier.forward(s, pooled)
    }

    fn facts(&self, classifier: &'static str) -> Facts {
        let bn = if self.bottleneck { "bn3" } else { "bn2" };
        Facts {
            classifier,
            last_conv: ("layer4", true),
            stages: numbered_stages("layer", 4, ".pre"),
            bn_before_relu: Some((1..=4).map(|i| format!("layer{i}.{}.{bn}", self.layers[i - 1].len() - 1)).collect()),
        }
    }
}

/// A CIFAR ResNet-18/34/50/101/152 (mdistiller's `resnetv2.py`).
#[derive(Clone, Debug)]
pub struct ResNetV2(Net);

impl ResNetV2 {
    pub fn forward<T: Tape<f32, Dev>>(&self, s: &Store, x: Var<T>, train: bool, feats: &mut Features<T>) -> Var<T> {
        self.0.forward(s, x, train, feats)
    }
}

crate::network!(ResNetV2, |net| net.0.facts("linear"));

/// A torchvision (ImageNet-style) ResNet-18/34/50/101/152.
#[derive(Clone, Debug)]
pub struct TvResNet(Net);

impl TvResNet {
    pub fn forward<T: Tape<f32, Dev>>(&self, s: &Store, x: Var<T>, train: bool, feats: &mut Features<T>) -> Var<T> {
        self.0.forward(s, x, train, feats)
    }
}

crate::network!(TvResNet, |net| net.0.facts("fc"));

fn depth_of(name: &str, prefix: &str) -> Option<anyhow::Result<usize>> {
    let rest = name.strip_prefix(prefix)?;
    Some(super::registry::parse_depth(rest, "ResNet").and_then(|d| {
        anyhow::ensure!(layout(d).is_some(), "ResNet depth must be {DEPTHS}, got {d}");
        Ok(d)
    }))
}

fn parse_cifar(name: &str) -> Option<anyhow::Result<String>> {
    let d = depth_of(name, "resnetv2_").or_else(|| depth_of(name.strip_suffix("_cifar")?, "resnet"))?;
    Some(d.map(|d| format!("resnetv2_{d}")))
}

fn parse_tv(name: &str) -> Option<anyhow::Result<String>> {
    let d = depth_of(name, "tv_resnet").or_else(|| depth_of(name, "torchvision.resnet"))?;
    Some(d.map(|d| format!("tv_resnet{d}")))
}

/// The depth whose blocks per stage and block kind the tensors show (`layerK.N.conv3` marks bottlenecks).
fn infer_depth(shapes: &Shapes) -> Option<usize> {
    let blocks: [usize; 4] =
        std::array::from_fn(|l| super::registry::count_indices(shapes, &format!("layer{}.", l + 1)));
    let bottleneck = shapes.contains_key("layer1.0.conv3.weight");
    [18, 34, 50, 101, 152].into_iter().find(|&d| layout(d) == Some((blocks, bottleneck)))
}

fn infer_cifar(shapes: &Shapes) -> Option<String> {
    (shapes.get("conv1.weight")?.get(2) == Some(&3) && shapes.contains_key("linear.weight"))
        .then(|| infer_depth(shapes).map(|d| format!("resnetv2_{d}")))?
}

fn infer_tv(shapes: &Shapes) -> Option<String> {
    (shapes.get("conv1.weight")?.get(2) == Some(&7) && shapes.contains_key("fc.weight"))
        .then(|| infer_depth(shapes).map(|d| format!("tv_resnet{d}")))?
}

/// CIFAR ResNet-18/34/50/101/152 in the registry.
pub const CIFAR: Family = Family::sized(
    "resnetv2",
    "resnetv2_<18|34|50|101|152> (CIFAR, mdistiller's ResNet18…)",
    &["resnetv2_18", "resnetv2_34", "resnetv2_50"],
    parse_cifar,
    |name, s, rng, in_ch, classes| {
        let d = depth_of(name, "resnetv2_").context("not a resnetv2 name")??;
        Ok(ResNetV2(Net::new(s, rng, Style::Cifar, d, in_ch, classes)).into())
    },
)
.inferred_by(infer_cifar);

/// torchvision ResNet-18/34/50/101/152 in the registry.
pub const TORCHVISION: Family = Family::sized(
    "tv_resnet",
    "tv_resnet<18|34|50|101|152> (torchvision)",
    &["tv_resnet18", "tv_resnet34", "tv_resnet50", "tv_resnet101"],
    parse_tv,
    |name, s, rng, in_ch, classes| {
        let d = depth_of(name, "tv_resnet").context("not a tv_resnet name")??;
        Ok(TvResNet(Net::new(s, rng, Style::Torchvision, d, in_ch, classes)).into())
    },
)
.inferred_by(infer_tv);
