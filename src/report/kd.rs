//! The teacher-vs-student report (KD-Explorer as one offline HTML file): model header, superclass
//! polar bars and tables, grouped confusion matrices with superclass highlighting, a filterable image
//! corpus with both models' top-5 (and, with [`KdReport::explanations`], both models' saliency maps),
//! an explanations section (quality metrics, agreement, overlays, UniCAM scores), training curves and a
//! reproducibility appendix.
//!
//! It reads metric frames, predictions, histories, maps and images, never models: the explanation data
//! comes in an [`ExplainSection`], built by [`crate::explain::section`].
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context as _};
use serde::Serialize;
use serde_json::{json, Value};

use crate::data::{Dataset, Hierarchy};
use crate::metrics::{self, Evaluation};
use crate::notebook::{self, Chart};
use crate::train::History;
use polars::prelude::DataFrame;

/// The report template (`templates/kd_report.html`), compiled into the library.
pub const TEMPLATE: &str = include_str!("../../templates/kd_report.html");

/// Default test images per class in the image corpus (100 classes stay under ~15 MB).
pub const DEFAULT_IMAGES_PER_CLASS: usize = 20;

/// Saliency maps of one method for the corpus images: per model, image index → map as base64 of its
/// `h × w` bytes (values 0–255 = the map scaled to [0, 1]); the page colours them with the jet map.
#[derive(Clone, Debug, Default)]
pub struct CorpusMaps {
    pub method: String,
    pub h: usize,
    pub w: usize,
    pub teacher: std::collections::BTreeMap<usize, String>,
    pub student: std::collections::BTreeMap<usize, String>,
}

/// The data of the report's explanations section (frames and images only).
#[derive(Clone, Debug, Default)]
pub struct ExplainSection {
    /// Explanation-quality summary, one row per model (and method).
    pub quality: Option<DataFrame>,
    /// Teacher-vs-student agreement per class.
    pub agreement: Option<DataFrame>,
    /// UniCAM scores (FSS, RS).
    pub unicam: Option<DataFrame>,
    /// Captioned example images (overlays).
    pub examples: Vec<(String, image::RgbImage)>,
    /// Maps for the corpus pop-up, one entry per method.
    pub corpus_maps: Vec<CorpusMaps>,
    /// Settings shown under the section (method, samples, seed …).
    pub notes: Vec<(String, String)>,
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

/// Builder of a teacher-vs-student report.
#[derive(Clone, Debug)]
pub struct KdReport {
    pub title: String,
    pub teacher: Evaluation,
    pub student: Evaluation,
    /// Further models shown in the header table (e.g. the student trained alone).
    pub others: Vec<Evaluation>,
    pub method: String,
    pub hyper: Vec<(String, String)>,
    pub histories: Vec<(String, History)>,
    pub images_per_class: usize,
    /// Free-form reproducibility facts (configuration, seeds, command …), merged into the appendix.
    pub appendix: serde_json::Map<String, Value>,
    pub explain: Option<ExplainSection>,
    pub embed: Option<EmbedSection>,
    /// Further blocks (tables, charts, text) in the "Experiments" section, e.g. a grid's comparison.
    pub extra: Vec<ExtraBlock>,
}

/// A block of the report's "Experiments" section: a heading, a legend, preformatted text (LaTeX …)
/// and rendered HTML (a table or a chart).
#[derive(Clone, Debug, Default, Serialize)]
pub struct ExtraBlock {
    pub heading: String,
    pub text: String,
    pub pre: String,
    pub html: String,
}

impl KdReport {
    /// A report comparing `teacher` and `student`, both evaluated on the same test images.
    pub fn new(teacher: Evaluation, student: Evaluation) -> Self {
        Self {
            title: format!("{} vs {}", teacher.name, student.name),
            teacher,
            student,
            others: vec![],
            method: String::new(),
            hyper: vec![],
            histories: vec![],
            images_per_class: DEFAULT_IMAGES_PER_CLASS,
            appendix: Default::default(),
            explain: None,
            embed: None,
            extra: vec![],
        }
    }

    /// A table in the "Experiments" section, with a legend.
    pub fn table(mut self, heading: &str, legend: &str, df: &DataFrame) -> Self {
        let html = notebook::table_with(df, usize::MAX).html;
        self.extra.push(ExtraBlock { heading: heading.into(), text: legend.into(), html, ..Default::default() });
        self
    }

    /// A chart in the "Experiments" section.
    pub fn chart(mut self, heading: &str, plot: &plotly::Plot) -> Self {
        let html = notebook::chart(plot).html();
        self.extra.push(ExtraBlock { heading: heading.into(), html, ..Default::default() });
        self
    }

