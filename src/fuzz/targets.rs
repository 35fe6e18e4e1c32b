//! The readers under test, one [`Target`] each, registered in [`targets`].
use std::path::Path;

use anyhow::Context;

use super::Target;
use crate::data::{self, cifar, folder, mnist, synthetic, DataSplit, Dataset, Normalization};
use crate::models::Model;

/// Every target, in the order `kdscope fuzz` runs them.
pub fn targets() -> Vec<Target> {
    vec![
        Target {
            name: "cifar10-bin",
            file: "data_batch_1.bin",
            setup: cifar10_bin_setup,
            seeds: cifar10_bin_seed,
            read: cifar10_read,
        },
        Target {
            name: "cifar100-bin",
            file: "train.bin",
            setup: cifar100_bin_setup,
            seeds: cifar100_bin_seed,
            read: cifar100_read,
        },
        Target {
            name: "cifar10-py",
            file: "cifar-10-batches-py/data_batch_1",
            setup: cifar10_py_setup,
            seeds: cifar10_py_seed,
            read: cifar10_read,
        },
        Target {
            name: "cifar100-py",
            file: "cifar-100-python/train",
            setup: cifar100_py_setup,
            seeds: cifar100_py_seed,
            read: cifar100_read,
        },
        Target {
            name: "cifar100-py-meta",
            file: "cifar-100-python/meta",
            setup: cifar100_py_setup,
            seeds: cifar100_py_meta_seed,
            read: cifar100_read,
        },
        Target { name: "pickle", file: "batch.pickle", setup: none, seeds: pickle_seeds, read: pickle_read },
        Target { name: "idx", file: "images.idx", setup: none, seeds: idx_seeds, read: idx_read },
        Target { name: "idx-gz", file: "images.idx", setup: none, seeds: idx_gz_seeds, read: idx_read },
        Target { name: "image", file: "image", setup: none, seeds: image_seeds, read: image_read },
        Target { name: "safetensors", file: "model.safetensors", setup: none, seeds: model_seed, read: model_read },
        Target {
            name: "train-state",
            file: "m.safetensors.train-state.safetensors",
            setup: state_setup,
            seeds: state_seed,
            read: state_read,
        },
        Target { name: "pth-zip", file: "model.pth", setup: none, seeds: pth_zip_seed, read: model_read },
        Target { name: "pth-legacy", file: "model.pth", setup: none, seeds: pth_legacy_seed, read: model_read },
        Target { name: "logits-npy", file: "logits.npy", setup: none, seeds: npy_seeds, read: logits_read },
        Target { name: "logits-csv", file: "logits.csv", setup: none, seeds: csv_seed, read: logits_read },
        Target { name: "logits-parquet", file: "logits.parquet", setup: none, seeds: parquet_seed, read: logits_read },
        Target { name: "labels-npy", file: "labels.npy", setup: none, seeds: labels_seed, read: labels_read },
        Target { name: "grid-json", file: "grid.json", setup: none, seeds: grid_seed, read: grid_read },
        Target { name: "synth-json", file: "synth.json", setup: none, seeds: synth_seed, read: synth_read },
        Target { name: "hierarchy-csv", file: "h.csv", setup: none, seeds: hierarchy_csv_seed, read: hierarchy_read },
        Target {
            name: "hierarchy-json",
            file: "h.json",
            setup: none,
            seeds: hierarchy_json_seed,
            read: hierarchy_read,
        },
    ]
}

fn none(_: &Path) -> anyhow::Result<()> {
    Ok(())
}

