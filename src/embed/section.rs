//! One call for a model's embeddings and their evaluation ([`embed_predictions`]), and the report's
//! embeddings section for a teacher and a student ([`section`]): frames only, so the report never
//! touches a model.
use anyhow::{ensure, Context};
use polars::prelude::*;
use serde::{Deserialize, Serialize};

use super::darksight::{darksight, DarkSight, DarkSightConfig};
use super::divergence::entropy;
use super::fidelity::local_fidelity;
use super::flat_points;
use super::kde::{kde_log_density, Bandwidth, KdeScope};
use super::rejection::{max_probability, negative_entropy, rejection_curve};
use super::tsne::{tsne, Tsne, TsneConfig};
use crate::data::{make_batch, Dataset};
use crate::models::Model;
use crate::predictions::{argmax, log_softmax_rows};
use crate::report::EmbedSection;

/// What t-SNE embeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TsneInput {
    Probabilities,
    Logits,
    /// Pooled penultimate features.
    Features,
}

impl TsneInput {
    pub fn label(&self) -> &'static str {
        match self {
            TsneInput::Probabilities => "t-SNE probabilities",
            TsneInput::Logits => "t-SNE logits",
            TsneInput::Features => "t-SNE features",
        }
    }
}

/// Settings of [`embed_predictions`] and [`section`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EmbedConfig {
    pub darksight: DarkSightConfig,
    pub tsne: TsneConfig,
    /// The t-SNE baselines to run (none: DarkSight only).
    pub tsne_inputs: Vec<TsneInput>,
    pub bandwidth: Bandwidth,
    pub kde_scope: KdeScope,
    /// `M_k` for `k = 1 … kmax`.
    pub kmax: usize,
    /// Points of each rejection curve.
    pub rejection_steps: usize,
    /// Embed at most this many test images (a seeded sample, in test order); `None`: all. The report
    /// holds a thumbnail of every embedded image outside its image corpus (a JPEG, 1–3 KB each), hence
    /// the default of 1,000 (a 100-class report with every section stays under 15 MB).
    pub max_points: Option<usize>,
    /// Lowest-density DarkSight points listed as outliers per model.
    pub outliers: usize,
    pub batch: usize,
    pub seed: u64,
}

impl Default for EmbedConfig {
    fn default() -> Self {
        Self {
            darksight: DarkSightConfig::default(),
            tsne: TsneConfig::default(),
            tsne_inputs: vec![TsneInput::Probabilities, TsneInput::Logits, TsneInput::Features],
            bandwidth: Bandwidth::Scott,
            kde_scope: KdeScope::PredictedClass,
            kmax: 20,
            rejection_steps: 20,
            max_points: Some(1000),
            outliers: 12,
            batch: 256,
            seed: 0,
        }
    }
}

/// One model's embeddings of the same points, with their evaluation.
#[derive(Clone, Debug)]
pub struct ModelEmbeddings {
    pub model: String,
    /// Dataset indices of the points.
    pub indices: Vec<usize>,
    pub labels: Vec<usize>,
    /// The model's arg-max class per point.
    pub predicted: Vec<usize>,
    pub num_classes: usize,
    /// The model's probabilities (`n × num_classes`).
    pub probabilities: Vec<f32>,
    pub darksight: DarkSight,
    /// t-SNE baselines, by label ("t-SNE probabilities", …).
    pub tsne: Vec<(String, Tsne)>,
    /// Per embedding (DarkSight first): log KDE density of each point.
    pub kde: Vec<(String, Vec<f64>)>,
    /// Per embedding: `M_1 … M_kmax`.
    pub fidelity: Vec<(String, Vec<f64>)>,
    /// Per confidence measure: `(kept fraction, accuracy)`.
    pub rejection: Vec<(String, Vec<(f64, f64)>)>,
}

