//! `kdscope grid --slurm` against a real one-node Slurm cluster (Debian's slurmctld, slurmd and munge,
//! started by `scripts/slurm_cluster.sh` in a temporary folder and stopped by the pids it started): the
//! generated jobs pass `sbatch --test-only`, a submitted grid gives the same summary.csv as the same grid
//! run locally, and after an array task is cancelled (`scancel`) a second `--slurm --submit` runs only
//! the missing run.
//!
//! Needs root (or password-less sudo) and the packages (`scripts/slurm_cluster.sh install`; `scripts/test.sh` installs them). Set
//! `KDSCOPE_SKIP_SLURM=1` to skip where neither is possible.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use kdscope::grid::slurm::job_ids;

const KDSCOPE: &str = env!("CARGO_BIN_EXE_kdscope");

/// `program` as root: itself when this process is root, through `sudo -n` otherwise.
fn as_root(program: &Path) -> Command {
    if unsafe { libc::geteuid() } == 0 {
        Command::new(program)
    } else {
        let mut c = Command::new("sudo");
        c.arg("-n").arg(program);
        c
    }
}

/// The cluster this test started; stopped (by its pids) when dropped.
struct Cluster {
    dir: PathBuf,
    conf: String,
}

impl Cluster {
    fn start() -> Option<Cluster> {
        let missing = ["sbatch", "slurmctld", "slurmd", "munged"]
            .iter()
            .any(|b| !["/usr/bin", "/usr/sbin"].iter().any(|d| Path::new(d).join(b).is_file()));
        // The daemons run as root: directly, or through password-less sudo.
        let root = unsafe { libc::geteuid() } == 0
            || Command::new("sudo").args(["-n", "true"]).status().is_ok_and(|s| s.success());
        if missing || !root {
            if std::env::var("KDSCOPE_SKIP_SLURM").is_ok() {
                eprintln!("KDSCOPE_SKIP_SLURM set: Slurm test skipped");
                return None;
            }
            panic!(
                "the Slurm test needs root and Slurm's packages (scripts/slurm_cluster.sh install), or \
                 KDSCOPE_SKIP_SLURM=1 (root: {root}, packages missing: {missing})"
            );
        }
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("slurm-cluster");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/slurm_cluster.sh");
        let _ = as_root(&script).arg("stop").arg(&dir).status();
        let _ = std::fs::remove_dir_all(&dir);
        let out = as_root(&script).arg("start").arg(&dir).output().unwrap();
        let cluster = Cluster { dir: dir.clone(), conf: dir.join("slurm.conf").display().to_string() };
        assert!(
            out.status.success(),
            "starting the cluster: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Some(cluster)
    }

    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SLURM_CONF", &self.conf);
        c
    }

