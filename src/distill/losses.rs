//! Classification and distillation losses on dfdx tensors (the logits-level part of training runs on
//! dfdx's own ops: `log_softmax`, `softmax`, reductions).
use dfdx::prelude::*;

use crate::nn::{dev, ops, Dev, Tracked, Var};
use crate::predictions::log_softmax_rows;

/// A scalar loss with its tape.
pub type Loss = Tensor<(), f32, Dev, Tracked>;
/// Logits `(n, classes)` with tape.
pub type Logits = Tensor<(usize, usize), f32, Dev, Tracked>;

fn const_matrix(values: Vec<f32>, n: usize, k: usize) -> Tensor<(usize, usize), f32, Dev> {
    dev().tensor_from_vec(values, (n, k))
}

fn one_hot(labels: &[usize], k: usize) -> Vec<f32> {
    let mut v = vec![0.0; labels.len() * k];
    for (i, &l) in labels.iter().enumerate() {
        assert!(l < k, "label {l} out of range for {k} classes");
        v[i * k + l] = 1.0;
    }
    v
}

/// A student stage and the teacher's (detached) at the same height: the larger of the two is
/// average-pooled (adaptive) down to the smaller one's size, as AT, VID and OFD compare stages.
pub fn pool_to_smaller(student: Var<Tracked>, teacher: &Var) -> (Var<Tracked>, Var) {
    let (sh, th) = (student.shape.h, teacher.shape.h);
    let student = if sh > th { ops::adaptive_avg_pool2d(student, th, teacher.shape.w) } else { student };
    let teacher = if th > sh { pool_teacher_to(teacher, sh, student.shape.w) } else { teacher.detach() };
    (student, teacher)
}

/// The teacher's feature (detached), average-pooled (adaptive) to `h × w` where its size differs.
pub fn pool_teacher_to(teacher: &Var, h: usize, w: usize) -> Var {
    if (teacher.shape.h, teacher.shape.w) == (h, w) {
        teacher.detach()
    } else {
        ops::adaptive_avg_pool2d(teacher.detach(), h, w)
    }
}

/// Mean cross-entropy of `logits` against hard `labels`.
pub fn cross_entropy(logits: Logits, labels: &[usize]) -> Loss {
    let (n, k) = *logits.shape();
    let target = const_matrix(one_hot(labels, k), n, k);
    (logits.log_softmax::<Axis<1>>() * target).sum().negate() / n as f32
}

/// Hinton's KD term: `KL(softmax(t/T) ‖ softmax(s/T)) · T²`, summed over classes and averaged over
/// the batch (RepDistiller's `DistillKL`). Teacher probabilities that underflow contribute 0.
pub fn kd_kl(student: Logits, teacher_logits: &[f32], t: f32) -> Loss {
    let (n, k) = *student.shape();
    let lp: Vec<f32> = log_softmax_rows(teacher_logits, k, t as f64).into_iter().map(|v| v as f32).collect();
    let p: Vec<f32> = lp.iter().map(|v| v.exp()).collect();
    let plogp: f32 = p.iter().zip(&lp).map(|(a, b)| if *a > 0.0 { a * b } else { 0.0 }).sum();
    let logq = (student / t).log_softmax::<Axis<1>>();
    // sum p (log p - log q) = sum p log p - sum p log q
    ((logq * const_matrix(p, n, k)).sum().negate() + plogp) * (t * t / n as f32)
}

/// The soft-target MSE form of KD (KD-Lib `VanillaKD`): `T² · mean((softmax(t/T) − softmax(s/T))²)`
/// over all batch × class elements.
pub fn kd_mse(student: Logits, teacher_logits: &[f32], t: f32) -> Loss {
    let (n, k) = *student.shape();
    let p: Vec<f32> = log_softmax_rows(teacher_logits, k, t as f64).into_iter().map(|v| (v as f32).exp()).collect();
    let q = (student / t).softmax::<Axis<1>>();
    (q - const_matrix(p, n, k)).square().mean() * (t * t)
}

/// The student's logits as a dfdx matrix (data copied once; gradients flow back).
pub fn logits_of(v: Var<Tracked>) -> Logits {
    v.dfdx_matrix()
}

/// A recorded feature map as an `(n, c·h·w)` dfdx matrix (gradients flow back into the map).
pub fn feature_matrix(v: Var<Tracked>) -> Logits {
    v.dfdx_matrix()
}

