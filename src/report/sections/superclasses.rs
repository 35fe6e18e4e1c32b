//! The superclass section (KD-Explorer's first view): circular bars of precision, recall and F1,
//! superclass and class comparison tables; it brings the page's superclass selector.
use polars::prelude::DataFrame;

use crate::notebook::Chart;
use crate::report::{table, Page, Section};

/// The superclass view: precision, recall and F1 as circular bars, the superclass and class
/// comparison tables; it brings the page's superclass selector.
pub struct Superclasses {
    pub polar: Vec<Chart>,
    pub super_table: DataFrame,
    pub class_table: DataFrame,
}

impl Section for Superclasses {
    fn anchor(&self) -> &str {
        "superclasses"
    }
    fn render(&self, page: &mut Page) -> anyhow::Result<String> {
        page.charts = true;
        page.superclass_filter = true;
        let mut ctx = tera::Context::new();
        ctx.insert("polar_charts", &self.polar.iter().map(Chart::html).collect::<Vec<_>>());
        ctx.insert("super_table", &table::html(&self.super_table, "superclasses"));
        ctx.insert("class_table", &table::html(&self.class_table, "classes"));
        page.partial("superclasses.html", self.anchor(), ctx)
    }
}
