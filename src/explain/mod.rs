//! Explanations of what a model looks at, and how teacher and student differ.
//!
//! - Saliency methods, one file each behind the [`Saliency`] trait: [`VanillaGradient`],
//!   [`GuidedBackprop`] (guided at the op level, post-residual ReLUs included), [`Cam`], [`GradCam`],
//!   [`GradCamPlusPlus`]; [`method`] builds one from a name (`"grad-cam@layer2"`).
//!   Gradients come from dfdx's tape on the real forward pass (gradient probes at feature taps).
//! - [`unicam`]: UniCAM distilled / residual feature maps of a student relative to a reference model,
//!   with the FSS and RS scores, built on the distance statistics of [`dcor`].
//! - [`quality`]: Average Drop, Increase in Confidence, Coherency (Pearson and SSIM), Complexity, ADCC.
//! - [`agreement`]: teacher-vs-student map agreement (rank correlation, top-k% IoU).
//! - [`overlay`]: colour-mapped heat maps over the input image, as PNG-ready images.
//!
//! ```
//! use kdscope::explain::{self, Saliency};
//! use kdscope::models::Model;
//! use kdscope::data::{make_batch, synthetic};
//!
//! let data = synthetic::builtin_dataset(&synthetic::SynthConfig { train_per_class: 1, test_per_class: 1, ..Default::default() });
//! let model = Model::build("resnet8", 20, 0).unwrap();
//! let batch = make_batch(&data.test, &[0, 1], None);
//! let maps = explain::method("grad-cam").unwrap().maps(&model, &batch.x, &batch.labels).unwrap();
//! assert_eq!((maps.n, maps.h, maps.w), (2, 32, 32));
//! ```
pub mod agreement;
pub mod cam;
pub mod dcor;
pub mod grad_cam;
pub mod grad_cam_plus_plus;
mod gradients;
pub mod guided_backprop;
pub mod maps;
pub mod overlay;
pub mod quality;
pub mod section;
pub mod unicam;
pub mod vanilla_gradient;

use anyhow::bail;

pub use cam::Cam;
pub use grad_cam::GradCam;
pub use grad_cam_plus_plus::GradCamPlusPlus;
pub use gradients::last_stage_tap;
pub use guided_backprop::GuidedBackprop;
pub use maps::Maps;
pub use section::{section, SectionConfig};
pub use vanilla_gradient::{input_gradient, VanillaGradient};

use crate::data::{make_batch, Dataset};
use crate::models::Model;
use crate::nn::Var;

/// A saliency method: one map per image for a target class.
pub trait Saliency: Send + Sync {
    /// The method's name as frames and reports show it (`grad-cam`, `grad-cam@layer2` …).
    fn name(&self) -> String;
    /// Maps of `model` (evaluation mode) for the normalised images `x` and target classes `targets`,
    /// at the method's own resolution (the tap's for CAM methods, the input's for gradients).
    fn explain(&self, model: &Model, x: &Var, targets: &[usize]) -> anyhow::Result<Maps>;
    /// [`explain`](Saliency::explain), bilinearly resized to the input size.
    fn maps(&self, model: &Model, x: &Var, targets: &[usize]) -> anyhow::Result<Maps> {
        Ok(self.explain(model, x, targets)?.upsampled(x.shape.h, x.shape.w))
    }
}

/// Method names [`method`] knows.
pub const METHODS: [&str; 5] = ["gradient", "guided-backprop", "cam", "grad-cam", "grad-cam++"];

/// Builds a method from its name: `gradient`, `guided-backprop`, `cam`, `grad-cam`, `grad-cam++`;
/// the CAM-style gradient methods take a feature tap after `@` (`grad-cam@layer2`, default: the last
/// stage).
pub fn method(name: &str) -> anyhow::Result<Box<dyn Saliency>> {
    let l = name.trim().to_ascii_lowercase().replace('_', "-");
    let (base, tap) = match l.split_once('@') {
        Some((b, t)) => (b.to_string(), Some(t.to_string())),
        None => (l.clone(), None),
    };
    let m: Box<dyn Saliency> = match (base.as_str(), tap) {
        ("gradient" | "vanilla-gradient" | "saliency", None) => Box::new(VanillaGradient),
        ("guided-backprop" | "guided", None) => Box::new(GuidedBackprop),
        ("cam", None) => Box::new(Cam),
        ("grad-cam" | "gradcam", tap) => Box::new(GradCam { tap }),
        ("grad-cam++" | "gradcam++" | "grad-cam-plus-plus", tap) => Box::new(GradCamPlusPlus { tap }),
        _ => bail!(
            "unknown saliency method '{name}' (known: {}; a tap may follow '@' for grad-cam and grad-cam++)",
            METHODS.join(", ")
        ),
    };
    Ok(m)
}

/// Maps at input resolution for images `indices` of `data` (normalised as for evaluation) and their
/// `targets`, computed in batches of `batch`.
pub fn explain_images(
    method: &dyn Saliency,
    model: &Model,
    data: &Dataset,
    indices: &[usize],
    targets: &[usize],
    batch: usize,
) -> anyhow::Result<Maps> {
    anyhow::ensure!(indices.len() == targets.len(), "{} images but {} targets", indices.len(), targets.len());
    let mut out = Maps::zeros(0, data.height, data.width);
    for (idx, tg) in indices.chunks(batch.max(1)).zip(targets.chunks(batch.max(1))) {
        let b = make_batch(data, idx, None);
        out.extend(method.maps(model, &b.x, tg)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
