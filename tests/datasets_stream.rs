//! Streamed image folders: the same images, batches, augmentations and trained weights as the
//! in-memory path, a cache that keeps to its budget, a file that breaks after opening reported by
//! name (never a panic), and a flat memory profile over 20,000 JPEGs.
use std::path::Path;
use std::process::Command;

use image::{Rgb, RgbImage};
use kdscope::data::folder::{self, FolderOptions, Storage};
use kdscope::data::{make_batch, Augment, Dataset, Normalization};

/// A textured `w` x `h` image whose pattern depends on `seed` (so crops and flips change pixels).
fn textured(w: u32, h: u32, seed: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let v = |k: u32| ((x * (3 + k) + y * (5 + seed % 7) + seed * 13 + k * 40) % 256) as u8;
        Rgb([v(0), v(1), v(2)])
    })
}

/// Three classes of PNG and JPEG files of varied sizes, plus one corrupt and one empty file.
fn varied_folder(root: &Path, per_class: u32) {
    for (ci, cls) in ["ant", "bee", "wasp"].iter().enumerate() {
        let d = root.join(cls);
        std::fs::create_dir_all(&d).unwrap();
        for k in 0..per_class {
            let seed = ci as u32 * 100 + k;
            let img = textured(20 + (k * 7) % 23, 18 + (k * 5) % 29, seed);
            let ext = if k % 2 == 0 { "png" } else { "jpg" };
            img.save(d.join(format!("{k:03}.{ext}"))).unwrap();
        }
    }
    std::fs::write(root.join("bee/zz_broken.jpg"), b"\xff\xd8\xff\xdb truncated").unwrap();
    std::fs::write(root.join("wasp/zz_empty.png"), b"").unwrap();
}

fn opts(storage: Storage, cache_images: usize, size: usize) -> FolderOptions {
    FolderOptions {
        val_fraction: Some(0.3),
        seed: 5,
        storage,
        cache_bytes: cache_images * 3 * size * size,
        ..FolderOptions::new(size)
    }
}

fn same_images(a: &Dataset, b: &Dataset) {
    assert_eq!(a.labels, b.labels);
    assert_eq!(a.provenance, b.provenance);
    for i in 0..a.len() {
        assert_eq!(a.image(i), b.image(i), "image {i}");
    }
}

#[test]
fn streamed_and_in_memory_folders_give_identical_batches() {
    let dir = tempfile::tempdir().unwrap();
    varied_folder(dir.path(), 12);
    let size = 16;
    let mem = folder::load_folder_dataset(dir.path(), &opts(Storage::Memory, 0, size)).unwrap();
    assert!(!mem.train.is_streamed() && mem.train.pixels.len() == mem.train.len() * 3 * size * size);
    for cache in [0, 5, 1000] {
        let st = folder::load_folder_dataset(dir.path(), &opts(Storage::Stream, cache, size)).unwrap();
        assert!(st.train.is_streamed() && st.train.pixels.is_empty());
        // 36 images, 2 unreadable files skipped and named in both paths alike (same digest of pixels).
        assert_eq!(st.train.len() + st.test.len(), 36);
        let named: String = st.train.provenance.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
        assert!(named.contains("zz_broken.jpg") && named.contains("zz_empty.png (an empty file)"), "{named}");
        same_images(&mem.train, &st.train);
        same_images(&mem.test, &st.test);
        for aug in [Augment::IMAGENET, Augment::STANDARD] {
            let idx = [3, 0, 7, 7, 11];
            let (a, b) = (make_batch(&mem.train, &idx, Some((aug, 9))), make_batch(&st.train, &idx, Some((aug, 9))));
            assert_eq!(a.x.data(), b.x.data());
            assert_eq!(a.labels, b.labels);
        }
        assert_eq!(Normalization::of(&mem.train), Normalization::of(&st.train));
        same_images(&mem.test.take_per_class(2), &st.test.take_per_class(2));
        assert!(st.test.take_per_class(2).is_streamed());
        // The budget is shared by both parts and never exceeded; the first images fill it.
        let s = st.train.stream.as_ref().unwrap();
        let held = cache.min(st.train.len());
        assert_eq!(s.cached(), held, "cache of {cache} images");
        assert_eq!(s.budget().used(), (held + st.test.stream.as_ref().unwrap().cached()) * 3 * size * size);
        assert!(s.budget().used() <= s.budget().limit());
        // Reading every training image again decodes exactly the ones the cache does not hold.
        let before = s.decodes();
        for i in 0..st.train.len() {
            let _ = st.train.image(i);
        }
        assert_eq!(s.decodes() - before, st.train.len() - s.cached());
        assert!(st.train.check_stream().is_ok());
    }
}

