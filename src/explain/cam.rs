//! CAM ("Learning Deep Features for Discriminative Localization", Zhou et al. 2016) for global-average-
//! pool + linear heads: `M = Σ_c W_{t,c} A_c` with the classifier weights `W` and the last stage's
//! features `A` (no ReLU, as in the paper; [`Maps::normalized`] rescales for display).
use anyhow::Context;

use super::gradients::{check_targets, last_stage_tap, weighted_sum};
use super::{Maps, Saliency};
use crate::models::Model;
use crate::nn::Var;

/// CAM (see the module docs).
#[derive(Clone, Copy, Debug, Default)]
pub struct Cam;

impl Saliency for Cam {
    fn name(&self) -> String {
        "cam".into()
    }
    fn explain(&self, model: &Model, x: &Var, targets: &[usize]) -> anyhow::Result<Maps> {
        crate::nn::ops::on_pool(|| {
            check_targets(model, x, targets)?;
            anyhow::ensure!(
                model.last_conv_tap().1,
                "CAM needs a classifier on globally pooled features; {} has a fully connected head (use Grad-CAM)",
                model.name()
            );
            let tap = last_stage_tap(model);
            let out = model.forward_with(Var::from_vec(x.to_vec(), x.shape), false, true);
            let feat = out.features.get(tap).context("feature tap missing")?;
            let name = format!("{}.weight", model.classifier_name());
            let w = model.store.get(model.store.find(&name).with_context(|| format!("model has no {name}"))?).values();
            let c = feat.shape.c;
            let weights: Vec<f32> = targets.iter().flat_map(|&t| w[t * c..(t + 1) * c].to_vec()).collect();
            Ok(weighted_sum(feat.shape, feat.data(), &weights, false))
        })
    }
}
