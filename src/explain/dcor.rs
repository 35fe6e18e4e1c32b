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

/// Partial distance correlation `R*(x, y; z)` and its gradient with respect to the points `x`
/// (`n × dx`, row-major), from the projection form of Székely & Rizzo (2014):
/// `P_z⊥(x) = Ã − ((Ã·C̃)/(C̃·C̃)) C̃`, `R* = (P_z⊥(x)·P_z⊥(y)) / (|P_z⊥(x)| |P_z⊥(y)|)`, which equals
/// [`partial_distance_correlation`]. UniCAM back-propagates this gradient into a network. Points at
/// distance 0 from each other contribute no gradient (the distance is not differentiable there).
pub fn partial_distance_correlation_grad(
    x: &[f32],
    dx: usize,
    y: &[f32],
    dy: usize,
    z: &[f32],
    dz: usize,
) -> (f64, Vec<f32>) {
    let n = points(x, dx);
    assert!(n == points(y, dy) && n == points(z, dz), "samples of different sizes");
    let ax = distance_matrix(x, dx);
    let (a, b, c) = (u_centered(&ax, n), U::new(y, dy).m, U::new(z, dz).m);
    let cc = dot(&c, &c);
    let project = |m: &[f64]| -> Vec<f64> {
        let k = if cc > 0.0 { dot(m, &c) / cc } else { 0.0 };
        m.iter().zip(&c).map(|(v, w)| v - k * w).collect()
    };
    let (px, py) = (project(&a), project(&b));
    let (nx, ny) = (dot(&px, &px), dot(&py, &py));
    if nx <= 0.0 || ny <= 0.0 {
        return (0.0, vec![0.0; x.len()]);
    }
    let r = dot(&px, &py) / (nx * ny).sqrt();
    // dR/dP_x, which is already orthogonal to C̃ (so it is also dR/dÃ).
    let h: Vec<f64> = px.iter().zip(&py).map(|(p, q)| q / (nx * ny).sqrt() - r * p / nx).collect();
    // Adjoint of U-centring (h has a zero diagonal, like every U-centred matrix).
    let rows: Vec<f64> = (0..n).map(|i| h[i * n..(i + 1) * n].iter().sum()).collect();
    let total: f64 = rows.iter().sum();
    let (d2, d12) = ((n - 2) as f64, ((n - 1) * (n - 2)) as f64);
    let mut grad = vec![0.0f32; x.len()];
    for i in 0..n {
        for j in 0..n {
            let dist = ax[i * n + j];
            if i == j || dist <= 0.0 {
                continue;
            }
            let ga = h[i * n + j] - rows[i] / d2 - rows[j] / d2 + total / d12;
            // a_ij and a_ji both depend on x_i; the matrix is symmetric, hence the factor 2.
            let f = 2.0 * ga / dist;
            for k in 0..dx {
                grad[i * dx + k] += (f * (x[i * dx + k] as f64 - x[j * dx + k] as f64)) as f32;
            }
        }
    }
    (r, grad)
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

    /// The analytic gradient of the partial distance correlation matches central finite differences,
    /// and its value matches the formula-based estimator.
    #[test]
    fn partial_distance_correlation_gradient_matches_finite_differences() {
        let mut v = 0.37f64;
        let mut next = || {
            v = (v * 9301.0 + 49297.0) % 233280.0;
            (v / 233280.0) as f32 * 2.0 - 1.0
        };
        let (n, dx) = (8, 3);
        let x: Vec<f32> = (0..n * dx).map(|_| next()).collect();
        let y: Vec<f32> = (0..n * 2).map(|_| next()).collect();
        let z: Vec<f32> = (0..n * 4).map(|_| next()).collect();
        let (r, g) = partial_distance_correlation_grad(&x, dx, &y, 2, &z, 4);
        close(r, partial_distance_correlation(&x, dx, &y, 2, &z, 4));
        let f = |x: &[f32]| partial_distance_correlation(x, dx, &y, 2, &z, 4);
        let h = 1e-3f32;
        for k in 0..x.len() {
            let (mut p, mut m) = (x.clone(), x.clone());
            p[k] += h;
            m[k] -= h;
            let fd = (f(&p) - f(&m)) / (2.0 * h as f64);
            assert!((fd - g[k] as f64).abs() < 2e-3 + 1e-2 * fd.abs(), "coordinate {k}: fd {fd} vs {}", g[k]);
        }
        assert!(g.iter().any(|v| v.abs() > 1e-2), "a non-trivial gradient");
    }
}
