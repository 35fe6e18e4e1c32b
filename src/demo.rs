//! The demo experiment on the built-in dataset: a ResNet-56 teacher, a ResNet-20 student trained
//! alone and a ResNet-20 student distilled from the teacher (Hinton KD), evaluated side by side; the
//! report adds explanations and DarkSight/t-SNE embeddings.
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::data::synthetic::{builtin_dataset, SynthConfig};
use crate::distill::{self, Distiller};
use crate::experiment::evaluate_model;
use crate::models::{Model, ModelSpec};
use crate::report::KdReport;
use crate::train::{checkpoint, evaluate, fit, History, RunOptions, TrainConfig};

/// Settings of the demo.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DemoConfig {
    pub data: SynthConfig,
    pub teacher: String,
    pub student: String,
    pub teacher_epochs: usize,
    pub student_epochs: usize,
    pub train: TrainConfig,
    pub method: String,
    pub out_dir: PathBuf,
    /// The teacher-vs-student HTML report (None: no report).
    pub report: Option<PathBuf>,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            data: SynthConfig::default(),
            teacher: "resnet56".into(),
            student: "resnet20".into(),
            teacher_epochs: 12,
            student_epochs: 5,
            train: TrainConfig::short_cosine(),
            method: "kd-mse".into(),
            out_dir: PathBuf::from("runs/demo"),
            report: Some(PathBuf::from("reports/demo.html")),
        }
    }
}

/// One trained model of the demo.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DemoRow {
    pub role: String,
    pub arch: String,
    pub method: String,
    pub params: usize,
    pub test_acc: f64,
    pub top5_acc: f64,
    pub train_seconds: f64,
    pub history: History,
}

/// Result of the demo.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DemoResult {
    pub config: DemoConfig,
    pub rows: Vec<DemoRow>,
}

impl DemoResult {
    /// A plain-text table of the rows.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{:<16} {:<10} {:<8} {:>10} {:>9} {:>9} {:>9}\n",
            "role", "model", "method", "params", "top-1 %", "top-5 %", "train s"
        );
        for r in &self.rows {
            s += &format!(
                "{:<16} {:<10} {:<8} {:>10} {:>9.2} {:>9.2} {:>9.1}\n",
                r.role,
                r.arch,
                r.method,
                r.params,
                100.0 * r.test_acc,
                100.0 * r.top5_acc,
                r.train_seconds
            );
        }
        s
    }
}

#[allow(clippy::too_many_arguments)]
fn train_one(
    cfg: &DemoConfig,
    role: &str,
    arch: &str,
    epochs: usize,
    method: &mut dyn Distiller,
    teacher: Option<&Model>,
    data: &crate::data::DataSplit,
    progress: bool,
) -> anyhow::Result<(Model, DemoRow)> {
    let spec = ModelSpec::new(arch, data.train.num_classes())?;
    let mut model = Model::new(spec, cfg.train.seed.wrapping_add(role.len() as u64));
    let tc = TrainConfig { epochs, ..cfg.train.clone() };
    let opts = RunOptions {
        label: format!("{role} {arch}"),
        checkpoint: Some(cfg.out_dir.join(format!("{}.safetensors", role.replace(' ', "_")))),
        resume: false,
        progress,
        stop_after: None,
    };
    let history = fit(&mut model, teacher, method, data, &tc, &opts)?;
    let preds = evaluate(&model, &data.test, 256);
    let row = DemoRow {
        role: role.into(),
        arch: arch.into(),
        method: method.name(),
        params: model.num_params(),
        test_acc: preds.accuracy(),
        top5_acc: preds.top_k_accuracy(5),
        train_seconds: history.total_seconds(),
        history,
    };
    Ok((model, row))
}

/// Runs the demo; writes checkpoints and `summary.json` into `cfg.out_dir` and the report to
/// `cfg.report`.
pub fn run(cfg: &DemoConfig, progress: bool) -> anyhow::Result<DemoResult> {
    let data = builtin_dataset(&cfg.data);
    let mut ce = distill::Vanilla;
    let (teacher, t_row) = train_one(cfg, "teacher", &cfg.teacher, cfg.teacher_epochs, &mut ce, None, &data, progress)?;
    let (alone, s_row) =
        train_one(cfg, "student alone", &cfg.student, cfg.student_epochs, &mut ce, None, &data, progress)?;
    let mut kd = distill::by_name(&cfg.method)?;
    let (kd_student, k_row) =
        train_one(cfg, "student KD", &cfg.student, cfg.student_epochs, kd.as_mut(), Some(&teacher), &data, progress)?;
    let result = DemoResult { config: cfg.clone(), rows: vec![t_row, s_row, k_row] };
    checkpoint::write_atomic(&cfg.out_dir.join("summary.json"), serde_json::to_string_pretty(&result)?.as_bytes())?;
    if let Some(path) = &cfg.report {
        let ev = |name: &str, m: &Model| evaluate_model(name, m, &data.test);
        let hyper: Vec<(String, String)> = match kd.hyper() {
            serde_json::Value::Object(o) => o.into_iter().map(|(k, v)| (k, v.to_string())).collect(),
            other => vec![("hyper".into(), other.to_string())],
        };
        let hyper: Vec<(&str, String)> = hyper.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let mut report = KdReport::new(ev("teacher", &teacher), ev("student KD", &kd_student))
            .title("kdscope demo: teacher vs distilled student")
            .other(ev("student alone", &alone))
            .method(&kd.name(), &hyper)
            .fact("demo_config", cfg)
            .fact("reproduce", "cargo run --release -- demo");
        for r in &result.rows {
            report = report.history(&r.role, &r.history);
        }
        let started = std::time::Instant::now();
        let section = crate::explain::section(
            ("teacher", &teacher),
            ("student KD", &kd_student),
            Some(("student alone", &alone)),
            &data.test,
            &report.corpus_indices(&data.test),
            &crate::explain::SectionConfig::default(),
        )?;
        let report = report.explanations(section).fact("explanations_seconds", started.elapsed().as_secs_f64());
        let started = std::time::Instant::now();
        let mut ecfg = crate::embed::EmbedConfig::default();
        ecfg.darksight.progress = progress;
        ecfg.tsne.progress = progress;
        let embed = crate::embed::section(("teacher", &teacher), ("student KD", &kd_student), &data.test, &ecfg)?;
        let report = report.embeddings(embed).fact("embeddings_seconds", started.elapsed().as_secs_f64());
        report.write(&data.test, path)?;
    }
    Ok(result)
}
