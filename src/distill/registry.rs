//! The method registry: each method file declares a [`MethodInfo`] (name, aliases, one-line
//! description, constructor with its defaults) and [`METHODS`] lists them, one line each. Lookup by
//! name, `kdscope info` and the errors that list the valid names all derive from it.
use anyhow::bail;

use super::{Distiller, Params};
use crate::nn::Store;

/// How a model is trained: alone (cross-entropy on the labels), or distilled from a teacher by a
/// [`Distiller`].
pub enum Method {
    /// Cross-entropy only (the baseline every KD method is compared with); no teacher.
    Alone,
    /// A knowledge-distillation method; training with it needs a teacher.
    Distill(Box<dyn Distiller>),
}

impl Method {
    /// A distiller as a method.
    pub fn distill(d: impl Distiller + 'static) -> Self {
        Method::Distill(Box::new(d))
    }
    /// Short name (`"ce"`, `"kd"`, …) used in reports and run names.
    pub fn name(&self) -> String {
        match self {
            Method::Alone => "ce".into(),
            Method::Distill(d) => d.name(),
        }
    }
    /// Hyper-parameters, for reports and the reproducibility appendix.
    pub fn hyper(&self) -> serde_json::Value {
        match self {
            Method::Alone => serde_json::json!({}),
            Method::Distill(d) => d.hyper(),
        }
    }
    /// Whether training with this method needs a teacher.
    pub fn needs_teacher(&self) -> bool {
        matches!(self, Method::Distill(_))
    }
    /// The method's trainable modules, if any (saved with training checkpoints).
    pub fn modules(&self) -> Option<&Store> {
        match self {
            Method::Alone => None,
            Method::Distill(d) => d.modules(),
        }
    }
}

/// A method as the registry knows it.
pub struct MethodInfo {
    pub name: &'static str,
    /// Further names accepted for it (`hinton`, `kd-kl` for `kd`).
    pub aliases: &'static [&'static str],
    /// One line for `kdscope info` (defaults are listed from the built method's hyper-parameters).
    pub about: &'static str,
    /// Builds the method from the name it was asked by and hyper-parameter overrides (the defaults are
    /// mdistiller's CIFAR-100 settings).
    pub build: fn(&str, &Params) -> anyhow::Result<Method>,
}

/// Every method, one line each.
pub const METHODS: &[&MethodInfo] = &[
    &super::vanilla::METHOD,
    &super::hinton_kd::KD,
    &super::hinton_kd::KD_MSE,
    &super::fitnet::METHOD,
    &super::attention_transfer::METHOD,
    &super::pkt::METHOD,
    &super::rkd::METHOD,
    &super::vid::METHOD,
    &super::crd::METHOD,
    &super::ofd::METHOD,
    &super::dkd::METHOD,
    &super::review_kd::METHOD,
    &super::review_kd::ABLATION,
];

/// `kdscope info`'s method table: name, aliases, description and default hyper-parameters.
pub fn methods_table() -> String {
    let mut s = format!("{:<32} description\n", "method");
    for m in METHODS {
        s += &format!("{:<32} {}\n", m.name, m.about);
        if !m.aliases.is_empty() && !m.name.contains('…') {
            s += &format!("{:<32}   also: {}\n", "", m.aliases.join(", "));
        }
        let first = m.aliases.first().filter(|_| m.name.contains('…')).copied().unwrap_or(m.name);
        if let Ok(built) = by_name(first) {
            let hyper = built.hyper();
            if hyper.as_object().is_some_and(|o| !o.is_empty()) {
                s += &format!("{:<32}   defaults: {hyper}\n", "");
            }
        }
    }
    s
}

/// The registry entry of a name (case-insensitive; aliases count).
pub fn info(name: &str) -> anyhow::Result<&'static MethodInfo> {
    let l = name.trim().to_ascii_lowercase();
    if let Some(m) = METHODS.iter().find(|m| m.name == l || m.aliases.contains(&l.as_str())) {
        return Ok(m);
    }
    let known: Vec<&str> = METHODS.iter().map(|m| m.name).collect();
    bail!("unknown distillation method '{name}' (known: {})", known.join(", "))
}

/// Builds a method from its name (see [`METHODS`]) with its default hyper-parameters.
pub fn by_name(name: &str) -> anyhow::Result<Method> {
    by_name_with(name, &Params::new())
}

/// [`by_name`] with hyper-parameters overridden by field name (see each method's settings type, e.g.
/// [`super::ReviewKdConfig`]); `kdscope info` lists the methods.
pub fn by_name_with(name: &str, params: &Params) -> anyhow::Result<Method> {
    let m = info(name)?;
    (m.build)(&name.trim().to_ascii_lowercase(), params)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name and alias builds a method whose name is its entry's (ablation steps aside), and only
    /// `ce` trains without a teacher.
    #[test]
    fn every_entry_builds() {
        for m in METHODS {
            for n in std::iter::once(&m.name).chain(m.aliases).filter(|n| !n.contains('…')) {
                let built = by_name(n).unwrap_or_else(|e| panic!("{n}: {e:#}"));
                assert_eq!(built.needs_teacher(), m.name != "ce", "{n}");
                let want = if m.name.contains('…') { "reviewkd" } else { m.name };
                assert_eq!(built.name(), want, "{n}");
            }
        }
        let e = by_name("distill-everything").err().unwrap().to_string();
        assert!(e.contains("reviewkd") && e.contains("kd-mse"), "{e}");
    }
}
