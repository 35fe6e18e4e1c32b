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
use crate::notebook;

use super::charts::{confusion_chart, polar_chart};
pub use super::charts::{embedding_scatter, fidelity_chart, rejection_chart, superclass_polar};
use super::sections::embeddings::embed_parts;
pub use super::sections::embeddings::EmbedSection;
use super::sections::explanations::explain_html;
pub use super::sections::explanations::{CorpusMaps, ExplainSection};
use super::sections::images::corpus;
pub use super::sections::images::corpus_indices;
use crate::train::History;
use polars::prelude::DataFrame;

/// The report template (`templates/kd_report.html`), compiled into the library.
pub const TEMPLATE: &str = include_str!("../../templates/kd_report.html");

/// Default test images per class in the image corpus (100 classes stay under ~15 MB).
pub const DEFAULT_IMAGES_PER_CLASS: usize = 20;

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

pub(crate) fn single_group(n: usize) -> Hierarchy {
    Hierarchy { super_names: vec!["all classes".into()], class_to_super: vec![0; n] }
}

pub(crate) fn with_hierarchy(ev: &Evaluation, h: &Hierarchy) -> Evaluation {
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
}
