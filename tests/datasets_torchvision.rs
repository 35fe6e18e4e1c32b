//! Datasets in torchvision's on-disk layouts: CIFAR-10/100's Python version (pickles written by
//! tests/fixtures/make_cifar_pickles.py, as Python 2's cPickle wrote the originals and as Python 3
//! writes them at protocols 2 to 5) and MNIST's `MNIST/raw/`. Values are checked against the formula
//! the script used; bad and mutated files must give errors naming the file, never a panic.
use std::path::{Path, PathBuf};

use kdscope::data::{cifar, mnist, pickle, DataSplit};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cifar_py")
}

/// Pixel `k` of image `i` of a fixture file with seed `s` (make_cifar_pickles.py's `images`).
fn pixel(i: usize, k: usize, s: usize) -> u8 {
    ((7 * i + 13 * k + s) % 256) as u8
}

fn check_images(pixels: &[u8], n: usize, seed: usize) {
    assert_eq!(pixels.len(), n * 3072);
    for i in 0..n {
        for k in 0..3072 {
            assert_eq!(pixels[i * 3072 + k], pixel(i, k, seed), "image {i} value {k} of seed {seed}");
        }
    }
}

fn check_cifar10(split: &DataSplit) {
    assert_eq!(split.train.len(), 15);
    assert_eq!(split.test.len(), 4);
    assert_eq!(split.train.class_names[0], "airplane");
    assert_eq!(split.train.class_names[9], "truck");
    for s in 1..=5 {
        let part = &split.train.pixels[(s - 1) * 3 * 3072..s * 3 * 3072];
        check_images(part, 3, s);
        let labels = &split.train.labels[(s - 1) * 3..s * 3];
        assert_eq!(labels, (0..3).map(|i| (i + s) % 10).collect::<Vec<_>>());
    }
    check_images(&split.test.pixels, 4, 6);
    assert_eq!(split.test.labels, vec![6, 7, 8, 9]);
    assert_eq!(split.train.provenance.len(), 5);
}

#[test]
fn cifar10_python_version_loads_from_the_folder_or_torchvisions_root() {
    let root = fixtures();
    check_cifar10(&cifar::load_cifar10(&root).unwrap());
    check_cifar10(&cifar::load_cifar10(root.join("cifar-10-batches-py")).unwrap());
    // The binary version written from it loads to the same split.
    let py = cifar::load_cifar10(&root).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("cifar-10-batches-bin");
    std::fs::create_dir(&bin).unwrap();
    for (b, range) in (1..=5).map(|b| (b, (b - 1) * 3..b * 3)) {
        let idx: Vec<usize> = range.collect();
        cifar::write_cifar10_bin(bin.join(format!("data_batch_{b}.bin")), &py.train.subset(&idx)).unwrap();
    }
    cifar::write_cifar10_bin(bin.join("test_batch.bin"), &py.test).unwrap();
    let from_bin = cifar::load_cifar10(dir.path()).unwrap();
    assert_eq!(from_bin.train.pixels, py.train.pixels);
    assert_eq!(from_bin.train.labels, py.train.labels);
    assert_eq!(from_bin.test.labels, py.test.labels);
}

#[test]
fn pickles_of_every_protocol_read_the_same() {
    let dir = fixtures();
    for p in 2..=5 {
        let path = dir.join(format!("protocols/data_batch_1.p{p}"));
        let v = pickle::read(&path, &std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v.get("labels").unwrap().items().unwrap().len(), 3, "protocol {p}");
        assert_eq!(v.get("batch_label").unwrap().text().unwrap(), "batch 1");
        let names: Vec<String> =
            v.get("filenames").unwrap().items().unwrap().iter().map(|n| n.text().unwrap()).collect();
        assert_eq!(names, ["image_1_0.png", "image_1_1.png", "image_1_2.png"]);
        let data = v.get("data").unwrap();
        let pickle::Value::Array(a) = &data else { panic!("protocol {p}: data is not an array") };
        let a = a.borrow();
        let a = a.as_ref().unwrap();
        assert_eq!(a.shape, [3, 3072]);
        assert_eq!(a.dtype.kind, 'u');
        check_images(&a.data, 3, 1);
    }
}

