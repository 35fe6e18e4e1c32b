//! The report's sections, one type and file each, each rendered by its own partial in
//! `templates/sections/`: free-form [`blocks`], and the teacher-vs-student views ([`teacher_student`]:
//! models, superclasses, confusion matrices, training curves), the image corpus ([`images`]),
//! [`explanations`], [`embeddings`] and the reproducibility appendix.
pub mod blocks;
pub mod embeddings;
pub mod explanations;
pub mod images;
pub mod teacher_student;

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
