//! Dataset readers on small files written in the real formats, and their errors on bad files.
use std::io::Write;

use kdscope::data::synthetic::{builtin_dataset, SynthConfig};
use kdscope::data::{cifar, folder, mnist, DataError, DataSplit, Dataset, Hierarchy, Normalization};

fn tiny_rgb(n: usize, classes: usize, seed: u8) -> Dataset {
    let pixels: Vec<u8> = (0..n * 3072).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
    Dataset {
        name: "tiny".into(),
        channels: 3,
        height: 32,
        width: 32,
        pixels,
        stream: None,
        labels: (0..n).map(|i| (i * 7 + seed as usize) % classes).collect(),
        class_names: (0..classes).map(|c| format!("class{c}")).collect(),
        hierarchy: None,
        norm: Normalization::cifar10(),
        provenance: vec![],
    }
}

#[test]
fn cifar10_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mut all = Vec::new();
    for b in 1..=5 {
        let ds = tiny_rgb(3, 10, b);
        cifar::write_cifar10_bin(dir.path().join(format!("data_batch_{b}.bin")), &ds).unwrap();
        all.push(ds);
    }
    let test = tiny_rgb(4, 10, 9);
    cifar::write_cifar10_bin(dir.path().join("test_batch.bin"), &test).unwrap();
    std::fs::write(dir.path().join("batches.meta.txt"), cifar::CIFAR10_NAMES.join("\n") + "\n\n").unwrap();
    let split = cifar::load_cifar10(dir.path()).unwrap();
    assert_eq!(split.train.len(), 15);
    assert_eq!(split.train.labels[3..6], all[1].labels[..]);
    assert_eq!(split.train.image(4), all[1].image(1));
    assert_eq!(split.test.pixels, test.pixels);
    assert_eq!(split.test.class_names[9], "truck");
    // record layout: byte 0 label, then 1024 R, 1024 G, 1024 B.
    let raw = std::fs::read(dir.path().join("test_batch.bin")).unwrap();
    assert_eq!(raw[0] as usize, test.labels[0]);
    assert_eq!(raw[1 + 1024], test.pixels[1024]);
    assert_eq!(split.train.provenance.len(), 5);
}

#[test]
fn cifar100_round_trip_with_hierarchy() {
    let dir = tempfile::tempdir().unwrap();
    let fine: Vec<String> = (0..100).map(|c| format!("fine{c}")).collect();
    let coarse: Vec<String> = (0..20).map(|c| format!("coarse{c}")).collect();
    let h = Hierarchy::new(coarse.clone(), (0..100).map(|c| c % 20).collect()).unwrap();
    // every fine class must occur for its superclass to be known: 100 train images, one per class.
    let mut train = tiny_rgb(100, 100, 1);
    train.labels = (0..100).collect();
    train.hierarchy = Some(h.clone());
    let mut test = tiny_rgb(5, 100, 2);
    test.hierarchy = Some(h.clone());
    train.class_names = fine.clone();
    cifar::write_cifar100_dir(dir.path(), &DataSplit { train: train.clone(), test: test.clone() }).unwrap();
    let s = cifar::load_cifar100(dir.path()).unwrap();
    assert_eq!(s.train.labels, train.labels);
    assert_eq!(s.test.labels, test.labels);
    assert_eq!(s.test.pixels, test.pixels);
    let got = s.train.hierarchy.unwrap();
    assert_eq!(got, h);
    assert_eq!(got.super_names[3], "coarse3");
    assert_eq!(s.train.class_names[42], "fine42");
}

#[test]
fn built_in_dataset_exports_as_cifar100_records() {
    let dir = tempfile::tempdir().unwrap();
    let split = builtin_dataset(&SynthConfig { train_per_class: 2, test_per_class: 1, ..Default::default() });
    cifar::write_cifar100_dir(dir.path(), &split).unwrap();
    let bytes = std::fs::read(dir.path().join("train.bin")).unwrap();
    assert_eq!(bytes.len(), 40 * 3074);
    // Record 13: class 13 (classes interleave), superclass 13 / 4 = 3, then the image's pixels.
    let r = &bytes[13 * 3074..14 * 3074];
    assert_eq!((r[0], r[1]), (3, 13));
    assert_eq!(&r[2..], &*split.train.image(13));
    assert_eq!(std::fs::read(dir.path().join("test.bin")).unwrap().len(), 20 * 3074);
    let fine = std::fs::read_to_string(dir.path().join("fine_label_names.txt")).unwrap();
    assert_eq!(fine.lines().nth(13), Some("blue-b"));
    let coarse = std::fs::read_to_string(dir.path().join("coarse_label_names.txt")).unwrap();
    assert_eq!(coarse.lines().collect::<Vec<_>>(), ["red", "lime", "green", "blue", "violet"]);
    // No hierarchy: no coarse labels to write.
    let mut flat = split.clone();
    flat.train.hierarchy = None;
    let err = cifar::write_cifar100_dir(dir.path().join("flat"), &flat).unwrap_err().to_string();
    assert!(err.contains("hierarchy"), "{err}");
}