#[test]
fn cifar100_python_subset_loads_with_its_absent_classes_named() {
    let root = fixtures();
    let s = cifar::load_cifar100(&root).unwrap();
    let fine = |n: usize, seed: usize| (0..n).map(|i| (5 * i + seed) % 100).collect::<Vec<_>>();
    assert_eq!(s.train.labels, fine(6, 7));
    assert_eq!(s.test.labels, fine(4, 8));
    check_images(&s.train.pixels, 6, 7);
    check_images(&s.test.pixels, 4, 8);
    assert_eq!(s.train.class_names.len(), 100);
    assert_eq!(s.train.class_names[42], "fine_42");
    let h = s.train.hierarchy.as_ref().unwrap();
    // 20 superclasses of the meta file and one for the classes without images.
    assert_eq!(h.super_names.len(), 21);
    assert_eq!(h.super_names[20], cifar::ABSENT);
    // The script's COARSE_OF for the classes present; the rest absent.
    const COARSE_OF: [usize; 100] = [
        4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11, 6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1,
        10, 12, 14, 16, 9, 11, 5, 5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17, 10, 3, 2, 12,
        12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13, 16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0,
        17, 8, 14, 13,
    ];
    let present: Vec<usize> = fine(6, 7).into_iter().chain(fine(4, 8)).collect();
    for (c, (&got, &coarse)) in h.class_to_super.iter().zip(&COARSE_OF).enumerate() {
        assert_eq!(got, if present.contains(&c) { coarse } else { 20 }, "class {c}");
    }
    let note = s.train.provenance.iter().find(|(k, _)| k == "classes without images").unwrap();
    assert!(note.1.starts_with("90 of 100 classes have no image") && note.1.contains("fine_00"), "{}", note.1);
}

/// Copies the fixture folder `name` into a temporary root, to break one file.
fn copy_fixture(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join(name);
    std::fs::create_dir(&dst).unwrap();
    for e in std::fs::read_dir(fixtures().join(name)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    (dir, dst)
}

#[test]
fn bad_cifar_pickles_name_the_file_and_what_was_wrong() {
    let (root, dir) = copy_fixture("cifar-10-batches-py");
    let p = dir.join("data_batch_2");
    let good = std::fs::read(&p).unwrap();
    // Truncated inside the array's bytes: the offset of the string that runs past the end.
    std::fs::write(&p, &good[..5000]).unwrap();
    let msg = cifar::load_cifar10(root.path()).unwrap_err().to_string();
    assert!(msg.contains("data_batch_2") && msg.contains("byte offset") && msg.contains("bytes left"), "{msg}");
    // A label of 10 (BININT1 10 where the first label, 2, was).
    let at = good.windows(4).position(|w| w == [b']', b'q', 4, b'(']).unwrap() + 4;
    assert_eq!(&good[at..at + 2], [b'K', 2]);
    let mut bad = good.clone();
    bad[at + 1] = 10;
    std::fs::write(&p, &bad).unwrap();
    let msg = cifar::load_cifar10(root.path()).unwrap_err().to_string();
    assert!(msg.contains("data_batch_2") && msg.contains("'labels'[0] is 10") && msg.contains("below 10"), "{msg}");
    // Not a pickle at all.
    std::fs::write(&p, b"# data_batch_2 is a text file now\n").unwrap();
    let msg = cifar::load_cifar10(root.path()).unwrap_err().to_string();
    assert!(msg.contains("data_batch_2") && msg.contains("byte offset 0") && msg.contains("opcode 0x23"), "{msg}");
    std::fs::write(&p, b"data_batch_2 as text\n").unwrap();
    let msg = cifar::load_cifar10(root.path()).unwrap_err().to_string();
    assert!(msg.contains("byte offset 0: expected a MARK before this opcode"), "{msg}");
    // A missing meta file falls back to the standard names; a missing batch is named.
    std::fs::write(&p, &good).unwrap();
    std::fs::remove_file(dir.join("batches.meta")).unwrap();
    assert_eq!(cifar::load_cifar10(root.path()).unwrap().train.class_names[1], "automobile");
    std::fs::remove_file(dir.join("test_batch")).unwrap();
    let msg = cifar::load_cifar10(root.path()).unwrap_err().to_string();
    assert!(msg.contains("test_batch"), "{msg}");
    // No CIFAR at all: the message lists where it looked.
    let empty = tempfile::tempdir().unwrap();
    let msg = cifar::load_cifar100(empty.path()).unwrap_err().to_string();
    assert!(msg.contains("cifar-100-python/") && msg.contains("train.bin"), "{msg}");
}

/// A small deterministic generator (SplitMix64) for the mutations.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One mutation: bit flips, a byte set to an extreme, truncation, an inserted or deleted run, a
/// length field overwritten with a huge value.
fn mutate(good: &[u8], rng: &mut Mix) -> Vec<u8> {
    let mut b = good.to_vec();
    for _ in 0..1 + rng.below(3) {
        let i = rng.below(b.len());
        match rng.below(6) {
            0 => b[i] ^= 1 << rng.below(8),
            1 => b[i] = [0, 0x7f, 0x80, 0xff][rng.below(4)],
            2 => b.truncate(i),
            3 => {
                let run: Vec<u8> = (0..1 + rng.below(8)).map(|_| rng.next() as u8).collect();
                b.splice(i..i, run);
            }
            4 => {
                let end = (i + 1 + rng.below(16)).min(b.len());
                b.drain(i..end);
            }
            _ => {
                let end = (i + 4).min(b.len());
                b[i..end].iter_mut().for_each(|x| *x = 0xff);
            }
        }
        if b.is_empty() {
            break;
        }
    }
    b
}

/// 12,000 mutated pickles (of every fixture file) through the reader and the CIFAR loaders: errors
/// are fine, panics are not.
#[test]
fn pickle_reader_survives_mutated_files() {
    let dir = fixtures();
    let files: Vec<PathBuf> =
        ["cifar-10-batches-py/data_batch_1", "cifar-10-batches-py/batches.meta", "cifar-100-python/meta"]
            .iter()
            .map(|f| dir.join(f))
            .chain((2..=5).map(|p| dir.join(format!("protocols/data_batch_1.p{p}"))))
            .collect();
    let mut rng = Mix(7);
    let (mut ok, mut errors) = (0, 0);
    for round in 0..12_000 {
        let f = &files[round % files.len()];
        let bytes = mutate(&std::fs::read(f).unwrap(), &mut rng);
        let r = std::panic::catch_unwind(|| pickle::read(f, &bytes).map(|_| ()));
        match r {
            Ok(Ok(())) => ok += 1,
            Ok(Err(e)) => {
                assert!(e.to_string().contains(&f.display().to_string()), "{e}");
                errors += 1
            }
            Err(_) => panic!("the pickle reader panicked on a mutation of {} (round {round})", f.display()),
        }
    }
    assert!(errors > 6_000 && ok > 100, "{ok} read, {errors} refused");
    // A million nested tuples (one byte each) and lists (two bytes each) read and drop without
    // overflowing the stack.
    let mut deep = vec![0x80, 2, b']'];
    deep.extend(std::iter::repeat_n(0x85, 1_000_000));
    deep.extend(std::iter::repeat_n(b']', 1_000_000));
    deep.extend(std::iter::repeat_n(b'a', 999_999));
    deep.push(b'.');
    let v = pickle::read(Path::new("deep.pkl"), &deep).unwrap();
    assert_eq!(v.type_name(), "list");
    drop(v);
    // Through the loader (labels, shapes and names checked): a mutated batch in a copied folder.
    let (root, cdir) = copy_fixture("cifar-10-batches-py");
    let good = std::fs::read(cdir.join("data_batch_1")).unwrap();
    for round in 0..500 {
        std::fs::write(cdir.join("data_batch_1"), mutate(&good, &mut rng)).unwrap();
        let r = std::panic::catch_unwind(|| cifar::load_cifar10(root.path()).map(|_| ()));
        assert!(r.is_ok(), "the CIFAR loader panicked on mutation {round}");
    }
}

#[test]
fn mnist_loads_from_torchvisions_raw_folder() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("MNIST").join("raw");
    std::fs::create_dir_all(&raw).unwrap();
    for (prefix, n) in [("train", 5), ("t10k", 3)] {
        let px: Vec<u8> = (0..n * 28 * 28).map(|i| (i % 253) as u8).collect();
        let lb: Vec<u8> = (0..n).map(|i| (i * 3 % 10) as u8).collect();
        std::fs::write(raw.join(format!("{prefix}-images-idx3-ubyte")), mnist::encode_idx(&[n, 28, 28], &px)).unwrap();
        std::fs::write(raw.join(format!("{prefix}-labels-idx1-ubyte")), mnist::encode_idx(&[n], &lb)).unwrap();
    }
    for d in [dir.path().to_path_buf(), dir.path().join("MNIST"), raw.clone()] {
        let s = mnist::load_mnist(&d).unwrap();
        assert_eq!((s.train.len(), s.test.len()), (5, 3));
        assert_eq!(s.train.labels, vec![0, 3, 6, 9, 2]);
        assert_eq!(s.test.pixels[785] as usize, 785 % 253);
    }
    let msg = mnist::load_mnist(dir.path().join("MNIST/processed")).unwrap_err().to_string();
    assert!(msg.contains("MNIST/raw/") && msg.contains("train-images-idx3-ubyte"), "{msg}");
}

