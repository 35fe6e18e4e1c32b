//! A mutation fuzzer over every reader of outside bytes, on stable Rust (`kdscope fuzz`, and a bounded
//! run in `cargo test`: `tests/fuzz.rs`).
//!
//! Each [`Target`] is one reader with valid seed files made in code (or the committed fixtures of
//! `tests/fixtures/`, written by their Python scripts). An input is a seed after one to four stacked
//! mutations (bit flips, bytes, "interesting" 8/16/32/64-bit values in either byte order, truncation,
//! insertion, deletion, duplication of a range, digit changes for text formats), placed with a bias
//! towards headers (the first and last 4 KiB). The input is written where the reader looks for its
//! file and the reader runs: an error is the expected outcome for most inputs, success for some, and a
//! panic is a finding (the input is kept as `crash-<target>-<n>.bin`). A watchdog ends the process
//! if one input runs longer than the timeout, keeping it as `hang-<target>-<n>.bin`. An allocation
//! the machine cannot serve would abort the process; the input is then the target's file in the work
//! folder.
mod targets;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

pub use targets::targets;

/// One reader under test.
pub struct Target {
    pub name: &'static str,
    /// Where in the work folder the input is written (the reader finds it there).
    pub file: &'static str,
    /// Writes the valid files the reader needs beside the input (once per run).
    pub setup: fn(&Path) -> anyhow::Result<()>,
    /// Valid inputs to mutate.
    pub seeds: fn() -> anyhow::Result<Vec<Vec<u8>>>,
    /// Runs the reader on the work folder and the input (the path of `file` in it); errors are fine.
    pub read: fn(&Path, &Path) -> anyhow::Result<()>,
}

/// What one target's run found.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub target: String,
    pub inputs: usize,
    /// Inputs the reader accepted (the rest it refused with an error).
    pub accepted: usize,
    /// Panics: input number and message (the input kept in the output folder).
    pub panics: Vec<(usize, String)>,
    /// The slowest input: its number and time.
    pub slowest: (usize, Duration),
    pub seconds: f64,
    /// The process's peak resident memory after this target, MiB (cumulative over targets).
    pub peak_mib: f64,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<18} {:>9} inputs  {:>8} accepted  {:>3} panics  slowest {:>7.1} ms (#{})  {:>7.1} s  peak {:.0} MiB",
            self.target,
            self.inputs,
            self.accepted,
            self.panics.len(),
            self.slowest.1.as_secs_f64() * 1e3,
            self.slowest.0,
            self.seconds,
            self.peak_mib
        )
    }
}

/// SplitMix64: small, seeded, good enough to pick mutations.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// A position in `0..=len`, half the time within the first 4 KiB, a quarter within the last 4 KiB.
fn position(rng: &mut Rng, len: usize) -> usize {
    let window = len.min(4096) + 1;
    match rng.below(4) {
        0 | 1 => rng.below(window),
        2 => len - rng.below(window),
        _ => rng.below(len + 1),
    }
}

const INTERESTING: [u64; 14] = [
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    1 << 30,
    1 << 40,
    i64::MAX as u64,
    u64::MAX,
];

/// `seed` after one to four stacked mutations, at most `max_len` bytes long.
pub fn mutate(rng: &mut Rng, seed: &[u8], max_len: usize) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = v.len();
        let at = position(rng, len);
        match rng.below(9) {
            0 if len > 0 => v[at.min(len - 1)] ^= 1 << rng.below(8),
            1 if len > 0 => v[at.min(len - 1)] = rng.next_u64() as u8,
            2 | 3 => {
                let value = INTERESTING[rng.below(INTERESTING.len())];
                let width = [1, 2, 4, 8][rng.below(4)];
                let (le, be) = (value.to_le_bytes(), value.to_be_bytes());
                let bytes = if rng.below(2) == 0 { &le[..width] } else { &be[8 - width..] };
                for (k, b) in bytes.iter().enumerate() {
                    if let Some(x) = v.get_mut(at + k) {
                        *x = *b;
                    }
                }
            }
            4 => v.truncate(at),
            5 => {
                let n = 1 + rng.below(16);
                let ins: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                v.splice(at..at, ins);
            }
            6 if at < len => {
                let end = (at + 1 + rng.below(64)).min(len);
                v.drain(at..end);
            }
            7 if len > 0 => {
                let from = rng.below(len);
                let end = (from + 1 + rng.below(256)).min(len);
                let chunk = v[from..end].to_vec();
                v.splice(at..at, chunk);
            }
            _ => {
                // Text formats: change a digit (or put one where the position is), so numbers in
                // JSON and CSV take other, often absurd, values.
                if let Some(d) = v.iter().skip(at).position(|b| b.is_ascii_digit()).map(|d| d + at) {
                    let new: Vec<u8> = (0..1 + rng.below(12)).map(|_| b'0' + rng.below(10) as u8).collect();
                    v.splice(d..d + 1, new);
                } else if len > 0 {
                    v[at.min(len - 1)] = b'0' + rng.below(10) as u8;
                }
            }
        }
    }
    v.truncate(max_len);
    v
}

