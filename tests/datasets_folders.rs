//! Image folders as torchvision's ImageFolder reads them: every format and mode, the train/val and the
//! single-folder layouts, undecodable files skipped and named (or fatal with `strict`), torchvision's
//! evaluation transform (shorter side resized, centre crop), normalisation from the images, and the
//! decoder under mutated files.
use std::path::Path;

use image::{GrayImage, Luma, Rgb, RgbImage, Rgba, RgbaImage};
use kdscope::data::folder::{self, FolderOptions, SKIPPED};
use kdscope::data::{Dataset, Normalization};

/// A uniform `w` x `h` colour image.
fn uniform(w: u32, h: u32, c: [u8; 3]) -> RgbImage {
    RgbImage::from_pixel(w, h, Rgb(c))
}

/// One class folder per animal, each file a different format or mode, plus files to ignore or skip.
fn pet_folder(root: &Path) {
    let cat = root.join("Cat");
    let dog = root.join("Dog");
    std::fs::create_dir_all(&cat).unwrap();
    std::fs::create_dir_all(&dog).unwrap();
    std::fs::create_dir_all(root.join(".ipynb_checkpoints")).unwrap();
    uniform(12, 10, [200, 10, 30]).save(cat.join("0.png")).unwrap();
    uniform(10, 14, [200, 10, 30]).save(cat.join("1.bmp")).unwrap();
    uniform(16, 16, [200, 10, 30]).save(cat.join("2.gif")).unwrap();
    GrayImage::from_pixel(9, 9, Luma([77])).save(cat.join("3.png")).unwrap();
    // PNG bytes under a .jpg name (the PetImages archive has such files): told by the bytes.
    let mut png = std::io::Cursor::new(Vec::new());
    uniform(8, 8, [200, 10, 30]).write_to(&mut png, image::ImageFormat::Png).unwrap();
    std::fs::write(cat.join("4.jpg"), png.into_inner()).unwrap();
    std::fs::write(cat.join("5.jpg"), b"\xff\xd8\xff\xe0 not really a JPEG").unwrap();
    std::fs::write(cat.join("6.jpg"), b"").unwrap();
    std::fs::write(cat.join("Thumbs.db"), b"not an image").unwrap();
    std::fs::write(cat.join(".DS_Store"), b"hidden").unwrap();
    RgbaImage::from_pixel(10, 10, Rgba([5, 100, 250, 0])).save(dog.join("0.png")).unwrap();
    uniform(20, 10, [5, 100, 250]).save(dog.join("1.jpeg")).unwrap();
    uniform(10, 10, [5, 100, 250]).save(dog.join("2.png")).unwrap();
    uniform(10, 10, [5, 100, 250]).save(dog.join("3.png")).unwrap();
}

fn pixel(ds: &Dataset, i: usize) -> [u8; 3] {
    let plane = ds.height * ds.width;
    let px = ds.image(i);
    [px[0], px[plane], px[2 * plane]]
}

