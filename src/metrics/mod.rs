//! Per-class, per-superclass and overall metrics, confusion matrices and teacher-vs-student comparisons,
//! as polars DataFrames built from [`Predictions`] and the class hierarchy.
//!
//! Definitions follow scikit-learn (`precision_recall_fscore_support`, `confusion_matrix`,
//! `accuracy_score`):
//! - precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = 2·P·R / (P + R);
//! - **zero division**: a class never predicted has precision 0; a class with no images has recall 0;
//!   F1 is 0 when P + R = 0 (scikit-learn's `zero_division=0`, its default value after its warning);
//! - per-class *accuracy* is the share of the class's images classified correctly (= its recall, the
//!   "per-class accuracy" of CIFAR papers); top-5 likewise;
//! - macro = unweighted mean over classes (macro F1 is the mean of per-class F1s, as scikit-learn), micro
//!   = from the pooled counts (equals accuracy for single-label data);
//! - superclass metrics are computed on superclass-level labels and predictions (a prediction counts for
//!   the superclass of the predicted class); `class_*_mean` columns average the member classes' values.
//!
//! ```
//! use kdscope::metrics::{Evaluation, per_class};
//! use kdscope::train::Predictions;
//!
//! // Three images of classes 0, 1, 1; the model predicts 0, 0, 1.
//! let p = Predictions { num_classes: 2, labels: vec![0, 1, 1], logits: vec![1., 0., 1., 0., 0., 1.] };
//! let ev = Evaluation::new("m", p, vec!["cat".into(), "dog".into()], None);
//! let df = per_class(&ev)?;
//! let precision = df.column("precision")?.f64()?.get(0).unwrap();
//! assert_eq!(precision, 0.5); // class 0: predicted twice, right once
//! # Ok::<(), anyhow::Error>(())
//! ```
pub mod export;

use anyhow::{bail, ensure};
use polars::prelude::{Column, DataFrame, NamedFrom, Series};

use crate::data::Hierarchy;
use crate::predictions::{argmax, kl, Predictions};

/// One model's predictions on a split, with what the frames need to name things.
#[derive(Clone, Debug)]
pub struct Evaluation {
    /// Display name, e.g. "teacher" or "student KD".
    pub name: String,
    pub arch: String,
    pub params: usize,
    pub predictions: Predictions,
    pub class_names: Vec<String>,
    pub hierarchy: Option<Hierarchy>,
}

impl Evaluation {
    pub fn new(name: &str, predictions: Predictions, class_names: Vec<String>, hierarchy: Option<Hierarchy>) -> Self {
        Self { name: name.into(), arch: String::new(), params: 0, predictions, class_names, hierarchy }
    }

    pub fn num_classes(&self) -> usize {
        self.predictions.num_classes
    }

    fn hierarchy(&self) -> anyhow::Result<&Hierarchy> {
        match &self.hierarchy {
            Some(h) => Ok(h),
            None => bail!("'{}' has no class hierarchy: superclass metrics need one", self.name),
        }
    }

    fn super_name(&self, class: usize) -> String {
        self.hierarchy.as_ref().map(|h| h.super_names[h.class_to_super[class]].clone()).unwrap_or_default()
    }
}

/// Counts of a confusion matrix (rows: true class, columns: predicted class).
#[derive(Clone, Debug, PartialEq)]
pub struct Confusion {
    pub n: usize,
    pub counts: Vec<u64>,
}

/// Precision, recall and F1 of one class, with its counts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scores {
    pub support: u64,
    pub predicted: u64,
    pub correct: u64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

impl Confusion {
    pub fn new(n: usize, truth: &[usize], predicted: &[usize]) -> Self {
        let mut counts = vec![0u64; n * n];
        for (&t, &p) in truth.iter().zip(predicted) {
            counts[t * n + p] += 1;
        }
        Self { n, counts }
    }

    pub fn get(&self, truth: usize, predicted: usize) -> u64 {
        self.counts[truth * self.n + predicted]
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Per-class scores with the zero-division rule of the module docs.
    pub fn scores(&self) -> Vec<Scores> {
        (0..self.n)
            .map(|c| {
                let support: u64 = (0..self.n).map(|p| self.get(c, p)).sum();
                let predicted: u64 = (0..self.n).map(|t| self.get(t, c)).sum();
                let correct = self.get(c, c);
                let (precision, recall) = (ratio(correct, predicted), ratio(correct, support));
                let f1 = if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 };
                Scores { support, predicted, correct, precision, recall, f1 }
            })
            .collect()
    }
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 {
        0.0
    } else {
        s / n as f64
    }
}

