//! Models made in PyTorch: checkpoints written by `torch.save` and `safetensors.torch` load into
//! kdscope with their architecture inferred and reproduce PyTorch's logits
//! (fixtures: tests/fixtures/make_interop_reference.py).
use std::path::{Path, PathBuf};

use kdscope::interop::{self, import_model, ImportOptions};
use kdscope::nn::{Shape4, Var};
use kdscope::train::checkpoint;
use kdscope::{Model, ModelSpec};
use safetensors::SafeTensors;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/import").join(name)
}

/// The fixture's input images and PyTorch's float32 eval logits of model `which`.
fn pytorch_io(which: &str) -> (Vec<f32>, Vec<f32>) {
    let bytes = std::fs::read(fixture("io.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let f =
        |n: &str| st.tensor(n).unwrap().data().chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    (f("input"), f(&format!("logits.{which}")))
}

/// Eval logits of `model` on the fixture's images equal PyTorch's to 1e-5 relative (to the largest logit).
fn assert_logits(model: &Model, which: &str) {
    let (x, want) = pytorch_io(which);
    let got = model.logits(Var::from_vec(x, Shape4::new(4, 3, 32, 32)));
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.data().iter().zip(&want).enumerate() {
        assert!((g - w).abs() <= 1e-5 * scale, "{which} logit {i}: {g} vs PyTorch {w}");
    }
}

fn import(name: &str) -> Model {
    import_model(fixture(name), &ImportOptions::default()).unwrap_or_else(|e| panic!("{name}: {e:#}"))
}

#[test]
fn pytorch_checkpoints_load_and_reproduce_pytorch_logits() {
    // {'epoch', 'model': {'module.…'}, 'best_acc', 'optimizer'} in the zip format.
    let m = import("resnet8_wrapped.pth");
    assert_eq!(m.spec, ModelSpec::new("resnet8", 10).unwrap());
    assert_logits(&m, "resnet8");
    // torch.save's legacy (pre-1.6) stream, plain safetensors, float16.
    assert_logits(&import("resnet8_legacy.pth"), "resnet8");
    assert_logits(&import("resnet8.safetensors"), "resnet8");
    let half = import("resnet8_f16.pth");
    assert_logits(&half, "resnet8_f16");
    // the f16 weights are the rounded ones, not the originals
    assert_ne!(half.store.flat_values(), m.store.flat_values());
    // batch-norm statistics and counters come across
    let st = m.store.bns[0].stats.lock().unwrap();
    assert_eq!(st.batches, 3);
    assert!(st.mean.iter().any(|&v| v != 0.0));
}

#[test]
fn distiller_checkpoints_hold_two_models() {
    let path = fixture("distiller.pth");
    let e = import_model(&path, &ImportOptions::default()).unwrap_err();
    assert!(format!("{e:#}").contains("both a student and a teacher"), "{e:#}");
    let teacher = import_model(&path, &ImportOptions { prefer: Some("teacher".into()), ..Default::default() }).unwrap();
    assert_eq!(teacher.spec.arch.name(), "resnet14");
    assert_logits(&teacher, "resnet14");
    // the command line's `path#subtree`
    let arg = PathBuf::from(format!("{}#model.module.student", path.display()));
    let (p, opts) = ImportOptions::from_arg(&arg, "teacher", None);
    let student = import_model(p, &opts).unwrap();
    assert_eq!(student.spec.arch.name(), "resnet8");
    assert_logits(&student, "resnet8");
}

#[test]
fn wrong_files_list_every_problem() {
    // a ResNet-8 state dict forced into a ResNet-14: the missing second blocks, all listed at once
    let opts = ImportOptions { arch: Some("resnet14".into()), ..Default::default() };
    let e = format!("{:#}", import_model(fixture("resnet8.safetensors"), &opts).unwrap_err());
    assert!(e.contains("Missing key(s) in state_dict") && e.contains("\"layer1.1.conv1.weight\""), "{e}");
    assert!(e.contains("\"layer3.1.bn2.running_var\""), "{e}");
    // a wrong class count is a size mismatch naming both shapes
    let sd = interop::read_state_dict(fixture("resnet8.safetensors"), &ImportOptions::default()).unwrap();
    let mut m = Model::build("resnet8", 100, 0).unwrap();
    let e = interop::load_state_dict(&mut m, &sd).unwrap_err().to_string();
    assert!(
        e.contains(
            "size mismatch for fc.weight: copying a param with shape [10, 64] from checkpoint, the shape in \
                    current model is [100, 64]"
        ),
        "{e}"
    );
    // not a checkpoint at all
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pth");
    std::fs::write(&junk, b"hello, not a checkpoint").unwrap();
    let e = format!("{:#}", import_model(&junk, &ImportOptions::default()).unwrap_err());
    assert!(e.contains("junk.pth") && e.contains("not a PyTorch checkpoint"), "{e}");
    // logits where a checkpoint is expected
    let e = format!("{:#}", import_model(fixture("labels.npy"), &ImportOptions::default()).unwrap_err());
    assert!(e.contains("NumPy array"), "{e}");
    // tensors no architecture explains
    let e = format!("{:#}", import_model(fixture("io.safetensors"), &ImportOptions::default()).unwrap_err());
    assert!(e.contains("could not infer the architecture") && e.contains("4 tensors"), "{e}");
}

/// Inference recovers every architecture of the zoo from its own checkpoint's names and shapes (the
/// kdscope metadata removed), at a class count and input channels other than the defaults.
#[test]
fn architecture_inference_recovers_every_zoo_model() {
    for name in kdscope::models::zoo() {
        let mut spec = ModelSpec::new(name, 7).unwrap();
        if name != "lenet5" {
            spec.in_channels = 2;
        }
        let model = Model::new(spec.clone(), 1);
        let mut shapes: kdscope::models::Shapes = interop::expected_entries(&model.store).into_iter().collect();
        for bn in &model.store.bns {
            shapes.insert(format!("{}.num_batches_tracked", bn.prefix), vec![]);
        }
        let got = interop::infer::infer_spec(&shapes).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(got, spec, "{name}");
    }
}

/// A kdscope checkpoint loads through the same path, and its metadata must agree with its tensors.
#[test]
fn kdscope_checkpoints_load_and_their_metadata_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let model = Model::build("wrn_16_1", 10, 3).unwrap();
    let path = dir.path().join("w.safetensors");
    checkpoint::save_model(&path, &model).unwrap();
    let back = import_model(&path, &ImportOptions::default()).unwrap();
    assert_eq!(back.spec, model.spec);
    assert_eq!(back.store.flat_values(), model.store.flat_values());
    // a file whose metadata claims a huge WRN: the tensors decide what is built, and the lie is reported
    let bytes = std::fs::read(&path).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    let claim = text.find("wrn_16_1").unwrap();
    let mut forged = bytes.clone();
    forged[claim..claim + 8].copy_from_slice(b"wrn_16_9");
    std::fs::write(&path, &forged).unwrap();
    let e = format!("{:#}", checkpoint::load_model(&path).unwrap_err());
    assert!(e.contains("the metadata says wrn_16_9") && e.contains("wrn_16_1"), "{e}");
}

/// A small deterministic generator (no dependency on rand's version for the mutation schedule).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() as usize) % n.max(1)
    }
}

