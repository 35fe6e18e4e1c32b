//! Wide ResNets (Zagoruyko & Komodakis 2016), WRN-d-w, as RepDistiller's `wrn.py`: pre-activation
//! blocks (BN-ReLU-conv), `n = (d-4)/6` blocks per group, widths `[16, 16w, 32w, 64w]`, 1x1-conv
//! shortcut when the width changes, final BN-ReLU, global average pooling and a linear classifier.
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
    bn1: BatchNorm2d,
    conv1: Conv2d,
    bn2: BatchNorm2d,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
}

impl Block {
    fn new(s: &mut Store, rng: &mut impl Rng, name: &str, cin: usize, cout: usize, stride: usize) -> Self {
        let bn1 = BatchNorm2d::new(s, &format!("{name}.bn1"), cin);
        let conv1 = Conv2d::new(s, rng, &format!("{name}.conv1"), cin, cout, 3, ConvCfg::new(stride, 1), false);
        let bn2 = BatchNorm2d::new(s, &format!("{name}.bn2"), cout);
        let conv2 = Conv2d::new(s, rng, &format!("{name}.conv2"), cout, cout, 3, ConvCfg::new(1, 1), false);
        let shortcut = (cin != cout).then(|| {
            Conv2d::new(s, rng, &format!("{name}.convShortcut"), cin, cout, 1, ConvCfg::new(stride, 0), false)
        });
        // relu(bn2(.)) is read by conv2 alone, and relu(bn1(x)) by conv1 alone where there is no
        // shortcut convolution: both are applied in those convolutions' input copies, never written.
        let (mut bn1, mut bn2) = (bn1, bn2);
        bn1.cfg.defer = shortcut.is_none();
        bn2.cfg.defer = true;
        Self { bn1, conv1, bn2, conv2, shortcut }
    }

    fn forward<T: Tape<f32, Dev>>(&self, s: &Store, x: Var<T>, train: bool) -> Var<T> {
        match &self.shortcut {
            // equalInOut: the residual is the raw input.
            None => {
                let (a, res) = x.fork();
                let out = self.bn1.forward(s, a, train, true);
                let out = self.bn2.forward_conv(s, &self.conv1, out, train, true);
                ops::add(self.conv2.forward(s, out), res, false)
            }
            // Width changes: both paths start from relu(bn1(x)).
            Some(sc) => {
                let act = self.bn1.forward(s, x, train, true);
                let (a, b) = act.fork();
                let out = self.bn2.forward_conv(s, &self.conv1, a, train, true);
                ops::add(self.conv2.forward(s, out), sc.forward(s, b), false)
            }
        }
    }
}

/// A Wide ResNet WRN-depth-widen.
#[derive(Clone, Debug)]
pub struct Wrn {
    conv1: Conv2d,
    groups: Vec<Vec<Block>>,
    bn1: BatchNorm2d,
    fc: Linear,
    pub widths: [usize; 4],
}

impl Wrn {
    pub fn new(s: &mut Store, rng: &mut impl Rng, depth: usize, widen: usize, in_ch: usize, classes: usize) -> Self {
        assert!(depth >= 10 && (depth - 4).is_multiple_of(6), "WRN depth must be 6n+4 (16, 28, 40, ...), got {depth}");
        assert!(widen >= 1, "WRN widen factor must be at least 1");
        let n = (depth - 4) / 6;
        let widths = [16, 16 * widen, 32 * widen, 64 * widen];
        let conv1 = Conv2d::new(s, rng, "conv1", in_ch, widths[0], 3, ConvCfg::new(1, 1), false);
        let groups = stages(widths, n, |si, bi, cin, cout, stride| {
            Block::new(s, rng, &format!("block{}.layer.{bi}", si + 1), cin, cout, stride)
        });
        let bn1 = BatchNorm2d::new(s, "bn1", widths[3]);
        let fc = Linear::new(s, rng, "fc", widths[3], classes, true);
        // RepDistiller zero-initialises the classifier bias.
        s.set(fc.bias.expect("fc has a bias"), vec![0.0; classes]);
        Self { conv1, groups, bn1, fc, widths }
    }

    pub fn forward<T: Tape<f32, Dev>>(&self, s: &Store, x: Var<T>, train: bool, feats: &mut Features<T>) -> Var<T> {
        let mut out = feats.tap("stem", self.conv1.forward(s, x));
        for (gi, blocks) in self.groups.iter().enumerate() {
            for b in blocks {
                out = b.forward(s, out, train);
            }
            out = feats.tap(&format!("block{}", gi + 1), out);
        }
        let out = feats.tap("final", self.bn1.forward(s, out, train, true));
        let pooled = feats.tap("pool", ops::global_avg_pool(out));
        self.fc.forward(s, pooled)
    }
}

// Pre-activation blocks: a group's output is the input of the next BN-ReLU, normalised by the next
// group's first bn1 (the last one by the final bn1).
crate::network!(Wrn, |_net| Facts {
    classifier: "fc",
    last_conv: ("final", true),
    stages: numbered_stages("block", 3, ""),
    bn_before_relu: Some(vec!["block2.layer.0.bn1".into(), "block3.layer.0.bn1".into(), "bn1".into()]),
});

/// `wrn_<depth>_<widen>` → (depth, widen), for names of this family.
fn size(name: &str) -> Option<anyhow::Result<(usize, usize)>> {
    let rest = name.strip_prefix("wrn")?;
    let parts: Vec<&str> = rest.trim_start_matches('_').split('_').collect();
    Some((|| {
        anyhow::ensure!(parts.len() == 2, "a WRN is named wrn_<depth>_<width>, got '{name}'");
        let depth = super::registry::parse_depth(parts[0], "WRN")?;
        let widen: usize = parts[1].parse().with_context(|| format!("bad WRN width '{}'", parts[1]))?;
        anyhow::ensure!(
            depth >= 10 && (depth - 4).is_multiple_of(6) && widen > 0,
            "WRN depth must be 6n+4 and width >= 1, got depth {depth}, width {widen}"
        );
        Ok((depth, widen))
    })())
}

/// `wrn_<depth>_<widen>` from a state dict: blocks per group and the first group's width.
fn infer(shapes: &super::Shapes) -> Option<String> {
    let n = super::registry::count_indices(shapes, "block1.layer.");
    let w = shapes.get("block1.layer.0.conv1.weight")?[0];
    (n > 0 && w % 16 == 0).then(|| format!("wrn_{}_{}", 6 * n + 4, w / 16))
}

fn parse(name: &str) -> Option<anyhow::Result<String>> {
    size(name).map(|r| r.map(|(d, w)| format!("wrn_{d}_{w}")))
}

/// Wide ResNets in the registry.
pub const FAMILY: Family = Family::sized(
    "wrn",
    "wrn_<6n+4>_<w>",
    &["wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2", "wrn_28_10"],
    parse,
    |name, s, rng, in_ch, classes| {
        let (depth, widen) = size(name).context("not a WRN name")??;
        Ok(Wrn::new(s, rng, depth, widen, in_ch, classes).into())
    },
)
.inferred_by(infer);
