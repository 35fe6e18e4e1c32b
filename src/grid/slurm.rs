//! A grid on a Slurm cluster: `kdscope grid --slurm` writes, under `<out>/slurm/`, one job that trains
//! the teachers the grid needs, one job array over the runs still to do (each task runs exactly one run
//! with `--run-index`, a teacher-assistant chain in order inside it), and a collect job that writes
//! runs.csv, summary.csv, the LaTeX tables and report.html as a local run does; `submit.sh` submits them
//! with their dependencies (`--submit` does it and prints the job ids). The output folder is the only
//! shared state: every task writes only its own run folder, atomically, so re-running `--slurm` after a
//! failure or a `scancel` submits only the runs without a `result.json`.
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context as _};

use super::Grid;

/// The `#SBATCH` settings of the generated jobs.
#[derive(Clone, Debug, Default)]
pub struct SlurmOptions {
    pub partition: Option<String>,
    /// Wall-clock limit of each job (`HH:MM:SS`, or any form `--time` accepts).
    pub time: Option<String>,
    /// CPUs per task (rayon uses them: `RAYON_NUM_THREADS=$SLURM_CPUS_PER_TASK`).
    pub cpus_per_task: usize,
    /// Memory per node (`--mem`, e.g. `8G`).
    pub mem: Option<String>,
    /// Further `#SBATCH` lines, verbatim (`--account=x`, `--qos=y`).
    pub sbatch_args: Vec<String>,
    /// At most this many array tasks at once (`--array=…%K`).
    pub max_concurrent: Option<usize>,
    /// Shell lines every job runs before kdscope (`module load …`).
    pub setup: Vec<String>,
}

/// The generated jobs: which exist (nothing left to do needs no job) and the runs still to do.
#[derive(Clone, Debug)]
pub struct SlurmPlan {
    pub dir: PathBuf,
    /// `teachers.sbatch`, when a teacher is still to train.
    pub teachers: Option<PathBuf>,
    /// `runs.sbatch`, when runs are still to do.
    pub runs: Option<PathBuf>,
    pub collect: PathBuf,
    pub submit: PathBuf,
    /// Indices (in [`Grid::runs`] order) of the runs without a result.
    pub pending: Vec<usize>,
    pub total: usize,
}

