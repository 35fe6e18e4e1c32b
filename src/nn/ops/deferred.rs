//! A batch norm + ReLU whose output is never written: `relu(x · scale[c] + shift[c])` applied where the
//! next 3x3 convolution copies its input into padded planes (forward) and into the weight gradient's
//! blocked copy (backward). The batch norm's own output pass and its buffer go away; its backward
//! recomputes the ReLU's mask from `x` as the fused batch norm + ReLU always did.
//!
//! A [`crate::nn::var::Var`] carrying a [`Deferred`] map holds `x`; every op other than the
//! convolution sees the mapped values, written out when it splits the value off its tape.
use rayon::prelude::*;

/// The per-channel affine map of a batch norm (its `scale`, `shift`) followed by a ReLU.
#[derive(Debug)]
pub struct Deferred {
    pub scale: Vec<f32>,
    pub shift: Vec<f32>,
    /// The mean it normalises with (the batch's in training, the running one in evaluation), for
    /// the backward sums a convolution computes with its input gradient.
    pub mean: Vec<f32>,
}

impl Deferred {
    /// `relu(v · scale[c] + shift[c])`, in the batch norm's own order of operations (multiply, add,
    /// max), so the values are the ones it would have written, bit for bit.
    #[inline(always)]
    pub fn value(&self, c: usize, v: f32) -> f32 {
        (v * self.scale[c] + self.shift[c]).max(0.0)
    }

    /// `dst[i] = value(c, src[i])`.
    #[inline]
    pub fn map_into(&self, c: usize, dst: &mut [f32], src: &[f32]) {
        let (a, b) = (self.scale[c], self.shift[c]);
        dst.iter_mut().zip(src).for_each(|(d, &v)| *d = (v * a + b).max(0.0));
    }

    /// The mapped values of `x` (NCHW, `c` channels of `hw` values), written out by all threads.
    pub fn apply(&self, x: &[f32], c: usize, hw: usize) -> Vec<f32> {
        let mut out = super::blas::zeroed(x.len());
        out.par_chunks_mut(hw).zip(x.par_chunks(hw)).enumerate().for_each(|(i, (o, xi))| self.map_into(i % c, o, xi));
        out
    }
}

/// `dst = src`, or its values mapped by `pre` (channel `c`) where there is one.
#[inline]
pub fn copy_plane(pre: Option<&Deferred>, c: usize, dst: &mut [f32], src: &[f32]) {
    match pre {
        Some(p) => p.map_into(c, dst, src),
        None => dst.copy_from_slice(src),
    }
}
