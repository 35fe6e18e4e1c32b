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
                thumbs.insert(i.to_string(), json!(notebook::image(&test.rgb_image(i)).base64()));
            }
            tops.insert(
                i.to_string(),
                json!([test.labels[i], top5(&pt[i * k..(i + 1) * k]), top5(&ps[i * k..(i + 1) * k])]),
            );
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
            summary: notebook::table_with(&e.summary, usize::MAX).html,
            rejection,
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
        ctx.insert("fidelity", &self.fidelity);
        ctx.insert("outliers", &self.outliers);
        page.partial("embeddings.html", self.anchor(), ctx)
    }
}