/// A word for a POSIX shell: as it is when it is plainly safe, single-quoted otherwise.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Sorted indices as a Slurm array range list: `0-3,5,7-9`.
pub fn array_ranges(indices: &[usize]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < indices.len() {
        let mut j = i;
        while j + 1 < indices.len() && indices[j + 1] == indices[j] + 1 {
            j += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if j > i {
            let _ = write!(out, "{}-{}", indices[i], indices[j]);
        } else {
            let _ = write!(out, "{}", indices[i]);
        }
        i = j + 1;
    }
    out
}

/// Indices of `runs` without a `result.json` under `out`.
pub(super) fn unfinished(runs: &[super::RunKey], out: &Path) -> Vec<usize> {
    (0..runs.len()).filter(|&i| !super::run_dir(out, &runs[i]).join("result.json").exists()).collect()
}

/// Slurm's default `MaxArraySize`: array indices must stay below it.
pub const MAX_ARRAY_INDEX: usize = 1000;

impl Grid {
    /// Indices of the runs without a `result.json` under `out`.
    pub fn pending_runs(&self, out: &Path) -> anyhow::Result<Vec<usize>> {
        Ok(unfinished(&self.runs()?, out))
    }

    /// Teachers (architectures) without a `teachers/<arch>/result.json` under `out`.
    pub fn pending_teachers(&self, out: &Path) -> Vec<String> {
        let mut archs: Vec<String> = self.pairs.iter().map(|p| p.teacher.clone()).collect();
        archs.sort();
        archs.dedup();
        archs.into_iter().filter(|a| !super::teacher_result_path(out, a).exists()).collect()
    }

    /// Writes `<out>/grid.json` and the jobs under `<out>/slurm/` (see the module docs): `kdscope` is
    /// the binary the jobs run (on a path every node sees), `pass` the dataset arguments every job
    /// repeats, and the jobs run from `workdir` (relative paths in `pass` resolve there).
    pub fn slurm_scripts(
        &self,
        out: &Path,
        kdscope: &Path,
        pass: &[String],
        workdir: &Path,
        opts: &SlurmOptions,
    ) -> anyhow::Result<SlurmPlan> {
        ensure!(opts.cpus_per_task >= 1, "--cpus-per-task must be at least 1");
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        let out = out.canonicalize()?;
        self.check_same_grid(&out)?;
        let runs = self.runs()?;
        let (total, pending) = (runs.len(), unfinished(&runs, &out));
        if let Some(&last) = pending.last() {
            ensure!(
                last < MAX_ARRAY_INDEX,
                "run {last} is beyond Slurm's default MaxArraySize ({MAX_ARRAY_INDEX}): split the grid, or raise \
                 MaxArraySize on the cluster and submit the array yourself"
            );
        }
        let dir = out.join("slurm");
        std::fs::create_dir_all(dir.join("logs"))?;
        let q = |p: &Path| shell_quote(&p.display().to_string());
        let args: String = pass.iter().map(|a| format!(" {}", shell_quote(a))).collect();
        let command = |what: &str| {
            format!("{} grid --config {} --out {} {what}{args}", q(kdscope), q(&out.join("grid.json")), q(&out))
        };
        let header = |name: &str, what: &str, log: &str, extra: &[String]| {
            let mut s = format!("#!/bin/bash\n# kdscope grid '{}': {what}\n", self.name.replace('\n', " "));
            s.push_str(
                "# Written by `kdscope grid --slurm`; the output folder must be on a filesystem every node sees.\n",
            );
            let mut lines = vec![
                format!("--job-name=kdscope-{}-{name}", super::slug(&self.name)),
                format!("--output={}", dir.join("logs").join(log).display()),
                format!("--chdir={}", workdir.display()),
                format!("--cpus-per-task={}", opts.cpus_per_task),
            ];
            lines.extend(extra.iter().cloned());
            if let Some(p) = &opts.partition {
                lines.push(format!("--partition={p}"));
            }
            if let Some(t) = &opts.time {
                lines.push(format!("--time={t}"));
            }
            if let Some(m) = &opts.mem {
                lines.push(format!("--mem={m}"));
            }
            lines.extend(opts.sbatch_args.iter().cloned());
            for l in lines {
                ensure!(!l.contains('\n'), "an #SBATCH setting holds a line break: {l:?}");
                let _ = writeln!(s, "#SBATCH {l}");
            }
            s.push_str(
                "# Threads: the CPUs Slurm gave this task.\nexport RAYON_NUM_THREADS=\"${SLURM_CPUS_PER_TASK:-1}\"\n",
            );
            if !opts.setup.is_empty() {
                s.push_str("# Set-up (--setup).\n");
                for l in &opts.setup {
                    let _ = writeln!(s, "{l}");
                }
            }
            Ok::<_, anyhow::Error>(s)
        };
        let write = |name: &str, text: String| -> anyhow::Result<PathBuf> {
            let p = dir.join(name);
            crate::io::write_atomic(&p, text.as_bytes())?;
            set_executable(&p)?;
            Ok(p)
        };

        let teachers = if self.pending_teachers(&out).is_empty() {
            None
        } else {
            let mut s = header(
                "teachers",
                "trains (or loads) every teacher the grid needs, once, before any run starts.",
                "teachers-%j.out",
                &[],
            )?;
            let _ = writeln!(s, "exec {}", command("--teachers-only"));
            Some(write("teachers.sbatch", s)?)
        };
        let runs = if pending.is_empty() {
            None
        } else {
            let array = match opts.max_concurrent {
                Some(k) => format!("{}%{k}", array_ranges(&pending)),
                None => array_ranges(&pending),
            };
            let mut s = header(
                "runs",
                &format!(
                    "the distillation runs, one per array task ({} of the grid's {total} runs still to do).\n\
                     # Each task trains exactly one run (a teacher-assistant chain in order) and writes only its\n\
                     # own folder under runs/; finished runs are never redone.",
                    pending.len()
                ),
                "run-%A_%a.out",
                &[format!("--array={array}")],
            )?;
            let _ = writeln!(s, "exec {}", command("--run-index \"$SLURM_ARRAY_TASK_ID\""));
            Some(write("runs.sbatch", s)?)
        };
        let mut s = header(
            "collect",
            "collects every run's result into runs.csv, summary.csv, table_best.tex, table_last.tex and\n\
             # report.html, as a local run writes them (it fails, naming them, while runs are missing).",
            "collect-%j.out",
            &[],
        )?;
        let _ = writeln!(s, "exec {}", command("--collect"));
        let collect = write("collect.sbatch", s)?;

        let mut sub = String::from(
            "#!/bin/bash\n# Submits the grid's jobs in order: the teachers, then the runs once the teachers succeeded,\n\
             # then the collect step once every run has ended. Written by `kdscope grid --slurm`.\nset -euo pipefail\n",
        );
        let _ = writeln!(sub, "cd {}", q(&dir));
        let mut after = String::new();
        if teachers.is_some() {
            sub.push_str("teachers=$(sbatch --parsable teachers.sbatch)\necho \"teachers: job ${teachers%%;*}\"\n");
            after = " --dependency=afterok:${teachers%%;*}".into();
        }
        if runs.is_some() {
            let _ = writeln!(sub, "runs=$(sbatch --parsable{after} runs.sbatch)\necho \"runs: job ${{runs%%;*}}\"");
            after = " --dependency=afterany:${runs%%;*}".into();
        }
        let _ =
            writeln!(sub, "collect=$(sbatch --parsable{after} collect.sbatch)\necho \"collect: job ${{collect%%;*}}\"");
        let submit = write("submit.sh", sub)?;
        Ok(SlurmPlan { dir, teachers, runs, collect, submit, pending, total })
    }
}

fn set_executable(p: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// Submits the plan's jobs by running its `submit.sh` (the one place that orders them and sets their
/// dependencies); returns the `(job, id)` pairs it printed (`teachers: job 12`).
pub fn submit(plan: &SlurmPlan) -> anyhow::Result<Vec<(String, String)>> {
    let out = Command::new("bash")
        .arg(&plan.submit)
        .output()
        .with_context(|| format!("running {}", plan.submit.display()))?;
    let printed = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "{} failed (is Slurm's client installed, SLURM_CONF set?): {}{}",
            plan.submit.display(),
            printed,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let ids = job_ids(&printed);
    ensure!(
        !ids.is_empty() && ids.iter().all(|(_, id)| !id.is_empty() && id.chars().all(|c| c.is_ascii_digit())),
        "sbatch printed no job id: {printed}"
    );
    Ok(ids)
}

/// The `(job, id)` pairs in lines like `teachers: job 12`, as `submit.sh` and `kdscope grid --slurm
/// --submit` print them.
pub fn job_ids(printed: &str) -> Vec<(String, String)> {
    printed
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.split_once(": job ")?;
            Some((name.trim().to_string(), rest.split_whitespace().next()?.to_string()))
        })
        .collect()
}