/// `bytes` mutated the way a fuzzer starts: bit flips, truncation, a run of random bytes, or an absurd
/// value (0xff.., 0x7f.., 0) written over 8 bytes, e.g. a declared size or an offset.
fn mutate(bytes: &[u8], rng: &mut Lcg) -> Vec<u8> {
    let mut b = bytes.to_vec();
    match rng.below(4) {
        0 => {
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
        }
        1 => b.truncate(rng.below(b.len())),
        2 => {
            let at = rng.below(b.len());
            for v in b.iter_mut().skip(at).take(1 + rng.below(64)) {
                *v = rng.next() as u8;
            }
        }
        _ => {
            let at = rng.below(b.len().saturating_sub(8));
            let v: [u8; 8] = match rng.below(3) {
                0 => [0xff; 8],
                1 => [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
                _ => [0; 8],
            };
            let end = (at + 8).min(b.len());
            b[at..end].copy_from_slice(&v[..end - at]);
        }
    }
    b
}

/// A reader under test: loads a file, or says why not.
type Reader = dyn Fn(&Path) -> anyhow::Result<()>;

/// The `.pth` (zip and legacy), safetensors and logits readers never panic or abort on mutated input: they
/// load or return an error. Bounded: 40 mutations per fixture, seeded.
#[test]
fn readers_survive_mutated_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Lcg(7);
    let cases: [(&str, &Reader); 6] = [
        ("resnet8_wrapped.pth", &|p| import_model(p, &ImportOptions::default()).map(|_| ())),
        ("resnet8_legacy.pth", &|p| import_model(p, &ImportOptions::default()).map(|_| ())),
        ("resnet8.safetensors", &|p| import_model(p, &ImportOptions::default()).map(|_| ())),
        ("teacher_logits.npy", &|p| interop::logits::read_logits(p).map(|_| ())),
        ("labels.npy", &|p| interop::logits::read_labels(p).map(|_| ())),
        ("student_logits.csv", &|p| interop::logits::read_logits(p).map(|_| ())),
    ];
    let mut errors = 0;
    for (name, read) in cases {
        let original = std::fs::read(fixture(name)).unwrap();
        let path = dir.path().join(name);
        for k in 0..40 {
            std::fs::write(&path, mutate(&original, &mut rng)).unwrap();
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read(&path)));
            match r {
                Ok(Err(_)) => errors += 1,
                Ok(Ok(())) => {}
                Err(_) => panic!("{name}: mutation {k} panicked (file kept at {})", path.display()),
            }
        }
    }
    // most mutations must be caught as errors, not silently accepted
    assert!(errors > 120, "only {errors} of 240 mutated files were refused");
}