/// Embeds one model's predictions on `labels.len()` points: DarkSight on the logits, the t-SNE
/// baselines of `cfg.tsne_inputs` (features from `features` = `(n × d values, d)`), KDE confidence,
/// `M_k` and rejection curves (KDE of every embedding, max probability, entropy).
pub fn embed_predictions(
    model: &str,
    logits: &[f32],
    num_classes: usize,
    features: Option<(&[f32], usize)>,
    labels: &[usize],
    indices: Vec<usize>,
    cfg: &EmbedConfig,
) -> anyhow::Result<ModelEmbeddings> {
    let k = num_classes;
    let n = labels.len();
    ensure!(logits.len() == n * k, "{model}: {} logits for {n} points of {k} classes", logits.len());
    ensure!(indices.len() == n, "{model}: {} indices for {n} points", indices.len());
    let probabilities: Vec<f32> = log_softmax_rows(logits, k, 1.0).iter().map(|v| v.exp() as f32).collect();
    let predicted: Vec<usize> = logits.chunks(k).map(argmax).collect();
    let ds = darksight(logits, k, &cfg.darksight).with_context(|| format!("DarkSight of {model}"))?;
    let mut tsnes = vec![];
    for input in &cfg.tsne_inputs {
        let (x, d): (&[f32], usize) = match input {
            TsneInput::Probabilities => (&probabilities, k),
            TsneInput::Logits => (logits, k),
            TsneInput::Features => match features {
                Some(f) => f,
                None => continue,
            },
        };
        let t = tsne(x, d, &cfg.tsne).with_context(|| format!("{} of {model}", input.label()))?;
        tsnes.push((input.label().to_string(), t));
    }
    let mut kde = vec![];
    let mut fidelity = vec![];
    let kmax = cfg.kmax.min(n.saturating_sub(1)).max(1);
    for (label, pts) in all_points(&ds, &tsnes) {
        kde.push((label.to_string(), kde_log_density(pts, &predicted, cfg.bandwidth, cfg.kde_scope)?));
        fidelity.push((label.to_string(), local_fidelity(&flat_points(pts), &probabilities, k, kmax)?));
    }
    let correct: Vec<bool> = predicted.iter().zip(labels).map(|(p, l)| p == l).collect();
    let mut rejection = vec![];
    for (label, dens) in &kde {
        rejection.push((format!("KDE on {label}"), rejection_curve(dens, &correct, cfg.rejection_steps)?));
    }
    rejection.push((
        "max probability".into(),
        rejection_curve(&max_probability(&probabilities, k), &correct, cfg.rejection_steps)?,
    ));
    rejection.push((
        "entropy".into(),
        rejection_curve(&negative_entropy(&probabilities, k), &correct, cfg.rejection_steps)?,
    ));
    Ok(ModelEmbeddings {
        model: model.into(),
        indices,
        labels: labels.to_vec(),
        predicted,
        num_classes: k,
        probabilities,
        darksight: ds,
        tsne: tsnes,
        kde,
        fidelity,
        rejection,
    })
}

/// Every embedding's label and points, DarkSight first (the order of `kde` and `fidelity`).
fn all_points<'a>(ds: &'a DarkSight, tsnes: &'a [(String, Tsne)]) -> Vec<(&'a str, &'a [[f64; 2]])> {
    std::iter::once(("DarkSight", ds.points.as_slice()))
        .chain(tsnes.iter().map(|(l, t)| (l.as_str(), t.points.as_slice())))
        .collect()
}

impl ModelEmbeddings {
    /// Every point of every embedding: `model, method, index, x, y, label, predicted, correct,
    /// kde_log_density, max_probability, entropy`.
    pub fn points_frame(&self) -> anyhow::Result<DataFrame> {
        let k = self.num_classes;
        let n = self.indices.len();
        let (mut method, mut x, mut y, mut dens) = (vec![], vec![], vec![], vec![]);
        for ((label, pts), (_, kd)) in all_points(&self.darksight, &self.tsne).into_iter().zip(&self.kde) {
            for (p, &d) in pts.iter().zip(kd) {
                method.push(label.to_string());
                x.push(p[0]);
                y.push(p[1]);
                dens.push(d);
            }
        }
        let m = method.len() / n.max(1);
        let rep = |v: Vec<u32>| -> Vec<u32> { (0..m).flat_map(|_| v.iter().copied()).collect() };
        let maxp: Vec<f64> = max_probability(&self.probabilities, k);
        let ent: Vec<f64> = self.probabilities.chunks(k).map(entropy).collect();
        Ok(df!(
            "model" => vec![self.model.clone(); m * n],
            "method" => method,
            "index" => rep(self.indices.iter().map(|&i| i as u32).collect()),
            "x" => x,
            "y" => y,
            "label" => rep(self.labels.iter().map(|&i| i as u32).collect()),
            "predicted" => rep(self.predicted.iter().map(|&i| i as u32).collect()),
            "correct" => (0..m).flat_map(|_| self.labels.iter().zip(&self.predicted).map(|(a, b)| a == b)).collect::<Vec<_>>(),
            "kde_log_density" => dens,
            "max_probability" => (0..m).flat_map(|_| maxp.iter().copied()).collect::<Vec<_>>(),
            "entropy" => (0..m).flat_map(|_| ent.iter().copied()).collect::<Vec<_>>(),
        )?)
    }