pub(crate) fn column<T, V>(name: &str, v: V) -> Column
where
    Series: NamedFrom<V, T>,
    T: ?Sized,
{
    Column::from(Series::new(name.into(), v))
}

fn class_confusion(ev: &Evaluation) -> Confusion {
    Confusion::new(ev.num_classes(), &ev.predictions.labels, &ev.predictions.predicted())
}

fn super_confusion(ev: &Evaluation) -> anyhow::Result<Confusion> {
    let h = ev.hierarchy()?;
    let map = |v: &[usize]| v.iter().map(|&c| h.class_to_super[c]).collect::<Vec<_>>();
    Ok(Confusion::new(h.num_super(), &map(&ev.predictions.labels), &map(&ev.predictions.predicted())))
}

/// Whether each image's label is among the `k` highest logits.
fn top_k_hits(p: &Predictions, k: usize) -> Vec<bool> {
    p.logits
        .chunks(p.num_classes)
        .zip(&p.labels)
        .map(|(row, &l)| row.iter().filter(|&&v| v > row[l]).count() < k)
        .collect()
}

/// The count and score columns shared by the class and superclass frames: support, predicted,
/// correct, accuracy (= recall), precision, recall, F1.
fn score_columns(s: &[Scores]) -> Vec<Column> {
    vec![
        column("support", s.iter().map(|x| x.support).collect::<Vec<_>>()),
        column("predicted", s.iter().map(|x| x.predicted).collect::<Vec<_>>()),
        column("correct", s.iter().map(|x| x.correct).collect::<Vec<_>>()),
        column("accuracy", s.iter().map(|x| x.recall).collect::<Vec<_>>()),
        column("precision", s.iter().map(|x| x.precision).collect::<Vec<_>>()),
        column("recall", s.iter().map(|x| x.recall).collect::<Vec<_>>()),
        column("f1", s.iter().map(|x| x.f1).collect::<Vec<_>>()),
    ]
}

/// One row per class: id, name, superclass, support, predicted, correct, accuracy (= recall),
/// precision, recall, F1, top-5 accuracy.
pub fn per_class(ev: &Evaluation) -> anyhow::Result<DataFrame> {
    let n = ev.num_classes();
    ensure!(ev.class_names.len() == n, "{} class names for {} classes", ev.class_names.len(), n);
    let s = class_confusion(ev).scores();
    let hits = top_k_hits(&ev.predictions, 5);
    let mut top5 = vec![0u64; n];
    for (&l, &h) in ev.predictions.labels.iter().zip(&hits) {
        top5[l] += h as u64;
    }
    let mut cols = vec![
        column("class_id", (0..n as u32).collect::<Vec<_>>()),
        column("class", ev.class_names.clone()),
        column("superclass", (0..n).map(|c| ev.super_name(c)).collect::<Vec<_>>()),
    ];
    cols.extend(score_columns(&s));
    cols.push(column("top5_accuracy", (0..n).map(|c| ratio(top5[c], s[c].support)).collect::<Vec<_>>()));
    Ok(DataFrame::new_infer_height(cols)?)
}

/// One row per superclass: its metrics on superclass-level predictions, and the mean accuracy and F1 of
/// its member classes.
pub fn per_superclass(ev: &Evaluation) -> anyhow::Result<DataFrame> {
    let h = ev.hierarchy()?;
    let s = super_confusion(ev)?.scores();
    let cls = class_confusion(ev).scores();
    let members: Vec<Vec<usize>> = (0..h.num_super()).map(|g| h.members(g)).collect();
    let mut cols = vec![
        column("superclass_id", (0..h.num_super() as u32).collect::<Vec<_>>()),
        column("superclass", h.super_names.clone()),
        column("classes", members.iter().map(|m| m.len() as u32).collect::<Vec<_>>()),
    ];
    cols.extend(score_columns(&s));
    cols.push(column(
        "class_accuracy_mean",
        members.iter().map(|m| mean(m.iter().map(|&c| cls[c].recall))).collect::<Vec<_>>(),
    ));
    cols.push(column("class_f1_mean", members.iter().map(|m| mean(m.iter().map(|&c| cls[c].f1))).collect::<Vec<_>>()));
    Ok(DataFrame::new_infer_height(cols)?)
}

