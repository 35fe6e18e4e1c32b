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
    Ok(bench_train_profiled(arch, None, (batch, 32), iters, reps, false)?.0)
}

/// [`bench_train`], or with a `teacher` architecture the KD step of the anchor script's `kd` command
/// (teacher forward in evaluation mode without a tape, then the student's training step on Hinton's
/// loss, 0.1 CE + 0.9 KL at T = 4); and with `profile` the per-op profile of one more run of `iters`
/// steps (taken apart from the timed ones): the ops' rows, then `total` rows for whole steps (`step`)
/// and their phases (`teacher forward`, `forward (all)`, `loss`, `backward (all)`, `sgd + free`).
/// `(batch, size)`: images per step and their side in pixels.
pub fn bench_train_profiled(
    arch: &str,
    teacher: Option<&str>,
    (batch, size): (usize, usize),
    iters: usize,
    reps: usize,
    profile: bool,
) -> anyhow::Result<(BenchResult, Vec<profile::Row>)> {
    use crate::distill::{Distiller, HintonKd, StepCtx};
    crate::train::tune_allocator();
    let mut model = Model::build(arch, 100, 0)?;
    let teacher = teacher.map(|t| Model::build(t, 100, 1)).transpose()?;
    let mut kd = HintonKd::repdistiller();
    let mut sgd = Sgd::new(0.05, 0.9, true, 5e-4);
    let (x, y) = input(batch, size, 1);
    let indices: Vec<usize> = (0..batch).collect();
    let mut extra: Vec<(String, f64)> = Vec::new();
    let mut step = |extra: &mut Vec<(String, f64)>| -> anyhow::Result<()> {
        let t0 = Instant::now();
        profile::mark();
        let t_out = teacher.as_ref().map(|t| t.forward_with(x.detach(), false, false));
        let tt = Instant::now();
        let out = model.forward_with(x.detach().traced_input(), true, false);
        let t1 = Instant::now();
        let loss = match &t_out {
            Some(t_out) => {
                let ctx = StepCtx { epoch: 0, epochs: 1, indices: &indices };
                kd.loss(out, t_out, &y, ctx).total
            }
            None => cross_entropy(logits_of(out.logits), &y),
        };
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
                ("forward (all)".into(), s(tt, t1)),
                ("loss".into(), s(t1, t2)),
                ("backward (all)".into(), s(t2, t3)),
                ("sgd + free".into(), s(t3, t4)),
            ]);
            if t_out.is_some() {
                extra.push(("teacher forward".into(), s(t0, tt)));
            }
        }
        r
    };
    step(&mut extra)?;
    let mut times = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        // The steps run on a worker of the pool, as training's do (`train::fit`).
        crate::nn::ops::on_pool(|| (0..iters).try_for_each(|_| step(&mut extra)))?;
        times.push(t.elapsed().as_secs_f64() / iters as f64);
    }
    let mut rows = Vec::new();
    if profile {
        extra.clear();
        let ran;
        (ran, rows) = profile::session(|| {
            crate::nn::ops::on_pool(|| profile::recording(|| (0..iters).try_for_each(|_| step(&mut extra))))
        });
        ran?;
        let mut totals: std::collections::BTreeMap<String, (f64, u64)> = Default::default();
        for (k, v) in extra {
            let e = totals.entry(k).or_default();
            e.0 += v;
            e.1 += 1;
        }
        for (op, (seconds, calls)) in totals {
            rows.push(profile::Row { op, pass: "total", seconds, calls, flop: 0.0 });
        }
    }
    let mode = teacher.map_or("train".to_string(), |t| format!("kd_from_{}", t.name()));
    Ok((BenchResult { model: arch.into(), mode, batch, size, sec_per_iter: times }, rows))
}

/// Times inference (evaluation-mode forward, no tape) of `arch` at 100 classes on `size`-pixel images.
pub fn bench_infer(arch: &str, batch_size: (usize, usize), iters: usize, reps: usize) -> anyhow::Result<BenchResult> {
    Ok(bench_infer_profiled(arch, batch_size, iters, reps, false)?.0)
}

