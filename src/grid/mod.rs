//! Experiment grids: methods × teacher/student pairs (optionally through teacher assistants) × seeds ×
//! hyper-parameter values, from one configuration, resumable, aggregated into polars frames (mean ±
//! std over seeds of the best- and last-epoch test accuracy), a comparison table in the layout of the
//! [Re] ReviewKD study's tables (methods as rows, pairs as columns, teacher accuracy on top) and its
//! LaTeX export.
//!
//! Layout of the output folder (a run interrupted at any point continues where it stopped):
//! `grid.json` (the configuration), `teachers/<arch>/` and `runs/<pair>/<method>/seed<k>/`, each with
//! `<arch>.safetensors` (the checkpoint, written after every epoch with its training state),
//! `history.json`, `predictions.safetensors` (test logits and labels) and `result.json` once done; each
//! teacher's record in `teachers/<arch>/result.json`. The same folder runs on a Slurm cluster: see
//! [`slurm`] (`kdscope grid --slurm`).
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
mod execute;
mod results;
pub mod slurm;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use serde::{Deserialize, Serialize};

pub use results::{mean_std, GridResults};

use crate::distill::{self, Params};
use crate::train::TrainConfig;

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
        // Names and sizes first: a sweep of many values per parameter must not be expanded before a
        // misspelt parameter is found, nor grow without bound.
        let mut total = 0usize;
        for m in &self.methods {
            let spec = m.spec();
            if let Some((k, _)) = spec.sweep.iter().find(|(_, v)| v.is_empty()) {
                anyhow::bail!("grid method '{}': sweep '{k}' has no values", spec.name);
            }
            let mut first = spec.params.clone();
            for (k, v) in &spec.sweep {
                first.insert(k.clone(), v[0].clone());
            }
            distill::by_name_with(&spec.name, &first).with_context(|| format!("grid method '{}'", spec.name))?;
            let n = spec.sweep.values().try_fold(1usize, |a, v| a.checked_mul(v.len()));
            total = n
                .and_then(|n| n.checked_mul(self.pairs.len() * self.seeds.len()))
                .and_then(|n| total.checked_add(n))
                .unwrap_or(usize::MAX);
        }
        anyhow::ensure!(
            total <= MAX_RUNS,
            "the grid asks for {} runs (pairs x variants x seeds); at most {MAX_RUNS} are allowed: sweep fewer values",
            if total == usize::MAX { "more than 2^64".to_string() } else { total.to_string() }
        );
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
}

/// The most runs one grid may hold.
pub const MAX_RUNS: usize = 100_000;

/// The folder of one run: `runs/<pair>/<method label>/seed<k>/`.
pub(crate) fn run_dir(out: &std::path::Path, key: &RunKey) -> PathBuf {
    out.join("runs").join(key.pair.slug()).join(slug(&key.label)).join(format!("seed{}", key.seed))
}

/// A trained (or loaded) teacher's record: `teachers/<arch>/result.json`.
pub(crate) fn teacher_result_path(out: &std::path::Path, arch: &str) -> PathBuf {
    out.join("teachers").join(slug(arch)).join("result.json")
}

/// A file or folder name for a label (anything but ASCII letters, digits, `-` and `.` becomes `_`).
fn slug(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' }).collect()
}
