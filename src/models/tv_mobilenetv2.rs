//! torchvision's MobileNetV2 (`torchvision.models.mobilenet_v2`, width 1.0, Sandler et al. 2018) at
//! any input size from 32 px: a 3x3 stride-2 stem + BN + ReLU6, seventeen inverted-residual blocks in
//! seven groups (strides 1-2-2-2-1-2-1; 1x1 expansion + BN + ReLU6 where the expansion is not 1, 3x3
//! depthwise + BN + ReLU6, 1x1 linear projection + BN; identity residual when the stride is 1 and the
//! widths match), a 1x1 convolution to 1280 channels + BN + ReLU6, adaptive average pooling and the
//! classifier (dropout 0.2, linear). Names as torchvision's `nn.Sequential`s: `features.0.{0,1}`,
//! `features.{k}.conv.{0.0, 0.1, 1.0, 1.1, 2, 3}` (`conv.{0.0, 0.1, 1, 2}` for the block without
//! expansion), `features.18.{0,1}`, `classifier.1`. A `torchvision.models.mobilenet_v2(num_classes=…)`
//! state dict loads as is.
//!
//! Initialisation as torchvision: convolutions N(0, 2/(k²·out)) (Kaiming fan-out, which PyTorch does
//! not divide by the groups), batch norms 1/0, the classifier N(0, 0.01²) with zero bias. Taps as the
//! CIFAR MobileNetV2: `stem`, `stage1..4` (the outputs of groups 1, 2, 4 and 6, strides 4 to 32; linear
//! bottlenecks, so their own pre-activation), `final` (the 1280-channel map CAM weights), `pool`.
use dfdx::prelude::Tape;
use rand::Rng;

use super::mobilenetv2::conv;
use super::registry::Family;
use super::{numbered_stages, Facts, Features};
use crate::nn::ops::{self, ConvCfg};
use crate::nn::{BatchNorm2d, Conv2d, Dev, Init, Linear, Store, Var};

/// `(expansion, width, blocks, stride)` of the seven groups (torchvision's `inverted_residual_setting`).
const SETTING: [(usize, usize, usize, usize); 7] =
    [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)];
/// Groups whose outputs are the stage taps.
const TAPPED: [usize; 4] = [1, 2, 4, 6];
const STEM: usize = 32;
const LAST_CHANNEL: usize = 1280;
const DROPOUT: f32 = 0.2;

/// A convolution and its batch norm, followed by ReLU6 or not.
type ConvBn = (Conv2d, BatchNorm2d);

fn conv_bn(
    s: &mut Store,
    rng: &mut impl Rng,
    names: (&str, &str),
    io: (usize, usize),
    k: usize,
    cfg: ConvCfg,
) -> ConvBn {
    (conv(s, rng, names.0, io.0, io.1, k, cfg), BatchNorm2d::new(s, names.1, io.1))
}

fn forward_conv_bn<T: Tape<f32, Dev>>(s: &Store, (c, bn): &ConvBn, x: Var<T>, train: bool, act: bool) -> Var<T> {
    let y = bn.forward_conv(s, c, x, train, false);
    if act {
        ops::relu6(y)
    } else {
        y
    }
}

#[derive(Clone, Debug)]
struct InvertedResidual {
    /// Expansion (when not 1) and depthwise layers, each followed by ReLU6, then the projection.
    layers: Vec<ConvBn>,
    residual: bool,
}

impl InvertedResidual {
    fn new(s: &mut Store, rng: &mut impl Rng, name: &str, cin: usize, cout: usize, stride: usize, t: usize) -> Self {
        let hid = cin * t;
        let mut layers = Vec::new();
        if t != 1 {
            let names = (format!("{name}.conv.0.0"), format!("{name}.conv.0.1"));
            layers.push(conv_bn(s, rng, (&names.0, &names.1), (cin, hid), 1, ConvCfg::new(1, 0)));
        }
        let i = layers.len();
        let names = (format!("{name}.conv.{i}.0"), format!("{name}.conv.{i}.1"));
        layers.push(conv_bn(s, rng, (&names.0, &names.1), (hid, hid), 3, ConvCfg::new(stride, 1).groups(hid)));
        let names = (format!("{name}.conv.{}", i + 1), format!("{name}.conv.{}", i + 2));
        layers.push(conv_bn(s, rng, (&names.0, &names.1), (hid, cout), 1, ConvCfg::new(1, 0)));
        Self { layers, residual: stride == 1 && cin == cout }
    }