    /// One row per embedding: `model, method, objective` (DarkSight's symmetric KL or t-SNE's KL),
    /// `agreement` (DarkSight's student vs the model's class; null for t-SNE), `M_1`, `M_kmax`, `seconds`.
    pub fn summary_frame(&self) -> anyhow::Result<DataFrame> {
        let mut method = vec!["DarkSight".to_string()];
        let mut objective = vec![self.darksight.final_loss];
        let mut agreement = vec![Some(self.darksight.agreement(&self.predicted))];
        let mut seconds = vec![self.darksight.seconds];
        for (l, t) in &self.tsne {
            method.push(l.clone());
            objective.push(t.kl);
            agreement.push(None);
            seconds.push(t.seconds);
        }
        let m1: Vec<f64> = self.fidelity.iter().map(|f| f.1[0]).collect();
        let mk: Vec<f64> = self.fidelity.iter().map(|f| *f.1.last().unwrap()).collect();
        let kmax = self.fidelity.first().map_or(0, |f| f.1.len());
        Ok(DataFrame::new_infer_height(vec![
            Column::new("model".into(), vec![self.model.clone(); method.len()]),
            Column::new("method".into(), method),
            Column::new("points".into(), vec![self.indices.len() as u32; objective.len()]),
            Column::new("objective".into(), objective),
            Column::new("agreement".into(), agreement),
            Column::new("M_1".into(), m1),
            Column::new(format!("M_{kmax}").into(), mk),
            Column::new("seconds".into(), seconds),
        ])?)
    }

    /// `model, method, k, m_k` for every embedding.
    pub fn fidelity_frame(&self) -> anyhow::Result<DataFrame> {
        let rows: Vec<(&str, usize, f64)> = self
            .fidelity
            .iter()
            .flat_map(|(l, v)| v.iter().enumerate().map(move |(i, &m)| (l.as_str(), i + 1, m)))
            .collect();
        Ok(df!(
            "model" => vec![self.model.clone(); rows.len()],
            "method" => rows.iter().map(|r| r.0.to_string()).collect::<Vec<_>>(),
            "k" => rows.iter().map(|r| r.1 as u32).collect::<Vec<_>>(),
            "m_k" => rows.iter().map(|r| r.2).collect::<Vec<_>>(),
        )?)
    }

    /// `model, measure, kept, accuracy` for every confidence measure.
    pub fn rejection_frame(&self) -> anyhow::Result<DataFrame> {
        let rows: Vec<(&str, f64, f64)> =
            self.rejection.iter().flat_map(|(l, v)| v.iter().map(move |&(f, a)| (l.as_str(), f, a))).collect();
        Ok(df!(
            "model" => vec![self.model.clone(); rows.len()],
            "measure" => rows.iter().map(|r| r.0.to_string()).collect::<Vec<_>>(),
            "kept" => rows.iter().map(|r| r.1).collect::<Vec<_>>(),
            "accuracy" => rows.iter().map(|r| r.2).collect::<Vec<_>>(),
        )?)
    }

    /// The `n` points of lowest DarkSight KDE density: `model, index, label, predicted,
    /// kde_log_density, max_probability`.
    pub fn outliers_frame(&self, n: usize) -> anyhow::Result<DataFrame> {
        let dens = &self.kde[0].1;
        let mut order: Vec<usize> = (0..dens.len()).collect();
        order.sort_by(|&a, &b| dens[a].total_cmp(&dens[b]).then(a.cmp(&b)));
        order.truncate(n);
        let maxp = max_probability(&self.probabilities, self.num_classes);
        Ok(df!(
            "model" => vec![self.model.clone(); order.len()],
            "index" => order.iter().map(|&i| self.indices[i] as u32).collect::<Vec<_>>(),
            "label" => order.iter().map(|&i| self.labels[i] as u32).collect::<Vec<_>>(),
            "predicted" => order.iter().map(|&i| self.predicted[i] as u32).collect::<Vec<_>>(),
            "kde_log_density" => order.iter().map(|&i| dens[i]).collect::<Vec<_>>(),
            "max_probability" => order.iter().map(|&i| maxp[i]).collect::<Vec<_>>(),
        )?)
    }
}

