//! The teacher-vs-student report pipeline shared by `kdscope demo` and `kdscope report`: evaluate the
//! models on the test split, compute the explanations and embeddings sections (frames and images), and
//! write the report, which itself never sees a model.
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::data::Dataset;
use crate::embed::EmbedConfig;
use crate::explain::SectionConfig;
use crate::models::Model;
use crate::report::KdViews;
use crate::train::History;

/// A model the report shows, by the name it shows.
pub struct Shown<'a> {
    pub name: String,
    pub model: &'a Model,
}

impl<'a> Shown<'a> {
    pub fn new(name: &str, model: &'a Model) -> Self {
        Self { name: name.into(), model }
    }
}

/// What goes into the report besides the models.
#[derive(Clone, Debug, Default)]
pub struct ReportPlan {
    /// Page title (default: "teacher vs student").
    pub title: Option<String>,
    /// The student's distillation method and its hyper-parameters, for the header.
    pub method: String,
    pub hyper: Vec<(String, String)>,
    /// Test images per class in the image corpus (default [`crate::report::kd::default_images_per_class`]).
    pub images_per_class: Option<usize>,
    /// Training histories for the curves, in the order shown.
    pub histories: Vec<(String, History)>,
    /// The explanations section (the first of the other models is the base model: its quality row and
    /// UniCAM's reference).
    pub explain: Option<SectionConfig>,
    /// The embeddings section (DarkSight and t-SNE of the teacher's and the student's test predictions).
    pub embed: Option<EmbedConfig>,
    /// Reproducibility facts for the appendix.
    pub facts: Vec<(String, serde_json::Value)>,
}

/// The hyper-parameters of a method (`Distiller::hyper`) as header rows.
pub fn hyper_rows(hyper: &serde_json::Value) -> Vec<(String, String)> {
    match hyper {
        // Facts as words: strings without their JSON quotes (`MSE`, not `"MSE"`).
        serde_json::Value::Object(o) => {
            o.iter().map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string))).collect()
        }
        other => vec![("hyper".into(), other.to_string())],
    }
}

/// Builds the teacher-vs-student report of `teacher`, `student` and `others` on `test` and writes it to
/// `out`; returns the path.
pub fn write_kd_report(
    teacher: &Shown,
    student: &Shown,
    others: &[Shown],
    test: &Dataset,
    plan: &ReportPlan,
    out: &Path,
) -> anyhow::Result<PathBuf> {
    let ev = |s: &Shown| super::evaluate_model(&s.name, s.model, test);
    let hyper: Vec<(&str, String)> = plan.hyper.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let mut views = KdViews::new(ev(teacher), ev(student)).method(&plan.method, &hyper);
    if let Some(n) = plan.images_per_class {
        views = views.images_per_class(n);
    }
    for o in others {
        views = views.other(ev(o));
    }
    for (name, h) in &plan.histories {
        views = views.history(name, h);
    }
    let mut timings = vec![];
    if let Some(cfg) = &plan.explain {
        let started = Instant::now();
        let base = others.first().map(|o| (o.name.as_str(), o.model));
        let section = crate::explain::section(
            (&teacher.name, teacher.model),
            (&student.name, student.model),
            base,
            test,
            &views.corpus_indices(test),
            cfg,
        )?;
        views = views.explanations(section);
        timings.push(("explanations_seconds", started.elapsed().as_secs_f64()));
    }
    if let Some(cfg) = &plan.embed {
        let started = Instant::now();
        let section = crate::embed::section((&teacher.name, teacher.model), (&student.name, student.model), test, cfg)?;
        views = views.embeddings(section);
        timings.push(("embeddings_seconds", started.elapsed().as_secs_f64()));
    }
    let mut report = views.report(test)?;
    if let Some(t) = &plan.title {
        report = report.title(t);
    }
    for (k, v) in &plan.facts {
        report = report.fact(k, v);
    }
    for (k, v) in timings {
        report = report.fact(k, v);
    }
    report.write(out)
}

#[cfg(test)]
mod tests {
    use super::hyper_rows;
    use crate::distill::{Distiller, HintonKd, KdForm};

    /// Method facts read as words in the report: `MSE`, not `"Mse"`; files that wrote `Mse` still load.
    #[test]
    fn hyper_facts_are_words() {
        let rows = hyper_rows(&HintonKd::kd_lib().hyper());
        assert!(rows.contains(&("form".to_string(), "MSE".to_string())), "{rows:?}");
        assert!(rows.contains(&("temperature".to_string(), "20.0".to_string())), "{rows:?}");
        assert_eq!(serde_json::to_string(&KdForm::Kl).unwrap(), "\"KL\"");
        for (text, form) in [("\"Mse\"", KdForm::Mse), ("\"MSE\"", KdForm::Mse), ("\"Kl\"", KdForm::Kl)] {
            assert_eq!(serde_json::from_str::<KdForm>(text).unwrap(), form);
        }
    }
}
