//! The notebook-level API: a training [`Recipe`] (builder, no generics) that yields a [`Run`] (the
//! trained model, its history and its test predictions), and the frames and charts made from runs.
//!
//! ```no_run
//! use kdscope::data::synthetic::{builtin_dataset, SynthConfig};
//! use kdscope::experiment::{history_frame, summary_frame, training_curves, Recipe};
//!
//! let data = builtin_dataset(&SynthConfig { train_per_class: 60, test_per_class: 20, ..Default::default() });
//! let teacher = Recipe::new("resnet20").epochs(4).name("teacher").train(&data)?;
//! let student = Recipe::new("resnet8").epochs(3).method("kd-mse").name("student KD").distill(&teacher, &data)?;
//! let summary = summary_frame(&[&teacher, &student])?;
//! let curves = training_curves(&[&teacher, &student]);
//! # let _ = (summary, curves, history_frame(&[&teacher]));
//! # Ok::<(), anyhow::Error>(())
//! ```
use std::path::PathBuf;

use anyhow::bail;
use plotly::Plot;
use polars::prelude::DataFrame;

use crate::data::{DataSplit, Dataset};
use crate::distill;
use crate::metrics::{col, Evaluation};
use crate::models::{Model, ModelSpec};
use crate::train::{evaluate, fit, History, Predictions, RunOptions, TrainConfig};

/// How to train one model: architecture, method and optimisation settings.
#[derive(Clone, Debug)]
pub struct Recipe {
    pub arch: String,
    /// `ce` (alone), `kd` (KL·T², RepDistiller) or `kd-mse` (CE + MSE of softened outputs, KD-Lib).
    pub method: String,
    pub train: TrainConfig,
    /// Seed of the weight initialisation (the data order follows `train.seed`).
    pub init_seed: u64,
    pub name: Option<String>,
    /// Checkpoint written after every epoch (atomically).
    pub checkpoint: Option<PathBuf>,
    pub progress: bool,
}

impl Recipe {
    /// Plain cross-entropy training of `arch` (e.g. `resnet20`, `resnet8x4`, `wrn_16_2`) with the
    /// short-schedule settings of the demo: batch 32, lr 0.05, cosine, 10 epochs.
    pub fn new(arch: &str) -> Self {
        Self {
            arch: arch.into(),
            method: "ce".into(),
            train: TrainConfig::short_cosine(),
            init_seed: 0,
            name: None,
            checkpoint: None,
            progress: true,
        }
    }

    pub fn epochs(mut self, n: usize) -> Self {
        self.train.epochs = n;
        self
    }

    pub fn batch_size(mut self, n: usize) -> Self {
        self.train.batch_size = n;
        self
    }

    pub fn lr(mut self, lr: f64) -> Self {
        self.train.lr = lr;
        self
    }

    /// The distillation method used by [`Recipe::distill`].
    pub fn method(mut self, method: &str) -> Self {
        self.method = method.into();
        self
    }

    /// Seeds both the initialisation and the data order.
    pub fn seed(mut self, seed: u64) -> Self {
        self.train.seed = seed;
        self.init_seed = seed;
        self
    }

    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.into());
        self
    }

    pub fn checkpoint(mut self, path: impl Into<PathBuf>) -> Self {
        self.checkpoint = Some(path.into());
        self
    }

    pub fn progress(mut self, show: bool) -> Self {
        self.progress = show;
        self
    }

    /// Trains a model without a teacher (the method must not need one).
    pub fn train(&self, data: &DataSplit) -> anyhow::Result<Run> {
        self.run(data, None)
    }

    /// Trains a student distilled from `teacher` with the recipe's method (`kd` if it is `ce`).
    pub fn distill(&self, teacher: &Run, data: &DataSplit) -> anyhow::Result<Run> {
        let r = if self.method == "ce" { self.clone().method("kd") } else { self.clone() };
        r.run(data, Some(&teacher.model))
    }

    fn run(&self, data: &DataSplit, teacher: Option<&Model>) -> anyhow::Result<Run> {
        let mut method = distill::by_name(&self.method)?;
        if teacher.is_none() && method.needs_teacher() {
            bail!("method '{}' needs a teacher: call Recipe::distill(&teacher, &data)", self.method);
        }
        let spec = ModelSpec::new(&self.arch, data.train.num_classes())?;
        let mut model = Model::new(spec, self.init_seed);
        let name = self.name.clone().unwrap_or_else(|| format!("{} {}", self.arch, self.method));
        let opts = RunOptions {
            label: name.clone(),
            checkpoint: self.checkpoint.clone(),
            resume: false,
            progress: self.progress,
            stop_after: None,
        };
        let history = fit(&mut model, teacher, method.as_mut(), data, &self.train, &opts)?;
        let test = evaluate(&model, &data.test, 256);
        Ok(Run { name, method: method.name(), model, history, test })
    }
}

