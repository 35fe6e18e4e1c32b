//! The embeddings section: DarkSight and t-SNE scatter data for the page script, the summary table,
//! rejection and local-fidelity charts and the outlier images (frames computed beforehand by
//! [`crate::embed::section`]).
use std::collections::BTreeSet;

use anyhow::ensure;
use polars::prelude::DataFrame;
use serde_json::{json, Value};

use super::images::top5;
use crate::data::Dataset;
use crate::metrics::Evaluation;
use crate::notebook;
use crate::report::charts::{distinct, f64s, fidelity_chart, rejection_chart, strs, u32s};
use crate::report::{Page, Section};

/// The hover thumbnail of an embedded image outside the corpus: a JPEG at quality 85, about half the
/// PNG's bytes at 32×32 (the corpus keeps lossless PNGs).
fn jpeg_base64(img: &image::RgbImage) -> anyhow::Result<String> {
    use base64::Engine as _;
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 85).encode_image(img)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// The data of the report's embeddings section (frames only), built by [`crate::embed::section`].
#[derive(Clone, Debug)]
pub struct EmbedSection {
    /// Every point of every embedding (`model, method, index, x, y, label, predicted, correct,
    /// kde_log_density, …`).
    pub points: DataFrame,
    /// One row per model and embedding (objective, agreement, `M_k`, seconds).
    pub summary: DataFrame,
    /// `model, method, k, m_k`.
    pub fidelity: DataFrame,
    /// `model, measure, kept, accuracy`.
    pub rejection: DataFrame,
    /// Lowest-density DarkSight points per model (`model, index, label, predicted, …`).
    pub outliers: DataFrame,
    /// Settings shown under the section.
    pub notes: Vec<(String, String)>,
}

/// The embeddings section as the page shows it: the scatter data for the page script (points per
/// model and embedding, thumbnails of points outside the corpus, both models' top-5) and the rest
/// rendered by its partial (notes, summary table, rejection and `M_k` charts, outlier images).
pub struct Embeddings {
    data: Value,
    notes: Vec<(String, String)>,
    summary: String,
    rejection: Vec<String>,
    /// What the rejection curves show on this data, one sentence per model where KDE misleads.
    rejection_notes: Vec<String>,
    fidelity: String,
    outliers: Vec<Value>,
}