#[test]
fn cifar_truncated_and_bad_labels_name_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let ds = tiny_rgb(2, 10, 0);
    for b in 1..=5 {
        cifar::write_cifar10_bin(dir.path().join(format!("data_batch_{b}.bin")), &ds).unwrap();
    }
    cifar::write_cifar10_bin(dir.path().join("test_batch.bin"), &ds).unwrap();
    // Truncate batch 3 in the middle of its second record.
    let p3 = dir.path().join("data_batch_3.bin");
    let bytes = std::fs::read(&p3).unwrap();
    std::fs::write(&p3, &bytes[..3073 + 100]).unwrap();
    let e = cifar::load_cifar10(dir.path()).unwrap_err();
    match &e {
        DataError::Format { path, offset, .. } => {
            assert_eq!(path, &p3);
            assert_eq!(*offset, 3073);
        }
        other => panic!("unexpected {other:?}"),
    }
    let msg = e.to_string();
    assert!(msg.contains("data_batch_3.bin") && msg.contains("3073") && msg.contains("100 trailing bytes"), "{msg}");
    // A label byte of 200 in record 1 of batch 2.
    std::fs::write(&p3, &bytes).unwrap();
    let p2 = dir.path().join("data_batch_2.bin");
    let mut b2 = std::fs::read(&p2).unwrap();
    b2[3073] = 200;
    std::fs::write(&p2, &b2).unwrap();
    let msg = cifar::load_cifar10(dir.path()).unwrap_err().to_string();
    assert!(msg.contains("data_batch_2.bin") && msg.contains("offset 3073") && msg.contains("label 200"), "{msg}");
    // Missing file.
    std::fs::remove_file(dir.path().join("test_batch.bin")).unwrap();
    std::fs::write(&p2, &bytes).unwrap();
    let msg = cifar::load_cifar10(dir.path()).unwrap_err().to_string();
    assert!(msg.contains("test_batch.bin"), "{msg}");
}