/// Logits and pooled penultimate features (`n × d`, `d`) of `model` on the images `indices` of `data`.
pub fn model_outputs(
    model: &Model,
    data: &Dataset,
    indices: &[usize],
    batch: usize,
) -> anyhow::Result<(Vec<f32>, Vec<f32>, usize)> {
    crate::nn::ops::on_pool(|| {
        let (mut logits, mut feats, mut d) = (vec![], vec![], 0);
        for chunk in indices.chunks(batch.max(1)) {
            let b = make_batch(data, chunk, None);
            let out = model.forward_with(b.x, false, true);
            logits.extend_from_slice(out.logits.data());
            let f = out.features.get("pool").context("the model has no pool tap")?;
            d = f.shape.per_sample();
            feats.extend_from_slice(f.data());
        }
        Ok((logits, feats, d))
    })
}

/// The test indices a section embeds: all, or a seeded sample of `max` in test order.
pub fn section_indices(n: usize, max: Option<usize>, seed: u64) -> Vec<usize> {
    match max {
        Some(m) if m < n => crate::data::sample_indices(n, m, seed),
        _ => (0..n).collect(),
    }
}

/// Merges frames row-wise (same columns).
fn vstack(frames: Vec<DataFrame>) -> anyhow::Result<DataFrame> {
    let mut it = frames.into_iter();
    let mut out = it.next().context("no frames")?;
    for f in it {
        out.vstack_mut(&f)?;
    }
    Ok(out)
}

/// The report's embeddings section for `teacher` and `student` (named by the first tuple element) on
/// `test`.
pub fn section(
    teacher: (&str, &Model),
    student: (&str, &Model),
    test: &Dataset,
    cfg: &EmbedConfig,
) -> anyhow::Result<EmbedSection> {
    let idx = section_indices(test.len(), cfg.max_points, cfg.seed);
    let labels: Vec<usize> = idx.iter().map(|&i| test.labels[i]).collect();
    let mut all = vec![];
    for (name, model) in [teacher, student] {
        let (logits, feats, d) = model_outputs(model, test, &idx, cfg.batch)?;
        all.push(embed_predictions(
            name,
            &logits,
            model.spec.num_classes,
            Some((&feats, d)),
            &labels,
            idx.clone(),
            cfg,
        )?);
    }
    sections_from(&all, cfg)
}

/// The embeddings section from predictions alone (logits made elsewhere, say): the same DarkSight, t-SNE,
/// KDE, rejection and M_k views, with the fidelity of the logits only (no penultimate features).
pub fn section_from_predictions(
    teacher: (&str, &crate::predictions::Predictions),
    student: (&str, &crate::predictions::Predictions),
    cfg: &EmbedConfig,
) -> anyhow::Result<EmbedSection> {
    let idx = section_indices(teacher.1.len(), cfg.max_points, cfg.seed);
    let labels: Vec<usize> = idx.iter().map(|&i| teacher.1.labels[i]).collect();
    let mut all = vec![];
    for (name, p) in [teacher, student] {
        let k = p.num_classes;
        let logits: Vec<f32> = idx.iter().flat_map(|&i| p.logits[i * k..(i + 1) * k].iter().copied()).collect();
        all.push(embed_predictions(name, &logits, k, None, &labels, idx.clone(), cfg)?);
    }
    sections_from(&all, cfg)
}

/// The section's frames from already computed embeddings (e.g. from [`embed_predictions`]).
pub fn sections_from(all: &[ModelEmbeddings], cfg: &EmbedConfig) -> anyhow::Result<EmbedSection> {
    let frames = |f: &dyn Fn(&ModelEmbeddings) -> anyhow::Result<DataFrame>| -> anyhow::Result<DataFrame> {
        vstack(all.iter().map(f).collect::<anyhow::Result<Vec<_>>>()?)
    };
    let ds = &cfg.darksight;
    let ts = &cfg.tsne;
    Ok(EmbedSection {
        points: frames(&|m| m.points_frame())?,
        summary: frames(&|m| m.summary_frame())?,
        fidelity: frames(&|m| m.fidelity_frame())?,
        rejection: frames(&|m| m.rejection_frame())?,
        outliers: frames(&|m| m.outliers_frame(cfg.outliers))?,
        notes: vec![
            ("points".into(), all.first().map_or(0, |m| m.indices.len()).to_string()),
            ("DarkSight".into(), format!("{} epochs, batch {}, temperature {}", ds.epochs, ds.batch, ds.temperature)),
            ("t-SNE".into(), format!("perplexity {}, {} iterations, {:?}", ts.perplexity, ts.iters, ts.method)),
            ("KDE".into(), format!("{:?} bandwidth, per {:?}", cfg.bandwidth, cfg.kde_scope)),
        ],
    })
}
