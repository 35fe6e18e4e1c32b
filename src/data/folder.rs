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
//! centre crop of `size` x `size`, in memory or, for folders larger than the cache budget, streamed
//! from the files per batch ([`Storage`], [`super::stream`]) with the same bytes.
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;

use std::sync::Arc;

use super::stream::{CacheBudget, DecodeFn, ImageStream};
use super::{DataError, DataSplit, Dataset, Normalization};

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
    /// Whether the images are held in memory or streamed from their files.
    pub storage: Storage,
    /// Streamed: bytes of decoded images kept in the cache (shared by both parts); `Storage::Auto`
    /// streams when the decoded images would not fit in it.
    pub cache_bytes: usize,
}

/// Where a folder dataset's decoded images live (`--stream`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Storage {
    /// All in memory (decoded once when the folder is read).
    #[value(name = "off")]
    Memory,
    /// Read from the files per batch, with a bounded cache.
    #[value(name = "on")]
    Stream,
    /// Streamed when the decoded images would exceed the cache budget, in memory otherwise.
    Auto,
}

/// The default cache budget of streamed folders (`--cache-mb`).
pub const DEFAULT_CACHE_MB: usize = 2048;

impl FolderOptions {
    pub fn new(size: usize) -> Self {
        Self {
            size,
            val_fraction: None,
            seed: 0,
            strict: false,
            storage: Storage::Auto,
            cache_bytes: DEFAULT_CACHE_MB << 20,
        }
    }

