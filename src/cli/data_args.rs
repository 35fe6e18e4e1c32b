//! The dataset arguments every command that reads data shares (`--dataset`, `--data-dir`, folder
//! options, hierarchy, normalisation, `--synth`), and loading the dataset they name.
use std::path::PathBuf;

use anyhow::Context;

use crate::data::{self, synthetic::SynthConfig, DataSplit};

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum DatasetKind {
    /// The built-in synthetic dataset (fractals-20; shapes-20 with --synth '{"fractal":false}').
    Synthetic,
    Cifar10,
    Cifar100,
    Mnist,
    /// `DIR/train/<class>/*` and `DIR/test/<class>/*` images.
    Folder,
}

/// Normalisation constants (`--normalize`).
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum NormalizeKind {
    Dataset,
    Imagenet,
    Cifar10,
    Cifar100,
    Auto,
}

/// Which dataset a command reads (`train`, `report`).
#[derive(clap::Args)]
pub struct DataArgs {
    /// Dataset (default: the built-in synthetic one; for a report from logits, only given for thumbnails).
    #[arg(long, value_enum)]
    pub dataset: Option<DatasetKind>,
    /// Dataset directory (not needed for the synthetic dataset).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Image size for folder datasets.
    #[arg(long, default_value_t = 32)]
    pub image_size: usize,
    /// Class → superclass hierarchy (`class,superclass` CSV or JSON object); replaces the dataset's own
    /// (CIFAR-100's coarse labels).
    #[arg(long, conflicts_with = "hierarchy_sep")]
    pub hierarchy: Option<PathBuf>,
    /// Superclasses from the class names, the part before this separator (`___` for PlantVillage's
    /// `<Crop>___<Disease>` folders; a name without it is its own superclass).
    #[arg(long)]
    pub hierarchy_sep: Option<String>,
    /// Folder datasets without train/ and val/: the share of each class held out for testing.
    #[arg(long)]
    pub val_fraction: Option<f64>,
    /// Seed of the --val-fraction split (its own, so train and report see the same split whatever
    /// the training seed).
    #[arg(long, default_value_t = 0)]
    pub split_seed: u64,
    /// Folder datasets: fail on the first file that cannot be decoded instead of skipping it.
    #[arg(long)]
    pub strict: bool,
    /// Folder datasets: decode images per batch from their files (`on`), hold them all in memory
    /// (`off`), or stream when the decoded images exceed --cache-mb (`auto`). Results are identical.
    #[arg(long, value_enum, default_value = "auto")]
    pub stream: data::folder::Storage,
    /// Streamed folders: MiB of decoded images kept in memory between batches.
    #[arg(long, default_value_t = data::folder::DEFAULT_CACHE_MB)]
    pub cache_mb: usize,
    /// Normalisation: the dataset's own constants (CIFAR's for CIFAR, ImageNet's for folders), named
    /// ones, or `auto` (computed from the training images).
    #[arg(long, value_enum, default_value = "dataset")]
    pub normalize: NormalizeKind,
    /// Per-channel means (e.g. 0.485,0.456,0.406), with --std; override --normalize.
    #[arg(long, value_delimiter = ',', requires = "std")]
    pub mean: Vec<f32>,
    /// Per-channel standard deviations, with --mean.
    #[arg(long, value_delimiter = ',', requires = "mean")]
    pub std: Vec<f32>,
    /// Synthetic dataset settings as JSON, e.g. '{"train_per_class": 300, "noise": 20}' (for a report: the
    /// ones the models were trained on).
    #[arg(long)]
    pub synth: Option<String>,
}

pub fn parse_synth(json: &str) -> anyhow::Result<SynthConfig> {
    let cfg: SynthConfig = serde_json::from_str(json).context("--synth: not a synthetic dataset configuration")?;
    cfg.validate().context("--synth")?;
    Ok(cfg)
}

impl DataArgs {
    /// Loads the dataset; without `--synth` the synthetic one uses its defaults with `seed`.
    pub fn load(&self, seed: u64) -> anyhow::Result<DataSplit> {
        let synth = match &self.synth {
            Some(j) => parse_synth(j)?,
            None => SynthConfig { seed, ..Default::default() },
        };
        let need = || self.data_dir.clone().context("--data-dir is required for this dataset");
        let mut split = match self.dataset.unwrap_or(DatasetKind::Synthetic) {
            DatasetKind::Synthetic => data::synthetic::try_builtin_dataset(&synth)?,
            DatasetKind::Cifar10 => data::cifar::load_cifar10(need()?)?,
            DatasetKind::Cifar100 => data::cifar::load_cifar100(need()?)?,
            DatasetKind::Mnist => data::mnist::load_mnist(need()?)?,
            DatasetKind::Folder => {
                let opts = data::folder::FolderOptions {
                    val_fraction: self.val_fraction,
                    seed: self.split_seed,
                    strict: self.strict,
                    storage: self.stream,
                    cache_bytes: self.cache_mb.saturating_mul(1 << 20),
                    ..data::folder::FolderOptions::new(self.image_size)
                };
                data::folder::load_folder_dataset(need()?, &opts)?
            }
        };
        if let Some(h) = self.hierarchy(&split.train.class_names)? {
            split.set_hierarchy(h);
        }
        let norm = self.normalization(&split.train)?;
        split.train.norm = norm.clone();
        split.test.norm = norm;
        // What the user should know about the files (also in the report's appendix).
        for (k, v) in &split.train.provenance {
            if [data::folder::SKIPPED, data::cifar::ABSENT_NOTE].contains(&k.as_str()) {
                eprintln!("note: {} (train): {k}: {v}", split.train.name);
            }
        }
        if let Some((k, v)) = split.test.provenance.iter().find(|(k, _)| k == data::folder::SKIPPED) {
            eprintln!("note: {} (test): {k}: {v}", split.test.name);
        }
        Ok(split)
    }

    /// The normalisation asked for, checked against the dataset's channels.
    fn normalization(&self, train: &data::Dataset) -> anyhow::Result<data::Normalization> {
        let n = if !self.mean.is_empty() {
            data::Normalization { mean: self.mean.clone(), std: self.std.clone() }
        } else {
            match self.normalize {
                NormalizeKind::Dataset => train.norm.clone(),
                NormalizeKind::Imagenet => data::Normalization::imagenet(),
                NormalizeKind::Cifar10 => data::Normalization::cifar10(),
                NormalizeKind::Cifar100 => data::Normalization::cifar100(),
                NormalizeKind::Auto => data::Normalization::of(train),
            }
        };
        anyhow::ensure!(
            n.mean.len() == train.channels && n.std.len() == train.channels,
            "--mean/--std/--normalize: {} means and {} standard deviations for {} channels",
            n.mean.len(),
            n.std.len(),
            train.channels
        );
        anyhow::ensure!(
            n.std.iter().all(|s| s.is_finite() && *s > 0.0) && n.mean.iter().all(|m| m.is_finite()),
            "--std values must be positive and finite, --mean values finite: {:?} / {:?}",
            n.mean,
            n.std
        );
        Ok(n)
    }

    /// The hierarchy asked for with `--hierarchy` or `--hierarchy-sep`, over `classes`.
    pub fn hierarchy(&self, classes: &[String]) -> anyhow::Result<Option<data::Hierarchy>> {
        Ok(match (&self.hierarchy, &self.hierarchy_sep) {
            (Some(p), _) => Some(data::read_hierarchy(p, classes)?),
            (None, Some(sep)) => Some(data::Hierarchy::from_separator(classes, sep)?),
            (None, None) => None,
        })
    }
}
