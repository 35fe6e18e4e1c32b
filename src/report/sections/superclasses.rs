//! The superclass section (KD-Explorer's first view): circular bars of precision, recall and F1 in two
//! views — on superclass-level predictions, or as the mean of the superclass's classes — defaulting to
//! the one that separates teacher and student on the data at hand, superclasses ordered by the
//! student's loss; a "largest drops" list; the superclass and class comparison tables. It brings the
//! page's superclass selector.
use std::fmt::Write as _;

use serde_json::json;

use super::super::charts::{f64s, polar_chart};
use crate::data::Hierarchy;
use crate::metrics::{self, Evaluation};
use crate::notebook::{escape, Chart};
use crate::report::{table, Page, Section};

/// The metrics drawn as circular bars, with their chart titles.
const METRICS: [(&str, &str); 3] = [("precision", "Precision"), ("recall", "Recall (accuracy)"), ("f1", "F1")];

/// How a superclass's bar is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// On superclass-level predictions: an image counts as right when the predicted class lies in its
    /// label's superclass.
    SuperclassLevel,
    /// The unweighted mean of the superclass's per-class metrics.
    ClassMean,
}

impl View {
    pub fn key(self) -> &'static str {
        match self {
            View::SuperclassLevel => "super",
            View::ClassMean => "classes",
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            View::SuperclassLevel => "superclass-level predictions",
            View::ClassMean => "mean of its classes",
        }
    }
}

/// One view's values: per metric of [`METRICS`], the teacher's and the student's value per superclass
/// (hierarchy order).
#[derive(Clone, Debug, PartialEq)]
pub struct ViewValues {
    pub view: View,
    pub teacher: [Vec<f64>; 3],
    pub student: [Vec<f64>; 3],
}

impl ViewValues {
    /// The largest |student − teacher| over superclasses and metrics.
    pub fn largest_gap(&self) -> f64 {
        (0..3)
            .flat_map(|m| self.teacher[m].iter().zip(&self.student[m]).map(|(t, s)| (s - t).abs()))
            .fold(0.0, f64::max)
    }
    /// Student − teacher recall per superclass.
    pub fn recall_gaps(&self) -> Vec<f64> {
        self.teacher[1].iter().zip(&self.student[1]).map(|(t, s)| s - t).collect()
    }
}

/// Both views of `ev`'s superclasses: teacher and student per view.
pub fn views(t: &Evaluation, s: &Evaluation, h: &Hierarchy) -> anyhow::Result<[ViewValues; 2]> {
    let level = |ev: &Evaluation| -> anyhow::Result<[Vec<f64>; 3]> {
        let df = metrics::per_superclass(ev)?;
        Ok([f64s(&df, METRICS[0].0)?, f64s(&df, METRICS[1].0)?, f64s(&df, METRICS[2].0)?])
    };
    let means = |ev: &Evaluation| -> anyhow::Result<[Vec<f64>; 3]> {
        let df = metrics::per_class(ev)?;
        let per = |col: &str| -> anyhow::Result<Vec<f64>> {
            let v = f64s(&df, col)?;
            Ok((0..h.num_super())
                .map(|g| {
                    let m = h.members(g);
                    if m.is_empty() {
                        0.0
                    } else {
                        m.iter().map(|&c| v[c]).sum::<f64>() / m.len() as f64
                    }
                })
                .collect())
        };
        Ok([per(METRICS[0].0)?, per(METRICS[1].0)?, per(METRICS[2].0)?])
    };
    Ok([
        ViewValues { view: View::SuperclassLevel, teacher: level(t)?, student: level(s)? },
        ViewValues { view: View::ClassMean, teacher: means(t)?, student: means(s)? },
    ])
}

/// The view a reader should see first: the one with the larger teacher–student gap (superclass-level
/// on a tie, as KD-Explorer draws it).
pub fn discriminating(v: &[ViewValues; 2]) -> usize {
    usize::from(v[1].largest_gap() > v[0].largest_gap())
}

/// Superclass indices, the student's largest recall loss first (ties in hierarchy order).
pub fn by_gap(gaps: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..gaps.len()).collect();
    order.sort_by(|&a, &b| gaps[a].total_cmp(&gaps[b]));
    order
}

/// One line of the "largest drops" list.
#[derive(Clone, Debug, PartialEq)]
pub struct Drop {
    pub name: String,
    /// The class's superclass (empty for a superclass).
    pub within: String,
    pub teacher: f64,
    pub student: f64,
}

