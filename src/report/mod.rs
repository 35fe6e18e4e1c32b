//! Self-contained HTML reports: one file with its tables, charts (plotly.js inlined once) and images
//! (PNG data URIs), readable offline. A [`Report`] is a title and a list of [`Section`]s, each its own
//! type in [`sections`] rendered by its own tera partial (`templates/sections/`); the page shell
//! (`templates/report.html`) adds the navigation, the page data and the page script. Sections hold
//! frames, charts and images computed beforehand, never models: the teacher-vs-student views come from
//! [`kd::KdViews`], the explanations and embeddings from [`crate::explain::section`] and
//! [`crate::embed::section`], a grid's comparison from [`crate::grid::GridResults::add_to`].
//!
//! ```
//! use kdscope::report::Report;
//! use polars::prelude::*;
//!
//! let df = df!("model" => ["teacher", "student"], "top1_pct" => [81.2, 78.4])?;
//! let dir = tempfile::tempdir()?;
//! let path = Report::new("Quickstart")
//!     .text("Accuracy", "Top-1 accuracy on the test split.")
//!     .table("", &df)
//!     .write(dir.path().join("quickstart.html"))?;
//! assert!(std::fs::read_to_string(path)?.contains("<td>student</td>"));
//! # Ok::<(), anyhow::Error>(())
//! ```
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use polars::prelude::DataFrame;
use serde::Serialize;

use crate::notebook;

pub mod browser;
mod charts;
pub mod kd;
pub mod palette;
pub mod sections;
pub mod table;
pub use kd::{CorpusMaps, EmbedSection, ExplainSection, KdViews};
pub use sections::blocks::Blocks;

/// Test accuracy (%) per epoch, one line per named history (the training-curves chart of the notebooks
/// and the reports).
pub fn accuracy_curves<'a>(histories: impl IntoIterator<Item = (&'a str, &'a crate::train::History)>) -> plotly::Plot {
    use plotly::layout::{Axis, Layout};
    let mut plot = plotly::Plot::new();
    for (name, h) in histories {
        let x: Vec<usize> = h.epochs.iter().map(|e| e.epoch).collect();
        let y: Vec<f64> = h.epochs.iter().map(|e| 100.0 * e.test_acc).collect();
        plot.add_trace(plotly::Scatter::new(x, y).mode(plotly::common::Mode::LinesMarkers).name(name));
    }
    plot.set_layout(
        Layout::new()
            .title("Test accuracy per epoch")
            .x_axis(Axis::new().title("epoch"))
            .y_axis(Axis::new().title("test accuracy (%)")),
    );
    plot
}

/// The page shell (`templates/report.html`) and the page script (`templates/report.js`).
pub const TEMPLATE: &str = include_str!("../../templates/report.html");
const SCRIPT: &str = include_str!("../../templates/report.js");

/// Every section partial, by name: one line per section.
const PARTIALS: &[(&str, &str)] = &[
    ("blocks.html", include_str!("../../templates/sections/blocks.html")),
    ("models.html", include_str!("../../templates/sections/models.html")),
    ("superclasses.html", include_str!("../../templates/sections/superclasses.html")),
    ("confusion.html", include_str!("../../templates/sections/confusion.html")),
    ("images.html", include_str!("../../templates/sections/images.html")),
    ("explanations.html", include_str!("../../templates/sections/explanations.html")),
    ("embeddings.html", include_str!("../../templates/sections/embeddings.html")),
    ("training.html", include_str!("../../templates/sections/training.html")),
    ("reproducibility.html", include_str!("../../templates/sections/reproducibility.html")),
];

/// One part of a report: its anchor and navigation label, and its HTML from its partial.
pub trait Section {
    /// The anchor (`superclasses`); empty for free-form blocks, which have no navigation entry.
    fn anchor(&self) -> &str;
    /// The navigation label (`superclasses`).
    fn nav(&self) -> &str {
        self.anchor()
    }
    /// Renders the section with its partial; may add data for the page script and mark charts.
    fn render(&self, page: &mut Page) -> anyhow::Result<String>;
    /// The section as free-form blocks a report can append to (only untitled [`Blocks`]).
    fn free_form(&mut self) -> Option<&mut Blocks> {
        None
    }
}

/// What sections render into: the templates, the page script's data and whether charts are drawn.
pub struct Page {
    tera: tera::Tera,
    /// Keys of the JSON the page script reads (`supers`, `corpus`, `cm`, `maps`, `embed` …).
    pub data: serde_json::Map<String, serde_json::Value>,
    /// Whether plotly.js must be inlined.
    pub charts: bool,
    /// Whether the navigation bar carries the superclass selector.
    pub superclass_filter: bool,
}

impl Page {
    fn new() -> anyhow::Result<Self> {
        let mut tera = tera::Tera::new();
        tera.add_raw_template("report.html", TEMPLATE).context("parsing templates/report.html")?;
        for (name, src) in PARTIALS {
            tera.add_raw_template(name, src).with_context(|| format!("parsing templates/sections/{name}"))?;
        }
        Ok(Self { tera, data: Default::default(), charts: false, superclass_filter: false })
    }

    /// Renders the partial `name` with `ctx` (plus the section's `anchor`).
    pub fn partial(&self, name: &str, anchor: &str, mut ctx: tera::Context) -> anyhow::Result<String> {
        ctx.insert("anchor", anchor);
        ctx.insert("palette", &palette::PALETTE);
        self.tera.render(name, &ctx).with_context(|| format!("rendering templates/sections/{name}"))
    }
}

/// A report under construction: a title, sections in order and reproducibility facts.
#[derive(Default)]
pub struct Report {
    pub title: String,
    pub subtitle: String,
    sections: Vec<Box<dyn Section>>,
    facts: serde_json::Map<String, serde_json::Value>,
}

