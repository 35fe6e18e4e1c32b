//! Class hierarchies for any dataset: from a `class,superclass` file or from the class names
//! themselves (PlantVillage's `<Crop>___<Disease>` folders).
use std::path::Path;

use super::{DataError, DataSplit, Hierarchy};

impl Hierarchy {
    /// Superclasses from the class names: the part before the first `sep` (`Apple___Apple_scab` →
    /// `Apple` with `___`); a class whose name lacks `sep` is its own superclass. Superclasses are
    /// numbered in order of first appearance.
    pub fn from_separator(classes: &[String], sep: &str) -> Result<Self, DataError> {
        if sep.is_empty() {
            return Err(DataError::Invalid("--hierarchy-sep: the separator is empty".into()));
        }
        let pairs: Vec<(String, String)> =
            classes.iter().map(|c| (c.clone(), c.split_once(sep).map_or(c.as_str(), |(s, _)| s).to_string())).collect();
        from_pairs(classes, &pairs, &format!("class names split at '{sep}'"))
    }
}

/// A hierarchy from `(class, superclass)` name pairs; every class of `classes` listed once.
fn from_pairs(classes: &[String], pairs: &[(String, String)], source: &str) -> Result<Hierarchy, DataError> {
    let invalid = |m: String| DataError::Invalid(format!("{source}: {m}"));
    let mut supers: Vec<String> = vec![];
    let mut class_to_super = vec![usize::MAX; classes.len()];
    for (c, s) in pairs {
        let ci = classes
            .iter()
            .position(|n| n == c)
            .ok_or_else(|| invalid(format!("class '{c}' is not among the class names")))?;
        if class_to_super[ci] != usize::MAX {
            return Err(invalid(format!("class '{c}' is listed twice")));
        }
        let si = supers.iter().position(|n| n == s).unwrap_or_else(|| {
            supers.push(s.clone());
            supers.len() - 1
        });
        class_to_super[ci] = si;
    }
    if let Some(c) = class_to_super.iter().position(|&s| s == usize::MAX) {
        return Err(invalid(format!("class '{}' has no superclass", classes[c])));
    }
    Hierarchy::new(supers, class_to_super).map_err(|e| invalid(e.to_string()))
}

/// A class → superclass hierarchy from a `class,superclass` CSV (header optional) or a JSON object
/// `{"class": "superclass", …}`, over `classes` (every class listed once; superclasses in order of
/// first appearance). Errors name the file and the line.
pub fn read_hierarchy(path: impl AsRef<Path>, classes: &[String]) -> Result<Hierarchy, DataError> {
    let path = path.as_ref();
    let bytes = super::read_file(path)?;
    let text = String::from_utf8(bytes)
        .map_err(|e| DataError::format(path, e.utf8_error().valid_up_to(), "UTF-8 text", "a byte that is not UTF-8"))?;
    let pairs: Vec<(String, String)> = if text.trim_start().starts_with('{') {
        let m: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).map_err(|e| {
            DataError::Invalid(format!("{}: not a JSON object of class → superclass: {e}", path.display()))
        })?;
        m.into_iter().map(|(k, v)| (k, v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))).collect()
    } else {
        let mut out = vec![];
        for (r, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let (c, s) = line.split_once(',').ok_or_else(|| {
                DataError::Invalid(format!(
                    "{} line {}: expected class,superclass, found '{line}'",
                    path.display(),
                    r + 1
                ))
            })?;
            out.push((c.trim().to_string(), s.trim().to_string()));
        }
        if out.first().is_some_and(|(c, s)| c == "class" && s == "superclass") {
            out.remove(0);
        }
        out
    };
    from_pairs(classes, &pairs, &path.display().to_string())
}

impl DataSplit {
    /// Sets the class hierarchy of both parts (replacing one the dataset brought, e.g. CIFAR-100's).
    pub fn set_hierarchy(&mut self, h: Hierarchy) {
        self.train.hierarchy = Some(h.clone());
        self.test.hierarchy = Some(h);
    }
}
