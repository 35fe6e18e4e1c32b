//! CIFAR-10 and CIFAR-100 as distributed (<https://www.cs.toronto.edu/~kriz/cifar.html>): the
//! "binary version" read here and the "Python version" torchvision downloads (read by
//! [`super::cifar_py`]); the loaders find either.
//!
//! Binary version:
//! CIFAR-10: `data_batch_1.bin` … `data_batch_5.bin`, `test_batch.bin`; records of 1 label byte and
//! 3072 pixel bytes (1024 red, 1024 green, 1024 blue, row-major); names in `batches.meta.txt`.
//! CIFAR-100: `train.bin`, `test.bin`; records of a coarse label byte, a fine label byte and 3072 pixel
//! bytes; names in `fine_label_names.txt` and `coarse_label_names.txt`.
use std::path::{Path, PathBuf};

use super::{cifar_py, read_file, sha256_hex, DataError, DataSplit, Dataset, Hierarchy, Normalization};

/// Bytes of one 3 x 32 x 32 image.
pub(super) const PIXELS: usize = 3 * 32 * 32;

/// The folder names of CIFAR-10's binary and Python versions (torchvision extracts the latter).
const CIFAR10_DIRS: [&str; 2] = ["cifar-10-batches-bin", "cifar-10-batches-py"];
/// The folder names of CIFAR-100's binary and Python versions.
const CIFAR100_DIRS: [&str; 2] = ["cifar-100-binary", "cifar-100-python"];

/// The superclass of CIFAR-100 classes that have no image in a subset (so no known superclass).
pub const ABSENT: &str = "(no images)";
/// The provenance key of the note naming those classes.
pub const ABSENT_NOTE: &str = "classes without images";

/// The CIFAR-10 class names, used when `batches.meta.txt` is absent.
pub const CIFAR10_NAMES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// Parses records of `label_bytes` label bytes followed by 3072 pixels; returns the label bytes of each
/// record and the pixels. `limits[k]` bounds label byte `k`.
fn parse_records(
    path: &Path,
    bytes: &[u8],
    label_bytes: usize,
    limits: &[usize],
) -> Result<(Vec<Vec<usize>>, Vec<u8>), DataError> {
    let rec = label_bytes + PIXELS;
    if bytes.is_empty() {
        return Err(DataError::format(path, 0, format!("{rec}-byte records"), "an empty file"));
    }
    if !bytes.len().is_multiple_of(rec) {
        let full = bytes.len() / rec * rec;
        return Err(DataError::format(
            path,
            full,
            format!("a complete {rec}-byte record ({label_bytes} label byte(s) + {PIXELS} pixel bytes)"),
            format!("{} trailing bytes (truncated file?)", bytes.len() - full),
        ));
    }
    let n = bytes.len() / rec;
    let mut labels = vec![Vec::with_capacity(n); label_bytes];
    let mut pixels = Vec::with_capacity(n * PIXELS);
    for (i, r) in bytes.chunks_exact(rec).enumerate() {
        for k in 0..label_bytes {
            let l = r[k] as usize;
            if l >= limits[k] {
                return Err(DataError::format(
                    path,
                    i * rec + k,
                    format!("a label below {}", limits[k]),
                    format!("label {l}"),
                ));
            }
            labels[k].push(l);
        }
        pixels.extend_from_slice(&r[label_bytes..]);
    }
    Ok((labels, pixels))
}

/// Reads a names file (one name per line, blank lines ignored); falls back to `default` if absent.
fn read_names(path: &Path, expected: usize, default: Option<&[&str]>) -> Result<Vec<String>, DataError> {
    if !path.exists() {
        if let Some(d) = default {
            return Ok(d.iter().map(|s| s.to_string()).collect());
        }
    }
    let bytes = read_file(path)?;
    let text = String::from_utf8_lossy(&bytes);
    let names: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    if names.len() != expected {
        return Err(DataError::format(
            path,
            bytes.len(),
            format!("{expected} class names"),
            format!("{} names", names.len()),
        ));
    }
    Ok(names)
}

/// Where a CIFAR dataset was found: the folder and whether it holds the Python (pickle) version.
struct Found {
    dir: PathBuf,
    python: bool,
}

