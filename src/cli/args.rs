//! The command line's arguments (clap): `demo`, `report`, `train`, `grid`, `export`, `info` and the
//! benchmarks.
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

pub use super::data_args::{parse_synth, DataArgs, DatasetKind};
use crate::data;
use crate::train::{Schedule, TrainConfig};

#[derive(Parser)]
#[command(name = "kdscope", version, about = "Knowledge-distillation experiments: train, distill, measure, explain")]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ScheduleKind {
    Cosine,
    Multistep,
    Constant,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Train a ResNet-56 teacher, a ResNet-20 alone and a ResNet-20 with KD on the built-in dataset.
    Demo {
        #[arg(long, default_value = "runs/demo")]
        out: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Epochs of the teacher (default 12).
        #[arg(long)]
        teacher_epochs: Option<usize>,
        /// Epochs of each student (default 5).
        #[arg(long)]
        student_epochs: Option<usize>,
        /// Training images per class of the synthetic dataset.
        #[arg(long)]
        train_per_class: Option<usize>,
        /// Distillation method of the KD student (kd-mse: KD-Lib's CE + T²·MSE form; kd: KL·T²).
        #[arg(long, default_value = "kd-mse")]
        method: String,
        /// Synthetic dataset settings as JSON (see `train --synth`).
        #[arg(long)]
        synth: Option<String>,
        /// Where the teacher-vs-student HTML report goes.
        #[arg(long, default_value = "reports/demo.html")]
        report: PathBuf,
        #[arg(long)]
        quiet: bool,
    },
    /// Build the teacher-vs-student HTML report from two checkpoints (evaluated on a dataset's test split).
    Report(ReportArgs),
    /// Train one model (optionally distilled from a teacher checkpoint).
    Train(TrainArgs),
    /// Write every chart of a report as SVG and PNG (plotly.js's own export in headless Chromium, so the
    /// files have the page's data and styling), in page order, with figures.json naming each.
    Figures {
        /// The report (an HTML file kdscope wrote).
        #[arg(long)]
        report: PathBuf,
        /// The folder the figures go to (created).
        #[arg(long)]
        out: PathBuf,
    },
    /// Run an experiment grid (methods × pairs × seeds × hyper-parameters) from a JSON file;
    /// resumable: run it again to continue. Writes report.html, runs.csv, summary.csv and LaTeX tables.
    Grid {
        /// Grid configuration (see `kdscope grid --example`).
        #[arg(long, required_unless_present = "example")]
        config: Option<PathBuf>,
        #[arg(long, default_value = "runs/grid")]
        out: PathBuf,
        /// Print an example configuration (the [Re] ReviewKD ablation on the built-in dataset) and exit.
        #[arg(long)]
        example: bool,
        #[command(flatten)]
        data: DataArgs,
        #[command(flatten)]
        slurm: SlurmArgs,
        /// Run only run N of the grid (0-based, in grid order), its teacher already trained: what each
        /// task of the Slurm array runs.
        #[arg(long, conflicts_with_all = ["slurm", "teachers_only", "collect"])]
        run_index: Option<usize>,
        /// Only train (or load) the teachers the grid needs: the Slurm teacher job.
        #[arg(long, conflicts_with_all = ["slurm", "collect"])]
        teachers_only: bool,
        /// Only gather the finished runs into runs.csv, summary.csv, the LaTeX tables and report.html
        /// (the Slurm collect job); fails, naming them, while runs are missing.
        #[arg(long, conflicts_with = "slurm")]
        collect: bool,
    },
    /// Write a dataset (by default the built-in one) in CIFAR-100's binary layout: train.bin, test.bin
    /// (coarse label, fine label, 3072 pixel bytes per record) and the two names files, to train
    /// reference models on the same images elsewhere (benches/synth_pytorch.py).
    Export {
        #[command(flatten)]
        data: DataArgs,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Print architectures with their exact parameter counts.
    Info {
        #[arg(long, default_value_t = 100)]
        classes: usize,
    },
    /// Training, inference and KD-step throughput (images/s) at batch 128 and 32, on the CPU it names.
    Bench {
        /// Architectures whose training step and inference are timed (empty: none).
        #[arg(long, value_delimiter = ',', default_value = "resnet20,resnet56")]
        archs: Vec<String>,
        /// KD steps to time, TEACHER:STUDENT (the anchor script's `kd` command), e.g. resnet56:resnet20.
        #[arg(long, value_delimiter = ',')]
        kd: Vec<String>,
        /// Training batches, each timed in turn.
        #[arg(long, value_delimiter = ',', default_value = "128,32")]
        batch: Vec<usize>,
        /// Inference batch (default: twice each training batch).
        #[arg(long)]
        infer_batch: Option<usize>,
        /// Image side in pixels (32: CIFAR; 224: ImageNet-style models).
        #[arg(long, default_value_t = 32)]
        size: usize,
        #[arg(long, default_value_t = 5)]
        iters: usize,
        #[arg(long, default_value_t = 3)]
        reps: usize,
        /// After the timed runs, profile `iters` more training steps and inference forwards per op (forward, backward).
        #[arg(long)]
        profile: bool,
    },
    /// Time saliency maps (input-size maps for N test images of the built-in dataset, untrained model).
    BenchExplain {
        #[arg(long, default_value = "resnet56")]
        arch: String,
        #[arg(long, default_value_t = 1000)]
        images: usize,
        #[arg(long, default_value_t = 100)]
        batch: usize,
        #[arg(long, value_delimiter = ',', default_value = "grad-cam")]
        methods: Vec<String>,
        #[arg(long, default_value_t = 3)]
        reps: usize,
    },
    /// Mutation-fuzzes every reader of outside bytes (datasets, checkpoints, logits, configs): reports
    /// inputs, panics, the slowest input and peak memory per reader; exits with status 1 on a panic and
    /// 3 on an input slower than --timeout-s (inputs kept in --out).
    Fuzz {
        /// Readers to fuzz, comma-separated (default: all; --list names them).
        #[arg(long, value_delimiter = ',')]
        targets: Vec<String>,
        /// Mutated inputs per reader.
        #[arg(long, default_value_t = 10_000)]
        inputs: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Work folder: inputs are written there, and crashing or hanging ones kept.
        #[arg(long, default_value = "fuzz-out")]
        out: PathBuf,
        /// Seconds one input may run before it counts as a hang.
        #[arg(long, default_value_t = 5.0)]
        timeout_s: f64,
        /// List the readers and exit.
        #[arg(long)]
        list: bool,
    },
    /// Times reading an image folder at `--size` (decode, shorter-side resize, centre crop, in
    /// parallel) and one epoch of augmented batches (random-resized crop + flip, normalised), with
    /// the peak memory (benches/data_folder_pytorch.py times torchvision on the same files).
    BenchData {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 224)]
        size: usize,
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Stream the images from their files (`on`) or decode them all first (`off`).
        #[arg(long, value_enum, default_value = "off")]
        stream: crate::data::folder::Storage,
        /// Streamed: MiB of decoded images cached.
        #[arg(long, default_value_t = crate::data::folder::DEFAULT_CACHE_MB)]
        cache_mb: usize,
    },
    /// Times DarkSight and t-SNE on seeded synthetic predictions (`embed::synthetic_logits`).
    BenchEmbed {
        #[arg(long, default_value_t = 10000)]
        points: usize,
        #[arg(long, default_value_t = 20)]
        classes: usize,
        /// t-SNE gradient: auto, exact or bh.
        #[arg(long, default_value = "auto")]
        tsne_method: String,
        /// Which embeddings to time.
        #[arg(long, value_delimiter = ',', default_value = "darksight,tsne")]
        run: Vec<String>,
        /// Also write the probabilities as CSV (for benches/embed_opentsne.py).
        #[arg(long)]
        write_input: Option<PathBuf>,
        #[arg(long)]
        progress: bool,
    },
}

