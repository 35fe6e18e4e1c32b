//! The architecture registry: one [`Family`] per architecture file (name, aliases, parser of sized names
//! such as `resnet56` or `wrn_40_2`, constructor), listed once in `architectures!` below (which makes
//! [`FAMILIES`] and the [`Body`] variant). [`Arch`] parsing,
//! display, [`zoo`] (what `kdscope info` lists) and the errors naming the valid architectures all derive
//! from that table, so adding an architecture is one new file and one line here.
use std::fmt;
use std::str::FromStr;

use anyhow::Context;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::Network;
use crate::nn::Store;

/// A sized family's name parser (see [`Family::parse`]).
pub type ParseFn = fn(&str) -> Option<anyhow::Result<String>>;

/// Tensor names and shapes of a state dict, what architecture inference looks at.
pub type Shapes = std::collections::BTreeMap<String, Vec<usize>>;

/// A sized family's guess of the canonical name a state dict's tensors show (`None`: not this family).
pub type InferFn = fn(&Shapes) -> Option<String>;

/// A family's constructor: `(canonical name, store, rng, in_channels, classes)` → the network.
pub type BuildFn = fn(&str, &mut Store, &mut ChaCha8Rng, usize, usize) -> anyhow::Result<Body>;

/// A family of architectures as the registry knows it.
pub struct Family {
    /// The family's name (the canonical name of a fixed-size architecture).
    pub name: &'static str,
    /// Further names of a fixed-size architecture (`mobile_half` for `mobilenetv2`), compared after
    /// lower-casing and turning `-` into `_`.
    pub aliases: &'static [&'static str],
    /// For sized families: parses a normalised name (lower case, `-` as `_`) into the canonical one;
    /// `None` when the name is not of this family, `Some(Err)` when it is but the size is invalid.
    pub parse: Option<ParseFn>,
    /// What the family accepts, for error messages (`resnet<6n+2>[x4]`).
    pub syntax: &'static str,
    /// The sizes `kdscope info` lists with their parameter counts (sized families).
    pub zoo: &'static [&'static str],
    /// Input channels by default (3; 1 for LeNet-5, the MNIST model).
    pub in_channels: usize,
    /// Builds the network of a canonical name: `(name, store, rng, in_channels, classes)`.
    pub build: BuildFn,
    /// Guesses the size from a state dict (sized families; a fixed architecture is always a candidate,
    /// checked by building it and comparing every name and shape).
    pub infer: Option<InferFn>,
}

impl Family {
    /// A sized family (`resnet<depth>`): its name, the syntax for error messages, the sizes
    /// `kdscope info` lists, the parser and the constructor (3 input channels by default).
    pub const fn sized(
        name: &'static str,
        syntax: &'static str,
        zoo: &'static [&'static str],
        parse: ParseFn,
        build: BuildFn,
    ) -> Self {
        Family { name, aliases: &[], parse: Some(parse), syntax, zoo, in_channels: 3, build, infer: None }
    }

    /// The family with a size guesser for architecture inference.
    pub const fn inferred_by(mut self, f: InferFn) -> Self {
        self.infer = Some(f);
        self
    }

    /// A fixed-size architecture: its name (listed by `kdscope info`), aliases, default input
    /// channels and constructor.
    pub const fn fixed(
        name: &'static str,
        aliases: &'static [&'static str],
        in_channels: usize,
        build: BuildFn,
    ) -> Self {
        Family { name, aliases, parse: None, syntax: name, zoo: &[], in_channels, build, infer: None }
    }

    /// The names `kdscope info` lists: the sizes of a sized family, the name of a fixed one.
    pub fn listed(&'static self) -> &'static [&'static str] {
        if self.parse.is_some() {
            self.zoo
        } else {
            std::slice::from_ref(&self.name)
        }
    }
}

