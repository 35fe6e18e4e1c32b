//! Training: configuration, learning-rate schedules, the train/eval loops with progress bars,
//! per-epoch history, checkpoints and resume.
mod alloc;
pub mod checkpoint;
pub(crate) mod eval;
mod schedule;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, ensure, Context};
use dfdx::prelude::{AsArray, Backward};
use serde::{Deserialize, Serialize};

pub use crate::predictions::Predictions;
pub use alloc::tune_allocator;
pub use eval::evaluate;
pub use schedule::Schedule;

use crate::data::{epoch_batches, make_batch, Augment, DataSplit};
use crate::distill::{Method, Setup, StepCtx};
use crate::models::Model;
use crate::nn::Sgd;

/// Hyper-parameters of one training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub momentum: f64,
    pub nesterov: bool,
    pub weight_decay: f64,
    pub schedule: Schedule,
    pub augment: Augment,
    pub seed: u64,
    /// Drop the last incomplete batch of each epoch (batch-norm needs more than one sample).
    pub drop_last: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 10,
            batch_size: 64,
            lr: 0.05,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 5e-4,
            schedule: Schedule::Cosine { min_lr: 0.0 },
            augment: Augment::STANDARD,
            seed: 0,
            drop_last: true,
        }
    }
}

impl TrainConfig {
    /// Checks every setting, naming the first one out of range (the CLI flag's name in the message).
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(self.epochs >= 1, "--epochs must be at least 1, got {}", self.epochs);
        ensure!(self.batch_size >= 1, "--batch-size must be at least 1, got {}", self.batch_size);
        ensure!(self.lr.is_finite() && self.lr > 0.0, "--lr must be a positive finite number, got {}", self.lr);
        ensure!(
            self.momentum.is_finite() && (0.0..1.0).contains(&self.momentum),
            "--momentum must be in [0, 1), got {}",
            self.momentum
        );
        ensure!(
            self.weight_decay.is_finite() && self.weight_decay >= 0.0,
            "--weight-decay must be a non-negative finite number, got {}",
            self.weight_decay
        );
        match &self.schedule {
            Schedule::Constant => {}
            Schedule::MultiStep { gamma, .. } => {
                ensure!(
                    gamma.is_finite() && *gamma > 0.0,
                    "the multi-step gamma must be positive and finite, got {gamma}"
                )
            }
            Schedule::Cosine { min_lr } => ensure!(
                min_lr.is_finite() && *min_lr >= 0.0 && *min_lr <= self.lr,
                "the cosine schedule's min_lr must be in [0, lr], got {min_lr}"
            ),
        }
        ensure!(
            self.augment.crop_pad <= 64,
            "augment.crop_pad must be at most 64 pixels, got {}",
            self.augment.crop_pad
        );
        Ok(())
    }

    /// The short schedule of the demo and the notebooks: 10 epochs, batch 32, LR 0.05 with cosine
    /// decay, otherwise the defaults.
    pub fn short_cosine() -> Self {
        Self { epochs: 10, batch_size: 32, lr: 0.05, schedule: Schedule::Cosine { min_lr: 0.0 }, ..Self::default() }
    }

    /// The standard CIFAR-100 KD schedule (RepDistiller / mdistiller): 240 epochs, batch 64, SGD 0.9,
    /// weight decay 5e-4, learning rate 0.05 divided by 10 at epochs 150, 180 and 210.
    pub fn cifar100_standard() -> Self {
        Self {
            epochs: 240,
            batch_size: 64,
            lr: 0.05,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 5e-4,
            schedule: Schedule::MultiStep { milestones: vec![150, 180, 210], gamma: 0.1 },
            augment: Augment::STANDARD,
            seed: 0,
            drop_last: false,
        }
    }
}

/// One epoch of the history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub lr: f64,
    pub train_loss: f64,
    pub train_acc: f64,
    pub test_loss: f64,
    pub test_acc: f64,
    pub seconds: f64,
}

/// Per-epoch records of a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub epochs: Vec<EpochRecord>,
}

impl History {
    pub fn last(&self) -> Option<&EpochRecord> {
        self.epochs.last()
    }
    pub fn best_test_acc(&self) -> f64 {
        self.epochs.iter().map(|e| e.test_acc).fold(0.0, f64::max)
    }
    pub fn total_seconds(&self) -> f64 {
        self.epochs.iter().map(|e| e.seconds).sum()
    }
}

