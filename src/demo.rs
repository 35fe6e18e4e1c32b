//! The demo experiment on the built-in dataset: a ResNet-56 teacher, a ResNet-20 student trained
//! alone and a ResNet-20 student distilled from the teacher (Hinton KD), evaluated side by side; the
//! report adds explanations and DarkSight/t-SNE embeddings.
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::data::synthetic::{builtin_dataset, SynthConfig};
use crate::data::DataSplit;
use crate::run::pipeline::{hyper_rows, write_kd_report, ReportPlan, Shown};
use crate::run::{Recipe, Run, RunRecord};
use crate::train::TrainConfig;

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

/// Result of the demo: one record per trained model (teacher, student alone, student KD).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DemoResult {
    pub config: DemoConfig,
    pub rows: Vec<RunRecord>,
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
                r.name,
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

/// Trains one model of the demo: `role` names the run and its checkpoint and offsets the
/// initialisation seed.
fn train_one(
    cfg: &DemoConfig,
    role: &str,
    (arch, epochs, method): (&str, usize, &str),
    teacher: Option<&Run>,
    data: &DataSplit,
    progress: bool,
) -> anyhow::Result<Run> {
    Recipe::new(arch)
        .name(role)
        .method(method)
        .config(TrainConfig { epochs, ..cfg.train.clone() })
        .init_seed(cfg.train.seed.wrapping_add(role.len() as u64))
        .checkpoint(cfg.out_dir.join(format!("{}.safetensors", role.replace(' ', "_"))))
        .progress(progress)
        .run(data, teacher.map(|t| &t.model))
}

/// Runs the demo; writes checkpoints and `summary.json` into `cfg.out_dir` and the report to
/// `cfg.report`.
pub fn run(cfg: &DemoConfig, progress: bool) -> anyhow::Result<DemoResult> {
    let data = builtin_dataset(&cfg.data);
    let teacher = train_one(cfg, "teacher", (&cfg.teacher, cfg.teacher_epochs, "ce"), None, &data, progress)?;
    let student = (cfg.student.as_str(), cfg.student_epochs);
    let alone = train_one(cfg, "student alone", (student.0, student.1, "ce"), None, &data, progress)?;
    let kd = train_one(cfg, "student KD", (student.0, student.1, &cfg.method), Some(&teacher), &data, progress)?;
    let result = DemoResult { config: cfg.clone(), rows: vec![teacher.record(), alone.record(), kd.record()] };
    crate::io::write_json(&cfg.out_dir.join("summary.json"), &result)?;
    if let Some(path) = &cfg.report {
        let mut ecfg = crate::embed::EmbedConfig::default();
        ecfg.darksight.progress = progress;
        ecfg.tsne.progress = progress;
        let plan = ReportPlan {
            title: Some("kdscope demo: teacher vs distilled student".into()),
            method: kd.method.clone(),
            hyper: hyper_rows(&kd.hyper),
            histories: result.rows.iter().map(|r| (r.name.clone(), r.history.clone())).collect(),
            explain: Some(crate::explain::SectionConfig::default()),
            embed: Some(ecfg),
            facts: vec![
                ("demo_config".into(), serde_json::to_value(cfg)?),
                ("reproduce".into(), "cargo run --release -- demo".into()),
            ],
            ..Default::default()
        };
        write_kd_report(&shown(&teacher), &shown(&kd), &[shown(&alone)], &data.test, &plan, path)?;
    }
    Ok(result)
}

fn shown(r: &Run) -> Shown<'_> {
    Shown::new(&r.name, &r.model)
}
