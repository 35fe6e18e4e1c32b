//! Gaussian kernel density estimation on 2-D embeddings, with scipy's `gaussian_kde` conventions:
//! the kernel covariance is the data's (unbiased) covariance times `factor²`, where `factor` is
//! Scott's rule `n^(−1/(d+4)) = n^(−1/6)` (in 2-D Silverman's rule `(n(d+2)/4)^(−1/(d+4))` is the same
//! number) or a fixed value; the density at `x` is `(1/n) Σ_j N(x; x_j, Σ)`, the points themselves
//! included.
//!
//! As a confidence measure (DarkSight §5), each point's density is taken under the KDE of the points
//! with the same predicted class: a point far from its own class's cluster is an outlier.
use anyhow::ensure;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// The bandwidth factor.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Bandwidth {
    /// `n^(−1/6)` (scipy's default).
    Scott,
    /// `(n (d + 2) / 4)^(−1/(d + 4))`, equal to Scott's in 2-D.
    Silverman,
    /// A fixed factor.
    Factor(f64),
}

impl Bandwidth {
    pub fn factor(&self, n: usize) -> f64 {
        match *self {
            Bandwidth::Scott => (n as f64).powf(-1.0 / 6.0),
            Bandwidth::Silverman => (n as f64 * 4.0 / 4.0).powf(-1.0 / 6.0),
            Bandwidth::Factor(f) => f,
        }
    }
}

/// A fitted 2-D Gaussian KDE.
#[derive(Clone, Debug)]
pub struct Kde {
    points: Vec<[f64; 2]>,
    /// Inverse of the kernel covariance (symmetric: a, b, c = [[a, b], [b, c]]).
    inv: [f64; 3],
    norm: f64,
    /// Kernel covariance `[[s00, s01], [s01, s11]]`.
    pub covariance: [f64; 3],
}

/// Unbiased covariance `[s00, s01, s11]` of 2-D points.
pub fn covariance(points: &[[f64; 2]]) -> [f64; 3] {
    let n = points.len() as f64;
    let (mx, my) = (points.iter().map(|p| p[0]).sum::<f64>() / n, points.iter().map(|p| p[1]).sum::<f64>() / n);
    let mut c = [0.0; 3];
    for p in points {
        let (dx, dy) = (p[0] - mx, p[1] - my);
        c[0] += dx * dx;
        c[1] += dx * dy;
        c[2] += dy * dy;
    }
    c.map(|v| v / (n - 1.0).max(1.0))
}

impl Kde {
    /// Fits on `points` with the covariance of `points` (at least 3 points, not all on a line).
    pub fn fit(points: &[[f64; 2]], bw: Bandwidth) -> anyhow::Result<Self> {
        ensure!(points.len() >= 3, "KDE needs at least 3 points, got {}", points.len());
        Self::with_data_covariance(points, covariance(points), bw)
    }

    /// Fits on `points` with a given data covariance (scaled by the bandwidth factor of `points.len()`).
    pub fn with_data_covariance(points: &[[f64; 2]], cov: [f64; 3], bw: Bandwidth) -> anyhow::Result<Self> {
        ensure!(!points.is_empty(), "KDE needs at least one point");
        let f2 = bw.factor(points.len()).powi(2);
        let s = cov.map(|v| v * f2);
        let det = s[0] * s[2] - s[1] * s[1];
        ensure!(det > 1e-300 && det.is_finite(), "KDE: the kernel covariance is singular (points on a line?)");
        Ok(Kde {
            points: points.to_vec(),
            inv: [s[2] / det, -s[1] / det, s[0] / det],
            norm: 1.0 / (2.0 * std::f64::consts::PI * det.sqrt() * points.len() as f64),
            covariance: s,
        })
    }

    /// The density at `x`.
    pub fn density(&self, x: [f64; 2]) -> f64 {
        let [a, b, c] = self.inv;
        self.points
            .iter()
            .map(|p| {
                let (dx, dy) = (x[0] - p[0], x[1] - p[1]);
                (-0.5 * (a * dx * dx + 2.0 * b * dx * dy + c * dy * dy)).exp()
            })
            .sum::<f64>()
            * self.norm
    }
}

/// Which points each point's KDE is fitted on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KdeScope {
    /// The points with the same predicted class (the default).
    PredictedClass,
    /// All points.
    All,
}

/// Log KDE density of every point (see the module docs). Classes with fewer than 3 points, or whose
/// points are collinear, use the covariance of all points (scaled by their own bandwidth factor).
pub fn kde_log_density(
    points: &[[f64; 2]],
    predicted: &[usize],
    bw: Bandwidth,
    scope: KdeScope,
) -> anyhow::Result<Vec<f64>> {
    ensure!(points.len() == predicted.len(), "KDE: {} points but {} predictions", points.len(), predicted.len());
    ensure!(points.len() >= 3, "KDE needs at least 3 points, got {}", points.len());
    let all_cov = covariance(points);
    let groups: Vec<Vec<usize>> = match scope {
        KdeScope::All => vec![(0..points.len()).collect()],
        KdeScope::PredictedClass => {
            let k = predicted.iter().max().map_or(0, |m| m + 1);
            let mut g = vec![vec![]; k];
            for (i, &c) in predicted.iter().enumerate() {
                g[c].push(i);
            }
            g
        }
    };
    let mut out = vec![0.0; points.len()];
    for g in groups.iter().filter(|g| !g.is_empty()) {
        let pts: Vec<[f64; 2]> = g.iter().map(|&i| points[i]).collect();
        let kde = match (pts.len() >= 3).then(|| Kde::fit(&pts, bw)) {
            Some(Ok(k)) => k,
            _ => Kde::with_data_covariance(&pts, all_cov, bw)?,
        };
        let dens: Vec<f64> = g.par_iter().map(|&i| kde.density(points[i]).max(f64::MIN_POSITIVE).ln()).collect();
        for (&i, d) in g.iter().zip(dens) {
            out[i] = d;
        }
    }
    Ok(out)
}
