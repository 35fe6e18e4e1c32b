//! `kdscope` command line: the demo, one configurable training run, model info and the benchmark.
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use kdscope::data::{self, synthetic::SynthConfig, DataSplit};
use kdscope::demo::{self, DemoConfig};
use kdscope::train::{checkpoint, Schedule, TrainConfig};

#[derive(Parser)]
#[command(name = "kdscope", version, about = "Knowledge-distillation experiments: train, distill, measure, explain")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum DatasetKind {
    /// The built-in synthetic dataset (fractals-20; shapes-20 with --synth '{"fractal":false}').
    Synthetic,
    Cifar10,
    Cifar100,
    Mnist,
    /// `DIR/train/<class>/*` and `DIR/test/<class>/*` images.
    Folder,
}

#[derive(Clone, Copy, ValueEnum)]
enum ScheduleKind {
    Cosine,
    Multistep,
    Constant,
}

#[derive(Subcommand)]
enum Cmd {
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
    /// Training and inference throughput (images/s) of ResNet-20 and ResNet-56 at batch 128.
    Bench {
        #[arg(long, value_delimiter = ',', default_value = "resnet20,resnet56")]
        archs: Vec<String>,
        #[arg(long, default_value_t = 128)]
        batch: usize,
        #[arg(long, default_value_t = 5)]
        iters: usize,
        #[arg(long, default_value_t = 3)]
        reps: usize,
        /// After the timed runs, profile `iters` more training steps per op (forward, backward).
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

/// Which dataset a command reads (`train`, `report`).
#[derive(clap::Args)]
struct DataArgs {
    #[arg(long, value_enum, default_value = "synthetic")]
    dataset: DatasetKind,
    /// Dataset directory (not needed for the synthetic dataset).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Image size for folder datasets.
    #[arg(long, default_value_t = 32)]
    image_size: usize,
    /// Synthetic dataset settings as JSON, e.g. '{"train_per_class": 300, "noise": 20}' (for a report: the
    /// ones the models were trained on).
    #[arg(long)]
    synth: Option<String>,
}

fn parse_synth(json: &str) -> anyhow::Result<SynthConfig> {
    serde_json::from_str(json).context("--synth: not a synthetic dataset configuration")
}

impl DataArgs {
    /// Loads the dataset; without `--synth` the synthetic one uses its defaults with `seed`.
    fn load(&self, seed: u64) -> anyhow::Result<DataSplit> {
        let synth = match &self.synth {
            Some(j) => parse_synth(j)?,
            None => SynthConfig { seed, ..Default::default() },
        };
        let need = || self.data_dir.clone().context("--data-dir is required for this dataset");
        Ok(match self.dataset {
            DatasetKind::Synthetic => data::synthetic::builtin_dataset(&synth),
            DatasetKind::Cifar10 => data::cifar::load_cifar10(need()?)?,
            DatasetKind::Cifar100 => data::cifar::load_cifar100(need()?)?,
            DatasetKind::Mnist => data::mnist::load_mnist(need()?)?,
            DatasetKind::Folder => data::folder::load_image_folder_split(need()?, self.image_size)?,
        })
    }
}

/// Arguments of `kdscope train`.
#[derive(clap::Args)]
struct TrainArgs {
    #[command(flatten)]
    data: DataArgs,
    #[arg(long, default_value = "resnet20")]
    arch: String,
    /// Method: ce, kd, kd-mse, fitnet, at, pkt, rkd, vid, crd, ofd, dkd, reviewkd, reviewkd-step0…4
    /// (`kdscope info` describes them).
    #[arg(long, default_value = "ce")]
    method: String,
    /// Teacher checkpoint (kdscope safetensors) for distillation methods.
    #[arg(long)]
    teacher: Option<PathBuf>,
    #[arg(long, default_value_t = 30)]
    epochs: usize,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    #[arg(long, default_value_t = 0.05)]
    lr: f64,
    #[arg(long, default_value_t = 0.9)]
    momentum: f64,
    #[arg(long)]
    nesterov: bool,
    #[arg(long, default_value_t = 5e-4)]
    weight_decay: f64,
    #[arg(long, value_enum, default_value = "cosine")]
    schedule: ScheduleKind,
    /// Milestones for the multistep schedule (epochs), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "150,180,210")]
    milestones: Vec<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Use the standard CIFAR-100 preset (240 epochs, LR 0.05 x0.1 at 150/180/210, batch 64).
    #[arg(long)]
    cifar100_preset: bool,
    /// Output checkpoint (resumed from if it exists and --resume is given).
    #[arg(long, default_value = "runs/model.safetensors")]
    out: PathBuf,
    #[arg(long)]
    resume: bool,
}

impl TrainArgs {
    /// The training configuration these arguments describe.
    fn config(&self) -> TrainConfig {
        if self.cifar100_preset {
            return TrainConfig { seed: self.seed, ..TrainConfig::cifar100_standard() };
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
            ..TrainConfig::default()
        }
    }
}

/// Arguments of `kdscope report`.
#[derive(clap::Args)]
struct ReportArgs {
    /// Teacher checkpoint (kdscope safetensors; its training history is read from the train-state file beside it).
    #[arg(long)]
    teacher: PathBuf,
    /// Student checkpoint.
    #[arg(long)]
    student: PathBuf,
    /// Further checkpoints shown in the header table (e.g. the student trained alone).
    #[arg(long)]
    other: Vec<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
    /// KD method of the student, for the header (e.g. kd-mse).
    #[arg(long, default_value = "")]
    method: String,
    /// Test images per class in the image corpus.
    #[arg(long, default_value_t = kdscope::report::kd::DEFAULT_IMAGES_PER_CLASS)]
    images_per_class: usize,
    #[arg(long, default_value = "reports/report.html")]
    out: PathBuf,
    /// Add the explanations section and saliency maps in the image pop-up (the first `--other`, e.g. the
    /// student trained alone, is the base model: its quality row and UniCAM's reference).
    #[arg(long)]
    explain: bool,
    /// Saliency methods offered in the pop-up (with --explain).
    #[arg(long, value_delimiter = ',', default_value = "grad-cam,grad-cam++,guided-backprop")]
    explain_methods: Vec<String>,
    /// Add the embeddings section (DarkSight and t-SNE of both models' test predictions).
    #[arg(long)]
    embed: bool,
    /// Test images embedded (a seeded sample; the report holds a thumbnail of each).
    #[arg(long, default_value_t = 2000)]
    embed_points: usize,
}

fn report(args: ReportArgs) -> anyhow::Result<()> {
    use kdscope::run::pipeline::{write_kd_report, ReportPlan, Shown};
    let data = args.data.load(SynthConfig::default().seed)?;
    let name = |p: &PathBuf| p.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    let paths: Vec<&PathBuf> = [&args.teacher, &args.student].into_iter().chain(&args.other).collect();
    let mut models = Vec::new();
    let mut histories = Vec::new();
    for p in &paths {
        let m = checkpoint::load_model(p)?;
        anyhow::ensure!(
            m.spec.num_classes == data.test.num_classes(),
            "{}: {} classes, but the dataset has {}",
            p.display(),
            m.spec.num_classes,
            data.test.num_classes()
        );
        models.push(m);
        if let Some(h) = checkpoint::read_history(p)? {
            histories.push((name(p), h));
        }
    }
    let shown: Vec<Shown> = paths.iter().zip(&models).map(|(p, m)| Shown::new(&name(p), m)).collect();
    let mut embed = kdscope::embed::EmbedConfig { max_points: Some(args.embed_points), ..Default::default() };
    embed.darksight.progress = true;
    embed.tsne.progress = true;
    let plan = ReportPlan {
        method: args.method.clone(),
        images_per_class: Some(args.images_per_class),
        histories,
        explain: args
            .explain
            .then(|| kdscope::explain::SectionConfig { methods: args.explain_methods.clone(), ..Default::default() }),
        embed: args.embed.then_some(embed),
        facts: vec![("checkpoints".into(), serde_json::to_value([&args.teacher, &args.student])?)],
        ..Default::default()
    };
    let path = write_kd_report(&shown[0], &shown[1], &shown[2..], &data.test, &plan, &args.out)?;
    println!("report written to {}", path.display());
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Demo { out, seed, teacher_epochs, student_epochs, train_per_class, method, synth, report, quiet } => {
            let mut cfg = DemoConfig { out_dir: out, method, report: Some(report), ..DemoConfig::default() };
            if let Some(j) = synth {
                cfg.data = parse_synth(&j)?;
            }
            cfg.train.seed = seed;
            cfg.data.seed = seed;
            if let Some(e) = teacher_epochs {
                cfg.teacher_epochs = e;
            }
            if let Some(e) = student_epochs {
                cfg.student_epochs = e;
            }
            if let Some(n) = train_per_class {
                cfg.data.train_per_class = n;
            }
            let t = std::time::Instant::now();
            let r = demo::run(&cfg, !quiet)?;
            println!("{}", r.table());
            println!(
                "total {:.1}s; checkpoints and summary.json in {}; report {}",
                t.elapsed().as_secs_f64(),
                cfg.out_dir.display(),
                cfg.report.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
            );
        }
        Cmd::Report(args) => report(args)?,
        Cmd::Train(args) => {
            let data = args.data.load(args.seed)?;
            let recipe = kdscope::run::Recipe::new(&args.arch)
                .method(&args.method)
                .config(args.config())
                .seed(args.seed)
                .checkpoint(&args.out)
                .resume(args.resume);
            let model = recipe.build(&data)?;
            let recipe = recipe.name(&model.name());
            let teacher = args.teacher.as_ref().map(checkpoint::load_model).transpose()?;
            println!(
                "{} on {} ({} train / {} test images), {} parameters",
                model.name(),
                data.train.name,
                data.train.len(),
                data.test.len(),
                model.num_params()
            );
            let run = recipe.fit(model, teacher.as_ref(), &data)?;
            let last = run.history.last().context("no epoch was run")?;
            println!(
                "final test accuracy {:.2}% (best {:.2}%), checkpoint {}",
                100.0 * last.test_acc,
                100.0 * run.history.best_test_acc(),
                args.out.display()
            );
        }
        Cmd::Grid { config, out, example, data } => {
            use kdscope::grid::{Grid, Pair};
            if example {
                let train = TrainConfig { epochs: 30, ..TrainConfig::short_cosine() };
                let g = Grid::reviewkd_ablation(Pair::new("resnet56", "resnet20"), &[0, 1, 2], train);
                println!("{}", serde_json::to_string_pretty(&g)?);
                return Ok(());
            }
            let path = config.context("--config is required")?;
            let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            let grid: Grid =
                serde_json::from_str(&text).with_context(|| format!("{}: not a grid configuration", path.display()))?;
            let split = data.load(grid.teacher_seed)?;
            let results = grid.run(&split, &out, true)?;
            let report = results.export(&out)?;
            let table = results.table(kdscope::grid::Metric::Best)?;
            let cols = table.columns();
            println!("{}", cols.iter().map(|c| c.name().to_string()).collect::<Vec<_>>().join(" | "));
            for i in 0..table.height() {
                let cells: Vec<String> = cols
                    .iter()
                    .map(|c| c.get(i).map(|v| kdscope::notebook::cell_text(&v)).unwrap_or_default())
                    .collect();
                println!("{}", cells.join(" | "));
            }
            println!("report {}", report.display());
        }
        Cmd::Export { data, out, seed } => {
            let split = data.load(seed)?;
            data::cifar::write_cifar100_dir(&out, &split)?;
            println!(
                "{}: {} train / {} test images, {} classes -> {}",
                split.train.name,
                split.train.len(),
                split.test.len(),
                split.train.num_classes(),
                out.display()
            );
        }
        Cmd::Info { classes } => {
            println!("{}", kdscope::models::zoo_table(classes)?);
            print!("{}", kdscope::distill::methods_table());
        }
        Cmd::BenchEmbed { points, classes, tsne_method, run, write_input, progress } => {
            kdscope::bench::embed(points, classes, &tsne_method, &run, write_input.as_deref(), progress)?
        }
        Cmd::BenchExplain { arch, images, batch, methods, reps } => {
            kdscope::bench::explain(&arch, images, batch, &methods, reps)?
        }
        Cmd::Bench { archs, batch, iters, reps, profile } => {
            kdscope::bench::throughput(&archs, batch, iters, reps, profile)?
        }
    }
    Ok(())
}
