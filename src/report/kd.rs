//! The teacher-vs-student views (KD-Explorer as one offline HTML file): [`KdViews`] takes both
//! models' evaluations on the same test split (and further models, histories, the method, the
//! explanations and embeddings sections) and computes every section's frames, charts and images:
//! models, superclass circular bars and tables, grouped confusion matrices with superclass
//! highlighting, a filterable image corpus with both models' top-5 (and their saliency maps), the
//! explanations and embeddings sections and training curves. [`KdViews::report`] puts them in a
//! [`Report`] with the reproducibility facts; the report itself never sees a model.
use std::collections::BTreeSet;

use anyhow::ensure;

use super::charts::confusion_chart;
pub use super::charts::{embedding_scatter, fidelity_chart, rejection_chart, superclass_polar};
use super::sections::confusion::Confusion;
pub use super::sections::embeddings::EmbedSection;
use super::sections::embeddings::Embeddings;
pub use super::sections::explanations::{CorpusMaps, ExplainSection};
pub use super::sections::images::corpus_indices;
use super::sections::images::{corpus, Images};
use super::sections::models::Models;
use super::sections::superclasses::Superclasses;
use super::sections::teacher_student::Names;
use super::sections::training::Training;
use super::{Report, Section};
use crate::data::{Dataset, Hierarchy};
use crate::metrics::{self, Evaluation};
use crate::notebook;
use crate::train::History;

/// Most test images per class in the image corpus.
pub const DEFAULT_IMAGES_PER_CLASS: usize = 20;

/// Test images per class in the image corpus by default: 20, fewer from 31 classes on so that the
/// corpus holds about 600 images (at least 4 per class). Each corpus image costs the page up to ~10 KB
/// with its saliency maps, so a 100-class report with every section stays under 15 MB.
pub fn default_images_per_class(classes: usize) -> usize {
    (600 / classes.max(1)).clamp(4, DEFAULT_IMAGES_PER_CLASS)
}

/// What a teacher-vs-student report shows, before it is computed.
#[derive(Clone, Debug)]
pub struct KdViews {
    pub teacher: Evaluation,
    pub student: Evaluation,
    /// Further models shown in the models table (e.g. the student trained alone).
    pub others: Vec<Evaluation>,
    pub method: String,
    pub hyper: Vec<(String, String)>,
    pub histories: Vec<(String, History)>,
    pub images_per_class: usize,
    pub explain: Option<ExplainSection>,
    pub embed: Option<EmbedSection>,
}

impl KdViews {
    /// The views of `teacher` and `student`, both evaluated on the same test images.
    pub fn new(teacher: Evaluation, student: Evaluation) -> Self {
        let per_class = default_images_per_class(teacher.num_classes());
        Self {
            teacher,
            student,
            others: vec![],
            method: String::new(),
            hyper: vec![],
            histories: vec![],
            images_per_class: per_class,
            explain: None,
            embed: None,
        }
    }

    /// Another model for the models table (same test images).
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

    /// Computes every section from the evaluations; `test` is the split both models were evaluated on
    /// (its images feed the corpus).
    pub fn sections(&self, test: &Dataset) -> anyhow::Result<Vec<Box<dyn Section>>> {
        let (t, s) = (&self.teacher, &self.student);
        ensure!(
            t.predictions.labels == test.labels && s.predictions.labels == test.labels,
            "the teacher and student predictions must be on the given test split ({} images)",
            test.len()
        );
        let h = t.hierarchy.clone().unwrap_or_else(|| single_group(t.num_classes()));
        let (t, s) = (with_hierarchy(t, &h), with_hierarchy(s, &h));
        let mut out: Vec<Box<dyn Section>> = vec![Box::new(Names {
            teacher: t.name.clone(),
            student: s.name.clone(),
            classes: t.class_names.clone(),
            supers: h.super_names.clone(),
            class_super: h.class_to_super.clone(),
        })];

        let mut overall = metrics::overall(&t)?;
        overall.vstack_mut(&metrics::overall(&s)?)?;
        for o in &self.others {
            overall.vstack_mut(&metrics::overall(&with_hierarchy(o, &h))?)?;
        }
        out.push(Box::new(Models {
            overall,
            teacher: format!("{} ({}, {} parameters)", t.name, t.arch, t.params),
            student: format!("{} ({}, {} parameters)", s.name, s.arch, s.params),
            method: self.method.clone(),
            hyper: self.hyper.clone(),
        }));

        out.push(Box::new(Superclasses::new(&t, &s, &h)?));

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
        out.push(Box::new(Confusion {
            teacher: confusion_chart(
                "kd-cm-teacher",
                &format!("teacher: {}", t.name),
                &names,
                &zt,
                &bounds,
                &h.super_names,
            ),
            student: confusion_chart(
                "kd-cm-student",
                &format!("student: {}", s.name),
                &names,
                &zs,
                &bounds,
                &h.super_names,
            ),
            order,
            rates: (zt, zs),
        }));

        if test.has_images() {
            out.push(Box::new(Images {
                corpus: corpus(test, &t, &s, self.images_per_class),
                per_class: self.images_per_class,
            }));
        }
        if let Some(e) = &self.explain {
            out.push(Box::new(e.clone()));
        }
        if let Some(e) = &self.embed {
            let shown: BTreeSet<usize> =
                if test.has_images() { self.corpus_indices(test).into_iter().collect() } else { BTreeSet::new() };
            out.push(Box::new(Embeddings::new(e, test, &t, &s, &shown)?));
        }
        let curves = (!self.histories.is_empty())
            .then(|| notebook::chart(&super::accuracy_curves(self.histories.iter().map(|(n, h)| (n.as_str(), h)))));
        out.push(Box::new(Training { curves }));
        Ok(out)
    }

