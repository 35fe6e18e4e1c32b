//! Training runs end to end on tiny slices of the built-in dataset: determinism, resume,
//! checkpoints (round trip, atomic writes, architecture checks) and non-finite loss handling.
use kdscope::data::synthetic::{builtin_dataset, SynthConfig};
use kdscope::data::DataSplit;
use kdscope::distill::{self, Method};
use kdscope::train::{checkpoint, evaluate, fit, RunOptions, Schedule, TrainConfig};
use kdscope::{Model, ModelSpec};

fn tiny_data() -> DataSplit {
    builtin_dataset(&SynthConfig { train_per_class: 3, test_per_class: 1, ..Default::default() })
}

fn cfg(epochs: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 16,
        lr: 0.05,
        schedule: Schedule::Cosine { min_lr: 0.0 },
        seed: 5,
        ..TrainConfig::default()
    }
}

fn quiet(checkpoint: Option<std::path::PathBuf>, resume: bool) -> RunOptions {
    RunOptions { label: "test".into(), checkpoint, resume, progress: false, stop_after: None }
}

#[test]
fn same_seed_gives_identical_runs() {
    let data = tiny_data();
    let run = || {
        let mut m = Model::new(ModelSpec::new("resnet8", 20).unwrap(), 3);
        let h = fit(&mut m, None, &mut Method::Alone, &data, &cfg(2), &quiet(None, false)).unwrap();
        (h, m.store.flat_values(), evaluate(&m, &data.test, 7).logits)
    };
    let (h1, p1, l1) = run();
    let (h2, p2, l2) = run();
    assert_eq!(h1.epochs.len(), 2);
    for (a, b) in h1.epochs.iter().zip(&h2.epochs) {
        assert_eq!(
            (a.train_loss, a.train_acc, a.test_loss, a.test_acc),
            (b.train_loss, b.train_acc, b.test_loss, b.test_acc)
        );
    }
    assert_eq!(p1, p2);
    assert_eq!(l1, l2);
    // A different seed changes the run.
    let mut m = Model::new(ModelSpec::new("resnet8", 20).unwrap(), 3);
    let h3 =
        fit(&mut m, None, &mut Method::Alone, &data, &TrainConfig { seed: 6, ..cfg(2) }, &quiet(None, false)).unwrap();
    assert_ne!(h3.epochs[0].train_loss, h1.epochs[0].train_loss);
}

#[test]
fn resume_continues_exactly() {
    let data = tiny_data();
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("r.safetensors");
    let mut straight = Model::new(ModelSpec::new("resnet8", 20).unwrap(), 1);
    let hs = fit(&mut straight, None, &mut Method::Alone, &data, &cfg(3), &quiet(None, false)).unwrap();
    // Two epochs of the 3-epoch run, stopped; then a fresh model (other init) resumes the third.
    let mut a = Model::new(ModelSpec::new("resnet8", 20).unwrap(), 1);
    let h2 = fit(
        &mut a,
        None,
        &mut Method::Alone,
        &data,
        &cfg(3),
        &RunOptions { stop_after: Some(2), ..quiet(Some(ck.clone()), true) },
    )
    .unwrap();
    assert_eq!(h2.epochs.len(), 2);
    let mut b = Model::new(ModelSpec::new("resnet8", 20).unwrap(), 99);
    let hr = fit(&mut b, None, &mut Method::Alone, &data, &cfg(3), &quiet(Some(ck.clone()), true)).unwrap();
    assert_eq!(hr.epochs.len(), 3);
    // Everything but the wall-clock seconds is identical.
    let key = |e: &kdscope::train::EpochRecord| (e.epoch, e.lr, e.train_loss, e.train_acc, e.test_loss, e.test_acc);
    assert_eq!(hr.epochs.iter().map(key).collect::<Vec<_>>(), hs.epochs.iter().map(key).collect::<Vec<_>>());
    assert_eq!(b.store.flat_values(), straight.store.flat_values());
    // Resuming a finished run trains nothing and returns the stored history.
    let mut d = Model::new(ModelSpec::new("resnet8", 20).unwrap(), 7);
    let hd = fit(&mut d, None, &mut Method::Alone, &data, &cfg(3), &quiet(Some(ck), true)).unwrap();
    assert_eq!(hd.epochs.len(), 3);
    assert_eq!(d.store.flat_values(), straight.store.flat_values());
}