/// A tiny colour split: `classes` classes, one image each, in `groups` superclasses.
fn tiny_split(classes: usize, groups: usize) -> DataSplit {
    let per_class = 1;
    let part = |offset: u8| {
        let n = classes * per_class;
        let pixels: Vec<u8> = (0..n * 3072).map(|i| (i as u8).wrapping_mul(7).wrapping_add(offset)).collect();
        let labels: Vec<usize> = (0..n).map(|i| i % classes).collect();
        let names: Vec<String> = (0..classes).map(|c| format!("class{c}")).collect();
        let h = data::Hierarchy::new(
            (0..groups).map(|g| format!("group{g}")).collect(),
            (0..classes).map(|c| c % groups).collect(),
        )
        .expect("valid groups");
        Dataset::rgb32("tiny", pixels, labels, names, Some(h), Normalization::cifar10(), vec![])
    };
    DataSplit { train: part(1), test: part(2) }
}

fn cifar10_bin_setup(dir: &Path) -> anyhow::Result<()> {
    let s = tiny_split(10, 2);
    for k in 2..=5 {
        cifar::write_cifar10_bin(dir.join(format!("data_batch_{k}.bin")), &s.train)?;
    }
    cifar::write_cifar10_bin(dir.join("test_batch.bin"), &s.test)?;
    std::fs::write(dir.join("batches.meta.txt"), cifar::CIFAR10_NAMES.join("\n") + "\n")?;
    Ok(())
}
fn cifar10_bin_seed() -> anyhow::Result<Vec<Vec<u8>>> {
    let d = tempfile::tempdir()?;
    cifar::write_cifar10_bin(d.path().join("b"), &tiny_split(10, 2).train)?;
    Ok(vec![std::fs::read(d.path().join("b"))?])
}
fn cifar10_read(dir: &Path, _: &Path) -> anyhow::Result<()> {
    cifar::load_cifar10(dir)?.train.validate()?;
    Ok(())
}

fn cifar100_bin_setup(dir: &Path) -> anyhow::Result<()> {
    Ok(cifar::write_cifar100_dir(dir, &tiny_split(100, 20))?)
}
fn cifar100_bin_seed() -> anyhow::Result<Vec<Vec<u8>>> {
    let d = tempfile::tempdir()?;
    cifar::write_cifar100_dir(d.path(), &tiny_split(100, 20))?;
    Ok(vec![std::fs::read(d.path().join("train.bin"))?])
}
fn cifar100_read(dir: &Path, _: &Path) -> anyhow::Result<()> {
    cifar::load_cifar100(dir)?.train.validate()?;
    Ok(())
}

// The committed pickles of tests/fixtures/make_cifar_pickles.py (torchvision's layouts, small).
const C10_PY: [(&str, &[u8]); 7] = [
    ("data_batch_1", include_bytes!("../../tests/fixtures/cifar_py/cifar-10-batches-py/data_batch_1")),
    ("data_batch_2", include_bytes!("../../tests/fixtures/cifar_py/cifar-10-batches-py/data_batch_2")),
    ("data_batch_3", include_bytes!("../../tests/fixtures/cifar_py/cifar-10-batches-py/data_batch_3")),
    ("data_batch_4", include_bytes!("../../tests/fixtures/cifar_py/cifar-10-batches-py/data_batch_4")),
    ("data_batch_5", include_bytes!("../../tests/fixtures/cifar_py/cifar-10-batches-py/data_batch_5")),
    ("test_batch", include_bytes!("../../tests/fixtures/cifar_py/cifar-10-batches-py/test_batch")),
    ("batches.meta", include_bytes!("../../tests/fixtures/cifar_py/cifar-10-batches-py/batches.meta")),
];
const C100_PY: [(&str, &[u8]); 3] = [
    ("train", include_bytes!("../../tests/fixtures/cifar_py/cifar-100-python/train")),
    ("test", include_bytes!("../../tests/fixtures/cifar_py/cifar-100-python/test")),
    ("meta", include_bytes!("../../tests/fixtures/cifar_py/cifar-100-python/meta")),
];
const PROTOCOLS: [&[u8]; 4] = [
    include_bytes!("../../tests/fixtures/cifar_py/protocols/data_batch_1.p2"),
    include_bytes!("../../tests/fixtures/cifar_py/protocols/data_batch_1.p3"),
    include_bytes!("../../tests/fixtures/cifar_py/protocols/data_batch_1.p4"),
    include_bytes!("../../tests/fixtures/cifar_py/protocols/data_batch_1.p5"),
];

