//! ShuffleNet ("ShuffleNet: An Extremely Efficient Convolutional Neural Network for Mobile Devices",
//! Zhang et al. 2018) for CIFAR as RepDistiller's/mdistiller's `ShuffleNetv1.py` (`ShuffleV1`: widths
//! 240/480/960, 4/8/4 blocks, 3 groups): a 1×1 stem to 24 channels + BN + ReLU, three stages of
//! bottlenecks (grouped 1×1 + BN + ReLU, channel shuffle, 3×3 depthwise + BN + ReLU, grouped 1×1 +
//! BN; the first block of a stage has stride 2 and concatenates a 3×3 average-pooled shortcut, the
//! others add the identity), global average pooling and a linear classifier. Taps `layerN` (after
//! the last block's ReLU) and `layerN.pre` (before it). PyTorch default initialisation.
use dfdx::prelude::Tape;
use rand::Rng;

use super::Features;

use super::registry::Family;
use super::{numbered_stages, Facts};
use crate::nn::ops::{self, ConvCfg};
use crate::nn::{conv_bn, BatchNorm2d, Conv2d, Dev, Linear, Store, Var};

const OUT_PLANES: [usize; 3] = [240, 480, 960];
const BLOCKS: [usize; 3] = [4, 8, 4];
const GROUPS: usize = 3;
const STEM: usize = 24;

#[derive(Clone, Debug)]
struct Bottleneck {
    l1: (Conv2d, BatchNorm2d),
    l2: (Conv2d, BatchNorm2d),
    l3: (Conv2d, BatchNorm2d),
    g1: usize,
    stride: usize,
}

impl Bottleneck {
    fn new(s: &mut Store, rng: &mut impl Rng, name: &str, cin: usize, cout: usize, stride: usize) -> Self {
        let mid = cout / 4;
        let g1 = if cin == STEM { 1 } else { GROUPS };
        Self {
            l1: conv_bn(s, rng, name, 1, (cin, mid), 1, ConvCfg::new(1, 0).groups(g1)),
            l2: conv_bn(s, rng, name, 2, (mid, mid), 3, ConvCfg::new(stride, 1).groups(mid)),
            l3: conv_bn(s, rng, name, 3, (mid, cout), 1, ConvCfg::new(1, 0).groups(GROUPS)),
            g1,
            stride,
        }
    }

    /// The block before its final ReLU.
    fn forward<T: Tape<f32, Dev>>(&self, s: &Store, x: Var<T>, train: bool) -> Var<T> {
        let (x, res) = x.fork();
        let out = self.l1.1.forward_conv(s, &self.l1.0, x, train, true);
        let out = ops::channel_shuffle(out, self.g1);
        let out = self.l2.1.forward_conv(s, &self.l2.0, out, train, true);
        let out = self.l3.1.forward_conv(s, &self.l3.0, out, train, false);
        if self.stride == 2 {
            ops::concat_channels(out, ops::avg_pool2d(res, 3, 2, 1))
        } else {
            ops::add(out, res, false)
        }
    }
}

/// ShuffleNetV1 (`ShuffleV1`).
#[derive(Clone, Debug)]
pub struct ShuffleNetV1 {
    stem: (Conv2d, BatchNorm2d),
    layers: Vec<Vec<Bottleneck>>,
    linear: Linear,
}

impl ShuffleNetV1 {
    pub fn new(s: &mut Store, rng: &mut impl Rng, in_ch: usize, classes: usize) -> Self {
        let stem = conv_bn(s, rng, "", 1, (in_ch, STEM), 1, ConvCfg::new(1, 0));
        let mut cin = STEM;
        let layers = OUT_PLANES
            .iter()
            .zip(BLOCKS)
            .enumerate()
            .map(|(li, (&planes, n))| {
                (0..n)
                    .map(|i| {
                        let (stride, cat) = if i == 0 { (2, cin) } else { (1, 0) };
                        let b = Bottleneck::new(s, rng, &format!("layer{}.{i}", li + 1), cin, planes - cat, stride);
                        cin = planes;
                        b
                    })
                    .collect()
            })
            .collect();
        let linear = Linear::new(s, rng, "linear", OUT_PLANES[2], classes, true);
        Self { stem, layers, linear }
    }

    pub fn forward<T: Tape<f32, Dev>>(&self, s: &Store, x: Var<T>, train: bool, feats: &mut Features<T>) -> Var<T> {
        let mut out = feats.tap("stem", self.stem.1.forward_conv(s, &self.stem.0, x, train, true));
        for (li, blocks) in self.layers.iter().enumerate() {
            for (bi, b) in blocks.iter().enumerate() {
                let pre = b.forward(s, out, train);
                out = if bi + 1 < blocks.len() {
                    ops::relu(pre)
                } else {
                    let pre = feats.tap(&format!("layer{}.pre", li + 1), pre);
                    feats.tap(&format!("layer{}", li + 1), ops::relu(pre))
                };
            }
        }
        let pooled = feats.tap("pool", ops::global_avg_pool(out));
        self.linear.forward(s, pooled)
    }
}

crate::network!(ShuffleNetV1, |_net| Facts {
    classifier: "linear",
    last_conv: ("layer3", true),
    stages: numbered_stages("layer", 3, ".pre"),
    bn_before_relu: None,
});

/// ShuffleNet (v1, `ShuffleV1`) in the registry.
pub const FAMILY: Family =
    Family::fixed("shufflev1", &["shufflenetv1", "shufflenet_v1", "shufflenet"], 3, |_, s, rng, in_ch, classes| {
        Ok(ShuffleNetV1::new(s, rng, in_ch, classes).into())
    });
