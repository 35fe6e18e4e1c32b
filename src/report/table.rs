//! Tables as a report's readers meet them: values formatted for people (rates as percentages with
//! one decimal, their differences in percentage points, other numbers to 3 significant digits,
//! counts as integers), no dtype row or shape footer, headers that stay in view and explain their
//! column on hover, sortable by the exact value, and a CSV download of the exact values (polars'
//! writer, as `metrics::export::write_csv`; a data URL, so the page stays offline). Notebook cells keep polars' own look (`notebook::table`).
use std::fmt::Write as _;

use polars::prelude::{AnyValue, DataFrame};

use crate::notebook::{cell_text, escape};

/// How a column's values are shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A share of images in [0, 1]: `70.6 %` (a narrow no-break space before the sign).
    Rate,
    /// A difference of two rates: `-32.0 pp`.
    RateDelta,
    /// Any other number: 3 significant digits.
    Number,
    /// Integers and text: as they are.
    Plain,
}

/// The quantities shown as percentages, after the prefixes that only say whose or which average.
const RATES: &[&str] = &["accuracy", "precision", "recall", "f1", "agreement"];
const PREFIXES: &[&str] = &["teacher_", "student_", "micro_", "macro_", "top5_", "superclass_"];

fn base(name: &str) -> &str {
    let mut n = name;
    while let Some(p) = PREFIXES.iter().find(|p| n.starts_with(**p)) {
        n = &n[p.len()..];
    }
    n
}

/// How the column `name` is shown (by its name; a rate column must be floating point).
pub fn kind(name: &str, float: bool) -> Kind {
    if !float {
        return Kind::Plain;
    }
    match name.strip_prefix("delta_") {
        Some(rest) if RATES.contains(&base(rest)) => Kind::RateDelta,
        None if RATES.contains(&base(name)) => Kind::Rate,
        _ => Kind::Number,
    }
}

/// The definition shown when the pointer rests on a column's header, where kdscope knows one.
pub fn definition(name: &str) -> Option<String> {
    if let Some(rest) = name.strip_prefix("delta_") {
        return definition(rest).map(|d| format!("student minus teacher, in percentage points: {d}"));
    }
    let who = ["teacher_", "student_"].iter().find(|p| name.starts_with(**p));
    if let Some(p) = who {
        return definition(&name[p.len()..]).map(|d| format!("{}'s {d}", p.trim_end_matches('_')));
    }
    let avg = [("micro_", "pooled over all images"), ("macro_", "unweighted mean over classes")];
    if let Some((p, how)) = avg.iter().find(|(p, _)| name.starts_with(*p)) {
        return definition(&name[p.len()..]).map(|d| format!("{d} ({how})"));
    }
    let d = match name {
        "accuracy" => "share of images whose top prediction is their label",
        "top5_accuracy" => "share of images whose label is among the 5 highest predictions",
        "superclass_accuracy" => "share of images whose predicted class lies in their label's superclass",
        "precision" => "of the images predicted as this class, the share that are",
        "recall" => "of the images of this class, the share predicted as it",
        "f1" => "harmonic mean of precision and recall",
        "agreement" => "share of images on which teacher and student predict the same class",
        "support" => "test images with this label",
        "images" => "test images counted",
        "params" => "trainable parameters",
        "kl_teacher_student" => "KL(teacher ‖ student) of the predicted distributions, mean over images",
        "average_drop" => "mean % drop of the class score when the image is masked by its saliency map (lower is better)",
        "increase_in_confidence" => "% of images whose class score rises when masked by their saliency map",
        "coherency" => "(Pearson correlation + 1) / 2 of the map of the masked image with the original map (higher is better)",
        "coherency_ssim" => "coherency measured with SSIM instead of Pearson correlation",
        "complexity" => "mean map value over the image: how much of it the map lights up (lower is better)",
        "adcc" => "harmonic mean of coherency, 1 - complexity and 1 - drop, per image (Poppi et al. 2021; higher is better)",
        "rank_corr" => "Spearman rank correlation of the teacher's and the student's maps over pixels",
        "top_iou" => "intersection over union of the teacher's and the student's most salient pixels (top 20 % by default)",
        "fss" => "UniCAM feature similarity: squared distance correlation of the student's and the reference's features",
        "objective" => "the embedding's final loss",
        "seconds" => "time to compute the embedding",
        "points" => "test images embedded",
        _ if name.starts_with("M_") => "local fidelity: mean Jensen-Shannon divergence (nats) between a point's prediction and its k nearest neighbours' in the plane (lower is better)",
        _ => return None,
    };
    Some(d.to_string())
}

/// A value as the page shows it.
pub fn format(v: f64, kind: Kind) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    match kind {
        Kind::Rate => format!("{:.1}\u{202f}%", 100.0 * v),
        Kind::RateDelta => format!("{:+.1}\u{202f}pp", 100.0 * v),
        Kind::Number => significant(v, 3),
        Kind::Plain => v.to_string(),
    }
}

/// `v` to `digits` significant digits, without exponent between 1e-4 and 1e6.
pub fn significant(v: f64, digits: usize) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let mag = v.abs().log10().floor() as i32;
    if !(-4..6).contains(&mag) {
        return format!("{:.*e}", digits - 1, v);
    }
    let decimals = (digits as i32 - 1 - mag).max(0) as usize;
    format!("{v:.decimals$}")
}