    /// Preformatted text (e.g. a LaTeX table) in the "Experiments" section.
    pub fn preformatted(mut self, heading: &str, text: &str) -> Self {
        self.extra.push(ExtraBlock { heading: heading.into(), pre: text.into(), ..Default::default() });
        self
    }

    pub fn title(mut self, t: &str) -> Self {
        self.title = t.into();
        self
    }

    /// Another model for the header table (same test images).
    pub fn other(mut self, ev: Evaluation) -> Self {
        self.others.push(ev);
        self
    }

    /// The distillation method and its hyper-parameters.
    pub fn method(mut self, name: &str, hyper: &[(&str, String)]) -> Self {
        self.method = name.into();
        self.hyper = hyper.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        self
    }

    /// A training history for the curves (one line per model).
    pub fn history(mut self, name: &str, h: &History) -> Self {
        self.histories.push((name.into(), h.clone()));
        self
    }

    pub fn images_per_class(mut self, n: usize) -> Self {
        self.images_per_class = n;
        self
    }

    /// The explanations section and the corpus pop-up maps (see [`crate::explain::section`]).
    pub fn explanations(mut self, section: ExplainSection) -> Self {
        self.explain = Some(section);
        self
    }

    /// The embeddings section: DarkSight and t-SNE scatter plots of both models side by side, with
    /// image thumbnails on hover, outliers, rejection and `M_k` curves (see [`crate::embed::section`]).
    pub fn embeddings(mut self, section: EmbedSection) -> Self {
        self.embed = Some(section);
        self
    }

    /// Test-set indices of the images the corpus shows (the first `images_per_class` of each class),
    /// for computing their saliency maps.
    pub fn corpus_indices(&self, test: &Dataset) -> Vec<usize> {
        corpus_indices(test, self.images_per_class)
    }

    /// A reproducibility fact (any serialisable value: a config struct, a seed, a command line …).
    pub fn fact(mut self, key: &str, value: impl Serialize) -> Self {
        self.appendix.insert(key.into(), serde_json::to_value(value).unwrap_or(Value::Null));
        self
    }

