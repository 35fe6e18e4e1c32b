//! MNIST (and Fashion-MNIST) in the IDX format, raw or gzip-compressed
//! (`train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]`, `t10k-…`).
use std::io::Read;
use std::path::{Path, PathBuf};

use super::{read_file, sha256_hex, DataError, DataSplit, Dataset, Normalization};

/// Reads an IDX file (decompressing gzip), checks its magic number (unsigned bytes, `ndim`
/// dimensions) and size, and returns the dimensions and payload.
pub fn read_idx(path: &Path, ndim: u8) -> Result<(Vec<usize>, Vec<u8>, String), DataError> {
    let raw = read_file(path)?;
    let hash = sha256_hex(&raw);
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| DataError::format(path, 0, "a valid gzip stream", format!("a corrupt one ({e})")))?;
        out
    } else {
        raw
    };
    if bytes.len() < 4 {
        return Err(DataError::format(path, 0, "a 4-byte IDX magic number", format!("{} bytes", bytes.len())));
    }
    let want = [0, 0, 0x08, ndim];
    if bytes[..4] != want {
        return Err(DataError::format(
            path,
            0,
            format!("IDX magic {want:02x?} (unsigned bytes, {ndim} dimensions)"),
            format!("{:02x?}", &bytes[..4]),
        ));
    }
    let header = 4 + 4 * ndim as usize;
    if bytes.len() < header {
        return Err(DataError::format(path, bytes.len(), format!("{ndim} big-endian u32 dimensions"), "end of file"));
    }
    let dims: Vec<usize> = (0..ndim as usize)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")) as usize)
        .collect();
    let need: usize = dims.iter().product();
    let have = bytes.len() - header;
    if have != need {
        return Err(DataError::format(
            path,
            bytes.len().min(header + need),
            format!("{need} data bytes for dimensions {dims:?}"),
            format!("{have} bytes"),
        ));
    }
    Ok((dims, bytes[header..].to_vec(), hash))
}

fn find(dir: &Path, stem: &str) -> Result<PathBuf, DataError> {
    for name in [stem.to_string(), format!("{stem}.gz")] {
        let p = dir.join(name);
        if p.exists() {
            return Ok(p);
        }
    }
    Err(DataError::Invalid(format!("{}: neither {stem} nor {stem}.gz exists", dir.display())))
}

fn load_pair(dir: &Path, prefix: &str) -> Result<Dataset, DataError> {
    let ip = find(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let lp = find(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    let (idims, pixels, ih) = read_idx(&ip, 3)?;
    let (ldims, labels, lh) = read_idx(&lp, 1)?;
    if idims[0] != ldims[0] {
        return Err(DataError::format(
            &lp,
            4,
            format!("{} labels (one per image in {})", idims[0], ip.display()),
            format!("{}", ldims[0]),
        ));
    }
    if let Some(i) = labels.iter().position(|&l| l > 9) {
        return Err(DataError::format(&lp, 8 + i, "a digit label 0-9", format!("{}", labels[i])));
    }
    Ok(Dataset {
        name: "mnist".into(),
        channels: 1,
        height: idims[1],
        width: idims[2],
        pixels,
        stream: None,
        labels: labels.iter().map(|&l| l as usize).collect(),
        class_names: (0..10).map(|d| d.to_string()).collect(),
        hierarchy: None,
        norm: Normalization::mnist(),
        provenance: vec![(ip.display().to_string(), ih), (lp.display().to_string(), lh)],
    })
}

/// Loads MNIST from a directory with the four IDX files (raw or `.gz`), or from torchvision's layout
/// under it: `MNIST/raw/` (the `root` given to `torchvision.datasets.MNIST`) or `raw/`.
pub fn load_mnist(dir: impl AsRef<Path>) -> Result<DataSplit, DataError> {
    let given = dir.as_ref();
    let candidates = [given.to_path_buf(), given.join("raw"), given.join("MNIST").join("raw")];
    let has = |d: &Path| find(d, "train-images-idx3-ubyte").is_ok();
    let Some(dir) = candidates.iter().find(|d| has(d)) else {
        return Err(DataError::Invalid(format!(
            "{}: no MNIST here: expected train-images-idx3-ubyte[.gz] (and the other three IDX files) in it, in raw/ or in MNIST/raw/ (torchvision's layout)",
            given.display()
        )));
    };
    Ok(DataSplit { train: load_pair(dir, "train")?, test: load_pair(dir, "t10k")? })
}

/// Encodes an IDX file of unsigned bytes (for tests and exports).
pub fn encode_idx(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&(*d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}
