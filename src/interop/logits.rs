//! Predictions made elsewhere: logits (or probabilities) per test image, from
//!
//! - `.npy` (`numpy.save` of an N x C float32 / float64 array; labels as a 1-D integer array),
//! - `.csv` / `.parquet` (one row per image: optional `index`, optional `label`, then one column per
//!   class, logits, or probabilities when the columns are named `prob*`),
//!
//! plus labels, class names (one per line, or a JSON list) and an optional hierarchy (a
//! `class,superclass` CSV or a JSON object `{class: superclass}`). Rows whose values all lie in [0, 1]
//! and sum to 1 are taken as probabilities; kdscope keeps `ln p` as the logits (softmax gives `p` back).
//! Every reader checks what a file declares against its length before allocating, and names the file
//! and row of a bad value.
use std::path::Path;

use anyhow::{bail, ensure, Context};
use polars::prelude::{CsvReadOptions, DataFrame, DataType, ParquetReader, SerReader};

use crate::data::{Dataset, Hierarchy};
use crate::metrics::Evaluation;
use crate::predictions::Predictions;

/// An N x C matrix of logits read from a file, with the labels it carried (CSV / Parquet `label`).
#[derive(Clone, Debug, PartialEq)]
pub struct Logits {
    pub rows: usize,
    pub classes: usize,
    /// Row-major logits (`ln p` where the file held probabilities).
    pub values: Vec<f32>,
    pub labels: Option<Vec<usize>>,
    /// Whether the file held probabilities.
    pub probabilities: bool,
}

/// A NumPy array as read: its shape and values as f64 (integers exactly up to 2^53).
pub struct Npy {
    pub shape: Vec<usize>,
    pub values: Vec<f64>,
}

/// Reads a `.npy` file (format 1.0 to 3.0, C order, little-endian f4 / f8 / i4 / i8 / u1 / bool).
pub fn read_npy(path: &Path) -> anyhow::Result<Npy> {
    let b = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let p = path.display();
    ensure!(b.len() >= 10 && b.starts_with(b"\x93NUMPY"), "{p}: not a .npy file (no \\x93NUMPY magic)");
    let (hlen, start): (usize, usize) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 => {
            ensure!(b.len() >= 12, "{p}: truncated header");
            (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12)
        }
        v => bail!("{p}: .npy format version {v} (expected 1, 2 or 3)"),
    };
    let end = start.checked_add(hlen).filter(|&e| e <= b.len()).with_context(|| {
        format!("{p}: the header claims {hlen} bytes, the file has {} after the preamble", b.len() - start)
    })?;
    let header = std::str::from_utf8(&b[start..end]).with_context(|| format!("{p}: header is not text"))?;
    let field = |key: &str| -> anyhow::Result<&str> {
        let at = header.find(&format!("'{key}'")).with_context(|| format!("{p}: header has no '{key}': {header}"))?;
        Ok(header[at + key.len() + 2..].trim_start().trim_start_matches(':').trim_start())
    };
    let descr = field("descr")?;
    let descr = descr.get(1..).and_then(|d| d.split('\'').next()).unwrap_or("");
    ensure!(field("fortran_order")?.starts_with("False"), "{p}: Fortran-ordered array (save np.ascontiguousarray(a))");
    let shape_text = field("shape")?;
    let bad_shape = || format!("{p}: bad shape in header (expected a tuple such as (40, 10)): {header}");
    let inner = shape_text.strip_prefix('(').with_context(bad_shape)?;
    let shape: Vec<usize> = inner[..inner.find(')').with_context(bad_shape)?]
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().with_context(|| format!("{p}: bad dimension '{s}' in shape")))
        .collect::<anyhow::Result<_>>()?;
    let size: usize = match descr {
        "<f8" | "<i8" | "<u8" => 8,
        "<f4" | "<i4" | "<u4" => 4,
        "|u1" | "|i1" | "|b1" => 1,
        other => bail!("{p}: dtype '{other}' (expected little-endian float32/float64 or integers)"),
    };
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .with_context(|| format!("{p}: shape {shape:?} overflows"))?;
    let bytes = n.checked_mul(size).with_context(|| format!("{p}: shape {shape:?} overflows"))?;
    ensure!(
        bytes == b.len() - end,
        "{p}: shape {shape:?} of {descr} needs {bytes} bytes of data, the file holds {}",
        b.len() - end
    );
    let d = &b[end..];
    let values: Vec<f64> = match descr {
        "<f8" => d.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8"))).collect(),
        "<f4" => d.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4")) as f64).collect(),
        "<i8" => d.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8")) as f64).collect(),
        "<u8" => d.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8")) as f64).collect(),
        "<i4" => d.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().expect("4")) as f64).collect(),
        "<u4" => d.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().expect("4")) as f64).collect(),
        "|i1" => d.iter().map(|&v| v as i8 as f64).collect(),
        _ => d.iter().map(|&v| v as f64).collect(),
    };
    Ok(Npy { shape, values })
}

