//! Image folders as torchvision's `ImageFolder` reads them: one sub-folder per class (sorted by
//! name), images of any size and mode (grey, RGBA, palette → RGB, alpha dropped as PIL's
//! `convert("RGB")` does), the format told by the file's bytes, not its extension.
//!
//! Layouts: `root/train/<class>/…` with `root/val/<class>/…` or `root/test/<class>/…`; or
//! `root/<class>/…` alone, split per class into training and validation images by a seeded
//! fraction ([`FolderOptions::val_fraction`]). Hidden files and folders (`.…`) and files that are not
//! images by their extension are ignored; image files that cannot be decoded (corrupt, empty,
//! truncated: the public PetImages archive has some) are skipped, counted and named in the dataset's
//! provenance, or fail the load with [`FolderOptions::strict`]. Each image is stored as torchvision's
//! evaluation transform leaves it: the shorter side resized to `size` (bilinear, antialiased), then a
//! centre crop of `size` x `size`.
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;

use super::{sha256_hex, DataError, DataSplit, Dataset, Normalization};

/// Extensions of files taken as images (torchvision's `IMG_EXTENSIONS` that kdscope decodes).
const EXTENSIONS: [&str; 5] = ["png", "jpg", "jpeg", "bmp", "gif"];

/// The provenance key under which skipped files are listed.
pub const SKIPPED: &str = "skipped files";

/// How a folder dataset is read.
#[derive(Clone, Debug)]
pub struct FolderOptions {
    /// Side of the stored square images.
    pub size: usize,
    /// For a folder without `train/`: the share of each class's images (seeded shuffle) held out for
    /// validation/testing.
    pub val_fraction: Option<f64>,
    /// Seed of that split.
    pub seed: u64,
    /// Fail on the first file that cannot be decoded instead of skipping it.
    pub strict: bool,
}

impl FolderOptions {
    pub fn new(size: usize) -> Self {
        Self { size, val_fraction: None, seed: 0, strict: false }
    }
}

fn hidden(p: &Path) -> bool {
    p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

fn is_image(p: &Path) -> bool {
    let ext = p.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase());
    ext.is_some_and(|e| EXTENSIONS.contains(&e.as_str())) && !hidden(p)
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let rd = std::fs::read_dir(dir).map_err(|e| DataError::Io { path: dir.to_path_buf(), source: e })?;
    let mut v: Vec<_> = rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| !hidden(p)).collect();
    v.sort();
    Ok(v)
}

/// The class sub-folders of `root`, sorted; names that are not UTF-8 are refused with their lossy form.
fn class_dirs(root: &Path) -> Result<Vec<String>, DataError> {
    let mut names = Vec::new();
    for p in sorted_entries(root)?.into_iter().filter(|p| p.is_dir()) {
        let name = p.file_name().expect("an entry of a folder has a name");
        match name.to_str() {
            Some(n) => names.push(n.to_string()),
            None => {
                return Err(DataError::Invalid(format!(
                    "{}: class folder '{}' has a name that is not UTF-8; rename it",
                    root.display(),
                    name.to_string_lossy()
                )))
            }
        }
    }
    Ok(names)
}

