//! Local fidelity `M_k` of a 2-D embedding (DarkSight §5): the mean Jensen-Shannon divergence between
//! each point's prediction vector and those of its `k` nearest neighbours in the plane,
//! `M_k = (1/n) Σ_i (1/k) Σ_{j ∈ kNN_k(i)} JSD(P_i, P_j)` (nats). Lower is better: neighbours in the
//! picture then have similar predictions.
use anyhow::ensure;
use rayon::prelude::*;

use super::divergence::jsd;
use super::knn::knn;

/// `M_1 … M_kmax` (index `k − 1`) of `points` (`n × 2`, flat) for probability rows `probs` (`n × c`).
/// Neighbours are exact (ties by index).
pub fn local_fidelity(points: &[f32], probs: &[f32], c: usize, kmax: usize) -> anyhow::Result<Vec<f64>> {
    let n = points.len() / 2;
    ensure!(points.len() == 2 * n && probs.len() == n * c, "M_k: {n} points but {} probability values", probs.len());
    ensure!(kmax >= 1 && kmax < n, "M_k: k must be between 1 and n − 1 = {}, got {kmax}", n.saturating_sub(1));
    let nn = knn(points, 2, kmax);
    // Per point: cumulative JSD over its first k neighbours.
    let per_point: Vec<Vec<f64>> = (0..n)
        .into_par_iter()
        .map(|i| {
            let pi = &probs[i * c..(i + 1) * c];
            let mut acc = 0.0;
            nn.neighbours(i)
                .iter()
                .map(|&j| {
                    acc += jsd(pi, &probs[j as usize * c..(j as usize + 1) * c]);
                    acc
                })
                .collect()
        })
        .collect();
    Ok((1..=kmax).map(|k| per_point.iter().map(|cum| cum[k - 1] / k as f64).sum::<f64>() / n as f64).collect())
}
