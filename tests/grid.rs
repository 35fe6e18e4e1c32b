//! The experiment grid on the built-in dataset: every run's files, aggregation against hand-computed
//! means and standard deviations, the [Re]-style table and its LaTeX, teacher-assistant chains, and
//! resuming (finished runs are read back, an interrupted one continues from its checkpoint).
use kdscope::data::synthetic::{builtin_dataset, SynthConfig};
use kdscope::grid::{mean_std, Grid, MethodSpec, Metric, Pair};
use kdscope::predictions::load as load_predictions;
use kdscope::train::TrainConfig;

#[test]
fn mean_and_sample_std_by_hand() {
    let (m, s) = mean_std(&[1.0, 2.0, 4.0]);
    assert!((m - 7.0 / 3.0).abs() < 1e-12);
    // Σ(x − m)² = 16/9 + 1/9 + 25/9 = 42/9, over n − 1 = 2.
    assert!((s - (21.0f64 / 9.0).sqrt()).abs() < 1e-12);
    assert_eq!(mean_std(&[3.0]), (3.0, 0.0));
}

#[test]
fn method_sweeps_expand_to_every_combination() {
    let m = MethodSpec::new("kd")
        .sweep("temperature", vec![2.into(), 4.into()])
        .sweep("kd_weight", vec![0.5.into(), 0.9.into()]);
    let v = m.variants();
    assert_eq!(v.len(), 4);
    assert_eq!(v[0].0, "kd kd_weight=0.5 temperature=2");
    assert_eq!(v[3].1["temperature"], serde_json::json!(4));
    let mut g =
        Grid::new("g", vec![Pair::new("resnet14", "resnet8")], &["ce"], &[0, 1, 2], TrainConfig::short_cosine());
    g.methods.push(m.into());
    assert_eq!(g.runs().unwrap().len(), 3 * 5);
    g.methods.push(MethodSpec::new("kd").param("no_such", 1).into());
    assert!(g.runs().unwrap_err().to_string().contains("grid method"));
    // A grid file: methods by name or in full.
    let json = r#"{"name": "t", "pairs": [{"teacher": "resnet14", "student": "resnet8"}],
        "methods": ["ce", {"name": "reviewkd", "label": "ReviewKD", "params": {"warmup_epochs": 0}}],
        "seeds": [0], "train": TRAIN, "teacher_train": TRAIN}"#
        .replace("TRAIN", &serde_json::to_string(&TrainConfig::short_cosine()).unwrap());
    let g: Grid = serde_json::from_str(&json).unwrap();
    assert_eq!(g.runs().unwrap().iter().map(|r| r.label.as_str()).collect::<Vec<_>>(), ["ce", "ReviewKD"]);
}

