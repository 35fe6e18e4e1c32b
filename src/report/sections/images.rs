//! The test-image corpus: the first images of each class with both models' top-5 and a thumbnail,
//! filtered and opened by the page script.
use serde_json::{json, Value};

use crate::data::Dataset;
use crate::metrics::Evaluation;
use crate::notebook;
use crate::report::{Page, Section};

pub(crate) fn top5(probs: &[f32]) -> Vec<(usize, f32)> {
    let mut idx: Vec<usize> = (0..probs.len()).collect();
    idx.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    idx.into_iter().take(5).map(|k| (k, (probs[k] * 10000.0).round() / 10000.0)).collect()
}

/// Test-set indices of the first `per_class` images of each class, in test-set order.
pub fn corpus_indices(test: &Dataset, per_class: usize) -> Vec<usize> {
    let mut taken = vec![0usize; test.num_classes()];
    let mut out = vec![];
    for (i, &c) in test.labels.iter().enumerate() {
        if taken[c] < per_class {
            taken[c] += 1;
            out.push(i);
        }
    }
    out
}

/// The first `per_class` test images of each class, with both models' top-5 and a PNG thumbnail.
pub(crate) fn corpus(test: &Dataset, t: &Evaluation, s: &Evaluation, per_class: usize) -> Vec<Value> {
    let (pt, ps) = (t.predictions.probabilities(), s.predictions.probabilities());
    let k = t.num_classes();
    let mut out = vec![];
    for i in corpus_indices(test, per_class) {
        let c = test.labels[i];
        let png = notebook::image(&test.rgb_image(i)).base64();
        out.push(json!({
            "i": i, "c": c, "png": png,
            "t": top5(&pt[i * k..(i + 1) * k]), "s": top5(&ps[i * k..(i + 1) * k]),
        }));
    }
    out
}

/// The image corpus section: `corpus` (from [`corpus`]) for the page script.
pub struct Images {
    pub corpus: Vec<Value>,
    pub per_class: usize,
}

impl Section for Images {
    fn anchor(&self) -> &str {
        "corpus-sec"
    }
    fn nav(&self) -> &str {
        "images"
    }
    fn render(&self, page: &mut Page) -> anyhow::Result<String> {
        page.data.insert("corpus".into(), Value::Array(self.corpus.clone()));
        let mut ctx = tera::Context::new();
        ctx.insert("per_class", &self.per_class);
        page.partial("images.html", self.anchor(), ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top5_is_sorted_and_stable() {
        assert_eq!(top5(&[0.1, 0.3, 0.3, 0.05, 0.2, 0.05]), vec![(1, 0.3), (2, 0.3), (4, 0.2), (0, 0.1), (3, 0.05)]);
    }
}
