//! Benchmarks: training and inference throughput (with a per-op profile), saliency maps and embeddings.
//! `kdscope bench`, `bench-explain` and `bench-embed` print their results; BENCHMARKS.md records them.
use std::time::Instant;

use dfdx::prelude::Backward;

use crate::distill::losses::{cross_entropy, logits_of};
use crate::models::Model;
use crate::nn::{profile, Sgd, Shape4, Var};

/// Throughput of one configuration.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchResult {
    pub model: String,
    pub mode: String,
    pub batch: usize,
    /// Image side in pixels.
    pub size: usize,
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

/// Random `size`x`size` colour images and labels of 100 classes.
fn input(batch: usize, size: usize, seed: u64) -> (Var, Vec<usize>) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let x: Vec<f32> = (0..batch * 3 * size * size).map(|_| rng.gen_range(-2.0..2.0)).collect();
    let y = (0..batch).map(|i| i % 100).collect();
    (Var::from_vec(x, Shape4::new(batch, 3, size, size)), y)
}

/// Times full SGD training steps (forward in training mode, cross-entropy, backward, SGD update) of
/// `arch` at 100 classes on 32x32 images: `reps` repetitions of `iters` steps after one warm-up step.
pub fn bench_train(arch: &str, batch: usize, iters: usize, reps: usize) -> anyhow::Result<BenchResult> {
    Ok(bench_train_profiled(arch, (batch, 32), iters, reps, false)?.0)
}

/// [`bench_train`], and with `profile` the per-op profile of one more run of `iters` steps (taken
/// apart from the timed ones): the ops' rows, then `total` rows for whole steps (`step`) and their
/// phases (`forward (all)`, `loss`, `backward (all)`, `sgd + free`). `(batch, size)`: images per step
/// and their side in pixels.
pub fn bench_train_profiled(
    arch: &str,
    (batch, size): (usize, usize),
    iters: usize,
    reps: usize,
    profile: bool,
) -> anyhow::Result<(BenchResult, Vec<profile::Row>)> {
    crate::train::tune_allocator();
    let mut model = Model::build(arch, 100, 0)?;
    let mut sgd = Sgd::new(0.05, 0.9, true, 5e-4);
    let (x, y) = input(batch, size, 1);
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
    Ok((BenchResult { model: arch.into(), mode: "train".into(), batch, size, sec_per_iter: times }, rows))
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

/// Times inference (evaluation-mode forward, no tape) of `arch` at 100 classes on `size`-pixel images.
pub fn bench_infer(
    arch: &str,
    (batch, size): (usize, usize),
    iters: usize,
    reps: usize,
) -> anyhow::Result<BenchResult> {
    crate::train::tune_allocator();
    let model = Model::build(arch, 100, 0)?;
    let (x, _) = input(batch, size, 2);
    let _ = model.logits(x.detach());
    let mut times = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        for _ in 0..iters {
            std::hint::black_box(model.logits(x.detach()));
        }
        times.push(t.elapsed().as_secs_f64() / iters as f64);
    }
    Ok(BenchResult { model: arch.into(), mode: "infer".into(), batch, size, sec_per_iter: times })
}

/// `kdscope bench`: training (and, with `profile`, its per-op profile) and inference throughput of
/// each architecture on `size`-pixel images (training batches of `batch`, inference batches of
/// `infer_batch`), one `RESULT` line per repetition and a summary row per mode.
pub fn throughput(
    archs: &[String],
    (batch, infer_batch, size): (usize, usize, usize),
    iters: usize,
    reps: usize,
    profile: bool,
) -> anyhow::Result<()> {
    println!("{:<12} {:<6} {:>6} {:>5} {:>12} {:>10}", "model", "mode", "batch", "px", "s/iter", "img/s");
    for a in archs {
        let (train, rows) = bench_train_profiled(a, (batch, size), iters, reps, profile)?;
        if profile {
            println!("profile of {iters} training steps of {a} at batch {batch}:");
            print_profile(&rows, iters);
        }
        for r in [train, bench_infer(a, (infer_batch, size), iters, reps)?] {
            // The CIFAR size keeps the names the anchor and BENCHMARKS.md use.
            let px = if r.size == 32 { String::new() } else { format!("_{}px", r.size) };
            for s in &r.sec_per_iter {
                println!("RESULT {}_{}_b{}{px} {:.4} {:.1}", r.model, r.mode, r.batch, s, r.batch as f64 / s);
            }
            let (m, b, z) = (&r.model, r.batch, r.size);
            println!("{m:<12} {:<6} {b:>6} {z:>5} {:>12.4} {:>10.1}", r.mode, r.median(), r.images_per_sec());
        }
    }
    Ok(())
}

/// `kdscope bench-explain`: input-size saliency maps of `methods` for the first `images` test images of
/// the built-in dataset with an untrained `arch`, `reps` times each.
pub fn explain(arch: &str, images: usize, batch: usize, methods: &[String], reps: usize) -> anyhow::Result<()> {
    use crate::data::synthetic::{builtin_dataset, SynthConfig};
    let per_class = images.div_ceil(20);
    let data = builtin_dataset(&SynthConfig { train_per_class: 1, test_per_class: per_class, ..Default::default() });
    let model = Model::build(arch, 20, 0)?;
    let idx: Vec<usize> = (0..images.min(data.test.len())).collect();
    let targets: Vec<usize> = idx.iter().map(|&i| data.test.labels[i]).collect();
    for name in methods {
        let m = crate::explain::method(name)?;
        for _ in 0..reps {
            let t = Instant::now();
            let maps = crate::explain::explain_images(m.as_ref(), &model, &data.test, &idx, &targets, batch)?;
            let s = t.elapsed().as_secs_f64();
            println!(
                "RESULT explain_{}_{}_n{}_b{} {:.3} s {:.1} img/s ({} maps {}x{})",
                m.name(),
                arch,
                idx.len(),
                batch,
                s,
                idx.len() as f64 / s,
                maps.n,
                maps.h,
                maps.w
            );
        }
    }
    Ok(())
}

