//! A model's outputs on a split ([`Predictions`]: labels and logits) and the functions of logits every
//! analysis shares, each written once: softmax, log-softmax, arg-max, KL divergence. Predictions are the
//! hand-off point of the data flow (dataset → run → **predictions** → frames → report): they can be saved
//! ([`save`]) and read back ([`load`]), so frames and reports can also be built from predictions made
//! elsewhere.
use std::path::Path;

use anyhow::Context;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

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
        softmax_rows(&self.logits, self.num_classes)
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
        let lp = log_softmax_rows(&self.logits, self.num_classes, 1.0);
        let total: f64 = lp.chunks(self.num_classes).zip(&self.labels).map(|(row, &l)| -row[l]).sum();
        total / self.len().max(1) as f64
    }
}

/// Softmax of each row of a row-major `n × k` matrix, in f32 (rows in parallel).
pub fn softmax_rows(x: &[f32], k: usize) -> Vec<f32> {
    let mut p = x.to_vec();
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

/// Normalises `a` in place to log-probabilities (`a − logsumexp(a)`, max-shifted) and returns the
/// log-sum-exp.
pub fn log_softmax_in_place(a: &mut [f64]) -> f64 {
    let m = a.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let lse = m + a.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
    a.iter_mut().for_each(|v| *v -= lse);
    lse
}

/// `log softmax(a)` of one vector.
pub fn log_softmax(a: &[f64]) -> Vec<f64> {
    let mut l = a.to_vec();
    log_softmax_in_place(&mut l);
    l
}

/// `log softmax(x / t)` of each row of a row-major `n × k` matrix, computed and returned in f64.
pub fn log_softmax_rows(x: &[f32], k: usize, t: f64) -> Vec<f64> {
    assert!(k > 0 && x.len().is_multiple_of(k), "logits of length {} are not rows of {k}", x.len());
    assert!(t > 0.0, "temperature must be positive, got {t}");
    let mut out: Vec<f64> = x.iter().map(|&v| v as f64 / t).collect();
    out.chunks_mut(k).for_each(|row| {
        log_softmax_in_place(row);
    });
    out
}

/// Index of the largest value (the first of equal maxima).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// How many rows of `logits` (`k` wide) have their arg-max at the label.
pub fn count_correct(logits: &[f32], k: usize, labels: &[usize]) -> usize {
    logits.chunks(k).zip(labels).filter(|(row, &l)| argmax(row) == l).count()
}

/// `KL(p ‖ q) = Σ p log(p/q)` of two probability rows, in nats (terms with `p = 0` count 0).
pub fn kl(p: &[f32], q: &[f32]) -> f64 {
    p.iter()
        .zip(q)
        .filter(|(&a, _)| a > 0.0)
        .map(|(&a, &b)| a as f64 * ((a as f64).ln() - (b.max(1e-30) as f64).ln()))
        .sum()
}

/// Writes test logits (`f32 [n, classes]`) and labels (`i64 [n]`) as a safetensors file (atomically).
pub fn save(path: &Path, p: &Predictions) -> anyhow::Result<()> {
    use safetensors::tensor::{Dtype, TensorView};
    let logits: Vec<u8> = p.logits.iter().flat_map(|v| v.to_le_bytes()).collect();
    let labels: Vec<u8> = p.labels.iter().flat_map(|&v| (v as i64).to_le_bytes()).collect();
    let views = vec![
        ("logits", TensorView::new(Dtype::F32, vec![p.len(), p.num_classes], &logits)?),
        ("labels", TensorView::new(Dtype::I64, vec![p.len()], &labels)?),
    ];
    let bytes = safetensors::serialize(views, &None)?;
    crate::io::write_atomic(path, &bytes)
}

/// Reads [`save`]'s file.
pub fn load(path: &Path) -> anyhow::Result<Predictions> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{}: not safetensors", path.display()))?;
    let l = st.tensor("logits").with_context(|| format!("{}: no logits", path.display()))?;
    let shape = l.shape().to_vec();
    anyhow::ensure!(shape.len() == 2, "{}: logits must be 2-D, got {shape:?}", path.display());
    let logits = l.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let labels = st
        .tensor("labels")
        .with_context(|| format!("{}: no labels", path.display()))?
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as usize)
        .collect();
    Ok(Predictions { num_classes: shape[1], labels, logits })
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

    /// log-softmax at temperature 2 of `[2, 0]` is `[1, 0] − ln(e + 1)`; KL of a row with itself is 0
    /// and of `[1, 0]` against `[½, ½]` is ln 2.
    #[test]
    fn log_softmax_and_kl_hand_values() {
        let l = log_softmax_rows(&[2.0, 0.0, 0.0, 0.0], 2, 2.0);
        let lse = (1f64.exp() + 1.0).ln();
        assert!((l[0] - (1.0 - lse)).abs() < 1e-12 && (l[1] + lse).abs() < 1e-12);
        assert!((l[2] - 0.5f64.ln()).abs() < 1e-12);
        assert_eq!(kl(&[0.3, 0.7], &[0.3, 0.7]), 0.0);
        assert!((kl(&[1.0, 0.0], &[0.5, 0.5]) - 2f64.ln()).abs() < 1e-12);
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
    }

    #[test]
    fn save_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = Predictions { num_classes: 2, labels: vec![1, 0], logits: vec![0.5, -1.0, 2.0, 3.25] };
        let path = dir.path().join("p.safetensors");
        save(&path, &p).unwrap();
        assert_eq!(load(&path).unwrap(), p);
    }
}