/// A constant `(n, k)` matrix (teacher features, masks).
pub fn constant(values: Vec<f32>, n: usize, k: usize) -> Tensor<(usize, usize), f32, Dev> {
    assert_eq!(values.len(), n * k, "constant: {} values for ({n}, {k})", values.len());
    const_matrix(values, n, k)
}

/// Mean squared error between a recorded feature map and a constant target of the same size
/// (PyTorch's `F.mse_loss(..., reduction="mean")`).
pub fn mse_to(student: Var<Tracked>, target: &[f32]) -> Loss {
    assert_eq!(
        student.shape.numel(),
        target.len(),
        "mse: student feature {} has {} values, the target {}",
        student.shape,
        student.shape.numel(),
        target.len()
    );
    let (n, k) = (student.shape.n, student.shape.per_sample());
    (feature_matrix(student) - const_matrix(target.to_vec(), n, k)).square().mean()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::Shape4;

    fn logits(v: Vec<f32>, n: usize, k: usize) -> (Logits, Var) {
        let var = Var::from_vec(v, Shape4::mat(n, k));
        let h = var.detach();
        (logits_of(var.traced()), h)
    }

    #[test]
    fn cross_entropy_hand_computed() {
        // logits [0, ln 3]: p = [1/4, 3/4]; CE(label 1) = -ln(3/4); CE(label 0) = -ln(1/4).
        let (l, h) = logits(vec![0.0, 3f32.ln(), 0.0, 3f32.ln()], 2, 2);
        let loss = cross_entropy(l, &[1, 0]);
        let want = (-(0.75f64).ln() - (0.25f64).ln()) / 2.0;
        assert!((loss.array() as f64 - want).abs() < 1e-6);
        let mut g = loss.backward();
        // d/dz = (p - y) / n
        let grad = h.grad(&mut g);
        let want_g = [0.125, -0.125, -0.375, 0.375];
        for (a, b) in grad.iter().zip(want_g) {
            assert!((a - b).abs() < 1e-6, "{grad:?}");
        }
    }

    #[test]
    fn kd_kl_hand_computed() {
        // T = 2: teacher [2 ln 3, 0] -> p = [3/4, 1/4]; student [0, 0] -> q = [1/2, 1/2].
        // KL = 3/4 ln(3/2) + 1/4 ln(1/2); times T^2 = 4.
        let (s, h) = logits(vec![0.0, 0.0], 1, 2);
        let loss = kd_kl(s, &[2.0 * 3f32.ln(), 0.0], 2.0);
        let want = 4.0 * (0.75 * 1.5f64.ln() + 0.25 * 0.5f64.ln());
        assert!((loss.array() as f64 - want).abs() < 1e-6, "{} vs {want}", loss.array());
        // d/ds = T^2/T * (q - p) / n = 2 * ([1/2, 1/2] - [3/4, 1/4])
        let grad = h.grad(&mut loss.backward());
        assert!((grad[0] + 0.5).abs() < 1e-6 && (grad[1] - 0.5).abs() < 1e-6, "{grad:?}");
        // Identical distributions: zero loss, even with an underflowing teacher probability.
        let (s, _) = logits(vec![0.0, -300.0], 1, 2);
        let loss = kd_kl(s, &[0.0, -300.0], 1.0);
        assert!(loss.array().abs() < 1e-6);
    }

    #[test]
    fn kd_mse_hand_computed() {
        // T = 1: p = [3/4, 1/4], q = [1/2, 1/2]; mean of squared diffs = (1/16 + 1/16) / 2 = 1/16.
        let (s, _) = logits(vec![0.0, 0.0], 1, 2);
        let loss = kd_mse(s, &[3f32.ln(), 0.0], 1.0);
        assert!((loss.array() - 1.0 / 16.0).abs() < 1e-6);
        // T = 20 scales by 400 (with softened teacher).
        let (s, _) = logits(vec![0.0, 0.0], 1, 2);
        let p0 = 1.0 / (1.0 + (-(20.0f64) / 20.0).exp());
        let want = 400.0 * (p0 - 0.5).powi(2);
        let loss = kd_mse(s, &[20.0, 0.0], 20.0);
        assert!((loss.array() as f64 - want).abs() < 1e-5);
    }
}
