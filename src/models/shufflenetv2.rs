//! ShuffleNetV2 ("ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture Design", Ma et al.
//! 2018) for CIFAR as RepDistiller's/mdistiller's `ShuffleNetv2.py` (`ShuffleV2`, net size 1: widths
//! 116/232/464, 3/7/3 basic blocks, a 1×1 conv to 1024): a 1×1 stem to 24 channels + BN + ReLU; each
//! stage is a down-sampling block (two stride-2 branches, concatenated and shuffled) and basic blocks
//! (half the channels pass through, the other half goes 1×1 + BN + ReLU, 3×3 depthwise + BN, 1×1 +
//! BN + ReLU; concatenated and shuffled with 2 groups); then 1×1 conv + BN + ReLU (tap `final`), global
//! average pooling and a linear classifier. Tap `layerN` is a stage's output; `layerN.pre` is, as in
//! the reference, the last block's concatenation before its ReLU and *before* the shuffle.
//! PyTorch default initialisation.
use dfdx::prelude::Tape;
use rand::Rng;

use super::Features;

use super::registry::Family;
use super::{numbered_stages, Facts};
use crate::nn::ops::{self, ConvCfg};
use crate::nn::{conv_bn, BatchNorm2d, Conv2d, Dev, Linear, Store, Var};

const OUT_CHANNELS: [usize; 4] = [116, 232, 464, 1024];
const BLOCKS: [usize; 3] = [3, 7, 3];
const STEM: usize = 24;

type ConvBn = (Conv2d, BatchNorm2d);

fn apply<T: Tape<f32, Dev>>(l: &ConvBn, s: &Store, x: Var<T>, train: bool, relu: bool) -> Var<T> {
    l.1.forward_conv(s, &l.0, x, train, relu)
}

#[derive(Clone, Debug)]
struct DownBlock {
    l: [ConvBn; 5],
}

impl DownBlock {
    fn new(s: &mut Store, rng: &mut impl Rng, name: &str, cin: usize, cout: usize) -> Self {
        let mid = cout / 2;
        let pw = ConvCfg::new(1, 0);
        Self {
            l: [
                conv_bn(s, rng, name, 1, (cin, cin), 3, ConvCfg::new(2, 1).groups(cin)),
                conv_bn(s, rng, name, 2, (cin, mid), 1, pw),
                conv_bn(s, rng, name, 3, (cin, mid), 1, pw),
                conv_bn(s, rng, name, 4, (mid, mid), 3, ConvCfg::new(2, 1).groups(mid)),
                conv_bn(s, rng, name, 5, (mid, mid), 1, pw),
            ],
        }
    }

    fn forward<T: Tape<f32, Dev>>(&self, s: &Store, x: Var<T>, train: bool) -> Var<T> {
        let (a, b) = x.fork();
        let left = apply(&self.l[1], s, apply(&self.l[0], s, a, train, false), train, true);
        let right = apply(&self.l[2], s, b, train, true);
        let right = apply(&self.l[4], s, apply(&self.l[3], s, right, train, false), train, true);
        ops::channel_shuffle(ops::concat_channels(left, right), 2)
    }
}

#[derive(Clone, Debug)]
struct BasicBlock {
    l: [ConvBn; 3],
    half: usize,
}

impl BasicBlock {
    fn new(s: &mut Store, rng: &mut impl Rng, name: &str, c: usize) -> Self {
        let h = c / 2;
        let pw = ConvCfg::new(1, 0);
        Self {
            l: [
                conv_bn(s, rng, name, 1, (h, h), 1, pw),
                conv_bn(s, rng, name, 2, (h, h), 3, ConvCfg::new(1, 1).groups(h)),
                conv_bn(s, rng, name, 3, (h, h), 1, pw),
            ],
            half: h,
        }
    }

    /// The block output and, when `pre`, the pre-activation concatenation (unshuffled).
    fn forward<T: Tape<f32, Dev>>(&self, s: &Store, x: Var<T>, train: bool, pre: bool) -> (Var<T>, Option<Var<T>>) {
        let c = x.shape.c;
        let (a, b) = x.fork();
        let x1 = ops::slice_channels(a, 0, self.half);
        let x2 = ops::slice_channels(b, self.half, c);
        let out = apply(&self.l[0], s, x2, train, true);
        let out = apply(&self.l[1], s, out, train, false);
        let out = apply(&self.l[2], s, out, train, false);
        let (out, pre) = if pre {
            let (main, side) = out.fork();
            let (x1, x1_side) = x1.fork();
            (ops::concat_channels(x1, ops::relu(main)), Some(ops::concat_channels(x1_side, side)))
        } else {
            (ops::concat_channels(x1, ops::relu(out)), None)
        };
        (ops::channel_shuffle(out, 2), pre)
    }
}

/// ShuffleNetV2 (`ShuffleV2`).
#[derive(Clone, Debug)]
pub struct ShuffleNetV2 {
    stem: ConvBn,
    layers: Vec<(DownBlock, Vec<BasicBlock>)>,
    conv2: ConvBn,
    linear: Linear,
}

impl ShuffleNetV2 {
    pub fn new(s: &mut Store, rng: &mut impl Rng, in_ch: usize, classes: usize) -> Self {
        let stem = conv_bn(s, rng, "", 1, (in_ch, STEM), 1, ConvCfg::new(1, 0));
        let mut cin = STEM;
        let layers = OUT_CHANNELS[..3]
            .iter()
            .zip(BLOCKS)
            .enumerate()
            .map(|(li, (&c, n))| {
                let down = DownBlock::new(s, rng, &format!("layer{}.0", li + 1), cin, c);
                cin = c;
                let blocks = (1..=n).map(|i| BasicBlock::new(s, rng, &format!("layer{}.{i}", li + 1), c)).collect();
                (down, blocks)
            })
            .collect();
        let conv2 = conv_bn(s, rng, "", 2, (OUT_CHANNELS[2], OUT_CHANNELS[3]), 1, ConvCfg::new(1, 0));
        let linear = Linear::new(s, rng, "linear", OUT_CHANNELS[3], classes, true);
        Self { stem, layers, conv2, linear }
    }

    pub fn forward<T: Tape<f32, Dev>>(&self, s: &Store, x: Var<T>, train: bool, feats: &mut Features<T>) -> Var<T> {
        let mut out = feats.tap("stem", apply(&self.stem, s, x, train, true));
        for (li, (down, blocks)) in self.layers.iter().enumerate() {
            out = down.forward(s, out, train);
            for (bi, b) in blocks.iter().enumerate() {
                let last = bi + 1 == blocks.len();
                let (o, pre) = b.forward(s, out, train, last && feats.enabled);
                out = o;
                if let Some(pre) = pre {
                    feats.keep(&format!("layer{}.pre", li + 1), pre);
                }
                if last {
                    out = feats.tap(&format!("layer{}", li + 1), out);
                }
            }
        }
        let out = feats.tap("final", apply(&self.conv2, s, out, train, true));
        let pooled = feats.tap("pool", ops::global_avg_pool(out));
        self.linear.forward(s, pooled)
    }
}

crate::network!(ShuffleNetV2, |_net| Facts {
    classifier: "linear",
    last_conv: ("final", true),
    stages: numbered_stages("layer", 3, ".pre"),
    bn_before_relu: None,
});

/// ShuffleNetV2 (`ShuffleV2`) in the registry.
pub const FAMILY: Family =
    Family::fixed("shufflev2", &["shufflenetv2", "shufflenet_v2"], 3, |_, s, rng, in_ch, classes| {
        Ok(ShuffleNetV2::new(s, rng, in_ch, classes).into())
    });
