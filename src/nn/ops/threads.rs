//! Whole passes run on a worker of rayon's pool.
//!
//! Every op splits its work over the pool. Called from a thread outside the pool (a program's main
//! thread, a notebook cell, a test), each of those parallel regions is injected into the pool while
//! the caller sleeps until the workers are done: two context switches and a wake-up per op, ~150 per
//! ResNet-20 training step. [`on_pool`] runs a whole pass (a training loop, an inference) on one of
//! the pool's workers instead, where an op's parallel region is split in place and the other worker
//! steals half. Intel Xeon (family 6 model 207), 2 threads, ResNet-20 training at batch 32:
//! 597-677 -> 676-742 img/s.
//!
//! The ops read a few per-thread settings on the calling thread (guided ReLU, frozen parameters,
//! dropout's mask seed and switch, the AVX-512 kernels' switch, skipped initialisers, folded batch
//! norm). [`on_pool`] carries the caller's onto the worker for the pass and brings the dropout seed
//! back, so a pass gives what it gives on the calling thread.
use std::cell::Cell;
use std::thread::LocalKey;

/// The per-thread switches the ops read.
fn switches() -> [&'static LocalKey<Cell<bool>>; 6] {
    [
        &super::elementwise::GUIDED,
        &super::elementwise::FROZEN,
        &super::dropout::OFF,
        &super::cpu::NARROW,
        &crate::nn::params::SKIP_INIT,
        &crate::nn::params::FOLD_BN,
    ]
}

/// A thread's settings: its switches and its next dropout mask seed.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Settings {
    switches: [bool; 6],
    mask: u64,
}

impl Settings {
    fn here() -> Self {
        Self { switches: switches().map(|s| s.with(Cell::get)), mask: super::dropout::next_mask_seed() }
    }

    /// Makes these this thread's settings; returns the ones they replace.
    fn install(self) -> Self {
        let before = Self::here();
        for (s, v) in switches().into_iter().zip(self.switches) {
            s.with(|c| c.set(v));
        }
        super::dropout::seed_dropout(self.mask);
        before
    }
}

/// Puts a worker's own settings back when the pass ends, also when it panics.
struct Restore(Settings);

impl Drop for Restore {
    fn drop(&mut self) {
        self.0.install();
    }
}

/// Runs `f` on a worker thread of rayon's pool with this thread's settings (see the module docs),
/// or directly when this thread is already a pool's worker. The dropout mask seed `f` leaves is this
/// thread's afterwards. A panic in `f` is resumed here.
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return f();
    }
    let caller = Settings::here();
    let (r, mask) = rayon::scope(|_| {
        let _restore = Restore(caller.install());
        let r = f();
        (r, super::dropout::next_mask_seed())
    });
    super::dropout::seed_dropout(mask);
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::ops::{cpu, dropout, elementwise, with_flag};
    use crate::nn::{Shape4, Var};

    /// The settings seen inside `on_pool` are the caller's (each switch on in turn), and dropout masks continue the caller's sequence: the same masks as on
    /// the calling thread, in the same order.
    #[test]
    fn a_pass_on_the_pool_sees_the_callers_settings() {
        for (i, s) in switches().into_iter().enumerate() {
            let inside = with_flag(s, || on_pool(|| (Settings::here(), rayon::current_thread_index())));
            assert!(inside.1.is_some(), "ran on a worker");
            let want: Vec<bool> = (0..6).map(|k| k == i).collect();
            assert_eq!(inside.0.switches.to_vec(), want, "switch {i}");
        }
        assert!(!cpu::wide_kernels() || cpu::without_wide_kernels(|| !on_pool(cpu::wide_kernels)));
        assert!(elementwise::with_guided_relu(|| on_pool(elementwise::guided)));

        let x = || Var::from_vec(vec![1.0; 64], Shape4::mat(4, 16));
        let masks = |on: bool| {
            dropout::seed_dropout(7);
            let run = || dropout::dropout(x(), 0.5).data().to_vec();
            let first = if on { on_pool(run) } else { run() };
            (first, run())
        };
        let (here, pooled) = (masks(false), masks(true));
        assert_eq!(here, pooled);
        assert_ne!(here.0, here.1, "two different masks");
        assert!(here.0.contains(&0.0) && here.0.contains(&2.0), "a real mask: {:?}", here.0);
    }

    /// A panic in the pass reaches the caller.
    #[test]
    fn a_panic_in_a_pass_reaches_the_caller() {
        let r = std::panic::catch_unwind(|| on_pool(|| panic!("in the pass")));
        assert!(r.is_err());
    }
}