fn extension(path: &Path) -> String {
    path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default()
}

fn read_frame(path: &Path) -> anyhow::Result<DataFrame> {
    let p = path.to_path_buf();
    let parquet = extension(path) == "parquet";
    let bytes =
        if parquet { std::fs::read(path).with_context(|| format!("reading {}", path.display()))? } else { vec![] };
    crate::io::guard(format!("{}: not a readable table", path.display()), || {
        if parquet {
            crate::io::parquet::check(path, &bytes)?;
        }
        let df = match extension(path).as_str() {
            "parquet" => ParquetReader::new(std::io::Cursor::new(bytes)).finish(),
            _ => CsvReadOptions::default().with_has_header(true).try_into_reader_with_file_path(Some(p))?.finish(),
        };
        df.with_context(|| format!("{}: not a readable table", path.display()))
    })
}

/// Checks every value is finite (naming the row) and turns probability rows into their logarithm.
fn finish(
    path: &Path,
    rows: usize,
    classes: usize,
    values: Vec<f64>,
    labels: Option<Vec<usize>>,
    named_probs: bool,
) -> anyhow::Result<Logits> {
    ensure!(rows > 0 && classes > 0, "{}: no predictions ({rows} rows x {classes} classes)", path.display());
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        bail!(
            "{} row {}: class {} is {} (expected a finite number)",
            path.display(),
            i / classes,
            i % classes,
            values[i]
        );
    }
    let is_prob = |r: &[f64]| r.iter().all(|&v| (0.0..=1.0).contains(&v)) && (r.iter().sum::<f64>() - 1.0).abs() < 1e-3;
    let probabilities = named_probs || values.chunks(classes).all(is_prob);
    if named_probs {
        if let Some(r) = values.chunks(classes).position(|r| !is_prob(r)) {
            bail!("{} row {r}: the probability columns do not sum to 1 or leave [0, 1]", path.display());
        }
    }
    let values = if probabilities {
        values.iter().map(|&v| (v.max(f32::MIN_POSITIVE as f64)).ln() as f32).collect()
    } else {
        values.iter().map(|&v| v as f32).collect()
    };
    Ok(Logits { rows, classes, values, labels, probabilities })
}

fn label_of(path: &Path, row: usize, v: f64) -> anyhow::Result<usize> {
    ensure!(v >= 0.0 && v.fract() == 0.0 && v < 1e9, "{} row {row}: label {v} is not a class index", path.display());
    Ok(v as usize)
}

/// Reads logits or probabilities from `.npy`, `.csv` or `.parquet` (see the module docs).
pub fn read_logits(path: impl AsRef<Path>) -> anyhow::Result<Logits> {
    let path = path.as_ref();
    if extension(path) == "npy" {
        let a = read_npy(path)?;
        ensure!(a.shape.len() == 2, "{}: shape {:?}, expected N x C (images x classes)", path.display(), a.shape);
        return finish(path, a.shape[0], a.shape[1], a.values, None, false);
    }
    let df = read_frame(path)?;
    let rows = df.height();
    let names: Vec<String> = df.get_column_names().iter().map(|s| s.to_string()).collect();
    let col_f64 = |name: &str| -> anyhow::Result<Vec<f64>> {
        let c = df
            .column(name)?
            .cast(&DataType::Float64)
            .with_context(|| format!("{}: column '{name}' is not numeric", path.display()))?;
        let c = c.f64()?;
        ensure!(c.len() == rows, "{}: column '{name}' has {} values for {rows} rows", path.display(), c.len());
        (0..c.len())
            .map(|r| c.get(r))
            .enumerate()
            .map(|(r, v)| v.with_context(|| format!("{} row {r}: '{name}' is empty", path.display())))
            .collect()
    };
    let order: Vec<usize> = if names.iter().any(|n| n == "index") {
        let idx = col_f64("index")?;
        let mut order: Vec<usize> = (0..rows).collect();
        let mut seen = vec![false; rows];
        for (r, &v) in idx.iter().enumerate() {
            let i = label_of(path, r, v)?;
            ensure!(i < rows && !seen[i], "{} row {r}: index {v} is out of 0..{rows} or repeated", path.display());
            seen[i] = true;
            order[i] = r;
        }
        order
    } else {
        (0..rows).collect()
    };
    let labels = match names.iter().any(|n| n == "label") {
        true => {
            let l = col_f64("label")?;
            Some(order.iter().map(|&r| label_of(path, r, l[r])).collect::<anyhow::Result<Vec<_>>>()?)
        }
        false => None,
    };
    let class_cols: Vec<&String> = names.iter().filter(|n| *n != "index" && *n != "label").collect();
    let named_probs = !class_cols.is_empty() && class_cols.iter().all(|n| n.starts_with("prob"));
    let cols: Vec<Vec<f64>> = class_cols.iter().map(|n| col_f64(n)).collect::<anyhow::Result<_>>()?;
    let values = order.iter().flat_map(|&r| cols.iter().map(move |c| c[r])).collect();
    finish(path, rows, class_cols.len(), values, labels, named_probs)
}

