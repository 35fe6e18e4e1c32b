//! Distance covariance and correlation (Székely, Rizzo & Bakirov 2007; Székely & Rizzo 2014), the
//! statistics behind UniCAM's FSS and RS scores.
//!
//! A sample is `n` points of dimension `d`, row-major (`x.len() == n * d`); `a_ij = ‖x_i − x_j‖₂`.
//! - **Biased (V-statistic)**: double-centred `A_ij = a_ij − ā_i· − ā_·j + ā_··`;
//!   `dCov²_n(x, y) = (1/n²) Σ_ij A_ij B_ij`, `dCor²_n = dCov²_n(x, y) / √(dCov²_n(x, x) dCov²_n(y, y))`
//!   (0 when the denominator is 0), `dCor_n = √dCor²_n`.
//! - **U-centred (bias-corrected)**: `Ã_ij = a_ij − Σ_l a_il/(n−2) − Σ_k a_kj/(n−2) + Σ_kl a_kl/((n−1)(n−2))`
//!   for `i ≠ j`, `Ã_ii = 0`; `(Ã · B̃) = Σ_{i≠j} Ã_ij B̃_ij / (n(n−3))` is the unbiased `dCov²`;
//!   `R*(x, y) = (Ã · B̃) / √((Ã · Ã)(B̃ · B̃))`, clipped to [−1, 1] (needs n > 3).
//! - **Partial distance correlation**: `R*(x, y; z) = (R*_xy − R*_xz R*_yz) / √((1 − R*_xz²)(1 − R*_yz²))`
//!   (0 when the denominator is 0).
//!
//! These equal the `dcor` Python package's `distance_covariance_sqr`, `distance_correlation(_sqr)`,
//! `u_distance_covariance_sqr`, `u_distance_correlation_sqr` and `partial_distance_correlation`
//! (tested against values it computed, `tests/fixtures/dcor_reference.json`).

/// Pairwise Euclidean distances of the rows of `x` (`n × d`), as an `n × n` matrix.
pub fn distance_matrix(x: &[f32], d: usize) -> Vec<f64> {
    assert!(d > 0 && x.len().is_multiple_of(d), "sample of {} values is not a whole number of {d}-dim points", x.len());
    let n = x.len() / d;
    let mut m = vec![0.0f64; n * n];
    for i in 0..n {
        for j in i + 1..n {
            let s: f64 = (0..d).map(|k| (x[i * d + k] as f64 - x[j * d + k] as f64).powi(2)).sum();
            m[i * n + j] = s.sqrt();
            m[j * n + i] = s.sqrt();
        }
    }
    m
}

fn row_means(a: &[f64], n: usize, denom: f64) -> (Vec<f64>, f64) {
    let rows: Vec<f64> = (0..n).map(|i| a[i * n..(i + 1) * n].iter().sum::<f64>() / denom).collect();
    let total = a.iter().sum::<f64>();
    (rows, total)
}

/// Double-centred distance matrix (biased estimator).
fn double_centered(a: &[f64], n: usize) -> Vec<f64> {
    let (r, total) = row_means(a, n, n as f64);
    let grand = total / (n * n) as f64;
    // a is symmetric: column means equal row means.
    (0..n * n).map(|ij| a[ij] - r[ij / n] - r[ij % n] + grand).collect()
}

