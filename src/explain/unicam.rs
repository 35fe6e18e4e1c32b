//! UniCAM ("On Explaining Knowledge Distillation: Measuring and Visualising the Knowledge Transfer
//! Process", Adhane et al., WACV 2025), with its FSS and RS scores.
//!
//! UniCAM builds on the partial-distance-correlation CAM of Zhen et al. (ECCV 2022, "On the Versatile
//! Uses of Partial Distance Correlation in Deep Learning"): instead of a class score, the explained
//! quantity is the partial distance correlation between one model's penultimate features and the
//! labels, *given* the other model's features, over a batch of images. For a student `S` (trained with
//! KD) and a reference `R` (its teacher, or the same architecture trained without KD):
//!
//! - **distilled features** — what `S` knows about the labels beyond `R`:
//!   `RS_d = R*(f_S, E(y); f_R)`; the map on `S` is Grad-CAM with the gradient of `RS_d` at the
//!   student's last stage, `M = ReLU(Σ_c mean_{h,w}(∂RS_d/∂A_c) A_c)`;
//! - **residual features** — what `R` knows beyond `S` (features the student discarded):
//!   `RS_r = R*(f_R, E(y); f_S)`, mapped on `R` the same way;
//! - **FSS** (feature similarity score) = `dCor²_n` (biased) between the L2-normalised penultimate
//!   features of the two models (Zhen et al.'s `Distance_Correlation`);
//! - **RS** (relevance score) = the partial distance correlations `RS_d`, `RS_r` above.
//!
//! `f` is the pooled penultimate vector (`pool` tap), `R*(x, y; z)` the bias-corrected partial
//! distance correlation of [`super::dcor`] (its gradient: [`super::dcor::partial_distance_correlation_grad`]),
//! back-propagated through the real forward pass on the tape. `E(y)` embeds the labels: the paper uses
//! language-model embeddings of class names, which need a network and a model we do not ship, so
//! kdscope offers one-hot vectors ([`LabelEmbedding::OneHot`]: equal distance between all classes) or
//! class means of a model's penultimate features ([`class_mean_embedding`]: classes a model finds
//! similar are close). Maps and scores depend on the whole batch (distance statistics compare images
//! with each other): use batches of at least 32 images with several classes.
use anyhow::{ensure, Context};
use dfdx::prelude::*;

use super::dcor::{distance_correlation_sqr, partial_distance_correlation_grad};
use super::gradients::{cam_from_gradients, check_targets, last_stage_tap, mean_gradient};
use super::Maps;
use crate::data::{make_batch, Dataset};
use crate::models::Model;
use crate::nn::{dev, Var};

/// How labels become vectors for the relevance score.
#[derive(Clone, Debug, PartialEq)]
pub enum LabelEmbedding {
    /// One-hot vectors of the class index.
    OneHot,
    /// One `dim`-vector per class, row-major (`rows.len() == classes * dim`).
    Table { dim: usize, rows: Vec<f32> },
}

impl LabelEmbedding {
    /// The embedded labels, `labels.len() × dim`, and `dim`.
    pub fn embed(&self, labels: &[usize], classes: usize) -> (Vec<f32>, usize) {
        match self {
            LabelEmbedding::OneHot => {
                let mut e = vec![0.0f32; labels.len() * classes];
                for (i, &l) in labels.iter().enumerate() {
                    e[i * classes + l] = 1.0;
                }
                (e, classes)
            }
            LabelEmbedding::Table { dim, rows } => {
                (labels.iter().flat_map(|&l| rows[l * dim..(l + 1) * dim].to_vec()).collect(), *dim)
            }
        }
    }
}

/// Class means of `model`'s penultimate (`pool`) features over `data` (evaluation mode).
pub fn class_mean_embedding(model: &Model, data: &Dataset, batch: usize) -> anyhow::Result<LabelEmbedding> {
    crate::nn::ops::on_pool(|| {
        let k = data.num_classes();
        let (mut sums, mut counts, mut dim) = (Vec::<f64>::new(), vec![0usize; k], 0);
        let idx: Vec<usize> = (0..data.len()).collect();
        for chunk in idx.chunks(batch.max(1)) {
            let b = make_batch(data, chunk, None);
            let out = model.forward_with(b.x, false, true);
            let f = out.features.get("pool").context("model has no pool tap")?;
            dim = f.shape.per_sample();
            sums.resize(k * dim, 0.0);
            for (row, &l) in f.data().chunks(dim).zip(&b.labels) {
                counts[l] += 1;
                for (s, &v) in sums[l * dim..(l + 1) * dim].iter_mut().zip(row) {
                    *s += v as f64;
                }
            }
        }
        let rows = sums.iter().enumerate().map(|(j, s)| (s / counts[j / dim].max(1) as f64) as f32).collect();
        Ok(LabelEmbedding::Table { dim, rows })
    })
}