    fn kdscope(&self, args: &[&str]) -> String {
        let out = self.cmd(KDSCOPE).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "kdscope {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until none of `jobs` is pending or running (at most `limit`).
    fn wait(&self, jobs: &[String], limit: Duration) {
        let start = Instant::now();
        loop {
            let out = self.cmd("squeue").args(["-h", "-o", "%i %T", "-j", &jobs.join(",")]).output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if text.trim().is_empty() {
                return;
            }
            assert!(start.elapsed() < limit, "jobs still queued after {limit:?}:\n{text}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// `JobState=` of a job (or array task `id_k`), from scontrol.
    fn state(&self, id: &str) -> String {
        let out = self.cmd("scontrol").args(["show", "job", id]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("not found") || err.contains("Invalid job id") {
            return "NOT_FOUND".into();
        }
        if text.is_empty() {
            return format!("? ({})", err.trim());
        }
        text.split("JobState=").nth(1).and_then(|s| s.split_whitespace().next()).unwrap_or("?").to_string()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/slurm_cluster.sh");
        let _ = as_root(&script).arg("stop").arg(&self.dir).status();
    }
}

fn mtime(p: &Path) -> SystemTime {
    std::fs::metadata(p).unwrap().modified().unwrap()
}

#[test]
fn grid_on_a_real_slurm_cluster_matches_the_local_run_and_resubmits_only_missing_runs() {
    let Some(cluster) = Cluster::start() else { return };
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("slurm-grid");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    // 2 methods x 2 seeds on a tiny split, one epoch each; one thread everywhere, so the local run and
    // the Slurm tasks (1 CPU each) compute the same numbers.
    let train =
        kdscope::train::TrainConfig { epochs: 1, batch_size: 32, ..kdscope::train::TrainConfig::short_cosine() };
    let grid = kdscope::grid::Grid::new(
        "slurm test",
        vec![kdscope::grid::Pair::new("resnet8", "resnet8")],
        &["ce", "kd"],
        &[0, 1],
        train,
    );
    let config = work.join("g.json");
    std::fs::write(&config, serde_json::to_string_pretty(&grid).unwrap()).unwrap();
    let synth = r#"{"train_per_class": 6, "test_per_class": 3}"#;
    let (cfg, local, remote) = (config.to_str().unwrap(), work.join("local"), work.join("slurm"));

    // The same grid, run here.
    let out = cluster
        .cmd(KDSCOPE)
        .env("RAYON_NUM_THREADS", "1")
        .args(["grid", "--config", cfg, "--out", local.to_str().unwrap(), "--synth", synth])
        .output()
        .unwrap();
    assert!(out.status.success(), "local grid: {}", String::from_utf8_lossy(&out.stderr));

    // `kdscope grid --slurm` on the grid, one CPU per task, with `extra` flags.
    let slurm_grid = |extra: &[&str]| {
        let base = ["grid", "--config", cfg, "--out", remote.to_str().unwrap(), "--synth", synth, "--slurm"];
        cluster.kdscope(&[&base[..], &["--cpus-per-task", "1"], extra].concat())
    };
    // The jobs without --submit: written, readable, accepted by sbatch --test-only.
    let printed = slurm_grid(&["--time", "00:10:00", "--max-concurrent", "2", "--setup", "echo set-up ran"]);
    assert!(printed.contains("submit.sh"), "{printed}");
    let slurm = remote.join("slurm");
    let runs_job = std::fs::read_to_string(slurm.join("runs.sbatch")).unwrap();
    assert!(runs_job.contains("#SBATCH --array=0-3%2") && runs_job.contains("--run-index \"$SLURM_ARRAY_TASK_ID\""));
    assert!(runs_job.contains("--synth '{\"train_per_class\": 6, \"test_per_class\": 3}'"), "{runs_job}");
    assert!(runs_job.contains("RAYON_NUM_THREADS=\"${SLURM_CPUS_PER_TASK:-1}\""));
    assert!(runs_job.contains("\necho set-up ran\nexec ") && runs_job.contains("#SBATCH --time=00:10:00\n"));
    for job in ["teachers.sbatch", "runs.sbatch", "collect.sbatch"] {
        let text = std::fs::read_to_string(slurm.join(job)).unwrap();
        assert!(text.lines().nth(1).unwrap().starts_with("# kdscope grid 'slurm test': "), "{job} says what it does");
        let out = cluster.cmd("sbatch").arg("--test-only").arg(slurm.join(job)).output().unwrap();
        assert!(out.status.success(), "sbatch --test-only {job}: {}", String::from_utf8_lossy(&out.stderr));
    }

    // Submitted: cancel the array task of run 1 while it waits for the teacher job.
    let printed = slurm_grid(&["--submit"]);
    let ids = job_ids(&printed);
    assert_eq!(ids.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["teachers", "runs", "collect"], "{printed}");
    let runs_id = &ids[1].1;
    let status = cluster.cmd("scancel").arg(format!("{runs_id}_1")).status().unwrap();
    assert!(status.success());
    let queued = cluster.cmd("squeue").args(["-h", "-o", "%i", "-j", runs_id]).output().unwrap();
    let queued = String::from_utf8_lossy(&queued.stdout).into_owned();
    assert!(queued.contains(&format!("{runs_id}_[0,2-3]")), "task 1 left the array: {queued}");
    let all: Vec<String> = ids.iter().map(|(_, id)| id.clone()).collect();
    cluster.wait(&all, Duration::from_secs(600));
    assert_eq!(cluster.state(&ids[0].1), "COMPLETED", "teacher job");
    assert_eq!(cluster.state(&format!("{runs_id}_0")), "COMPLETED");
    // The collect job ran and named the missing run.
    assert_eq!(cluster.state(&ids[2].1), "FAILED");
    let log = std::fs::read_to_string(slurm.join(format!("logs/collect-{}.out", ids[2].1))).unwrap();
    assert!(log.contains("1 of 4 runs have no result yet: 1 (resnet8 → resnet8 · ce · seed 1)"), "{log}");
    let done = |i: usize| {
        let (label, seed) = [("ce", 0), ("ce", 1), ("kd", 0), ("kd", 1)][i];
        remote.join(format!("runs/resnet8--resnet8/{label}/seed{seed}/result.json"))
    };
    assert!(!done(1).exists());
    let before: Vec<SystemTime> = [0, 2, 3].iter().map(|&i| mtime(&done(i))).collect();

    // Again: no teacher job, an array of the one missing run, then the collect step.
    let printed = slurm_grid(&["--submit"]);
    let ids = job_ids(&printed);
    assert_eq!(ids.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["runs", "collect"], "{printed}");
    assert!(std::fs::read_to_string(slurm.join("runs.sbatch")).unwrap().contains("#SBATCH --array=1\n"));
    cluster.wait(&ids.iter().map(|(_, id)| id.clone()).collect::<Vec<_>>(), Duration::from_secs(600));
    assert_eq!(cluster.state(&ids[1].1), "COMPLETED", "collect job");
    assert!(done(1).exists());
    let after: Vec<SystemTime> = [0, 2, 3].iter().map(|&i| mtime(&done(i))).collect();
    assert_eq!(before, after, "finished runs were not redone");

    // The Slurm run's summary is the local run's, byte for byte; both wrote every file.
    let summary = |d: &Path| std::fs::read_to_string(d.join("summary.csv")).unwrap();
    assert_eq!(summary(&remote), summary(&local));
    assert_eq!(summary(&remote).lines().count(), 3, "{}", summary(&remote));
    for f in ["runs.csv", "table_best.tex", "table_last.tex", "report.html"] {
        assert!(remote.join(f).is_file(), "{f}");
    }
}