    /// The report of these views: titled `teacher vs student`, with the test split, the training times
    /// and where the report was made (git revision, command line) as reproducibility facts.
    pub fn report(&self, test: &Dataset) -> anyhow::Result<Report> {
        Ok(Report::new(&format!("{} vs {}", self.teacher.name, self.student.name))
            .subtitle(&format!("{} · {} test images", test.name, test.len()))
            .sections(self.sections(test)?)
            .fact(
                "dataset",
                serde_json::json!({ "name": test.name, "images": test.len(), "classes": test.num_classes(),
                                    "provenance": test.provenance }),
            )
            .fact(
                "training_seconds",
                self.histories
                    .iter()
                    .map(|(n, h)| (n.clone(), h.total_seconds()))
                    .collect::<std::collections::BTreeMap<_, _>>(),
            )
            .fact("git_revision", crate::io::git_revision())
            .fact("command", std::env::args().collect::<Vec<_>>().join(" ")))
    }
}

pub(crate) fn single_group(n: usize) -> Hierarchy {
    Hierarchy { super_names: vec!["all classes".into()], class_to_super: vec![0; n] }
}

pub(crate) fn with_hierarchy(ev: &Evaluation, h: &Hierarchy) -> Evaluation {
    Evaluation { hierarchy: Some(h.clone()), ..ev.clone() }
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
        let html = KdViews::new(t.clone(), s.clone())
            .method("kd-mse", &[("temperature", "20".into())])
            .report(&test)
            .unwrap()
            .fact("seed", 7)
            .render()
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
        let one = KdViews::new(t.clone(), s.clone()).images_per_class(1).report(&test).unwrap().render().unwrap();
        assert_eq!(count(&one), 20);
        // Predictions on other images are refused.
        let mut other = s.clone();
        other.predictions.labels.swap(0, 1);
        assert!(KdViews::new(t, other).report(&test).is_err());
    }

    #[test]
    fn hundred_class_report_stays_under_15_mb() {
        // 100 classes x 30 noise images (noise compresses worst) in 20 superclasses.
        let k = 100usize;
        let test = crate::data::synthetic::noise_split(k, 30, 20, 9);
        let (labels, names, h) = (test.labels.clone(), test.class_names.clone(), test.hierarchy.clone().unwrap());
        assert_eq!((h.class_to_super[4], h.class_to_super[5], h.class_to_super[99], labels[101]), (0, 1, 19, 1));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let mut fake = |name: &str| {
            let logits = (0..labels.len() * k).map(|_| rng.gen_range(0.0..1.0f32)).collect();
            let p = Predictions { num_classes: k, labels: labels.clone(), logits };
            Evaluation::new(name, p, names.clone(), Some(h.clone()))
        };
        let (t, s) = (fake("t"), fake("s"));
        let html = KdViews::new(t, s).report(&test).unwrap().render().unwrap();
        assert!(html.len() < 15_000_000, "{} bytes", html.len());
        assert_eq!(
            html.replace(&notebook::plotly_js(), "").matches("\"png\":").count(),
            100 * default_images_per_class(100)
        );
    }
}
