//! `kdscope`'s commands: each parses nothing itself and calls library functions ([`run`] is what
//! `main` calls with the parsed arguments).
mod args;
mod data_args;
mod grid;

use std::path::{Path, PathBuf};

use anyhow::Context;

pub use args::{Cli, Cmd, DataArgs, DatasetKind, ReportArgs, ScheduleKind, TrainArgs};

use crate::data::synthetic::SynthConfig;
use crate::demo::{self, DemoConfig};
use crate::train::checkpoint;
use args::parse_synth;

/// Runs the command `cli` names.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    crate::nn::ops::cpu::check_simd_env()?;
    #[cfg(target_arch = "x86_64")]
    crate::nn::ops::amx::check_precision_env()?;
    // In a Slurm task: as many threads as CPUs Slurm gave it (unless RAYON_NUM_THREADS says).
    let (cpus, rayon) = (std::env::var("SLURM_CPUS_PER_TASK").ok(), std::env::var("RAYON_NUM_THREADS").ok());
    if let Some(n) = crate::grid::slurm::task_threads(cpus.as_deref(), rayon.as_deref()) {
        let _ = rayon::ThreadPoolBuilder::new().num_threads(n).build_global();
    }
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
        Cmd::Figures { report, out } => {
            let files = crate::report::browser::write_figures(&report, &out)?;
            println!("{} figures written to {} (SVG and PNG each, figures.json)", (files.len() - 1) / 2, out.display());
        }
        Cmd::Train(args) => {
            let data = args.data.load(args.seed)?;
            let recipe = crate::run::Recipe::new(&args.arch)
                .method(&args.method)
                .config(args.config())
                .seed(args.seed)
                .checkpoint(&args.out)
                .resume(args.resume);
            let model = recipe.build(&data)?;
            let recipe = recipe.name(&model.name());
            let teacher = args
                .teacher
                .as_ref()
                .map(|p| import(p, "teacher", args.teacher_arch.as_deref(), args.allow_non_finite))
                .transpose()?;
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
        Cmd::Grid { config, out, example, data, slurm, run_index, teachers_only, collect } => {
            grid::run(grid::GridCall { config, out, example, data, slurm, run_index, teachers_only, collect })?
        }
        Cmd::Export { data, out, seed } => {
            let split = data.load(seed)?;
            crate::data::cifar::write_cifar100_dir(&out, &split)?;
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
            println!("{}", crate::models::zoo_table(classes)?);
            print!("{}", crate::distill::methods_table());
        }
        Cmd::Fuzz { targets, inputs, seed, out, timeout_s, list } => {
            fuzz(&targets, inputs, seed, &out, timeout_s, list)?
        }
        Cmd::BenchData { data_dir, size, batch, stream, cache_mb } => {
            crate::bench::data_folder(&data_dir, size, batch, stream, cache_mb)?
        }
        Cmd::BenchEmbed { points, classes, tsne_method, run, write_input, progress } => {
            crate::bench::embed(points, classes, &tsne_method, &run, write_input.as_deref(), progress)?
        }
        Cmd::BenchExplain { arch, images, batch, methods, reps } => {
            crate::bench::explain(&arch, images, batch, &methods, reps)?
        }
        Cmd::Bench { archs, kd, batch, infer_batch, size, iters, reps, profile } => {
            let archs: Vec<String> = archs.into_iter().filter(|a| !a.is_empty()).collect();
            let kd = crate::bench::kd_pairs(&kd)?;
            crate::bench::throughput(&archs, &kd, (&batch, infer_batch, size), iters, reps, profile)?
        }
    }
    Ok(())
}

/// A model from a command-line checkpoint path (`file[#subtree]`), any format [`crate::interop`] reads.
fn import(
    arg: &std::path::Path,
    role: &str,
    arch: Option<&str>,
    allow_non_finite: bool,
) -> anyhow::Result<crate::models::Model> {
    let (path, mut opts) = crate::interop::ImportOptions::from_arg(arg, role, arch);
    opts.allow_non_finite = allow_non_finite;
    crate::interop::import_model(&path, &opts).with_context(|| format!("--{role} {}", arg.display()))
}

