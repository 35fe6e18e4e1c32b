//! The one way to train a model: a [`Recipe`] (architecture, method and its hyper-parameters,
//! optimisation settings, seeds, checkpoint) builds the model from the dataset's shape, trains or
//! distils it, checkpoints it every epoch and evaluates it into a [`Run`]. The demo, the grid
//! (including teacher-assistant chains), `kdscope train` and the notebooks all use it.
//!
//! ```no_run
//! use kdscope::data::synthetic::{builtin_dataset, SynthConfig};
//! use kdscope::run::{history_frame, summary_frame, training_curves, Recipe};
//!
//! let data = builtin_dataset(&SynthConfig { train_per_class: 60, test_per_class: 20, ..Default::default() });
//! let teacher = Recipe::new("resnet20").epochs(4).name("teacher").train(&data)?;
//! let student = Recipe::new("resnet8").epochs(3).method("kd-mse").name("student KD").distill(&teacher, &data)?;
//! let summary = summary_frame(&[&teacher, &student])?;
//! let curves = training_curves(&[&teacher, &student]);
//! # let _ = (summary, curves, history_frame(&[&teacher]));
//! # Ok::<(), anyhow::Error>(())
//! ```
mod frames;
pub mod pipeline;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use frames::{evaluate_model, history_frame, summary_frame, training_curves};

use crate::data::{DataSplit, Dataset};
use crate::distill::{self, Params};
use crate::metrics::Evaluation;
use crate::models::{Model, ModelSpec};
use crate::predictions::Predictions;
use crate::train::{evaluate, fit, History, RunOptions, TrainConfig};

/// How to train one model: architecture, method and optimisation settings.
#[derive(Clone, Debug)]
pub struct Recipe {
    pub arch: String,
    /// A name of [`distill::METHODS`]: `ce` (alone), `kd` (KL·T², RepDistiller), `kd-mse` (CE + MSE of
    /// softened outputs, KD-Lib), `reviewkd`, ….
    pub method: String,
    /// The method's hyper-parameters by field name (defaults: mdistiller's CIFAR-100 settings).
    pub params: Params,
    pub train: TrainConfig,
    /// Seed of the weight initialisation (the data order follows `train.seed`).
    pub init_seed: u64,
    pub name: Option<String>,
    /// Checkpoint written after every epoch (atomically).
    pub checkpoint: Option<PathBuf>,
    /// Continue from `checkpoint` if it exists (parameters, momentum, history).
    pub resume: bool,
    pub progress: bool,
}

impl Recipe {
    /// Plain cross-entropy training of `arch` (e.g. `resnet20`, `resnet8x4`, `wrn_16_2`) with the
    /// short-schedule settings of the demo: batch 32, lr 0.05, cosine, 10 epochs.
    pub fn new(arch: &str) -> Self {
        Self {
            arch: arch.into(),
            method: "ce".into(),
            params: Params::new(),
            train: TrainConfig::short_cosine(),
            init_seed: 0,
            name: None,
            checkpoint: None,
            resume: false,
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

    /// All optimisation settings at once (epochs, batch, schedule, augmentation, data-order seed).
    pub fn config(mut self, train: TrainConfig) -> Self {
        self.train = train;
        self
    }

    /// The distillation method used by [`Recipe::distill`].
    pub fn method(mut self, method: &str) -> Self {
        self.method = method.into();
        self
    }

    /// Hyper-parameters of the method by field name (`{"temperature": 8}`).
    pub fn params(mut self, params: Params) -> Self {
        self.params = params;
        self
    }

    /// Seeds both the initialisation and the data order.
    pub fn seed(mut self, seed: u64) -> Self {
        self.train.seed = seed;
        self.init_seed = seed;
        self
    }

    /// Seeds the initialisation only.
    pub fn init_seed(mut self, seed: u64) -> Self {
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

    /// Continue from the checkpoint if one exists.
    pub fn resume(mut self, resume: bool) -> Self {
        self.resume = resume;
        self
    }

    pub fn progress(mut self, show: bool) -> Self {
        self.progress = show;
        self
    }

    /// The run's name: the one given, or `"<arch> <method>"`.
    pub fn run_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| format!("{} {}", self.arch, self.method))
    }

    /// The model's spec for `data`: every field from the dataset (input channels, classes).
    pub fn spec(&self, data: &DataSplit) -> anyhow::Result<ModelSpec> {
        let mut spec = ModelSpec::new(&self.arch, data.train.num_classes())?;
        spec.in_channels = data.train.channels;
        Ok(spec)
    }

    /// The freshly initialised model for `data`.
    pub fn build(&self, data: &DataSplit) -> anyhow::Result<Model> {
        Model::try_new(self.spec(data)?, self.init_seed)
    }

    /// Trains a model without a teacher (the method must not need one).
    pub fn train(&self, data: &DataSplit) -> anyhow::Result<Run> {
        self.fit(self.build(data)?, None, data)
    }

    /// Trains a student distilled from `teacher` with the recipe's method (`kd` if it is `ce`).
    pub fn distill(&self, teacher: &Run, data: &DataSplit) -> anyhow::Result<Run> {
        let r = if self.method == "ce" { self.clone().method("kd") } else { self.clone() };
        r.fit(r.build(data)?, Some(&teacher.model), data)
    }

    /// Builds the model and trains it, distilled from `teacher` when given and the method uses one
    /// (a method that needs a teacher without one is an error).
    pub fn run(&self, data: &DataSplit, teacher: Option<&Model>) -> anyhow::Result<Run> {
        self.fit(self.build(data)?, teacher, data)
    }

    /// Trains `model` (built by [`Recipe::build`]) and evaluates it on `data.test`.
    pub fn fit(&self, mut model: Model, teacher: Option<&Model>, data: &DataSplit) -> anyhow::Result<Run> {
        // `train::fit` refuses a distillation method without a teacher and ignores the teacher of `ce`.
        let mut method = distill::by_name_with(&self.method, &self.params)?;
        let name = self.run_name();
        let opts = RunOptions {
            label: name.clone(),
            checkpoint: self.checkpoint.clone(),
            resume: self.resume,
            progress: self.progress,
            stop_after: None,
        };
        let history = fit(&mut model, teacher, &mut method, data, &self.train, &opts)?;
        let test = evaluate(&model, &data.test, 256);
        Ok(Run { name, method: method.name(), hyper: method.hyper(), model, history, test })
    }
}

/// A trained model with its training history and test-set predictions.
pub struct Run {
    pub name: String,
    pub method: String,
    /// The method's hyper-parameters as the run used them.
    pub hyper: serde_json::Value,
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
        frames::evaluation_of(&self.name, &self.model, self.test.clone(), test)
    }

    /// The run as a serialisable record (what `summary.json` holds).
    pub fn record(&self) -> RunRecord {
        RunRecord {
            name: self.name.clone(),
            arch: self.model.spec.arch.to_string(),
            method: self.method.clone(),
            params: self.model.num_params(),
            test_acc: self.test.accuracy(),
            top5_acc: self.test.top_k_accuracy(5),
            train_seconds: self.history.total_seconds(),
            history: self.history.clone(),
        }
    }
}

/// A finished run without its model: names, test accuracy and history.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunRecord {
    pub name: String,
    pub arch: String,
    pub method: String,
    /// Parameter count of the model.
    pub params: usize,
    pub test_acc: f64,
    pub top5_acc: f64,
    pub train_seconds: f64,
    pub history: History,
}