/// Overall numbers of one model, as a one-row frame: accuracy, top-5, micro and macro P/R/F1,
/// superclass accuracy (when there is a hierarchy), parameters.
pub fn overall(ev: &Evaluation) -> anyhow::Result<DataFrame> {
    let c = class_confusion(ev);
    let s = c.scores();
    let correct: u64 = s.iter().map(|x| x.correct).sum();
    let micro = ratio(correct, c.total());
    let super_acc = match &ev.hierarchy {
        Some(_) => {
            let sc = super_confusion(ev)?;
            ratio((0..sc.n).map(|g| sc.get(g, g)).sum(), sc.total())
        }
        None => f64::NAN,
    };
    Ok(DataFrame::new_infer_height(vec![
        column("model", vec![ev.name.clone()]),
        column("arch", vec![ev.arch.clone()]),
        column("params", vec![ev.params as u64]),
        column("images", vec![c.total()]),
        column("accuracy", vec![micro]),
        column("top5_accuracy", vec![ev.predictions.top_k_accuracy(5)]),
        column("superclass_accuracy", vec![super_acc]),
        column("micro_precision", vec![micro]),
        column("micro_recall", vec![micro]),
        column("micro_f1", vec![micro]),
        column("macro_precision", vec![mean(s.iter().map(|x| x.precision))]),
        column("macro_recall", vec![mean(s.iter().map(|x| x.recall))]),
        column("macro_f1", vec![mean(s.iter().map(|x| x.f1))]),
    ])?)
}

fn confusion_long(c: &Confusion, names: &[String], key: &str) -> anyhow::Result<DataFrame> {
    let n = c.n;
    let support: Vec<u64> = (0..n).map(|t| (0..n).map(|p| c.get(t, p)).sum()).collect();
    let pairs: Vec<(usize, usize)> = (0..n).flat_map(|t| (0..n).map(move |p| (t, p))).collect();
    Ok(DataFrame::new_infer_height(vec![
        column(&format!("true_{key}_id"), pairs.iter().map(|&(t, _)| t as u32).collect::<Vec<_>>()),
        column(&format!("true_{key}"), pairs.iter().map(|&(t, _)| names[t].clone()).collect::<Vec<_>>()),
        column(&format!("predicted_{key}_id"), pairs.iter().map(|&(_, p)| p as u32).collect::<Vec<_>>()),
        column(&format!("predicted_{key}"), pairs.iter().map(|&(_, p)| names[p].clone()).collect::<Vec<_>>()),
        column("count", pairs.iter().map(|&(t, p)| c.get(t, p)).collect::<Vec<_>>()),
        column("rate", pairs.iter().map(|&(t, p)| ratio(c.get(t, p), support[t])).collect::<Vec<_>>()),
    ])?)
}

/// The class confusion matrix in long form: every (true, predicted) pair with its count and its rate
/// (count / images of the true class), rows in true-major order.
pub fn confusion(ev: &Evaluation) -> anyhow::Result<DataFrame> {
    confusion_long(&class_confusion(ev), &ev.class_names, "class")
}

/// The superclass confusion matrix in long form.
pub fn superclass_confusion(ev: &Evaluation) -> anyhow::Result<DataFrame> {
    confusion_long(&super_confusion(ev)?, &ev.hierarchy()?.super_names, "superclass")
}

/// The `n` most frequent mistakes (off-diagonal confusion pairs, most frequent first; ties in
/// true-then-predicted order), in the long form of [`confusion`].
pub fn top_confusions(ev: &Evaluation, n: usize) -> anyhow::Result<DataFrame> {
    let c = class_confusion(ev);
    let mut pairs: Vec<(usize, usize)> =
        (0..c.n).flat_map(|t| (0..c.n).map(move |p| (t, p))).filter(|&(t, p)| t != p && c.get(t, p) > 0).collect();
    pairs.sort_by_key(|&(t, p)| (std::cmp::Reverse(c.get(t, p)), t, p));
    pairs.truncate(n);
    let support: Vec<u64> = (0..c.n).map(|t| (0..c.n).map(|p| c.get(t, p)).sum()).collect();
    let names = &ev.class_names;
    Ok(DataFrame::new_infer_height(vec![
        column("true_class", pairs.iter().map(|&(t, _)| names[t].clone()).collect::<Vec<_>>()),
        column("predicted_class", pairs.iter().map(|&(_, p)| names[p].clone()).collect::<Vec<_>>()),
        column("same_superclass", pairs.iter().map(|&(t, p)| ev.super_name(t) == ev.super_name(p)).collect::<Vec<_>>()),
        column("count", pairs.iter().map(|&(t, p)| c.get(t, p)).collect::<Vec<_>>()),
        column("rate", pairs.iter().map(|&(t, p)| ratio(c.get(t, p), support[t])).collect::<Vec<_>>()),
    ])?)
}

