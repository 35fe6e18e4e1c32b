//! The reproducibility appendix: every fact of the report as pretty JSON (the report adds it last).
use crate::report::{Page, Section};

/// The reproducibility appendix: every fact as pretty JSON (the report adds it last).
pub struct Reproducibility {
    pub facts: serde_json::Map<String, serde_json::Value>,
}

impl Section for Reproducibility {
    fn anchor(&self) -> &str {
        "appendix"
    }
    fn nav(&self) -> &str {
        "reproducibility"
    }
    fn render(&self, page: &mut Page) -> anyhow::Result<String> {
        let mut ctx = tera::Context::new();
        ctx.insert("appendix", &serde_json::to_string_pretty(&self.facts)?);
        page.partial("reproducibility.html", self.anchor(), ctx)
    }
}