impl Report {
    pub fn new(title: &str) -> Self {
        Self { title: title.into(), ..Default::default() }
    }

    pub fn title(mut self, t: &str) -> Self {
        self.title = t.into();
        self
    }

    /// A line under the title (e.g. the dataset and date).
    pub fn subtitle(mut self, s: &str) -> Self {
        self.subtitle = s.into();
        self
    }

    /// Appends a section.
    pub fn section(mut self, s: impl Section + 'static) -> Self {
        self.sections.push(Box::new(s));
        self
    }

    /// Appends sections (e.g. [`KdViews::sections`]).
    pub fn sections(mut self, s: Vec<Box<dyn Section>>) -> Self {
        self.sections.extend(s);
        self
    }

    /// A free-form block, added to the trailing free-form section.
    fn block(mut self, b: sections::blocks::Block) -> Self {
        let last = self.sections.last_mut().and_then(|s| s.free_form());
        match last {
            Some(blocks) => blocks.blocks.push(b),
            None => self.sections.push(Box::new(Blocks { blocks: vec![b], ..Blocks::default() })),
        }
        self
    }

    /// A heading (may be empty) and a paragraph of plain text.
    pub fn text(self, heading: &str, text: &str) -> Self {
        self.block(sections::blocks::Block::text(heading, text))
    }

    /// A polars frame as a table (every row).
    pub fn table(self, heading: &str, df: &DataFrame) -> Self {
        self.block(sections::blocks::Block::table(heading, "", df))
    }

    /// A plotly chart.
    pub fn chart(self, heading: &str, plot: &plotly::Plot) -> Self {
        self.block(sections::blocks::Block::chart(heading, plot))
    }

    /// An image (e.g. a saliency overlay), enlarged `scale` times.
    pub fn image(self, heading: &str, img: &image::RgbImage, scale: u32) -> Self {
        self.block(sections::blocks::Block::html(heading, notebook::image_scaled(img, scale).html()))
    }

    /// A reproducibility fact (any serialisable value: a config struct, a seed, a command line …).
    pub fn fact(mut self, key: &str, value: impl Serialize) -> Self {
        self.facts.insert(key.into(), serde_json::to_value(value).unwrap_or(serde_json::Value::Null));
        self
    }

    /// Free text for the reproducibility appendix (settings, versions, seeds).
    pub fn appendix(self, text: &str) -> Self {
        self.fact("notes", text)
    }

    /// The whole HTML page.
    pub fn render(&self) -> anyhow::Result<String> {
        let mut page = Page::new()?;
        let mut html = Vec::new();
        let mut nav = Vec::new();
        for s in &self.sections {
            html.push(s.render(&mut page)?);
            if !s.anchor().is_empty() {
                nav.push((s.anchor().to_string(), s.nav().to_string()));
            }
        }
        let mut facts = serde_json::Map::new();
        facts.insert("kdscope_version".into(), env!("CARGO_PKG_VERSION").into());
        facts.extend(self.facts.clone());
        let appendix = sections::Reproducibility { facts };
        html.push(appendix.render(&mut page)?);
        nav.push((appendix.anchor().to_string(), appendix.nav().to_string()));
        page.data.insert("palette".into(), serde_json::to_value(palette::PALETTE)?);
        let mut ctx = tera::Context::new();
        ctx.insert("palette", &palette::PALETTE);
        ctx.insert("title", &self.title);
        ctx.insert("subtitle", &self.subtitle);
        ctx.insert("version", env!("CARGO_PKG_VERSION"));
        ctx.insert("sections", &html);
        ctx.insert("nav", &nav);
        ctx.insert("superclass_filter", &page.superclass_filter);
        ctx.insert("has_charts", &page.charts);
        ctx.insert("plotly_js", &if page.charts { notebook::plotly_js() } else { String::new() });
        ctx.insert("data_json", &notebook::script_json(&serde_json::Value::Object(page.data).to_string()));
        ctx.insert("script", SCRIPT);
        page.tera.render("report.html", &ctx).context("rendering the report")
    }

    /// Writes the page to `path` atomically (creating parent folders); returns the path.
    pub fn write(&self, path: impl AsRef<Path>) -> anyhow::Result<PathBuf> {
        let path = path.as_ref();
        crate::io::write_atomic(path, self.render()?.as_bytes())?;
        Ok(path.to_path_buf())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use polars::prelude::*;

    #[test]
    fn report_is_self_contained_and_escaped() {
        let df = df!("class" => ["<b>cat</b>"], "f1" => [0.5f64]).unwrap();
        let mut plot = plotly::Plot::new();
        plot.add_trace(plotly::Bar::new(vec!["a"], vec![1.0]));
        let img = image::RgbImage::from_pixel(2, 2, image::Rgb([1, 2, 3]));
        let html = Report::new("T & S")
            .text("Intro", "x < y")
            .table("Frame", &df)
            .chart("Chart", &plot)
            .image("Img", &img, 2)
            .appendix("seed = 0")
            .render()
            .unwrap();
        assert!(html.contains("<title>T &amp; S</title>"));
        assert!(html.contains("<p>x &lt; y</p>"));
        assert!(html.contains("<td>&lt;b&gt;cat&lt;/b&gt;</td>"));
        assert_eq!(html.matches("window.Plotly = Plotly").count(), 1, "plotly.js inlined exactly once");
        assert!(html.contains("Plotly.newPlot"));
        assert!(html.contains("data:image/png;base64,"));
        assert!(html.contains("seed = 0"));
        assert!(!html.contains("<script src"), "no network fetches");
        let plain = Report::new("no charts").text("", "t").render().unwrap();
        assert!(!plain.contains("window.Plotly"), "no plotly.js without charts");
    }
}
