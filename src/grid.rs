//! Experiment grids: methods × teacher/student pairs (optionally through teacher assistants) × seeds ×
//! hyper-parameter values, from one configuration, resumable, aggregated into polars frames (mean ±
//! std over seeds of the best- and last-epoch test accuracy), a comparison table in the layout of the
//! [Re] ReviewKD study's tables (methods as rows, pairs as columns, teacher accuracy on top) and its
//! LaTeX export.
//!
//! Layout of the output folder (a run interrupted at any point continues where it stopped):
//! `grid.json` (the configuration), `teachers/<arch>/` and `runs/<pair>/<method>/seed<k>/`, each with
//! `<arch>.safetensors` (the checkpoint, written after every epoch with its training state),
//! `history.json`, `predictions.safetensors` (test logits and labels) and `result.json` once done.
//!
//! ```no_run
//! use kdscope::data::synthetic::{builtin_dataset, SynthConfig};
//! use kdscope::grid::{Grid, Pair};
//! use kdscope::train::TrainConfig;
//!
//! let data = builtin_dataset(&SynthConfig::default());
//! let train = TrainConfig { epochs: 5, ..TrainConfig::short_cosine() };
//! let grid = Grid::new("ablation", vec![Pair::new("resnet20", "resnet8")], &["ce", "kd", "reviewkd"], &[0, 1], train);
//! let results = grid.run(&data, "reports/ablation", true)?;
//! println!("{}", results.latex_table(kdscope::grid::Metric::Best, "Top-1 accuracy (%)")?);
//! # Ok::<(), anyhow::Error>(())
//! ```
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use polars::prelude::DataFrame;
use serde::{Deserialize, Serialize};

use crate::data::DataSplit;
use crate::distill::{self, Params};
use crate::io::{read_json, write_json};
use crate::metrics::column;
use crate::models::Model;
use crate::run::Recipe;
use crate::train::{checkpoint, evaluate, History, TrainConfig};

/// A teacher → student pair; with `assistants`, a teacher-assistant chain (Mirzadeh et al. 2020):
/// teacher → assistant₁ → … → student, each hop distilled with the run's method.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pair {
    pub teacher: String,
    #[serde(default)]
    pub assistants: Vec<String>,
    pub student: String,
}

impl Pair {
    pub fn new(teacher: &str, student: &str) -> Self {
        Self { teacher: teacher.into(), assistants: Vec::new(), student: student.into() }
    }

    /// A teacher-assistant chain.
    pub fn chain(teacher: &str, assistants: &[&str], student: &str) -> Self {
        Self {
            teacher: teacher.into(),
            assistants: assistants.iter().map(|a| a.to_string()).collect(),
            student: student.into(),
        }
    }

    /// `resnet56 → resnet20`, `resnet110 → resnet56 → resnet20`.
    pub fn label(&self) -> String {
        let mut parts = vec![self.teacher.as_str()];
        parts.extend(self.assistants.iter().map(String::as_str));
        parts.push(&self.student);
        parts.join(" → ")
    }

    fn slug(&self) -> String {
        let mut parts = vec![self.teacher.as_str()];
        parts.extend(self.assistants.iter().map(String::as_str));
        parts.push(&self.student);
        parts.join("--")
    }
}

/// One method of the grid: its name (see [`distill::METHODS`]), a label for tables, fixed
/// hyper-parameters and hyper-parameters swept over (every combination becomes its own row).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MethodSpec {
    pub name: String,
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub params: Params,
    #[serde(default)]
    pub sweep: BTreeMap<String, Vec<serde_json::Value>>,
}

impl MethodSpec {
    pub fn new(name: &str) -> Self {
        Self { name: name.into(), ..Self::default() }
    }
    pub fn label(mut self, label: &str) -> Self {
        self.label = Some(label.into());
        self
    }
    pub fn param(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.params.insert(key.into(), value.into());
        self
    }
    pub fn sweep(mut self, key: &str, values: Vec<serde_json::Value>) -> Self {
        self.sweep.insert(key.into(), values);
        self
    }

