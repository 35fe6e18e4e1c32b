//! CIFAR ResNets of "Deep Residual Learning" (He et al. 2016) as defined in RepDistiller's and
//! mdistiller's `resnet.py`: depth `6n+2`, BasicBlocks, filters `[16,16,32,64]` (or
//! `[32,64,128,256]` for the `x4` variants), 1x1-conv + BN shortcut when the shape changes,
//! 8x8 average pooling and a linear classifier.
use anyhow::Context;
use dfdx::prelude::Tape;
use rand::Rng;

use super::{stages, Features};

use super::registry::Family;
use super::{numbered_stages, Facts};
use crate::nn::ops::{self, ConvCfg};
use crate::nn::{BatchNorm2d, Conv2d, Dev, Linear, Store, Var};

#[derive(Clone, Debug)]
struct Block {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    conv2: Conv2d,
    bn2: BatchNorm2d,
    down: Option<(Conv2d, BatchNorm2d)>,
}

impl Block {
    fn new(s: &mut Store, rng: &mut impl Rng, name: &str, cin: usize, cout: usize, stride: usize) -> Self {
        let conv1 = Conv2d::new(s, rng, &format!("{name}.conv1"), cin, cout, 3, ConvCfg::new(stride, 1), false);
        let mut bn1 = BatchNorm2d::new(s, &format!("{name}.bn1"), cout);
        // Its output is read by conv2 alone: applied in conv2's input copies, never written.
        bn1.cfg.defer = true;
        let conv2 = Conv2d::new(s, rng, &format!("{name}.conv2"), cout, cout, 3, ConvCfg::new(1, 1), false);
        let bn2 = BatchNorm2d::new(s, &format!("{name}.bn2"), cout);
        let down = (stride != 1 || cin != cout).then(|| {
            (
                Conv2d::new(s, rng, &format!("{name}.downsample.0"), cin, cout, 1, ConvCfg::new(stride, 0), false),
                BatchNorm2d::new(s, &format!("{name}.downsample.1"), cout),
            )
        });
        Self { conv1, bn1, conv2, bn2, down }
    }

    /// The block output, with the final ReLU fused into the residual add when `fuse_relu` (the last
    /// block of a stage leaves it to the caller, which taps the pre-activation).
    fn forward<T: Tape<f32, Dev>>(&self, s: &Store, x: Var<T>, train: bool, fuse_relu: bool) -> Var<T> {
        let (a, b) = x.fork();
        let res = match &self.down {
            Some((c, bn)) => bn.forward_conv(s, c, b, train, false),
            None => b,
        };
        let out = self.bn1.forward_conv(s, &self.conv1, a, train, true);
        self.bn2.forward_conv_add(s, &self.conv2, out, Some(res), train, fuse_relu)
    }
}

/// A CIFAR ResNet.
#[derive(Clone, Debug)]
pub struct ResNet {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    layers: Vec<Vec<Block>>,
    fc: Linear,
    pub widths: [usize; 4],
}

impl ResNet {
    pub fn new(s: &mut Store, rng: &mut impl Rng, depth: usize, x4: bool, in_ch: usize, classes: usize) -> Self {
        let n = (depth - 2) / 6;
        let widths = if x4 { [32, 64, 128, 256] } else { [16, 16, 32, 64] };
        let conv1 = Conv2d::new(s, rng, "conv1", in_ch, widths[0], 3, ConvCfg::new(1, 1), false);
        let bn1 = BatchNorm2d::new(s, "bn1", widths[0]);
        let layers = stages(widths, n, |si, bi, cin, cout, stride| {
            Block::new(s, rng, &format!("layer{}.{bi}", si + 1), cin, cout, stride)
        });
        let fc = Linear::new(s, rng, "fc", widths[3], classes, true);
        Self { conv1, bn1, layers, fc, widths }
    }

    pub fn forward<T: Tape<f32, Dev>>(&self, s: &Store, x: Var<T>, train: bool, feats: &mut Features<T>) -> Var<T> {
        let mut out = self.bn1.forward_conv(s, &self.conv1, x, train, true);
        out = feats.tap("stem", out);
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
        self.fc.forward(s, pooled)
    }
}

crate::network!(ResNet, |net| Facts {
    classifier: "fc",
    last_conv: ("layer3", true),
    stages: numbered_stages("layer", 3, ".pre"),
    bn_before_relu: Some((1..=3).map(|i| format!("layer{i}.{}.bn2", net.layers[i - 1].len() - 1)).collect()),
});