/// UniCAM maps (input resolution) and scores for one batch.
#[derive(Clone, Debug)]
pub struct UniCamResult {
    /// Distilled-feature maps, on the student.
    pub distilled: Maps,
    /// Residual-feature maps, on the reference model.
    pub residual: Maps,
    /// `RS_d = R*(f_S, E(y); f_R)`.
    pub rs_distilled: f64,
    /// `RS_r = R*(f_R, E(y); f_S)`.
    pub rs_residual: f64,
    /// `FSS = dCor²_n(f_S/‖f_S‖, f_R/‖f_R‖)`.
    pub fss: f64,
}

/// Pooled penultimate features (`n × d`) of `model` on `x`, evaluation mode, no tape.
pub fn penultimate(model: &Model, x: &Var) -> anyhow::Result<(Vec<f32>, usize)> {
    crate::nn::ops::on_pool(|| {
        let out = model.forward_with(Var::from_vec(x.to_vec(), x.shape), false, true);
        let f = out.features.get("pool").context("model has no pool tap")?;
        Ok((f.to_vec(), f.shape.per_sample()))
    })
}

/// Rows scaled to unit L2 norm (zero rows stay zero).
pub fn l2_normalized(x: &[f32], d: usize) -> Vec<f32> {
    x.chunks(d)
        .flat_map(|r| {
            let n = r.iter().map(|v| v * v).sum::<f32>().sqrt();
            r.iter().map(move |v| if n > 0.0 { v / n } else { 0.0 }).collect::<Vec<_>>()
        })
        .collect()
}

/// Feature similarity score of two feature samples (`n × da`, `n × db`): biased `dCor²_n` of the
/// L2-normalised rows.
pub fn fss(a: &[f32], da: usize, b: &[f32], db: usize) -> f64 {
    distance_correlation_sqr(&l2_normalized(a, da), da, &l2_normalized(b, db), db)
}

/// Grad-CAM of `model` at its last stage for the partial distance correlation of its penultimate
/// features with `emb` given `other` (tap resolution), and that correlation.
pub(crate) fn conditioned_cam(
    model: &Model,
    x: &Var,
    emb: (&[f32], usize),
    other: (&[f32], usize),
) -> anyhow::Result<(Maps, f64)> {
    crate::nn::ops::on_pool(|| {
        let tap = last_stage_tap(model);
        let mut out =
            model.forward_probed_with(Var::from_vec(x.to_vec(), x.shape).traced_input(), false, &[tap], true)?;
        let feat = out.features.get(tap).context("feature tap missing")?;
        let (shape, a) = (feat.shape, feat.to_vec());
        let pool = out.features.take("pool").context("model has no pool tap")?;
        let d = pool.shape.per_sample();
        let (r, g) = partial_distance_correlation_grad(pool.data(), d, emb.0, emb.1, other.0, other.1);
        let probe = out.features.probes[0].1.clone();
        let n = x.shape.n;
        let from_features = (pool.dfdx_matrix() * dev().tensor_from_vec(g, (n, d))).sum();
        let from_logits = (out.logits.dfdx_matrix() * 0.0).sum();
        let _ = crate::nn::ops::with_frozen_params(|| (from_features + from_logits).backward());
        let grads = probe.get().context("no gradient reached the tap")?;
        Ok((cam_from_gradients(shape, &a, &grads, mean_gradient), r))
    })
}

/// UniCAM for a batch: `student` (trained with KD) against `reference` (its teacher or a base model
/// trained without KD), for images `x` with true `labels`. Needs more than 3 images.
pub fn unicam(
    student: &Model,
    reference: &Model,
    x: &Var,
    labels: &[usize],
    embedding: &LabelEmbedding,
) -> anyhow::Result<UniCamResult> {
    check_targets(student, x, labels)?;
    ensure!(x.shape.n > 3, "UniCAM compares images within a batch: give more than 3 images, got {}", x.shape.n);
    let (e, de) = embedding.embed(labels, student.spec.num_classes);
    let (fs, ds) = penultimate(student, x)?;
    let (fr, dr) = penultimate(reference, x)?;
    let (dist, rs_d) = conditioned_cam(student, x, (&e, de), (&fr, dr))?;
    let (resid, rs_r) = conditioned_cam(reference, x, (&e, de), (&fs, ds))?;
    let (h, w) = (x.shape.h, x.shape.w);
    Ok(UniCamResult {
        distilled: dist.upsampled(h, w),
        residual: resid.upsampled(h, w),
        rs_distilled: rs_d,
        rs_residual: rs_r,
        fss: fss(&fs, ds, &fr, dr),
    })
}
