//! `kdscope`'s commands: each parses nothing itself and calls library functions ([`run`] is what
//! `main` calls with the parsed arguments).
mod args;

use std::path::PathBuf;

use anyhow::Context;

pub use args::{Cli, Cmd, DataArgs, DatasetKind, ReportArgs, ScheduleKind, TrainArgs};

use crate::data::synthetic::SynthConfig;
use crate::demo::{self, DemoConfig};
use crate::train::{checkpoint, TrainConfig};
use args::parse_synth;

/// Runs the command `cli` names.
pub fn run(cli: Cli) -> anyhow::Result<()> {
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
            let recipe = crate::run::Recipe::new(&args.arch)
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
            use crate::grid::{Grid, Pair};
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
            let table = results.table(crate::grid::Metric::Best)?;
            let cols = table.columns();
            println!("{}", cols.iter().map(|c| c.name().to_string()).collect::<Vec<_>>().join(" | "));
            for i in 0..table.height() {
                let cells: Vec<String> =
                    cols.iter().map(|c| c.get(i).map(|v| crate::notebook::cell_text(&v)).unwrap_or_default()).collect();
                println!("{}", cells.join(" | "));
            }
            println!("report {}", report.display());
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
        Cmd::BenchEmbed { points, classes, tsne_method, run, write_input, progress } => {
            crate::bench::embed(points, classes, &tsne_method, &run, write_input.as_deref(), progress)?
        }
        Cmd::BenchExplain { arch, images, batch, methods, reps } => {
            crate::bench::explain(&arch, images, batch, &methods, reps)?
        }
        Cmd::Bench { archs, batch, iters, reps, profile } => {
            crate::bench::throughput(&archs, batch, iters, reps, profile)?
        }
    }
    Ok(())
}

fn report(args: ReportArgs) -> anyhow::Result<()> {
    use crate::run::pipeline::{write_kd_report, ReportPlan, Shown};
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
    let mut embed = crate::embed::EmbedConfig { max_points: Some(args.embed_points), ..Default::default() };
    embed.darksight.progress = true;
    embed.tsne.progress = true;
    let plan = ReportPlan {
        method: args.method.clone(),
        images_per_class: Some(args.images_per_class),
        histories,
        explain: args
            .explain
            .then(|| crate::explain::SectionConfig { methods: args.explain_methods.clone(), ..Default::default() }),
        embed: args.embed.then_some(embed),
        facts: vec![("checkpoints".into(), serde_json::to_value([&args.teacher, &args.student])?)],
        ..Default::default()
    };
    let path = write_kd_report(&shown[0], &shown[1], &shown[2..], &data.test, &plan, &args.out)?;
    println!("report written to {}", path.display());
    Ok(())
}