fn npy(shape: &str, descr: &str, data: &[u8]) -> Vec<u8> {
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend((header.len() as u16).to_le_bytes());
    b.extend(header.as_bytes());
    b.extend(data);
    b
}

/// Logits files made elsewhere: the values PyTorch/NumPy wrote, probabilities recognised, and bad input
/// named by file and row.
#[test]
fn logits_files_read_and_fail_precisely() {
    use interop::logits::{evaluation, read_labels, read_logits};
    let t = read_logits(fixture("teacher_logits.npy")).unwrap();
    assert_eq!((t.rows, t.classes, t.probabilities), (40, 10, false));
    let s_npy = read_logits(fixture("student_logits.npy")).unwrap(); // float64
    let s_csv = read_logits(fixture("student_logits.csv")).unwrap();
    assert_eq!(s_npy.values, s_csv.values);
    let labels = read_labels(fixture("labels.npy")).unwrap();
    assert_eq!(s_csv.labels.as_deref(), Some(&labels[..]));
    assert_eq!(labels[..12], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]);
    // the teacher (+4 on the true logit) beats the student (+1.5) on these seeded logits
    let names: Vec<String> = (0..10).map(|c| format!("c{c}")).collect();
    let te = evaluation("t", &t, Path::new("t.npy"), &labels, &names, None).unwrap();
    let se = evaluation("s", &s_npy, Path::new("s.npy"), &labels, &names, None).unwrap();
    assert!(te.predictions.accuracy() > se.predictions.accuracy());

    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, b: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, b).unwrap();
        p
    };
    // probabilities: kept as ln p, so softmax gives them back
    let probs: Vec<u8> = [0.25f32, 0.75, 1.0, 0.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let p = read_logits(write("p.npy", &npy("(2, 2)", "<f4", &probs))).unwrap();
    assert!(p.probabilities);
    let back = kdscope::predictions::softmax_rows(&p.values, 2);
    assert!((back[0] - 0.25).abs() < 1e-6 && (back[2] - 1.0).abs() < 1e-6, "{back:?}");
    // a declared shape larger than the file, checked before allocating
    let e = read_logits(write("big.npy", &npy("(1000000000, 1000000000)", "<f4", &probs))).unwrap_err().to_string();
    assert!(e.contains("needs 4000000000000000000 bytes") && e.contains("holds 16"), "{e}");
    let e = read_logits(write("ovf.npy", &npy("(4294967296, 4294967296, 4)", "<f8", &probs))).unwrap_err().to_string();
    assert!(e.contains("overflows") && e.contains("ovf.npy"), "{e}");
    // a shape that is not a tuple, opening with a multi-byte character (found by `kdscope fuzz`: it
    // used to panic on a byte index inside the character)
    let e = read_logits(write("sh.npy", &npy("\u{10b}?v(2, 2)", "<f4", &probs))).unwrap_err().to_string();
    assert!(e.contains("sh.npy: bad shape in header (expected a tuple"), "{e}");
    // NaN and label errors name the row
    let nan: Vec<u8> = [1.0f32, f32::NAN].iter().flat_map(|v| v.to_le_bytes()).collect();
    let e = read_logits(write("nan.npy", &npy("(1, 2)", "<f4", &nan))).unwrap_err().to_string();
    assert!(e.contains("nan.npy row 0: class 1 is NaN"), "{e}");
    let e = read_logits(write("bad.csv", b"index,label,a,b\n0,1,0.5,\n")).unwrap_err().to_string();
    assert!(e.contains("bad.csv row 0: 'b' is empty"), "{e}");
    let e = evaluation("t", &t, Path::new("t.npy"), &labels[..39], &names, None).unwrap_err().to_string();
    assert!(e.contains("t.npy: 40 rows, but there are 39 labels"), "{e}");
    let mut wrong = labels.clone();
    wrong[17] = 10;
    let e = evaluation("t", &t, Path::new("t.npy"), &wrong, &names, None).unwrap_err().to_string();
    assert!(e.contains("label row 17: class 10"), "{e}");
}

