//! Self-contained HTML reports: one file with its tables, charts (plotly.js inlined once) and images
//! (PNG data URIs), readable offline. The report reads frames, charts and images only, never models.
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

mod charts;
pub mod kd;
pub mod sections;
pub use kd::{CorpusMaps, EmbedSection, ExplainSection, ExtraBlock, KdReport};

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

/// The page template (`templates/report.html`), compiled into the library.
pub const TEMPLATE: &str = include_str!("../../templates/report.html");

#[derive(Clone, Debug, Serialize)]
struct Block {
    heading: String,
    text: String,
    html: String,
    chart: bool,
}

/// A report under construction: a title and a sequence of blocks (text, tables, charts, images).
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub title: String,
    pub subtitle: String,
    blocks: Vec<Block>,
    appendix: String,
}

impl Report {
    pub fn new(title: &str) -> Self {
        Self { title: title.into(), ..Default::default() }
    }

    /// A line under the title (e.g. the dataset and date).
    pub fn subtitle(mut self, s: &str) -> Self {
        self.subtitle = s.into();
        self
    }

    fn push(mut self, heading: &str, text: &str, html: String, chart: bool) -> Self {
        self.blocks.push(Block { heading: heading.into(), text: text.into(), html, chart });
        self
    }

    /// A heading (may be empty) and a paragraph of plain text.
    pub fn text(self, heading: &str, text: &str) -> Self {
        self.push(heading, text, String::new(), false)
    }

    /// A polars frame as a table (every row).
    pub fn table(self, heading: &str, df: &DataFrame) -> Self {
        let html = notebook::table_with(df, usize::MAX).html;
        self.push(heading, "", html, false)
    }

    /// A plotly chart.
    pub fn chart(self, heading: &str, plot: &plotly::Plot) -> Self {
        let html = notebook::chart(plot).html();
        self.push(heading, "", html, true)
    }

    /// An image (e.g. a saliency overlay), enlarged `scale` times.
    pub fn image(self, heading: &str, img: &image::RgbImage, scale: u32) -> Self {
        let html = notebook::image_scaled(img, scale).html();
        self.push(heading, "", html, false)
    }

    /// The reproducibility appendix: settings, versions, seeds (shown verbatim).
    pub fn appendix(mut self, text: &str) -> Self {
        self.appendix = text.into();
        self
    }

    /// The whole HTML page.
    pub fn render(&self) -> anyhow::Result<String> {
        let mut tera = tera::Tera::new();
        tera.add_raw_template("report.html", TEMPLATE).context("parsing templates/report.html")?;
        let mut ctx = tera::Context::new();
        let has_charts = self.blocks.iter().any(|b| b.chart);
        ctx.insert("title", &self.title);
        ctx.insert("subtitle", &self.subtitle);
        ctx.insert("version", env!("CARGO_PKG_VERSION"));
        ctx.insert("blocks", &self.blocks);
        ctx.insert("appendix", &self.appendix);
        ctx.insert("has_charts", &has_charts);
        ctx.insert("plotly_js", &if has_charts { notebook::plotly_js() } else { String::new() });
        tera.render("report.html", &ctx).context("rendering the report")
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