/// A trained model with its training history and test-set predictions.
pub struct Run {
    pub name: String,
    pub method: String,
    pub model: Model,
    pub history: History,
    pub test: Predictions,
}

impl Run {
    pub fn accuracy(&self) -> f64 {
        self.test.accuracy()
    }

    /// The run's test predictions with the names the metric frames need (`test` is the split the run
    /// was evaluated on: `data.test`).
    pub fn evaluation(&self, test: &Dataset) -> Evaluation {
        evaluation_of(&self.name, &self.model, self.test.clone(), test)
    }
}

/// Evaluates `model` on `data` and wraps the predictions for the metric frames and reports.
pub fn evaluate_model(name: &str, model: &Model, data: &Dataset) -> Evaluation {
    evaluation_of(name, model, evaluate(model, data, 256), data)
}

fn evaluation_of(name: &str, model: &Model, predictions: Predictions, data: &Dataset) -> Evaluation {
    Evaluation {
        name: name.into(),
        arch: model.spec.arch.to_string(),
        params: model.num_params(),
        predictions,
        class_names: data.class_names.clone(),
        hierarchy: data.hierarchy.clone(),
    }
}

/// One row per run: name, architecture, method, parameters, top-1/top-5 test accuracy (%), train seconds.
pub fn summary_frame(runs: &[&Run]) -> anyhow::Result<DataFrame> {
    Ok(DataFrame::new_infer_height(vec![
        col("run", runs.iter().map(|r| r.name.clone()).collect::<Vec<_>>()),
        col("arch", runs.iter().map(|r| r.model.spec.arch.to_string()).collect::<Vec<_>>()),
        col("method", runs.iter().map(|r| r.method.clone()).collect::<Vec<_>>()),
        col("params", runs.iter().map(|r| r.model.num_params() as u64).collect::<Vec<_>>()),
        col("top1_pct", runs.iter().map(|r| 100.0 * r.test.accuracy()).collect::<Vec<_>>()),
        col("top5_pct", runs.iter().map(|r| 100.0 * r.test.top_k_accuracy(5)).collect::<Vec<_>>()),
        col("train_s", runs.iter().map(|r| r.history.total_seconds()).collect::<Vec<_>>()),
    ])?)
}

/// Every epoch of every run, long format: run, epoch, lr, train loss/accuracy, test loss/accuracy (%).
pub fn history_frame(runs: &[&Run]) -> anyhow::Result<DataFrame> {
    let rows: Vec<(&str, &crate::train::EpochRecord)> =
        runs.iter().flat_map(|r| r.history.epochs.iter().map(move |e| (r.name.as_str(), e))).collect();
    Ok(DataFrame::new_infer_height(vec![
        col("run", rows.iter().map(|(n, _)| n.to_string()).collect::<Vec<_>>()),
        col("epoch", rows.iter().map(|(_, e)| e.epoch as u32).collect::<Vec<_>>()),
        col("lr", rows.iter().map(|(_, e)| e.lr).collect::<Vec<_>>()),
        col("train_loss", rows.iter().map(|(_, e)| e.train_loss).collect::<Vec<_>>()),
        col("train_acc_pct", rows.iter().map(|(_, e)| 100.0 * e.train_acc).collect::<Vec<_>>()),
        col("test_loss", rows.iter().map(|(_, e)| e.test_loss).collect::<Vec<_>>()),
        col("test_acc_pct", rows.iter().map(|(_, e)| 100.0 * e.test_acc).collect::<Vec<_>>()),
    ])?)
}

/// Test accuracy per epoch, one line per run.
pub fn training_curves(runs: &[&Run]) -> Plot {
    crate::report::accuracy_curves(runs.iter().map(|r| (r.name.as_str(), &r.history)))
}
