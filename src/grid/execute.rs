//! Running a grid: teachers first (trained once, or loaded), then every unfinished run, each hop of a
//! chain trained through [`Recipe`]; every run's files under its own folder, written atomically.
use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;

use super::{run_dir, slug, teacher_result_path, Grid, GridResults, RunKey, RunResult, TeacherResult};
use crate::data::DataSplit;
use crate::distill::{self, Params};
use crate::io::{read_json, write_json};
use crate::models::Model;
use crate::run::Recipe;
use crate::train::{checkpoint, evaluate, History, TrainConfig};

impl Grid {
    /// Runs every run not yet done under `out_dir` (teachers first) and returns all results.
    pub fn run(&self, data: &DataSplit, out_dir: impl AsRef<Path>, progress: bool) -> anyhow::Result<GridResults> {
        let out = out_dir.as_ref();
        let teachers = self.run_teachers(data, out, progress)?;
        let runs = self.runs()?;
        let mut results = Vec::with_capacity(runs.len());
        for (i, key) in runs.iter().enumerate() {
            let dir = run_dir(out, key);
            let done = dir.join("result.json");
            if done.exists() {
                results.push(read_json(&done)?);
                continue;
            }
            if progress {
                eprintln!("[{}/{}] {} · {} · seed {}", i + 1, runs.len(), key.pair.label(), key.label, key.seed);
            }
            let teacher = &teachers[&key.pair.teacher].0;
            let r = self.run_one(key, teacher, data, &dir, progress)?;
            write_json(&done, &r)?;
            results.push(r);
        }
        Ok(self.results(out, results, teachers.into_values().map(|(_, r)| r).collect()))
    }

    /// Trains (or loads) every teacher the grid needs under `out` (the Slurm teacher job); each gets a
    /// `teachers/<arch>/result.json`.
    pub fn run_teachers(
        &self,
        data: &DataSplit,
        out: &Path,
        progress: bool,
    ) -> anyhow::Result<BTreeMap<String, (Model, TeacherResult)>> {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        self.check_same_grid(out)?;
        anyhow::ensure!(
            !self.seeds.is_empty() && !self.pairs.is_empty() && !self.methods.is_empty(),
            "grid '{}' is empty",
            self.name
        );
        self.runs()?;
        let mut teachers: BTreeMap<String, (Model, TeacherResult)> = BTreeMap::new();
        for pair in &self.pairs {
            if !teachers.contains_key(&pair.teacher) {
                let t = self.teacher(&pair.teacher, data, out, progress)?;
                write_json(&teacher_result_path(out, &pair.teacher), &t.1)?;
                teachers.insert(pair.teacher.clone(), t);
            }
        }
        Ok(teachers)
    }

    /// Runs run `index` (in [`Grid::runs`] order) alone, with its teacher already trained under `out`
    /// (a Slurm array task); a finished run is read, not redone.
    pub fn run_index(&self, data: &DataSplit, out: &Path, index: usize, progress: bool) -> anyhow::Result<RunResult> {
        let runs = self.runs()?;
        let key = runs.get(index).with_context(|| {
            format!(
                "--run-index {index}: grid '{}' has {} runs (0 to {})",
                self.name,
                runs.len(),
                runs.len().saturating_sub(1)
            )
        })?;
        self.check_same_grid(out)?;
        let dir = run_dir(out, key);
        let done = dir.join("result.json");
        if done.exists() {
            return read_json(&done);
        }
        let path = teacher_result_path(out, &key.pair.teacher);
        anyhow::ensure!(
            path.exists(),
            "run {index} needs teacher {}, which is not trained yet ({} is missing): the teacher job \
             (`--teachers-only`) must finish first",
            key.pair.teacher,
            path.display()
        );
        let t: TeacherResult = read_json(&path)?;
        let teacher = checkpoint::load_model(&t.checkpoint).with_context(|| format!("teacher {}", key.pair.teacher))?;
        if progress {
            eprintln!("[{}/{}] {} · {} · seed {}", index + 1, runs.len(), key.pair.label(), key.label, key.seed);
        }
        let r = self.run_one(key, &teacher, data, &dir, progress)?;
        write_json(&done, &r)?;
        Ok(r)
    }

    /// The results of a grid whose runs ran elsewhere (Slurm array tasks): every run's and teacher's
    /// result file under `out`; fails, naming them, while runs are missing.
    pub fn collect(&self, out: &Path) -> anyhow::Result<GridResults> {
        let runs = self.runs()?;
        let missing = super::slurm::unfinished(&runs, out);
        if !missing.is_empty() {
            let names: Vec<String> = missing
                .iter()
                .take(5)
                .map(|&i| format!("{i} ({} · {} · seed {})", runs[i].pair.label(), runs[i].label, runs[i].seed))
                .collect();
            anyhow::bail!(
                "{} of {} runs have no result yet: {}{}; run `kdscope grid … --slurm --submit` again to do them",
                missing.len(),
                runs.len(),
                names.join(", "),
                if missing.len() > 5 { ", …" } else { "" }
            );
        }
        let results =
            runs.iter().map(|k| read_json(&run_dir(out, k).join("result.json"))).collect::<anyhow::Result<_>>()?;
        let mut teachers = BTreeMap::new();
        for p in &self.pairs {
            if !teachers.contains_key(&p.teacher) {
                let path = teacher_result_path(out, &p.teacher);
                let t: TeacherResult = read_json(&path).with_context(|| format!("teacher {}", p.teacher))?;
                teachers.insert(p.teacher.clone(), t);
            }
        }
        Ok(self.results(out, results, teachers.into_values().collect()))
    }

