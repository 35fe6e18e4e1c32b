//! MobileNetV2 ("MobileNetV2: Inverted Residuals and Linear Bottlenecks", Sandler et al. 2018) for
//! CIFAR as RepDistiller's/mdistiller's `mobilenetv2.py` (`mobile_half`: expansion 6, width ×0.5,
//! registered as `MobileNetV2`): a 3×3 stride-2 stem, seven groups of inverted-residual blocks
//! (1×1 expand + BN + ReLU, 3×3 depthwise + BN + ReLU, 1×1 linear projection + BN; identity residual
//! when stride 1 and widths match), a 1×1 conv to 1280 channels + BN + ReLU, global average pooling
//! and a linear classifier. Feature taps `stage1..4` are the outputs of groups 1, 2, 4 and 6 (the
//! reference's `feats[1:]`; they end in BN without ReLU, so they are their own pre-activation).
//! Initialisation as the reference: convolutions N(0, 2/(k²·out)), the classifier N(0, 0.01²), zero
//! biases. State-dict names: `conv1.0`, `conv1.1`, `blocks.{g}.{i}.conv.{0,1,3,4,6,7}`, `conv2.{0,1}`,
//! `classifier.0`.
use dfdx::prelude::Tape;
use rand::Rng;

use super::Features;

use super::registry::Family;
use super::{numbered_stages, Facts};
use crate::nn::ops::{self, ConvCfg};
use crate::nn::{BatchNorm2d, Conv2d, Dev, Init, Linear, Store, Var};

/// `(expansion, width, blocks, stride)` of the seven groups before the width multiplier.
const SETTING: [(usize, usize, usize, usize); 7] =
    [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)];
/// Groups whose outputs are the stage taps.
const TAPPED: [usize; 4] = [1, 2, 4, 6];
const WIDTH_MULT: f64 = 0.5;
const LAST_CHANNEL: usize = 1280;

/// Conv with the reference's init `N(0, 2/(k²·out))` (independent of groups).
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv(
    s: &mut Store,
    rng: &mut impl Rng,
    name: &str,
    cin: usize,
    cout: usize,
    k: usize,
    cfg: ConvCfg,
) -> Conv2d {
    Conv2d::with_init(s, rng, name, (cin, cout), k, cfg, false, Init::Normal((2.0 / (k * k * cout) as f32).sqrt()))
}

#[derive(Clone, Debug)]
struct InvertedResidual {
    layers: [(Conv2d, BatchNorm2d); 3],
    residual: bool,
}

impl InvertedResidual {
    fn new(s: &mut Store, rng: &mut impl Rng, name: &str, cin: usize, cout: usize, stride: usize, t: usize) -> Self {
        let hid = cin * t;
        let mut layer = |i: usize, a: usize, b: usize, k: usize, cfg: ConvCfg| {
            let c = conv(s, rng, &format!("{name}.conv.{i}"), a, b, k, cfg);
            (c, BatchNorm2d::new(s, &format!("{name}.conv.{}", i + 1), b))
        };
        let layers = [
            layer(0, cin, hid, 1, ConvCfg::new(1, 0)),
            layer(3, hid, hid, 3, ConvCfg::new(stride, 1).groups(hid)),
            layer(6, hid, cout, 1, ConvCfg::new(1, 0)),
        ];
        Self { layers, residual: stride == 1 && cin == cout }
    }

    fn forward<T: Tape<f32, Dev>>(&self, s: &Store, x: Var<T>, train: bool) -> Var<T> {
        let (x, res) = if self.residual {
            let (a, b) = x.fork();
            (a, Some(b))
        } else {
            (x, None)
        };
        let mut out = x;
        for (i, (c, bn)) in self.layers.iter().enumerate() {
            out = bn.forward_conv(s, c, out, train, i < 2);
        }
        match res {
            Some(r) => ops::add(out, r, false),
            None => out,
        }
    }
}

/// MobileNetV2 (`mobile_half`) for 32×32 inputs.
#[derive(Clone, Debug)]
pub struct MobileNetV2 {
    conv1: (Conv2d, BatchNorm2d),
    blocks: Vec<Vec<InvertedResidual>>,
    conv2: (Conv2d, BatchNorm2d),
    classifier: Linear,
}

impl MobileNetV2 {
    pub fn new(s: &mut Store, rng: &mut impl Rng, in_ch: usize, classes: usize) -> Self {
        let width = |c: usize| (c as f64 * WIDTH_MULT) as usize;
        let mut cin = width(32);
        let conv1 = (conv(s, rng, "conv1.0", in_ch, cin, 3, ConvCfg::new(2, 1)), BatchNorm2d::new(s, "conv1.1", cin));
        let blocks = SETTING
            .iter()
            .enumerate()
            .map(|(g, &(t, c, n, stride))| {
                let cout = width(c);
                (0..n)
                    .map(|i| {
                        let b = InvertedResidual::new(
                            s,
                            rng,
                            &format!("blocks.{g}.{i}"),
                            cin,
                            cout,
                            if i == 0 { stride } else { 1 },
                            t,
                        );
                        cin = cout;
                        b
                    })
                    .collect()
            })
            .collect();
        let conv2 = (
            conv(s, rng, "conv2.0", cin, LAST_CHANNEL, 1, ConvCfg::new(1, 0)),
            BatchNorm2d::new(s, "conv2.1", LAST_CHANNEL),
        );
        let classifier = Linear::with_init(s, rng, "classifier.0", (LAST_CHANNEL, classes), true, Init::Normal(0.01));
        Self { conv1, blocks, conv2, classifier }
    }

    pub fn forward<T: Tape<f32, Dev>>(&self, s: &Store, x: Var<T>, train: bool, feats: &mut Features<T>) -> Var<T> {
        let mut out = self.conv1.1.forward_conv(s, &self.conv1.0, x, train, true);
        out = feats.tap("stem", out);
        for (g, group) in self.blocks.iter().enumerate() {
            for b in group {
                out = b.forward(s, out, train);
            }
            if let Some(k) = TAPPED.iter().position(|&t| t == g) {
                out = feats.tap(&format!("stage{}", k + 1), out);
            }
        }
        let out = feats.tap("final", self.conv2.1.forward_conv(s, &self.conv2.0, out, train, true));
        // The reference's AvgPool2d(2, ceil_mode) covers the whole 2×2 map of a 32×32 input.
        let pooled = feats.tap("pool", ops::global_avg_pool(out));
        self.classifier.forward(s, pooled)
    }
}

// Linear bottlenecks: the stage outputs have no activation.
crate::network!(MobileNetV2, |_net| Facts {
    classifier: "classifier.0",
    last_conv: ("final", true),
    stages: numbered_stages("stage", 4, ""),
    bn_before_relu: Some(
        ["blocks.1.1", "blocks.2.2", "blocks.4.2", "blocks.6.0"].iter().map(|b| format!("{b}.conv.7")).collect(),
    ),
});

/// MobileNetV2 (`mobile_half`) in the registry.
pub const FAMILY: Family =
    Family::fixed("mobilenetv2", &["mobile_half", "mobilenet_v2"], 3, |_, s, rng, in_ch, classes| {
        Ok(MobileNetV2::new(s, rng, in_ch, classes).into())
    });