/// `kdscope train` on torchvision's CIFAR-100 folder given as its root, with a hierarchy from the class
/// names (`fine_07` → `fine`, one superclass) replacing the coarse labels, then a report whose superclass
/// view shows it.
#[test]
fn cli_trains_on_torchvisions_cifar_folder_and_reports_with_a_hierarchy() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.safetensors");
    let res = std::process::Command::new(env!("CARGO_BIN_EXE_kdscope"))
        .args(["train", "--dataset", "cifar100", "--arch", "resnet8", "--epochs", "1", "--batch-size", "3"])
        .arg("--data-dir")
        .arg(fixtures())
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(res.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&res.stderr));
    assert!(stdout.contains("resnet8 on cifar100"), "{stdout}");
    let html = dir.path().join("r.html");
    let res = std::process::Command::new(env!("CARGO_BIN_EXE_kdscope"))
        .args(["report", "--dataset", "cifar100", "--hierarchy-sep", "_", "--images-per-class", "1"])
        .arg("--data-dir")
        .arg(fixtures().join("cifar-100-python"))
        .arg("--teacher")
        .arg(&out)
        .arg("--student")
        .arg(&out)
        .arg("--out")
        .arg(&html)
        .output()
        .unwrap();
    assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("fine_42") && !page.contains("coarse_05"),
        "the hierarchy from the names replaces the coarse labels"
    );
}
