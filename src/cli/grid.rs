//! `kdscope grid`: run a grid here, or write (and submit) its Slurm jobs, or one part of it as a Slurm
//! job runs it (`--teachers-only`, `--run-index N`, `--collect`).
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::args::{DataArgs, SlurmArgs};
use crate::grid::slurm::{self, SlurmOptions};
use crate::grid::{Grid, Metric, Pair};
use crate::train::TrainConfig;

/// The parts of one `kdscope grid` call.
pub struct GridCall {
    pub config: Option<PathBuf>,
    pub out: PathBuf,
    pub example: bool,
    pub data: DataArgs,
    pub slurm: SlurmArgs,
    pub run_index: Option<usize>,
    pub teachers_only: bool,
    pub collect: bool,
}

/// The arguments after `grid` that the jobs repeat, in order: the dataset's ([`DataArgs`]), as
/// `--flag value` or `--flag=value`; the grid's own flags (and their values) are left out. Which flag
/// is which, and which takes a value, comes from the clap definitions themselves.
pub fn passed_on(args: &[String]) -> Vec<String> {
    use clap::{Args as _, CommandFactory as _};
    let cli = super::Cli::command();
    let grid = cli.find_subcommand("grid").expect("the grid subcommand");
    let takes_value = |name: &str| {
        grid.get_arguments().any(|a| a.get_long().is_some_and(|l| l == name) && a.get_action().takes_values())
    };
    let data = DataArgs::augment_args(clap::Command::new("data"));
    let is_data = |name: &str| data.get_arguments().any(|a| a.get_long().is_some_and(|l| l == name));
    let start = args.iter().position(|a| a == "grid").map(|p| p + 1).unwrap_or(args.len());
    let mut out = vec![];
    let mut i = start;
    while i < args.len() {
        let a = &args[i];
        let name = a.trim_start_matches("--").split('=').next().unwrap_or("");
        let n = if takes_value(name) && !a.contains('=') { 2 } else { 1 };
        if is_data(name) {
            out.extend(args[i..(i + n).min(args.len())].iter().cloned());
        }
        i += n;
    }
    out
}

pub fn run(call: GridCall) -> anyhow::Result<()> {
    if call.example {
        let train = TrainConfig { epochs: 30, ..TrainConfig::short_cosine() };
        let g = Grid::reviewkd_ablation(Pair::new("resnet56", "resnet20"), &[0, 1, 2], train);
        println!("{}", serde_json::to_string_pretty(&g)?);
        return Ok(());
    }
    let path = call.config.context("--config is required")?;
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let grid: Grid =
        serde_json::from_str(&text).with_context(|| format!("{}: not a grid configuration", path.display()))?;
    let out = &call.out;
    if call.slurm.slurm {
        return slurm_jobs(&grid, out, &call.slurm);
    }
    let results = if call.collect {
        grid.collect(out)?
    } else {
        let split = call.data.load(grid.teacher_seed)?;
        if call.teachers_only {
            let t = grid.run_teachers(&split, out, true)?;
            println!("{} teacher(s) ready under {}", t.len(), out.join("teachers").display());
            return Ok(());
        }
        if let Some(i) = call.run_index {
            let r = grid.run_index(&split, out, i, true)?;
            println!("run {i}: {} · {} · seed {}: best {:.2} %", r.pair, r.label, r.seed, 100.0 * r.best_acc);
            return Ok(());
        }
        grid.run(&split, out, true)?
    };
    let report = results.export(out)?;
    let table = results.table(Metric::Best)?;
    let cols = table.columns();
    println!("{}", cols.iter().map(|c| c.name().to_string()).collect::<Vec<_>>().join(" | "));
    for i in 0..table.height() {
        let cells: Vec<String> =
            cols.iter().map(|c| c.get(i).map(|v| crate::notebook::cell_text(&v)).unwrap_or_default()).collect();
        println!("{}", cells.join(" | "));
    }
    println!("report {}", report.display());
    Ok(())
}

fn slurm_jobs(grid: &Grid, out: &Path, a: &SlurmArgs) -> anyhow::Result<()> {
    let opts = SlurmOptions {
        partition: a.partition.clone(),
        time: a.time.clone(),
        cpus_per_task: a.cpus_per_task,
        mem: a.mem.clone(),
        sbatch_args: a.sbatch_arg.clone(),
        max_concurrent: a.max_concurrent,
        setup: a.setup.clone(),
    };
    let exe = std::env::current_exe().context("locating the kdscope binary the jobs run")?;
    let pass = passed_on(&std::env::args().collect::<Vec<_>>());
    let plan = grid.slurm_scripts(out, &exe, &pass, &std::env::current_dir()?, &opts)?;
    println!(
        "{} of {} runs to do; jobs written to {}{}",
        plan.pending.len(),
        plan.total,
        plan.dir.display(),
        if plan.teachers.is_some() { " (teachers first)" } else { "" }
    );
    if a.submit {
        for (name, id) in slurm::submit(&plan)? {
            println!("{name}: job {id}");
        }
        println!(
            "watch with `squeue --me`; logs in {}; the collect job writes summary.csv and report.html to {}",
            plan.dir.join("logs").display(),
            out.display()
        );
    } else {
        println!("submit with: bash {}", plan.submit.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_dataset_arguments_are_passed_on() {
        let args: Vec<String> = [
            "kdscope",
            "grid",
            "--config",
            "g.json",
            "--synth",
            "{\"a\": 1}",
            "--out=runs/x",
            "--slurm",
            "--time",
            "01:00:00",
            "--dataset",
            "cifar100",
            "--sbatch-arg=--qos=low",
            "--submit",
            "--data-dir",
            "d",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(passed_on(&args), ["--synth", "{\"a\": 1}", "--dataset", "cifar100", "--data-dir", "d"]);
    }
}