    fn results(&self, out: &Path, runs: Vec<RunResult>, teachers: Vec<TeacherResult>) -> GridResults {
        GridResults { name: self.name.clone(), grid: self.clone(), runs, teachers, out_dir: out.to_path_buf() }
    }

    /// Refuses an output folder that holds a grid with other schedules (its results would not compare);
    /// a grid that only adds pairs, methods or seeds is fine.
    pub(super) fn check_same_grid(&self, out: &Path) -> anyhow::Result<()> {
        let path = out.join("grid.json");
        if path.exists() {
            let old: Grid = read_json(&path)?;
            anyhow::ensure!(
                old.train == self.train
                    && old.teacher_train == self.teacher_train
                    && old.teacher_seed == self.teacher_seed,
                "{} holds grid '{}' with other training settings; use another output folder",
                out.display(),
                old.name
            );
        }
        write_json(&path, self)
    }

    fn teacher(
        &self,
        arch: &str,
        data: &DataSplit,
        out: &Path,
        progress: bool,
    ) -> anyhow::Result<(Model, TeacherResult)> {
        let test = |m: &Model| evaluate(m, &data.test, 256).accuracy();
        if let Some(path) = self.teachers.get(arch) {
            let m = checkpoint::load_model(path).with_context(|| format!("teacher {arch}"))?;
            let acc = test(&m);
            return Ok((
                m,
                TeacherResult { arch: arch.into(), best_acc: acc, last_acc: acc, checkpoint: path.clone() },
            ));
        }
        let dir = out.join("teachers").join(slug(arch));
        let cfg = TrainConfig { seed: self.teacher_seed, ..self.teacher_train.clone() };
        let hop = Hop { arch, stem: &slug(arch), label: &format!("teacher {arch}") };
        let (m, h) = train_hop(&hop, None, ("ce", &Params::new()), &cfg, data, &dir, progress)?;
        let r = TeacherResult {
            arch: arch.into(),
            best_acc: h.best_test_acc(),
            last_acc: h.last().map(|e| e.test_acc).unwrap_or(0.0),
            checkpoint: dir.join(format!("{}.safetensors", slug(arch))),
        };
        Ok((m, r))
    }

    fn run_one(
        &self,
        key: &RunKey,
        teacher: &Model,
        data: &DataSplit,
        dir: &Path,
        progress: bool,
    ) -> anyhow::Result<RunResult> {
        let cfg = TrainConfig { seed: key.seed, ..self.train.clone() };
        let mut assistant_acc = Vec::new();
        let mut current: Option<Model> = None;
        let mut last = None;
        let uses_teacher = distill::by_name_with(&key.method, &key.params)?.needs_teacher();
        let hops = key.pair.assistants.len() + 1;
        for (i, arch) in key.pair.assistants.iter().chain(std::iter::once(&key.pair.student)).enumerate() {
            let is_student = i + 1 == hops;
            // The student trained alone needs no teacher (nor assistants).
            if !uses_teacher && !is_student {
                continue;
            }
            let t = current.as_ref().unwrap_or(teacher);
            let stem = if is_student { slug(arch) } else { format!("assistant{}-{}", i + 1, slug(arch)) };
            let label = format!("{} {} s{}", arch, key.label, key.seed);
            let hop = Hop { arch, stem: &stem, label: &label };
            let method = (key.method.as_str(), &key.params);
            let (m, h) = train_hop(&hop, uses_teacher.then_some(t), method, &cfg, data, dir, progress)?;
            if !is_student {
                assistant_acc.push(h.last().map(|e| e.test_acc).unwrap_or(0.0));
            }
            last = Some(h);
            current = Some(m);
        }
        let h = last.expect("a chain ends with the student");
        let hyper = distill::by_name_with(&key.method, &key.params)?.hyper();
        Ok(RunResult {
            pair: key.pair.label(),
            teacher: key.pair.teacher.clone(),
            assistants: key.pair.assistants.clone(),
            student: key.pair.student.clone(),
            method: key.method.clone(),
            label: key.label.clone(),
            params: key.params.clone(),
            seed: key.seed,
            best_acc: h.best_test_acc(),
            last_acc: h.last().map(|e| e.test_acc).unwrap_or(0.0),
            epochs: h.epochs.len(),
            seconds: h.total_seconds(),
            assistant_acc,
            hyper,
        })
    }
}

/// One model to train in a run folder: its architecture, file stem and progress label.
struct Hop<'a> {
    arch: &'a str,
    stem: &'a str,
    label: &'a str,
}

/// Trains (or resumes, or — when its checkpoint is complete — just loads) one model in `dir`, saving
/// its checkpoint (`<stem>.safetensors`), history and test predictions.
fn train_hop(
    hop: &Hop,
    teacher: Option<&Model>,
    (method, params): (&str, &Params),
    cfg: &TrainConfig,
    data: &DataSplit,
    dir: &Path,
    progress: bool,
) -> anyhow::Result<(Model, History)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let run = Recipe::new(hop.arch)
        .name(hop.label)
        .method(method)
        .params(params.clone())
        .config(cfg.clone())
        .init_seed(cfg.seed)
        .checkpoint(dir.join(format!("{}.safetensors", hop.stem)))
        .resume(true)
        .progress(progress)
        .run(data, teacher)?;
    write_json(&dir.join(format!("{}.history.json", hop.stem)), &run.history)?;
    crate::predictions::save(&dir.join(format!("{}.predictions.safetensors", hop.stem)), &run.test)?;
    Ok((run.model, run.history))
}
