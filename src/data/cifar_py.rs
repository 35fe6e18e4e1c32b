//! CIFAR-10 and CIFAR-100 in their Python version, the folders torchvision downloads and every
//! PyTorch user has: `cifar-10-batches-py/` (`data_batch_1` … `data_batch_5`, `test_batch`,
//! `batches.meta`) and `cifar-100-python/` (`train`, `test`, `meta`). Each file is a pickled dict:
//! `data` a uint8 array of shape (n, 3072) (1024 red, 1024 green, 1024 blue values, row-major),
//! `labels` (CIFAR-10) or `fine_labels` + `coarse_labels` (CIFAR-100) lists; the meta files hold
//! `label_names` or `fine_label_names` + `coarse_label_names`.
use std::path::Path;

use super::cifar::PIXELS;
use super::pickle::{self, Value};
use super::{read_file, sha256_hex, DataError};

/// One batch file: the pixels (n x 3072), the label lists asked for (by key) and the file's hash.
pub(crate) struct Batch {
    pub pixels: Vec<u8>,
    pub labels: Vec<Vec<usize>>,
    pub provenance: (String, String),
}

fn field(path: &Path, dict: &Value, key: &str) -> Result<Value, DataError> {
    if !matches!(dict, Value::Dict(_)) {
        return Err(DataError::format(path, 0, "a pickled dict", format!("a pickled {}", dict.type_name())));
    }
    dict.get(key)
        .ok_or_else(|| DataError::format(path, 0, format!("a '{key}' entry"), format!("the keys {:?}", dict.keys())))
}

/// Reads a pickle file into its top value.
fn read_pickle(path: &Path) -> Result<(Value, String), DataError> {
    let bytes = read_file(path)?;
    Ok((pickle::read(path, &bytes)?, sha256_hex(&bytes)))
}

/// A list of integer labels below `limit` (a list of ints or an integer array).
fn labels(path: &Path, dict: &Value, key: &str, limit: usize) -> Result<Vec<usize>, DataError> {
    let v = field(path, dict, key)?;
    let ints: Vec<i64> = match &v {
        Value::Array(a) => a.borrow().as_ref().and_then(|a| a.ints()),
        other => other.items().and_then(|items| {
            items
                .iter()
                .map(|i| match i {
                    Value::Int(n) => Some(*n),
                    _ => None,
                })
                .collect()
        }),
    }
    .ok_or_else(|| DataError::format(path, 0, format!("'{key}' as a list of ints"), v.type_name()))?;
    ints.iter()
        .enumerate()
        .map(|(i, &l)| {
            usize::try_from(l).ok().filter(|&l| l < limit).ok_or_else(|| {
                DataError::Invalid(format!("{}: '{key}'[{i}] is {l}, expected a label below {limit}", path.display()))
            })
        })
        .collect()
}

/// Reads a batch file: `data` and the label lists `keys` (each below its limit), all of one length.
pub(crate) fn read_batch(path: &Path, keys: &[(&str, usize)]) -> Result<Batch, DataError> {
    let (dict, hash) = read_pickle(path)?;
    let data = field(path, &dict, "data")?;
    let pixels = match &data {
        Value::Array(a) => {
            let a = a.borrow();
            match a.as_ref() {
                Some(a) if a.dtype.kind == 'u' && a.dtype.size == 1 && a.shape.len() == 2 && a.shape[1] == PIXELS => {
                    a.data.to_vec()
                }
                Some(a) => {
                    return Err(DataError::Invalid(format!(
                        "{}: 'data' is a {} array of shape {:?}, expected uint8 of shape (n, {PIXELS})",
                        path.display(),
                        a.dtype,
                        a.shape
                    )))
                }
                None => return Err(DataError::format(path, 0, "'data' as a built numpy array", "an unbuilt one")),
            }
        }
        other => return Err(DataError::format(path, 0, "'data' as a numpy array", other.type_name())),
    };
    let n = pixels.len() / PIXELS;
    let mut lists = Vec::new();
    for &(key, limit) in keys {
        let l = labels(path, &dict, key, limit)?;
        if l.len() != n {
            return Err(DataError::Invalid(format!(
                "{}: '{key}' has {} labels for {n} images in 'data'",
                path.display(),
                l.len()
            )));
        }
        lists.push(l);
    }
    Ok(Batch { pixels, labels: lists, provenance: (path.display().to_string(), hash) })
}

/// The list of strings `key` of a meta file (exactly `expected` of them when given).
pub(crate) fn read_names(path: &Path, key: &str, expected: Option<usize>) -> Result<Vec<String>, DataError> {
    let (dict, _) = read_pickle(path)?;
    let v = field(path, &dict, key)?;
    let names: Option<Vec<String>> = v.items().and_then(|items| items.iter().map(Value::text).collect());
    let names =
        names.ok_or_else(|| DataError::format(path, 0, format!("'{key}' as a list of strings"), v.type_name()))?;
    if let Some(e) = expected.filter(|&e| e != names.len()) {
        return Err(DataError::Invalid(format!("{}: '{key}' has {} names, expected {e}", path.display(), names.len())));
    }
    Ok(names)
}
