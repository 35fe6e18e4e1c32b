//! A batch norm + ReLU whose output is never written: `relu(x · scale[c] + shift[c])` applied where the
//! next 3x3 convolution copies its input into padded planes (forward) and into the weight gradient's
//! blocked copy (backward). The batch norm's own output pass and its buffer go away; its backward
//! recomputes the ReLU's mask from `x` as the fused batch norm + ReLU always did.
//!
//! A [`crate::nn::var::Var`] carrying a [`Deferred`] map holds `x`; every op other than the
//! convolution sees the mapped values, written out when it splits the value off its tape.

/// `relu(v · scale + shift)`: the fused batch norm + ReLU's value, in one order of operations
/// (multiply, add, max) for the batch norm's own output pass and every deferred copy, so they agree
/// bit for bit.
#[inline(always)]
pub fn bn_relu(v: f32, scale: f32, shift: f32) -> f32 {
    (v * scale + shift).max(0.0)
}

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
    /// [`bn_relu`] of `v` with channel `c`'s map.
    #[inline(always)]
    pub fn value(&self, c: usize, v: f32) -> f32 {
        bn_relu(v, self.scale[c], self.shift[c])
    }

    /// `dst[i] = value(c, src[i])`.
    #[inline]
    pub fn map_into(&self, c: usize, dst: &mut [f32], src: &[f32]) {
        let (a, b) = (self.scale[c], self.shift[c]);
        dst.iter_mut().zip(src).for_each(|(d, &v)| *d = bn_relu(v, a, b));
    }

    /// The mapped values of `x` (NCHW, `c` channels of `hw` values), written out by all threads (once
    /// each, no zero fill first, as the batch norm's own output pass).
    pub fn apply(&self, x: &[f32], c: usize, hw: usize) -> Vec<f32> {
        let fill = |i: usize, o: &mut [std::mem::MaybeUninit<f32>]| {
            let (a, b) = (self.scale[i % c], self.shift[i % c]);
            o.iter_mut().zip(&x[i * hw..(i + 1) * hw]).for_each(|(o, &v)| _ = o.write(bn_relu(v, a, b)));
        };
        super::blas::written(x.len(), hw, true, fill).0
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
