//! The architecture of a state dict, from its tensor names and shapes alone.
//!
//! Each sized family of the registry guesses its size from the tensors ([`Family::infer`]: blocks per
//! stage, widths, bottlenecks, the stem's kernel); fixed architectures are always candidates. Every
//! candidate is built with the input channels of its first convolution and the classes of its
//! classifier, and kept only if every name and shape matches. Sizes come from the tensors themselves, so
//! what gets built is bounded by what the file holds.
use anyhow::{bail, Context};

use super::{compare, Mismatch};
use crate::models::{Family, Model, ModelSpec, Shapes, FAMILIES};

/// Largest class count and input channel count accepted from a file.
const MAX_CLASSES: usize = 1_000_000;
const MAX_IN_CHANNELS: usize = 64;

/// Refuses specs no real dataset has, before anything is allocated for them.
pub fn check_spec(spec: &ModelSpec) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=MAX_IN_CHANNELS).contains(&spec.in_channels),
        "{}: {} input channels (expected 1 to {MAX_IN_CHANNELS})",
        spec.arch,
        spec.in_channels
    );
    anyhow::ensure!(
        (1..=MAX_CLASSES).contains(&spec.num_classes),
        "{}: {} classes (expected 1 to {MAX_CLASSES})",
        spec.arch,
        spec.num_classes
    );
    Ok(())
}

fn shape_of<'a>(shapes: &'a Shapes, name: &str, arch: &str, what: &str) -> anyhow::Result<&'a [usize]> {
    let s = shapes.get(name).with_context(|| format!("no tensor '{name}' ({what} of {arch})"))?;
    anyhow::ensure!(s.len() >= 2, "'{name}' ({what} of {arch}) has shape {s:?}, expected a matrix or a conv kernel");
    Ok(s)
}

/// The spec of architecture `arch` with the input channels and classes the tensors show.
pub fn spec_for_arch(shapes: &Shapes, arch: &str) -> anyhow::Result<ModelSpec> {
    let probe = Model::try_new(ModelSpec::new(arch, 1)?, 0)?;
    let cls = format!("{}.weight", probe.classifier_name());
    let first = &probe.store.params.first().context("the architecture has no parameters")?.name;
    let spec = ModelSpec {
        arch: probe.spec.arch.clone(),
        in_channels: shape_of(shapes, first, arch, "the first convolution")?[1],
        num_classes: shape_of(shapes, &cls, arch, "the classifier")?[0],
    };
    check_spec(&spec)?;
    Ok(spec)
}

/// The architectures worth building for these tensors.
fn candidates(shapes: &Shapes) -> Vec<String> {
    FAMILIES
        .iter()
        .filter_map(|f: &&Family| match (f.infer, f.parse) {
            (Some(guess), _) => guess(shapes),
            (None, None) => Some(f.name.to_string()),
            (None, Some(_)) => None,
        })
        .collect()
}

/// What the tensors look like, for an error message: count, stem, classifier-like matrices, groups.
pub fn describe(shapes: &Shapes) -> String {
    let first_conv = shapes.iter().find(|(_, s)| s.len() == 4).map(|(k, s)| format!("{k} {s:?}"));
    let matrices: Vec<String> =
        shapes.iter().filter(|(_, s)| s.len() == 2).map(|(k, s)| format!("{k} {s:?}")).take(4).collect();
    let names: Vec<String> = shapes.keys().cloned().collect();
    format!(
        "{} tensors; top-level groups: {}; first convolution: {}; matrices: {}",
        shapes.len(),
        super::select::tops(&names, ""),
        first_conv.unwrap_or_else(|| "none".into()),
        if matrices.is_empty() { "none".into() } else { matrices.join(", ") }
    )
}

/// Infers the architecture of a state dict and builds it (fresh parameters, to be loaded).
pub fn infer_model(shapes: &Shapes) -> anyhow::Result<Model> {
    let mut found: Vec<Model> = Vec::new();
    let mut closest: Option<(String, Mismatch)> = None;
    for name in candidates(shapes) {
        let Ok(spec) = spec_for_arch(shapes, &name) else { continue };
        let model = Model::try_new(spec, 0)?;
        let m = compare(shapes, &model.store);
        if m.is_empty() {
            found.push(model);
        } else if closest.as_ref().is_none_or(|(_, c)| m.size() < c.size()) {
            closest = Some((model.spec.to_string(), m));
        }
    }
    match found.len() {
        1 => Ok(found.pop().expect("one model")),
        0 => {
            let near = match closest {
                Some((arch, m)) => format!("\nclosest: {arch}, which differs in\n{m}"),
                None => String::new(),
            };
            bail!("could not infer the architecture (pass it with --arch / --teacher-arch): {}{near}", describe(shapes))
        }
        _ => {
            let names: Vec<String> = found.iter().map(|m| m.spec.to_string()).collect();
            bail!("the tensors fit several architectures ({}); pass one with --arch", names.join(", "))
        }
    }
}

/// [`infer_model`]'s spec.
pub fn infer_spec(shapes: &Shapes) -> anyhow::Result<ModelSpec> {
    Ok(infer_model(shapes)?.spec)
}
