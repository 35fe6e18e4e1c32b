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
    Ok(bench_train_profiled(arch, batch, iters, reps, false)?.0)
}

/// [`bench_train`], and with `profile` the per-op profile of one more run of `iters` steps (taken
/// apart from the timed ones): the ops' rows, then `total` rows for whole steps (`step`) and their
/// phases (`forward (all)`, `loss`, `backward (all)`, `sgd + free`).
pub fn bench_train_profiled(
    arch: &str,
    batch: usize,
    iters: usize,
    reps: usize,
    profile: bool,
) -> anyhow::Result<(BenchResult, Vec<profile::Row>)> {
    tune_allocator();
    let mut model = Model::build(arch, 100, 0)?;
    let mut sgd = Sgd::new(0.05, 0.9, true, 5e-4);
    let (x, y) = input(batch, 1);
    let mut extra: Vec<(String, f64)> = Vec::new();
    let mut step = |extra: &mut Vec<(String, f64)>| -> anyhow::Result<()> {
        let t0 = Instant::now();
        profile::mark();
        let out = model.forward_with(x.detach().traced_input(), true, false);
        let t1 = Instant::now();
        let loss = cross_entropy(logits_of(out.logits), &y);
        let t2 = Instant::now();
        let mut grads = loss.backward();
        let t3 = Instant::now();
        let r = sgd.step(&mut model.store, &mut grads);
        drop(grads);
        if profile::enabled() {
            let s = |a: Instant, b: Instant| (b - a).as_secs_f64();
            let t4 = Instant::now();
            extra.extend([
                ("step".to_string(), s(t0, t4)),
                ("forward (all)".into(), s(t0, t1)),
                ("loss".into(), s(t1, t2)),
                ("backward (all)".into(), s(t2, t3)),
                ("sgd + free".into(), s(t3, t4)),
            ]);
        }
        r
    };
    step(&mut extra)?;
    let mut times = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        for _ in 0..iters {
            step(&mut extra)?;
        }
        times.push(t.elapsed().as_secs_f64() / iters as f64);
    }
    let mut rows = Vec::new();
    if profile {
        profile::start();
        for _ in 0..iters {
            step(&mut extra)?;
        }
        rows = profile::stop();
        let mut totals: std::collections::BTreeMap<String, (f64, u64)> = Default::default();
        for (k, v) in extra {
            let e = totals.entry(k).or_default();
            e.0 += v;
            e.1 += 1;
        }
        for (op, (seconds, calls)) in totals {
            rows.push(profile::Row { op, pass: "total", seconds, calls });
        }
    }
    Ok((BenchResult { model: arch.into(), mode: "train".into(), batch, sec_per_iter: times }, rows))
}

/// Prints a profile from [`bench_train_profiled`] as milliseconds per step (`steps` steps).
pub fn print_profile(rows: &[profile::Row], steps: usize) {
    let step = rows.iter().find(|r| r.op == "step").map(|r| r.seconds).unwrap_or(f64::NAN);
    println!("{:<28} {:<9} {:>8} {:>10} {:>7}", "op", "pass", "calls", "ms/step", "% step");
    for r in rows {
        println!(
            "{:<28} {:<9} {:>8} {:>10.2} {:>6.1}%",
            r.op,
            r.pass,
            r.calls / steps as u64,
            r.seconds * 1e3 / steps as f64,
            100.0 * r.seconds / step
        );
    }
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

/// A per-op wall-clock profile of training steps, off unless [`profile::start`] is called (one
/// relaxed atomic load per op otherwise). Ops run one after another on the calling thread (each
/// parallel inside), so wall times add up: an op's forward time is the time since the previous
/// op finished (the model code between two ops counts towards the next), its backward time the
/// time of its backward closure. `kdscope bench --profile` prints the table.
pub mod profile {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;
    use std::time::Instant;

    static ON: AtomicBool = AtomicBool::new(false);
    static STATE: Mutex<Option<State>> = Mutex::new(None);

    struct State {
        last: Instant,
        rows: BTreeMap<(String, &'static str), (f64, u64)>,
    }

    /// One op kind and pass: total seconds over the profiled calls and the number of calls.
    #[derive(Clone, Debug, PartialEq)]
    pub struct Row {
        pub op: String,
        pub pass: &'static str,
        pub seconds: f64,
        pub calls: u64,
    }

    pub(crate) fn enabled() -> bool {
        ON.load(Ordering::Relaxed)
    }

    /// Starts (or restarts) profiling with an empty table.
    pub fn start() {
        *STATE.lock().unwrap_or_else(|e| e.into_inner()) = Some(State { last: Instant::now(), rows: BTreeMap::new() });
        ON.store(true, Ordering::Relaxed);
    }

    /// Restarts the forward clock (call at the start of each step, so time between steps is not
    /// charged to the first op).
    pub fn mark() {
        if enabled() {
            if let Some(s) = STATE.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
                s.last = Instant::now();
            }
        }
    }

    /// Stops profiling and returns the table, largest total first.
    pub fn stop() -> Vec<Row> {
        ON.store(false, Ordering::Relaxed);
        let state = STATE.lock().unwrap_or_else(|e| e.into_inner()).take();
        let mut rows: Vec<Row> = state
            .map(|s| {
                s.rows.into_iter().map(|((op, pass), (seconds, calls))| Row { op, pass, seconds, calls }).collect()
            })
            .unwrap_or_default();
        rows.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        rows
    }

    /// `kdscope::nn::ops::conv::conv2d::{{closure}}` → `conv2d`.
    pub(crate) fn op_name(type_name: &str) -> String {
        let mut depth = 0usize;
        let plain: String = type_name
            .chars()
            .filter(|&ch| {
                match ch {
                    '<' => depth += 1,
                    '>' => depth = depth.saturating_sub(1),
                    _ => return depth == 0,
                }
                false
            })
            .collect();
        plain.split("::").filter(|p| !p.is_empty() && !p.starts_with("{{")).last().unwrap_or(type_name).to_string()
    }

    /// Charges the time since `since` (the previous op's end, by default) to `op`'s `pass`.
    fn add(op: String, pass: &'static str, since: Option<Instant>) {
        if let Some(s) = STATE.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            let seconds = since.unwrap_or(s.last).elapsed().as_secs_f64();
            let e = s.rows.entry((op, pass)).or_insert((0.0, 0));
            e.0 += seconds;
            e.1 += 1;
            s.last = Instant::now();
        }
    }

    /// Charges the time since the previous op to `op`'s forward pass.
    pub(crate) fn forward_done(op: String) {
        add(op, "forward", None);
    }

    pub(crate) fn backward_done(op: String, started: Instant) {
        add(op, "backward", Some(started));
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn op_names() {
            assert_eq!(super::op_name("kdscope::nn::ops::conv::conv2d::{{closure}}"), "conv2d");
            assert_eq!(super::op_name("kdscope::nn::ops::pool::max_pool2d::{{closure}}::{{closure}}"), "max_pool2d");
            assert_eq!(
                super::op_name(
                    "kdscope::nn::ops::conv::conv2d<dfdx::tensor::gradients::OwnedTape<f32, Cpu>>::{{closure}}"
                ),
                "conv2d"
            );
        }
    }
}