    /// Renders the page; `test` is the split both models were evaluated on (its images feed the corpus).
    pub fn render(&self, test: &Dataset) -> anyhow::Result<String> {
        let (t, s) = (&self.teacher, &self.student);
        ensure!(
            t.predictions.labels == test.labels && s.predictions.labels == test.labels,
            "the teacher and student predictions must be on the given test split ({} images)",
            test.len()
        );
        let h = t.hierarchy.clone().unwrap_or_else(|| single_group(t.num_classes()));
        let (t, s) = (with_hierarchy(t, &h), with_hierarchy(s, &h));

        let mut overall = metrics::overall(&t)?;
        overall.vstack_mut(&metrics::overall(&s)?)?;
        for o in &self.others {
            overall.vstack_mut(&metrics::overall(&with_hierarchy(o, &h))?)?;
        }
        let super_cmp = metrics::compare_superclasses(&t, &s)?;
        let class_cmp = metrics::compare_classes(&t, &s)?;
        let (ts, ss) = (metrics::per_superclass(&t)?, metrics::per_superclass(&s)?);

        let polar: Vec<String> = [("precision", "Precision"), ("recall", "Recall (accuracy)"), ("f1", "F1")]
            .iter()
            .map(|(col, title)| -> anyhow::Result<String> {
                let a: Vec<f64> = crate::notebook::col(&ts, col)?.f64()?.into_no_null_iter().collect();
                let b: Vec<f64> = crate::notebook::col(&ss, col)?.f64()?.into_no_null_iter().collect();
                Ok(polar_chart(&format!("kd-polar-{col}"), title, &h.super_names, &a, &b, &t.name, &s.name).html())
            })
            .collect::<anyhow::Result<_>>()?;

        let order: Vec<usize> = (0..h.num_super()).flat_map(|g| h.members(g)).collect();
        let rates = |ev: &Evaluation| -> Vec<Vec<f64>> {
            let c = metrics::confusion_matrix(ev);
            order
                .iter()
                .map(|&i| {
                    let n: u64 = (0..c.n).map(|j| c.get(i, j)).sum();
                    order.iter().map(|&j| if n == 0 { 0.0 } else { c.get(i, j) as f64 / n as f64 }).collect()
                })
                .collect()
        };
        let (zt, zs) = (rates(&t), rates(&s));
        let names: Vec<&str> = order.iter().map(|&k| t.class_names[k].as_str()).collect();
        let bounds: Vec<usize> = (0..h.num_super())
            .scan(0, |acc, g| {
                *acc += h.members(g).len();
                Some(*acc)
            })
            .collect();
        let cm_t = confusion_chart("kd-cm-teacher", &format!("teacher: {}", t.name), &names, &zt, &bounds);
        let cm_s = confusion_chart("kd-cm-student", &format!("student: {}", s.name), &names, &zs, &bounds);

        let corpus = corpus(test, &t, &s, self.images_per_class);
        let maps: Option<Value> = self.explain.as_ref().filter(|e| !e.corpus_maps.is_empty()).map(|e| {
            json!({
                "methods": e.corpus_maps.iter().map(|m| m.method.clone()).collect::<Vec<_>>(),
                "h": e.corpus_maps[0].h, "w": e.corpus_maps[0].w,
                "t": e.corpus_maps.iter().map(|m| (m.method.clone(), json!(m.teacher))).collect::<serde_json::Map<_, _>>(),
                "s": e.corpus_maps.iter().map(|m| (m.method.clone(), json!(m.student))).collect::<serde_json::Map<_, _>>(),
            })
        });
        let explain_html = self.explain.as_ref().map(explain_html).transpose()?;
        let corpus_set: std::collections::BTreeSet<usize> =
            corpus_indices(test, self.images_per_class).into_iter().collect();
        let embed = self.embed.as_ref().map(|e| embed_parts(e, test, &t, &s, &corpus_set)).transpose()?;
        let (embed_json, embed_html) = match embed {
            Some((j, h)) => (Some(j), Some(h)),
            None => (None, None),
        };
        let data = json!({
            "teacher": t.name, "student": s.name,
            "classes": t.class_names, "supers": h.super_names, "class_super": h.class_to_super,
            "order": order,
            "cm": { "kd-cm-teacher": zt, "kd-cm-student": zs },
            "corpus": corpus,
            "maps": maps,
            "embed": embed_json,
        });

        let curves_html = if self.histories.is_empty() {
            "<p class=\"legend\">No training histories were given.</p>".to_string()
        } else {
            notebook::chart(&super::accuracy_curves(self.histories.iter().map(|(n, h)| (n.as_str(), h)))).html()
        };

        let mut appendix = serde_json::Map::new();
        appendix.insert("kdscope_version".into(), env!("CARGO_PKG_VERSION").into());
        appendix.insert("git_revision".into(), git_revision().map(Value::from).unwrap_or(Value::Null));
        appendix.insert(
            "dataset".into(),
            json!({ "name": test.name, "images": test.len(), "classes": test.num_classes(),
                    "provenance": test.provenance }),
        );
        appendix.insert(
            "training_seconds".into(),
            Value::Object(self.histories.iter().map(|(n, h)| (n.clone(), json!(h.total_seconds()))).collect()),
        );
        appendix.insert("command".into(), std::env::args().collect::<Vec<_>>().join(" ").into());
        for (k, v) in &self.appendix {
            appendix.insert(k.clone(), v.clone());
        }

        let mut tera = tera::Tera::new();
        tera.add_raw_template("kd_report.html", TEMPLATE).context("parsing templates/kd_report.html")?;
        let mut ctx = tera::Context::new();
        ctx.insert("title", &self.title);
        ctx.insert("version", env!("CARGO_PKG_VERSION"));
        ctx.insert("dataset", &test.name);
        ctx.insert("images", &test.len());
        ctx.insert("teacher", &format!("{} ({}, {} parameters)", t.name, t.arch, t.params));
        ctx.insert("student", &format!("{} ({}, {} parameters)", s.name, s.arch, s.params));
        ctx.insert("method", &self.method);
        ctx.insert("hyper", &self.hyper);
        ctx.insert("plotly_js", &notebook::plotly_js());
        ctx.insert("overall_html", &notebook::table_with(&overall, usize::MAX).html);
        ctx.insert("polar_charts", &polar);
        ctx.insert("super_table", &notebook::table_with(&super_cmp, usize::MAX).html);
        ctx.insert("class_table", &notebook::table_with(&class_cmp, usize::MAX).html);
        ctx.insert("cm_teacher", &cm_t.html());
        ctx.insert("cm_student", &cm_s.html());
        ctx.insert("per_class", &self.images_per_class);
        ctx.insert("curves", &curves_html);
        ctx.insert("explain_html", &explain_html);
        ctx.insert("embed_html", &embed_html);
        ctx.insert("extra", &self.extra);
        ctx.insert("appendix", &serde_json::to_string_pretty(&appendix)?);
        ctx.insert("data_json", &notebook::script_json(&data.to_string()));
        tera.render("kd_report.html", &ctx).context("rendering the KD report")
    }