fn number(v: &AnyValue) -> Option<f64> {
    match v {
        AnyValue::Float64(x) => Some(*x),
        AnyValue::Float32(x) => Some(*x as f64),
        _ => None,
    }
}

/// Percent-encoding of a data URL's payload: everything but letters, digits and `-_.~`
/// (`encodeURIComponent` decodes it).
fn url_encode(s: &str) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    const KEEP: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
    utf8_percent_encode(s, KEEP).to_string()
}

/// The frame as a table for people (see the module docs); `name` names the CSV download.
pub fn html(df: &DataFrame, name: &str) -> String {
    let cols = df.columns();
    let kinds: Vec<Kind> = cols.iter().map(|c| kind(c.name(), c.dtype().is_float())).collect();
    let mut h = String::from("<div class=\"kd-table\"><table class=\"kdscope-frame\">\n<thead><tr>");
    for c in cols {
        // Long names wrap after their underscores (`teacher_<wbr>accuracy`) before anywhere else.
        let label = escape(c.name()).replace('_', "_<wbr>");
        match definition(c.name()) {
            Some(d) => {
                let _ = write!(h, "<th title=\"{}\">{label}</th>", escape(&d));
            }
            None => {
                let _ = write!(h, "<th>{label}</th>");
            }
        }
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    for i in 0..df.height() {
        h.push_str("<tr>");
        for (c, k) in cols.iter().zip(&kinds) {
            let v = c.get(i).ok();
            match v.as_ref().and_then(number) {
                Some(x) => {
                    let _ = write!(h, "<td data-v=\"{x}\">{}</td>", escape(&format(x, *k)));
                }
                None => {
                    let _ = write!(h, "<td>{}</td>", escape(&v.map(|v| cell_text(&v)).unwrap_or_default()));
                }
            }
        }
        h.push_str("</tr>\n");
    }
    let file: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    h.push_str("</tbody></table>");
    // polars' CSV writer fails only on nested columns, which report tables do not have; without a CSV
    // there is no link rather than an empty download.
    if let Ok(csv) = crate::metrics::export::to_csv(df) {
        let _ = write!(
            h,
            "<a class=\"csv\" download=\"{file}.csv\" href=\"data:text/csv;charset=utf-8,{}\">CSV</a>",
            url_encode(&csv)
        );
    }
    h.push_str("</div>");
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use polars::prelude::*;

    #[test]
    fn values_for_people_exact_values_for_sorting_and_csv() {
        let df = df!(
            "class" => ["red-a", "b,\"c\""],
            "support" => [50u64, 7],
            "teacher_accuracy" => [0.56, 0.7060],
            "delta_accuracy" => [-0.32, 0.0004],
            "kl_teacher_student" => [0.358_21, 12345.6],
            "M_5" => [0.002_41, 0.0]
        )
        .unwrap();
        let h = html(&df, "per class");
        assert!(!h.contains("<small>") && !h.contains("rows ×"), "no dtype row, no shape footer");
        assert!(h.contains("<td data-v=\"0.56\">56.0\u{202f}%</td>"), "{h}");
        assert!(h.contains("<td data-v=\"-0.32\">-32.0\u{202f}pp</td>") && h.contains(">+0.0\u{202f}pp<"), "{h}");
        assert!(h.contains(">0.358<") && h.contains(">12346<") && h.contains(">0.00241<") && h.contains(">0<"), "{h}");
        assert!(h.contains("<td>50</td>") && h.contains("<td>b,&quot;c&quot;</td>"), "{h}");
        assert!(h.contains("title=\"teacher&#39;s share of images whose top prediction is their label\""), "{h}");
        assert!(h.contains("title=\"student minus teacher, in percentage points: share of images"), "{h}");
        assert!(h.contains("download=\"per_class.csv\""));
        assert!(h.contains(">kl_<wbr>teacher_<wbr>student</th>") && h.contains("<th>class</th>"), "{h}");
        let csv = crate::metrics::export::to_csv(&df).unwrap();
        assert_eq!(
            csv,
            "class,support,teacher_accuracy,delta_accuracy,kl_teacher_student,M_5\n\
             red-a,50,0.56,-0.32,0.35821,0.00241\n\"b,\"\"c\"\"\",7,0.706,0.0004,12345.6,0.0\n"
        );
        assert!(h.contains(&format!("data:text/csv;charset=utf-8,{}", url_encode(&csv))));
        assert!(url_encode("a b,%\n").eq("a%20b%2C%25%0A"));
    }

    #[test]
    fn kinds_and_digits() {
        assert_eq!(kind("macro_f1", true), Kind::Rate);
        assert_eq!(kind("superclass_accuracy", true), Kind::Rate);
        assert_eq!(kind("delta_recall", true), Kind::RateDelta);
        assert_eq!(kind("average_drop", true), Kind::Number);
        assert_eq!(kind("support", false), Kind::Plain);
        assert_eq!(kind("accuracy", false), Kind::Plain);
        assert_eq!(significant(29.9774, 3), "30.0");
        assert_eq!(significant(0.978_61, 3), "0.979");
        assert_eq!(significant(-1.5e-7, 3), "-1.50e-7");
        assert_eq!(format(f64::NAN, Kind::Rate), "NaN");
        assert_eq!(definition("unknown_column"), None);
    }
}
