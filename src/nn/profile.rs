//! A per-op wall-clock profile of training steps, off unless [`start`] is called (one relaxed
//! atomic load per op otherwise), of the ops run inside [`recording`]. Ops run one after another on
//! the calling thread (each parallel inside), so wall times add up: an op's forward time is the time
//! since the previous op finished (the model code between two ops counts towards the next), its
//! backward time the time of its backward closure. An op may name its kind and FLOPs first
//! ([`tag`]: the convolutions, one row per kernel shape and stride), so the table gives their
//! GFLOP/s. `kdscope bench --profile` prints the table.
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
    /// Whether this thread's ops are recorded ([`recording`]).
    static HERE: Cell<bool> = const { Cell::new(false) };
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

impl Row {
    /// GFLOP/s over the row's time, where the op counted its FLOPs.
    pub fn gflops(&self) -> Option<f64> {
        (self.flop > 0.0 && self.seconds > 0.0).then(|| self.flop / self.seconds / 1e9)
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

/// Starts (or restarts) profiling with an empty table; the ops run inside [`recording`] enter it.
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
}