/// Where and how a run reports and saves.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Label shown on progress bars (e.g. "teacher resnet56").
    pub label: String,
    /// Checkpoint written (atomically) after every epoch; a run resumes from it if it exists and
    /// `resume` is set.
    pub checkpoint: Option<PathBuf>,
    pub resume: bool,
    /// Show progress bars and per-epoch lines on stderr.
    pub progress: bool,
    /// Stop after this many completed epochs (of the configured schedule), e.g. to train in slices
    /// with `resume`.
    pub stop_after: Option<usize>,
}

/// Trains `student` on `data.train` with `method` (and `teacher`, which a distillation method needs),
/// evaluating on `data.test` after every epoch. Returns the history.
///
/// A non-finite loss stops the run with an error; the checkpoint on disk is then the one of the last
/// completed epoch. With `opts.resume` and an existing checkpoint, training continues after the
/// epoch it recorded (parameters, running statistics, momentum and history are restored).
///
/// The run goes on a worker of rayon's pool ([`crate::nn::ops::on_pool`]).
pub fn fit(
    student: &mut Model,
    teacher: Option<&Model>,
    method: &mut Method,
    data: &DataSplit,
    cfg: &TrainConfig,
    opts: &RunOptions,
) -> anyhow::Result<History> {
    crate::nn::ops::on_pool(|| {
        tune_allocator();
        cfg.validate()?;
        data.train.validate()?;
        data.test.validate()?;
        ensure!(
            !cfg.drop_last || data.train.len() >= cfg.batch_size,
            "{} has {} training images, fewer than one batch of {}: no step would run (lower --batch-size)",
            data.train.name,
            data.train.len(),
            cfg.batch_size
        );
        ensure!(!data.train.is_empty(), "{} has no training images", data.train.name);
        let name = method.name();
        let mut distill = match method {
            Method::Alone => None,
            Method::Distill(d) => {
                Some((d.as_mut(), teacher.with_context(|| format!("method '{name}' needs a teacher model"))?))
            }
        };
        if let Some((_, t)) = &distill {
            if t.spec.num_classes != student.spec.num_classes || t.spec.in_channels != student.spec.in_channels {
                bail!(
                    "the teacher ({}: {} classes, {} input channels) and the student ({}: {} classes, {} input channels) disagree",
                    t.spec.arch,
                    t.spec.num_classes,
                    t.spec.in_channels,
                    student.spec.arch,
                    student.spec.num_classes,
                    student.spec.in_channels
                );
            }
            crate::models::check_classes(t, "the teacher", &data.train.name, &data.train.class_names)?;
        }
        if student.spec.num_classes != data.train.num_classes() {
            bail!(
                "{} has {} outputs, but {} has {} classes",
                student.name(),
                student.spec.num_classes,
                data.train.name,
                data.train.num_classes()
            );
        }
        let (h, w) = (data.train.height, data.train.width);
        if let Some((d, teacher)) = &mut distill {
            let setup = Setup {
                student,
                teacher,
                student_layout: student.feature_layout(h, w),
                teacher_layout: teacher.feature_layout(h, w),
                train_len: data.train.len(),
                train_labels: &data.train.labels,
                num_classes: data.train.num_classes(),
                seed: cfg.seed,
            };
            d.setup(&setup).with_context(|| format!("setting up '{name}'"))?;
        }
        let mut sgd = Sgd::new(cfg.lr, cfg.momentum, cfg.nesterov, cfg.weight_decay);
        let mut history = History::default();
        student.classes = Some(data.train.class_names.clone());
        if let Some(path) = &opts.checkpoint {
            checkpoint::remove_stale_temporaries(path)?;
        }
        if let (true, Some(path)) = (opts.resume, &opts.checkpoint) {
            if checkpoint::train_state_path(path).exists() {
                let modules = distill.as_mut().and_then(|(d, _)| d.modules_mut());
                let state = checkpoint::load_training(path, student, modules, &mut sgd)
                    .with_context(|| format!("resuming from {}", path.display()))?;
                history = state;
            } else if path.exists() {
                bail!(
                    "cannot resume from {}: there is no {} beside it (it was not written by a training run, or that file was removed); train without --resume to start over",
                    path.display(),
                    checkpoint::train_state_path(path).display()
                );
            }
        }
        let features = distill.as_ref().is_some_and(|(d, _)| d.needs_features());
        let start = history.epochs.len();
        let end = opts.stop_after.map_or(cfg.epochs, |s| s.min(cfg.epochs));
        for epoch in start..end {
            let t0 = Instant::now();
            let lr = cfg.schedule.lr(cfg.lr, epoch, cfg.epochs);
            sgd.set_lr(lr);
            let batches = epoch_batches(data.train.len(), cfg.batch_size, true, cfg.seed, epoch, cfg.drop_last);
            let pb = crate::io::progress_bar(
                batches.len() as u64,
                &format!("{} {}/{}", opts.label, epoch + 1, cfg.epochs),
                "batches",
                opts.progress,
            );
            let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
            let aug_seed = cfg.seed.wrapping_mul(0x5851_F42D_4C95_7F2D).wrapping_add(epoch as u64);
            for (bi, idx) in batches.iter().enumerate() {
                let b = make_batch(&data.train, idx, Some((cfg.augment, aug_seed)));
                data.train.check_stream()?;
                // Dropout masks (torchvision heads) from the run's seed, epoch and batch: a resumed run draws the same.
                crate::nn::ops::seed_dropout(aug_seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ bi as u64);
                let t_out = distill.as_ref().map(|(_, t)| t.forward_with(b.x.detach(), false, features));
                let s_out = student.forward_with(b.x.traced_input(), true, features);
                correct += crate::predictions::count_correct(s_out.logits.data(), student.spec.num_classes, &b.labels);
                seen += b.labels.len();
                let ctx = StepCtx { epoch, epochs: cfg.epochs, indices: &b.indices };
                let parts = match (&mut distill, &t_out) {
                    (Some((d, _)), Some(t_out)) => d.loss(s_out, t_out, &b.labels, ctx),
                    _ => crate::distill::vanilla::loss(s_out, &b.labels),
                };
                let lv = parts.total.array();
                if !lv.is_finite() {
                    pb.abandon();
                    bail!(
                        "{}: loss became {lv} at epoch {} (batch of images {:?}…); components {:?}. Lower the learning rate; the last good checkpoint is {}",
                        opts.label,
                        epoch + 1,
                        &b.indices[..b.indices.len().min(4)],
                        parts.parts,
                        match (&opts.checkpoint, history.epochs.len()) {
                            (None, _) => "not kept (no checkpoint path)".to_string(),
                            (Some(_), 0) => "none: no epoch had completed".to_string(),
                            (Some(p), n) => format!("{} (epoch {n})", p.display()),
                        }
                    );
                }
                loss_sum += lv as f64 * b.labels.len() as f64;
                let mut grads = parts.total.backward();
                sgd.step(&mut student.store, &mut grads)?;
                if let Some(m) = distill.as_mut().and_then(|(d, _)| d.modules_mut()) {
                    sgd.step(m, &mut grads)?;
                }
                pb.inc(1);
                pb.set_message(format!("loss {:.3}", loss_sum / seen as f64));
            }
            pb.finish_and_clear();
            let test = evaluate(student, &data.test, 256);
            data.test.check_stream()?;
            let rec = EpochRecord {
                epoch: epoch + 1,
                lr,
                train_loss: loss_sum / seen.max(1) as f64,
                train_acc: correct as f64 / seen.max(1) as f64,
                test_loss: test.mean_loss(),
                test_acc: test.accuracy(),
                seconds: t0.elapsed().as_secs_f64(),
            };
            if opts.progress {
                eprintln!(
                    "{:>24} epoch {:>3}/{}  lr {:.4}  train loss {:.4} acc {:.2}%  test loss {:.4} acc {:.2}%  {:.1}s",
                    opts.label,
                    rec.epoch,
                    cfg.epochs,
                    rec.lr,
                    rec.train_loss,
                    100.0 * rec.train_acc,
                    rec.test_loss,
                    100.0 * rec.test_acc,
                    rec.seconds
                );
            }
            history.epochs.push(rec);
            if let Some(path) = &opts.checkpoint {
                let modules = distill.as_ref().and_then(|(d, _)| d.modules());
                checkpoint::save_training(path, student, modules, &mut sgd, &history)?;
            }
        }
        Ok(history)
    })
}

/// Convenience: a default checkpoint path `dir/name.safetensors`.
pub fn checkpoint_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.safetensors"))
}