    /// The concrete variants: `(label, params)` for every combination of the swept values.
    pub fn variants(&self) -> Vec<(String, Params)> {
        let base = self.label.clone().unwrap_or_else(|| self.name.clone());
        let mut out = vec![(base, self.params.clone())];
        for (k, values) in &self.sweep {
            out = out
                .into_iter()
                .flat_map(|(label, params)| {
                    values.iter().map(move |v| {
                        let mut p = params.clone();
                        p.insert(k.clone(), v.clone());
                        (format!("{label} {k}={v}"), p)
                    })
                })
                .collect();
        }
        out
    }
}

/// A method given by name alone or in full (`"kd"` or `{"name": "kd", "sweep": {"temperature": [2, 4]}}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MethodEntry {
    Name(String),
    Spec(MethodSpec),
}

impl MethodEntry {
    pub fn spec(&self) -> MethodSpec {
        match self {
            MethodEntry::Name(n) => MethodSpec::new(n),
            MethodEntry::Spec(s) => s.clone(),
        }
    }
}

impl From<MethodSpec> for MethodEntry {
    fn from(s: MethodSpec) -> Self {
        MethodEntry::Spec(s)
    }
}

/// An experiment grid (see the module docs). Serialisable: `kdscope grid --config grid.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Grid {
    pub name: String,
    pub pairs: Vec<Pair>,
    pub methods: Vec<MethodEntry>,
    pub seeds: Vec<u64>,
    /// Schedule of the students (and assistants); its seed is replaced by each run's seed.
    pub train: TrainConfig,
    /// Schedule of the teachers (trained once each, with `teacher_seed`, unless given in `teachers`).
    pub teacher_train: TrainConfig,
    #[serde(default)]
    pub teacher_seed: u64,
    /// Trained teachers by architecture (kdscope checkpoints), used instead of training them.
    #[serde(default)]
    pub teachers: BTreeMap<String, PathBuf>,
}

/// One unit of work: a pair, a method variant and a seed.
#[derive(Clone, Debug)]
pub struct RunKey {
    pub pair: Pair,
    pub method: String,
    pub label: String,
    pub params: Params,
    pub seed: u64,
}

/// The outcome of one run (`result.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub pair: String,
    pub teacher: String,
    pub assistants: Vec<String>,
    pub student: String,
    pub method: String,
    pub label: String,
    pub params: Params,
    pub seed: u64,
    /// Test accuracy (0–1) at the best epoch and at the last one.
    pub best_acc: f64,
    pub last_acc: f64,
    pub epochs: usize,
    pub seconds: f64,
    /// Last-epoch test accuracy of each assistant of a chain.
    pub assistant_acc: Vec<f64>,
    /// The method's hyper-parameters as the run used them (levels, connectors …).
    pub hyper: serde_json::Value,
}

/// A teacher's outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TeacherResult {
    pub arch: String,
    pub best_acc: f64,
    pub last_acc: f64,
    pub checkpoint: PathBuf,
}

/// Which accuracy a table shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// The best test accuracy over the epochs (what most KD papers report).
    Best,
    /// The test accuracy after the last epoch.
    Last,
}

impl Grid {
    /// A grid over `pairs × methods × seeds`, teachers trained with the same schedule as students.
    pub fn new(name: &str, pairs: Vec<Pair>, methods: &[&str], seeds: &[u64], train: TrainConfig) -> Self {
        Self {
            name: name.into(),
            pairs,
            methods: methods.iter().map(|m| MethodEntry::Name(m.to_string())).collect(),
            seeds: seeds.to_vec(),
            teacher_train: train.clone(),
            train,
            teacher_seed: 0,
            teachers: BTreeMap::new(),
        }
    }