/// The command line with a PyTorch teacher: `kdscope train --method kd --teacher teacher.pth
/// --teacher-arch resnet8` distils from it, and `kdscope report` on the imported teacher and the student
/// includes the explanations (Grad-CAM of both models).
#[test]
fn cli_distils_from_and_reports_on_a_pytorch_teacher() {
    use kdscope::data::{cifar, Dataset, Normalization};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let split = |n: usize, seed: usize| Dataset {
        name: "tiny".into(),
        channels: 3,
        height: 32,
        width: 32,
        pixels: (0..n * 3072).map(|i| ((i * 37 + seed * 11) % 251) as u8).collect(),
        stream: None,
        labels: (0..n).map(|i| (i + seed) % 10).collect(),
        class_names: cifar::CIFAR10_NAMES.iter().map(|s| s.to_string()).collect(),
        hierarchy: None,
        norm: Normalization::cifar10(),
        provenance: vec![],
    };
    for b in 1..=5 {
        cifar::write_cifar10_bin(d.join(format!("data_batch_{b}.bin")), &split(8, b)).unwrap();
    }
    cifar::write_cifar10_bin(d.join("test_batch.bin"), &split(10, 0)).unwrap();
    std::fs::write(d.join("batches.meta.txt"), cifar::CIFAR10_NAMES.join("\n") + "\n").unwrap();
    let teacher = fixture("resnet8_wrapped.pth");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kdscope")).args(args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {text}");
        text
    };
    let data = d.to_str().unwrap();
    let student = d.join("student.safetensors");
    let t = teacher.to_str().unwrap();
    let text = run(&[
        "train",
        "--dataset",
        "cifar10",
        "--data-dir",
        data,
        "--arch",
        "resnet8",
        "--method",
        "kd",
        "--teacher",
        t,
        "--teacher-arch",
        "resnet8",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--out",
        student.to_str().unwrap(),
    ]);
    assert!(text.contains("final test accuracy"), "{text}");
    let report = d.join("r.html");
    run(&[
        "report",
        "--teacher",
        t,
        "--student",
        student.to_str().unwrap(),
        "--dataset",
        "cifar10",
        "--data-dir",
        data,
        "--explain",
        "--explain-methods",
        "grad-cam",
        "--images-per-class",
        "1",
        "--out",
        report.to_str().unwrap(),
    ]);
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(html.contains("id=\"explanations\"") && html.contains("average_drop"), "explanations section");
    assert!(html.contains("resnet8_wrapped (resnet8, 78042 parameters)"), "the imported teacher in the header");
}
