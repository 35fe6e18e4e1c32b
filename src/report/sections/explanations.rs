//! The explanations section: explanation-quality, UniCAM and agreement frames, example overlays and
//! the saliency maps the image pop-up shows (all computed beforehand by [`crate::explain::section`]).
use polars::prelude::DataFrame;

use crate::notebook;

/// Saliency maps of one method for the corpus images: per model, image index → map as base64 of its
/// `h × w` bytes (values 0–255 = the map scaled to [0, 1]); the page colours them with the jet map.
#[derive(Clone, Debug, Default)]
pub struct CorpusMaps {
    pub method: String,
    pub h: usize,
    pub w: usize,
    pub teacher: std::collections::BTreeMap<usize, String>,
    pub student: std::collections::BTreeMap<usize, String>,
}

/// The data of the report's explanations section (frames and images only).
#[derive(Clone, Debug, Default)]
pub struct ExplainSection {
    /// Explanation-quality summary, one row per model (and method).
    pub quality: Option<DataFrame>,
    /// Teacher-vs-student agreement per class.
    pub agreement: Option<DataFrame>,
    /// UniCAM scores (FSS, RS).
    pub unicam: Option<DataFrame>,
    /// Captioned example images (overlays).
    pub examples: Vec<(String, image::RgbImage)>,
    /// Maps for the corpus pop-up, one entry per method.
    pub corpus_maps: Vec<CorpusMaps>,
    /// Settings shown under the section (method, samples, seed …).
    pub notes: Vec<(String, String)>,
}

/// A section's settings as one legend line (`key: value · …`), or nothing without notes.
pub(crate) fn notes_html(notes: &[(String, String)]) -> String {
    if notes.is_empty() {
        return String::new();
    }
    let items: Vec<String> =
        notes.iter().map(|(k, v)| format!("{}: {}", notebook::escape(k), notebook::escape(v))).collect();
    format!("<p class=\"legend\">{}</p>", items.join(" · "))
}

/// The explanations section's HTML: notes, frames as tables, example images.
pub(crate) fn explain_html(e: &ExplainSection) -> anyhow::Result<String> {
    let mut h = String::new();
    h.push_str(&notes_html(&e.notes));
    for (title, df) in [
        ("Explanation quality (ADCC metrics)", &e.quality),
        ("UniCAM: distilled and residual knowledge", &e.unicam),
        ("Teacher-student map agreement per class", &e.agreement),
    ] {
        if let Some(df) = df {
            h.push_str(&format!("<h3>{title}</h3>"));
            h.push_str(&notebook::table_with(df, usize::MAX).html);
        }
    }
    for (caption, img) in &e.examples {
        h.push_str(&format!(
            "<figure class=\"explain-example\">{}<figcaption>{}</figcaption></figure>",
            notebook::image(img).html(),
            notebook::escape(caption)
        ));
    }
    Ok(h)
}
