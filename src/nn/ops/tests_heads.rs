//! Tests of the classifier-head ops (ReLU6, dropout): hand-computed values, the mask's statistics and
//! finite-difference gradients.
use super::tests::check_input_grad;
use super::*;
use crate::nn::var::{Shape4, Tracked, Var};

#[test]
fn relu6_and_dropout_by_hand_and_finite_differences() {
    let shape = Shape4::new(2, 3, 5, 5);
    // Values in (-8, 8) away from ReLU6's kinks at 0 and 6.
    let x: Vec<f32> = (0..shape.numel())
        .map(|i| (i as f32 * 0.7137).sin() * 8.0)
        .map(|v| if v.abs() < 0.05 || (v - 6.0).abs() < 0.05 { v + 0.2 } else { v })
        .collect();
    let y = relu6(Var::from_vec(x.clone(), shape));
    assert!(y.data().iter().zip(&x).all(|(y, x)| *y == x.clamp(0.0, 6.0)));
    check_input_grad(relu6, relu6, x.clone(), shape, 1e-3, 1e-3);

    // Dropout: the same seed draws the same mask; kept values are scaled by 1/(1-p); the share dropped
    // is p within 4 standard deviations; the gradient is the mask times the scale.
    let n = 100_000;
    let ones = || Var::from_vec(vec![1.0; n], Shape4::mat(n, 1));
    seed_dropout(11);
    let a = dropout(ones(), 0.3).to_vec();
    seed_dropout(11);
    assert_eq!(a, dropout(ones(), 0.3).to_vec());
    assert!(a.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.7).abs() < 1e-6));
    let dropped = a.iter().filter(|&&v| v == 0.0).count() as f64 / n as f64;
    assert!((dropped - 0.3).abs() < 4.0 * (0.3f64 * 0.7 / n as f64).sqrt(), "dropped {dropped}");
    assert_ne!(a, dropout(ones(), 0.3).to_vec(), "the next call draws a new mask");
    assert_eq!(without_dropout(|| dropout(ones(), 0.3).to_vec()), vec![1.0; n]);
    let seeded = |v: Var<Tracked>| {
        seed_dropout(5);
        dropout(v, 0.5)
    };
    let seeded_plain = |v: Var| {
        seed_dropout(5);
        dropout(v, 0.5)
    };
    check_input_grad(seeded, seeded_plain, x, shape, 1e-2, 1e-3);
}