/// `kdscope bench-embed`: DarkSight and/or t-SNE (`run`) on seeded synthetic predictions
/// ([`crate::embed::synthetic_logits`]); `write_input` also saves the probabilities as CSV (for
/// `benches/embed_opentsne.py`).
pub fn embed(
    points: usize,
    classes: usize,
    tsne_method: &str,
    run: &[String],
    write_input: Option<&std::path::Path>,
    progress: bool,
) -> anyhow::Result<()> {
    use crate::embed;
    let (logits, labels) = embed::synthetic_logits(points, classes, 0);
    let probs: Vec<f32> =
        crate::predictions::log_softmax_rows(&logits, classes, 1.0).iter().map(|v| v.exp() as f32).collect();
    if let Some(path) = write_input {
        let mut csv = String::new();
        for row in probs.chunks(classes) {
            csv += &row.iter().map(|v| format!("{v:.7e}")).collect::<Vec<_>>().join(",");
            csv.push('\n');
        }
        crate::io::write_atomic(path, csv.as_bytes())?;
    }
    let predicted =
        crate::predictions::Predictions { num_classes: classes, labels, logits: logits.clone() }.predicted();
    if run.iter().any(|r| r == "darksight") {
        let cfg = embed::DarkSightConfig { progress, ..Default::default() };
        let ds = embed::darksight(&logits, classes, &cfg)?;
        println!(
            "RESULT darksight_n{points}_c{classes} {:.2} s (2000 epochs) final symmetric KL {:.4} agreement {:.4}",
            ds.seconds,
            ds.final_loss,
            ds.agreement(&predicted)
        );
    }
    if run.iter().any(|r| r == "tsne") {
        let method = match tsne_method {
            "auto" => embed::TsneMethod::Auto,
            "exact" => embed::TsneMethod::Exact,
            "bh" | "barnes-hut" => embed::TsneMethod::BarnesHut,
            other => anyhow::bail!("unknown t-SNE method {other:?} (auto, exact, bh)"),
        };
        let cfg = embed::TsneConfig { method, progress, ..Default::default() };
        let t = embed::tsne(&probs, classes, &cfg)?;
        println!(
            "RESULT tsne_{:?}_n{points}_c{classes} {:.2} s ({} iterations) KL {:.4}",
            t.method, t.seconds, t.iterations, t.kl
        );
    }
    Ok(())
}

/// `kdscope bench-data`: an image folder (`root/<class>/…`) read at `size` x `size` (decoded into
/// memory, or checked and streamed with a cache of `cache_mb` MiB), then one epoch of ImageNet-style
/// augmented batches; images/s of each and the peak memory.
pub fn data_folder(
    root: &std::path::Path,
    size: usize,
    batch: usize,
    storage: crate::data::folder::Storage,
    cache_mb: usize,
) -> anyhow::Result<()> {
    use crate::data::{epoch_batches, folder, make_batch, Augment};
    anyhow::ensure!(batch > 0, "--batch must be at least 1");
    let t = Instant::now();
    let opts = folder::FolderOptions {
        storage,
        cache_bytes: cache_mb.saturating_mul(1 << 20),
        ..folder::FolderOptions::new(size)
    };
    let ds = folder::load_image_folder(root, &opts, None)?;
    let load = t.elapsed().as_secs_f64();
    let read_peak = crate::io::peak_memory_mib();
    let t = Instant::now();
    let mut sum = 0.0f64;
    for idx in epoch_batches(ds.len(), batch, true, 0, 0, false) {
        sum += make_batch(&ds, &idx, Some((Augment::IMAGENET, 1))).x.data()[0] as f64;
    }
    ds.check_stream()?;
    let aug = t.elapsed().as_secs_f64();
    let n = ds.len() as f64;
    let how = match &ds.stream {
        Some(s) => format!(
            "streamed, {} cached ({:.0} MiB), {} decoded during the epoch",
            s.cached(),
            s.budget().used() as f64 / (1 << 20) as f64,
            s.decodes()
        ),
        None => "in memory".into(),
    };
    println!("{} images at {size} px, {how} ({} threads), checksum {sum:.3}", ds.len(), rayon::current_num_threads());
    let tag = if ds.is_streamed() { "stream" } else { "memory" };
    println!("RESULT kdscope_{tag}_read_{size}px {load:.3} {:.1}", n / load);
    println!("RESULT kdscope_{tag}_augment_epoch_b{batch} {aug:.3} {:.1}", n / aug);
    println!("RESULT kdscope_{tag}_read_and_epoch {:.3} {:.1}", load + aug, n / (load + aug));
    println!(
        "peak memory {:.0} MiB, {read_peak:.0} MiB after reading (decoded images {:.0} MiB)",
        crate::io::peak_memory_mib(),
        (ds.len() * ds.image_len()) as f64 / (1 << 20) as f64
    );
    Ok(())
}