/// Decodes `p` (format sniffed from its bytes), applies resize-shorter-side + centre crop and writes
/// the `3 x size x size` CHW bytes into `out`.
fn decode(p: &Path, size: usize, out: &mut [u8]) -> Result<(), String> {
    let bytes = std::fs::read(p).map_err(|e| e.to_string())?;
    if bytes.is_empty() {
        return Err("an empty file".into());
    }
    let img = image::ImageReader::new(std::io::Cursor::new(&bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?
        .decode()
        .map_err(|e| e.to_string())?
        .to_rgb8();
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        return Err("an image with no pixels".into());
    }
    // Shorter side to `size`, the other in proportion (rounded as torchvision's Resize does).
    let s = size as u32;
    let (nw, nh) = if w <= h {
        (s, ((h as u64 * s as u64) / w as u64).max(s as u64) as u32)
    } else {
        (((w as u64 * s as u64) / h as u64).max(s as u64) as u32, s)
    };
    let resized = image::imageops::resize(&img, nw, nh, image::imageops::FilterType::Triangle);
    // Centre crop as torchvision's CenterCrop: top-left at Python's round((dim - size) / 2), ties to even.
    let half = |d: u32| ((d - s) as f64 / 2.0).round_ties_even() as u32;
    let (x0, y0) = (half(nw), half(nh));
    let crop = image::imageops::crop_imm(&resized, x0, y0, s, s).to_image();
    let plane = size * size;
    for (i, px) in crop.pixels().enumerate() {
        for ch in 0..3 {
            out[ch * plane + i] = px.0[ch];
        }
    }
    Ok(())
}

/// The image files of each class folder (`(path, class)`), in class then name order.
fn list_images(root: &Path, class_names: &[String]) -> Result<Vec<(PathBuf, usize)>, DataError> {
    let mut files = Vec::new();
    for (ci, cname) in class_names.iter().enumerate() {
        let cdir = root.join(cname);
        if !cdir.is_dir() {
            continue;
        }
        files.extend(sorted_entries(&cdir)?.into_iter().filter(|p| p.is_file() && is_image(p)).map(|p| (p, ci)));
    }
    Ok(files)
}

/// Decodes `files` in parallel into a dataset; undecodable files are skipped (or fail with `strict`).
fn decode_all(
    name: &str,
    files: &[(PathBuf, usize)],
    class_names: &[String],
    opts: &FolderOptions,
) -> Result<Dataset, DataError> {
    // Decoded straight into one buffer, then compacted over the skipped files: no second copy of
    // the images is ever held.
    let il = 3 * opts.size * opts.size;
    let mut pixels = vec![0u8; files.len() * il];
    let results: Vec<Result<(), String>> =
        pixels.par_chunks_mut(il).zip(files.par_iter()).map(|(out, (p, _))| decode(p, opts.size, out)).collect();
    let (mut labels, mut skipped) = (Vec::new(), Vec::new());
    for (i, ((p, c), r)) in files.iter().zip(results).enumerate() {
        match r {
            Ok(()) => {
                pixels.copy_within(i * il..(i + 1) * il, labels.len() * il);
                labels.push(*c);
            }
            Err(e) if opts.strict => {
                return Err(DataError::Invalid(format!(
                    "{}: not a readable image ({e}); --strict stops here",
                    p.display()
                )))
            }
            Err(e) => skipped.push(format!("{} ({e})", p.display())),
        }
    }
    pixels.truncate(labels.len() * il);
    if labels.is_empty() {
        return Err(DataError::Invalid(format!(
            "{name}: no readable images ({}) in the class folders{}",
            EXTENSIONS.join(", "),
            if skipped.is_empty() { String::new() } else { format!("; {} could not be decoded", skipped.len()) }
        )));
    }
    let digest = sha256_hex(&pixels);
    let mut provenance = vec![(name.to_string(), format!("{} images, pixels sha256 {digest}", labels.len()))];
    if !skipped.is_empty() {
        provenance.push((SKIPPED.into(), format!("{} could not be decoded: {}", skipped.len(), skipped.join("; "))));
    }
    Ok(Dataset {
        name: name.into(),
        channels: 3,
        height: opts.size,
        width: opts.size,
        pixels,
        labels,
        class_names: class_names.to_vec(),
        hierarchy: None,
        norm: Normalization::imagenet(),
        provenance,
    })
}

fn check_size(opts: &FolderOptions) -> Result<(), DataError> {
    if opts.size == 0 {
        return Err(DataError::Invalid("--image-size must be at least 1".into()));
    }
    Ok(())
}

/// Loads `root/<class>/<image>` files. Class names are the sorted sub-folder names; `classes` fixes
/// them (and their order) when given, e.g. for a test split.
pub fn load_image_folder(
    root: impl AsRef<Path>,
    opts: &FolderOptions,
    classes: Option<&[String]>,
) -> Result<Dataset, DataError> {
    check_size(opts)?;
    let root = root.as_ref();
    let found = class_dirs(root)?;
    let class_names: Vec<String> = match classes {
        Some(c) => {
            if let Some(extra) = found.iter().find(|f| !c.contains(f)) {
                return Err(DataError::Invalid(format!(
                    "{}: class folder '{extra}' is not among the training classes",
                    root.display()
                )));
            }
            c.to_vec()
        }
        None => found,
    };
    if class_names.is_empty() {
        return Err(DataError::Invalid(format!("{}: no class sub-folders", root.display())));
    }
    let files = list_images(root, &class_names)?;
    decode_all(&root.display().to_string(), &files, &class_names, opts)
}

/// Loads a folder dataset: `root/train` with `root/val` or `root/test`, or `root/<class>/…` split by
/// `opts.val_fraction`. The split is drawn over the image files before decoding, so repairing a
/// corrupt file later moves no other image between the parts.
pub fn load_folder_dataset(root: impl AsRef<Path>, opts: &FolderOptions) -> Result<DataSplit, DataError> {
    check_size(opts)?;
    let root = root.as_ref();
    if root.join("train").is_dir() {
        let held_out =
            ["val", "test"].iter().map(|d| root.join(d)).find(|d| d.is_dir()).ok_or_else(|| {
                DataError::Invalid(format!("{}: has train/ but neither val/ nor test/", root.display()))
            })?;
        let train = load_image_folder(root.join("train"), opts, None)?;
        let test = load_image_folder(held_out, opts, Some(&train.class_names))?;
        return Ok(share_skipped(DataSplit { train, test }));
    }
    let class_names = class_dirs(root)?;
    if class_names.is_empty() {
        return Err(DataError::Invalid(format!(
            "{}: no class sub-folders (expected train/ + val/ or test/, or one folder per class)",
            root.display()
        )));
    }
    let Some(frac) = opts.val_fraction else {
        return Err(DataError::Invalid(format!(
            "{}: one folder per class without train/ and val/: give --val-fraction (e.g. 0.2) to hold out a share of each class",
            root.display()
        )));
    };
    if !(frac > 0.0 && frac < 1.0) {
        return Err(DataError::Invalid(format!("--val-fraction must be between 0 and 1 (exclusive), got {frac}")));
    }
    // Per class: a seeded shuffle, the first round(n * frac) held out (at least one when the class
    // has two images or more, and never all of them).
    let files = list_images(root, &class_names)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(opts.seed);
    let (mut train, mut held) = (Vec::new(), Vec::new());
    // `list_images` returns the files class by class (a class without images draws nothing).
    for group in files.chunk_by(|a, b| a.1 == b.1) {
        let mut of_class = group.to_vec();
        of_class.shuffle(&mut rng);
        let n = of_class.len();
        let k = if n < 2 { 0 } else { ((n as f64 * frac).round() as usize).clamp(1, n - 1) };
        let rest = of_class.split_off(k);
        held.extend(of_class);
        train.extend(rest);
    }
    train.sort();
    held.sort();
    let name = root.display().to_string();
    let mut tr = decode_all(&name, &train, &class_names, opts)?;
    let mut te = decode_all(&name, &held, &class_names, opts)?;
    let split = format!("{} training / {} held-out images, fraction {frac}, seed {}", tr.len(), te.len(), opts.seed);
    for d in [&mut tr, &mut te] {
        d.provenance.push(("split".into(), split.clone()));
    }
    Ok(share_skipped(DataSplit { train: tr, test: te }))
}

/// Both parts list every skipped file (the report's appendix shows the test part's provenance).
fn share_skipped(mut split: DataSplit) -> DataSplit {
    let of = |d: &Dataset| d.provenance.iter().find(|(k, _)| k == SKIPPED).map(|(_, v)| v.clone());
    let (tr, te) = (of(&split.train), of(&split.test));
    if let Some(v) = tr {
        split.test.provenance.push((format!("{SKIPPED} (training part)"), v));
    }
    if let Some(v) = te {
        split.train.provenance.push((format!("{SKIPPED} (test part)"), v));
    }
    split
}

/// Loads `root/train/<class>/…` and `root/test/<class>/…` (or `root/val/`) at `size` x `size`.
pub fn load_image_folder_split(root: impl AsRef<Path>, size: usize) -> Result<DataSplit, DataError> {
    load_folder_dataset(root, &FolderOptions::new(size))
}
