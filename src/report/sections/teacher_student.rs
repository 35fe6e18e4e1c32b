//! The names the teacher-vs-student parts of the page script share (models, classes, superclasses and
//! each class's superclass); renders nothing.
use serde_json::json;

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