/// The `n` largest recall losses of the student among `names` (only losses), largest first.
pub fn largest_drops(names: &[String], within: &[String], t: &[f64], s: &[f64], n: usize) -> Vec<Drop> {
    let gaps: Vec<f64> = t.iter().zip(s).map(|(t, s)| s - t).collect();
    by_gap(&gaps)
        .into_iter()
        .filter(|&i| gaps[i] < 0.0)
        .take(n)
        .map(|i| Drop { name: names[i].clone(), within: within[i].clone(), teacher: t[i], student: s[i] })
        .collect()
}

/// The superclass view: the circular bars (drawn in the discriminating view, the other one a toggle
/// away), the largest drops, the superclass and class comparison tables.
pub struct Superclasses {
    pub polar: Vec<Chart>,
    pub views: [ViewValues; 2],
    pub shown: usize,
    /// Superclass order on the bars.
    pub order: Vec<usize>,
    pub super_drops: Vec<Drop>,
    pub class_drops: Vec<Drop>,
    pub super_table: polars::prelude::DataFrame,
    pub class_table: polars::prelude::DataFrame,
}

impl Superclasses {
    /// The view of `t` and `s` (both carrying hierarchy `h`).
    pub fn new(t: &Evaluation, s: &Evaluation, h: &Hierarchy) -> anyhow::Result<Self> {
        let views = views(t, s, h)?;
        let shown = discriminating(&views);
        let order = by_gap(&views[shown].recall_gaps());
        let pick = |v: &[f64]| order.iter().map(|&g| v[g]).collect::<Vec<f64>>();
        let names: Vec<String> = order.iter().map(|&g| h.super_names[g].clone()).collect();
        let polar = METRICS
            .iter()
            .enumerate()
            .map(|(m, (col, title))| {
                let (a, b) = (pick(&views[shown].teacher[m]), pick(&views[shown].student[m]));
                polar_chart(&format!("kd-polar-{col}"), title, &names, &a, &b, &t.name, &s.name)
            })
            .collect();
        let v = &views[shown];
        let super_drops =
            largest_drops(&h.super_names, &vec![String::new(); h.num_super()], &v.teacher[1], &v.student[1], 3);
        let (tc, sc) = (metrics::per_class(t)?, metrics::per_class(s)?);
        let within: Vec<String> = h.class_to_super.iter().map(|&g| h.super_names[g].clone()).collect();
        let class_drops = largest_drops(&t.class_names, &within, &f64s(&tc, "recall")?, &f64s(&sc, "recall")?, 5);
        Ok(Self {
            polar,
            shown,
            order,
            views,
            super_drops,
            class_drops,
            super_table: metrics::compare_superclasses(t, s)?,
            class_table: metrics::compare_classes(t, s)?,
        })
    }

    /// The page script's data: per view, per metric, `[teacher, student]` in bar order.
    fn page_data(&self) -> serde_json::Value {
        let pick = |v: &[f64]| self.order.iter().map(|&g| v[g]).collect::<Vec<f64>>();
        let mut out = serde_json::Map::new();
        for v in &self.views {
            let per: serde_json::Map<_, _> = METRICS
                .iter()
                .enumerate()
                .map(|(m, (col, _))| (col.to_string(), json!([pick(&v.teacher[m]), pick(&v.student[m])])))
                .collect();
            out.insert(v.view.key().into(), per.into());
        }
        json!({ "shown": self.views[self.shown].view.key(), "views": out })
    }
}

fn drops_html(title: &str, drops: &[Drop]) -> String {
    let mut s = format!("<div><b>{}</b>", escape(title));
    if drops.is_empty() {
        s.push_str("<p>none: the student is never below the teacher</p></div>");
        return s;
    }
    s.push_str("<ol>");
    for d in drops {
        let within = if d.within.is_empty() { String::new() } else { format!(" ({})", escape(&d.within)) };
        let _ = write!(
            s,
            "<li><b>{}</b>{within}: {} → {} <span class=\"neg\">({})</span></li>",
            escape(&d.name),
            table::format(d.teacher, table::Kind::Rate),
            table::format(d.student, table::Kind::Rate),
            table::format(d.student - d.teacher, table::Kind::RateDelta),
        );
    }
    s.push_str("</ol></div>");
    s
}