#[test]
fn every_format_and_mode_loads_and_bad_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    pet_folder(dir.path());
    let opts = FolderOptions { val_fraction: Some(0.25), seed: 3, ..FolderOptions::new(6) };
    let s = folder::load_folder_dataset(dir.path(), &opts).unwrap();
    assert_eq!(s.train.class_names, ["Cat", "Dog"]);
    // The split is drawn over image files, before decoding (so a repaired file moves nothing): Cat has
    // 7 image files, round(7 * 0.25) = 2 held out, 5 readable in all; Dog 4 files, 1 held out.
    let count = |d: &Dataset, c: usize| d.labels.iter().filter(|&&l| l == c).count();
    assert_eq!(count(&s.train, 0) + count(&s.test, 0), 5);
    assert!(count(&s.test, 0) <= 2 && count(&s.train, 0) >= 3);
    assert_eq!((count(&s.train, 1), count(&s.test, 1)), (3, 1));
    assert_eq!((s.train.height, s.train.width, s.train.channels), (6, 6, 3));
    assert_eq!(s.train.norm, Normalization::imagenet());
    for d in [&s.train, &s.test] {
        for i in 0..d.len() {
            let p = pixel(d, i);
            let want: &[[u8; 3]] = if d.labels[i] == 0 { &[[200, 10, 30], [77, 77, 77]] } else { &[[5, 100, 250]] };
            // JPEG is lossy: within 4 of the colour written; the others exact.
            let near = want.iter().any(|w| w.iter().zip(&p).all(|(a, b)| a.abs_diff(*b) <= 4));
            assert!(near, "image {i} of class {} is {p:?}", d.labels[i]);
        }
    }
    // The grey image is there, repeated over three channels; RGBA lost its alpha, not its colour.
    let all: Vec<[u8; 3]> = [&s.train, &s.test].iter().flat_map(|d| (0..d.len()).map(|i| pixel(d, i))).collect();
    assert!(all.contains(&[77, 77, 77]) && all.contains(&[5, 100, 250]), "{all:?}");
    // Both parts name the two undecodable files; nothing else is skipped.
    let skipped = &s.train.provenance.iter().find(|(k, _)| k == SKIPPED).unwrap().1;
    assert!(
        skipped.starts_with("2 could not be decoded")
            && skipped.contains("5.jpg")
            && skipped.contains("6.jpg (an empty file)"),
        "{skipped}"
    );
    assert!(!skipped.contains("Thumbs") && !skipped.contains("DS_Store"), "{skipped}");
    // Wherever the two files fell, both parts list every skipped file (the report shows the test part's).
    for d in [&s.train, &s.test] {
        let all: String =
            d.provenance.iter().filter(|(k, _)| k.starts_with(SKIPPED)).map(|(_, v)| v.as_str()).collect();
        assert!(all.contains("5.jpg") && all.contains("6.jpg"), "{:?}", d.provenance);
    }
    // The split is seeded: the same seed, the same split; another seed, another one.
    let again = folder::load_folder_dataset(dir.path(), &opts).unwrap();
    assert_eq!(again.test.pixels, s.test.pixels);
    let other: Vec<_> = (0..8)
        .map(|seed| {
            folder::load_folder_dataset(dir.path(), &FolderOptions { seed, ..opts.clone() }).unwrap().test.pixels
        })
        .collect();
    assert!(other.iter().any(|p| *p != s.test.pixels));
    // --strict stops at the first undecodable file, naming it.
    let msg = folder::load_folder_dataset(dir.path(), &FolderOptions { strict: true, ..opts.clone() })
        .unwrap_err()
        .to_string();
    assert!(msg.contains("5.jpg") && msg.contains("--strict"), "{msg}");
    // Without a split, the error names the flag.
    let msg = folder::load_folder_dataset(dir.path(), &FolderOptions::new(6)).unwrap_err().to_string();
    assert!(msg.contains("--val-fraction"), "{msg}");
    let msg = folder::load_folder_dataset(dir.path(), &FolderOptions { val_fraction: Some(1.0), ..opts })
        .unwrap_err()
        .to_string();
    assert!(msg.contains("between 0 and 1"), "{msg}");
}

#[test]
fn shorter_side_resize_and_centre_crop_as_torchvision() {
    let dir = tempfile::tempdir().unwrap();
    for (split, name) in [("train", "a.png"), ("val", "b.png")] {
        let d = dir.path().join(split).join("stripes");
        std::fs::create_dir_all(&d).unwrap();
        // 9 x 4: the shorter side is already 4, so no resampling; the crop's left edge is
        // round(2.5) = 2 with Python's ties to even (not 3).
        let img = RgbImage::from_fn(9, 4, |x, y| Rgb([10 * x as u8, 50 + y as u8, 0]));
        img.save(d.join(name)).unwrap();
    }
    let s = folder::load_image_folder_split(dir.path(), 4).unwrap();
    assert_eq!((s.train.len(), s.test.len()), (1, 1));
    let red: Vec<u8> = s.test.image(0)[..16].to_vec();
    assert_eq!(red, [20, 30, 40, 50, 20, 30, 40, 50, 20, 30, 40, 50, 20, 30, 40, 50]);
    let green: Vec<u8> = s.test.image(0)[16..32].to_vec();
    assert_eq!(green, [50, 50, 50, 50, 51, 51, 51, 51, 52, 52, 52, 52, 53, 53, 53, 53]);
    // A class folder in val/ that train/ lacks is named.
    std::fs::create_dir_all(dir.path().join("val/ghost")).unwrap();
    let msg = folder::load_image_folder_split(dir.path(), 4).unwrap_err().to_string();
    assert!(msg.contains("'ghost'") && msg.contains("not among the training classes"), "{msg}");
}

#[test]
fn normalisation_from_the_images_by_hand() {
    let ds = Dataset {
        name: "two".into(),
        channels: 2,
        height: 1,
        width: 2,
        // image 0: channel 0 = [0, 255], channel 1 = [51, 51]; image 1: [255, 255], [102, 0]
        pixels: vec![0, 255, 51, 51, 255, 255, 102, 0],
        stream: None,
        labels: vec![0, 0],
        class_names: vec!["a".into()],
        hierarchy: None,
        norm: Normalization::imagenet(),
        provenance: vec![],
    };
    let n = Normalization::of(&ds);
    // channel 0: values 0, 1, 1, 1 → mean 0.75, std sqrt(0.1875); channel 1: 0.2, 0.2, 0.4, 0 → 0.2, sqrt(0.02)
    assert!((n.mean[0] - 0.75).abs() < 1e-6 && (n.std[0] - 0.1875f32.sqrt()).abs() < 1e-6, "{n:?}");
    assert!((n.mean[1] - 0.2).abs() < 1e-6 && (n.std[1] - 0.02f32.sqrt()).abs() < 1e-6, "{n:?}");
}