/// [`bench_infer`], and with `profile` the per-op profile of `iters` more forwards (their ops'
/// `forward` rows and a `total` row `step` for whole forwards), taken apart from the timed ones.
pub fn bench_infer_profiled(
    arch: &str,
    (batch, size): (usize, usize),
    iters: usize,
    reps: usize,
    profile: bool,
) -> anyhow::Result<(BenchResult, Vec<profile::Row>)> {
    crate::train::tune_allocator();
    let model = Model::build(arch, 100, 0)?;
    let (x, _) = input(batch, size, 2);
    let _ = model.logits(x.detach());
    // `iters` forwards, each restarting the profile's clock (when it runs).
    let forwards = || {
        for _ in 0..iters {
            profile::mark();
            std::hint::black_box(model.logits(x.detach()));
        }
    };
    let mut times = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        forwards();
        times.push(t.elapsed().as_secs_f64() / iters as f64);
    }
    let mut rows = Vec::new();
    if profile {
        let seconds;
        (seconds, rows) = profile::session(|| {
            let t = Instant::now();
            // On a worker of the pool, where `logits` runs its ops, so that they are recorded.
            crate::nn::ops::on_pool(|| profile::recording(forwards));
            t.elapsed().as_secs_f64()
        });
        rows.push(profile::Row { op: "step".into(), pass: "total", seconds, calls: iters as u64, flop: 0.0 });
    }
    Ok((BenchResult { model: arch.into(), mode: "infer".into(), batch, size, sec_per_iter: times }, rows))
}

/// The CPU this process runs on, as `lscpu` names it (model name, family and model from
/// `/proc/cpuinfo`), its SIMD extensions that matter here and the kernel level the dispatch picks,
/// with the rayon thread count: the line every benchmark figure is quoted with.
pub fn cpu_description() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |k: &str| {
        info.lines()
            .find(|l| l.split(':').next().is_some_and(|n| n.trim() == k))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let name = field("model name").unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let flags = field("flags").unwrap_or_default();
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    let simd: Vec<&str> = ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16"]
        .into_iter()
        .filter(|f| has(f))
        .collect();
    let fam = match (field("cpu family"), field("model")) {
        (Some(f), Some(m)) => format!("family {f} model {m}, "),
        _ => String::new(),
    };
    let simd = if simd.is_empty() { "no AVX2".to_string() } else { simd.join(" ") };
    let tiles = if crate::nn::ops::bf16_active() {
        "; 3x3 stride-1 convolutions in bf16 on AMX tiles (KDSCOPE_PRECISION=bf16)"
    } else {
        ""
    };
    format!(
        "{name} ({fam}{simd}); kernels: {}; {} threads{tiles}",
        crate::nn::ops::simd_level(),
        rayon::current_num_threads()
    )
}

/// This machine's measured f32 FMA peak, GFLOP/s over all rayon threads: each thread runs
/// independent chains of fused multiply-adds on the widest vectors the kernels' dispatch uses (12
/// accumulators, enough to cover the FMA latency on every CPU of the pool), all from registers.
pub fn fma_peak_gflops() -> f64 {
    /// Runs the chains; returns their sum (kept alive) and the lanes of the vectors they ran on.
    struct Chains(u64);
    impl pulp::WithSimd for Chains {
        type Output = (f32, usize);
        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, simd: S) -> (f32, usize) {
            let (a, b) = (simd.splat_f32s(0.999_999), simd.splat_f32s(1e-7));
            let mut acc = [simd.splat_f32s(1.0); 12];
            for _ in 0..self.0 {
                for v in acc.iter_mut() {
                    *v = simd.mul_add_f32s(*v, a, b);
                }
            }
            (acc.iter().map(|v| simd.reduce_sum_f32s(*v)).sum(), S::F32_LANES)
        }
    }
    let iters = 20_000_000u64;
    // One warm-up (clocks ramp up), then the best of three.
    (0..4)
        .map(|_| {
            let t = Instant::now();
            let runs = rayon::broadcast(|_| crate::nn::ops::cpu::arch().dispatch(Chains(iters)));
            let secs = t.elapsed().as_secs_f64();
            std::hint::black_box(runs.iter().map(|r| r.0).sum::<f32>());
            let lanes: usize = runs.iter().map(|r| r.1).sum();
            (iters * 12 * 2) as f64 * lanes as f64 / secs / 1e9
        })
        .skip(1)
        .fold(0.0, f64::max)
}

