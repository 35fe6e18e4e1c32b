//! Process-level performance settings and the training/inference throughput benchmark.
use std::time::Instant;

use dfdx::prelude::Backward;

use crate::distill::losses::{cross_entropy, logits_of};
use crate::models::Model;
use crate::nn::{Sgd, Shape4, Var};

/// Keeps freed activation buffers in the heap instead of returning them to the OS: glibc's defaults
/// (mmap for blocks over 128 KiB, trimming) make every training step page-fault its activations
/// in again, costing about 30 % of a ResNet step. Called once by the training entry points; safe to
/// call repeatedly.
pub fn tune_allocator() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes allocator parameters.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        }
    });
}

/// Throughput of one configuration.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchResult {
    pub model: String,
    pub mode: String,
    pub batch: usize,
    pub sec_per_iter: Vec<f64>,
}

impl BenchResult {
    pub fn median(&self) -> f64 {
        let mut v = self.sec_per_iter.clone();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }
    pub fn images_per_sec(&self) -> f64 {
        self.batch as f64 / self.median()
    }
}

fn input(batch: usize, seed: u64) -> (Var, Vec<usize>) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let x: Vec<f32> = (0..batch * 3 * 32 * 32).map(|_| rng.gen_range(-2.0..2.0)).collect();
    let y = (0..batch).map(|i| i % 100).collect();
    (Var::from_vec(x, Shape4::new(batch, 3, 32, 32)), y)
}

/// Times full SGD training steps (forward in training mode, cross-entropy, backward, SGD update) of
/// `arch` at 100 classes: `reps` repetitions of `iters` steps after one warm-up step.
pub fn bench_train(arch: &str, batch: usize, iters: usize, reps: usize) -> anyhow::Result<BenchResult> {
    tune_allocator();
    let mut model = Model::build(arch, 100, 0)?;
    let mut sgd = Sgd::new(0.05, 0.9, true, 5e-4);
    let (x, y) = input(batch, 1);
    let mut step = || -> anyhow::Result<()> {
        let out = model.forward_with(x.detach().traced_input(), true, false);
        let loss = cross_entropy(logits_of(out.logits), &y);
        let mut grads = loss.backward();
        sgd.step(&mut model.store, &mut grads)
    };
    step()?;
    let mut times = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        for _ in 0..iters {
            step()?;
        }
        times.push(t.elapsed().as_secs_f64() / iters as f64);
    }
    Ok(BenchResult { model: arch.into(), mode: "train".into(), batch, sec_per_iter: times })
}

/// Times inference (evaluation-mode forward, no tape) of `arch` at 100 classes.
pub fn bench_infer(arch: &str, batch: usize, iters: usize, reps: usize) -> anyhow::Result<BenchResult> {
    tune_allocator();
    let model = Model::build(arch, 100, 0)?;
    let (x, _) = input(batch, 2);
    let _ = model.logits(x.detach());
    let mut times = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        for _ in 0..iters {
            std::hint::black_box(model.logits(x.detach()));
        }
        times.push(t.elapsed().as_secs_f64() / iters as f64);
    }
    Ok(BenchResult { model: arch.into(), mode: "infer".into(), batch, sec_per_iter: times })
}
