//! The training section: test accuracy per epoch of every model with a history.
use crate::notebook::Chart;
use crate::report::{Page, Section};

/// Test accuracy per epoch of every model with a history.
pub struct Training {
    pub curves: Option<Chart>,
}

impl Section for Training {
    fn anchor(&self) -> &str {
        "curves"
    }
    fn nav(&self) -> &str {
        "training"
    }
    fn render(&self, page: &mut Page) -> anyhow::Result<String> {
        page.charts |= self.curves.is_some();
        let mut ctx = tera::Context::new();
        ctx.insert("curves", &self.curves.as_ref().map(Chart::html).unwrap_or_default());
        page.partial("training.html", self.anchor(), ctx)
    }
}
