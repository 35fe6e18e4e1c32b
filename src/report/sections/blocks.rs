//! Free-form blocks (text, tables, charts, images, preformatted text): the body of a plain report
//! ([`crate::report::Report::text`] …) or, with a title, a section such as a grid's comparison.
use polars::prelude::DataFrame;
use serde::Serialize;

use crate::notebook;
use crate::report::{Page, Section};

/// One block: a heading, a legend, preformatted text (LaTeX …) and rendered HTML (a table, a chart or
/// an image).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Block {
    pub heading: String,
    pub text: String,
    pub pre: String,
    pub html: String,
    #[serde(skip)]
    pub chart: bool,
}

impl Block {
    pub fn text(heading: &str, text: &str) -> Self {
        Self { heading: heading.into(), text: text.into(), ..Self::default() }
    }
    /// A frame as a table (every row), with a legend.
    pub fn table(heading: &str, legend: &str, df: &DataFrame) -> Self {
        Self {
            heading: heading.into(),
            text: legend.into(),
            html: crate::report::table::html(df, if heading.is_empty() { "table" } else { heading }),
            ..Self::default()
        }
    }
    pub fn chart(heading: &str, plot: &plotly::Plot) -> Self {
        Self { heading: heading.into(), html: notebook::chart(plot).html(), chart: true, ..Self::default() }
    }
    pub fn html(heading: &str, html: String) -> Self {
        Self { heading: heading.into(), html, ..Self::default() }
    }
    pub fn preformatted(heading: &str, text: &str) -> Self {
        Self { heading: heading.into(), pre: text.into(), ..Self::default() }
    }
}

/// A list of blocks. Without a title they are the free-form body of a report (each block under its own
/// heading); with one they form a titled section (`Experiments`) with an anchor.
#[derive(Clone, Debug, Default)]
pub struct Blocks {
    pub anchor: String,
    pub title: String,
    pub blocks: Vec<Block>,
}

impl Blocks {
    /// A titled section of blocks.
    pub fn titled(anchor: &str, title: &str) -> Self {
        Self { anchor: anchor.into(), title: title.into(), blocks: vec![] }
    }
    pub fn push(mut self, b: Block) -> Self {
        self.blocks.push(b);
        self
    }
}

impl Section for Blocks {
    fn anchor(&self) -> &str {
        &self.anchor
    }
    fn nav(&self) -> &str {
        &self.anchor
    }
    fn free_form(&mut self) -> Option<&mut Blocks> {
        self.title.is_empty().then_some(self)
    }
    fn render(&self, page: &mut Page) -> anyhow::Result<String> {
        page.charts |= self.blocks.iter().any(|b| b.chart);
        let mut ctx = tera::Context::new();
        ctx.insert("title", &self.title);
        ctx.insert("blocks", &self.blocks);
        page.partial("blocks.html", &self.anchor, ctx)
    }
}