/// `kdscope bench`: for each training batch of `batches`, training (and, with `profile`, its per-op
/// profile) and inference throughput of each architecture on `size`-pixel images (inference batches
/// of `infer_batch`, or twice the training batch), then the KD step of each `(teacher, student)`
/// pair of `kd`; one `RESULT` line per repetition and a summary row per mode, after a line naming
/// the CPU.
pub fn throughput(
    archs: &[String],
    kd: &[(String, String)],
    (batches, infer_batch, size): (&[usize], Option<usize>, usize),
    iters: usize,
    reps: usize,
    profile: bool,
) -> anyhow::Result<()> {
    anyhow::ensure!(!batches.is_empty() && !batches.contains(&0), "--batch needs batch sizes of at least 1");
    println!("cpu: {}", cpu_description());
    let peak = std::cell::Cell::new(fma_peak_gflops());
    println!("FMA peak (measured, f32, all threads): {:.0} GFLOP/s", peak.get());
    println!("{:<12} {:<18} {:>6} {:>5} {:>12} {:>10}", "model", "mode", "batch", "px", "s/iter", "img/s");
    let print = |r: &BenchResult| {
        // The CIFAR size keeps the names the anchor and BENCHMARKS.md use.
        let px = if r.size == 32 { String::new() } else { format!("_{}px", r.size) };
        for s in &r.sec_per_iter {
            println!("RESULT {}_{}_b{}{px} {:.4} {:.1}", r.model, r.mode, r.batch, s, r.batch as f64 / s);
        }
        let (m, b, z) = (&r.model, r.batch, r.size);
        println!("{m:<12} {:<18} {b:>6} {z:>5} {:>12.4} {:>10.1}", r.mode, r.median(), r.images_per_sec());
    };
    let show = |what: &str, b: usize, rows: &[profile::Row]| {
        if profile {
            let again = fma_peak_gflops(); // the highest reading: one can come out low (341-458 within minutes)
            peak.set(peak.get().max(again));
            println!("profile of {iters} steps of {what} at batch {b} (FMA peak again {again:.0}; % peak of {:.0} GFLOP/s, the highest reading):", peak.get());
            profile::print(rows, iters, peak.get());
        }
    };
    for &b in batches {
        for a in archs {
            let (train, rows) = bench_train_profiled(a, None, (b, size), iters, reps, profile)?;
            show(a, b, &rows);
            print(&train);
            let ib = infer_batch.unwrap_or(2 * b);
            let (infer, rows) = bench_infer_profiled(a, (ib, size), iters, reps, profile)?;
            show(&format!("{a} inference"), ib, &rows);
            print(&infer);
        }
        for (t, s) in kd {
            let (r, rows) = bench_train_profiled(s, Some(t), (b, size), iters, reps, profile)?;
            show(&format!("KD {t} -> {s}"), b, &rows);
            print(&r);
        }
    }
    Ok(())
}

/// Parses `--kd teacher:student[,teacher:student…]`.
pub fn kd_pairs(specs: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    specs
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| match s.split_once(':') {
            Some((t, st)) if !t.is_empty() && !st.is_empty() => Ok((t.to_string(), st.to_string())),
            _ => anyhow::bail!("--kd {s:?}: expected TEACHER:STUDENT, e.g. resnet56:resnet20"),
        })
        .collect()
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

#[cfg(test)]
mod tests;