/// `SLURM_CPUS_PER_TASK` as rayon's thread count, unless `RAYON_NUM_THREADS` says otherwise.
pub fn task_threads(slurm_cpus: Option<&str>, rayon: Option<&str>) -> Option<usize> {
    if rayon.is_some_and(|r| !r.is_empty()) {
        return None;
    }
    slurm_cpus?.trim().parse::<usize>().ok().filter(|&n| n >= 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_quoting_and_threads() {
        assert_eq!(array_ranges(&[0, 1, 2, 3, 5, 7, 8, 9]), "0-3,5,7-9");
        assert_eq!(array_ranges(&[4]), "4");
        assert_eq!(array_ranges(&[]), "");
        assert_eq!(shell_quote("--synth"), "--synth");
        assert_eq!(shell_quote(r#"{"a": 1}"#), r#"'{"a": 1}'"#);
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(task_threads(Some("4"), None), Some(4));
        assert_eq!(task_threads(Some("4"), Some("2")), None);
        assert_eq!(task_threads(Some("x"), None), None);
        assert_eq!(task_threads(None, None), None);
        let ids = job_ids("teachers: job 12\nnoise\ncollect: job 14\n");
        assert_eq!(ids, [("teachers".to_string(), "12".to_string()), ("collect".to_string(), "14".to_string())]);
    }
}
