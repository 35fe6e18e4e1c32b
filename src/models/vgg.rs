//! VGG for CIFAR as RepDistiller's `vgg.py`, batch-norm variants (the ones RepDistiller registers as
//! `vgg8`, `vgg11`, `vgg13`, `vgg16`, `vgg19`): five blocks of 3x3 convolutions (with bias) + BN +
//! ReLU, `blockB.{3i}` the i-th convolution and `blockB.{3i+1}` its batch norm; the last ReLU of each
//! block is applied outside it (so `blockB.pre` is the pre-activation feature); 2x2 max pooling after
//! blocks 0–2 (and after block 3 only for 64-pixel inputs), global average pooling, a 512→classes
//! linear classifier. Initialisation as RepDistiller: convolutions N(0, 2/(9·out)) with zero bias, the
//! classifier N(0, 0.01²) with zero bias.
use anyhow::Context;
use dfdx::prelude::Tape;
use rand::Rng;

use super::Features;

use super::registry::Family;
use super::{numbered_stages, Facts};
use crate::nn::ops::{self, ConvCfg};
use crate::nn::{BatchNorm2d, Conv2d, Dev, Init, Linear, Store, Var};

/// Channel widths of the five blocks for a VGG depth (RepDistiller's configurations S, A, B, D, E).
pub fn config(depth: usize) -> Option<[&'static [usize]; 5]> {
    Some(match depth {
        8 => [&[64], &[128], &[256], &[512], &[512]],
        11 => [&[64], &[128], &[256, 256], &[512, 512], &[512, 512]],
        13 => [&[64, 64], &[128, 128], &[256, 256], &[512, 512], &[512, 512]],
        16 => [&[64, 64], &[128, 128], &[256, 256, 256], &[512, 512, 512], &[512, 512, 512]],
        19 => [&[64, 64], &[128, 128], &[256, 256, 256, 256], &[512, 512, 512, 512], &[512, 512, 512, 512]],
        _ => return None,
    })
}

/// A CIFAR VGG with batch norm.
#[derive(Clone, Debug)]
pub struct Vgg {
    blocks: Vec<Vec<(Conv2d, BatchNorm2d)>>,
    classifier: Linear,
}

impl Vgg {
    pub fn new(s: &mut Store, rng: &mut impl Rng, depth: usize, in_ch: usize, classes: usize) -> Self {
        let cfg = config(depth).unwrap_or_else(|| panic!("VGG depth must be 8, 11, 13, 16 or 19, got {depth}"));
        let mut cin = in_ch;
        let blocks = cfg
            .iter()
            .enumerate()
            .map(|(b, widths)| {
                widths
                    .iter()
                    .enumerate()
                    .map(|(i, &w)| {
                        let conv =
                            Conv2d::new(s, rng, &format!("block{b}.{}", 3 * i), cin, w, 3, ConvCfg::new(1, 1), true);
                        let mut bn = BatchNorm2d::new(s, &format!("block{b}.{}", 3 * i + 1), w);
                        // Inside a block, relu(bn(.)) is read by the next convolution alone: applied
                        // in its input copies, never written.
                        bn.cfg.defer = i + 1 < widths.len();
                        cin = w;
                        (conv, bn)
                    })
                    .collect()
            })
            .collect();
        let classifier = Linear::with_init(s, rng, "classifier", (512, classes), true, Init::Normal(0.01));
        Self { blocks, classifier }
    }

    pub fn forward<T: Tape<f32, Dev>>(&self, s: &Store, x: Var<T>, train: bool, feats: &mut Features<T>) -> Var<T> {
        let h = x.shape.h;
        let mut out = x;
        for (b, block) in self.blocks.iter().enumerate() {
            for (i, (conv, bn)) in block.iter().enumerate() {
                let last = i + 1 == block.len();
                out = bn.forward_conv(s, conv, out, train, !last);
            }
            out = feats.tap(&format!("block{b}.pre"), out);
            out = feats.tap(&format!("block{b}"), ops::relu(out));
            if b < 3 || (b == 3 && h == 64) {
                out = ops::max_pool2d(out, 2, 2, 0);
            }
        }
        let pooled = feats.tap("pool", ops::global_avg_pool(out));
        self.classifier.forward(s, pooled)
    }
}

crate::network!(Vgg, |net| Facts {
    classifier: "classifier",
    last_conv: ("block4", true),
    stages: numbered_stages("block", 4, ".pre"),
    bn_before_relu: Some((1..=4).map(|b| format!("block{b}.{}", 3 * (net.blocks[b].len() - 1) + 1)).collect()),
});

/// `vgg<depth>[_bn]` → depth, for names of this family.
fn size(name: &str) -> Option<anyhow::Result<usize>> {
    let rest = name.strip_prefix("vgg")?;
    let d = rest.strip_suffix("_bn").or_else(|| rest.strip_suffix("bn")).unwrap_or(rest);
    Some(super::registry::parse_depth(d, "VGG").and_then(|depth| {
        anyhow::ensure!(config(depth).is_some(), "VGG depth must be 8, 11, 13, 16 or 19, got {depth}");
        Ok(depth)
    }))
}

/// `vgg<depth>` from a state dict: the convolutions per block (`blockB.{3i}.weight`).
fn infer(shapes: &super::Shapes) -> Option<String> {
    let counts: Vec<usize> = (0..5)
        .map(|b| {
            shapes
                .iter()
                .filter(|(k, v)| k.starts_with(&format!("block{b}.")) && k.ends_with(".weight") && v.len() == 4)
                .count()
        })
        .collect();
    [8, 11, 13, 16, 19]
        .into_iter()
        .find(|&d| config(d).is_some_and(|c| c.iter().map(|w| w.len()).eq(counts.iter().copied())))
        .map(|d| format!("vgg{d}"))
}

fn parse(name: &str) -> Option<anyhow::Result<String>> {
    size(name).map(|r| r.map(|d| format!("vgg{d}")))
}

/// CIFAR VGGs with batch norm in the registry.
pub const FAMILY: Family = Family::sized(
    "vgg",
    "vgg8/11/13/16/19",
    &["vgg8", "vgg11", "vgg13", "vgg16", "vgg19"],
    parse,
    |name, s, rng, in_ch, classes| {
        let depth = size(name).context("not a VGG name")??;
        Ok(Vgg::new(s, rng, depth, in_ch, classes).into())
    },
)
.inferred_by(infer);