/// Arguments of `kdscope train`.
#[derive(clap::Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[arg(long, default_value = "resnet20")]
    pub arch: String,
    /// Method: ce, kd, kd-mse, fitnet, at, pkt, rkd, vid, crd, ofd, dkd, reviewkd, reviewkd-step0…4
    /// (`kdscope info` describes them).
    #[arg(long, default_value = "ce")]
    pub method: String,
    /// Teacher checkpoint for distillation methods: kdscope's, a PyTorch `.pth` / `.pt` / `.tar`
    /// (`{'model': …}`, `module.` … found by themselves; `file.pth#model.teacher` names the subtree) or a
    /// plain safetensors file.
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// The teacher's architecture (inferred from its tensors when not given).
    #[arg(long)]
    pub teacher_arch: Option<String>,
    /// Load checkpoints whose tensors hold NaN or infinite values (refused by default).
    #[arg(long)]
    pub allow_non_finite: bool,
    #[arg(long, default_value_t = 30)]
    pub epochs: usize,
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 0.05)]
    pub lr: f64,
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    #[arg(long)]
    pub nesterov: bool,
    #[arg(long, default_value_t = 5e-4)]
    pub weight_decay: f64,
    #[arg(long, value_enum, default_value = "cosine")]
    pub schedule: ScheduleKind,
    /// Milestones for the multistep schedule (epochs), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "150,180,210")]
    pub milestones: Vec<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Use the standard CIFAR-100 preset (240 epochs, LR 0.05 x0.1 at 150/180/210, batch 64).
    #[arg(long)]
    pub cifar100_preset: bool,
    /// Output checkpoint (resumed from if it exists and --resume is given).
    #[arg(long, default_value = "runs/model.safetensors")]
    pub out: PathBuf,
    #[arg(long)]
    pub resume: bool,
    /// Training augmentation: `cifar` (4-pixel padded crop + flip), `imagenet` (torchvision's
    /// random-resized crop + flip), `none`; `auto` is `imagenet` for image folders larger than 32 px,
    /// `cifar` otherwise.
    #[arg(long, value_enum, default_value = "auto")]
    pub augment: AugmentKind,
}