fn write_mnist(dir: &std::path::Path, prefix: &str, n: usize, gz: bool) -> (Vec<u8>, Vec<u8>) {
    let px: Vec<u8> = (0..n * 28 * 28).map(|i| (i % 251) as u8).collect();
    let lb: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    for (name, bytes) in [
        (format!("{prefix}-images-idx3-ubyte"), mnist::encode_idx(&[n, 28, 28], &px)),
        (format!("{prefix}-labels-idx1-ubyte"), mnist::encode_idx(&[n], &lb)),
    ] {
        if gz {
            let f = std::fs::File::create(dir.join(format!("{name}.gz"))).unwrap();
            let mut e = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
            e.write_all(&bytes).unwrap();
            e.finish().unwrap();
        } else {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    (px, lb)
}

#[test]
fn mnist_raw_and_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let (px, lb) = write_mnist(dir.path(), "train", 12, false);
    let (tpx, _) = write_mnist(dir.path(), "t10k", 5, true);
    let s = mnist::load_mnist(dir.path()).unwrap();
    assert_eq!((s.train.channels, s.train.height, s.train.width), (1, 28, 28));
    assert_eq!(s.train.pixels, px);
    assert_eq!(s.train.labels, lb.iter().map(|&l| l as usize).collect::<Vec<_>>());
    assert_eq!(s.test.pixels, tpx);
    assert_eq!(s.test.len(), 5);
}

#[test]
fn mnist_errors_name_offset_and_expectation() {
    let dir = tempfile::tempdir().unwrap();
    write_mnist(dir.path(), "train", 4, false);
    write_mnist(dir.path(), "t10k", 2, false);
    let ip = dir.path().join("train-images-idx3-ubyte");
    let bytes = std::fs::read(&ip).unwrap();
    // truncated payload
    std::fs::write(&ip, &bytes[..bytes.len() - 10]).unwrap();
    let msg = mnist::load_mnist(dir.path()).unwrap_err().to_string();
    assert!(
        msg.contains("train-images-idx3-ubyte") && msg.contains("3136 data bytes") && msg.contains("3126 bytes"),
        "{msg}"
    );
    // wrong magic
    let mut bad = bytes.clone();
    bad[3] = 1;
    std::fs::write(&ip, &bad).unwrap();
    let msg = mnist::load_mnist(dir.path()).unwrap_err().to_string();
    assert!(msg.contains("byte offset 0") && msg.contains("magic"), "{msg}");
    // corrupt gzip
    std::fs::remove_file(&ip).unwrap();
    std::fs::write(dir.path().join("train-images-idx3-ubyte.gz"), [0x1f, 0x8b, 8, 0, 1, 2, 3]).unwrap();
    let msg = mnist::load_mnist(dir.path()).unwrap_err().to_string();
    assert!(msg.contains("gzip"), "{msg}");
    // label out of range at a known offset
    std::fs::remove_file(dir.path().join("train-images-idx3-ubyte.gz")).unwrap();
    std::fs::write(&ip, &bytes).unwrap();
    let lp = dir.path().join("train-labels-idx1-ubyte");
    let mut l = std::fs::read(&lp).unwrap();
    l[8 + 2] = 42;
    std::fs::write(&lp, &l).unwrap();
    let msg = mnist::load_mnist(dir.path()).unwrap_err().to_string();
    assert!(msg.contains("offset 10") && msg.contains("42"), "{msg}");
}

#[test]
fn image_folder_reads_resizes_and_orders_classes() {
    let dir = tempfile::tempdir().unwrap();
    for (split, n) in [("train", 2), ("test", 1)] {
        for (ci, cls) in ["zebra", "apple"].iter().enumerate() {
            let d = dir.path().join(split).join(cls);
            std::fs::create_dir_all(&d).unwrap();
            for k in 0..n {
                let img = image::RgbImage::from_pixel(8 + k as u32, 6, image::Rgb([(ci * 200) as u8, 50, 100]));
                img.save(d.join(format!("{k}.png"))).unwrap();
            }
        }
    }
    std::fs::write(dir.path().join("train/apple/notes.txt"), "not an image").unwrap();
    let s = folder::load_image_folder_split(dir.path(), 4).unwrap();
    assert_eq!(s.train.class_names, vec!["apple", "zebra"]);
    assert_eq!(s.train.len(), 4);
    assert_eq!(s.test.len(), 2);
    assert_eq!((s.train.height, s.train.width, s.train.channels), (4, 4, 3));
    // Written as zebra red 0, apple red 200; sorted, apple is class 0. Uniform images survive resizing.
    let z = s.train.labels.iter().position(|&l| l == 1).unwrap();
    assert_eq!(s.train.image(z)[0], 0);
    assert_eq!(s.train.image(z)[16], 50);
    let a = s.train.labels.iter().position(|&l| l == 0).unwrap();
    assert_eq!(s.train.image(a)[0], 200);
    // A corrupt image is skipped and named in the provenance.
    std::fs::write(dir.path().join("train/apple/bad.png"), b"\x89PNG broken").unwrap();
    let s = folder::load_image_folder_split(dir.path(), 4).unwrap();
    assert_eq!(s.train.len(), 4);
    assert!(s.train.provenance.iter().any(|(k, v)| k == folder::SKIPPED && v.contains("bad.png")));
}

#[test]
fn hierarchies_from_files_and_from_class_names() {
    let names: Vec<String> = [
        "Apple___Apple_scab",
        "Apple___healthy",
        "Corn___Common_rust",
        "Background_without_leaves",
        "Tomato___healthy",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let h = Hierarchy::from_separator(&names, "___").unwrap();
    assert_eq!(h.super_names, ["Apple", "Corn", "Background_without_leaves", "Tomato"]);
    assert_eq!(h.class_to_super, vec![0, 0, 1, 2, 3]);
    assert!(Hierarchy::from_separator(&names, "").unwrap_err().to_string().contains("empty"));

    let dir = tempfile::tempdir().unwrap();
    let classes: Vec<String> = ["cat", "dog", "car"].iter().map(|s| s.to_string()).collect();
    let csv = dir.path().join("h.csv");
    std::fs::write(&csv, "class,superclass\ncat, animal\ndog,animal\n\ncar,vehicle\n").unwrap();
    let h = kdscope::data::read_hierarchy(&csv, &classes).unwrap();
    assert_eq!(
        (h.super_names.clone(), h.class_to_super.clone()),
        (vec!["animal".to_string(), "vehicle".into()], vec![0, 0, 1])
    );
    let json = dir.path().join("h.json");
    std::fs::write(&json, r#"{"car": "vehicle", "cat": "animal", "dog": "animal"}"#).unwrap();
    let hj = kdscope::data::read_hierarchy(&json, &classes).unwrap();
    assert_eq!(hj.class_to_super[0], hj.class_to_super[1]);
    assert_ne!(hj.class_to_super[0], hj.class_to_super[2]);
    // Errors name the file, the line or the class.
    std::fs::write(&csv, "cat,animal\ndog animal\n").unwrap();
    let msg = kdscope::data::read_hierarchy(&csv, &classes).unwrap_err().to_string();
    assert!(msg.contains("h.csv line 2") && msg.contains("dog animal"), "{msg}");
    std::fs::write(&csv, "cat,animal\ndog,animal\n").unwrap();
    let msg = kdscope::data::read_hierarchy(&csv, &classes).unwrap_err().to_string();
    assert!(msg.contains("h.csv") && msg.contains("class 'car' has no superclass"), "{msg}");
    std::fs::write(&csv, "cat,animal\ndog,animal\ncar,vehicle\ncat,pet\n").unwrap();
    let msg = kdscope::data::read_hierarchy(&csv, &classes).unwrap_err().to_string();
    assert!(msg.contains("'cat' is listed twice"), "{msg}");
    std::fs::write(&csv, "cat,animal\nbus,vehicle\n").unwrap();
    let msg = kdscope::data::read_hierarchy(&csv, &classes).unwrap_err().to_string();
    assert!(msg.contains("class 'bus' is not among the class names"), "{msg}");
}