/// Declares every architecture once: the [`Body`] variant that holds it and its [`Family`] in
/// [`FAMILIES`].
macro_rules! architectures {
    ($($variant:ident($ty:ty) = $family:expr;)*) => {
        /// A model's network, one variant per architecture. Calls go through [`Body::net`], a `match`
        /// compiled where the model is used, not through a vtable stored with the model: evcxr links a
        /// copy of kdscope into every notebook cell, and a vtable kept from the cell that built a model
        /// would run that cell's copy of the ops, with that copy's statics (dfdx's tensor ids, the
        /// frozen-parameter and guided-ReLU switches) while the calling cell uses its own.
        pub enum Body {
            $($variant($ty),)*
        }
        $(impl From<$ty> for Body {
            fn from(n: $ty) -> Self {
                Body::$variant(n)
            }
        })*
        impl Body {
            /// The network as the [`Network`] trait.
            pub fn net(&self) -> &dyn Network {
                match self {
                    $(Body::$variant(n) => n,)*
                }
            }
        }
        /// Every architecture family, one line each.
        pub const FAMILIES: &[&Family] = &[$(&$family,)*];
    };
}

architectures! {
    ResNet(super::resnet::ResNet) = super::resnet::FAMILY;
    ResNetV2(super::resnetv2::ResNetV2) = super::resnetv2::CIFAR;
    TvResNet(super::resnetv2::TvResNet) = super::resnetv2::TORCHVISION;
    Wrn(super::wrn::Wrn) = super::wrn::FAMILY;
    Vgg(super::vgg::Vgg) = super::vgg::FAMILY;
    MobileNetV2(super::mobilenetv2::MobileNetV2) = super::mobilenetv2::FAMILY;
    TvVgg(super::tv_vgg::TvVgg) = super::tv_vgg::FAMILY;
    TvMobileNetV2(super::tv_mobilenetv2::TvMobileNetV2) = super::tv_mobilenetv2::FAMILY;
    ShuffleV1(super::shufflenetv1::ShuffleNetV1) = super::shufflenetv1::FAMILY;
    ShuffleV2(super::shufflenetv2::ShuffleNetV2) = super::shufflenetv2::FAMILY;
    LeNet5(super::lenet::LeNet) = super::lenet::FAMILY;
}

/// Every architecture of the zoo by name, as `kdscope info` lists them.
pub fn zoo() -> Vec<&'static str> {
    FAMILIES.iter().flat_map(|f| f.listed().iter().copied()).collect()
}

/// `kdscope info`'s architecture table: every zoo name with its parameter count at `classes` classes.
pub fn zoo_table(classes: usize) -> anyhow::Result<String> {
    let mut s = format!("{:<12} {:>12}\n", "model", "parameters");
    for a in zoo() {
        s += &format!("{:<12} {:>12}\n", a, super::Model::build(a, classes, 0)?.num_params());
    }
    Ok(s)
}

fn normalise(s: &str) -> String {
    s.trim().to_ascii_lowercase().replace('-', "_")
}

/// An architecture by its canonical name (`resnet20`, `resnet8x4`, `wrn_40_2`, `vgg13`, `mobilenetv2`,
/// …). Parsing accepts the aliases and spellings of [`FAMILIES`] (case-insensitive, `-` for `_`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Arch {
    name: String,
    family: usize,
}

impl Arch {
    /// The registry entry of this architecture's family.
    pub fn family(&self) -> &'static Family {
        FAMILIES[self.family]
    }

    /// The canonical name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Builds the network with fresh parameters in `store`.
    pub fn build(
        &self,
        store: &mut Store,
        rng: &mut ChaCha8Rng,
        in_channels: usize,
        classes: usize,
    ) -> anyhow::Result<Body> {
        anyhow::ensure!(in_channels > 0 && classes > 0, "{}: input channels and classes must be positive", self.name);
        (self.family().build)(&self.name, store, rng, in_channels, classes)
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl fmt::Debug for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Arch({})", self.name)
    }
}