/// `resnet<depth>[x4]` → (depth, x4), for names of this family.
fn size(name: &str) -> Option<anyhow::Result<(usize, bool)>> {
    let rest = name.strip_prefix("resnet")?;
    let (d, x4) = match rest.strip_suffix("x4") {
        Some(d) => (d, true),
        None => (rest, false),
    };
    if d.is_empty() || !d.bytes().all(|b| b.is_ascii_digit()) {
        return None; // resnetv2_18, resnet18_cifar: other families
    }
    Some(super::registry::parse_depth(d, "ResNet").and_then(|depth| {
        anyhow::ensure!(
            x4 || ![18, 34, 50, 101, 152].contains(&depth),
            "ResNet-{depth} is ambiguous: resnetv2_{depth} is the CIFAR one (mdistiller's ResNet{depth}), \
             tv_resnet{depth} torchvision's (ImageNet stem)"
        );
        anyhow::ensure!(
            depth >= 8 && (depth - 2).is_multiple_of(6),
            "CIFAR ResNet depth must be 6n+2 (8, 14, 20, 32, 44, 56, 110), got {depth}"
        );
        Ok((depth, x4))
    }))
}

/// `resnet<6n+2>[x4]` from a state dict: a 3x3 stem, three stages of basic blocks, classifier `fc`.
fn infer(shapes: &super::Shapes) -> Option<String> {
    let stem = shapes.get("conv1.weight")?;
    let n = super::registry::count_indices(shapes, "layer1.");
    let plain = stem.get(2) == Some(&3) && !shapes.contains_key("layer4.0.conv1.weight") && n > 0;
    (plain && shapes.contains_key("fc.weight"))
        .then(|| format!("resnet{}{}", 6 * n + 2, if stem[0] == 32 { "x4" } else { "" }))
}

fn parse(name: &str) -> Option<anyhow::Result<String>> {
    size(name).map(|r| r.map(|(d, x4)| format!("resnet{d}{}", if x4 { "x4" } else { "" })))
}

/// CIFAR ResNets in the registry.
pub const FAMILY: Family = Family::sized(
    "resnet",
    "resnet<6n+2>[x4]",
    &["resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet8x4", "resnet32x4"],
    parse,
    |name, s, rng, in_ch, classes| {
        let (depth, x4) = size(name).context("not a ResNet name")??;
        Ok(ResNet::new(s, rng, depth, x4, in_ch, classes).into())
    },
)
.inferred_by(infer);

#[cfg(test)]
mod tests {
    use crate::nn::Var;

    /// A forward without features fuses each stage's last ReLU into its last block (nobody reads
    /// the pre-activation); with features it taps the pre-activation and applies the ReLU apart.
    /// Training steps on both agree bit for bit: logits and every parameter gradient (CIFAR ResNet
    /// and the bottleneck ResNetV2).
    #[test]
    fn fused_stage_relu_matches_the_tapped_path() {
        use dfdx::prelude::*;
        for arch in ["resnet8", "resnetv2_50"] {
            let m = crate::models::Model::build(arch, 10, 3).unwrap();
            let shape = crate::nn::Shape4::new(2, 3, 16, 16);
            let x: Vec<f32> = (0..shape.numel()).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
            let run = |features: bool| {
                let out = m.forward_with(Var::from_vec(x.clone(), shape).traced_input(), true, features);
                assert_eq!(out.features.items.is_empty(), !features);
                let logits = out.logits.to_vec();
                let r: Vec<f32> = (0..20).map(|i| ((i * 7 % 11) as f32 - 5.0) / 5.0).collect();
                let loss = (out.logits.dfdx_matrix() * crate::nn::dev().tensor_from_vec(r, (2, 10))).sum();
                let mut grads = loss.backward();
                let g: Vec<Vec<f32>> = m
                    .store
                    .params
                    .iter()
                    .map(|p| grads.get_or_alloc_mut(crate::nn::params::tensor_of(p)).unwrap().to_vec())
                    .collect();
                (logits, g)
            };
            let (fused, tapped) = (run(false), run(true));
            assert_eq!(fused.0, tapped.0, "{arch}: logits");
            assert!(fused.1.iter().flatten().any(|&v| v != 0.0), "{arch}: some gradient");
            assert_eq!(fused.1, tapped.1, "{arch}: parameter gradients");
        }
    }
}