/// Finds a CIFAR folder in `dir` itself or in the folder names of the binary and Python versions
/// under it (torchvision's `root`): `bin_marker` marks the binary version, `py_marker` the Python one.
fn locate(
    dir: &Path,
    name: &str,
    (bin_marker, py_marker): (&str, &str),
    subdirs: [&str; 2],
) -> Result<Found, DataError> {
    let candidates = [dir.to_path_buf(), dir.join(subdirs[0]), dir.join(subdirs[1])];
    for c in &candidates {
        if c.join(bin_marker).is_file() {
            return Ok(Found { dir: c.clone(), python: false });
        }
        if c.join(py_marker).is_file() {
            return Ok(Found { dir: c.clone(), python: true });
        }
    }
    Err(DataError::Invalid(format!(
        "{}: no {name} here: expected {bin_marker} (binary version) or {py_marker} (Python version, what torchvision downloads) in it, in {}/ or in {}/",
        dir.display(),
        subdirs[0],
        subdirs[1]
    )))
}

/// Loads CIFAR-10 from `dir`: the binary version (`data_batch_1.bin` …, names in `batches.meta.txt`)
/// or the Python version (`data_batch_1` …, `batches.meta`), in `dir` or in `cifar-10-batches-bin/`
/// or `cifar-10-batches-py/` under it.
pub fn load_cifar10(dir: impl AsRef<Path>) -> Result<DataSplit, DataError> {
    let found = locate(dir.as_ref(), "CIFAR-10", ("data_batch_1.bin", "data_batch_1"), CIFAR10_DIRS)?;
    let dir = &found.dir;
    let names = if found.python {
        let meta = dir.join("batches.meta");
        if meta.exists() {
            cifar_py::read_names(&meta, "label_names", Some(10))?
        } else {
            CIFAR10_NAMES.iter().map(|s| s.to_string()).collect()
        }
    } else {
        read_names(&dir.join("batches.meta.txt"), 10, Some(&CIFAR10_NAMES))?
    };
    let ext = if found.python { "" } else { ".bin" };
    let load = |files: &[String]| -> Result<Dataset, DataError> {
        let (mut px, mut lb, mut prov) = (Vec::new(), Vec::new(), Vec::new());
        for f in files {
            let p = dir.join(format!("{f}{ext}"));
            let (l, x, hash) = if found.python {
                let b = cifar_py::read_batch(&p, &[("labels", 10)])?;
                (b.labels, b.pixels, b.provenance.1)
            } else {
                let bytes = read_file(&p)?;
                let (l, x) = parse_records(&p, &bytes, 1, &[10])?;
                (l, x, sha256_hex(&bytes))
            };
            prov.push((p.display().to_string(), hash));
            px.extend(x);
            lb.extend(l.into_iter().next().unwrap_or_default());
        }
        Ok(Dataset::rgb32("cifar10", px, lb, names.clone(), None, Normalization::cifar10(), prov))
    };
    let train: Vec<String> = (1..=5).map(|i| format!("data_batch_{i}")).collect();
    Ok(DataSplit { train: load(&train)?, test: load(&["test_batch".to_string()])? })
}

/// Loads CIFAR-100 (fine labels, with the 20 coarse superclasses as hierarchy) from `dir`: the binary
/// version (`train.bin`, `test.bin`, `fine_label_names.txt`, `coarse_label_names.txt`) or the Python
/// version (`train`, `test`, `meta`), in `dir` or in `cifar-100-binary/` or `cifar-100-python/` under
/// it. A subset in which some fine classes have no image loads: their superclass is unknown, so they
/// form an extra superclass named [`ABSENT`], and the provenance says which they are.
pub fn load_cifar100(dir: impl AsRef<Path>) -> Result<DataSplit, DataError> {
    let found = locate(dir.as_ref(), "CIFAR-100", ("train.bin", "train"), CIFAR100_DIRS)?;
    let dir = &found.dir;
    let (fine, coarse) = if found.python {
        let meta = dir.join("meta");
        (
            cifar_py::read_names(&meta, "fine_label_names", None)?,
            cifar_py::read_names(&meta, "coarse_label_names", None)?,
        )
    } else {
        (
            read_names(&dir.join("fine_label_names.txt"), 100, None)?,
            read_names(&dir.join("coarse_label_names.txt"), 20, None)?,
        )
    };
    let mut map = vec![usize::MAX; fine.len()];
    let mut load = |file: &str| -> Result<Dataset, DataError> {
        let (p, coarse_l, fine_l, px, hash) = if found.python {
            let p = dir.join(file);
            let b = cifar_py::read_batch(&p, &[("coarse_labels", coarse.len()), ("fine_labels", fine.len())])?;
            let [c, f]: [Vec<usize>; 2] = b.labels.try_into().expect("two label lists asked for");
            (p, c, f, b.pixels, b.provenance.1)
        } else {
            let p = dir.join(format!("{file}.bin"));
            let bytes = read_file(&p)?;
            let (l, px) = parse_records(&p, &bytes, 2, &[20, 100])?;
            let [c, f]: [Vec<usize>; 2] = l.try_into().expect("two label bytes per record");
            (p, c, f, px, sha256_hex(&bytes))
        };
        for (i, (&c, &f)) in coarse_l.iter().zip(&fine_l).enumerate() {
            if map[f] == usize::MAX {
                map[f] = c;
            } else if map[f] != c {
                let at = if found.python { 0 } else { i * (2 + PIXELS) };
                return Err(DataError::format(
                    &p,
                    at,
                    format!("coarse label {} for fine label {f} (as in earlier images), image {i}", map[f]),
                    format!("coarse label {c}"),
                ));
            }
        }
        let prov = vec![(p.display().to_string(), hash)];
        Ok(Dataset::rgb32("cifar100", px, fine_l, fine.clone(), None, Normalization::cifar100(), prov))
    };
    let mut train = load("train")?;
    let mut test = load("test")?;
    let absent: Vec<usize> = (0..map.len()).filter(|&f| map[f] == usize::MAX).collect();
    let mut supers = coarse;
    if !absent.is_empty() {
        let names: Vec<&str> = absent.iter().map(|&f| fine[f].as_str()).collect();
        let note = format!(
            "{} of {} classes have no image, grouped as '{ABSENT}': {}",
            absent.len(),
            fine.len(),
            names.join(", ")
        );
        for &f in &absent {
            map[f] = supers.len();
        }
        supers.push(ABSENT.to_string());
        for ds in [&mut train, &mut test] {
            ds.provenance.push((ABSENT_NOTE.into(), note.clone()));
        }
    }
    let h = Hierarchy::new(supers, map)?;
    train.hierarchy = Some(h.clone());
    test.hierarchy = Some(h);
    Ok(DataSplit { train, test })
}