/// Training augmentation (`--augment`).
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum AugmentKind {
    Auto,
    Cifar,
    Imagenet,
    None,
}

impl TrainArgs {
    /// The augmentation `--augment` names for this dataset.
    fn augment(&self) -> data::Augment {
        let folder = matches!(self.data.dataset, Some(DatasetKind::Folder)) && self.data.image_size > 32;
        match self.augment {
            AugmentKind::Auto if folder => data::Augment::IMAGENET,
            AugmentKind::Auto | AugmentKind::Cifar => data::Augment::STANDARD,
            AugmentKind::Imagenet => data::Augment::IMAGENET,
            AugmentKind::None => data::Augment::NONE,
        }
    }

    /// The training configuration these arguments describe.
    pub fn config(&self) -> TrainConfig {
        if self.cifar100_preset {
            return TrainConfig { seed: self.seed, augment: self.augment(), ..TrainConfig::cifar100_standard() };
        }
        let schedule = match self.schedule {
            ScheduleKind::Cosine => Schedule::Cosine { min_lr: 0.0 },
            ScheduleKind::Multistep => Schedule::MultiStep { milestones: self.milestones.clone(), gamma: 0.1 },
            ScheduleKind::Constant => Schedule::Constant,
        };
        TrainConfig {
            epochs: self.epochs,
            batch_size: self.batch_size,
            lr: self.lr,
            momentum: self.momentum,
            nesterov: self.nesterov,
            weight_decay: self.weight_decay,
            schedule,
            seed: self.seed,
            augment: self.augment(),
            ..TrainConfig::default()
        }
    }
}

