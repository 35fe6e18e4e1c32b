//! LeNet-5 ("Gradient-Based Learning Applied to Document Recognition", LeCun et al. 1998) in its
//! common modern form for 28×28 MNIST digits: 5×5 conv to 6 channels (padding 2) + ReLU + 2×2 max
//! pooling, 5×5 conv to 16 channels + ReLU + 2×2 max pooling, then fully connected 400 → 120 → 84 →
//! classes with ReLUs. Taps `layer1`/`layer2` (after ReLU and pooling; pooling is applied first,
//! which gives the same values and gradients since max pooling commutes with ReLU) with their
//! pre-activations `layerN.pre`, and `pool`, the 84-wide penultimate vector. PyTorch default
//! initialisation; names `conv1`, `conv2`, `fc1`, `fc2`, `fc3`.
use dfdx::prelude::Tape;
use rand::Rng;

use super::Features;

use super::registry::Family;
use super::{numbered_stages, Facts};
use crate::nn::ops::{self, ConvCfg};
use crate::nn::{Conv2d, Dev, Init, Linear, Shape4, Store, Var};

/// The input side LeNet-5's first fully connected layer is sized for.
pub const INPUT_SIZE: usize = 28;

/// LeNet-5.
#[derive(Clone, Debug)]
pub struct LeNet {
    convs: [Conv2d; 2],
    fcs: [Linear; 3],
}

impl LeNet {
    pub fn new(s: &mut Store, rng: &mut impl Rng, in_ch: usize, classes: usize) -> Self {
        let mut conv = |name: &str, io: (usize, usize), pad: usize| {
            Conv2d::with_init(s, rng, name, io, 5, ConvCfg::new(1, pad), true, Init::UniformFanIn)
        };
        let convs = [conv("conv1", (in_ch, 6), 2), conv("conv2", (6, 16), 0)];
        let fcs = [
            Linear::new(s, rng, "fc1", 16 * 5 * 5, 120, true),
            Linear::new(s, rng, "fc2", 120, 84, true),
            Linear::new(s, rng, "fc3", 84, classes, true),
        ];
        Self { convs, fcs }
    }

    pub fn forward<T: Tape<f32, Dev>>(&self, s: &Store, x: Var<T>, train: bool, feats: &mut Features<T>) -> Var<T> {
        let _ = train; // no batch norm or dropout
        assert!(
            x.shape.h == INPUT_SIZE && x.shape.w == INPUT_SIZE,
            "LeNet-5 expects {INPUT_SIZE}x{INPUT_SIZE} inputs (MNIST), got {}",
            x.shape
        );
        let mut out = x;
        for (i, c) in self.convs.iter().enumerate() {
            let pre = feats.tap(&format!("layer{}.pre", i + 1), ops::max_pool2d(c.forward(s, out), 2, 2, 0));
            out = feats.tap(&format!("layer{}", i + 1), ops::relu(pre));
        }
        let n = out.shape.n;
        let out = ops::reshape(out, Shape4::mat(n, 16 * 5 * 5));
        let out = ops::relu(self.fcs[0].forward(s, out));
        let pooled = feats.tap("pool", ops::relu(self.fcs[1].forward(s, out)));
        self.fcs[2].forward(s, pooled)
    }
}

crate::network!(LeNet, |_net| Facts {
    classifier: "fc3",
    last_conv: ("layer2", false),
    stages: numbered_stages("layer", 2, ".pre"),
    bn_before_relu: None,
});

/// LeNet-5 (MNIST) in the registry.
pub const FAMILY: Family = Family::fixed("lenet5", &["lenet", "lenet_5"], 1, |_, s, rng, in_ch, classes| {
    Ok(LeNet::new(s, rng, in_ch, classes).into())
});