impl Embeddings {
    /// Prepares the section from its frames, the test split (images) and both models' predictions;
    /// `corpus`: the test images the image section already carries (their thumbnails are reused).
    pub fn new(
        e: &EmbedSection,
        test: &Dataset,
        t: &Evaluation,
        s: &Evaluation,
        corpus: &BTreeSet<usize>,
    ) -> anyhow::Result<Self> {
        let p = &e.points;
        let models = distinct(p, "model")?;
        ensure!(
            models.len() == 2,
            "the embeddings section needs exactly two models (teacher, student), found {models:?}"
        );
        let methods = distinct(p, "method")?;
        let (pm, pme) = (strs(p, "model")?, strs(p, "method")?);
        let (x, y, idx, pred, kde) =
            (f64s(p, "x")?, f64s(p, "y")?, u32s(p, "index")?, u32s(p, "predicted")?, f64s(p, "kde_log_density")?);
        let correct: Vec<bool> =
            crate::notebook::col(p, "correct")?.bool()?.iter().map(|v| v.unwrap_or(false)).collect();
        let mut sets = serde_json::Map::new();
        for m in &models {
            for me in &methods {
                let rows: Vec<usize> = (0..pm.len()).filter(|&r| &pm[r] == m && &pme[r] == me).collect();
                let r3 = |v: f64| (v * 1e4).round() / 1e4;
                sets.insert(
                    format!("{m}|{me}"),
                    json!({
                        "x": rows.iter().map(|&r| r3(x[r])).collect::<Vec<_>>(),
                        "y": rows.iter().map(|&r| r3(y[r])).collect::<Vec<_>>(),
                        "i": rows.iter().map(|&r| idx[r]).collect::<Vec<_>>(),
                        "p": rows.iter().map(|&r| pred[r]).collect::<Vec<_>>(),
                        "k": rows.iter().map(|&r| r3(kde[r])).collect::<Vec<_>>(),
                        "c": rows.iter().map(|&r| correct[r] as u8).collect::<Vec<_>>(),
                    }),
                );
            }
        }
        let (pt, ps) = (t.predictions.probabilities(), s.predictions.probabilities());
        let k = t.num_classes();
        let all_idx: BTreeSet<usize> = idx.iter().map(|&i| i as usize).collect();
        ensure!(all_idx.iter().all(|&i| i < test.len()), "an embedded point's index is outside the test split");
        let mut thumbs = serde_json::Map::new();
        let mut tops = serde_json::Map::new();
        for &i in &all_idx {
            if !corpus.contains(&i) && test.has_images() {
                thumbs.insert(i.to_string(), json!(jpeg_base64(&test.rgb_image(i))?));
            }
            tops.insert(
                i.to_string(),
                json!([test.labels[i], top5(&pt[i * k..(i + 1) * k]), top5(&ps[i * k..(i + 1) * k])]),
            );
        }
        let mut rejection_notes = vec![];
        for m in &models {
            let rows: Vec<usize> = (0..pm.len()).filter(|&r| &pm[r] == m && pme[r] == "DarkSight").collect();
            let dens: Vec<f64> = rows.iter().map(|&r| kde[r]).collect();
            let preds: Vec<usize> = rows.iter().map(|&r| pred[r] as usize).collect();
            let ok: Vec<bool> = rows.iter().map(|&r| correct[r]).collect();
            if let Some(n) = kde_reading(&dens, &preds, &ok, &t.class_names) {
                rejection_notes.push(format!("{m}: {n}"));
            }
        }
        let data = json!({ "models": models, "methods": methods, "sets": sets, "thumbs": thumbs, "tops": tops });
        let mut rejection = vec![];
        for (mi, m) in models.iter().enumerate() {
            let mut c = rejection_chart(&e.rejection, m)?;
            c.id = format!("kd-reject-{mi}");
            rejection.push(c.html());
        }
        let mut fidelity = fidelity_chart(&e.fidelity)?;
        fidelity.id = "kd-fidelity".into();
        // Outliers with their images.
        let o = &e.outliers;
        let (om, oi, ol, op, ok) = (
            strs(o, "model")?,
            u32s(o, "index")?,
            u32s(o, "label")?,
            u32s(o, "predicted")?,
            f64s(o, "kde_log_density")?,
        );
        let mut outliers = vec![];
        for m in &models {
            let mut items = vec![];
            for r in (0..om.len()).filter(|&r| &om[r] == m) {
                let i = oi[r] as usize;
                ensure!(
                    i < test.len() && (ol[r] as usize) < k && (op[r] as usize) < k,
                    "outlier row {r} is out of range"
                );
                let caption = format!(
                    "#{i} {} → {} (log density {:.2})",
                    t.class_names[ol[r] as usize], t.class_names[op[r] as usize], ok[r]
                );
                let image = if test.has_images() {
                    notebook::image_scaled(&test.rgb_image(i), 2).html()
                } else {
                    String::new()
                };
                items.push((caption, image));
            }
            outliers.push(json!({ "model": m, "items": items }));
        }
        Ok(Self {
            data,
            notes: e.notes.clone(),
            summary: crate::report::table::html(&e.summary, "embeddings"),
            rejection,
            rejection_notes,
            fidelity: fidelity.html(),
            outliers,
        })
    }
}