/// Runs `target` on `inputs` mutated seeds (`seed` picks them), in the work folder `work` (its input
/// and setup files; kept inputs go to `keep`). A single input running past `timeout` ends the process
/// with status 3 after keeping it.
pub fn run(
    target: &Target,
    inputs: usize,
    seed: u64,
    work: &Path,
    keep: &Path,
    timeout: Duration,
) -> anyhow::Result<Outcome> {
    let dir = work.join(target.name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    (target.setup)(&dir).with_context(|| format!("{}: setting up", target.name))?;
    let seeds = (target.seeds)().with_context(|| format!("{}: making seeds", target.name))?;
    anyhow::ensure!(!seeds.is_empty(), "{}: no seeds", target.name);
    let input_path = dir.join(target.file);
    if let Some(p) = input_path.parent() {
        std::fs::create_dir_all(p)?;
    }
    // Every seed must be readable as it is: otherwise the target tests nothing.
    for (k, s) in seeds.iter().enumerate() {
        std::fs::write(&input_path, s)?;
        (target.read)(&dir, &input_path).with_context(|| format!("{}: seed {k} is not read", target.name))?;
    }
    let max_len = seeds.iter().map(Vec::len).max().unwrap_or(0) * 2 + 64;
    let watch = Watchdog::start(target.name, input_path.clone(), keep.to_path_buf(), timeout);
    let mut rng = Rng::new(seed ^ fxhash(target.name));
    let mut out = Outcome { target: target.name.into(), inputs, ..Default::default() };
    let t0 = Instant::now();
    for n in 0..inputs {
        let s = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, s, max_len);
        std::fs::write(&input_path, &input).with_context(|| format!("writing {}", input_path.display()))?;
        watch.begin(n);
        let t = Instant::now();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (target.read)(&dir, &input_path)));
        let took = t.elapsed();
        watch.end();
        if took > out.slowest.1 {
            out.slowest = (n, took);
        }
        match r {
            Ok(Ok(())) => out.accepted += 1,
            Ok(Err(_)) => {}
            Err(payload) => {
                let msg = crate::io::panic_message(payload.as_ref());
                std::fs::create_dir_all(keep)?;
                std::fs::write(keep.join(format!("crash-{}-{n}.bin", target.name)), &input)?;
                out.panics.push((n, msg));
            }
        }
    }
    watch.stop();
    out.seconds = t0.elapsed().as_secs_f64();
    out.peak_mib = crate::io::peak_memory_mib();
    Ok(out)
}

fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// Ends the process, keeping the input (a copy of the file the reader is reading), when one input runs
/// past the timeout.
struct Watchdog {
    started: Arc<AtomicU64>,
    current: Arc<AtomicUsize>,
    done: Arc<AtomicBool>,
    epoch: Instant,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    fn start(name: &'static str, input: PathBuf, keep: PathBuf, timeout: Duration) -> Self {
        let started = Arc::new(AtomicU64::new(0));
        let current = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let epoch = Instant::now();
        let (s, c, d) = (started.clone(), current.clone(), done.clone());
        let handle = std::thread::spawn(move || {
            while !d.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                let at = s.load(Ordering::Relaxed);
                if at == 0 {
                    continue;
                }
                let running = epoch.elapsed().saturating_sub(Duration::from_micros(at));
                if running > timeout {
                    let n = c.load(Ordering::Relaxed);
                    let _ = std::fs::create_dir_all(&keep);
                    let p = keep.join(format!("hang-{name}-{n}.bin"));
                    let _ = std::fs::copy(&input, &p);
                    eprintln!("fuzz {name}: input {n} ran over {timeout:?}; kept as {}", p.display());
                    std::process::exit(3);
                }
            }
        });
        Self { started, current, done, epoch, handle: Some(handle) }
    }

    fn begin(&self, n: usize) {
        self.current.store(n, Ordering::Relaxed);
        self.started.store(self.epoch.elapsed().as_micros().max(1) as u64, Ordering::Relaxed);
    }

    fn end(&self) {
        self.started.store(0, Ordering::Relaxed);
    }

    fn stop(mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