#[test]
fn grid_runs_aggregates_and_resumes() {
    let data = builtin_dataset(&SynthConfig { train_per_class: 6, test_per_class: 3, ..Default::default() });
    let train = TrainConfig { epochs: 2, batch_size: 32, ..TrainConfig::short_cosine() };
    let pairs = vec![Pair::new("resnet14", "resnet8"), Pair::chain("resnet14", &["resnet8"], "resnet8")];
    let grid = Grid::new("Tiny grid", pairs, &["ce", "kd"], &[0, 1], train.clone());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    let res = grid.run(&data, out, false).unwrap();
    assert_eq!(res.runs.len(), 2 * 2 * 2);
    assert_eq!(res.teachers.len(), 1);
    // Files of a run and of the chain's assistant.
    let run = out.join("runs/resnet14--resnet8--resnet8/kd/seed1");
    for f in [
        "resnet8.safetensors",
        "resnet8.history.json",
        "resnet8.predictions.safetensors",
        "result.json",
        "assistant1-resnet8.safetensors",
    ] {
        assert!(run.join(f).exists(), "{f}");
    }
    let chained = res.runs.iter().find(|r| r.pair == "resnet14 → resnet8 → resnet8" && r.label == "kd").unwrap();
    assert_eq!(chained.assistant_acc.len(), 1);
    let alone = res.runs.iter().find(|r| r.pair == "resnet14 → resnet8 → resnet8" && r.label == "ce").unwrap();
    assert!(alone.assistant_acc.is_empty(), "the student trained alone skips the assistants");
    let p = load_predictions(&run.join("resnet8.predictions.safetensors")).unwrap();
    assert_eq!((p.len(), p.num_classes), (60, 20));
    let last =
        res.runs.iter().find(|r| r.pair == "resnet14 → resnet8 → resnet8" && r.label == "kd" && r.seed == 1).unwrap();
    assert!((p.accuracy() - last.last_acc).abs() < 1e-12);

    // Aggregation against the runs themselves.
    let summary = res.summary_frame().unwrap();
    assert_eq!(summary.height(), 4);
    let kd: Vec<f64> = res
        .runs
        .iter()
        .filter(|r| r.pair == "resnet14 → resnet8" && r.label == "kd")
        .map(|r| 100.0 * r.best_acc)
        .collect();
    let (m, s) = mean_std(&kd);
    let row = (0..summary.height())
        .find(|&i| {
            summary.column("pair").unwrap().str().unwrap().get(i) == Some("resnet14 → resnet8")
                && summary.column("label").unwrap().str().unwrap().get(i) == Some("kd")
        })
        .unwrap();
    assert!((summary.column("best_mean").unwrap().f64().unwrap().get(row).unwrap() - m).abs() < 1e-9);
    assert!((summary.column("best_std").unwrap().f64().unwrap().get(row).unwrap() - s).abs() < 1e-9);
    let table = res.table(Metric::Best).unwrap();
    assert_eq!(
        table.get_column_names().iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        ["method", "resnet14 → resnet8", "resnet14 → resnet8 → resnet8"]
    );
    let cell = table.column("resnet14 → resnet8").unwrap().str().unwrap().get(2).unwrap().to_string();
    assert_eq!(cell, format!("{m:.2} ± {s:.2}"));
    let teacher = table.column("resnet14 → resnet8").unwrap().str().unwrap().get(0).unwrap().to_string();
    assert_eq!(teacher, format!("{:.2}", 100.0 * res.teachers[0].best_acc));
    let tex = res.latex_table(Metric::Best, "Top-1").unwrap();
    assert!(
        tex.contains("\\toprule") && tex.contains(&format!("{m:.2} $\\pm$ {s:.2}")) && tex.contains("$\\to$"),
        "{tex}"
    );

    // Everything done: a second call trains nothing and returns the same records.
    let t = std::time::Instant::now();
    let again = grid.run(&data, out, false).unwrap();
    assert_eq!(again.runs, res.runs);
    assert!(t.elapsed().as_secs_f64() < 5.0);
    // An interrupted run (its result missing, its checkpoint stopped after epoch 1) continues from
    // there and ends where the uninterrupted one did.
    let plain = out.join("runs/resnet14--resnet8/kd/seed1");
    let want = res.runs.iter().find(|r| r.pair == "resnet14 → resnet8" && r.label == "kd" && r.seed == 1).unwrap();
    std::fs::remove_file(plain.join("result.json")).unwrap();
    {
        use kdscope::train::{checkpoint, fit, RunOptions};
        let teacher = checkpoint::load_model(out.join("teachers/resnet14/resnet14.safetensors")).unwrap();
        let mut student = kdscope::Model::build("resnet8", 20, 1).unwrap();
        let mut kd = kdscope::distill::by_name("kd").unwrap();
        let opts = RunOptions {
            checkpoint: Some(plain.join("resnet8.safetensors")),
            stop_after: Some(1),
            ..Default::default()
        };
        let cfg = TrainConfig { seed: 1, ..train.clone() };
        assert_eq!(fit(&mut student, Some(&teacher), &mut kd, &data, &cfg, &opts).unwrap().epochs.len(), 1);
    }
    let resumed = grid.run(&data, out, false).unwrap();
    let a = resumed.runs.iter().find(|r| r.pair == want.pair && r.label == "kd" && r.seed == 1).unwrap();
    assert_eq!((a.best_acc, a.last_acc, a.epochs), (want.best_acc, want.last_acc, want.epochs));
    let h: kdscope::train::History =
        serde_json::from_str(&std::fs::read_to_string(plain.join("resnet8.history.json")).unwrap()).unwrap();
    assert_eq!(h.epochs.len(), 2);
    // Other training settings in the same folder are refused.
    let other = Grid { train: TrainConfig { epochs: 3, ..train }, ..grid.clone() };
    assert!(other.run(&data, out, false).unwrap_err().to_string().contains("other training settings"));
    // The report section and the exports.
    let html = res.export(out).unwrap();
    let page = std::fs::read_to_string(html).unwrap();
    assert!(page.contains("Best-epoch accuracy") && page.contains(&cell));
    assert!(out.join("table_best.tex").exists() && out.join("summary.csv").exists());
    // The teacher-vs-student report of one run, with the grid's table in its Experiments section.
    let ck = res.student_checkpoint("resnet14 → resnet8", "kd", 1).unwrap();
    let student = kdscope::train::checkpoint::load_model(&ck).unwrap();
    let teacher = kdscope::train::checkpoint::load_model(res.teacher_checkpoint("resnet14").unwrap()).unwrap();
    assert!((kdscope::train::evaluate(&student, &data.test, 64).accuracy() - want.last_acc).abs() < 1e-12);
    let ev = |name: &str, m: &kdscope::Model| kdscope::run::evaluate_model(name, m, &data.test);
    let views = kdscope::report::KdViews::new(ev("teacher", &teacher), ev("student", &student));
    let page = res.add_to(views.report(&data.test).unwrap()).unwrap().render().unwrap();
    assert!(page.contains("id=\"experiments\"") && page.contains(&cell) && page.contains("\\toprule"));
    assert!(res.student_checkpoint("resnet14 → resnet8", "nope", 0).is_err());
}

#[test]
fn with_param_reaches_the_matching_methods() {
    let g = Grid::reviewkd_ablation(Pair::new("resnet14", "resnet8"), &[0], TrainConfig::short_cosine()).with_param(
        "reviewkd",
        "warmup_epochs",
        1,
    );
    let runs = g.runs().unwrap();
    assert_eq!(runs.len(), 7);
    assert!(runs.iter().filter(|r| r.method.starts_with("reviewkd")).all(|r| r.params["warmup_epochs"] == 1));
    assert!(runs.iter().filter(|r| !r.method.starts_with("reviewkd")).all(|r| r.params.is_empty()));
    assert_eq!(runs[6].label, "ReviewKD + HCL");
}