/// The class confusion counts as a dense matrix (rows: true class).
pub fn confusion_matrix(ev: &Evaluation) -> Confusion {
    class_confusion(ev)
}

/// Per image: whether teacher and student predict the same class, and KL(teacher ‖ student) of their
/// softmax outputs (temperature 1).
fn pairwise(teacher: &Evaluation, student: &Evaluation) -> anyhow::Result<(Vec<bool>, Vec<f64>)> {
    let (t, s) = (&teacher.predictions, &student.predictions);
    ensure!(
        t.labels == s.labels && t.num_classes == s.num_classes,
        "'{}' and '{}' were evaluated on different images or class sets",
        teacher.name,
        student.name
    );
    let (pt, ps) = (t.probabilities(), s.probabilities());
    let k = t.num_classes;
    let agree = t.logits.chunks(k).zip(s.logits.chunks(k)).map(|(a, b)| argmax(a) == argmax(b)).collect();
    let kls = pt.chunks(k).zip(ps.chunks(k)).map(|(a, b)| kl(a, b)).collect();
    Ok((agree, kls))
}

const COMPARED: [&str; 4] = ["accuracy", "precision", "recall", "f1"];

fn compare_frames(
    key: &str,
    t: &DataFrame,
    s: &DataFrame,
    groups: &[usize],
    agree: &[bool],
    kls: &[f64],
) -> anyhow::Result<DataFrame> {
    let n = t.height();
    let mut cols: Vec<Column> = vec![t.column(key)?.clone(), t.column("support")?.clone()];
    if key == "class" {
        cols.insert(1, t.column("superclass")?.clone());
    }
    for m in COMPARED {
        let (a, b) = (t.column(m)?.f64()?, s.column(m)?.f64()?);
        let a: Vec<f64> = a.into_no_null_iter().collect();
        let b: Vec<f64> = b.into_no_null_iter().collect();
        cols.push(column(&format!("teacher_{m}"), a.clone()));
        cols.push(column(&format!("student_{m}"), b.clone()));
        cols.push(column(&format!("delta_{m}"), a.iter().zip(&b).map(|(x, y)| y - x).collect::<Vec<_>>()));
    }
    let mut agree_n = vec![0u64; n];
    let mut kl_sum = vec![0.0f64; n];
    let mut count = vec![0u64; n];
    for ((&g, &a), &k) in groups.iter().zip(agree).zip(kls) {
        agree_n[g] += a as u64;
        kl_sum[g] += k;
        count[g] += 1;
    }
    cols.push(column("agreement", (0..n).map(|g| ratio(agree_n[g], count[g])).collect::<Vec<_>>()));
    cols.push(column(
        "kl_teacher_student",
        (0..n).map(|g| if count[g] == 0 { 0.0 } else { kl_sum[g] / count[g] as f64 }).collect::<Vec<_>>(),
    ));
    Ok(DataFrame::new_infer_height(cols)?)
}

/// Teacher vs student per class: both models' accuracy, precision, recall and F1 with the deltas
/// (student − teacher), the top-1 agreement of the two models on the class's images and the mean
/// KL(teacher ‖ student) on them.
pub fn compare_classes(teacher: &Evaluation, student: &Evaluation) -> anyhow::Result<DataFrame> {
    let (agree, kls) = pairwise(teacher, student)?;
    compare_frames("class", &per_class(teacher)?, &per_class(student)?, &teacher.predictions.labels, &agree, &kls)
}

/// Teacher vs student per superclass (superclass-level metrics; agreement and KL over its images).
pub fn compare_superclasses(teacher: &Evaluation, student: &Evaluation) -> anyhow::Result<DataFrame> {
    let (agree, kls) = pairwise(teacher, student)?;
    let h = teacher.hierarchy()?;
    let groups: Vec<usize> = teacher.predictions.labels.iter().map(|&c| h.class_to_super[c]).collect();
    compare_frames("superclass", &per_superclass(teacher)?, &per_superclass(student)?, &groups, &agree, &kls)
}

#[cfg(test)]
mod tests;
