//! The divergences and densities the embeddings use, on plain rows of probabilities.
//!
//! All logarithms are natural.

/// Symmetric KL divergence of two distributions given as log-probabilities, with DarkSight's
/// weighting: `½ KL(P‖Q) + ½ KL(Q‖P) = ½ Σ_c (p_c − q_c)(log p_c − log q_c)`.
pub fn symmetric_kl(log_p: &[f64], log_q: &[f64]) -> f64 {
    assert_eq!(log_p.len(), log_q.len());
    0.5 * log_p.iter().zip(log_q).map(|(&a, &b)| (a.exp() - b.exp()) * (a - b)).sum::<f64>()
}

/// The mean over rows of [`symmetric_kl`] (`n × k` log-probabilities each): DarkSight's objective.
pub fn mean_symmetric_kl(log_p: &[f64], log_q: &[f64], k: usize) -> f64 {
    let n = log_p.len() / k;
    log_p.chunks(k).zip(log_q.chunks(k)).map(|(a, b)| symmetric_kl(a, b)).sum::<f64>() / n.max(1) as f64
}

/// Log density of the 2-D Student-t distribution with 2 degrees of freedom, mean `mu` and isotropic
/// precision matrix `h·I` (DarkSight's class conditional):
/// `log p(y) = log h − log 2π − 2·log(1 + ½·h·‖y − μ‖²)`.
pub fn student_t2_logpdf(y: [f64; 2], mu: [f64; 2], h: f64) -> f64 {
    let r2 = (y[0] - mu[0]).powi(2) + (y[1] - mu[1]).powi(2);
    h.ln() - (2.0 * std::f64::consts::PI).ln() - 2.0 * (1.0 + 0.5 * h * r2).ln()
}

/// Jensen-Shannon divergence `½ KL(P‖M) + ½ KL(Q‖M)`, `M = ½(P + Q)`, in nats (between 0 and ln 2).
pub fn jsd(p: &[f32], q: &[f32]) -> f64 {
    assert_eq!(p.len(), q.len());
    let mut s = 0.0;
    for (&a, &b) in p.iter().zip(q) {
        let (a, b) = (a as f64, b as f64);
        let m = 0.5 * (a + b);
        if a > 0.0 {
            s += 0.5 * a * (a / m).ln();
        }
        if b > 0.0 {
            s += 0.5 * b * (b / m).ln();
        }
    }
    s.max(0.0)
}

/// Predictive entropy `−Σ p log p` of a probability row (nats).
pub fn entropy(p: &[f32]) -> f64 {
    -p.iter().filter(|&&v| v > 0.0).map(|&v| v as f64 * (v as f64).ln()).sum::<f64>()
}
