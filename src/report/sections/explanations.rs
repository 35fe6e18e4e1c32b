//! The explanations section: explanation-quality, UniCAM and agreement frames, example overlays and
//! the saliency maps the image pop-up shows (all computed beforehand by [`crate::explain::section`]).
use polars::prelude::DataFrame;
use serde_json::json;

use crate::notebook;
use crate::report::{Page, Section};

/// Saliency maps of one method for the corpus images: per model, image index → the map as base64 of an
/// `h × w` grayscale PNG (0–255 = the map scaled to [0, 1], at 32 levels; see
/// [`crate::explain::section::map_png_base64`]); the page colours them with the jet map.
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

impl Section for ExplainSection {
    fn anchor(&self) -> &str {
        "explanations"
    }
    fn render(&self, page: &mut Page) -> anyhow::Result<String> {
        if let Some(first) = self.corpus_maps.first() {
            page.data.insert(
                "maps".into(),
                json!({
                    "methods": self.corpus_maps.iter().map(|m| m.method.clone()).collect::<Vec<_>>(),
                    "h": first.h, "w": first.w,
                    "t": self.corpus_maps.iter().map(|m| (m.method.clone(), json!(m.teacher))).collect::<serde_json::Map<_, _>>(),
                    "s": self.corpus_maps.iter().map(|m| (m.method.clone(), json!(m.student))).collect::<serde_json::Map<_, _>>(),
                }),
            );
        }
        let tables: Vec<(&str, String)> = [
            ("Explanation quality (ADCC metrics)", &self.quality),
            ("UniCAM: distilled and residual knowledge", &self.unicam),
            ("Teacher-student map agreement per class", &self.agreement),
        ]
        .into_iter()
        .filter_map(|(title, df)| df.as_ref().map(|df| (title, crate::report::table::html(df, title))))
        .collect();
        let examples: Vec<(&str, String)> =
            self.examples.iter().map(|(c, img)| (c.as_str(), notebook::image(img).html())).collect();
        let mut ctx = tera::Context::new();
        ctx.insert("notes", &self.notes);
        ctx.insert("tables", &tables);
        ctx.insert("examples", &examples);
        page.partial("explanations.html", self.anchor(), ctx)
    }
}