fn write_all(dir: &Path, sub: &str, files: &[(&str, &[u8])]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join(sub))?;
    for (name, bytes) in files {
        std::fs::write(dir.join(sub).join(name), bytes)?;
    }
    Ok(())
}
fn cifar10_py_setup(dir: &Path) -> anyhow::Result<()> {
    write_all(dir, "cifar-10-batches-py", &C10_PY)
}
fn cifar10_py_seed() -> anyhow::Result<Vec<Vec<u8>>> {
    Ok(vec![C10_PY[0].1.to_vec()])
}
fn cifar100_py_setup(dir: &Path) -> anyhow::Result<()> {
    write_all(dir, "cifar-100-python", &C100_PY)
}
fn cifar100_py_seed() -> anyhow::Result<Vec<Vec<u8>>> {
    Ok(vec![C100_PY[0].1.to_vec()])
}
fn cifar100_py_meta_seed() -> anyhow::Result<Vec<Vec<u8>>> {
    Ok(vec![C100_PY[2].1.to_vec()])
}

fn pickle_seeds() -> anyhow::Result<Vec<Vec<u8>>> {
    Ok(PROTOCOLS.iter().map(|b| b.to_vec()).chain(C100_PY.iter().map(|(_, b)| b.to_vec())).collect())
}
fn pickle_read(_: &Path, input: &Path) -> anyhow::Result<()> {
    data::pickle::read(input, &std::fs::read(input)?)?;
    Ok(())
}

/// An IDX file of 3 images of 5 x 4 bytes.
fn idx_bytes() -> Vec<u8> {
    let mut v = vec![0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 5, 0, 0, 0, 4];
    v.extend((0..60u8).map(|i| i.wrapping_mul(13)));
    v
}
fn idx_seeds() -> anyhow::Result<Vec<Vec<u8>>> {
    Ok(vec![idx_bytes()])
}
fn gzip(parts: &[&[u8]]) -> anyhow::Result<Vec<u8>> {
    use std::io::Write;
    let mut out = Vec::new();
    for p in parts {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(p)?;
        out.extend(e.finish()?);
    }
    Ok(out)
}
fn idx_gz_seeds() -> anyhow::Result<Vec<Vec<u8>>> {
    let b = idx_bytes();
    // One member, and the same bytes as two members (a valid gzip file too).
    Ok(vec![gzip(&[&b])?, gzip(&[&b[..20], &b[20..]])?])
}
fn idx_read(_: &Path, input: &Path) -> anyhow::Result<()> {
    mnist::read_idx(input, 3)?;
    Ok(())
}

fn image_seeds() -> anyhow::Result<Vec<Vec<u8>>> {
    use image::{DynamicImage, ImageFormat, Rgb, RgbImage};
    let img = RgbImage::from_fn(13, 9, |x, y| Rgb([(x * 19) as u8, (y * 27) as u8, ((x + y) * 11) as u8]));
    let mut out = Vec::new();
    let dynimgs = [
        (DynamicImage::ImageRgb8(img.clone()), ImageFormat::Png),
        (DynamicImage::ImageRgb8(img.clone()), ImageFormat::Jpeg),
        (DynamicImage::ImageRgb8(img.clone()), ImageFormat::Bmp),
        (DynamicImage::ImageRgba8(DynamicImage::ImageRgb8(img.clone()).to_rgba8()), ImageFormat::Gif),
        (DynamicImage::ImageLuma8(DynamicImage::ImageRgb8(img.clone()).to_luma8()), ImageFormat::Png),
        (DynamicImage::ImageRgba8(DynamicImage::ImageRgb8(img).to_rgba8()), ImageFormat::Png),
    ];
    for (d, f) in dynimgs {
        let mut c = std::io::Cursor::new(Vec::new());
        d.write_to(&mut c, f)?;
        out.push(c.into_inner());
    }
    Ok(out)
}
fn image_read(_: &Path, input: &Path) -> anyhow::Result<()> {
    folder::decode_image(input, 8).map_err(|e| anyhow::anyhow!(e))?;
    Ok(())
}

