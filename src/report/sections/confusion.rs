//! The confusion section: both models' confusion matrices, classes grouped by superclass.
use serde_json::{json, Value};

use crate::notebook::Chart;
use crate::report::{Page, Section};

/// Both models' confusion matrices (rates per true class), classes grouped by superclass.
pub struct Confusion {
    pub teacher: Chart,
    pub student: Chart,
    /// Class order (grouped by superclass) and both rate matrices in that order, for the page script.
    pub order: Vec<usize>,
    pub rates: (Vec<Vec<f64>>, Vec<Vec<f64>>),
}

impl Section for Confusion {
    fn anchor(&self) -> &str {
        "confusion"
    }
    fn render(&self, page: &mut Page) -> anyhow::Result<String> {
        page.charts = true;
        page.data.insert("order".into(), json!(self.order));
        let cm: Value = json!({ self.teacher.id.clone(): self.rates.0, self.student.id.clone(): self.rates.1 });
        page.data.insert("cm".into(), cm);
        let mut ctx = tera::Context::new();
        ctx.insert("cm_teacher", &self.teacher.html());
        ctx.insert("cm_student", &self.student.html());
        page.partial("confusion.html", self.anchor(), ctx)
    }
}
