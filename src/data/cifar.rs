//! CIFAR-10 and CIFAR-100 in their binary distribution formats
//! (<https://www.cs.toronto.edu/~kriz/cifar.html>, "binary version").
//!
//! CIFAR-10: `data_batch_1.bin` … `data_batch_5.bin`, `test_batch.bin`; records of 1 label byte and
//! 3072 pixel bytes (1024 red, 1024 green, 1024 blue, row-major); names in `batches.meta.txt`.
//! CIFAR-100: `train.bin`, `test.bin`; records of a coarse label byte, a fine label byte and 3072 pixel
//! bytes; names in `fine_label_names.txt` and `coarse_label_names.txt`.
use std::path::Path;

use super::{read_file, sha256_hex, DataError, DataSplit, Dataset, Hierarchy, Normalization};

const PIXELS: usize = 3 * 32 * 32;

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

/// Loads CIFAR-10 from the directory holding the `.bin` files.
pub fn load_cifar10(dir: impl AsRef<Path>) -> Result<DataSplit, DataError> {
    let dir = dir.as_ref();
    let names = read_names(&dir.join("batches.meta.txt"), 10, Some(&CIFAR10_NAMES))?;
    let load = |files: &[String]| -> Result<Dataset, DataError> {
        let (mut px, mut lb, mut prov) = (Vec::new(), Vec::new(), Vec::new());
        for f in files {
            let p = dir.join(f);
            let bytes = read_file(&p)?;
            let (l, x) = parse_records(&p, &bytes, 1, &[10])?;
            prov.push((p.display().to_string(), sha256_hex(&bytes)));
            px.extend(x);
            lb.extend(l.into_iter().next().unwrap_or_default());
        }
        Ok(Dataset::rgb32("cifar10", px, lb, names.clone(), None, Normalization::cifar10(), prov))
    };
    let train: Vec<String> = (1..=5).map(|i| format!("data_batch_{i}.bin")).collect();
    Ok(DataSplit { train: load(&train)?, test: load(&["test_batch.bin".to_string()])? })
}

/// Loads CIFAR-100 (fine labels, with the 20 coarse superclasses as hierarchy).
pub fn load_cifar100(dir: impl AsRef<Path>) -> Result<DataSplit, DataError> {
    let dir = dir.as_ref();
    let fine = read_names(&dir.join("fine_label_names.txt"), 100, None)?;
    let coarse = read_names(&dir.join("coarse_label_names.txt"), 20, None)?;
    let mut map = vec![usize::MAX; 100];
    let mut load = |file: &str| -> Result<Dataset, DataError> {
        let p = dir.join(file);
        let bytes = read_file(&p)?;
        let (l, px) = parse_records(&p, &bytes, 2, &[20, 100])?;
        for (i, (&c, &f)) in l[0].iter().zip(&l[1]).enumerate() {
            if map[f] == usize::MAX {
                map[f] = c;
            } else if map[f] != c {
                return Err(DataError::format(
                    &p,
                    i * (2 + PIXELS),
                    format!("coarse label {} for fine label {f} (as in earlier records)", map[f]),
                    format!("coarse label {c}"),
                ));
            }
        }
        Ok(Dataset::rgb32(
            "cifar100",
            px,
            l[1].clone(),
            fine.clone(),
            None,
            Normalization::cifar100(),
            vec![(p.display().to_string(), sha256_hex(&bytes))],
        ))
    };
    let mut train = load("train.bin")?;
    let mut test = load("test.bin")?;
    if let Some(f) = map.iter().position(|&c| c == usize::MAX) {
        return Err(DataError::Invalid(format!(
            "{}: fine class {f} ('{}') never occurs, so its superclass is unknown",
            dir.display(),
            fine[f]
        )));
    }
    let h = Hierarchy::new(coarse, map)?;
    train.hierarchy = Some(h.clone());
    test.hierarchy = Some(h);
    Ok(DataSplit { train, test })
}

/// Writes a dataset as CIFAR-10 binary records (for tests and exports).
pub fn write_cifar10_bin(path: impl AsRef<Path>, ds: &Dataset) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(ds.len() * (1 + PIXELS));
    for i in 0..ds.len() {
        out.push(ds.labels[i] as u8);
        out.extend_from_slice(ds.image(i));
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
        out.extend_from_slice(ds.image(i));
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
