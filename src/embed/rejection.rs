//! Confidence measures and accuracy-vs-data-kept rejection curves: sort the points by a confidence
//! measure, keep the most confident fraction, and report the accuracy of what is kept. A better
//! confidence measure gives a curve that rises more steeply as data is rejected.
use anyhow::ensure;

use super::divergence::entropy;

/// The model's maximum probability per row (`n × c`).
pub fn max_probability(probs: &[f32], c: usize) -> Vec<f64> {
    probs.chunks(c).map(|r| r.iter().cloned().fold(0.0f32, f32::max) as f64).collect()
}

/// Negative predictive entropy per row (higher = more confident).
pub fn negative_entropy(probs: &[f32], c: usize) -> Vec<f64> {
    probs.chunks(c).map(|r| -entropy(r)).collect()
}

/// Accuracy of the `m = ⌈s·n/steps⌉` most confident points for `f = 1/steps, 2/steps, …, 1`; returns
/// `(f, accuracy)` pairs. Equal confidences keep the lower index first.
pub fn rejection_curve(confidence: &[f64], correct: &[bool], steps: usize) -> anyhow::Result<Vec<(f64, f64)>> {
    ensure!(confidence.len() == correct.len(), "{} confidences but {} outcomes", confidence.len(), correct.len());
    ensure!(!correct.is_empty() && steps > 0, "a rejection curve needs points and steps");
    ensure!(confidence.iter().all(|v| !v.is_nan()), "a confidence is NaN");
    let n = correct.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| confidence[b].total_cmp(&confidence[a]).then(a.cmp(&b)));
    let mut cum = vec![0usize; n + 1];
    for (r, &i) in order.iter().enumerate() {
        cum[r + 1] = cum[r] + correct[i] as usize;
    }
    Ok((1..=steps)
        .map(|s| {
            let f = s as f64 / steps as f64;
            let m = (s * n).div_ceil(steps).clamp(1, n);
            (f, cum[m] as f64 / m as f64)
        })
        .collect())
}
