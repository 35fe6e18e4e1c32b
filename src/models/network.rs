//! The [`Network`] trait every architecture implements (through [`network!`](crate::network)), its
//! [`Facts`], and the tapes a model runs with.
use dfdx::prelude::{NoneTape, Tape};

use super::Features;
use crate::nn::{Dev, Store, Tracked, Var};

/// What every architecture of the zoo tells about itself (mdistiller keeps these facts on the model
/// class: `get_bn_before_relu`, `get_stage_channels`). Each architecture file implements it next to its
/// layers and registers a [`Family`] (name, parser, constructor) in [`registry::FAMILIES`].
pub trait Network: Send + Sync {
    /// Forward pass without a tape (inference, teachers); [`network!`] implements both passes with
    /// one generic `forward`.
    fn forward_plain(&self, s: &Store, x: Var<NoneTape>, train: bool, f: &mut Features<NoneTape>) -> Var<NoneTape>;
    /// Recorded forward pass (training, gradient-based explanations).
    fn forward_tracked(&self, s: &Store, x: Var<Tracked>, train: bool, f: &mut Features<Tracked>) -> Var<Tracked>;
    /// What the architecture tells about itself.
    fn facts(&self) -> Facts;
}

/// An architecture's facts (mdistiller keeps them on the model class).
pub struct Facts {
    /// The name of the final linear classifier (`fc`, `classifier` …).
    pub classifier: &'static str,
    /// The last convolutional feature map (the one CAM-style explanations weight), and whether the
    /// classifier reads its global average directly (what CAM needs).
    pub last_conv: (&'static str, bool),
    /// The post-activation and pre-activation taps of each stage after the stem.
    pub stages: Vec<(String, String)>,
    /// For each stage, the batch norm whose output feeds the stage's final ReLU (OFD's margins), or
    /// `None` when the architecture has none there.
    pub bn_before_relu: Option<Vec<String>>,
}

/// Stage taps `{prefix}1` … `{prefix}{n}`, each with its pre-activation `{prefix}{i}{pre}` (the same tap
/// where `pre` is empty).
pub fn numbered_stages(prefix: &str, n: usize, pre: &str) -> Vec<(String, String)> {
    (1..=n).map(|i| (format!("{prefix}{i}"), format!("{prefix}{i}{pre}"))).collect()
}

/// Implements [`Network`] for an architecture type with a generic `forward(&self, s, x, train, feats)`
/// and its [`Facts`]: `network!(ResNet, |net| Facts { … })`.
#[macro_export]
macro_rules! network {
    ($t:ty, |$net:ident| $facts:expr) => {
        impl $crate::models::Network for $t {
            fn forward_plain(
                &self,
                s: &$crate::nn::Store,
                x: $crate::nn::Var<dfdx::prelude::NoneTape>,
                train: bool,
                f: &mut $crate::models::Features<dfdx::prelude::NoneTape>,
            ) -> $crate::nn::Var<dfdx::prelude::NoneTape> {
                self.forward(s, x, train, f)
            }
            fn forward_tracked(
                &self,
                s: &$crate::nn::Store,
                x: $crate::nn::Var<$crate::nn::Tracked>,
                train: bool,
                f: &mut $crate::models::Features<$crate::nn::Tracked>,
            ) -> $crate::nn::Var<$crate::nn::Tracked> {
                self.forward(s, x, train, f)
            }
            fn facts(&self) -> $crate::models::Facts {
                let $net = self;
                $facts
            }
        }
    };
}

/// The tapes a model runs with: no tape, or the recording one. Selects the [`Network`] pass.
pub trait ModelTape: Tape<f32, Dev> {
    fn run(net: &dyn Network, s: &Store, x: Var<Self>, train: bool, f: &mut Features<Self>) -> Var<Self>;
}

impl ModelTape for NoneTape {
    fn run(net: &dyn Network, s: &Store, x: Var<Self>, train: bool, f: &mut Features<Self>) -> Var<Self> {
        net.forward_plain(s, x, train, f)
    }
}

impl ModelTape for Tracked {
    fn run(net: &dyn Network, s: &Store, x: Var<Self>, train: bool, f: &mut Features<Self>) -> Var<Self> {
        net.forward_tracked(s, x, train, f)
    }
}