#[test]
fn checkpoint_round_trip_and_architecture_checks() {
    let data = tiny_data();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.safetensors");
    let mut m = Model::new(ModelSpec::new("resnet8", 20).unwrap(), 4);
    fit(&mut m, None, &mut Method::Alone, &data, &cfg(1), &quiet(None, false)).unwrap();
    checkpoint::save_model(&p, &m).unwrap();
    // No temporary file is left behind.
    let names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, vec!["m.safetensors"]);
    let loaded = checkpoint::load_model(&p).unwrap();
    assert_eq!(loaded.spec, m.spec);
    assert_eq!(loaded.store.flat_values(), m.store.flat_values());
    assert_eq!(evaluate(&loaded, &data.test, 8).logits, evaluate(&m, &data.test, 8).logits);
    // 60 images in batches of 16, the last partial batch dropped: 3 steps.
    assert_eq!(loaded.store.bns[0].stats.lock().unwrap().batches, 3);
    // Wrong architecture and wrong class count fail with clear messages.
    let mut other = Model::new(ModelSpec::new("resnet20", 20).unwrap(), 0);
    let e = checkpoint::load_into(&p, &mut other).unwrap_err().to_string();
    assert!(e.contains("resnet8 (20 classes)") && e.contains("resnet20 (20 classes)"), "{e}");
    let mut fewer = Model::new(ModelSpec::new("resnet8", 10).unwrap(), 0);
    let e = checkpoint::load_into(&p, &mut fewer).unwrap_err().to_string();
    assert!(e.contains("20 classes") && e.contains("10 classes"), "{e}");
    // Overwriting replaces the file as a whole (rename), and a corrupt file is reported.
    let before = std::fs::read(&p).unwrap();
    checkpoint::save_model(&p, &other).unwrap();
    assert_ne!(std::fs::read(&p).unwrap(), before);
    assert_eq!(checkpoint::read_spec(&p).unwrap().unwrap(), other.spec);
    std::fs::write(&p, &before[..before.len() / 2]).unwrap();
    let e = checkpoint::load_model(&p).unwrap_err();
    assert!(format!("{e:#}").contains("m.safetensors"), "{e:#}");
}

#[test]
fn failed_atomic_write_keeps_previous_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("keep.safetensors");
    let m = Model::new(ModelSpec::new("resnet8", 20).unwrap(), 4);
    checkpoint::save_model(&p, &m).unwrap();
    let before = std::fs::read(&p).unwrap();
    // A directory squatting on the temporary name makes the write fail before the rename.
    let tmp = dir.path().join(format!(".keep.safetensors.{}.tmp", std::process::id()));
    std::fs::create_dir(&tmp).unwrap();
    let m2 = Model::new(ModelSpec::new("resnet8", 20).unwrap(), 5);
    assert!(checkpoint::save_model(&p, &m2).is_err());
    assert_eq!(std::fs::read(&p).unwrap(), before);
}

#[test]
fn non_finite_loss_stops_and_keeps_last_good_checkpoint() {
    let data = tiny_data();
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("nan.safetensors");
    let mut m = Model::new(ModelSpec::new("resnet8", 20).unwrap(), 2);
    fit(&mut m, None, &mut Method::Alone, &data, &cfg(1), &quiet(Some(ck.clone()), true)).unwrap();
    let good = std::fs::read(&ck).unwrap();
    let explode = TrainConfig { epochs: 3, lr: 1e30, schedule: Schedule::Constant, ..cfg(3) };
    let e =
        fit(&mut m, None, &mut Method::Alone, &data, &explode, &quiet(Some(ck.clone()), true)).unwrap_err().to_string();
    assert!(e.contains("loss became") && e.contains("nan.safetensors"), "{e}");
    assert_eq!(std::fs::read(&ck).unwrap(), good);
}

#[test]
fn kd_students_train_end_to_end() {
    let data = tiny_data();
    let mut teacher = Model::new(ModelSpec::new("resnet8", 20).unwrap(), 0);
    fit(&mut teacher, None, &mut Method::Alone, &data, &cfg(1), &quiet(None, false)).unwrap();
    for method in ["kd", "kd-mse"] {
        let mut d = distill::by_name(method).unwrap();
        let mut s = Model::new(ModelSpec::new("resnet8", 20).unwrap(), 1);
        let before = s.store.flat_values();
        let h = fit(&mut s, Some(&teacher), &mut d, &data, &cfg(1), &quiet(None, false)).unwrap();
        assert!(h.epochs[0].train_loss.is_finite());
        assert_ne!(s.store.flat_values(), before);
    }
    // A KD method without a teacher is refused.
    let mut d = distill::by_name("kd").unwrap();
    let mut s = Model::new(ModelSpec::new("resnet8", 20).unwrap(), 1);
    assert!(fit(&mut s, None, &mut d, &data, &cfg(1), &quiet(None, false))
        .unwrap_err()
        .to_string()
        .contains("needs a teacher"));
}

#[test]
fn synthetic_confusions_stay_within_superclasses() {
    // After a short training run the superclass (the fractal's hue) is learned and the remaining
    // errors are between the four perturbed fractals of one superclass, far above the 3/19 expected
    // by chance.
    let data = builtin_dataset(&SynthConfig { train_per_class: 40, test_per_class: 20, ..Default::default() });
    let mut m = Model::new(ModelSpec::new("resnet8", 20).unwrap(), 0);
    let c = TrainConfig { epochs: 3, batch_size: 32, ..cfg(3) };
    fit(&mut m, None, &mut Method::Alone, &data, &c, &quiet(None, false)).unwrap();
    let p = evaluate(&m, &data.test, 100);
    let h = data.test.hierarchy.as_ref().unwrap();
    let (mut within, mut errors) = (0, 0);
    for (pred, &label) in p.predicted().into_iter().zip(&p.labels) {
        if pred != label {
            errors += 1;
            within += usize::from(h.class_to_super[pred] == h.class_to_super[label]);
        }
    }
    assert!(errors > 20, "too few errors to judge: {errors}");
    assert!(within as f64 >= 0.7 * errors as f64, "{within} of {errors} errors within a superclass");
}