#[test]
fn auto_streams_only_when_the_images_exceed_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    varied_folder(dir.path(), 4);
    // 14 image files (12 readable) at 8 px: 14 x 192 bytes decide it, before decoding.
    let small = folder::load_folder_dataset(dir.path(), &opts(Storage::Auto, 14, 8)).unwrap();
    assert!(!small.train.is_streamed() && !small.test.is_streamed());
    let big = folder::load_folder_dataset(dir.path(), &opts(Storage::Auto, 13, 8)).unwrap();
    assert!(big.train.is_streamed() && big.test.is_streamed());
}

#[test]
fn a_file_broken_after_opening_is_named_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    varied_folder(dir.path(), 4);
    let ds = folder::load_image_folder(dir.path(), &opts(Storage::Stream, 0, 8), None).unwrap();
    assert!(ds.check_stream().is_ok());
    let victim = dir.path().join("ant/002.png");
    std::fs::write(&victim, b"overwritten").unwrap();
    let i = ds.stream.as_ref().unwrap().file(2).to_path_buf();
    assert_eq!(i, victim);
    // Read as black (normalised zero), the batch still made, and the failure reported by name.
    let b = make_batch(&ds, &[1, 2], None);
    let zero = -ds.norm.mean[0] / ds.norm.std[0];
    assert!(b.x.data()[192..192 + 64].iter().all(|&v| (v - zero).abs() < 1e-6));
    let err = ds.check_stream().unwrap_err().to_string();
    assert!(err.contains("ant/002.png") && err.contains("1 image file"), "{err}");
}

fn kdscope(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kdscope")).args(args).arg("--data-dir").arg(dir).output().unwrap()
}

/// `train --stream on` and `--stream off` write the same checkpoint: streaming changes where the
/// images live, nothing that is computed from them.
#[test]
fn cli_training_streamed_equals_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    varied_folder(dir.path(), 10);
    let mut weights = vec![];
    for stream in ["on", "off"] {
        let out = dir.path().join(format!("m_{stream}.safetensors"));
        let res = kdscope(
            &[
                "train",
                "--dataset",
                "folder",
                "--image-size",
                "12",
                "--val-fraction",
                "0.2",
                "--arch",
                "resnet8",
                "--epochs",
                "2",
                "--batch-size",
                "8",
                "--augment",
                "imagenet",
                "--stream",
                stream,
                "--cache-mb",
                "0",
                "--out",
                out.to_str().unwrap(),
            ],
            dir.path(),
        );
        let (so, se) = (String::from_utf8_lossy(&res.stdout), String::from_utf8_lossy(&res.stderr));
        assert!(res.status.success(), "{so}\n{se}");
        assert!(so.contains("(25 train / 5 test images)"), "{so}");
        let bytes = std::fs::read(&out).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut t: Vec<(String, Vec<u8>)> =
            st.tensors().into_iter().map(|(n, v)| (n.to_string(), v.data().to_vec())).collect();
        t.sort();
        weights.push(t);
    }
    assert!(weights[0].len() > 10);
    assert_eq!(weights[0], weights[1]);
}

/// A streamed epoch over 20,000 small JPEGs at 64 px keeps the process's peak memory below the size
/// of its decoded images (234 MiB), where the in-memory path holds them all.
#[test]
fn streaming_twenty_thousand_jpegs_keeps_memory_flat() {
    let dir = tempfile::tempdir().unwrap();
    let n = 20_000u32;
    let cls = ["Cat", "Dog"];
    for c in cls {
        std::fs::create_dir_all(dir.path().join(c)).unwrap();
    }
    // Encoding is the slow part: spread it over the cores.
    std::thread::scope(|s| {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) as u32;
        for t in 0..threads {
            let root = dir.path();
            s.spawn(move || {
                for k in (t..n).step_by(threads as usize) {
                    let img = textured(72, 56, k);
                    let path = root.join(cls[(k % 2) as usize]).join(format!("{k}.jpg"));
                    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
                    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut f, 80).encode_image(&img).unwrap();
                }
            });
        }
    });
    let peak = |stream: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_kdscope"))
            .args(["bench-data", "--size", "64", "--batch", "64", "--stream", stream, "--cache-mb", "16"])
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .unwrap();
        let so = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "{so}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(so.starts_with("20000 images at 64 px"), "{so}");
        let line = so.lines().find(|l| l.starts_with("peak memory")).unwrap().to_string();
        let nums: Vec<f64> = line.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
        (nums[0], nums[2], so)
    };
    let (stream_peak, decoded, so) = peak("on");
    assert_eq!(decoded, 234.0, "{so}");
    assert!(so.contains("streamed") && so.contains("(16 MiB)"), "{so}");
    let (memory_peak, _, _) = peak("off");
    assert!(memory_peak > decoded, "in memory: peak {memory_peak} MiB for {decoded} MiB of images");
    assert!(stream_peak < decoded * 0.6, "streamed: peak {stream_peak} MiB for {decoded} MiB of images\n{so}");
}