/// The smallest model of the zoo that the readers build from its tensors (ResNet-8, 10 classes).
fn small_model() -> anyhow::Result<Model> {
    let mut m = Model::build("resnet8", 4, 0)?;
    m.classes = Some((0..4).map(|c| format!("class{c}")).collect());
    Ok(m)
}
fn model_seed() -> anyhow::Result<Vec<Vec<u8>>> {
    let d = tempfile::tempdir()?;
    let p = d.path().join("m.safetensors");
    crate::train::checkpoint::save_model(&p, &small_model()?)?;
    Ok(vec![std::fs::read(p)?])
}
/// Any checkpoint kind `load_model` reads (safetensors, `.pth` zip or legacy).
fn model_read(_: &Path, input: &Path) -> anyhow::Result<()> {
    crate::train::checkpoint::load_model(input)?;
    Ok(())
}

/// A training state of the small model after one (pretend) epoch, and its model file.
fn state_files(dir: &Path) -> anyhow::Result<()> {
    let m = small_model()?;
    let mut sgd = crate::nn::Sgd::new(0.1, 0.9, false, 5e-4);
    let rec = crate::train::EpochRecord {
        epoch: 1,
        lr: 0.1,
        train_loss: 1.5,
        train_acc: 0.25,
        test_loss: 1.4,
        test_acc: 0.3,
        seconds: 0.5,
    };
    let history = crate::train::History { epochs: vec![rec] };
    crate::train::checkpoint::save_training(&dir.join("m.safetensors"), &m, None, &mut sgd, &history)
}
fn state_setup(dir: &Path) -> anyhow::Result<()> {
    state_files(dir)
}
fn state_seed() -> anyhow::Result<Vec<Vec<u8>>> {
    let d = tempfile::tempdir()?;
    state_files(d.path())?;
    Ok(vec![std::fs::read(d.path().join("m.safetensors.train-state.safetensors"))?])
}
fn state_read(dir: &Path, _: &Path) -> anyhow::Result<()> {
    // Every value is loaded from the state file: no initial draws (as `--resume` does not need them).
    let mut m = crate::nn::without_init(small_model)?;
    let mut sgd = crate::nn::Sgd::new(0.1, 0.9, false, 5e-4);
    crate::train::checkpoint::load_training(&dir.join("m.safetensors"), &mut m, None, &mut sgd)?;
    Ok(())
}

const PTH_ZIP: &[u8] = include_bytes!("../../tests/fixtures/import/resnet8_f16.pth");
const PTH_LEGACY: &[u8] = include_bytes!("../../tests/fixtures/import/resnet8_legacy.pth");
fn pth_zip_seed() -> anyhow::Result<Vec<Vec<u8>>> {
    Ok(vec![PTH_ZIP.to_vec()])
}
fn pth_legacy_seed() -> anyhow::Result<Vec<Vec<u8>>> {
    Ok(vec![PTH_LEGACY.to_vec()])
}