fn stem(p: &std::path::Path) -> String {
    let s = p.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    s.split('#').next().unwrap_or_default().to_string()
}

fn embed_config(args: &ReportArgs) -> crate::embed::EmbedConfig {
    let mut embed = crate::embed::EmbedConfig { max_points: Some(args.embed_points), ..Default::default() };
    embed.darksight.progress = true;
    embed.tsne.progress = true;
    embed
}

fn fuzz(names: &[String], inputs: usize, seed: u64, out: &Path, timeout_s: f64, list: bool) -> anyhow::Result<()> {
    let all = crate::fuzz::targets();
    if list {
        for t in &all {
            println!("{}", t.name);
        }
        return Ok(());
    }
    anyhow::ensure!(timeout_s.is_finite() && timeout_s > 0.0, "--timeout-s must be positive, got {timeout_s}");
    if let Some(n) = names.iter().find(|n| !all.iter().any(|t| t.name == n.as_str())) {
        let known: Vec<&str> = all.iter().map(|t| t.name).collect();
        anyhow::bail!("unknown fuzz target '{n}'; the targets are {}", known.join(", "));
    }
    let work = out.join("work");
    println!("fuzzing with seed {seed}, {inputs} inputs per reader; inputs written under {}", work.display());
    let mut panics = 0;
    for t in all.iter().filter(|t| names.is_empty() || names.iter().any(|n| n == t.name)) {
        let o = crate::fuzz::run(t, inputs, seed, &work, out, std::time::Duration::from_secs_f64(timeout_s))?;
        println!("{o}");
        for (n, msg) in o.panics.iter().take(5) {
            println!("    panic at input {n}: {msg} (kept as {}/crash-{}-{n}.bin)", out.display(), t.name);
        }
        panics += o.panics.len();
    }
    println!("peak memory {:.0} MiB", crate::io::peak_memory_mib());
    anyhow::ensure!(panics == 0, "{panics} inputs made a reader panic");
    Ok(())
}

fn report(args: ReportArgs) -> anyhow::Result<()> {
    if args.teacher_logits.is_some() {
        return report_from_logits(args);
    }
    use crate::run::pipeline::{write_kd_report, ReportPlan, Shown};
    let data = args.data.load(SynthConfig::default().seed)?;
    let teacher = args.teacher.clone().context("--teacher is required")?;
    let student = args.student.clone().context("--student is required")?;
    let roles =
        [("teacher", &teacher, args.teacher_arch.as_deref()), ("student", &student, args.student_arch.as_deref())];
    let mut models = Vec::new();
    let mut histories = Vec::new();
    let mut paths = Vec::new();
    for (role, p, arch) in roles.into_iter().chain(args.other.iter().map(|p| ("other", p, None))) {
        let m = import(p, role, arch, args.allow_non_finite)?;
        anyhow::ensure!(
            m.spec.num_classes == data.test.num_classes(),
            "{}: {} classes, but the dataset has {}",
            p.display(),
            m.spec.num_classes,
            data.test.num_classes()
        );
        anyhow::ensure!(
            m.spec.in_channels == data.test.channels,
            "{}: {} takes {}-channel images, but the dataset's have {} channels",
            p.display(),
            m.spec.arch,
            m.spec.in_channels,
            data.test.channels
        );
        crate::models::check_classes(&m, &p.display().to_string(), &data.test.name, &data.test.class_names)?;
        models.push(m);
        if p.exists() {
            if let Some(h) = checkpoint::read_history(p)? {
                histories.push((stem(p), h));
            }
        }
        paths.push(p.clone());
    }
    let shown: Vec<Shown> = paths.iter().zip(&models).map(|(p, m)| Shown::new(&stem(p), m)).collect();
    let plan = ReportPlan {
        method: args.method.clone(),
        images_per_class: args.images_per_class,
        histories,
        explain: args
            .explain
            .then(|| crate::explain::SectionConfig { methods: args.explain_methods.clone(), ..Default::default() }),
        embed: args.embed.then(|| embed_config(&args)),
        facts: vec![("checkpoints".into(), serde_json::to_value([&teacher, &student])?)],
        ..Default::default()
    };
    let path = write_kd_report(&shown[0], &shown[1], &shown[2..], &data.test, &plan, &args.out)?;
    if let Err(e) = data.test.check_stream() {
        // A streamed image that stopped decoding was read as black: do not leave a report built on it.
        let _ = std::fs::remove_file(&path);
        return Err(e).context("the report was not kept");
    }
    println!("report written to {}", path.display());
    Ok(())
}