/// Labels from a `.npy` (1-D integers), `.csv` / `.parquet` (a `label` column, or the only column) or a
/// text file (one per line).
pub fn read_labels(path: impl AsRef<Path>) -> anyhow::Result<Vec<usize>> {
    let path = path.as_ref();
    match extension(path).as_str() {
        "npy" => {
            let a = read_npy(path)?;
            ensure!(a.shape.len() == 1, "{}: shape {:?}, expected one label per image", path.display(), a.shape);
            a.values.iter().enumerate().map(|(r, &v)| label_of(path, r, v)).collect()
        }
        "csv" | "parquet" => {
            let df = read_frame(path)?;
            let name = match df.get_column_names().iter().find(|n| n.as_str() == "label") {
                Some(n) => n.to_string(),
                None if df.width() == 1 => df.get_column_names()[0].to_string(),
                None => bail!("{}: no 'label' column", path.display()),
            };
            let c = df.column(&name)?.cast(&DataType::Float64)?;
            let c = c.f64()?;
            (0..c.len())
                .map(|r| c.get(r))
                .enumerate()
                .map(|(r, v)| label_of(path, r, v.with_context(|| format!("{} row {r}: empty label", path.display()))?))
                .collect()
        }
        _ => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            text.lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .map(|(r, l)| {
                    let v: f64 = l
                        .trim()
                        .parse()
                        .with_context(|| format!("{} line {}: '{l}' is not a label", path.display(), r + 1))?;
                    label_of(path, r, v)
                })
                .collect()
        }
    }
}

/// Class names: a JSON list, or one name per line.
pub fn read_class_names(path: impl AsRef<Path>) -> anyhow::Result<Vec<String>> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if text.trim_start().starts_with('[') {
        return serde_json::from_str(&text).with_context(|| format!("{}: not a JSON list of names", path.display()));
    }
    Ok(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect())
}

/// A class → superclass hierarchy file (moved to [`crate::data::read_hierarchy`], where every dataset
/// can use it).
pub use crate::data::read_hierarchy;

/// The evaluation of a model known by its logits (`logits_path` for messages), on `labels`.
pub fn evaluation(
    name: &str,
    logits: &Logits,
    logits_path: &Path,
    labels: &[usize],
    class_names: &[String],
    hierarchy: Option<&Hierarchy>,
) -> anyhow::Result<Evaluation> {
    ensure!(
        logits.rows == labels.len(),
        "{}: {} rows, but there are {} labels",
        logits_path.display(),
        logits.rows,
        labels.len()
    );
    ensure!(
        logits.classes == class_names.len(),
        "{}: {} classes, but there are {} class names",
        logits_path.display(),
        logits.classes,
        class_names.len()
    );
    if let Some(r) = labels.iter().position(|&l| l >= logits.classes) {
        bail!("label row {r}: class {} but {} has {} classes", labels[r], logits_path.display(), logits.classes);
    }
    if let Some(own) = &logits.labels {
        if let Some(r) = own.iter().zip(labels).position(|(a, b)| a != b) {
            bail!(
                "{} row {r}: label {} disagrees with the labels given ({})",
                logits_path.display(),
                own[r],
                labels[r]
            );
        }
    }
    let predictions =
        Predictions { num_classes: logits.classes, labels: labels.to_vec(), logits: logits.values.clone() };
    let mut ev = Evaluation::new(name, predictions, class_names.to_vec(), hierarchy.cloned());
    ev.arch = if logits.probabilities { "probabilities" } else { "logits" }.to_string()
        + " from "
        + &logits_path.display().to_string();
    Ok(ev)
}

/// A test split known by labels only, for a report from logits without the images.
pub fn split_of(labels: Vec<usize>, class_names: Vec<String>, hierarchy: Option<Hierarchy>) -> Dataset {
    Dataset::labels_only("predictions made elsewhere", labels, class_names, hierarchy)
}
