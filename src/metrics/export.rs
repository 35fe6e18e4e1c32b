//! Frame exports: CSV and Parquet (polars' own writers), JSON (an array of row objects) and LaTeX
//! (a booktabs `table` for a paper's appendix). Files are written atomically.
use std::path::Path;

use anyhow::Context as _;
use polars::prelude::{AnyValue, CsvReader, CsvWriter, DataFrame, ParquetReader, ParquetWriter, SerReader, SerWriter};

use crate::io::write_atomic;

/// The frame as CSV text with a header row (polars' writer: exact values, quoted where needed).
pub fn to_csv(df: &DataFrame) -> anyhow::Result<String> {
    let mut buf = Vec::new();
    CsvWriter::new(&mut buf).include_header(true).finish(&mut df.clone())?;
    Ok(String::from_utf8(buf)?)
}

/// CSV with a header row ([`to_csv`]).
pub fn write_csv(df: &DataFrame, path: impl AsRef<Path>) -> anyhow::Result<()> {
    write_atomic(path.as_ref(), to_csv(df)?.as_bytes())
}

pub fn read_csv(path: impl AsRef<Path>) -> anyhow::Result<DataFrame> {
    let file = std::fs::File::open(path.as_ref()).with_context(|| format!("opening {}", path.as_ref().display()))?;
    Ok(CsvReader::new(file).finish()?)
}

/// Parquet (uncompressed: the frames are small and the file stays readable by every tool).
pub fn write_parquet(df: &DataFrame, path: impl AsRef<Path>) -> anyhow::Result<()> {
    let mut buf = Vec::new();
    ParquetWriter::new(&mut buf)
        .with_compression(polars::prelude::ParquetCompression::Uncompressed)
        .finish(&mut df.clone())?;
    write_atomic(path.as_ref(), &buf)
}

pub fn read_parquet(path: impl AsRef<Path>) -> anyhow::Result<DataFrame> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    crate::io::guard(format!("{}: not a readable Parquet file", path.display()), || {
        crate::io::parquet::check(path, &bytes)?;
        Ok(ParquetReader::new(std::io::Cursor::new(bytes)).finish()?)
    })
}

fn json_value(v: AnyValue) -> serde_json::Value {
    use serde_json::Value;
    match v {
        AnyValue::Null => Value::Null,
        AnyValue::Boolean(b) => Value::Bool(b),
        AnyValue::String(s) => Value::String(s.to_string()),
        AnyValue::StringOwned(s) => Value::String(s.to_string()),
        AnyValue::Float64(x) => serde_json::Number::from_f64(x).map(Value::Number).unwrap_or(Value::Null),
        AnyValue::Float32(x) => serde_json::Number::from_f64(x as f64).map(Value::Number).unwrap_or(Value::Null),
        AnyValue::Int8(x) => x.into(),
        AnyValue::Int16(x) => x.into(),
        AnyValue::Int32(x) => x.into(),
        AnyValue::Int64(x) => x.into(),
        AnyValue::UInt8(x) => x.into(),
        AnyValue::UInt16(x) => x.into(),
        AnyValue::UInt32(x) => x.into(),
        AnyValue::UInt64(x) => x.into(),
        other => Value::String(other.to_string()),
    }
}

/// The frame as JSON: an array with one object per row (non-finite floats become `null`).
pub fn to_json(df: &DataFrame) -> serde_json::Value {
    let cols = df.columns();
    let rows = (0..df.height())
        .map(|i| {
            let obj = cols
                .iter()
                .map(|c| (c.name().to_string(), c.get(i).map(json_value).unwrap_or(serde_json::Value::Null)))
                .collect::<serde_json::Map<_, _>>();
            serde_json::Value::Object(obj)
        })
        .collect();
    serde_json::Value::Array(rows)
}

pub fn write_json(df: &DataFrame, path: impl AsRef<Path>) -> anyhow::Result<()> {
    write_atomic(path.as_ref(), &serde_json::to_vec_pretty(&to_json(df))?)
}

/// Escapes LaTeX's special characters in text.
pub fn latex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '\\' => out.push_str("\\textbackslash{}"),
            '&' | '%' | '$' | '#' | '_' | '{' | '}' => {
                out.push('\\');
                out.push(ch);
            }
            '~' => out.push_str("\\textasciitilde{}"),
            '^' => out.push_str("\\textasciicircum{}"),
            '<' => out.push_str("\\textless{}"),
            '>' => out.push_str("\\textgreater{}"),
            c => out.push(c),
        }
    }
    out
}

/// A booktabs LaTeX table (`\usepackage{booktabs}`): text columns left-aligned, numbers right-aligned,
/// floats with `decimals` digits.
pub fn to_latex(df: &DataFrame, caption: &str, label: &str, decimals: usize) -> String {
    let cols = df.columns();
    let align: String = cols.iter().map(|c| if c.dtype().is_primitive_numeric() { 'r' } else { 'l' }).collect();
    let mut s = String::from("\\begin{table}[t]\n\\centering\n");
    if !caption.is_empty() {
        s += &format!("\\caption{{{}}}\n", latex_escape(caption));
    }
    if !label.is_empty() {
        s += &format!("\\label{{{label}}}\n");
    }
    s += &format!("\\begin{{tabular}}{{{align}}}\n\\toprule\n");
    s += &cols.iter().map(|c| latex_escape(c.name())).collect::<Vec<_>>().join(" & ");
    s += " \\\\\n\\midrule\n";
    for i in 0..df.height() {
        let cells: Vec<String> = cols
            .iter()
            .map(|c| match c.get(i) {
                Ok(AnyValue::Float64(x)) => format!("{x:.decimals$}"),
                Ok(AnyValue::Float32(x)) => format!("{x:.decimals$}"),
                Ok(AnyValue::Null) | Err(_) => String::new(),
                Ok(v) => latex_escape(&crate::notebook::cell_text(&v)),
            })
            .collect();
        s += &cells.join(" & ");
        s += " \\\\\n";
    }
    s += "\\bottomrule\n\\end{tabular}\n\\end{table}\n";
    s
}

pub fn write_latex(df: &DataFrame, path: impl AsRef<Path>, caption: &str, label: &str) -> anyhow::Result<()> {
    write_atomic(path.as_ref(), to_latex(df, caption, label, 3).as_bytes())
}