    /// The cache budget when `images` decoded images are to be streamed, `None` for memory.
    fn budget(&self, images: usize) -> Option<Arc<CacheBudget>> {
        let decoded = images.saturating_mul(3 * self.size * self.size);
        let stream = match self.storage {
            Storage::Memory => false,
            Storage::Stream => true,
            Storage::Auto => decoded > self.cache_bytes,
        };
        stream.then(|| CacheBudget::new(self.cache_bytes))
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

/// One image file as a folder dataset stores it: `3 x size x size` CHW bytes, or why it cannot be read.
pub fn decode_image(p: &Path, size: usize) -> Result<Vec<u8>, String> {
    if size == 0 {
        return Err("an image size of 0".into());
    }
    let mut out = vec![0u8; 3 * size * size];
    decode(p, size, &mut out)?;
    Ok(out)
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

/// Image files with their class index.
type Files = Vec<(PathBuf, usize)>;

/// The image files of each class folder (`(path, class)`), in class then name order.
fn list_images(root: &Path, class_names: &[String]) -> Result<Files, DataError> {
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

/// Images decoded per parallel round while reading a folder (bounds the working memory of the
/// streamed path and of the running digest).
const CHUNK: usize = 256;

/// Decodes `files` in parallel, chunk by chunk, into a dataset: in memory, or (`stream`) only checked,
/// hashed and offered to the cache, the dataset reading them back from their files when asked.
/// Undecodable files are skipped (or fail with `strict`). Both paths keep the same files and record the
/// same digest of the decoded pixels.
fn decode_all(
    name: &str,
    files: &[(PathBuf, usize)],
    class_names: &[String],
    opts: &FolderOptions,
    stream: Option<&Arc<CacheBudget>>,
) -> Result<Dataset, DataError> {
    use sha2::Digest;
    let size = opts.size;
    let il = 3 * size * size;
    let decoder: Arc<DecodeFn> = Arc::new(move |p: &Path, out: &mut [u8]| decode(p, size, out));
    let mut hasher = sha2::Sha256::new();
    let (mut pixels, mut labels, mut kept, mut skipped) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut buf, mut cached) = (Vec::new(), Vec::new());
    for part in files.chunks(CHUNK) {
        // In memory the chunk is decoded at the end of the one buffer (no second copy of the images
        // is ever held); streamed, into a scratch buffer of one chunk.
        let base = if stream.is_some() {
            buf.resize(part.len() * il, 0);
            0
        } else {
            let b = labels.len() * il;
            pixels.resize(b + part.len() * il, 0);
            b
        };
        let target = if stream.is_some() { &mut buf[..] } else { &mut pixels[base..] };
        let results: Vec<Result<(), String>> =
            target.par_chunks_mut(il).zip(part.par_iter()).map(|(out, (p, _))| decode(p, size, out)).collect();
        for (k, ((p, c), r)) in part.iter().zip(results).enumerate() {
            match r {
                Ok(()) => {
                    if let Some(budget) = stream {
                        let img = &buf[k * il..(k + 1) * il];
                        hasher.update(img);
                        // The cache keeps the first images while its budget lasts.
                        if budget.take(il) {
                            cached.push((kept.len(), Arc::from(img)));
                        }
                        kept.push(p.clone());
                    } else {
                        let to = labels.len() * il;
                        pixels.copy_within(base + k * il..base + (k + 1) * il, to);
                        hasher.update(&pixels[to..to + il]);
                    }
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
    }
    if labels.is_empty() {
        return Err(DataError::Invalid(format!(
            "{name}: no readable images ({}) in the class folders{}",
            EXTENSIONS.join(", "),
            if skipped.is_empty() { String::new() } else { format!("; {} could not be decoded", skipped.len()) }
        )));
    }
    let digest = crate::io::hex(&hasher.finalize());
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
        stream: stream.map(|b| Arc::new(ImageStream::new(kept, il, decoder, b.clone()).with_cached(cached))),
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

/// The class names (sorted sub-folders of `root`, or `classes` when given, which must cover them) and
/// the image files of each.
fn class_files(root: &Path, classes: Option<&[String]>) -> Result<(Vec<String>, Files), DataError> {
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
    Ok((class_names, files))
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
    let (class_names, files) = class_files(root, classes)?;
    decode_all(&root.display().to_string(), &files, &class_names, opts, opts.budget(files.len()).as_ref())
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
        let (class_names, train_files) = class_files(&root.join("train"), None)?;
        let (_, test_files) = class_files(&held_out, Some(&class_names))?;
        let budget = opts.budget(train_files.len() + test_files.len());
        let name = |d: &Path| d.display().to_string();
        let train = decode_all(&name(&root.join("train")), &train_files, &class_names, opts, budget.as_ref())?;
        no_empty_class(&root.join("train"), &train)?;
        let test = decode_all(&name(&held_out), &test_files, &class_names, opts, budget.as_ref())?;
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
    let budget = opts.budget(files.len());
    let mut tr = decode_all(&name, &train, &class_names, opts, budget.as_ref())?;
    no_empty_class(root, &tr)?;
    let mut te = decode_all(&name, &held, &class_names, opts, budget.as_ref())?;
    let split = format!("{} training / {} held-out images, fraction {frac}, seed {}", tr.len(), te.len(), opts.seed);
    for d in [&mut tr, &mut te] {
        d.provenance.push(("split".into(), split.clone()));
    }
    Ok(share_skipped(DataSplit { train: tr, test: te }))
}

/// A class folder without a readable training image is refused (as torchvision's ImageFolder refuses
/// one without files): a model would be trained for a class it never sees.
fn no_empty_class(root: &Path, train: &Dataset) -> Result<(), DataError> {
    let mut count = vec![0usize; train.num_classes()];
    for &l in &train.labels {
        count[l] += 1;
    }
    let empty: Vec<&str> =
        train.class_names.iter().zip(&count).filter(|(_, &n)| n == 0).map(|(c, _)| c.as_str()).collect();
    if empty.is_empty() {
        return Ok(());
    }
    Err(DataError::Invalid(format!(
        "{}: class folder(s) {} have no readable training images; add images or remove the folder(s)",
        root.display(),
        empty.iter().map(|c| format!("'{c}'")).collect::<Vec<_>>().join(", ")
    )))
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
