//! Reliability: resume after a kill at every step of an epoch's checkpoint writes, byte-reproducible
//! checkpoints, checkpoints that cannot be turned against the loader, and a named error for each
//! misuse of the command line, configuration files and datasets.
use std::path::Path;
use std::process::{Command, Output};

const SYNTH: &str = r#"{"train_per_class": 6, "test_per_class": 2}"#;

fn kdscope(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kdscope"));
    c.args(args);
    c
}

fn text(o: &Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// `kdscope train` on a small built-in dataset (120 training images), 2 epochs of ResNet-8.
fn train(out: &Path, extra: &[&str], fault_at: Option<usize>) -> Output {
    let mut c = kdscope(&["train", "--synth", SYNTH, "--arch", "resnet8", "--epochs", "2", "--batch-size", "32"]);
    c.arg("--out").arg(out).args(extra);
    match fault_at {
        Some(k) => c.env("KDSCOPE_FAULT_AT", k.to_string()),
        None => c.env_remove("KDSCOPE_FAULT_AT"),
    };
    c.output().unwrap()
}

/// [`train`] that must succeed.
fn trained(out: &Path) {
    let o = train(out, &[], None);
    assert!(o.status.success(), "{}", text(&o));
}

fn temporaries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

/// A kill (abort, no clean-up) after each step of every atomic write of a run — temporary file created,
/// written, synced, renamed, folder synced; two files per epoch — then `--resume`: the final model file
/// is the uninterrupted run's, byte for byte, and no temporary file is left.
#[test]
fn resume_after_a_kill_at_every_write_step_reaches_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("ref.safetensors");
    trained(&reference);
    let want = std::fs::read(&reference).unwrap();
    let mut k = 1;
    loop {
        let sub = dir.path().join(format!("kill{k}"));
        std::fs::create_dir_all(&sub).unwrap();
        let out = sub.join("m.safetensors");
        let killed = train(&out, &[], Some(k));
        if killed.status.success() {
            // Past the last step: every write step of the run has been tried.
            assert!(k > 20, "only {} write steps in a two-epoch run?", k - 1);
            break;
        }
        assert!(text(&killed).contains(&format!("KDSCOPE_FAULT_AT={k}")), "{}", text(&killed));
        let resumed = train(&out, &["--resume"], None);
        assert!(resumed.status.success(), "kill at step {k}, then --resume:\n{}", text(&resumed));
        assert!(std::fs::read(&out).unwrap() == want, "kill at step {k}: resumed weights differ");
        assert!(temporaries(&sub).is_empty(), "kill at step {k}: left {:?}", temporaries(&sub));
        k += 1;
    }
}

