//! A per-op wall-clock profile of training steps, off unless [`start`] is called (one relaxed
//! atomic load per op otherwise), of the ops run inside [`recording`]. Ops run one after another on
//! the calling thread (each parallel inside), so wall times add up: an op's forward time is the time
//! since the previous op finished (the model code between two ops counts towards the next), its
//! backward time the time of its backward closure. An op may name its kind, shape and FLOPs first
//! ([`tag`]: the convolutions, one row per kernel size, stride, channels and plane), so the table
//! gives their GFLOP/s by kind and by shape. `kdscope bench --profile` prints the table ([`print`]).
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

static ON: AtomicBool = AtomicBool::new(false);
static STATE: Mutex<Option<State>> = Mutex::new(None);

struct State {
    last: Instant,
    rows: BTreeMap<(String, &'static str), (f64, u64, f64)>,
}

thread_local! {
    /// The kind and (forward, backward) FLOPs that the next op recorded on this thread reports.
    static TAG: RefCell<Option<(String, f64, f64)>> = const { RefCell::new(None) };
    /// Whether this thread's ops are recorded ([`recording`]). A pass on the pool carries its
    /// caller's (`ops::on_pool`), so that a worker recording one pass does not record another
    /// caller's pass it picks up while it waits.
    pub(crate) static HERE: Cell<bool> = const { Cell::new(false) };
}

/// One op kind and pass: total seconds over the profiled calls, the number of calls and their
/// floating-point operations (0 where the op does not count them).
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub op: String,
    pub pass: &'static str,
    pub seconds: f64,
    pub calls: u64,
    pub flop: f64,
}

/// Between an op's kind and its shape in a tagged name (`conv2d 3x3/1 @ 16→16 32x32`).
pub const SHAPE: &str = " @ ";

impl Row {
    /// GFLOP/s over the row's time, where the op counted its FLOPs.
    pub fn gflops(&self) -> Option<f64> {
        (self.flop > 0.0 && self.seconds > 0.0).then(|| self.flop / self.seconds / 1e9)
    }

    /// The op's kind (its name before [`SHAPE`]) and its shape, where its tag named one.
    pub fn kind(&self) -> (&str, Option<&str>) {
        self.op.split_once(SHAPE).map_or((self.op.as_str(), None), |(k, s)| (k, Some(s)))
    }
}

/// `rows` with the shapes of each kind and pass added up into one row named by the kind (the
/// untagged rows as they are), largest total first.
pub fn by_kind(rows: &[Row]) -> Vec<Row> {
    let mut kinds: BTreeMap<(&str, &'static str), (f64, u64, f64)> = BTreeMap::new();
    for r in rows {
        let e = kinds.entry((r.kind().0, r.pass)).or_insert((0.0, 0, 0.0));
        *e = (e.0 + r.seconds, e.1 + r.calls, e.2 + r.flop);
    }
    let mut out: Vec<Row> = kinds
        .into_iter()
        .map(|((op, pass), (seconds, calls, flop))| Row { op: op.to_string(), pass, seconds, calls, flop })
        .collect();
    out.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    out
}

/// Prints a profile (rows from [`stop`] and the caller's totals) as milliseconds per step (`steps`
/// steps): the ops by kind ([`by_kind`]); for those that count their FLOPs (the convolutions) also
/// GFLOP/s and their share of `peak` (GFLOP/s); then the convolutions of each pass together, and,
/// where the ops named their shapes, every shape in a table of its own.
pub fn print(rows: &[Row], steps: usize, peak: f64) {
    let step = rows.iter().find(|r| r.op == "step").map(|r| r.seconds).unwrap_or(f64::NAN);
    let header = |first: &str| {
        println!(
            "{first:<28} {:<9} {:>8} {:>10} {:>7} {:>9} {:>7}",
            "pass", "calls", "ms/step", "% step", "GFLOP/s", "% peak"
        )
    };
    let line = |r: &Row| {
        let rate = r.gflops().map_or(String::new(), |g| format!(" {g:>9.1} {:>6.1}%", 100.0 * g / peak));
        let ms = r.seconds * 1e3 / steps as f64;
        println!(
            "{:<28} {:<9} {:>8} {ms:>10.2} {:>6.1}%{rate}",
            r.op,
            r.pass,
            r.calls / steps as u64,
            100.0 * r.seconds / step
        );
    };
    header("op");
    let kinds = by_kind(rows);
    kinds.iter().for_each(line);
    for pass in ["forward", "backward"] {
        let convs = kinds.iter().filter(|r| r.pass == pass && r.op.starts_with("conv2d ") && r.flop > 0.0);
        let all = convs.fold(Row { op: "conv2d (all)".into(), pass, seconds: 0.0, calls: 0, flop: 0.0 }, |a, r| Row {
            seconds: a.seconds + r.seconds,
            calls: a.calls + r.calls,
            flop: a.flop + r.flop,
            ..a
        });
        if all.calls > 0 {
            line(&all);
        }
    }
    let mut shapes: Vec<&Row> = rows.iter().filter(|r| r.kind().1.is_some()).collect();
    if !shapes.is_empty() {
        // By kind, forward before backward, the slowest shape first.
        shapes
            .sort_by(|a, b| a.kind().0.cmp(b.kind().0).then(b.pass.cmp(a.pass)).then(b.seconds.total_cmp(&a.seconds)));
        println!();
        header("by shape: in→out, input");
        shapes.into_iter().for_each(|r| line(&Row { op: r.op.replacen(SHAPE, " ", 1), ..r.clone() }));
    }
}

pub(crate) fn enabled() -> bool {
    ON.load(Ordering::Relaxed) && HERE.get()
}

/// Runs `f` with this thread's ops recorded while profiling is on: only the ops of such a thread
/// enter the table, not those of other work running at the same time (other threads, parallel tests).
pub fn recording<R>(f: impl FnOnce() -> R) -> R {
    /// Puts the thread's flag back as it was, also when `f` panics (the thread may be a pool worker).
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            HERE.set(self.0);
        }
    }
    let _restore = Restore(HERE.replace(true));
    f()
}

