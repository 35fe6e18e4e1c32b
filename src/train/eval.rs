use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::{make_batch, Dataset};
use crate::models::Model;

/// A model's outputs on a dataset split: labels, logits and (derived) probabilities.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Predictions {
    pub num_classes: usize,
    pub labels: Vec<usize>,
    /// Row-major `(n, num_classes)` logits.
    pub logits: Vec<f32>,
}

impl Predictions {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    pub fn logits_row(&self, i: usize) -> &[f32] {
        &self.logits[i * self.num_classes..(i + 1) * self.num_classes]
    }
    /// Softmax probabilities, row-major.
    pub fn probabilities(&self) -> Vec<f32> {
        let k = self.num_classes;
        let mut p = self.logits.clone();
        p.par_chunks_mut(k).for_each(|row| {
            let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let mut s = 0.0;
            for v in row.iter_mut() {
                *v = (*v - m).exp();
                s += *v;
            }
            row.iter_mut().for_each(|v| *v /= s);
        });
        p
    }
    /// Arg-max class of each sample (the first of equal maxima).
    pub fn predicted(&self) -> Vec<usize> {
        self.logits.chunks(self.num_classes).map(argmax).collect()
    }
    pub fn accuracy(&self) -> f64 {
        count_correct(&self.logits, self.num_classes, &self.labels) as f64 / self.len().max(1) as f64
    }
    /// Fraction of samples whose label is among the `k` highest logits.
    pub fn top_k_accuracy(&self, k: usize) -> f64 {
        let hits = self
            .logits
            .chunks(self.num_classes)
            .zip(&self.labels)
            .filter(|(row, &l)| row.iter().filter(|&&v| v > row[l]).count() < k)
            .count();
        hits as f64 / self.len().max(1) as f64
    }
    /// Mean cross-entropy of the logits against the labels.
    pub fn mean_loss(&self) -> f64 {
        let total: f64 = self
            .logits
            .chunks(self.num_classes)
            .zip(&self.labels)
            .map(|(row, &l)| {
                let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
                let lse = m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
                lse - row[l] as f64
            })
            .sum();
        total / self.len().max(1) as f64
    }
}

pub(crate) fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

pub(crate) fn count_correct(logits: &[f32], k: usize, labels: &[usize]) -> usize {
    logits.chunks(k).zip(labels).filter(|(row, &l)| argmax(row) == l).count()
}

/// Runs `model` in evaluation mode over `data` in batches of `batch` (no augmentation).
pub fn evaluate(model: &Model, data: &Dataset, batch: usize) -> Predictions {
    crate::perf::tune_allocator();
    let mut logits = Vec::with_capacity(data.len() * model.spec.num_classes);
    let idx: Vec<usize> = (0..data.len()).collect();
    for chunk in idx.chunks(batch.max(1)) {
        let b = make_batch(data, chunk, None);
        logits.extend_from_slice(model.logits(b.x).data());
    }
    Predictions { num_classes: model.spec.num_classes, labels: data.labels.clone(), logits }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_topk_and_loss_hand_computed() {
        let p = Predictions { num_classes: 3, labels: vec![0, 2], logits: vec![2.0, 1.0, 0.0, 0.0, 1.0, 0.5] };
        assert_eq!(p.predicted(), vec![0, 1]);
        assert_eq!(p.accuracy(), 0.5);
        assert_eq!(p.top_k_accuracy(2), 1.0);
        assert_eq!(p.top_k_accuracy(1), 0.5);
        let lse0 = (2f64.exp() + 1f64.exp() + 1.0).ln();
        let lse1 = (1.0 + 1f64.exp() + 0.5f64.exp()).ln();
        assert!((p.mean_loss() - ((lse0 - 2.0) + (lse1 - 0.5)) / 2.0).abs() < 1e-9);
        let pr = p.probabilities();
        assert!((pr[0] as f64 - 2f64.exp() / lse0.exp()).abs() < 1e-6);
    }
}
