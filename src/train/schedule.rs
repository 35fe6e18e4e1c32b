use serde::{Deserialize, Serialize};

/// Learning-rate schedule (per epoch, as PyTorch's `MultiStepLR` / `CosineAnnealingLR` stepped
/// once per epoch).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Schedule {
    /// Constant learning rate.
    Constant,
    /// Multiply by `gamma` at each milestone epoch (0-based epoch counts, as `MultiStepLR`).
    MultiStep { milestones: Vec<usize>, gamma: f64 },
    /// Cosine annealing from the base rate to `min_lr` over the run (`CosineAnnealingLR` with
    /// `T_max = epochs`).
    Cosine { min_lr: f64 },
}

impl Schedule {
    /// Learning rate of epoch `epoch` (0-based) of `epochs`.
    pub fn lr(&self, base: f64, epoch: usize, epochs: usize) -> f64 {
        match self {
            Schedule::Constant => base,
            Schedule::MultiStep { milestones, gamma } => {
                base * gamma.powi(milestones.iter().filter(|&&m| epoch >= m).count() as i32)
            }
            Schedule::Cosine { min_lr } => {
                let t = epoch as f64 / epochs.max(1) as f64;
                min_lr + (base - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multistep_and_cosine_values() {
        let s = Schedule::MultiStep { milestones: vec![150, 180, 210], gamma: 0.1 };
        assert_eq!(s.lr(0.05, 0, 240), 0.05);
        assert_eq!(s.lr(0.05, 149, 240), 0.05);
        assert!((s.lr(0.05, 150, 240) - 0.005).abs() < 1e-12);
        assert!((s.lr(0.05, 239, 240) - 0.00005).abs() < 1e-12);
        let c = Schedule::Cosine { min_lr: 0.0 };
        assert_eq!(c.lr(0.1, 0, 10), 0.1);
        assert!((c.lr(0.1, 5, 10) - 0.05).abs() < 1e-12);
        assert!((c.lr(0.1, 10, 10)).abs() < 1e-12);
    }
}
