//! MNIST (and Fashion-MNIST) in the IDX format, raw or gzip-compressed
//! (`train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]`, `t10k-…`).
use std::io::Read;
use std::path::{Path, PathBuf};

use super::{read_file, sha256_hex, DataError, DataSplit, Dataset, Normalization};

/// Deflate expands at most ~1032:1; a gzip file whose header promises more data than that is refused
/// before anything is allocated.
const MAX_DEFLATE_RATIO: usize = 1032;

/// Reads an IDX file (raw, or gzip read as a stream, multi-member included), checks its magic number
/// (unsigned bytes, `ndim` dimensions) and the size its dimensions declare against what the file can
/// hold before reserving memory, reads exactly that many bytes and refuses trailing data. Returns the
/// dimensions, the payload and the SHA-256 of the file.
pub fn read_idx(path: &Path, ndim: u8) -> Result<(Vec<usize>, Vec<u8>, String), DataError> {
    let raw = read_file(path)?;
    let hash = sha256_hex(&raw);
    let gz = raw.starts_with(&[0x1f, 0x8b]);
    let corrupt = |e: std::io::Error| DataError::format(path, 0, "a valid gzip stream", format!("a corrupt one ({e})"));
    let mut reader: Box<dyn Read> =
        if gz { Box::new(flate2::read::MultiGzDecoder::new(&raw[..])) } else { Box::new(&raw[..]) };
    let where_ = if gz { " (decompressed)" } else { "" };
    let header = 4 + 4 * ndim as usize;
    let mut head = Vec::with_capacity(header);
    reader.by_ref().take(header as u64).read_to_end(&mut head).map_err(corrupt)?;
    if head.len() < 4 {
        return Err(DataError::format(path, 0, "a 4-byte IDX magic number", format!("{} bytes{where_}", head.len())));
    }
    let want = [0, 0, 0x08, ndim];
    if head[..4] != want {
        return Err(DataError::format(
            path,
            0,
            format!("IDX magic {want:02x?} (unsigned bytes, {ndim} dimensions)"),
            format!("{:02x?}", &head[..4]),
        ));
    }
    if head.len() < header {
        return Err(DataError::format(path, head.len(), format!("{ndim} big-endian u32 dimensions"), "end of file"));
    }
    let dims: Vec<usize> = (0..ndim as usize)
        .map(|i| u32::from_be_bytes(head[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")) as usize)
        .collect();
    let need = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let limit = if gz { raw.len().saturating_mul(MAX_DEFLATE_RATIO) } else { raw.len() - header };
    let need = match need {
        Some(n) if n <= limit => n,
        // A raw file shorter than its header says: how many bytes it has.
        Some(n) if !gz => {
            return Err(DataError::format(
                path,
                raw.len(),
                format!("{n} data bytes for dimensions {dims:?}"),
                format!("{limit} bytes"),
            ))
        }
        _ => {
            let declared = dims.iter().map(|&d| d as u128).product::<u128>();
            return Err(DataError::format(
                path,
                4,
                format!(
                    "dimensions whose {} data bytes fit in the file ({} bytes{})",
                    declared,
                    raw.len(),
                    if gz { ", compressed" } else { "" }
                ),
                format!("{dims:?}"),
            ));
        }
    };
    let mut data = Vec::with_capacity(need);
    reader.by_ref().take(need as u64).read_to_end(&mut data).map_err(corrupt)?;
    let mut extra = [0u8; 1];
    let trailing = reader.read(&mut extra).map_err(corrupt)?;
    if data.len() != need || trailing > 0 {
        let have = if trailing > 0 { "more bytes".to_string() } else { format!("{} bytes", data.len()) };
        return Err(DataError::format(
            path,
            header + data.len(),
            format!("{need} data bytes for dimensions {dims:?}{where_}"),
            have,
        ));
    }
    Ok((dims, data, hash))
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