/// Writes a dataset as CIFAR-10 binary records (for tests and exports).
pub fn write_cifar10_bin(path: impl AsRef<Path>, ds: &Dataset) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(ds.len() * (1 + PIXELS));
    for i in 0..ds.len() {
        out.push(ds.labels[i] as u8);
        out.extend_from_slice(&ds.image(i));
    }
    std::fs::write(path, out)
}

/// Writes CIFAR-100 binary records; coarse labels come from the dataset's hierarchy.
pub fn write_cifar100_bin(path: impl AsRef<Path>, ds: &Dataset) -> std::io::Result<()> {
    let h = ds.hierarchy.as_ref().expect("CIFAR-100 records need a hierarchy for coarse labels");
    let mut out = Vec::with_capacity(ds.len() * (2 + PIXELS));
    for i in 0..ds.len() {
        out.push(h.class_to_super[ds.labels[i]] as u8);
        out.push(ds.labels[i] as u8);
        out.extend_from_slice(&ds.image(i));
    }
    std::fs::write(path, out)
}

/// Writes a split in CIFAR-100's binary layout into `dir`: `train.bin` and `test.bin` (records of a
/// coarse label byte, a fine label byte and 3072 pixel bytes), `fine_label_names.txt` and
/// `coarse_label_names.txt`, so models can be trained on the same images elsewhere (e.g. the built-in
/// dataset in PyTorch: `benches/synth_pytorch.py`). Needs 3x32x32 images, a class hierarchy and at
/// most 256 classes.
pub fn write_cifar100_dir(dir: impl AsRef<Path>, split: &DataSplit) -> Result<(), DataError> {
    let dir = dir.as_ref();
    let ds = &split.train;
    let h = ds
        .hierarchy
        .as_ref()
        .ok_or_else(|| DataError::Invalid(format!("{}: has no class hierarchy for the coarse labels", ds.name)))?;
    if ds.image_len() != PIXELS || ds.num_classes() > 256 {
        return Err(DataError::Invalid(format!(
            "{}: CIFAR-100 records hold 3x32x32 images and at most 256 classes, not {}x{}x{} and {}",
            ds.name,
            ds.channels,
            ds.height,
            ds.width,
            ds.num_classes()
        )));
    }
    let io = |p: &Path, e: std::io::Error| DataError::Invalid(format!("{}: {e}", p.display()));
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    for (file, part) in [("train.bin", &split.train), ("test.bin", &split.test)] {
        let p = dir.join(file);
        write_cifar100_bin(&p, part).map_err(|e| io(&p, e))?;
    }
    for (file, names) in [("fine_label_names.txt", &ds.class_names), ("coarse_label_names.txt", &h.super_names)] {
        let p = dir.join(file);
        std::fs::write(&p, names.join("\n") + "\n").map_err(|e| io(&p, e))?;
    }
    Ok(())
}