/// `kdscope grid --slurm`: write (and with --submit, submit) Slurm jobs instead of running the grid.
#[derive(clap::Args)]
pub struct SlurmArgs {
    /// Write Slurm jobs under OUT/slurm/ (teachers, an array over the runs still to do, collect) instead
    /// of running the grid here; OUT must be on a filesystem every node sees.
    #[arg(long)]
    pub slurm: bool,
    /// Submit the jobs with sbatch and print their ids (otherwise print how to submit them).
    #[arg(long, requires = "slurm")]
    pub submit: bool,
    /// Partition of every job.
    #[arg(long, requires = "slurm")]
    pub partition: Option<String>,
    /// Time limit of every job (HH:MM:SS).
    #[arg(long, requires = "slurm")]
    pub time: Option<String>,
    /// CPUs of each task (kdscope's threads).
    #[arg(long, requires = "slurm", default_value_t = 2)]
    pub cpus_per_task: usize,
    /// Memory of each task (sbatch --mem, e.g. 8G).
    #[arg(long, requires = "slurm")]
    pub mem: Option<String>,
    /// A further #SBATCH setting, verbatim (repeatable): --sbatch-arg=--account=lab.
    #[arg(long, requires = "slurm", allow_hyphen_values = true)]
    pub sbatch_arg: Vec<String>,
    /// At most this many runs at once (--array=…%K).
    #[arg(long, requires = "slurm")]
    pub max_concurrent: Option<usize>,
    /// A shell line every job runs before kdscope (repeatable): --setup 'module load gcc'.
    #[arg(long, requires = "slurm", allow_hyphen_values = true)]
    pub setup: Vec<String>,
}

/// Arguments of `kdscope report`.
#[derive(clap::Args)]
pub struct ReportArgs {
    /// Teacher checkpoint: kdscope's (its training history is read from the train-state file beside it),
    /// a PyTorch `.pth` / `.pt` / `.tar` or a plain safetensors file (`file.pth#model.teacher` names the
    /// subtree holding the state dict when guessing is ambiguous).
    #[arg(long, required_unless_present = "teacher_logits", conflicts_with = "teacher_logits")]
    pub teacher: Option<PathBuf>,
    /// Student checkpoint (same kinds as --teacher).
    #[arg(long, required_unless_present = "student_logits", conflicts_with = "student_logits")]
    pub student: Option<PathBuf>,
    /// Further checkpoints shown in the header table (e.g. the student trained alone).
    #[arg(long)]
    pub other: Vec<PathBuf>,
    /// Architectures of the checkpoints (inferred from their tensors when not given).
    #[arg(long)]
    pub teacher_arch: Option<String>,
    /// Load checkpoints whose tensors hold NaN or infinite values (refused by default).
    #[arg(long)]
    pub allow_non_finite: bool,
    #[arg(long)]
    pub student_arch: Option<String>,
    /// The teacher's test logits or probabilities made elsewhere (.npy N x C, or .csv / .parquet with
    /// optional index and label columns): the report is built from predictions, without models.
    #[arg(long, requires = "student_logits")]
    pub teacher_logits: Option<PathBuf>,
    #[arg(long, requires = "teacher_logits")]
    pub student_logits: Option<PathBuf>,
    /// Further predictions for the header table.
    #[arg(long)]
    pub other_logits: Vec<PathBuf>,
    /// Labels of the predictions (.npy, .csv or one per line); taken from the logits files or the
    /// dataset when not given.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Class names (one per line or a JSON list); from the dataset when given, else `class_0` ….
    #[arg(long)]
    pub class_names: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
    /// KD method of the student, for the header (e.g. kd-mse).
    #[arg(long, default_value = "")]
    pub method: String,
    /// Test images per class in the image corpus (default: 20, fewer above 30 classes so the corpus holds
    /// about 600 images).
    #[arg(long)]
    pub images_per_class: Option<usize>,
    #[arg(long, default_value = "reports/report.html")]
    pub out: PathBuf,
    /// Add the explanations section and saliency maps in the image pop-up (the first `--other`, e.g. the
    /// student trained alone, is the base model: its quality row and UniCAM's reference).
    #[arg(long)]
    pub explain: bool,
    /// Saliency methods offered in the pop-up (with --explain).
    #[arg(long, value_delimiter = ',', default_value = "grad-cam,grad-cam++,guided-backprop")]
    pub explain_methods: Vec<String>,
    /// Add the embeddings section (DarkSight and t-SNE of both models' test predictions).
    #[arg(long)]
    pub embed: bool,
    /// Test images embedded (a seeded sample; the report holds a thumbnail of each).
    #[arg(long, default_value_t = 1000)]
    pub embed_points: usize,
}