impl Section for Embeddings {
    fn anchor(&self) -> &str {
        "embeddings"
    }
    fn render(&self, page: &mut Page) -> anyhow::Result<String> {
        page.charts = true;
        page.data.insert("embed".into(), self.data.clone());
        let mut ctx = tera::Context::new();
        ctx.insert("notes", &self.notes);
        ctx.insert("summary", &self.summary);
        ctx.insert("rejection", &self.rejection);
        ctx.insert("rejection_notes", &self.rejection_notes);
        ctx.insert("fidelity", &self.fidelity);
        ctx.insert("outliers", &self.outliers);
        page.partial("embeddings.html", self.anchor(), ctx)
    }
}

/// Why a KDE rejection curve falls where it should rise, in words, or `None` when it does not: when
/// the densest tenth of the points (log KDE density on the DarkSight plane, per predicted class) is
/// less accurate than all of them, names the densest predicted classes (mean log density) with
/// their accuracy. `density`, `predicted`, `correct` per point.
pub fn kde_reading(density: &[f64], predicted: &[usize], correct: &[bool], class_names: &[String]) -> Option<String> {
    let n = density.len();
    if n < 20 || predicted.len() != n || correct.len() != n {
        return None;
    }
    let rate = |idx: &[usize]| idx.iter().filter(|&&i| correct[i]).count() as f64 / idx.len() as f64;
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| density[b].total_cmp(&density[a]).then(a.cmp(&b)));
    let (top, all) = (rate(&order[..n / 10]), rate(&order));
    if top >= all {
        return None;
    }
    let mut by_class: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for (i, &c) in predicted.iter().enumerate() {
        by_class.entry(c).or_default().push(i);
    }
    let mut classes: Vec<(f64, usize, f64, usize)> = by_class
        .iter()
        .filter(|(_, idx)| idx.len() >= 3)
        .map(|(&c, idx)| (idx.iter().map(|&i| density[i]).sum::<f64>() / idx.len() as f64, c, rate(idx), idx.len()))
        .collect();
    classes.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let name = |c: usize| class_names.get(c).cloned().unwrap_or_else(|| format!("class {c}"));
    let densest: Vec<String> = classes
        .iter()
        .take(3)
        .map(|(_, c, acc, k)| format!("{} ({k} points, {:.0} % correct)", name(*c), 100.0 * acc))
        .collect();
    Some(format!(
        "the densest 10 % of the DarkSight points are {:.1} % correct against {:.1} % for all, so the KDE curve \
         falls as data is rejected. The densest predicted classes are {}. Density measures how typical a point \
         is of its predicted class, not whether the prediction is right: images the model cannot tell apart \
         get near-identical predictions, which DarkSight packs into the tightest clusters. Read max \
         probability or entropy for confidence here.",
        100.0 * top,
        100.0 * all,
        densest.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::kde_reading;

    #[test]
    fn kde_reading_names_dense_wrong_clusters() {
        let names: Vec<String> = ["red", "blue"].iter().map(|s| s.to_string()).collect();
        // 10 tight points of class 0, 2 of them right; 30 spread points of class 1, all right.
        let density: Vec<f64> =
            (0..40).map(|i| if i < 10 { 3.0 - i as f64 * 0.01 } else { -(i as f64) / 10.0 }).collect();
        let predicted: Vec<usize> = (0..40).map(|i| (i >= 10) as usize).collect();
        let correct: Vec<bool> = (0..40).map(|i| !(2..10).contains(&i)).collect();
        let s = kde_reading(&density, &predicted, &correct, &names).unwrap();
        // densest 4 points: indices 0-3, two right: 50.0 %; all: 32 / 40 = 80.0 %
        assert!(s.starts_with("the densest 10 % of the DarkSight points are 50.0 % correct against 80.0 %"), "{s}");
        assert!(s.contains("red (10 points, 20 % correct), blue (30 points, 100 % correct)"), "{s}");
        // the same points with the dense cluster right: nothing to explain
        let all_right = vec![true; 40];
        assert_eq!(kde_reading(&density, &predicted, &all_right, &names), None);
        assert_eq!(kde_reading(&density[..5], &predicted[..5], &correct[..5], &names), None);
    }
}