/// One profiling run at a time in this process: the table is global, so a second [`start`] while
/// one runs would clear it, and its [`stop`] take the other's rows.
static SESSION: Mutex<()> = Mutex::new(());

/// Runs `f` as one profiling run ([`start`], `f`, [`stop`]), waiting for any other such run in
/// this process (parallel tests, a second bench on another thread) to end first; returns `f`'s
/// result and the table.
pub fn session<R>(f: impl FnOnce() -> R) -> (R, Vec<Row>) {
    /// Stops profiling if `f` panics, before the lock is let go.
    struct StopOnPanic;
    impl Drop for StopOnPanic {
        fn drop(&mut self) {
            if std::thread::panicking() {
                stop();
            }
        }
    }
    let _one = SESSION.lock().unwrap_or_else(|e| e.into_inner());
    let _stop = StopOnPanic;
    start();
    let r = f();
    (r, stop())
}

/// Starts (or restarts) profiling with an empty table; the ops run inside [`recording`] enter it.
/// Only through [`session`], which keeps another run from starting meanwhile.
fn start() {
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
fn stop() -> Vec<Row> {
    ON.store(false, Ordering::Relaxed);
    let state = STATE.lock().unwrap_or_else(|e| e.into_inner()).take();
    let mut rows: Vec<Row> = state
        .map(|s| {
            s.rows
                .into_iter()
                .map(|((op, pass), (seconds, calls, flop))| Row { op, pass, seconds, calls, flop })
                .collect()
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

/// While profiling: the next op recorded on this thread is named `kind()` (e.g. `conv2d 3x3/1`)
/// in place of its function's name, and does `flop` (forward, backward) operations.
pub(crate) fn tag(kind: impl FnOnce() -> String, flop: (f64, f64)) {
    if enabled() {
        TAG.with_borrow_mut(|t| *t = Some((kind(), flop.0, flop.1)));
    }
}

/// The name and (forward, backward) FLOPs of the op being recorded: its [`tag`], if one is
/// pending on this thread (taken), else `op()` with no FLOPs.
pub(crate) fn take_tag(op: impl FnOnce() -> String) -> (String, f64, f64) {
    TAG.with_borrow_mut(Option::take).unwrap_or_else(|| (op(), 0.0, 0.0))
}

/// Charges the time since `since` (the previous op's end, by default) and `flop` to `op`'s `pass`.
fn add(op: String, pass: &'static str, since: Option<Instant>, flop: f64) {
    if let Some(s) = STATE.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        let seconds = since.unwrap_or(s.last).elapsed().as_secs_f64();
        let e = s.rows.entry((op, pass)).or_insert((0.0, 0, 0.0));
        e.0 += seconds;
        e.1 += 1;
        e.2 += flop;
        s.last = Instant::now();
    }
}

/// Charges the time since the previous op to `op`'s forward pass.
pub(crate) fn forward_done(op: String, flop: f64) {
    add(op, "forward", None, flop);
}

pub(crate) fn backward_done(op: String, started: Instant, flop: f64) {
    add(op, "backward", Some(started), flop);
}

#[cfg(test)]
mod tests {
    #[test]
    fn op_names() {
        assert_eq!(super::op_name("kdscope::nn::ops::conv::conv2d::{{closure}}"), "conv2d");
        assert_eq!(super::op_name("kdscope::nn::ops::pool::max_pool2d::{{closure}}::{{closure}}"), "max_pool2d");
        assert_eq!(
            super::op_name("kdscope::nn::ops::conv::conv2d<dfdx::tensor::gradients::OwnedTape<f32, Cpu>>::{{closure}}"),
            "conv2d"
        );
    }

    /// A run whose work panics stops profiling and lets the next run in: that one gets its own
    /// rows only.
    #[test]
    fn a_panicking_session_stops_and_lets_go() {
        let hit = std::panic::catch_unwind(|| {
            super::session(|| {
                super::recording(|| super::add("first".into(), "forward", None, 1.0));
                panic!("the profiled work failed");
            })
        });
        assert!(hit.is_err());
        {
            // Under the lock: another test's run in between has stopped by the time it lets go.
            let _one = super::SESSION.lock().unwrap_or_else(|e| e.into_inner());
            assert!(!super::ON.load(std::sync::atomic::Ordering::Relaxed), "profiling left on");
        }
        let ((), rows) = super::session(|| super::recording(|| super::add("second".into(), "forward", None, 2.0)));
        let ops: Vec<_> = rows.iter().map(|r| (r.op.as_str(), r.calls, r.flop)).collect();
        assert_eq!(ops, [("second", 1, 2.0)]);
    }
}