fn npy_seeds() -> anyhow::Result<Vec<Vec<u8>>> {
    Ok(vec![
        include_bytes!("../../tests/fixtures/import/teacher_logits.npy").to_vec(),
        include_bytes!("../../tests/fixtures/import/student_logits.npy").to_vec(),
    ])
}
/// Logits in any format `read_logits` reads, told by the input's extension (`.npy`, `.csv`, `.parquet`).
fn logits_read(_: &Path, input: &Path) -> anyhow::Result<()> {
    crate::interop::logits::read_logits(input)?;
    Ok(())
}
const CSV: &[u8] = include_bytes!("../../tests/fixtures/import/student_logits.csv");
fn csv_seed() -> anyhow::Result<Vec<Vec<u8>>> {
    Ok(vec![
        // The first ten lines of the committed fixture.
        CSV.split_inclusive(|&b| b == b'\n').take(10).flatten().copied().collect(),
        b"index,label,a,b,c\n0,2,0.1,0.2,0.7\n1,0,1e3,-2,-7.5\n".to_vec(),
    ])
}
fn parquet_seed() -> anyhow::Result<Vec<Vec<u8>>> {
    use polars::prelude::{df, ParquetWriter};
    let mut frame = df!("label" => [0i64, 1, 2], "a" => [0.5f64, -1.0, 2.0], "b" => [1.5f64, 0.0, -3.0], "c" => [0.0f64, 2.0, 1.0])?;
    let mut buf = Vec::new();
    ParquetWriter::new(&mut buf).finish(&mut frame)?;
    Ok(vec![buf])
}
fn labels_seed() -> anyhow::Result<Vec<Vec<u8>>> {
    Ok(vec![include_bytes!("../../tests/fixtures/import/labels.npy").to_vec()])
}
fn labels_read(_: &Path, input: &Path) -> anyhow::Result<()> {
    crate::interop::logits::read_labels(input)?;
    Ok(())
}

fn grid_seed() -> anyhow::Result<Vec<Vec<u8>>> {
    use crate::grid::{Grid, MethodSpec, Pair};
    let g =
        Grid::reviewkd_ablation(Pair::new("resnet56", "resnet20"), &[0, 1], crate::train::TrainConfig::short_cosine());
    let mut swept =
        Grid::new("sweep", vec![Pair::new("resnet32x4", "resnet8x4")], &["ce"], &[0, 1], Default::default());
    let mut kd = MethodSpec::new("kd");
    kd.sweep.insert("temperature".into(), vec![2.into(), 4.into(), 8.into()]);
    swept.methods.push(kd.into());
    Ok(vec![serde_json::to_vec_pretty(&g)?, serde_json::to_vec_pretty(&swept)?])
}
fn grid_read(_: &Path, input: &Path) -> anyhow::Result<()> {
    let g: crate::grid::Grid = crate::io::read_json(input)?;
    g.runs()?;
    g.train.validate()?;
    Ok(())
}

fn synth_seed() -> anyhow::Result<Vec<Vec<u8>>> {
    let shapes = synthetic::SynthConfig { fractal: false, relation: true, ..Default::default() };
    Ok(vec![serde_json::to_vec(&synthetic::SynthConfig::default())?, serde_json::to_vec(&shapes)?])
}
fn synth_read(_: &Path, input: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(input)?;
    let cfg: synthetic::SynthConfig = serde_json::from_str(&text).context("not a synthetic configuration")?;
    cfg.validate()?;
    // Generated with one image per class and part, whatever the counts asked (they are validated).
    synthetic::try_builtin_dataset(&synthetic::SynthConfig { train_per_class: 1, test_per_class: 1, ..cfg })?;
    Ok(())
}

fn hierarchy_classes() -> Vec<String> {
    ["apple", "pear", "rose", "tulip"].iter().map(|s| s.to_string()).collect()
}
fn hierarchy_csv_seed() -> anyhow::Result<Vec<Vec<u8>>> {
    Ok(vec![b"class,superclass\napple,fruit\npear,fruit\nrose,flower\ntulip,flower\n".to_vec()])
}
/// A hierarchy file, CSV or JSON by its extension.
fn hierarchy_read(_: &Path, input: &Path) -> anyhow::Result<()> {
    data::read_hierarchy(input, &hierarchy_classes())?;
    Ok(())
}
fn hierarchy_json_seed() -> anyhow::Result<Vec<Vec<u8>>> {
    Ok(vec![br#"{"apple": "fruit", "pear": "fruit", "rose": "flower", "tulip": "flower"}"#.to_vec()])
}