    fn forward<T: Tape<f32, Dev>>(&self, s: &Store, x: Var<T>, train: bool) -> Var<T> {
        let (mut out, res) = if self.residual {
            let (a, b) = x.fork();
            (a, Some(b))
        } else {
            (x, None)
        };
        let last = self.layers.len() - 1;
        for (i, l) in self.layers.iter().enumerate() {
            out = forward_conv_bn(s, l, out, train, i < last);
        }
        match res {
            Some(r) => ops::add(out, r, false),
            None => out,
        }
    }
}

/// torchvision's MobileNetV2.
#[derive(Clone, Debug)]
pub struct TvMobileNetV2 {
    stem: ConvBn,
    groups: Vec<Vec<InvertedResidual>>,
    last: ConvBn,
    classifier: Linear,
}

impl TvMobileNetV2 {
    pub fn new(s: &mut Store, rng: &mut impl Rng, in_ch: usize, classes: usize) -> Self {
        let stem = conv_bn(s, rng, ("features.0.0", "features.0.1"), (in_ch, STEM), 3, ConvCfg::new(2, 1));
        let (mut cin, mut index) = (STEM, 1);
        let groups = SETTING
            .iter()
            .map(|&(t, c, n, stride)| {
                (0..n)
                    .map(|i| {
                        let stride = if i == 0 { stride } else { 1 };
                        let b = InvertedResidual::new(s, rng, &format!("features.{index}"), cin, c, stride, t);
                        (cin, index) = (c, index + 1);
                        b
                    })
                    .collect()
            })
            .collect();
        let names = (format!("features.{index}.0"), format!("features.{index}.1"));
        let last = conv_bn(s, rng, (&names.0, &names.1), (cin, LAST_CHANNEL), 1, ConvCfg::new(1, 0));
        let classifier = Linear::with_init(s, rng, "classifier.1", (LAST_CHANNEL, classes), true, Init::Normal(0.01));
        Self { stem, groups, last, classifier }
    }

    pub fn forward<T: Tape<f32, Dev>>(&self, s: &Store, x: Var<T>, train: bool, feats: &mut Features<T>) -> Var<T> {
        let mut out = feats.tap("stem", forward_conv_bn(s, &self.stem, x, train, true));
        for (g, group) in self.groups.iter().enumerate() {
            for b in group {
                out = b.forward(s, out, train);
            }
            if let Some(k) = TAPPED.iter().position(|&t| t == g) {
                out = feats.tap(&format!("stage{}", k + 1), out);
            }
        }
        let out = feats.tap("final", forward_conv_bn(s, &self.last, out, train, true));
        let mut pooled = feats.tap("pool", ops::global_avg_pool(out));
        if train {
            pooled = ops::dropout(pooled, DROPOUT);
        }
        self.classifier.forward(s, pooled)
    }

    /// The index in `features` of the last block of group `g`.
    fn last_block(g: usize) -> usize {
        SETTING[..=g].iter().map(|s| s.2).sum()
    }
}

crate::network!(TvMobileNetV2, |_net| Facts {
    classifier: "classifier.1",
    last_conv: ("final", true),
    stages: numbered_stages("stage", 4, ""),
    bn_before_relu: Some(TAPPED.iter().map(|&g| format!("features.{}.conv.3", TvMobileNetV2::last_block(g))).collect()),
});

/// torchvision's MobileNetV2 in the registry.
pub const FAMILY: Family = Family::fixed(
    "tv_mobilenet_v2",
    &["tv_mobilenetv2", "torchvision.mobilenet_v2"],
    3,
    |_, s, rng, in_ch, classes| Ok(TvMobileNetV2::new(s, rng, in_ch, classes).into()),
);