    /// Sets hyper-parameter `key` of every method whose name starts with `prefix` (e.g. a shorter
    /// warm-up for all ReviewKD steps).
    pub fn with_param(mut self, prefix: &str, key: &str, value: impl Into<serde_json::Value>) -> Self {
        let value = value.into();
        for m in &mut self.methods {
            let mut spec = m.spec();
            if spec.name.starts_with(prefix) {
                spec.params.insert(key.into(), value.clone());
                *m = MethodEntry::Spec(spec);
            }
        }
        self
    }

    /// The [Re] study's Table 3 ablation for one pair: ReviewKD's steps 0–4 (same-level L2, + review,
    /// + residual, + ABF, + HCL) and, as reference rows, the student trained alone and Hinton KD.
    pub fn reviewkd_ablation(pair: Pair, seeds: &[u64], train: TrainConfig) -> Self {
        let mut g = Self::new("ReviewKD ablation", vec![pair], &["ce", "kd"], seeds, train);
        for (k, label) in crate::distill::ReviewKdConfig::ABLATION_NAMES.iter().enumerate() {
            g.methods.push(MethodSpec::new(&format!("reviewkd-step{k}")).label(&format!("ReviewKD {label}")).into());
        }
        g
    }

    /// Every run of the grid, in table order (pairs, then methods and their variants, then seeds).
    pub fn runs(&self) -> anyhow::Result<Vec<RunKey>> {
        let mut out = Vec::new();
        for pair in &self.pairs {
            for m in &self.methods {
                let spec = m.spec();
                for (label, params) in spec.variants() {
                    // Fails early on unknown methods or hyper-parameters.
                    distill::by_name_with(&spec.name, &params).with_context(|| format!("grid method '{label}'"))?;
                    for &seed in &self.seeds {
                        out.push(RunKey {
                            pair: pair.clone(),
                            method: spec.name.clone(),
                            label: label.clone(),
                            params: params.clone(),
                            seed,
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    /// Runs every run not yet done under `out_dir` (teachers first) and returns all results.
    pub fn run(&self, data: &DataSplit, out_dir: impl AsRef<Path>, progress: bool) -> anyhow::Result<GridResults> {
        let out = out_dir.as_ref();
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        self.check_same_grid(out)?;
        anyhow::ensure!(
            !self.seeds.is_empty() && !self.pairs.is_empty() && !self.methods.is_empty(),
            "grid '{}' is empty",
            self.name
        );
        let runs = self.runs()?;
        let mut teachers: BTreeMap<String, (Model, TeacherResult)> = BTreeMap::new();
        for pair in &self.pairs {
            if !teachers.contains_key(&pair.teacher) {
                let t = self.teacher(&pair.teacher, data, out, progress)?;
                teachers.insert(pair.teacher.clone(), t);
            }
        }
        let mut results = Vec::with_capacity(runs.len());
        for (i, key) in runs.iter().enumerate() {
            let dir = out.join("runs").join(key.pair.slug()).join(slug(&key.label)).join(format!("seed{}", key.seed));
            let done = dir.join("result.json");
            if done.exists() {
                results.push(read_json(&done)?);
                continue;
            }
            if progress {
                eprintln!("[{}/{}] {} · {} · seed {}", i + 1, runs.len(), key.pair.label(), key.label, key.seed);
            }
            let teacher = &teachers[&key.pair.teacher].0;
            let r = self.run_one(key, teacher, data, &dir, progress)?;
            write_json(&done, &r)?;
            results.push(r);
        }
        Ok(GridResults {
            name: self.name.clone(),
            grid: self.clone(),
            runs: results,
            teachers: teachers.into_values().map(|(_, r)| r).collect(),
            out_dir: out.to_path_buf(),
        })
    }

    /// Refuses an output folder that holds a grid with other schedules (its results would not compare);
    /// a grid that only adds pairs, methods or seeds is fine.
    fn check_same_grid(&self, out: &Path) -> anyhow::Result<()> {
        let path = out.join("grid.json");
        if path.exists() {
            let old: Grid = read_json(&path)?;
            anyhow::ensure!(
                old.train == self.train
                    && old.teacher_train == self.teacher_train
                    && old.teacher_seed == self.teacher_seed,
                "{} holds grid '{}' with other training settings; use another output folder",
                out.display(),
                old.name
            );
        }
        write_json(&path, self)
    }

    fn teacher(
        &self,
        arch: &str,
        data: &DataSplit,
        out: &Path,
        progress: bool,
    ) -> anyhow::Result<(Model, TeacherResult)> {
        let test = |m: &Model| evaluate(m, &data.test, 256).accuracy();
        if let Some(path) = self.teachers.get(arch) {
            let m = checkpoint::load_model(path).with_context(|| format!("teacher {arch}"))?;
            let acc = test(&m);
            return Ok((
                m,
                TeacherResult { arch: arch.into(), best_acc: acc, last_acc: acc, checkpoint: path.clone() },
            ));
        }
        let dir = out.join("teachers").join(slug(arch));
        let cfg = TrainConfig { seed: self.teacher_seed, ..self.teacher_train.clone() };
        let hop = Hop { arch, stem: &slug(arch), label: &format!("teacher {arch}") };
        let (m, h) = train_hop(&hop, None, ("ce", &Params::new()), &cfg, data, &dir, progress)?;
        let r = TeacherResult {
            arch: arch.into(),
            best_acc: h.best_test_acc(),
            last_acc: h.last().map(|e| e.test_acc).unwrap_or(0.0),
            checkpoint: dir.join(format!("{}.safetensors", slug(arch))),
        };
        Ok((m, r))
    }

    fn run_one(
        &self,
        key: &RunKey,
        teacher: &Model,
        data: &DataSplit,
        dir: &Path,
        progress: bool,
    ) -> anyhow::Result<RunResult> {
        let cfg = TrainConfig { seed: key.seed, ..self.train.clone() };
        let mut assistant_acc = Vec::new();
        let mut current: Option<Model> = None;
        let mut last = None;
        let uses_teacher = distill::by_name_with(&key.method, &key.params)?.needs_teacher();
        let hops = key.pair.assistants.len() + 1;
        for (i, arch) in key.pair.assistants.iter().chain(std::iter::once(&key.pair.student)).enumerate() {
            let is_student = i + 1 == hops;
            // The student trained alone needs no teacher (nor assistants).
            if !uses_teacher && !is_student {
                continue;
            }
            let t = current.as_ref().unwrap_or(teacher);
            let stem = if is_student { slug(arch) } else { format!("assistant{}-{}", i + 1, slug(arch)) };
            let label = format!("{} {} s{}", arch, key.label, key.seed);
            let hop = Hop { arch, stem: &stem, label: &label };
            let method = (key.method.as_str(), &key.params);
            let (m, h) = train_hop(&hop, uses_teacher.then_some(t), method, &cfg, data, dir, progress)?;
            if !is_student {
                assistant_acc.push(h.last().map(|e| e.test_acc).unwrap_or(0.0));
            }
            last = Some(h);
            current = Some(m);
        }
        let h = last.expect("a chain ends with the student");
        let hyper = distill::by_name_with(&key.method, &key.params)?.hyper();
        Ok(RunResult {
            pair: key.pair.label(),
            teacher: key.pair.teacher.clone(),
            assistants: key.pair.assistants.clone(),
            student: key.pair.student.clone(),
            method: key.method.clone(),
            label: key.label.clone(),
            params: key.params.clone(),
            seed: key.seed,
            best_acc: h.best_test_acc(),
            last_acc: h.last().map(|e| e.test_acc).unwrap_or(0.0),
            epochs: h.epochs.len(),
            seconds: h.total_seconds(),
            assistant_acc,
            hyper,
        })
    }
}

/// One model to train in a run folder: its architecture, file stem and progress label.
struct Hop<'a> {
    arch: &'a str,
    stem: &'a str,
    label: &'a str,
}

/// Trains (or resumes, or — when its checkpoint is complete — just loads) one model in `dir`, saving
/// its checkpoint (`<stem>.safetensors`), history and test predictions.
fn train_hop(
    hop: &Hop,
    teacher: Option<&Model>,
    (method, params): (&str, &Params),
    cfg: &TrainConfig,
    data: &DataSplit,
    dir: &Path,
    progress: bool,
) -> anyhow::Result<(Model, History)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let run = Recipe::new(hop.arch)
        .name(hop.label)
        .method(method)
        .params(params.clone())
        .config(cfg.clone())
        .init_seed(cfg.seed)
        .checkpoint(dir.join(format!("{}.safetensors", hop.stem)))
        .resume(true)
        .progress(progress)
        .run(data, teacher)?;
    write_json(&dir.join(format!("{}.history.json", hop.stem)), &run.history)?;
    crate::predictions::save(&dir.join(format!("{}.predictions.safetensors", hop.stem)), &run.test)?;
    Ok((run.model, run.history))
}

fn slug(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' }).collect()
}

/// Mean and sample standard deviation (0 for a single value).
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 { v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (mean, var.sqrt())
}

/// The results of a grid: every run's record and the teachers'.
#[derive(Clone, Debug)]
pub struct GridResults {
    pub name: String,
    pub grid: Grid,
    pub runs: Vec<RunResult>,
    pub teachers: Vec<TeacherResult>,
    /// The folder the grid ran in.
    pub out_dir: PathBuf,
}

impl GridResults {
    /// Method labels and pair labels in grid order.
    fn axes(&self) -> (Vec<String>, Vec<String>) {
        let mut labels: Vec<String> = Vec::new();
        let mut pairs: Vec<String> = Vec::new();
        for r in &self.runs {
            if !labels.contains(&r.label) {
                labels.push(r.label.clone());
            }
            if !pairs.contains(&r.pair) {
                pairs.push(r.pair.clone());
            }
        }
        (labels, pairs)
    }

    fn accs(&self, pair: &str, label: &str, metric: Metric) -> Vec<f64> {
        self.runs
            .iter()
            .filter(|r| r.pair == pair && r.label == label)
            .map(|r| 100.0 * if metric == Metric::Best { r.best_acc } else { r.last_acc })
            .collect()
    }

    /// One row per run: pair, method label, method, seed, best and last accuracy (%), epochs, seconds.
    pub fn runs_frame(&self) -> anyhow::Result<DataFrame> {
        let r = &self.runs;
        Ok(DataFrame::new_infer_height(vec![
            column("pair", r.iter().map(|x| x.pair.clone()).collect::<Vec<_>>()),
            column("label", r.iter().map(|x| x.label.clone()).collect::<Vec<_>>()),
            column("method", r.iter().map(|x| x.method.clone()).collect::<Vec<_>>()),
            column("seed", r.iter().map(|x| x.seed).collect::<Vec<_>>()),
            column("best_acc_pct", r.iter().map(|x| 100.0 * x.best_acc).collect::<Vec<_>>()),
            column("last_acc_pct", r.iter().map(|x| 100.0 * x.last_acc).collect::<Vec<_>>()),
            column("epochs", r.iter().map(|x| x.epochs as u32).collect::<Vec<_>>()),
            column("seconds", r.iter().map(|x| x.seconds).collect::<Vec<_>>()),
        ])?)
    }

    /// One row per (pair, method label): number of seeds, mean and sample std of the best and last
    /// accuracy (%).
    pub fn summary_frame(&self) -> anyhow::Result<DataFrame> {
        let (labels, pairs) = self.axes();
        let mut rows = Vec::new();
        for p in &pairs {
            for l in &labels {
                let best = self.accs(p, l, Metric::Best);
                if best.is_empty() {
                    continue;
                }
                let last = self.accs(p, l, Metric::Last);
                rows.push((p.clone(), l.clone(), best.len() as u32, mean_std(&best), mean_std(&last)));
            }
        }
        Ok(DataFrame::new_infer_height(vec![
            column("pair", rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>()),
            column("label", rows.iter().map(|r| r.1.clone()).collect::<Vec<_>>()),
            column("seeds", rows.iter().map(|r| r.2).collect::<Vec<_>>()),
            column("best_mean", rows.iter().map(|r| r.3 .0).collect::<Vec<_>>()),
            column("best_std", rows.iter().map(|r| r.3 .1).collect::<Vec<_>>()),
            column("last_mean", rows.iter().map(|r| r.4 .0).collect::<Vec<_>>()),
            column("last_std", rows.iter().map(|r| r.4 .1).collect::<Vec<_>>()),
        ])?)
    }

    /// The comparison table: a `method` column and one column per pair with `mean ± std` (%), the
    /// teacher's accuracy in the first row — the layout of the [Re] study's tables.
    pub fn table(&self, metric: Metric) -> anyhow::Result<DataFrame> {
        let (labels, pairs) = self.axes();
        let mut columns = vec![column(
            "method",
            std::iter::once("teacher".to_string()).chain(labels.iter().cloned()).collect::<Vec<_>>(),
        )];
        for p in &pairs {
            let teacher_arch = self.runs.iter().find(|r| &r.pair == p).map(|r| r.teacher.clone()).unwrap_or_default();
            let t = self.teachers.iter().find(|t| t.arch == teacher_arch);
            let mut cells = vec![t
                .map(|t| format!("{:.2}", 100.0 * if metric == Metric::Best { t.best_acc } else { t.last_acc }))
                .unwrap_or_default()];
            for l in &labels {
                let v = self.accs(p, l, metric);
                cells.push(if v.is_empty() {
                    String::new()
                } else {
                    let (m, s) = mean_std(&v);
                    format!("{m:.2} ± {s:.2}")
                });
            }
            columns.push(column(p, cells));
        }
        Ok(DataFrame::new_infer_height(columns)?)
    }

    /// [`table`](GridResults::table) as a booktabs LaTeX table (`±` as `$\pm$`, `→` as `$\to$`).
    pub fn latex_table(&self, metric: Metric, caption: &str) -> anyhow::Result<String> {
        let label =
            format!("tab:{}-{}", slug(&self.name).to_lowercase(), if metric == Metric::Best { "best" } else { "last" });
        let tex = crate::metrics::export::to_latex(&self.table(metric)?, caption, &label, 2);
        Ok(tex.replace('±', "$\\pm$").replace('→', "$\\to$"))
    }

    /// Test accuracy per method (mean over seeds, error bars one std), one bar group per pair.
    pub fn chart(&self, metric: Metric) -> plotly::Plot {
        use plotly::common::ErrorData;
        let (labels, pairs) = self.axes();
        let mut plot = plotly::Plot::new();
        for p in &pairs {
            let (mut x, mut y, mut e) = (Vec::new(), Vec::new(), Vec::new());
            for l in &labels {
                let v = self.accs(p, l, metric);
                if !v.is_empty() {
                    let (m, s) = mean_std(&v);
                    x.push(l.clone());
                    y.push(m);
                    e.push(s);
                }
            }
            plot.add_trace(
                plotly::Bar::new(x, y).name(p).error_y(ErrorData::new(plotly::common::ErrorType::Data).array(e)),
            );
        }
        plot.set_layout(
            plotly::Layout::new()
                .title(format!(
                    "{} test accuracy (%), mean ± std over seeds",
                    if metric == Metric::Best { "Best" } else { "Last-epoch" }
                ))
                .y_axis(plotly::layout::Axis::new().title("accuracy (%)")),
        );
        plot
    }

    /// Appends the grid's section to a report: both tables, the chart, per-run records, the LaTeX.
    pub fn add_to(&self, report: crate::report::Report) -> anyhow::Result<crate::report::Report> {
        let seeds = self.grid.seeds.len();
        Ok(report
            .text(
                &format!("{}: comparison", self.name),
                &format!(
                    "Best-epoch test accuracy (%), mean ± sample std over {seeds} seed(s) ({:?}); teachers trained once. Columns are teacher → student pairs; rows are methods.",
                    self.grid.seeds
                ),
            )
            .table("Best-epoch accuracy (%)", &self.table(Metric::Best)?)
            .table("Last-epoch accuracy (%)", &self.table(Metric::Last)?)
            .chart("Accuracy by method", &self.chart(Metric::Best))
            .table("Every run", &self.runs_frame()?)
            .text("LaTeX (booktabs)", &self.latex_table(Metric::Best, &format!("{}: top-1 accuracy (%)", self.name))?))
    }

    /// Adds the comparison to a teacher-vs-student report's "Experiments" section: best- and
    /// last-epoch tables, the chart and the LaTeX.
    pub fn add_to_kd(&self, report: crate::report::KdReport) -> anyhow::Result<crate::report::KdReport> {
        let legend = format!(
            "{}: test accuracy (%), mean ± sample std over seeds {:?}; teachers trained once; rows are methods, columns teacher → student pairs.",
            self.name, self.grid.seeds
        );
        Ok(report
            .table(&format!("{}: best-epoch accuracy (%)", self.name), &legend, &self.table(Metric::Best)?)
            .table(&format!("{}: last-epoch accuracy (%)", self.name), "", &self.table(Metric::Last)?)
            .chart(&format!("{}: accuracy by method", self.name), &self.chart(Metric::Best))
            .preformatted(
                "LaTeX (booktabs)",
                &self.latex_table(Metric::Best, &format!("{}: top-1 accuracy (%)", self.name))?,
            ))
    }

    /// The checkpoint of a run's student (`pair` as [`Pair::label`], `label` the method's label).
    pub fn student_checkpoint(&self, pair: &str, label: &str, seed: u64) -> anyhow::Result<PathBuf> {
        let r =
            self.runs.iter().find(|r| r.pair == pair && r.label == label && r.seed == seed).ok_or_else(|| {
                anyhow::anyhow!("no run '{label}' of {pair} with seed {seed} in grid '{}'", self.name)
            })?;
        let p = Pair { teacher: r.teacher.clone(), assistants: r.assistants.clone(), student: r.student.clone() };
        Ok(self
            .out_dir
            .join("runs")
            .join(p.slug())
            .join(slug(label))
            .join(format!("seed{seed}"))
            .join(format!("{}.safetensors", slug(&r.student))))
    }

    /// A teacher's checkpoint.
    pub fn teacher_checkpoint(&self, arch: &str) -> anyhow::Result<PathBuf> {
        self.teachers
            .iter()
            .find(|t| t.arch == arch)
            .map(|t| t.checkpoint.clone())
            .ok_or_else(|| anyhow::anyhow!("grid '{}' has no teacher {arch}", self.name))
    }

    /// Writes `runs.csv`, `summary.csv`, `table_best.tex`, `table_last.tex` and `report.html` into `dir`.
    pub fn export(&self, dir: impl AsRef<Path>) -> anyhow::Result<PathBuf> {
        use crate::metrics::export::write_csv;
        let dir = dir.as_ref();
        write_csv(&self.runs_frame()?, dir.join("runs.csv"))?;
        write_csv(&self.summary_frame()?, dir.join("summary.csv"))?;
        for (m, f) in [(Metric::Best, "table_best.tex"), (Metric::Last, "table_last.tex")] {
            crate::io::write_atomic(
                &dir.join(f),
                self.latex_table(m, &format!("{}: top-1 accuracy (%)", self.name))?.as_bytes(),
            )?;
        }
        let report =
            self.add_to(crate::report::Report::new(&self.name))?.appendix(&serde_json::to_string_pretty(&self.grid)?);
        report.write(dir.join("report.html"))
    }
}