#[test]
fn two_identical_runs_write_byte_identical_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.safetensors"), dir.path().join("b.safetensors"));
    for p in [&a, &b] {
        trained(p);
    }
    let (a, b) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert_eq!(a.len(), b.len());
    assert!(a == b, "checkpoint bytes differ between identical runs");
    // The metadata is in sorted order and names the classes.
    let n = u64::from_le_bytes(a[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(a[8..8 + n].to_vec()).unwrap();
    let keys: Vec<usize> = ["format", "kdscope.classes", "kdscope.epoch", "kdscope.spec", "kdscope.version"]
        .iter()
        .map(|k| header.find(&format!("\"{k}\"")).unwrap_or_else(|| panic!("{k} missing: {header}")))
        .collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "{header}");
    assert!(header.contains(r#"\"red-a\""#) || header.contains("red-a"), "{header}");
}

fn fails_with(o: Output, want: &[&str]) {
    let t = text(&o);
    assert!(!o.status.success(), "expected a failure: {t}");
    assert!(!t.contains("panicked"), "{t}");
    for w in want {
        assert!(t.contains(w), "expected '{w}' in:\n{t}");
    }
}

#[test]
fn command_line_values_are_checked_with_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.safetensors");
    let o = |extra: &[&str]| {
        kdscope(&["train", "--synth", SYNTH, "--arch", "resnet8"]).args(extra).arg("--out").arg(&out).output().unwrap()
    };
    fails_with(o(&["--batch-size", "0"]), &["--batch-size must be at least 1"]);
    fails_with(o(&["--lr=-0.1"]), &["--lr must be a positive finite number"]);
    fails_with(o(&["--momentum", "nan"]), &["--momentum must be in [0, 1)"]);
    fails_with(o(&["--epochs", "0"]), &["--epochs must be at least 1"]);
    // 120 training images, a batch of 500 with drop-last: no step would run.
    fails_with(o(&["--batch-size", "500", "--epochs", "1"]), &["fewer than one batch of 500"]);
    assert!(!out.exists());
    let synth =
        |json: &str| kdscope(&["train", "--synth", json, "--epochs", "1"]).arg("--out").arg(&out).output().unwrap();
    fails_with(synth(r#"{"accent_jitter": -1}"#), &["--synth", "accent_jitter must be a finite number ≥ 0"]);
    fails_with(synth(r#"{"fractal": false, "contrast": [254.9, 255]}"#), &["contrast must be a range"]);
    fails_with(synth(r#"{"train_per_class": 0}"#), &["train_per_class must be between 1 and 50000"]);
    let folder = kdscope(&["train", "--dataset", "folder", "--image-size", "0", "--val-fraction", "0.5"])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    fails_with(folder, &["--image-size must be at least 1"]);
}

#[test]
fn folders_with_empty_or_non_utf8_classes_are_refused_by_name() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    for (c, n) in [("cat", 3), ("dog", 3), ("emu", 0)] {
        let d = dir.path().join(c);
        std::fs::create_dir_all(&d).unwrap();
        for k in 0..n {
            image::RgbImage::from_pixel(8, 8, image::Rgb([k * 40, 9, 9])).save(d.join(format!("{k}.png"))).unwrap();
        }
    }
    let run = || {
        kdscope(&["train", "--dataset", "folder", "--image-size", "8", "--val-fraction", "0.3", "--epochs", "1"])
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--out")
            .arg(dir.path().join("m.safetensors"))
            .output()
            .unwrap()
    };
    fails_with(run(), &["'emu'", "no readable training images"]);
    std::fs::remove_dir(dir.path().join("emu")).unwrap();
    let bad = dir.path().join(std::ffi::OsStr::from_bytes(b"b\xffd"));
    std::fs::create_dir_all(&bad).unwrap();
    fails_with(run(), &["not UTF-8", "b\u{fffd}d"]);
}

/// A report refuses a checkpoint trained on other classes, or made for other images; distillation
/// refuses a teacher of other classes.
#[test]
fn models_from_other_datasets_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let synth = dir.path().join("synth.safetensors");
    trained(&synth);
    // The same 20 outputs, but the shapes-20 dataset's class names.
    let shapes = r#"{"fractal": false, "train_per_class": 6, "test_per_class": 2}"#;
    let report = |synth_json: &str, teacher: &Path, student: &Path| {
        kdscope(&["report", "--synth", synth_json])
            .arg("--teacher")
            .arg(teacher)
            .arg("--student")
            .arg(student)
            .arg("--out")
            .arg(dir.path().join("r.html"))
            .output()
            .unwrap()
    };
    fails_with(
        report(shapes, &synth, &synth),
        &["trained on other classes", "20 classes: red-a", "first difference at class 0"],
    );
    let kd = kdscope(&["train", "--synth", shapes, "--method", "kd", "--arch", "resnet8", "--epochs", "1"])
        .arg("--teacher")
        .arg(&synth)
        .arg("--out")
        .arg(dir.path().join("s.safetensors"))
        .output()
        .unwrap();
    fails_with(kd, &["the teacher was trained on other classes"]);
    // A grey-image model on colour images.
    let lenet = dir.path().join("lenet.safetensors");
    kdscope::train::checkpoint::save_model(&lenet, &kdscope::models::Model::build("lenet5", 20, 0).unwrap()).unwrap();
    fails_with(report(SYNTH, &lenet, &synth), &["takes 1-channel images", "3 channels"]);
}

/// `--resume` beside a model file without its training state says so instead of starting over
/// silently.
#[test]
fn resume_without_training_state_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.safetensors");
    kdscope::train::checkpoint::save_model(&out, &kdscope::models::Model::build("resnet8", 20, 0).unwrap()).unwrap();
    fails_with(train(&out, &["--resume"], None), &["cannot resume", "train-state"]);
}

/// A checkpoint whose metadata describes a huge network is refused from its tensors, quickly and
/// without building it.
#[test]
fn checkpoint_metadata_cannot_make_the_loader_build_a_huge_model() {
    use kdscope::models::Model;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.safetensors");
    kdscope::train::checkpoint::save_model(&p, &Model::build("resnet8", 10, 0).unwrap()).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(bytes[8..8 + n].to_vec()).unwrap();
    for evil in [
        r#"{\"arch\":\"wrn_1000_100\",\"in_channels\":3,\"num_classes\":10}"#,
        r#"{\"arch\":\"resnet8\",\"in_channels\":0,\"num_classes\":10}"#,
        r#"{\"arch\":\"resnet8\",\"in_channels\":3,\"num_classes\":4000000000}"#,
    ] {
        let start = header.find("\"kdscope.spec\":\"").unwrap() + "\"kdscope.spec\":\"".len();
        let end = start + header[start..].find("\",\"").unwrap();
        let mut h = format!("{}{}{}", &header[..start], evil, &header[end..]);
        while h.len() % 8 != 0 {
            h.push(' ');
        }
        let mut file = (h.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(h.as_bytes());
        file.extend_from_slice(&bytes[8 + n..]);
        std::fs::write(&p, &file).unwrap();
        let t = std::time::Instant::now();
        let e = match kdscope::train::checkpoint::load_model(&p) {
            Ok(_) => panic!("{evil} was loaded"),
            Err(e) => format!("{e:#}"),
        };
        assert!(t.elapsed().as_secs_f64() < 2.0, "{e}");
        assert!(e.contains("metadata") || e.contains("kdscope.spec"), "{e}");
    }
}

/// IDX headers whose dimensions overflow or exceed the file, and gzip files claiming more than they
/// hold, are refused before allocating; a valid multi-member gzip file loads.
#[test]
fn idx_sizes_are_checked_before_allocating() {
    use kdscope::data::mnist::read_idx;
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.idx");
    // 16 x 2^30 x 2^30 wraps to 0 bytes in 64 bits.
    let mut wrap = vec![0, 0, 8, 3, 0, 0, 0, 16, 0x40, 0, 0, 0, 0x40, 0, 0, 0];
    std::fs::write(&p, &wrap).unwrap();
    let e = read_idx(&p, 3).unwrap_err().to_string();
    assert!(e.contains("[16, 1073741824, 1073741824]") && e.contains("fit in the file"), "{e}");
    // 24 images of 28 x 28 claimed, gzip of 16 bytes of header and nothing else.
    wrap[4..16].copy_from_slice(&[0, 0, 0, 24, 0, 0, 0, 28, 0, 0, 0, 28]);
    let gz = |parts: &[&[u8]]| {
        let mut out = Vec::new();
        for part in parts {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(part).unwrap();
            out.extend(e.finish().unwrap());
        }
        out
    };
    std::fs::write(&p, gz(&[&wrap])).unwrap();
    let e = read_idx(&p, 3).unwrap_err().to_string();
    assert!(e.contains("18816 data bytes") && e.contains("0 bytes"), "{e}");
    // A header claiming 10^12 bytes in a 40-byte gzip file: refused by the deflate bound, no allocation.
    wrap[4..16].copy_from_slice(&[0, 0x0f, 0x42, 0x40, 0, 0x0f, 0x42, 0x40, 0, 0, 0, 1]);
    std::fs::write(&p, gz(&[&wrap])).unwrap();
    let e = read_idx(&p, 3).unwrap_err().to_string();
    assert!(e.contains("compressed"), "{e}");
    // Two members: header, then data.
    let mut ok = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3];
    let data: Vec<u8> = (0..12).collect();
    std::fs::write(&p, gz(&[&ok, &data])).unwrap();
    let (dims, px, _) = read_idx(&p, 3).unwrap();
    assert_eq!((dims, px), (vec![2, 2, 3], data.clone()));
    // Trailing bytes after the declared size are refused.
    ok.extend(&data);
    ok.push(7);
    std::fs::write(&p, &ok).unwrap();
    let e = read_idx(&p, 3).unwrap_err().to_string();
    assert!(e.contains("12 data bytes") && e.contains("more bytes"), "{e}");
}

/// A sweep of six parameters with 40 values each is refused at once (it would be 4e9 runs), and a
/// misspelt parameter is named before anything is expanded.
#[test]
fn huge_or_misspelt_grid_sweeps_fail_fast() {
    use kdscope::grid::{Grid, MethodSpec, Pair};
    let values: Vec<serde_json::Value> = (0..40).map(|v| serde_json::json!(1.0 + v as f64)).collect();
    let mut m = MethodSpec::new("kd");
    for k in ["temperature", "alpha", "beta", "ce_weight", "kd_weight", "gamma"] {
        m.sweep.insert(k.into(), values.clone());
    }
    let mut g = Grid::new("huge", vec![Pair::new("resnet56", "resnet20")], &["ce"], &[0], Default::default());
    g.methods.push(m.into());
    let t = std::time::Instant::now();
    let e = format!("{:#}", g.runs().unwrap_err());
    assert!(t.elapsed().as_secs_f64() < 1.0);
    assert!(e.contains("grid method 'kd'") && e.contains("alpha"), "{e}");
    let mut ok = MethodSpec::new("kd");
    for k in ["temperature", "ce_weight", "kd_weight"] {
        ok.sweep.insert(k.into(), values.clone());
    }
    let mut g2 = Grid::new("big", vec![Pair::new("resnet56", "resnet20")], &[], &[0, 1], Default::default());
    g2.methods.push(ok.into());
    let t = std::time::Instant::now();
    let e = format!("{:#}", g2.runs().unwrap_err());
    assert!(t.elapsed().as_secs_f64() < 1.0);
    assert!(e.contains("128000 runs") && e.contains("at most 100000"), "{e}");
}

/// NaN or infinite weights are refused by name unless `--allow-non-finite` (or the option) asks.
#[test]
fn non_finite_weights_are_refused_unless_allowed() {
    use kdscope::interop::{import_model, ImportOptions};
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("nan.safetensors");
    let mut m = kdscope::models::Model::build("resnet8", 20, 0).unwrap();
    let mut v = m.store.params[0].values();
    v[3] = f32::NAN;
    m.store.set(kdscope::nn::PId(0), v);
    kdscope::train::checkpoint::save_model(&p, &m).unwrap();
    let e = format!("{:#}", import_model(&p, &ImportOptions::default()).err().map(|e| e.to_string()).unwrap());
    assert!(e.contains("'conv1.weight' holds NaN or infinite values") && e.contains("--allow-non-finite"), "{e}");
    let loaded = import_model(&p, &ImportOptions { allow_non_finite: true, ..Default::default() }).unwrap();
    assert!(loaded.store.params[0].values()[3].is_nan());
    let student = dir.path().join("ok.safetensors");
    kdscope::train::checkpoint::save_model(&student, &kdscope::models::Model::build("resnet8", 20, 1).unwrap())
        .unwrap();
    let report = |allow: bool| {
        let mut c = kdscope(&["report", "--synth", SYNTH, "--images-per-class", "1"]);
        c.arg("--teacher").arg(&p).arg("--student").arg(&student).arg("--out").arg(dir.path().join("r.html"));
        if allow {
            c.arg("--allow-non-finite");
        }
        c.output().unwrap()
    };
    fails_with(report(false), &["--teacher", "holds NaN or infinite values"]);
    let o = report(true);
    assert!(o.status.success() && text(&o).contains("warning:"), "{}", text(&o));
}

/// A loss that is not finite in the first epoch says no checkpoint was kept (none was written), and a
/// teacher/student mismatch names both models' classes and channels.
#[test]
fn failure_messages_say_what_happened() {
    use kdscope::data::synthetic::{builtin_dataset, SynthConfig};
    use kdscope::distill::Method;
    use kdscope::models::Model;
    use kdscope::train::{fit, RunOptions, TrainConfig};
    let data = builtin_dataset(&SynthConfig { train_per_class: 4, test_per_class: 1, ..Default::default() });
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("x.safetensors");
    let opts = RunOptions { checkpoint: Some(ck.clone()), ..Default::default() };
    let explode = TrainConfig { epochs: 2, batch_size: 16, lr: 1e30, ..Default::default() };
    let mut m = Model::build("resnet8", 20, 0).unwrap();
    let e = fit(&mut m, None, &mut Method::Alone, &data, &explode, &opts).unwrap_err().to_string();
    assert!(e.contains("loss became") && e.contains("none: no epoch had completed"), "{e}");
    assert!(!ck.exists());
    let teacher = Model::build("lenet5", 20, 0).unwrap();
    let mut kd = kdscope::distill::by_name("kd").unwrap();
    let cfg = TrainConfig { epochs: 1, batch_size: 16, ..Default::default() };
    let e = fit(&mut m, Some(&teacher), &mut kd, &data, &cfg, &RunOptions::default()).unwrap_err().to_string();
    assert!(
        e.contains("lenet5: 20 classes, 1 input channels") && e.contains("resnet8: 20 classes, 3 input channels"),
        "{e}"
    );
}

/// A Parquet file whose page header declares a negative value count made polars-parquet reserve 2^61
/// bytes and abort the process; its page headers are now checked first. The file is the input
/// `kdscope fuzz --targets logits-parquet --seed 1` produced from its seed, kept as found.
#[test]
fn parquet_page_headers_are_checked_before_decoding() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parquet_negative_page_values.parquet");
    let e = format!("{:#}", kdscope::interop::logits::read_logits(&p).err().map(|e| e.to_string()).unwrap());
    assert!(
        e.contains("not a readable Parquet file") && e.contains("declares -34 values") && e.contains("3 rows"),
        "{e}"
    );
    let e = kdscope::metrics::export::read_parquet(&p).err().map(|e| e.to_string()).unwrap();
    assert!(e.contains("declares -34 values"), "{e}");
}

/// `KDSCOPE_SIMD` holds every kernel to a narrower instruction set (the AVX2 kernels of the Zen 3
/// machines, run on an AVX-512 one): `kdscope bench` names the level that ran, a 2-epoch run at each
/// level this CPU has reaches the same training loss at each epoch (the levels differ only in the
/// order of float sums; those differences grow as training goes on: on the AMD EPYC family 25 model
/// 17 within 0.0005 after two epochs, up to 0.005 after three), and a misspelt level is refused by
/// name before anything runs.
#[test]
fn kernels_held_to_each_simd_level_train_alike() {
    let dir = tempfile::tempdir().unwrap();
    let bad = kdscope(&["bench", "--archs", "resnet8"]).env("KDSCOPE_SIMD", "avx3").output().unwrap();
    fails_with(bad, &["KDSCOPE_SIMD is \"avx3\"", "avx512, avx2, portable"]);
    let mut losses = Vec::new();
    for (level, kernels) in
        [("avx512", "AVX-512 (16 lanes)"), ("avx2", "AVX2 + FMA (8 lanes)"), ("portable", "portable")]
    {
        let bench = kdscope(&["bench", "--archs", "resnet8", "--batch", "4", "--iters", "1", "--reps", "1"])
            .env("KDSCOPE_SIMD", level)
            .output()
            .unwrap();
        if !bench.status.success() && text(&bench).contains("which this CPU does not have") {
            eprintln!("{level}: not on this CPU");
            continue;
        }
        assert!(bench.status.success() && text(&bench).contains(&format!("kernels: {kernels}")), "{}", text(&bench));
        let out = dir.path().join(format!("{level}.safetensors"));
        let synth = r#"{"train_per_class": 30, "test_per_class": 2}"#;
        let mut c = kdscope(&["train", "--synth", synth, "--arch", "resnet8", "--epochs", "2", "--batch-size", "32"]);
        let o = c.arg("--out").arg(&out).env("KDSCOPE_SIMD", level).output().unwrap();
        let t = text(&o);
        assert!(o.status.success(), "{t}");
        let per_epoch: Vec<f64> =
            t.lines().filter_map(|l| l.split("train loss").nth(1)?.split_whitespace().next()?.parse().ok()).collect();
        assert_eq!(per_epoch.len(), 2, "{t}");
        losses.push((level, per_epoch));
    }
    assert!(!losses.is_empty());
    for (level, per_epoch) in &losses {
        for (e, (loss, first)) in per_epoch.iter().zip(&losses[0].1).enumerate() {
            assert!((loss - first).abs() < 2e-3, "{level}: epoch {} train loss {loss} against {losses:?}", e + 1);
        }
    }
}

/// `KDSCOPE_PRECISION=bf16` (the 3x3 convolutions in bf16 on AMX tiles): a misspelt value is refused
/// by name; on a CPU without AMX-BF16 `bf16` is refused too. Where the CPU has the tiles: `kdscope
/// bench` says they ran; a ResNet-20's logits-only evaluation (batch norms folded into the
/// convolutions) moves by bf16's rounding, within 2 % of the logits' norm, and moves (the tiles ran);
/// and 3 epochs of ResNet-8 training end at a loss close to f32's, not equal to it, and far below
/// the first epoch's.
#[test]
fn bf16_precision_runs_on_amx_tiles_or_is_refused() {
    let bad = kdscope(&["bench", "--archs", "resnet8"]).env("KDSCOPE_PRECISION", "bf8").output().unwrap();
    fails_with(bad, &["KDSCOPE_PRECISION is \"bf8\"", "fp32, bf16"]);
    let args = ["bench", "--archs", "resnet8", "--batch", "4", "--iters", "1", "--reps", "1"];
    let bench = kdscope(&args).env("KDSCOPE_PRECISION", "bf16").output().unwrap();
    if !kdscope::nn::ops::amx::available() {
        fails_with(bench, &["KDSCOPE_PRECISION=bf16 runs on AMX-BF16 tiles", "does not offer"]);
        eprintln!("no AMX-BF16 tiles on this CPU or OS: bf16 is refused, as it should be");
        return;
    }
    assert!(bench.status.success() && text(&bench).contains("bf16 on AMX tiles"), "{}", text(&bench));

    use kdscope::nn::{Shape4, Var};
    let model = kdscope::models::Model::build("resnet20", 10, 7).unwrap();
    let x: Vec<f32> = (0..8 * 3 * 32 * 32).map(|i| ((i * 7919 % 2003) as f32 / 1001.5) - 1.0).collect();
    let logits = || model.logits(Var::from_vec(x.clone(), Shape4::new(8, 3, 32, 32))).data().to_vec();
    let (f, b) = (logits(), kdscope::nn::ops::amx::with_bf16(logits));
    let norm = f.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
    let diff = f.iter().zip(&b).map(|(u, v)| ((u - v) as f64).powi(2)).sum::<f64>().sqrt();
    assert!(diff > 0.0 && diff <= 0.02 * norm, "logits: |bf16 - f32| {diff}, |f32| {norm}");

    let dir = tempfile::tempdir().unwrap();
    let mut losses = Vec::new();
    for p in ["fp32", "bf16"] {
        let synth = r#"{"train_per_class": 30, "test_per_class": 2}"#;
        let mut c = kdscope(&["train", "--synth", synth, "--arch", "resnet8", "--epochs", "3", "--batch-size", "32"]);
        let o = c.arg("--out").arg(dir.path().join(format!("{p}.safetensors"))).env("KDSCOPE_PRECISION", p).output();
        let t = text(&o.unwrap());
        let last = t.lines().rfind(|l| l.contains("train loss")).unwrap_or_else(|| panic!("{t}"));
        losses.push(
            last.split("train loss").nth(1).and_then(|r| r.split_whitespace().next()?.parse::<f64>().ok()).unwrap(),
        );
    }
    // From ~3.0 (20 classes) to ~1.8 in f32 (1.7775 on the Intel Xeon with AMX; bf16 1.7874).
    let learnt = losses[1] < 2.3;
    assert!(
        learnt && losses[0] != losses[1] && (losses[0] - losses[1]).abs() < 0.1,
        "train loss f32 / bf16: {losses:?}"
    );
}