/// `kdscope report --teacher-logits … --student-logits …`: every section that needs no model.
fn report_from_logits(args: ReportArgs) -> anyhow::Result<()> {
    use crate::interop::logits;
    let tpath = args.teacher_logits.clone().context("--teacher-logits is required")?;
    let spath = args.student_logits.clone().context("--student-logits is required")?;
    let paths: Vec<PathBuf> =
        [tpath.clone(), spath.clone()].into_iter().chain(args.other_logits.iter().cloned()).collect();
    let files: Vec<logits::Logits> = paths.iter().map(logits::read_logits).collect::<anyhow::Result<_>>()?;
    let data = args.data.dataset.map(|_| args.data.load(SynthConfig::default().seed)).transpose()?;
    let labels = match (&args.labels, &data, files.iter().find_map(|f| f.labels.clone())) {
        (Some(p), _, _) => logits::read_labels(p)?,
        (None, Some(d), _) => d.test.labels.clone(),
        (None, None, Some(l)) => l,
        (None, None, None) => {
            anyhow::bail!("no labels: pass --labels, a logits table with a 'label' column, or --dataset")
        }
    };
    let classes = files[0].classes;
    let class_names = match (&args.class_names, &data) {
        (Some(p), _) => logits::read_class_names(p)?,
        (None, Some(d)) => d.test.class_names.clone(),
        (None, None) => (0..classes).map(|c| format!("class_{c}")).collect(),
    };
    let hierarchy = match (args.data.hierarchy(&class_names)?, &data) {
        (Some(h), _) => Some(h),
        (None, Some(d)) => d.test.hierarchy.clone(),
        (None, None) => None,
    };
    let evs: Vec<crate::metrics::Evaluation> = paths
        .iter()
        .zip(&files)
        .map(|(p, f)| logits::evaluation(&stem(p), f, p, &labels, &class_names, hierarchy.as_ref()))
        .collect::<anyhow::Result<_>>()?;
    let test = match data {
        Some(d) => {
            anyhow::ensure!(
                d.test.labels == labels,
                "the labels of the predictions ({} images) are not those of the dataset's test split ({} images)",
                labels.len(),
                d.test.len()
            );
            d.test
        }
        None => logits::split_of(labels, class_names, hierarchy),
    };
    let mut evs = evs.into_iter();
    let (t, s) = (evs.next().expect("teacher"), evs.next().expect("student"));
    let embed = args
        .embed
        .then(|| {
            crate::embed::section_from_predictions(
                (&t.name, &t.predictions),
                (&s.name, &s.predictions),
                &embed_config(&args),
            )
        })
        .transpose()?;
    let mut views = crate::report::KdViews::new(t, s).method(&args.method, &[]);
    if let Some(n) = args.images_per_class {
        views = views.images_per_class(n);
    }
    for o in evs {
        views = views.other(o);
    }
    if let Some(e) = embed {
        views = views.embeddings(e);
    }
    let note = "This report was built from predictions made elsewhere (logits files), without the models: \
                saliency explanations need a model and are left out.";
    if args.explain {
        println!("note: --explain ignored: explanations need a model (pass --teacher/--student checkpoints)");
    }
    let path = views
        .report(&test)?
        .text("Predictions made elsewhere", note)
        .fact("logits_files", serde_json::to_value(&paths)?)
        .fact("explanations", "left out: the report was built from logits, explanations need a model")
        .write(&args.out)?;
    println!("report written to {}", path.display());
    Ok(())
}
