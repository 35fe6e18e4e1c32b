//! `kdscope` command line: the demo, one configurable training run, model info and the benchmark.
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use kdscope::data::{self, synthetic::SynthConfig, DataSplit};
use kdscope::demo::{self, DemoConfig};
use kdscope::models::{Model, ModelSpec};
use kdscope::train::{self, checkpoint, RunOptions, Schedule, TrainConfig};

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
    let data = args.data.load(SynthConfig::default().seed)?;
    let name = |p: &PathBuf| p.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    let load = |p: &PathBuf| -> anyhow::Result<_> {
        let m = checkpoint::load_model(p)?;
        anyhow::ensure!(
            m.spec.num_classes == data.test.num_classes(),
            "{}: {} classes, but the dataset has {}",
            p.display(),
            m.spec.num_classes,
            data.test.num_classes()
        );
        Ok(m)
    };
    let ev = |p: &PathBuf, m: &Model| kdscope::experiment::evaluate_model(&name(p), m, &data.test);
    let (teacher, student) = (load(&args.teacher)?, load(&args.student)?);
    let others = args.other.iter().map(load).collect::<anyhow::Result<Vec<_>>>()?;
    let mut r = kdscope::report::KdReport::new(ev(&args.teacher, &teacher), ev(&args.student, &student))
        .method(&args.method, &[])
        .images_per_class(args.images_per_class)
        .fact("checkpoints", [&args.teacher, &args.student]);
    for (p, m) in args.other.iter().zip(&others) {
        r = r.other(ev(p, m));
    }
    if args.explain {
        let cfg = kdscope::explain::SectionConfig { methods: args.explain_methods.clone(), ..Default::default() };
        let (tn, sn) = (name(&args.teacher), name(&args.student));
        let base_name = args.other.first().map(&name);
        let base = base_name.as_deref().zip(others.first());
        let corpus = r.corpus_indices(&data.test);
        let section = kdscope::explain::section((&tn, &teacher), (&sn, &student), base, &data.test, &corpus, &cfg)?;
        r = r.explanations(section);
    }
    if args.embed {
        let mut cfg = kdscope::embed::EmbedConfig { max_points: Some(args.embed_points), ..Default::default() };
        cfg.darksight.progress = true;
        cfg.tsne.progress = true;
        let (tn, sn) = (name(&args.teacher), name(&args.student));
        r = r.embeddings(kdscope::embed::section((&tn, &teacher), (&sn, &student), &data.test, &cfg)?);
    }
    for p in [&args.teacher, &args.student].into_iter().chain(&args.other) {
        if let Some(h) = checkpoint::read_history(p)? {
            r = r.history(&name(p), &h);
        }
    }
    let path = r.write(&data.test, &args.out)?;
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
            let cfg = args.config();
            let mut spec = ModelSpec::new(&args.arch, data.train.num_classes())?;
            spec.in_channels = data.train.channels;
            let mut model = Model::new(spec, args.seed);
            let teacher = args.teacher.as_ref().map(checkpoint::load_model).transpose()?;
            let mut distiller = kdscope::distill::by_name(&args.method)?;
            println!(
                "{} on {} ({} train / {} test images), {} parameters",
                model.name(),
                data.train.name,
                data.train.len(),
                data.test.len(),
                model.num_params()
            );
            let opts = RunOptions {
                label: model.name(),
                checkpoint: Some(args.out.clone()),
                resume: args.resume,
                progress: true,
                stop_after: None,
            };
            let h = train::fit(&mut model, teacher.as_ref(), distiller.as_mut(), &data, &cfg, &opts)?;
            let last = h.last().context("no epoch was run")?;
            println!(
                "final test accuracy {:.2}% (best {:.2}%), checkpoint {}",
                100.0 * last.test_acc,
                100.0 * h.best_test_acc(),
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
            println!("{:<12} {:>12}", "model", "parameters");
            for &a in kdscope::models::ZOO {
                println!("{:<12} {:>12}", a, Model::build(a, classes, 0)?.num_params());
            }
            println!("\n{:<32} description", "method");
            for (m, d) in kdscope::distill::METHODS {
                println!("{m:<32} {d}");
            }
        }
        Cmd::BenchEmbed { points, classes, tsne_method, run, write_input, progress } => {
            use kdscope::embed;
            let (logits, labels) = embed::synthetic_logits(points, classes, 0);
            let probs: Vec<f32> =
                embed::log_softmax_rows(&logits, classes, 1.0).iter().map(|v| v.exp() as f32).collect();
            if let Some(path) = write_input {
                let mut csv = String::new();
                for row in probs.chunks(classes) {
                    csv += &row.iter().map(|v| format!("{v:.7e}")).collect::<Vec<_>>().join(",");
                    csv.push('\n');
                }
                kdscope::train::checkpoint::write_atomic(&path, csv.as_bytes())?;
            }
            let predicted =
                kdscope::train::Predictions { num_classes: classes, labels, logits: logits.clone() }.predicted();
            if run.iter().any(|r| r == "darksight") {
                let cfg = embed::DarkSightConfig { progress, ..Default::default() };
                let ds = embed::darksight(&logits, classes, &cfg)?;
                println!(
                    "RESULT darksight_n{points}_c{classes} {:.2} s (2000 epochs) final symmetric KL {:.4} agreement {:.4}",
                    ds.seconds,
                    ds.final_loss,
                    ds.agreement(&predicted)
                );
            }
            if run.iter().any(|r| r == "tsne") {
                let method = match tsne_method.as_str() {
                    "auto" => embed::TsneMethod::Auto,
                    "exact" => embed::TsneMethod::Exact,
                    "bh" | "barnes-hut" => embed::TsneMethod::BarnesHut,
                    other => anyhow::bail!("unknown t-SNE method {other:?} (auto, exact, bh)"),
                };
                let cfg = embed::TsneConfig { method, progress, ..Default::default() };
                let t = embed::tsne(&probs, classes, &cfg)?;
                println!(
                    "RESULT tsne_{:?}_n{points}_c{classes} {:.2} s ({} iterations) KL {:.4}",
                    t.method, t.seconds, t.iterations, t.kl
                );
            }
        }
        Cmd::BenchExplain { arch, images, batch, methods, reps } => {
            let per_class = images.div_ceil(20);
            let data = kdscope::data::synthetic::builtin_dataset(&kdscope::data::synthetic::SynthConfig {
                train_per_class: 1,
                test_per_class: per_class,
                ..Default::default()
            });
            let model = Model::build(&arch, 20, 0)?;
            let idx: Vec<usize> = (0..images.min(data.test.len())).collect();
            let targets: Vec<usize> = idx.iter().map(|&i| data.test.labels[i]).collect();
            for name in &methods {
                let m = kdscope::explain::method(name)?;
                for _ in 0..reps {
                    let t = std::time::Instant::now();
                    let maps = kdscope::explain::explain_images(m.as_ref(), &model, &data.test, &idx, &targets, batch)?;
                    let s = t.elapsed().as_secs_f64();
                    println!(
                        "RESULT explain_{}_{}_n{}_b{} {:.3} s {:.1} img/s ({} maps {}x{})",
                        m.name(),
                        arch,
                        idx.len(),
                        batch,
                        s,
                        idx.len() as f64 / s,
                        maps.n,
                        maps.h,
                        maps.w
                    );
                }
            }
        }
        Cmd::Bench { archs, batch, iters, reps, profile } => {
            println!("{:<10} {:<6} {:>6} {:>12} {:>10}", "model", "mode", "batch", "s/iter", "img/s");
            for a in &archs {
                let (train, rows) = kdscope::perf::bench_train_profiled(a, batch, iters, reps, profile)?;
                if profile {
                    println!("profile of {iters} training steps of {a} at batch {batch}:");
                    kdscope::perf::print_profile(&rows, iters);
                }
                for r in [train, kdscope::perf::bench_infer(a, 2 * batch, iters, reps)?] {
                    for s in &r.sec_per_iter {
                        println!("RESULT {}_{}_b{} {:.4} {:.1}", r.model, r.mode, r.batch, s, r.batch as f64 / s);
                    }
                    println!(
                        "{:<10} {:<6} {:>6} {:>12.4} {:>10.1}",
                        r.model,
                        r.mode,
                        r.batch,
                        r.median(),
                        r.images_per_sec()
                    );
                }
            }
        }
    }
    Ok(())
}
