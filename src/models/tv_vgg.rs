//! torchvision's VGG with batch norm (`torchvision.models.vgg11_bn / 13_bn / 16_bn / 19_bn`,
//! Simonyan & Zisserman 2015) at any input size from 32 px: five blocks of 3x3 convolutions (padding
//! 1, with bias) + BN + ReLU, each block ending in a 2x2 stride-2 max-pool; `features.{i}` numbered as
//! torchvision's `nn.Sequential` (a convolution, its batch norm and its ReLU take three indices, a
//! max-pool one); adaptive average pooling to 7x7 (a 32-px input's 1x1 map is repeated, a 64-px
//! input's 2x2 map is averaged over overlapping bins, as PyTorch does); the classifier
//! `classifier.{0,3,6}`: 25088→4096→4096→classes with ReLU and dropout 0.5 after the first two.
//! A `torchvision.models.vgg16_bn(num_classes=…)` state dict loads as is.
//!
//! Initialisation as torchvision: convolutions Kaiming-normal (fan-out) with zero bias, batch norms
//! 1/0, linear layers N(0, 0.01²) with zero bias. Taps as the CIFAR VGG (`blockB.pre` / `blockB`, each
//! block's last convolution before / after its ReLU, before the max-pool), `pool` (the 7x7 pooled
//! map flattened: what `classifier` reads); CAM-style explanations weight `block4` (14x14 at 224 px),
//! whose global average the classifier does not read directly, so plain CAM does not apply.
use anyhow::Context;
use dfdx::prelude::Tape;
use rand::Rng;

use super::registry::{Family, Shapes};
use super::{numbered_stages, Facts, Features};
use crate::nn::ops::{self, ConvCfg};
use crate::nn::{BatchNorm2d, Conv2d, Dev, Init, Linear, Shape4, Store, Var};

/// The pooled map's side (torchvision's `AdaptiveAvgPool2d((7, 7))`).
const POOL: usize = 7;
/// The smallest input side: five 2x2 max-pools leave at least one pixel.
const MIN_SIZE: usize = 32;
const HIDDEN: usize = 4096;
const DROPOUT: f32 = 0.5;

/// A torchvision VGG with batch norm.
#[derive(Clone, Debug)]
pub struct TvVgg {
    blocks: Vec<Vec<(Conv2d, BatchNorm2d)>>,
    classifier: [Linear; 3],
    /// The batch norm before each block's last ReLU (`features.{i}`).
    last_bns: Vec<String>,
}

impl TvVgg {
    pub fn new(s: &mut Store, rng: &mut impl Rng, depth: usize, in_ch: usize, classes: usize) -> Self {
        let cfg = super::vgg::config(depth).expect("depth checked by the parser");
        let (mut cin, mut index, mut last_bns) = (in_ch, 0, Vec::new());
        let mut blocks = Vec::new();
        for widths in cfg {
            let mut block = Vec::new();
            for &w in widths {
                let conv = Conv2d::new(s, rng, &format!("features.{index}"), cin, w, 3, ConvCfg::new(1, 1), true);
                block.push((conv, BatchNorm2d::new(s, &format!("features.{}", index + 1), w)));
                (cin, index) = (w, index + 3);
            }
            last_bns.push(format!("features.{}", index - 2));
            blocks.push(block);
            index += 1; // the max-pool
        }
        let mut fc = |i: usize, io: (usize, usize)| {
            Linear::with_init(s, rng, &format!("classifier.{i}"), io, true, Init::Normal(0.01))
        };
        let classifier = [fc(0, (512 * POOL * POOL, HIDDEN)), fc(3, (HIDDEN, HIDDEN)), fc(6, (HIDDEN, classes))];
        Self { blocks, classifier, last_bns }
    }

    pub fn forward<T: Tape<f32, Dev>>(&self, s: &Store, x: Var<T>, train: bool, feats: &mut Features<T>) -> Var<T> {
        assert!(
            x.shape.h >= MIN_SIZE && x.shape.w >= MIN_SIZE,
            "torchvision VGG needs inputs of at least {MIN_SIZE}x{MIN_SIZE}, got {}",
            x.shape
        );
        let mut out = x;
        for (b, block) in self.blocks.iter().enumerate() {
            for (i, (conv, bn)) in block.iter().enumerate() {
                out = bn.forward(s, conv.forward(s, out), train, i + 1 < block.len());
            }
            out = feats.tap(&format!("block{b}.pre"), out);
            out = feats.tap(&format!("block{b}"), ops::relu(out));
            out = ops::max_pool2d(out, 2, 2, 0);
        }
        let n = out.shape.n;
        let pooled = ops::reshape(ops::adaptive_avg_pool2d(out, POOL, POOL), Shape4::mat(n, 512 * POOL * POOL));
        let mut h = feats.tap("pool", pooled);
        for fc in &self.classifier[..2] {
            h = ops::relu(fc.forward(s, h));
            if train {
                h = ops::dropout(h, DROPOUT);
            }
        }
        self.classifier[2].forward(s, h)
    }
}

crate::network!(TvVgg, |net| Facts {
    classifier: "classifier.6",
    last_conv: ("block4", false),
    stages: numbered_stages("block", 4, ".pre"),
    bn_before_relu: Some(net.last_bns[1..].to_vec()),
});

/// `tv_vgg<depth>_bn` → depth.
fn size(name: &str) -> Option<anyhow::Result<usize>> {
    let rest = name.strip_prefix("tv_vgg").or_else(|| name.strip_prefix("torchvision.vgg"))?;
    Some(match rest.strip_suffix("_bn").or_else(|| rest.strip_suffix("bn")) {
        None => Err(anyhow::anyhow!(
            "only torchvision's batch-norm VGGs are in the zoo: write tv_vgg{rest}_bn (the weights of a VGG without batch norm do not fit it)"
        )),
        Some(d) => super::registry::parse_depth(d, "VGG").and_then(|depth| {
            anyhow::ensure!(
                depth != 8 && super::vgg::config(depth).is_some(),
                "torchvision VGG depth must be 11, 13, 16 or 19, got {depth}"
            );
            Ok(depth)
        }),
    })
}

fn parse(name: &str) -> Option<anyhow::Result<String>> {
    size(name).map(|r| r.map(|d| format!("tv_vgg{d}_bn")))
}

/// `tv_vgg<depth>_bn` from a state dict: batch norms in `features` and the number of convolutions.
fn infer(shapes: &Shapes) -> Option<String> {
    if !(shapes.contains_key("features.1.running_mean") && shapes.contains_key("classifier.6.weight")) {
        return None;
    }
    let convs = shapes.iter().filter(|(k, v)| k.starts_with("features.") && k.ends_with(".weight") && v.len() == 4);
    let convs = convs.count();
    [11, 13, 16, 19]
        .into_iter()
        .find(|&d| super::vgg::config(d).is_some_and(|c| c.iter().map(|b| b.len()).sum::<usize>() == convs))
        .map(|d| format!("tv_vgg{d}_bn"))
}

/// torchvision VGG-11/13/16/19 with batch norm in the registry.
pub const FAMILY: Family = Family::sized(
    "tv_vgg",
    "tv_vgg<11|13|16|19>_bn (torchvision)",
    &["tv_vgg11_bn", "tv_vgg16_bn"],
    parse,
    |name, s, rng, in_ch, classes| {
        let depth = size(name).context("not a tv_vgg name")??;
        Ok(TvVgg::new(s, rng, depth, in_ch, classes).into())
    },
)
.inferred_by(infer);
