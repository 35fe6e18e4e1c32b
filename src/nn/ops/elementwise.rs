//! Element-wise ops: ReLU, residual add (optionally fused with ReLU), scaling, reshape.
use dfdx::prelude::Tape;
use rayon::prelude::*;

use crate::nn::var::{finish, merge_tapes, Dev, Grads, Shape4, Var};

const CHUNK: usize = 1 << 14;

thread_local! {
    pub(super) static GUIDED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    pub(super) static FROZEN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` (typically a `backward` call for an explanation) without computing parameter gradients on
/// this thread: convolutions, linear layers and batch norm skip them (the weight-gradient GEMMs are a third of
/// a backward pass, and only gradients with respect to activations and inputs are produced.
pub fn with_frozen_params<R>(f: impl FnOnce() -> R) -> R {
    with_flag(&FROZEN, f)
}

/// Whether parameter gradients are switched off on this thread ([`with_frozen_params`]).
pub(crate) fn params_frozen() -> bool {
    FROZEN.with(|g| g.get())
}

/// Runs `f` (typically a `backward` call) with *guided* ReLU gradients on this thread (Springenberg et
/// al. 2015): every ReLU — the plain op, the one fused into batch norm and the one fused into the
/// residual add — passes a gradient only where its output is positive **and** the incoming gradient
/// is positive. Backward passes run on the calling thread, so other threads are unaffected.
pub fn with_guided_relu<R>(f: impl FnOnce() -> R) -> R {
    with_flag(&GUIDED, f)
}

/// Runs `f` with the thread-local `flag` set, restoring its previous value afterwards (also on panic).
pub(crate) fn with_flag<R>(flag: &'static std::thread::LocalKey<std::cell::Cell<bool>>, f: impl FnOnce() -> R) -> R {
    struct Restore(&'static std::thread::LocalKey<std::cell::Cell<bool>>, bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            self.0.with(|g| g.set(self.1));
        }
    }
    let _restore = Restore(flag, flag.with(|g| g.replace(true)));
    f()
}

/// The ReLU backward of one element (used by ReLU, add+ReLU and batch-norm+ReLU): `g` where the
/// ReLU output `y` is positive (and, in guided mode ([`with_guided_relu`]), `g` is not negative
/// too), else 0. Written as a select so loops over it vectorise.
#[inline(always)]
pub(crate) fn relu_grad(g: f32, y: f32, guided: bool) -> f32 {
    // Non-short-circuit `&` / `|`: both sides are evaluated, so this is a select, not a branch.
    let keep = (y > 0.0) & (!guided | (g >= 0.0));
    if keep {
        g
    } else {
        0.0
    }
}

/// Whether guided ReLU gradients are on for this thread ([`with_guided_relu`]).
pub(crate) fn guided() -> bool {
    GUIDED.with(|g| g.get())
}

/// `g = m(g)` in place, in parallel chunks, with `m` the ReLU backward on output `y`.
fn relu_grad_in_place(g: &mut [f32], y: &[f32]) {
    let guided = guided();
    g.par_chunks_mut(CHUNK).zip(y.par_chunks(CHUNK)).for_each(|(g, y)| {
        for (g, &y) in g.iter_mut().zip(y) {
            *g = relu_grad(*g, y, guided);
        }
    });
}

/// `max(x, 0)`.
pub fn relu<T: Tape<f32, Dev>>(x: Var<T>) -> Var<T> {
    let (xs, tape, s, needs) = x.split();
    let mut out = Vec::with_capacity(s.numel());
    xs.data().par_iter().with_min_len(CHUNK).map(|v| v.max(0.0)).collect_into_vec(&mut out);
    finish(out, s, tape, move |grads: &mut Grads, mut gout, y| {
        if needs {
            relu_grad_in_place(&mut gout, y.data());
            xs.give(grads, gout)?;
        }
        Ok(())
    })
}

/// `a + b`, or `relu(a + b)` with `relu` (the residual join of ResNets).
pub fn add<T: Tape<f32, Dev>>(a: Var<T>, b: Var<T>, relu: bool) -> Var<T> {
    assert_eq!(a.shape, b.shape, "add: shapes {} and {} differ", a.shape, b.shape);
    let (asv, ta, s, na) = a.split();
    let (bsv, tb, _, nb) = b.split();
    let tape = merge_tapes(ta, tb);
    let mut out = Vec::with_capacity(s.numel());
    let sum = asv.data().par_iter().zip(bsv.data().par_iter()).with_min_len(CHUNK);
    if relu {
        sum.map(|(p, q)| (p + q).max(0.0)).collect_into_vec(&mut out);
    } else {
        sum.map(|(p, q)| p + q).collect_into_vec(&mut out);
    }
    finish(out, s, tape, move |grads: &mut Grads, mut gout, y| {
        if relu && (na || nb) {
            relu_grad_in_place(&mut gout, y.data());
        }
        // The gradient passes to both operands: the first takes the buffer itself, the second a
        // copy (or an addition, when its gradient already holds another consumer's).
        if nb {
            bsv.give_copy(grads, &gout)?;
        }
        if na {
            asv.give(grads, gout)?;
        }
        Ok(())
    })
}

/// `x * k` for a constant `k`.
pub fn scale<T: Tape<f32, Dev>>(x: Var<T>, k: f32) -> Var<T> {
    let (xs, tape, s, needs) = x.split();
    let out: Vec<f32> = xs.data().iter().map(|v| v * k).collect();
    finish(out, s, tape, move |grads: &mut Grads, mut gout, _| {
        if needs {
            gout.par_iter_mut().with_min_len(CHUNK).for_each(|g| *g *= k);
            xs.give(grads, gout)?;
        }
        Ok(())
    })
}

/// Where a [`grad_probe`] leaves the gradient that flowed through it (filled by `backward`).
#[derive(Clone, Debug, Default)]
pub struct GradProbe(std::sync::Arc<std::sync::Mutex<Option<Vec<f32>>>>);

impl GradProbe {
    /// The recorded gradient (same layout as the probed value), or `None` before backward ran or when
    /// no gradient reached the probe.
    pub fn get(&self) -> Option<Vec<f32>> {
        self.0.lock().map(|g| g.clone()).unwrap_or(None)
    }
}

/// Identity whose backward records the gradient arriving at `x`'s value before passing it on. The ops
/// consume their outputs' gradients during backward, so an intermediate value's gradient is otherwise
/// gone once `backward` returns; gradient-based explanations (Grad-CAM …) read it from the probe.
pub fn grad_probe<T: Tape<f32, Dev>>(x: Var<T>) -> (Var<T>, GradProbe) {
    probe(x, true)
}

/// [`grad_probe`] that stops the gradient there (`pass_on = false`): everything recorded before `x`
/// gets no gradient from this path, and ops that receive an all-zero gradient skip their backward
/// work, so an explanation that only needs the gradient at a late feature does not pay for the rest.
pub fn grad_probe_cut<T: Tape<f32, Dev>>(x: Var<T>) -> (Var<T>, GradProbe) {
    probe(x, false)
}

fn probe<T: Tape<f32, Dev>>(x: Var<T>, pass_on: bool) -> (Var<T>, GradProbe) {
    let probe = GradProbe::default();
    let keep = probe.clone();
    let (xs, tape, s, needs) = x.split();
    let out = finish(xs.data().to_vec(), s, tape, move |grads: &mut Grads, gout, _| {
        if needs && pass_on {
            xs.give_copy(grads, &gout)?;
        }
        if let Ok(mut g) = keep.0.lock() {
            *g = Some(gout);
        }
        Ok(())
    });
    (out, probe)
}

/// Whether a gradient is zero everywhere (its op's backward can be skipped: every contribution is 0).
pub(crate) fn all_zero(g: &[f32]) -> bool {
    g.par_chunks(CHUNK).all(|c| c.iter().all(|&v| v == 0.0))
}

/// Same data under another shape with the same number of elements (e.g. NCHW to `(n, c*h*w)`).
pub fn reshape<T: Tape<f32, Dev>>(x: Var<T>, shape: Shape4) -> Var<T> {
    assert_eq!(x.shape.numel(), shape.numel(), "reshape: {} to {}", x.shape, shape);
    let (xs, tape, _, needs) = x.split();
    finish(xs.data().to_vec(), shape, tape, move |grads: &mut Grads, gout, _| {
        if needs {
            xs.give(grads, gout)?;
        }
        Ok(())
    })
}
