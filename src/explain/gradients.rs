//! One recorded forward pass and one backward pass of the target scores, shared by the gradient-based
//! methods. Gradients come from dfdx's tape: gradient probes sit on the real forward pass at the
//! requested feature taps, and the input gradient is the gradient of the (tracked) input tensor.
use anyhow::{ensure, Context};
use dfdx::prelude::*;

use crate::models::Model;
use crate::nn::ops::{with_frozen_params, with_guided_relu};
use crate::nn::{dev, Shape4, Var};

/// Activations and gradients of the summed target scores `Σ_i logit_i[t_i]`.
pub(crate) struct TapeGrads {
    /// Per requested tap: feature shape, activations, gradients (same layout).
    pub taps: Vec<(Shape4, Vec<f32>, Vec<f32>)>,
    /// Gradient with respect to the input batch, when asked for.
    pub input: Option<Vec<f32>>,
}

pub(crate) fn check_targets(model: &Model, x: &Var, targets: &[usize]) -> anyhow::Result<()> {
    ensure!(targets.len() == x.shape.n, "{} targets for {} images", targets.len(), x.shape.n);
    ensure!(
        targets.iter().all(|&t| t < model.spec.num_classes),
        "target class out of range (the model has {} classes)",
        model.spec.num_classes
    );
    Ok(())
}

/// The feature tap of the last stage, where CAM-style methods look by default (`layer3` for the CIFAR
/// ResNets, `final` — after the last batch norm and ReLU — for WRNs).
pub fn last_stage_tap(model: &Model) -> &'static str {
    model.last_conv_tap().0
}

/// Runs the model in evaluation mode on `x` and back-propagates `Σ_i logit_i[targets_i]`; with
/// `guided`, every ReLU's backward is guided ([`with_guided_relu`]).
pub(crate) fn target_gradients(
    model: &Model,
    x: &Var,
    taps: &[&str],
    targets: &[usize],
    input: bool,
    guided: bool,
) -> anyhow::Result<TapeGrads> {
    crate::nn::ops::on_pool(|| {
        check_targets(model, x, targets)?;
        let (n, k) = (x.shape.n, model.spec.num_classes);
        let v = Var::from_vec(x.to_vec(), x.shape);
        let v = if input { v.traced() } else { v.traced_input() };
        let (v, keep) = v.fork();
        let out = model.forward_probed_with(v, false, taps, !input)?;
        let mut acts = Vec::with_capacity(taps.len());
        for t in taps {
            let f = out.features.get(t).with_context(|| format!("feature tap '{t}' missing"))?;
            acts.push((f.shape, f.to_vec()));
        }
        let probes = out.features.probes.clone();
        let mut mask = vec![0.0f32; n * k];
        for (i, &t) in targets.iter().enumerate() {
            mask[i * k + t] = 1.0;
        }
        let loss = (out.logits.dfdx_matrix() * dev().tensor_from_vec(mask, (n, k))).sum();
        let mut grads =
            with_frozen_params(|| if guided { with_guided_relu(|| loss.backward()) } else { loss.backward() });
        let mut taps_out = Vec::with_capacity(taps.len());
        for (t, (shape, a)) in taps.iter().zip(acts) {
            let g = probes
                .iter()
                .find(|(p, _)| p == t)
                .and_then(|(_, p)| p.get())
                .with_context(|| format!("no gradient reached the tap '{t}'"))?;
            taps_out.push((shape, a, g));
        }
        Ok(TapeGrads { taps: taps_out, input: input.then(|| keep.grad(&mut grads)) })
    })
}

/// A CAM-style method's name: `base`, or `base@tap` for an explicit tap.
pub(crate) fn tap_name(base: &str, tap: &Option<String>) -> String {
    match tap {
        Some(t) => format!("{base}@{t}"),
        None => base.into(),
    }
}

/// Grad-CAM's channel weight: the mean of the gradient over the plane (`a`, the activations, unused).
pub(crate) fn mean_gradient(_a: &[f32], g: &[f32]) -> f32 {
    g.iter().sum::<f32>() / g.len() as f32
}

/// `ReLU(Σ_c w_c A_c)` with each channel's weight `w_c = weight(A_c, ∂/∂A_c)` from its activation and
/// gradient planes.
pub(crate) fn cam_from_gradients(
    shape: Shape4,
    a: &[f32],
    grads: &[f32],
    weight: impl Fn(&[f32], &[f32]) -> f32,
) -> super::Maps {
    let hw = shape.plane();
    let w: Vec<f32> = a.chunks(hw).zip(grads.chunks(hw)).map(|(a, g)| weight(a, g)).collect();
    weighted_sum(shape, a, &w, true)
}

/// A gradient-weighted CAM of the target scores at `tap` (default: the last stage).
pub(crate) fn target_cam(
    model: &Model,
    x: &Var,
    targets: &[usize],
    tap: Option<&str>,
    weight: impl Fn(&[f32], &[f32]) -> f32,
) -> anyhow::Result<super::Maps> {
    let tap = tap.unwrap_or_else(|| last_stage_tap(model));
    let g = target_gradients(model, x, &[tap], targets, false, false)?;
    let (shape, a, grads) = &g.taps[0];
    Ok(cam_from_gradients(*shape, a, grads, weight))
}

/// The input gradient of the target scores (guided or not) as one map: `max_c |g_c(p)|`.
pub(crate) fn input_gradient_map(
    model: &Model,
    x: &Var,
    targets: &[usize],
    guided: bool,
) -> anyhow::Result<super::Maps> {
    let g = target_gradients(model, x, &[], targets, true, guided)?;
    Ok(abs_max_over_channels(x.shape, &g.input.unwrap_or_default()))
}

/// Channel-weighted sum of a feature map per image, `Σ_c w[i][c] A[i][c]`, optionally rectified.
pub(crate) fn weighted_sum(shape: Shape4, a: &[f32], weights: &[f32], relu: bool) -> super::Maps {
    let (n, c, hw) = (shape.n, shape.c, shape.plane());
    let mut data = vec![0.0f32; n * hw];
    for i in 0..n {
        let out = &mut data[i * hw..(i + 1) * hw];
        for ch in 0..c {
            let w = weights[i * c + ch];
            let plane = &a[(i * c + ch) * hw..(i * c + ch + 1) * hw];
            for (o, &v) in out.iter_mut().zip(plane) {
                *o += w * v;
            }
        }
    }
    if relu {
        data.iter_mut().for_each(|v| *v = v.max(0.0));
    }
    super::Maps { n, h: shape.h, w: shape.w, data }
}

/// Per-pixel maximum over channels of `|g|` (`g`: an NCHW input gradient), the usual way to show an
/// input gradient as one map (Simonyan et al. 2014).
pub(crate) fn abs_max_over_channels(shape: Shape4, g: &[f32]) -> super::Maps {
    let (n, c, hw) = (shape.n, shape.c, shape.plane());
    let mut data = vec![0.0f32; n * hw];
    for i in 0..n {
        for ch in 0..c {
            let plane = &g[(i * c + ch) * hw..(i * c + ch + 1) * hw];
            for (o, &v) in data[i * hw..(i + 1) * hw].iter_mut().zip(plane) {
                *o = o.max(v.abs());
            }
        }
    }
    super::Maps { n, h: shape.h, w: shape.w, data }
}
