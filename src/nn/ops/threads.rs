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
//! For the length of a pass the other workers are kept looking for its jobs ([`keep_awake`]) rather
//! than sleeping through the serial stretches between two ops and being woken for the next:
//! voluntary context switches of a ResNet-56 batch-32 bench run 6,500-6,700 -> 2,200-2,900, KD step
//! at batch 32 322/370/394/400 -> 346/420/414/424 img/s (four interleaved rounds; the training rows
//! moved within the machine's noise).
//!
//! The ops read a few per-thread settings on the calling thread (guided ReLU, frozen parameters,
//! dropout's mask seed and switch, the tight and blocked kernels' switches, skipped initialisers,
//! folded batch norm, whether the profiler records them). [`on_pool`] carries the caller's onto
//! the worker for the pass and brings the dropout seed back, so a pass gives what it gives on the
//! calling thread.
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::LocalKey;

/// The per-thread switches the ops read.
fn switches() -> [&'static LocalKey<Cell<bool>>; 9] {
    [
        &super::elementwise::GUIDED,
        &super::elementwise::FROZEN,
        &super::dropout::OFF,
        &super::cpu::PLANAR,
        &super::cpu::AVX2_KERNELS,
        &super::cpu::BF16,
        &crate::nn::params::SKIP_INIT,
        &crate::nn::params::FOLD_BN,
        &crate::nn::profile::HERE,
    ]
}

/// A thread's settings: its switches and its next dropout mask seed.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Settings {
    switches: [bool; 9],
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

/// Sets the pass's end flag when the pass ends, also when it panics.
struct Done<'a>(&'a AtomicBool);

impl Drop for Done<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Keeps a worker looking for the pass's jobs until it ends, instead of falling asleep in the serial
/// stretches between two ops' parallel regions and being woken by the next (a futex wake and two
/// context switches, tens of µs each time, ~330 times per ResNet-56 step at batch 32). A worker
/// that finds this job while it waits inside the pass's own thread (`owner`) leaves at once.
fn keep_awake(done: &AtomicBool, owner: Option<usize>) {
    if rayon::current_thread_index() == owner {
        return;
    }
    while !done.load(Ordering::Acquire) {
        if rayon::yield_now() != Some(rayon::Yield::Executed) {
            std::hint::spin_loop();
        }
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
    let done = AtomicBool::new(false);
    let (r, mask) = rayon::scope(|s| {
        let _restore = Restore(caller.install());
        let _done = Done(&done);
        let owner = rayon::current_thread_index();
        for _ in 1..rayon::current_num_threads() {
            let done = &done;
            s.spawn(move |_| keep_awake(done, owner));
        }
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
            let want: Vec<bool> = (0..switches().len()).map(|k| k == i).collect();
            assert_eq!(inside.0.switches.to_vec(), want, "switch {i}");
        }
        assert_eq!(cpu::with_planar_kernels(|| on_pool(cpu::kernel_lanes)), 0);
        assert_eq!(cpu::with_avx2_kernels(|| on_pool(cpu::kernel_lanes)), if cpu::f32_lanes() >= 8 { 8 } else { 0 });
        assert!(elementwise::with_guided_relu(|| on_pool(elementwise::guided)));
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            crate::nn::ops::amx::with_bf16(|| on_pool(crate::nn::ops::amx::bf16_active)),
            crate::nn::ops::amx::available()
        );

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

    /// The job that keeps a worker awake leaves at once where the pass's own thread finds it while
    /// it waits (it would otherwise spin there until the pass, stuck below it, ends), and at the
    /// pass's end elsewhere; a pass whose parallel regions the other workers share still completes
    /// with every part done.
    #[test]
    fn the_awake_worker_leaves_on_the_pass_thread_and_at_the_end() {
        let never = AtomicBool::new(false);
        rayon::scope(|_| keep_awake(&never, rayon::current_thread_index()));
        let done = AtomicBool::new(true);
        rayon::scope(|_| keep_awake(&done, None));
        use rayon::prelude::*;
        let total: u64 =
            on_pool(|| (0..200u64).map(|i| (0..1000u64).into_par_iter().map(|j| i * j).sum::<u64>()).sum());
        assert_eq!(total, (0..200u64).sum::<u64>() * (0..1000u64).sum::<u64>());
    }

    /// A panic in the pass reaches the caller.
    #[test]
    fn a_panic_in_a_pass_reaches_the_caller() {
        let r = std::panic::catch_unwind(|| on_pool(|| panic!("in the pass")));
        assert!(r.is_err());
    }
}
