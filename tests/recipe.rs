//! The one training primitive (`Recipe` → `Run`) takes every spec field from the dataset: a ResNet
//! trains on 1-channel (MNIST-format) images through the library and through `kdscope train`.
use std::process::Command;

use kdscope::data::mnist;
use kdscope::distill::Method;
use kdscope::run::Recipe;
use kdscope::train::{checkpoint, fit, RunOptions};
use kdscope::{Model, ModelSpec};

/// Tiny MNIST-format files: each digit class a bright square at its own place on a dark ground.
fn write_grey_digits(dir: &std::path::Path, prefix: &str, n: usize) {
    let mut px = vec![0u8; n * 28 * 28];
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    for (i, &l) in labels.iter().enumerate() {
        let (r0, c0) = (2 + 5 * (l as usize / 5), 2 + 5 * (l as usize % 5));
        for r in r0..r0 + 4 {
            for c in c0..c0 + 4 {
                px[i * 784 + r * 28 + c] = 200 + (i % 50) as u8;
            }
        }
    }
    std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), mnist::encode_idx(&[n, 28, 28], &px)).unwrap();
    std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), mnist::encode_idx(&[n], &labels)).unwrap();
}

fn grey_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_grey_digits(dir.path(), "train", 40);
    write_grey_digits(dir.path(), "t10k", 10);
    dir
}

#[test]
fn recipe_trains_a_resnet_on_grey_images() {
    let dir = grey_dir();
    let data = mnist::load_mnist(dir.path()).unwrap();
    assert_eq!((data.train.channels, data.train.num_classes()), (1, 10));
    let recipe = Recipe::new("resnet8").epochs(2).batch_size(8).seed(3).progress(false);
    let run = recipe.train(&data).unwrap();
    assert_eq!(run.model.spec, ModelSpec { arch: "resnet8".parse().unwrap(), in_channels: 1, num_classes: 10 });
    assert_eq!((run.history.epochs.len(), run.test.len()), (2, 10));
    assert!(run.history.epochs.iter().all(|e| e.train_loss.is_finite()));
    // The same run written out by hand: Recipe adds nothing but the spec from the data.
    let mut m = Model::new(ModelSpec { in_channels: 1, ..ModelSpec::new("resnet8", 10).unwrap() }, 3);
    let opts = RunOptions { label: "by hand".into(), ..RunOptions::default() };
    let h = fit(&mut m, None, &mut Method::Alone, &data, &recipe.train, &opts).unwrap();
    assert_eq!(
        h.epochs.iter().map(|e| e.train_loss).collect::<Vec<_>>(),
        run.history.epochs.iter().map(|e| e.train_loss).collect::<Vec<_>>()
    );
    assert_eq!(m.store.flat_values(), run.model.store.flat_values());
    // A distillation method without a teacher is refused with the method's name.
    let e = recipe.clone().method("kd").train(&data).err().unwrap().to_string();
    assert!(e.contains("'kd' needs a teacher"), "{e}");
}

#[test]
fn cli_trains_a_resnet_on_grey_images() {
    let dir = grey_dir();
    let out = dir.path().join("grey.safetensors");
    let res = Command::new(env!("CARGO_BIN_EXE_kdscope"))
        .args(["train", "--dataset", "mnist", "--arch", "resnet8", "--epochs", "1", "--batch-size", "8"])
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(res.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&res.stderr));
    assert!(stdout.contains("resnet8 on mnist") && stdout.contains("final test accuracy"), "{stdout}");
    let m = checkpoint::load_model(&out).unwrap();
    assert_eq!((m.spec.in_channels, m.spec.num_classes), (1, 10));
    assert_eq!(checkpoint::read_history(&out).unwrap().unwrap().epochs.len(), 1);
}