impl Section for Superclasses {
    fn anchor(&self) -> &str {
        "superclasses"
    }
    fn render(&self, page: &mut Page) -> anyhow::Result<String> {
        page.charts = true;
        page.superclass_filter = true;
        page.data.insert("polar".into(), self.page_data());
        let mut ctx = tera::Context::new();
        ctx.insert("polar_charts", &self.polar.iter().map(Chart::html).collect::<Vec<_>>());
        let views: Vec<(&str, &str, bool)> =
            self.views.iter().enumerate().map(|(i, v)| (v.view.key(), v.view.label(), i == self.shown)).collect();
        ctx.insert("views", &views);
        let shown = self.views[self.shown].view;
        let other = self.views[1 - self.shown].view;
        ctx.insert(
            "why",
            &format!(
                "Opens on {}: the larger teacher–student gap on these data ({:.1} pp, against {:.1} pp for {}).",
                shown.label(),
                100.0 * self.views[self.shown].largest_gap(),
                100.0 * self.views[1 - self.shown].largest_gap(),
                other.label()
            ),
        );
        let drops = format!(
            "{}{}",
            drops_html(&format!("Superclasses (recall, {})", shown.label()), &self.super_drops),
            drops_html("Classes (recall)", &self.class_drops)
        );
        ctx.insert("drops", &drops);
        ctx.insert("super_table", &table::html(&self.super_table, "superclasses"));
        ctx.insert("class_table", &table::html(&self.class_table, "classes"));
        page.partial("superclasses.html", self.anchor(), ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::Predictions;

    /// 4 classes in 2 superclasses, 2 images each; `pred[i]` is the predicted class of image i.
    fn eval(name: &str, pred: &[usize]) -> Evaluation {
        let labels = vec![0, 0, 1, 1, 2, 2, 3, 3];
        let logits = pred.iter().flat_map(|&p| (0..4).map(move |c| if c == p { 1.0 } else { 0.0 })).collect();
        let h = Hierarchy::new(vec!["a".into(), "b".into()], vec![0, 0, 1, 1]).unwrap();
        let names = (0..4).map(|c| format!("c{c}")).collect();
        Evaluation::new(name, Predictions { num_classes: 4, labels, logits }, names, Some(h))
    }

    #[test]
    fn class_mean_view_shows_what_superclass_level_hides() {
        // The teacher is always right; the student confuses class 0 with class 1 (same superclass a)
        // and is right on one of the two images of class 3.
        let t = eval("t", &[0, 0, 1, 1, 2, 2, 3, 3]);
        let s = eval("s", &[1, 1, 1, 1, 2, 2, 3, 2]);
        let h = t.hierarchy.clone().unwrap();
        let v = views(&t, &s, &h).unwrap();
        // Superclass level: a is 4/4 right for both; b's student recall is also 4/4 (2 and 3 share b).
        assert_eq!(v[0].teacher[1], vec![1.0, 1.0]);
        assert_eq!(v[0].student[1], vec![1.0, 1.0]);
        assert_eq!(v[0].largest_gap(), 0.0);
        // Class means. Student recall: c0 0, c1 1, c2 1, c3 0.5 -> a 0.5, b 0.75.
        assert_eq!(v[1].student[1], vec![0.5, 0.75]);
        // Student precision: c0 0 (never predicted), c1 2/4, c2 2/3, c3 1 -> a 0.25, b 5/6.
        assert_eq!(v[1].student[0][0], 0.25);
        assert!((v[1].student[0][1] - 5.0 / 6.0).abs() < 1e-12);
        // F1: c0 0, c1 2/3, c2 0.8, c3 2/3 -> a 1/3, b 11/15; largest gap 1 - 0.25 = 0.75 (precision of a).
        assert!((v[1].student[2][0] - 1.0 / 3.0).abs() < 1e-12);
        assert!((v[1].student[2][1] - 11.0 / 15.0).abs() < 1e-12);
        assert_eq!(v[1].largest_gap(), 0.75);
        assert_eq!(discriminating(&v), 1);
        assert_eq!(by_gap(&v[1].recall_gaps()), vec![0, 1]);
        // A tie keeps the superclass level.
        let same = views(&t, &t, &h).unwrap();
        assert_eq!(discriminating(&same), 0);
    }

    #[test]
    fn drops_are_the_largest_losses_only() {
        let names: Vec<String> = ["w", "x", "y", "z"].iter().map(|s| s.to_string()).collect();
        let within = vec![String::new(); 4];
        let d = largest_drops(&names, &within, &[0.9, 0.5, 0.8, 0.4], &[0.1, 0.6, 0.7, 0.4], 3);
        assert_eq!(d.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), vec!["w", "y"]);
        assert_eq!((d[0].teacher, d[0].student), (0.9, 0.1));
        assert!(drops_html("t", &d).contains("<b>w</b>: 90.0\u{202f}% → 10.0\u{202f}%"));
        assert!(drops_html("t", &[]).contains("never below"));
    }
}