/// U-centred distance matrix (bias-corrected estimator).
fn u_centered(a: &[f64], n: usize) -> Vec<f64> {
    assert!(n > 3, "U-centred statistics need more than 3 points, got {n}");
    let (r, total) = row_means(a, n, (n - 2) as f64);
    let grand = total / ((n - 1) * (n - 2)) as f64;
    (0..n * n).map(|ij| if ij / n == ij % n { 0.0 } else { a[ij] - r[ij / n] - r[ij % n] + grand }).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn ratio(num: f64, den_sqr: f64) -> f64 {
    if den_sqr > 0.0 {
        num / den_sqr.sqrt()
    } else {
        0.0
    }
}

fn points(x: &[f32], d: usize) -> usize {
    x.len() / d
}

/// Biased squared distance covariance `dCov²_n(x, y)`.
pub fn distance_covariance_sqr(x: &[f32], dx: usize, y: &[f32], dy: usize) -> f64 {
    let n = points(x, dx);
    assert_eq!(n, points(y, dy), "samples of different sizes");
    let (a, b) = (double_centered(&distance_matrix(x, dx), n), double_centered(&distance_matrix(y, dy), n));
    dot(&a, &b) / (n * n) as f64
}

/// Biased squared distance correlation `dCor²_n(x, y)` in [0, 1].
pub fn distance_correlation_sqr(x: &[f32], dx: usize, y: &[f32], dy: usize) -> f64 {
    let n = points(x, dx);
    assert_eq!(n, points(y, dy), "samples of different sizes");
    let (a, b) = (double_centered(&distance_matrix(x, dx), n), double_centered(&distance_matrix(y, dy), n));
    ratio(dot(&a, &b), dot(&a, &a) * dot(&b, &b))
}

/// Biased distance correlation `dCor_n(x, y) = √dCor²_n`.
pub fn distance_correlation(x: &[f32], dx: usize, y: &[f32], dy: usize) -> f64 {
    distance_correlation_sqr(x, dx, y, dy).max(0.0).sqrt()
}

/// U-centred matrices of a sample and the inner product `(Ã · B̃)`.
struct U {
    n: usize,
    m: Vec<f64>,
}

impl U {
    fn new(x: &[f32], d: usize) -> Self {
        let n = points(x, d);
        Self { n, m: u_centered(&distance_matrix(x, d), n) }
    }

    fn product(&self, o: &U) -> f64 {
        assert_eq!(self.n, o.n, "samples of different sizes");
        dot(&self.m, &o.m) / (self.n * (self.n - 3)) as f64
    }

    fn correlation(&self, o: &U) -> f64 {
        ratio(self.product(o), self.product(self) * o.product(o)).clamp(-1.0, 1.0)
    }
}

/// Unbiased squared distance covariance `(Ã · B̃)`.
pub fn u_distance_covariance_sqr(x: &[f32], dx: usize, y: &[f32], dy: usize) -> f64 {
    U::new(x, dx).product(&U::new(y, dy))
}

/// Bias-corrected squared distance correlation `R*(x, y)` in [−1, 1].
pub fn u_distance_correlation_sqr(x: &[f32], dx: usize, y: &[f32], dy: usize) -> f64 {
    U::new(x, dx).correlation(&U::new(y, dy))
}

/// Partial distance correlation `R*(x, y; z)`.
pub fn partial_distance_correlation(x: &[f32], dx: usize, y: &[f32], dy: usize, z: &[f32], dz: usize) -> f64 {
    let (a, b, c) = (U::new(x, dx), U::new(y, dy), U::new(z, dz));
    let (rxy, rxz, ryz) = (a.correlation(&b), a.correlation(&c), b.correlation(&c));
    let den = (1.0 - rxz * rxz).sqrt() * (1.0 - ryz * ryz).sqrt();
    if den != 0.0 {
        (rxy - rxz * ryz) / den
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Reference {
        x: Vec<Vec<f64>>,
        y: Vec<Vec<f64>>,
        z: Vec<Vec<f64>>,
        distance_covariance_sqr: f64,
        distance_correlation_sqr: f64,
        distance_correlation: f64,
        u_distance_covariance_sqr: f64,
        u_distance_correlation_sqr: f64,
        partial_distance_correlation: f64,
    }

    fn flat(v: &[Vec<f64>]) -> (Vec<f32>, usize) {
        (v.iter().flatten().map(|&x| x as f32).collect(), v[0].len())
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 2e-6 * b.abs().max(1.0), "{a} vs {b}");
    }

    #[test]
    fn matches_the_dcor_package() {
        let r: Reference = serde_json::from_str(include_str!("../../tests/fixtures/dcor_reference.json")).unwrap();
        let ((x, dx), (y, dy), (z, dz)) = (flat(&r.x), flat(&r.y), flat(&r.z));
        close(distance_covariance_sqr(&x, dx, &y, dy), r.distance_covariance_sqr);
        close(distance_correlation_sqr(&x, dx, &y, dy), r.distance_correlation_sqr);
        close(distance_correlation(&x, dx, &y, dy), r.distance_correlation);
        close(u_distance_covariance_sqr(&x, dx, &y, dy), r.u_distance_covariance_sqr);
        close(u_distance_correlation_sqr(&x, dx, &y, dy), r.u_distance_correlation_sqr);
        close(partial_distance_correlation(&x, dx, &y, dy, &z, dz), r.partial_distance_correlation);
    }

    #[test]
    fn hand_computed_and_limits() {
        // x = (0, 1, 2), y = 2x: distances scale by 2, so dCor = 1 and dCov² = 2·dVar²(x).
        // a = [[0,1,2],[1,0,1],[2,1,0]], row means (1, 2/3, 1), grand mean 8/9, so
        // A = [[−10, 2, 8], [2, −4, 2], [8, 2, −10]] / 9 and dVar² = Σ A² / 9.
        let x = [0.0f32, 1.0, 2.0];
        let y = [0.0f32, 2.0, 4.0];
        let a = [[-10., 2., 8.], [2., -4., 2.], [8., 2., -10.]].map(|r| r.map(|v: f64| v / 9.0));
        let dvar: f64 = a.iter().flatten().map(|v| v * v).sum::<f64>() / 9.0;
        close(distance_covariance_sqr(&x, 1, &x, 1), dvar);
        close(distance_covariance_sqr(&x, 1, &y, 1), 2.0 * dvar);
        close(distance_correlation(&x, 1, &y, 1), 1.0);
        // A constant sample has no distance variance: correlation 0 by definition.
        assert_eq!(distance_correlation(&x, 1, &[5.0; 3], 1), 0.0);
        // Partial correlation of y with itself given an independent-looking z stays near 1.
        let xs: Vec<f32> = (0..12).map(|i| (i as f32 * 0.7).sin()).collect();
        let zs: Vec<f32> = (0..12).map(|i| ((i * 7 % 12) as f32).cos()).collect();
        close(partial_distance_correlation(&xs, 1, &xs, 1, &zs, 1), 1.0);
    }
}