impl FromStr for Arch {
    type Err = anyhow::Error;
    /// Parses any name of [`FAMILIES`]: `resnet20`, `resnet8x4`, `wrn_40_2`, `wrn-16-2`, `WRN-40-2`,
    /// `vgg13`, `MobileNetV2` (or `mobile_half`), `ShuffleV1`/`shufflenetv1`, `ShuffleV2`/`shufflenetv2`,
    /// `lenet5`/`lenet` (case-insensitive).
    fn from_str(s: &str) -> anyhow::Result<Self> {
        let l = normalise(s);
        for (i, f) in FAMILIES.iter().enumerate() {
            if f.name == l || f.aliases.contains(&l.as_str()) {
                return Ok(Arch { name: f.name.to_string(), family: i });
            }
            if let Some(parsed) = f.parse.and_then(|p| p(&l)) {
                let name = parsed.with_context(|| format!("architecture '{s}'"))?;
                return Ok(Arch { name, family: i });
            }
        }
        let known: Vec<&str> = FAMILIES.iter().map(|f| f.syntax).collect();
        anyhow::bail!("unknown architecture '{s}' (known: {})", known.join(", "))
    }
}

impl Serialize for Arch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name)
    }
}

impl<'de> Deserialize<'de> for Arch {
    /// A name, or the enum form checkpoints written before the registry carry
    /// (`{"ResNet":{"depth":20,"x4":false}}`, `{"Wrn":{"depth":16,"widen":2}}`, `{"Vgg":{"depth":13}}`,
    /// `"MobileNetV2"` …).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let v = serde_json::Value::deserialize(d)?;
        let name = match &v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Object(o) if o.len() == 1 => {
                let (kind, p) = o.iter().next().expect("one entry");
                let n = |k: &str| {
                    p.get(k).and_then(|v| v.as_u64()).ok_or_else(|| D::Error::custom(format!("{kind}: no {k}")))
                };
                match kind.as_str() {
                    "ResNet" => {
                        let x4 = p.get("x4").and_then(|v| v.as_bool()).unwrap_or(false);
                        format!("resnet{}{}", n("depth")?, if x4 { "x4" } else { "" })
                    }
                    "Wrn" => format!("wrn_{}_{}", n("depth")?, n("widen")?),
                    "Vgg" => format!("vgg{}", n("depth")?),
                    other => return Err(D::Error::custom(format!("unknown architecture kind '{other}'"))),
                }
            }
            other => return Err(D::Error::custom(format!("not an architecture: {other}"))),
        };
        name.parse().map_err(|e: anyhow::Error| D::Error::custom(format!("{e:#}")))
    }
}

/// How many numbered children `prefix` has (`layer1.` → blocks `layer1.0`, `layer1.1`, …: 2).
pub fn count_indices(shapes: &Shapes, prefix: &str) -> usize {
    let ids: std::collections::BTreeSet<usize> =
        shapes.keys().filter_map(|k| k.strip_prefix(prefix)?.split('.').next()?.parse().ok()).collect();
    ids.len()
}

/// `depth` parsed from `rest` (the name after the family prefix), with the family's error text.
pub(crate) fn parse_depth(rest: &str, what: &str) -> anyhow::Result<usize> {
    rest.parse().with_context(|| format!("bad {what} depth '{rest}'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names round-trip through parse and display; checkpoints of the enum era still load; every zoo
    /// name parses to itself.
    #[test]
    fn names_aliases_and_legacy_specs() {
        for name in zoo() {
            assert_eq!(name.parse::<Arch>().unwrap().to_string(), name);
        }
        let legacy: Arch = serde_json::from_str(r#"{"ResNet":{"depth":8,"x4":true}}"#).unwrap();
        assert_eq!(legacy.to_string(), "resnet8x4");
        let legacy: Arch = serde_json::from_str(r#"{"Wrn":{"depth":16,"widen":2}}"#).unwrap();
        assert_eq!(legacy.to_string(), "wrn_16_2");
        let legacy: Arch = serde_json::from_str(r#""ShuffleV1""#).unwrap();
        assert_eq!(legacy.to_string(), "shufflev1");
        assert_eq!(serde_json::to_string(&"mobile_half".parse::<Arch>().unwrap()).unwrap(), r#""mobilenetv2""#);
        let e = "resnet21".parse::<Arch>().unwrap_err();
        assert!(format!("{e:#}").contains("6n+2"), "{e:#}");
        let e = "alexnet".parse::<Arch>().unwrap_err().to_string();
        assert!(e.contains("resnet<6n+2>") && e.contains("lenet5"), "{e}");
    }
}