/// The `train` CLI on a single folder with a split, a hierarchy from the names and `auto`
/// normalisation; skipped files are reported on stderr.
#[test]
fn cli_trains_on_a_plantvillage_style_folder() {
    let dir = tempfile::tempdir().unwrap();
    for (ci, cls) in ["Apple___healthy", "Apple___scab", "Corn___rust"].iter().enumerate() {
        let d = dir.path().join(cls);
        std::fs::create_dir_all(&d).unwrap();
        for k in 0..4u8 {
            uniform(20, 16, [60 * ci as u8, 20 * k, 90]).save(d.join(format!("{k}.jpg"))).unwrap();
        }
    }
    std::fs::write(dir.path().join("Corn___rust/broken.jpg"), b"\xff\xd8\xff").unwrap();
    let out = dir.path().join("m.safetensors");
    let res = std::process::Command::new(env!("CARGO_BIN_EXE_kdscope"))
        .args([
            "train",
            "--dataset",
            "folder",
            "--image-size",
            "16",
            "--val-fraction",
            "0.25",
            "--hierarchy-sep",
            "___",
        ])
        .args([
            "--normalize",
            "auto",
            "--augment",
            "imagenet",
            "--arch",
            "resnet8",
            "--epochs",
            "1",
            "--batch-size",
            "3",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&res.stdout), String::from_utf8_lossy(&res.stderr));
    assert!(res.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("(9 train / 3 test images)"), "{stdout}");
    assert!(stderr.contains("note:") && stderr.contains("broken.jpg"), "{stderr}");
    let res = std::process::Command::new(env!("CARGO_BIN_EXE_kdscope"))
        .args(["train", "--dataset", "folder", "--image-size", "16", "--mean", "0.5,0.5", "--std", "0.2,0.2"])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success() && stderr.contains("--val-fraction"), "{stderr}");
}

/// A small deterministic generator (SplitMix64) for the mutations.
fn mix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// 2,000 mutated PNG, JPEG, BMP and GIF files through the folder reader: errors (skips) are fine,
/// panics are not.
#[test]
fn folder_reader_survives_mutated_images() {
    let dir = tempfile::tempdir().unwrap();
    let cls = dir.path().join("train").join("x");
    std::fs::create_dir_all(&cls).unwrap();
    std::fs::create_dir_all(dir.path().join("val").join("x")).unwrap();
    let img = RgbImage::from_fn(24, 20, |x, y| Rgb([x as u8 * 9, y as u8 * 11, 128]));
    let mut goods = vec![];
    for fmt in [image::ImageFormat::Png, image::ImageFormat::Jpeg, image::ImageFormat::Bmp, image::ImageFormat::Gif] {
        let mut b = std::io::Cursor::new(Vec::new());
        img.write_to(&mut b, fmt).unwrap();
        goods.push((fmt.extensions_str()[0], b.into_inner()));
    }
    uniform(4, 4, [1, 2, 3]).save(dir.path().join("val/x/ok.png")).unwrap();
    let mut state = 11u64;
    let (mut decoded, mut skipped) = (0, 0);
    for round in 0..2_000 {
        let (ext, good) = &goods[round % goods.len()];
        let mut b = good.clone();
        for _ in 0..1 + mix(&mut state) % 4 {
            let i = (mix(&mut state) % b.len() as u64) as usize;
            match mix(&mut state) % 4 {
                0 => b[i] ^= 1 << (mix(&mut state) % 8),
                1 => b[i] = [0, 0xff, 0x7f][(mix(&mut state) % 3) as usize],
                2 => b.truncate(i.max(1)),
                _ => b[i..].iter_mut().take(4).for_each(|x| *x = 0xff),
            }
        }
        let f = cls.join(format!("m.{ext}"));
        std::fs::write(&f, &b).unwrap();
        let r = std::panic::catch_unwind(|| folder::load_image_folder_split(dir.path(), 8));
        match r {
            Ok(Ok(_)) => decoded += 1,
            Ok(Err(e)) => {
                assert!(e.to_string().contains("no readable images"), "{e}");
                skipped += 1
            }
            Err(_) => panic!("the folder reader panicked on mutation {round} of a .{ext} file"),
        }
    }
    assert!(decoded > 100 && skipped > 100, "{decoded} decoded, {skipped} skipped");
}