    /// Renders and writes the report atomically (creating parent folders); returns the path.
    pub fn write(&self, test: &Dataset, path: impl AsRef<Path>) -> anyhow::Result<PathBuf> {
        let path = path.as_ref();
        crate::io::write_atomic(path, self.render(test)?.as_bytes())?;
        Ok(path.to_path_buf())
    }
}

/// The superclass circular bar chart of one metric (`precision`, `recall`, `accuracy` or `f1`):
/// teacher on the outer ring, student on the inner ring (for notebooks; the report shows three).
pub fn superclass_polar(teacher: &Evaluation, student: &Evaluation, metric: &str) -> anyhow::Result<Chart> {
    let h = teacher.hierarchy.clone().unwrap_or_else(|| single_group(teacher.num_classes()));
    let (t, s) = (with_hierarchy(teacher, &h), with_hierarchy(student, &h));
    let (ts, ss) = (metrics::per_superclass(&t)?, metrics::per_superclass(&s)?);
    let a: Vec<f64> = crate::notebook::col(&ts, metric)?.f64()?.into_no_null_iter().collect();
    let b: Vec<f64> = crate::notebook::col(&ss, metric)?.f64()?.into_no_null_iter().collect();
    Ok(polar_chart(&notebook::unique_id("kd-polar"), metric, &h.super_names, &a, &b, &t.name, &s.name))
}

fn single_group(n: usize) -> Hierarchy {
    Hierarchy { super_names: vec!["all classes".into()], class_to_super: vec![0; n] }
}

fn with_hierarchy(ev: &Evaluation, h: &Hierarchy) -> Evaluation {
    Evaluation { hierarchy: Some(h.clone()), ..ev.clone() }
}

/// The commit of the working directory's git checkout, if any (with `+dirty` for local changes).
pub fn git_revision() -> Option<String> {
    let out = std::process::Command::new("git").args(["rev-parse", "HEAD"]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let rev = String::from_utf8(out.stdout).ok()?.trim().to_string();
    let dirty = std::process::Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    Some(if dirty { format!("{rev}+dirty") } else { rev })
}

fn polar_chart(
    id: &str,
    title: &str,
    supers: &[String],
    teacher: &[f64],
    student: &[f64],
    tn: &str,
    sn: &str,
) -> Chart {
    const OUTER: f64 = 1.15;
    let fig = json!({
        "data": [
            { "type": "barpolar", "name": format!("teacher: {tn} (outer)"), "theta": supers, "r": teacher,
              "base": vec![OUTER; teacher.len()], "marker": { "color": "#4c78a8" },
              "customdata": teacher, "hovertemplate": "%{theta}<br>teacher %{customdata:.3f}<extra></extra>" },
            { "type": "barpolar", "name": format!("student: {sn} (inner)"), "theta": supers, "r": student,
              "marker": { "color": "#f58518" },
              "customdata": student, "hovertemplate": "%{theta}<br>student %{customdata:.3f}<extra></extra>" },
        ],
        "layout": {
            "title": { "text": title },
            "polar": { "radialaxis": { "range": [0, OUTER + 1.0], "showticklabels": false, "ticks": "" },
                       "angularaxis": { "direction": "clockwise" } },
            "legend": { "orientation": "h" },
            "margin": { "l": 30, "r": 30, "t": 50, "b": 20 },
        },
    });
    Chart { id: id.into(), json: fig.to_string(), height_px: 420 }
}

fn confusion_chart(id: &str, title: &str, names: &[&str], z: &[Vec<f64>], bounds: &[usize]) -> Chart {
    let n = names.len() as f64;
    let shapes: Vec<Value> = bounds[..bounds.len().saturating_sub(1)]
        .iter()
        .flat_map(|&b| {
            let p = b as f64 - 0.5;
            let line = json!({ "color": "#222", "width": 1 });
            [
                json!({ "type": "line", "x0": p, "x1": p, "y0": -0.5, "y1": n - 0.5, "line": line }),
                json!({ "type": "line", "y0": p, "y1": p, "x0": -0.5, "x1": n - 0.5, "line": line }),
            ]
        })
        .collect();
    let idx: Vec<usize> = (0..names.len()).collect();
    let grey = json!([[0, "#fafafa"], [1, "#6b6b6b"]]);
    let blue = json!([[0, "#f7fbff"], [0.1, "#c6dbef"], [0.4, "#4292c6"], [1, "#08306b"]]);
    let trace = |colorscale: &Value, showscale: bool| {
        json!({ "type": "heatmap", "z": z, "x": idx, "y": idx, "zmin": 0, "zmax": 1, "colorscale": colorscale,
                "showscale": showscale, "customdata": names,
                "hovertemplate": "true %{y}, predicted %{x}: %{z:.3f}<extra></extra>" })
    };
    let ticks = json!({ "tickmode": "array", "tickvals": idx, "ticktext": names, "tickfont": { "size": 8 } });
    let mut xaxis = ticks.clone();
    xaxis["title"] = json!("predicted");
    xaxis["tickangle"] = json!(-60);
    let mut yaxis = ticks;
    yaxis["title"] = json!("true");
    yaxis["autorange"] = json!("reversed");
    let fig = json!({
        "data": [trace(&grey, false), trace(&blue, true)],
        "layout": { "title": { "text": title }, "xaxis": xaxis, "yaxis": yaxis, "shapes": shapes,
                    "margin": { "l": 90, "r": 10, "t": 40, "b": 90 } },
    });
    Chart { id: id.into(), json: fig.to_string(), height_px: 560 }
}

fn top5(probs: &[f32]) -> Vec<(usize, f32)> {
    let mut idx: Vec<usize> = (0..probs.len()).collect();
    idx.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    idx.into_iter().take(5).map(|k| (k, (probs[k] * 10000.0).round() / 10000.0)).collect()
}

/// Test-set indices of the first `per_class` images of each class, in test-set order.
pub fn corpus_indices(test: &Dataset, per_class: usize) -> Vec<usize> {
    let mut taken = vec![0usize; test.num_classes()];
    let mut out = vec![];
    for (i, &c) in test.labels.iter().enumerate() {
        if taken[c] < per_class {
            taken[c] += 1;
            out.push(i);
        }
    }
    out
}

/// A section's settings as one legend line (`key: value · …`), or nothing without notes.
fn notes_html(notes: &[(String, String)]) -> String {
    if notes.is_empty() {
        return String::new();
    }
    let items: Vec<String> =
        notes.iter().map(|(k, v)| format!("{}: {}", notebook::escape(k), notebook::escape(v))).collect();
    format!("<p class=\"legend\">{}</p>", items.join(" · "))
}

/// The explanations section's HTML: notes, frames as tables, example images.
fn explain_html(e: &ExplainSection) -> anyhow::Result<String> {
    let mut h = String::new();
    h.push_str(&notes_html(&e.notes));
    for (title, df) in [
        ("Explanation quality (ADCC metrics)", &e.quality),
        ("UniCAM: distilled and residual knowledge", &e.unicam),
        ("Teacher-student map agreement per class", &e.agreement),
    ] {
        if let Some(df) = df {
            h.push_str(&format!("<h3>{title}</h3>"));
            h.push_str(&notebook::table_with(df, usize::MAX).html);
        }
    }
    for (caption, img) in &e.examples {
        h.push_str(&format!(
            "<figure class=\"explain-example\">{}<figcaption>{}</figcaption></figure>",
            notebook::image(img).html(),
            notebook::escape(caption)
        ));
    }
    Ok(h)
}

/// The distinct values of a string column, in order of first appearance.
fn distinct(df: &DataFrame, col: &str) -> anyhow::Result<Vec<String>> {
    let mut out: Vec<String> = vec![];
    for v in crate::notebook::col(df, col)?.str()?.iter().map(|v| v.unwrap_or("")) {
        if !out.iter().any(|o| o == v) {
            out.push(v.to_string());
        }
    }
    Ok(out)
}

fn f64s(df: &DataFrame, col: &str) -> anyhow::Result<Vec<f64>> {
    Ok(crate::notebook::col(df, col)?.f64()?.into_no_null_iter().collect())
}

fn u32s(df: &DataFrame, col: &str) -> anyhow::Result<Vec<u32>> {
    Ok(crate::notebook::col(df, col)?.u32()?.into_no_null_iter().collect())
}

fn strs(df: &DataFrame, col: &str) -> anyhow::Result<Vec<String>> {
    Ok(crate::notebook::col(df, col)?.str()?.iter().map(|s| s.unwrap_or("").to_string()).collect())
}

fn line_chart(id: &str, title: &str, xt: &str, yt: &str, lines: Vec<(String, Vec<f64>, Vec<f64>, bool)>) -> Chart {
    let data: Vec<Value> = lines
        .into_iter()
        .map(|(name, x, y, dashed)| {
            json!({ "type": "scatter", "mode": "lines+markers", "name": name, "x": x, "y": y,
                    "marker": { "size": 4 }, "line": { "dash": if dashed { "dash" } else { "solid" } } })
        })
        .collect();
    let fig = json!({
        "data": data,
        "layout": { "title": { "text": title }, "xaxis": { "title": xt }, "yaxis": { "title": yt },
                    "legend": { "orientation": "h", "y": -0.25 }, "margin": { "l": 50, "r": 10, "t": 40, "b": 40 } },
    });
    Chart { id: id.into(), json: fig.to_string(), height_px: 440 }
}

/// Accuracy-vs-data-kept curves of one model from a rejection frame (`model, measure, kept,
/// accuracy`, see [`crate::embed::ModelEmbeddings::rejection_frame`]); KDE measures solid, the model's
/// own confidences dashed.
pub fn rejection_chart(rejection: &DataFrame, model: &str) -> anyhow::Result<Chart> {
    let (rm, rme, rk, ra) = (
        strs(rejection, "model")?,
        strs(rejection, "measure")?,
        f64s(rejection, "kept")?,
        f64s(rejection, "accuracy")?,
    );
    ensure!(rm.iter().any(|m| m == model), "no rejection curves of model {model:?}");
    let lines = distinct(rejection, "measure")?
        .into_iter()
        .map(|me| {
            let rows: Vec<usize> = (0..rm.len()).filter(|&r| rm[r] == model && rme[r] == me).collect();
            let dashed = !me.starts_with("KDE");
            (me, rows.iter().map(|&r| rk[r]).collect(), rows.iter().map(|&r| ra[r]).collect(), dashed)
        })
        .collect();
    Ok(line_chart(
        &notebook::unique_id("kd-reject"),
        &format!("{model}: rejection curves"),
        "fraction of data kept (most confident first)",
        "accuracy",
        lines,
    ))
}

/// `M_k` against `k` for every model and embedding of a fidelity frame (`model, method, k, m_k`);
/// the second model's lines dashed.
pub fn fidelity_chart(fidelity: &DataFrame) -> anyhow::Result<Chart> {
    let (fm, fme, fk, fv) =
        (strs(fidelity, "model")?, strs(fidelity, "method")?, u32s(fidelity, "k")?, f64s(fidelity, "m_k")?);
    let mut lines = vec![];
    for (mi, m) in distinct(fidelity, "model")?.iter().enumerate() {
        for me in distinct(fidelity, "method")? {
            let rows: Vec<usize> = (0..fm.len()).filter(|&r| &fm[r] == m && fme[r] == me).collect();
            if rows.is_empty() {
                continue;
            }
            let (x, y) = (rows.iter().map(|&r| fk[r] as f64).collect(), rows.iter().map(|&r| fv[r]).collect());
            lines.push((format!("{m}: {me}"), x, y, mi % 2 == 1));
        }
    }
    Ok(line_chart(
        &notebook::unique_id("kd-fidelity"),
        "M_k: mean JSD to the k nearest neighbours in 2-D (lower is better)",
        "k",
        "M_k (nats)",
        lines,
    ))
}

/// One embedding of one model from a points frame (see
/// [`crate::embed::ModelEmbeddings::points_frame`]), coloured by predicted class (for notebooks; the
/// report draws its own interactive pair).
pub fn embedding_scatter(
    points: &DataFrame,
    model: &str,
    method: &str,
    class_names: &[String],
) -> anyhow::Result<Chart> {
    let (pm, pme) = (strs(points, "model")?, strs(points, "method")?);
    let (x, y, idx, pred) =
        (f64s(points, "x")?, f64s(points, "y")?, u32s(points, "index")?, u32s(points, "predicted")?);
    let rows: Vec<usize> = (0..pm.len()).filter(|&r| pm[r] == model && pme[r] == method).collect();
    ensure!(!rows.is_empty(), "no points of model {model:?} and method {method:?}");
    let mut traces = vec![];
    for c in rows.iter().map(|&r| pred[r]).collect::<std::collections::BTreeSet<_>>() {
        let rs: Vec<usize> = rows.iter().copied().filter(|&r| pred[r] == c).collect();
        let name = class_names.get(c as usize).cloned().unwrap_or_else(|| c.to_string());
        traces.push(json!({
            "type": "scattergl", "mode": "markers", "name": name, "marker": { "size": 5 },
            "x": rs.iter().map(|&r| x[r]).collect::<Vec<_>>(), "y": rs.iter().map(|&r| y[r]).collect::<Vec<_>>(),
            "text": rs.iter().map(|&r| format!("#{}", idx[r])).collect::<Vec<_>>(),
            "hovertemplate": "%{text} predicted %{fullData.name}<extra></extra>",
        }));
    }
    let fig = json!({
        "data": traces,
        "layout": { "title": { "text": format!("{model}: {method}") },
                    "xaxis": { "showticklabels": false, "zeroline": false },
                    "yaxis": { "showticklabels": false, "zeroline": false, "scaleanchor": "x" },
                    "margin": { "l": 10, "r": 10, "t": 40, "b": 10 } },
    });
    Ok(Chart { id: notebook::unique_id("kd-embed"), json: fig.to_string(), height_px: 560 })
}

/// The embeddings section: the scatter data (JSON for the page script: points per model and
/// embedding, thumbnails of points outside the corpus, both models' top-5) and the server-rendered
/// part (notes, summary table, rejection and `M_k` charts, outlier images).
fn embed_parts(
    e: &EmbedSection,
    test: &Dataset,
    t: &Evaluation,
    s: &Evaluation,
    corpus: &std::collections::BTreeSet<usize>,
) -> anyhow::Result<(Value, String)> {
    let p = &e.points;
    let models = distinct(p, "model")?;
    ensure!(models.len() == 2, "the embeddings section needs exactly two models (teacher, student), found {models:?}");
    let methods = distinct(p, "method")?;
    let (pm, pme) = (strs(p, "model")?, strs(p, "method")?);
    let (x, y, idx, pred, kde) =
        (f64s(p, "x")?, f64s(p, "y")?, u32s(p, "index")?, u32s(p, "predicted")?, f64s(p, "kde_log_density")?);
    let correct: Vec<bool> = crate::notebook::col(p, "correct")?.bool()?.iter().map(|v| v.unwrap_or(false)).collect();
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
    let all_idx: std::collections::BTreeSet<usize> = idx.iter().map(|&i| i as usize).collect();
    ensure!(all_idx.iter().all(|&i| i < test.len()), "an embedded point's index is outside the test split");
    let mut thumbs = serde_json::Map::new();
    let mut tops = serde_json::Map::new();
    for &i in &all_idx {
        if !corpus.contains(&i) {
            thumbs.insert(i.to_string(), json!(notebook::image(&test.rgb_image(i)).base64()));
        }
        tops.insert(
            i.to_string(),
            json!([test.labels[i], top5(&pt[i * k..(i + 1) * k]), top5(&ps[i * k..(i + 1) * k])]),
        );
    }
    let data = json!({ "models": models, "methods": methods, "sets": sets, "thumbs": thumbs, "tops": tops });

    let mut h = String::new();
    h.push_str(&notes_html(&e.notes));
    h.push_str("<h3>Embeddings</h3>");
    h.push_str(&notebook::table_with(&e.summary, usize::MAX).html);
    h.push_str("<h3>Accuracy vs data kept</h3><div class=\"row\">");
    for (mi, m) in models.iter().enumerate() {
        let mut c = rejection_chart(&e.rejection, m)?;
        c.id = format!("kd-reject-{mi}");
        h.push_str(&format!("<div>{}</div>", c.html()));
    }
    h.push_str("</div><h3>Local fidelity</h3>");
    let mut c = fidelity_chart(&e.fidelity)?;
    c.id = "kd-fidelity".into();
    h.push_str(&c.html());
    // Outliers with their images.
    let o = &e.outliers;
    let (om, oi, ol, op, ok) =
        (strs(o, "model")?, u32s(o, "index")?, u32s(o, "label")?, u32s(o, "predicted")?, f64s(o, "kde_log_density")?);
    h.push_str("<h3>Outliers (lowest DarkSight density)</h3>");
    for m in &models {
        h.push_str(&format!("<p class=\"legend\">{}</p><div class=\"outliers\">", notebook::escape(m)));
        for r in (0..om.len()).filter(|&r| &om[r] == m) {
            let i = oi[r] as usize;
            ensure!(i < test.len() && (ol[r] as usize) < k && (op[r] as usize) < k, "outlier row {r} is out of range");
            let caption = format!(
                "#{i} {} → {} (log density {:.2})",
                t.class_names[ol[r] as usize], t.class_names[op[r] as usize], ok[r]
            );
            h.push_str(&format!(
                "<figure class=\"outlier\">{}<figcaption>{}</figcaption></figure>",
                notebook::image_scaled(&test.rgb_image(i), 2).html(),
                notebook::escape(&caption)
            ));
        }
        h.push_str("</div>");
    }
    Ok((data, h))
}

/// The first `per_class` test images of each class, with both models' top-5 and a PNG thumbnail.
fn corpus(test: &Dataset, t: &Evaluation, s: &Evaluation, per_class: usize) -> Vec<Value> {
    let (pt, ps) = (t.predictions.probabilities(), s.predictions.probabilities());
    let k = t.num_classes();
    let mut out = vec![];
    for i in corpus_indices(test, per_class) {
        let c = test.labels[i];
        let png = notebook::image(&test.rgb_image(i)).base64();
        out.push(json!({
            "i": i, "c": c, "png": png,
            "t": top5(&pt[i * k..(i + 1) * k]), "s": top5(&ps[i * k..(i + 1) * k]),
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic::{builtin_dataset, SynthConfig};
    use crate::train::Predictions;
    use rand::{Rng, SeedableRng};

    /// A test split of 40 images with class 0 named like an injection attempt, and two fake models.
    fn fixture() -> (Dataset, Evaluation, Evaluation) {
        let mut test =
            builtin_dataset(&SynthConfig { train_per_class: 1, test_per_class: 2, ..Default::default() }).test;
        test.class_names[0] = "<script>alert(1)</script>".into();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut fake = |name: &str, skill: f32| {
            let logits = test
                .labels
                .iter()
                .flat_map(|&l| {
                    let mut row: Vec<f32> = (0..20).map(|_| rng.gen_range(0.0..1.0)).collect();
                    row[l] += skill;
                    row
                })
                .collect();
            let p = Predictions { num_classes: 20, labels: test.labels.clone(), logits };
            Evaluation::new(name, p, test.class_names.clone(), test.hierarchy.clone())
        };
        let (t, s) = (fake("teacher", 0.9), fake("student", 0.4));
        (test, t, s)
    }

    #[test]
    fn report_has_every_view_and_escapes_labels() {
        let (test, t, s) = fixture();
        let html = KdReport::new(t.clone(), s.clone())
            .method("kd-mse", &[("temperature", "20".into())])
            .fact("seed", 7)
            .render(&test)
            .unwrap();
        for id in ["kd-polar-precision", "kd-polar-recall", "kd-polar-f1", "kd-cm-teacher", "kd-cm-student"] {
            assert!(html.contains(&format!("<div id=\"{id}\"")), "{id}");
        }
        assert_eq!(html.matches("<script>alert(1)").count(), 0, "a class name must never become markup");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "escaped in the tables");
        assert!(html.contains("\\u003cscript\\u003ealert(1)"), "escaped in the JSON data");
        assert_eq!(html.matches("window.Plotly = Plotly").count(), 1);
        let page = html.replace(&notebook::plotly_js(), "");
        assert!(!page.contains("src=\"http") && !page.contains("href=\"http"), "no external resources");
        assert!(html.contains("&quot;seed&quot;: 7") && html.contains("kdscope synthetic fractals-20"), "appendix");
        assert!(html.contains("<dt>temperature</dt><dd>20</dd>"));
        // The corpus holds every test image at 2 per class, 20 at 1 per class.
        let count = |h: &str| h.replace(&notebook::plotly_js(), "").matches("\"png\":").count();
        assert_eq!(count(&html), 40);
        let one = KdReport::new(t.clone(), s.clone()).images_per_class(1).render(&test).unwrap();
        assert_eq!(count(&one), 20);
        // Predictions on other images are refused.
        let mut other = s.clone();
        other.predictions.labels.swap(0, 1);
        assert!(KdReport::new(t, other).render(&test).is_err());
    }

    #[test]
    fn hundred_class_report_stays_under_15_mb() {
        // 100 classes x 30 noise images (noise compresses worst); the default samples 20 per class.
        let (k, per) = (100usize, 30usize);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let labels: Vec<usize> = (0..k * per).map(|i| i % k).collect();
        let pixels: Vec<u8> = (0..labels.len() * 3072).map(|_| rng.gen()).collect();
        let names: Vec<String> = (0..k).map(|c| format!("class-{c}")).collect();
        let h =
            Hierarchy::new((0..20).map(|g| format!("super-{g}")).collect(), (0..k).map(|c| c / 5).collect()).unwrap();
        let test = Dataset::rgb32(
            "noise",
            pixels,
            labels.clone(),
            names.clone(),
            Some(h.clone()),
            crate::data::Normalization::cifar100(),
            vec![],
        );
        let mut fake = |name: &str| {
            let logits = (0..labels.len() * k).map(|_| rng.gen_range(0.0..1.0f32)).collect();
            let p = Predictions { num_classes: k, labels: labels.clone(), logits };
            Evaluation::new(name, p, names.clone(), Some(h.clone()))
        };
        let (t, s) = (fake("t"), fake("s"));
        let html = KdReport::new(t, s).render(&test).unwrap();
        assert!(html.len() < 15_000_000, "{} bytes", html.len());
        assert_eq!(
            html.replace(&notebook::plotly_js(), "").matches("\"png\":").count(),
            100 * DEFAULT_IMAGES_PER_CLASS
        );
    }

    #[test]
    fn top5_is_sorted_and_stable() {
        assert_eq!(top5(&[0.1, 0.3, 0.3, 0.05, 0.2, 0.05]), vec![(1, 0.3), (2, 0.3), (4, 0.2), (0, 0.1), (3, 0.05)]);
    }
}
