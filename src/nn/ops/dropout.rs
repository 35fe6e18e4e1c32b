//! The ops of torchvision's classifier heads: ReLU6 (MobileNetV2) and dropout (VGG, MobileNetV2).
use dfdx::prelude::Tape;
use rayon::prelude::*;

use crate::nn::var::{finish, Dev, Grads, Var};

const CHUNK: usize = 1 << 14;

/// Step between the seeds of successive masks (the golden ratio in 64 bits, as SplitMix64).
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

thread_local! {
    /// The seed of this thread's next dropout mask; every call takes one and advances it. Per thread,
    /// so runs trained side by side in threads (a grid) draw the masks they would draw alone.
    static NEXT_MASK: std::cell::Cell<u64> = const { std::cell::Cell::new(GOLDEN) };
    pub(super) static OFF: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Seeds the dropout masks that follow on this thread (the trainer calls it before every batch with a value derived
/// from the run's seed, epoch and batch, so a run — resumed or not — draws the same masks).
pub fn seed_dropout(seed: u64) {
    NEXT_MASK.with(|m| m.set(seed));
}

/// The seed of this thread's next dropout mask.
pub(super) fn next_mask_seed() -> u64 {
    NEXT_MASK.with(|m| m.get())
}

/// Runs `f` with dropout switched off on this thread (training-mode batch norm without random masks,
/// e.g. to compare a training pass with a reference that has no access to the masks).
pub fn without_dropout<R>(f: impl FnOnce() -> R) -> R {
    super::with_flag(&OFF, f)
}

/// SplitMix64's output function: a well-mixed 64-bit value of `x`.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// `min(max(x, 0), 6)`; the gradient passes where `0 < x < 6` (PyTorch's `hardtanh` backward). Guided
/// backpropagation leaves it alone, as pytorch-grad-cam does (it replaces `ReLU` modules only).
pub fn relu6<T: Tape<f32, Dev>>(x: Var<T>) -> Var<T> {
    let (xs, tape, s, needs) = x.split();
    let mut out = Vec::with_capacity(s.numel());
    xs.data().par_iter().with_min_len(CHUNK).map(|v| v.clamp(0.0, 6.0)).collect_into_vec(&mut out);
    finish(out, s, tape, move |grads: &mut Grads, gout, y| {
        if needs {
            let mut dx = xs.grad_buf(grads)?;
            dx.par_chunks_mut(CHUNK).zip(gout.par_chunks(CHUNK)).zip(y.data().par_chunks(CHUNK)).for_each(
                |((d, g), y)| {
                    for ((d, &g), &y) in d.iter_mut().zip(g).zip(y) {
                        *d += if (y > 0.0) & (y < 6.0) { g } else { 0.0 };
                    }
                },
            );
        }
        Ok(())
    })
}

/// Inverted dropout as `torch.nn.Dropout(p)` in training mode: each element is zeroed with
/// probability `p` and the others are scaled by `1 / (1 - p)`. The identity when `p` is 0 or dropout
/// is off ([`without_dropout`]). The mask of element `i` is a hash of the call's seed and `i`, so it
/// does not depend on the number of threads.
pub fn dropout<T: Tape<f32, Dev>>(x: Var<T>, p: f32) -> Var<T> {
    assert!((0.0..1.0).contains(&p), "dropout probability must be in [0, 1), got {p}");
    if p == 0.0 || OFF.with(|o| o.get()) {
        return x;
    }
    let seed = mix(NEXT_MASK.with(|m| m.replace(m.get().wrapping_add(GOLDEN))));
    // Kept when the hash's top 53 bits, as a fraction of 1, are at least p.
    let threshold = (p as f64 * (1u64 << 53) as f64) as u64;
    let keep = move |i: usize| mix(seed ^ (i as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93)) >> 11 >= threshold;
    let k = 1.0 / (1.0 - p);
    let (xs, tape, s, needs) = x.split();
    let mut out = Vec::with_capacity(s.numel());
    xs.data()
        .par_iter()
        .enumerate()
        .with_min_len(CHUNK)
        .map(|(i, &v)| if keep(i) { v * k } else { 0.0 })
        .collect_into_vec(&mut out);
    finish(out, s, tape, move |grads: &mut Grads, gout, _| {
        if needs {
            let mut dx = xs.grad_buf(grads)?;
            dx.par_iter_mut().zip(gout.par_iter()).enumerate().with_min_len(CHUNK).for_each(|(i, (d, &g))| {
                if keep(i) {
                    *d += g * k;
                }
            });
        }
        Ok(())
    })
}
