//! The models section: every model's overall metrics and the distillation set-up.
use polars::prelude::DataFrame;

use crate::report::{table, Page, Section};

/// Every model's overall metrics and the distillation set-up.
pub struct Models {
    pub overall: DataFrame,
    /// `name (arch, N parameters)` of the teacher and the student.
    pub teacher: String,
    pub student: String,
    pub method: String,
    pub hyper: Vec<(String, String)>,
}

impl Section for Models {
    fn anchor(&self) -> &str {
        "overview"
    }
    fn nav(&self) -> &str {
        "overview"
    }
    fn render(&self, page: &mut Page) -> anyhow::Result<String> {
        let mut ctx = tera::Context::new();
        ctx.insert("overall", &table::html(&self.overall, "models"));
        ctx.insert("teacher", &self.teacher);
        ctx.insert("student", &self.student);
        ctx.insert("method", &self.method);
        ctx.insert("hyper", &self.hyper);
        page.partial("models.html", self.anchor(), ctx)
    }
}
