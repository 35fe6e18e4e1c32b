//! The batch norm's input gradient, plane by plane ([`DxPlane`]), and that gradient deferred
//! ([`DeferredGrad`]): where a batch norm's input is a convolution's output read by nothing else,
//! its backward hands the convolution the gradient it received (with the map to its own input
//! gradient) instead of writing that input gradient out; the convolution's backward maps the
//! values in the copy it makes of its output gradient anyway ([`super::tight::pad_tight_grad`]).
//! A full read and write of the activation per layer go away. Any other reader of the gradient
//! gets it mapped first ([`crate::nn::var`]'s slot).
use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::elementwise::relu_grad;
use super::prefetch::Stream;
use crate::nn::var::{Saved, Shape4};

#[cfg(test)]
thread_local! {
    /// Tests: batch norms write their input gradients out ([`with_maps_written`]).
    static WRITTEN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Tests: the convolutions on this thread that took a deferred gradient into their tight copy.
    pub(super) static MAPPED_IN_COPY: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// Tests: residual batch norms on this thread take their first backward pass themselves.
    static OWN_PASS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Tests: the residual batch norms on this thread that took [`ResidualSums`] from a convolution.
    pub(super) static RESIDUAL_SUMS_TAKEN: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Runs `f` with every batch norm on this thread writing its input gradient out (the reference the
/// deferred one is tested against).
#[cfg(test)]
pub(super) fn with_maps_written<R>(f: impl FnOnce() -> R) -> R {
    super::with_flag(&WRITTEN, f)
}

/// Runs `f` with every residual batch norm on this thread asking nothing of the convolutions
/// ([`ResidualSums`]): the reference the asked-for sums are tested against.
#[cfg(test)]
pub(super) fn with_residual_pass_own<R>(f: impl FnOnce() -> R) -> R {
    super::with_flag(&OWN_PASS, f)
}

/// Whether a residual batch norm + ReLU asks for [`ResidualSums`] (always, but in tests under
/// `with_residual_pass_own`, a test helper).
pub(crate) fn asking_residual_sums() -> bool {
    #[cfg(test)]
    return !OWN_PASS.get();
    #[cfg(not(test))]
    true
}

/// What a ResNet block's end (batch norm, residual add and ReLU: `y = relu(bn(z) + res)`) asks of
/// the convolution that adds the last contribution to `y`'s gradient `g` in place (the tight
/// kernel's input gradient; `y` is that convolution's input): to leave `g' = g` where `y > 0`, else
/// 0 (the ReLU's backward), and to take the batch norm's backward sums per `(image, channel)` plane,
/// `(sum g', sum g' (z - mean))`, as the batch norm's own first pass adds them (so the same values
/// bit for bit). That pass, a read of `g`, `y` and `z` and a write of `g` over the whole
/// activation, then goes away. The mask is idempotent and linear, so where a contribution comes
/// after the convolution's (which drops the sums, [`Saved::set_grad_sums`]) the batch norm's own
/// pass over the partly masked `g` gives the same `g'`.
#[derive(Clone)]
pub(crate) struct ResidualSums {
    /// The batch norm's input, held.
    pub z: Saved,
    /// The mean the batch norm normalises with, per channel.
    pub mean: std::sync::Arc<[f32]>,
}

/// Whether a batch norm's backward may leave its input gradient unmapped (always, but in tests
/// under [`with_maps_written`]).
pub(crate) fn deferring() -> bool {
    #[cfg(test)]
    return !WRITTEN.get();
    #[cfg(not(test))]
    true
}

/// The fused ReLU's backward of one element, its output recomputed from `x` as in the forward.
#[inline(always)]
pub(super) fn masked<const MASK: bool>(g: f32, x: f32, (scale, shift): (f32, f32), guided: bool) -> f32 {
    if MASK {
        relu_grad(g, x * scale + shift, guided)
    } else {
        g
    }
}

/// Input gradient of one plane: `d = k (m g' - dbeta - xhat dgamma)` in training, `d = k g'` in
/// evaluation, with `g'` given per element.
#[derive(Clone, Copy, Debug)]
pub(super) struct DxPlane {
    pub train: bool,
    pub k: f32,
    pub m: f32,
    pub db: f32,
    pub dg: f32,
    pub mu: f32,
    pub is: f32,
}

impl DxPlane {
    /// Replaces the plane's output gradient `g` by its input gradient; `g'` is the fused ReLU's
    /// backward of `g` with `MASK` (see [`masked`]), else `g`.
    #[inline(always)]
    pub fn run<const MASK: bool>(&self, g: &mut [f32], x: &[f32], ab: (f32, f32), guided: bool) {
        let it = g.iter_mut().zip(x);
        if self.train {
            it.for_each(|(g, &v)| *g = self.train_value(masked::<MASK>(*g, v, ab, guided), v));
        } else {
            it.for_each(|(g, &v)| *g = self.k * masked::<MASK>(*g, v, ab, guided));
        }
    }

    /// The input gradient of one plane written into `out` from its (already masked) output gradient
    /// `g`, which stays as it is.
    #[inline(always)]
    pub fn write(&self, out: &mut [MaybeUninit<f32>], g: &[f32], x: &[f32]) {
        let it = out.iter_mut().zip(g).zip(x);
        if self.train {
            it.for_each(|((o, &g), &v)| _ = o.write(self.train_value(g, v)));
        } else {
            it.for_each(|((o, &g), _)| _ = o.write(self.k * g));
        }
    }

    #[inline(always)]
    fn train_value(&self, g: f32, v: f32) -> f32 {
        let Self { k, m, db, dg, mu, is, .. } = *self;
        k * (m * g - db - (v - mu) * is * dg)
    }
}

/// A batch norm's (+ ReLU's) input gradient not written out: per channel its [`DxPlane`] and the
/// ReLU's `(scale, shift)` (its mask recomputed from the input), and the batch norm's input `x`
/// (held, of shape `shape`). The gradient it maps is the batch norm's output gradient.
pub(crate) struct DeferredGrad {
    planes: Vec<DxPlane>,
    relu: Option<Vec<(f32, f32)>>,
    guided: bool,
    x: Saved,
    shape: Shape4,
}

impl DeferredGrad {
    pub(super) fn new(
        planes: Vec<DxPlane>,
        relu: Option<Vec<(f32, f32)>>,
        guided: bool,
        x: Saved,
        shape: Shape4,
    ) -> Self {
        assert!(planes.len() == shape.c && relu.as_ref().is_none_or(|r| r.len() == shape.c));
        assert_eq!(x.data().len(), shape.numel(), "DeferredGrad: held input of another size");
        Self { planes, relu, guided, x, shape }
    }

    /// Replaces `g` (the batch norm's output gradient, the input's shape) by the input gradient,
    /// plane by plane on all threads: the batch norm's own backward pass.
    pub(crate) fn apply(&self, g: &mut [f32]) {
        let (xd, hw) = (self.x.data(), self.shape.plane());
        assert_eq!(g.len(), xd.len(), "DeferredGrad::apply: gradient of another size");
        let ahead = [Stream::of(g), Stream::of(xd)];
        g.par_chunks_mut(hw).enumerate().for_each(|(i, gi)| {
            ahead.iter().for_each(|s| s.ahead(i, hw));
            self.plane(i, gi, &xd[i * hw..(i + 1) * hw]);
        });
    }

    /// [`Self::apply`] of `(image, channel)` plane `i`, `x` its input plane, in place.
    #[inline(always)]
    fn plane(&self, i: usize, g: &mut [f32], x: &[f32]) {
        let c = i % self.shape.c;
        let p = &self.planes[c];
        match &self.relu {
            Some(ab) => p.run::<true>(g, x, ab[c], self.guided),
            None => p.run::<false>(g, x, (1.0, 0.0), self.guided),
        }
    }

    /// `dst` = the input gradient of plane `i` (image `i / c`, channel `i % c`) at its positions
    /// `at..at + g.len()` from their output gradient `g`, the same values as [`Self::apply`].
    #[inline]
    pub(super) fn map_span(&self, (i, at): (usize, usize), dst: &mut [f32], g: &[f32]) {
        let hw = self.shape.plane();
        assert!(at + g.len() <= hw, "DeferredGrad::map_span: positions {at}.. + {} of {hw}", g.len());
        super::cpu::multiversioned(
            #[inline(always)]
            || {
                dst.copy_from_slice(g);
                self.plane(i, dst, &self.x.data()[i * hw + at..][..g.len()]);
            },
        )
    }
}
