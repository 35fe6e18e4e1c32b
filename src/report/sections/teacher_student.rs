//! The teacher-vs-student sections (KD-Explorer's views), each holding what it shows, computed
//! beforehand by [`crate::report::KdViews`]: the models table, the superclass view (circular bars and
//! comparison tables), the grouped confusion matrices and the training curves; and the names the page
//! script shares between them.
use polars::prelude::DataFrame;
use serde_json::{json, Value};

use crate::notebook::{self, Chart};
use crate::report::{Page, Section};

/// The names every teacher-vs-student part of the page script reads: models, classes, superclasses
/// and each class's superclass. Renders nothing.
pub struct Names {
    pub teacher: String,
    pub student: String,
    pub classes: Vec<String>,
    pub supers: Vec<String>,
    pub class_super: Vec<usize>,
}

impl Section for Names {
    fn anchor(&self) -> &str {
        ""
    }
    fn render(&self, page: &mut Page) -> anyhow::Result<String> {
        for (k, v) in [
            ("teacher", json!(self.teacher)),
            ("student", json!(self.student)),
            ("classes", json!(self.classes)),
            ("supers", json!(self.supers)),
            ("class_super", json!(self.class_super)),
        ] {
            page.data.insert(k.into(), v);
        }
        Ok(String::new())
    }
}

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
        ctx.insert("overall", &notebook::table_with(&self.overall, usize::MAX).html);
        ctx.insert("teacher", &self.teacher);
        ctx.insert("student", &self.student);
        ctx.insert("method", &self.method);
        ctx.insert("hyper", &self.hyper);
        page.partial("models.html", self.anchor(), ctx)
    }
}

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
        ctx.insert("super_table", &notebook::table_with(&self.super_table, usize::MAX).html);
        ctx.insert("class_table", &notebook::table_with(&self.class_table, usize::MAX).html);
        page.partial("superclasses.html", self.anchor(), ctx)
    }
}

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
