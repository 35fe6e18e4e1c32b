//! The thin layer over dfdx: the device, the tape types and [`Var`], the activation value that our
//! differentiable ops take and return.
//!
//! A [`Var`] is a flat dfdx tensor (so dfdx's [`Gradients`] and tape machinery key and hold its
//! gradient) plus the logical NCHW shape. Every `Var` is created by this crate from a `Vec<f32>` that
//! it then owns through the dfdx tensor, so the crate can read its data without copying: dfdx 0.13
//! does not expose a tensor's storage publicly, and copying every activation in and out of dfdx would
//! cost a fifth of a training step.
//!
//! The gradient of a value computed by a recorded op travels in a [`GradSlot`] next to it, not in
//! dfdx's [`Gradients`]: dfdx can only add a gradient entry by allocating it and zero-filling it on
//! one thread, after which every consumer adds into it (a read-modify-write pass). A slot takes the
//! first consumer's freshly written buffer as it is and adds only a second consumer's (a forked
//! value). Leaves (inputs, parameters, values made without a tape) keep their gradients in dfdx's
//! `Gradients`, where [`Var::grad`] and the optimiser read them.
use std::borrow::Cow;
use std::sync::Arc;

mod slot;

use crate::nn::ops::deferred::Deferred;
use dfdx::prelude::{Gradients, NoneTape, OwnedTape, PutTape, SplitTape, Tape, Tensor, TensorFromVec, WithEmptyTape};
pub(crate) use slot::GradBuf;
use slot::GradSlot;

/// The device all kernels run on. A CUDA path implements the same kernels for `dfdx::tensor::Cuda`.
pub type Dev = dfdx::tensor::Cpu;
/// A tape that records backward operations.
pub type Tracked = OwnedTape<f32, Dev>;
/// A flat (rank-1) dfdx tensor on [`Dev`].
pub type Flat<T = NoneTape> = Tensor<(usize,), f32, Dev, T>;
/// Gradients of a backward pass.
pub type Grads = Gradients<f32, Dev>;

/// The process-wide device (dfdx's `Cpu` is a cheap handle; its allocation cache stays disabled).
pub fn dev() -> Dev {
    static DEV: std::sync::OnceLock<Dev> = std::sync::OnceLock::new();
    DEV.get_or_init(Dev::default).clone()
}

/// Logical shape of a [`Var`]: NCHW, with `(n, k)` matrices stored as `(n, k, 1, 1)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shape4 {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl Shape4 {
    pub const fn new(n: usize, c: usize, h: usize, w: usize) -> Self {
        Self { n, c, h, w }
    }
    pub const fn mat(n: usize, k: usize) -> Self {
        Self { n, c: k, h: 1, w: 1 }
    }
    pub const fn numel(&self) -> usize {
        self.n * self.c * self.h * self.w
    }
    /// Elements of one sample.
    pub const fn per_sample(&self) -> usize {
        self.c * self.h * self.w
    }
    pub const fn plane(&self) -> usize {
        self.h * self.w
    }
    pub fn to_vec(&self) -> Vec<usize> {
        vec![self.n, self.c, self.h, self.w]
    }
}

impl std::fmt::Display for Shape4 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}, {}, {}, {}]", self.n, self.c, self.h, self.w)
    }
}

/// Pointer to the buffer owned by a `Var`'s tensor; valid while that tensor (or a clone) lives.
#[derive(Clone, Copy)]
pub(crate) struct DataPtr(*const f32, usize);

// SAFETY: the pointee is an immutable f32 buffer kept alive by the Arc inside the dfdx tensor that is
// always stored next to the pointer.
unsafe impl Send for DataPtr {}
unsafe impl Sync for DataPtr {}

/// A differentiable activation: a dfdx tensor with tape `T` and its NCHW shape.
pub struct Var<T = NoneTape> {
    pub(crate) t: Flat<T>,
    pub shape: Shape4,
    ptr: DataPtr,
    /// Whether a gradient with respect to this value is wanted (false for raw input batches during
    /// training, so the first layer skips its input gradient).
    pub(crate) needs_grad: bool,
    /// The gradient's slot when a recorded op computed this value; `None` for leaves.
    slot: Option<GradSlot>,
    /// `(sum, sum of squares)` of each `(image, channel)` plane, when the op that computed this
    /// value had them at hand (a convolution's output pass), for a batch norm that follows.
    pub(crate) plane_sums: Option<Arc<[(f64, f64)]>>,
    /// A deferred batch norm + ReLU ([`crate::nn::ops::deferred`]): the value is this map of the
    /// held data. Only a convolution reads it so; [`Self::split`] writes the mapped values out.
    pub(crate) pre: Option<Arc<Deferred>>,
}

/// A tape-less handle to a `Var`'s tensor and data, captured by backward closures.
#[derive(Clone)]
pub(crate) struct Saved {
    t: Flat,
    ptr: DataPtr,
    slot: Option<GradSlot>,
}

impl Saved {
    pub(crate) fn data(&self) -> &[f32] {
        // SAFETY: `self.t` keeps the buffer alive and nothing mutates it (see module docs).
        unsafe { std::slice::from_raw_parts(self.ptr.0, self.ptr.1) }
    }

    /// Adds the contribution `g` to this value's gradient: moved in as it is when it is the first
    /// (no copy, no zero fill), added otherwise.
    pub(crate) fn give(&self, grads: &mut Grads, g: Vec<f32>) -> Result<(), dfdx::tensor::CpuError> {
        self.give_cow(grads, Cow::Owned(g))
    }

    /// Adds the contribution `g` to this value's gradient: copied (by all threads) when it is the
    /// first, added otherwise.
    pub(crate) fn give_copy(&self, grads: &mut Grads, g: &[f32]) -> Result<(), dfdx::tensor::CpuError> {
        self.give_cow(grads, Cow::Borrowed(g))
    }

    fn give_cow(&self, grads: &mut Grads, g: Cow<'_, [f32]>) -> Result<(), dfdx::tensor::CpuError> {
        check_grad_len(g.len(), self.ptr.1);
        match &self.slot {
            Some(slot) => {
                let mut have = slot.lock_mapped();
                if have.is_empty() {
                    *have = match g {
                        Cow::Owned(g) => g,
                        Cow::Borrowed(g) => crate::nn::ops::blas::copied_par(g),
                    };
                } else {
                    crate::nn::ops::blas::add_into_par(&mut have, &g);
                    slot.set_sums(None);
                }
                Ok(())
            }
            None => accumulate(grads, &self.t, &g),
        }
    }

    /// [`Self::give`], with the batch norm's backward sums of `g` per `(image, channel)` plane
    /// ([`crate::nn::ops::deferred`]), kept for [`Self::take_grad_sums`] while `g` is the gradient's
    /// only contribution.
    pub(crate) fn give_with_sums(
        &self,
        grads: &mut Grads,
        g: Vec<f32>,
        sums: Vec<(f64, f64)>,
    ) -> Result<(), dfdx::tensor::CpuError> {
        let first = self.slot_is_empty();
        self.give(grads, g)?;
        if let Some(slot) = self.slot.as_ref().filter(|_| first) {
            slot.set_sums(Some(sums));
        }
        Ok(())
    }

    /// The sums that came with this value's gradient ([`Self::give_with_sums`],
    /// [`Self::set_grad_sums`]), if it has had no other contribution since.
    pub(crate) fn take_grad_sums(&self) -> Option<Vec<(f64, f64)>> {
        self.slot.as_ref().and_then(|s| s.take_sums())
    }

    /// This value's gradient buffer, to add a contribution in place (`+=`); a buffer that is not
    /// there yet is zero-filled first (by all threads, for a slot).
    pub(crate) fn grad_buf<'a>(&'a self, grads: &'a mut Grads) -> Result<GradBuf<'a>, dfdx::tensor::CpuError> {
        match &self.slot {
            Some(slot) => {
                let mut have = slot.lock_mapped();
                if have.is_empty() {
                    *have = crate::nn::ops::blas::zeroed(self.ptr.1);
                }
                slot.set_sums(None);
                Ok(GradBuf::Slot(have))
            }
            None => {
                let d: &mut Vec<f32> = grads.get_or_alloc_mut(&self.t)?;
                check_grad_len(d.len(), self.ptr.1);
                Ok(GradBuf::Leaf(d))
            }
        }
    }

    /// `pre`'s map of this (held) data of shape `s`, written out, with the same gradient slot.
    pub(crate) fn mapped(self, pre: &Deferred, s: Shape4) -> Saved {
        let data = pre.apply(self.data(), s.c, s.plane());
        let ptr = DataPtr(data.as_ptr(), data.len());
        let t = dev().tensor_from_vec(data, (ptr.1,));
        Saved { t, ptr, slot: self.slot }
    }

    /// Whether this is a recorded op's value whose gradient slot holds nothing yet: a consumer may
    /// then write its contribution into a fresh buffer (every value) and [`Self::give`] it, with no
    /// zero fill first.
    pub(crate) fn slot_is_empty(&self) -> bool {
        self.slot.as_ref().is_some_and(|s| s.lock().is_empty())
    }

    /// The gradient that flowed into this (recorded op's) value, taken out; zeros if none did. A
    /// pending map is applied, or left for [`Self::take_grad_map`] where `unmapped`.
    fn take(&self, grads: &mut Grads, unmapped: bool) -> Result<Vec<f32>, dfdx::tensor::CpuError> {
        match &self.slot {
            Some(slot) => {
                let g = std::mem::take(&mut *if unmapped { slot.lock() } else { slot.lock_mapped() });
                Ok(if g.is_empty() { crate::nn::ops::blas::zeroed(self.ptr.1) } else { g })
            }
            None => take_grad(grads, &self.t),
        }
    }
}

impl Var<NoneTape> {
    /// Wraps `data` (taken, not copied) as a value of shape `shape`.
    pub fn from_vec(data: Vec<f32>, shape: Shape4) -> Self {
        assert_eq!(data.len(), shape.numel(), "Var::from_vec: {} values for shape {shape}", data.len());
        let ptr = DataPtr(data.as_ptr(), data.len());
        let len = data.len();
        let t = dev().tensor_from_vec(data, (len,));
        Self { t, shape, ptr, needs_grad: true, slot: None, plane_sums: None, pre: None }
    }

    /// Starts recording: the result carries a fresh tape (its gradients are kept for every tensor).
    /// It is a leaf of what is recorded next: its gradient lands in dfdx's `Gradients`.
    pub fn traced(self) -> Var<Tracked> {
        let t = self.t.put_tape(Tracked::default());
        Var {
            t,
            shape: self.shape,
            ptr: self.ptr,
            needs_grad: self.needs_grad,
            slot: None,
            plane_sums: self.plane_sums,
            pre: self.pre,
        }
    }

    /// A training input batch: tracked, but no gradient with respect to the input itself is computed.
    pub fn traced_input(self) -> Var<Tracked> {
        let mut v = self.traced();
        v.needs_grad = false;
        v
    }
}

impl<T> Var<T> {
    /// The values.
    ///
    /// # Panics
    /// On a value whose batch norm is deferred to the convolution that reads it (which never leaves
    /// the model block that made it).
    pub fn data(&self) -> &[f32] {
        assert!(self.pre.is_none(), "the data of a deferred batch norm's output is read by its convolution only");
        self.held()
    }
    /// The same value viewed with another shape of equal size (no copy, no tape entry).
    pub(crate) fn with_shape(mut self, shape: Shape4) -> Self {
        assert_eq!(shape.numel(), self.shape.numel());
        assert!(self.pre.is_none() || shape.c == self.shape.c && shape.plane() == self.shape.plane());
        if shape != self.shape {
            self.plane_sums = None;
        }
        self.shape = shape;
        self
    }
    pub fn to_vec(&self) -> Vec<f32> {
        match &self.pre {
            Some(p) => p.apply(self.held(), self.shape.c, self.shape.plane()),
            None => self.data().to_vec(),
        }
    }
    /// The held data: the values, or their pre-image under a deferred map.
    fn held(&self) -> &[f32] {
        // SAFETY: `self.t` owns the buffer (see module docs).
        unsafe { std::slice::from_raw_parts(self.ptr.0, self.ptr.1) }
    }
    /// Splits the tape off, returning a tape-less saved handle, the tape, and the shape. A deferred
    /// map's values are written out first (the gradient still goes to this value's slot).
    pub(crate) fn split(self) -> (Saved, T, Shape4, bool)
    where
        T: Tape<f32, Dev>,
    {
        let (saved, tape, shape, needs, pre) = self.split_deferred();
        let saved = match pre {
            Some(p) => saved.mapped(&p, shape),
            None => saved,
        };
        (saved, tape, shape, needs)
    }
    /// [`Self::split`] of a value whose batch norm may be deferred: the held data as it is, and the
    /// deferred map, if any.
    pub(crate) fn split_deferred(self) -> (Saved, T, Shape4, bool, Option<Arc<Deferred>>)
    where
        T: Tape<f32, Dev>,
    {
        let (t, tape) = self.t.split_tape();
        (Saved { t, ptr: self.ptr, slot: self.slot }, tape, self.shape, self.needs_grad, self.pre)
    }
    /// Two handles to one value for two consumers (e.g. a residual branch and its shortcut); their
    /// tapes merge again when the branches join, and both gradients add up.
    pub fn fork(self) -> (Var<T>, Var<T>)
    where
        T: Tape<f32, Dev>,
    {
        let other = Var {
            t: self.t.with_empty_tape(),
            shape: self.shape,
            ptr: self.ptr,
            needs_grad: self.needs_grad,
            slot: self.slot.clone(),
            plane_sums: self.plane_sums.clone(),
            pre: self.pre.clone(),
        };
        (self, other)
    }
    /// The gradient of this value in `grads` (zeros if nothing flowed into it). A value computed by
    /// a recorded op hands its gradient on when that op's backward runs, so only the gradients of
    /// leaves (and of values whose producer has not run its backward yet) are still there after
    /// `backward`; [`crate::nn::ops::grad_probe`] records an intermediate one.
    pub fn grad(&self, grads: &mut Grads) -> Vec<f32> {
        let zeros = || vec![0.0; self.shape.numel()];
        match &self.slot {
            Some(slot) => Some(slot.lock_mapped().clone()).filter(|g| !g.is_empty()).unwrap_or_else(zeros),
            None => grads.get_or_alloc_mut(&self.t).map(|g| g.to_vec()).unwrap_or_else(|_| zeros()),
        }
    }
    /// Same value without any tape (a detached copy sharing the buffer; a leaf if traced again).
    pub fn detach(&self) -> Var<NoneTape> {
        Var {
            t: self.t.retaped::<NoneTape>(),
            shape: self.shape,
            ptr: self.ptr,
            needs_grad: true,
            slot: None,
            plane_sums: self.plane_sums.clone(),
            pre: self.pre.clone(),
        }
    }
    /// The underlying dfdx tensor as an `(n, k)` matrix (for dfdx's losses); the data is copied.
    pub fn dfdx_matrix(self) -> Tensor<(usize, usize), f32, Dev, T>
    where
        T: Tape<f32, Dev>,
    {
        let (n, k) = (self.shape.n, self.shape.per_sample());
        let (saved, mut tape, _, _) = self.split();
        let out = dev().tensor_from_vec(saved.data().to_vec(), (n, k));
        if T::OWNS_TAPE {
            let o = out.clone();
            tape.add_backward_op(move |grads: &mut Grads| {
                let g = take_grad(grads, &o)?;
                saved.give(grads, g)
            });
        }
        out.put_tape(tape)
    }
}

/// Builds an op's output from its data and tape and, when the tape records, registers `backward`.
///
/// `backward` receives the gradients, the (taken) gradient of the output and the output itself.
pub(crate) fn finish<T, F>(data: Vec<f32>, shape: Shape4, tape: T, backward: F) -> Var<T>
where
    T: Tape<f32, Dev>,
    F: 'static + FnOnce(&mut Grads, Vec<f32>, &Saved) -> Result<(), dfdx::tensor::CpuError>,
{
    record(Var::from_vec(data, shape), tape, backward, false)
}

/// [`finish`] of an op whose backward takes its output gradient as it arrived: with a map still
/// to apply where a batch norm deferred it ([`Saved::take_grad_map`] on the output, which the
/// backward must call and honour).
pub(crate) fn finish_unmapped<T, F>(data: Vec<f32>, shape: Shape4, tape: T, backward: F) -> Var<T>
where
    T: Tape<f32, Dev>,
    F: 'static + FnOnce(&mut Grads, Vec<f32>, &Saved) -> Result<(), dfdx::tensor::CpuError>,
{
    record(Var::from_vec(data, shape), tape, backward, true)
}

/// [`finish`] of an op whose output is `pre`'s map of the data of `x` (a deferred batch norm +
/// ReLU): the output holds `x`'s buffer, nothing is written. `backward` gets `x` as the output.
pub(crate) fn finish_deferred<T, F>(x: &Saved, shape: Shape4, pre: Deferred, tape: T, backward: F) -> Var<T>
where
    T: Tape<f32, Dev>,
    F: 'static + FnOnce(&mut Grads, Vec<f32>, &Saved) -> Result<(), dfdx::tensor::CpuError>,
{
    assert_eq!(x.ptr.1, shape.numel());
    let v = Var { t: x.t.clone(), shape, ptr: x.ptr, needs_grad: true, slot: None, plane_sums: None, pre: None };
    let mut y = record(v, tape, backward, false);
    y.pre = Some(Arc::new(pre));
    y
}

/// Registers `backward` for the new value `v` (made without a tape) when `tape` records, and puts
/// the tape on it; `backward` gets the gradient mapped unless `unmapped` ([`finish_unmapped`]).
fn record<T, F>(mut v: Var<NoneTape>, mut tape: T, backward: F, unmapped: bool) -> Var<T>
where
    T: Tape<f32, Dev>,
    F: 'static + FnOnce(&mut Grads, Vec<f32>, &Saved) -> Result<(), dfdx::tensor::CpuError>,
{
    let shape = v.shape;
    use crate::nn::profile;
    // The op's name in the profile (its tag's, or its function's) and its backward FLOPs.
    let named = profile::enabled().then(|| {
        let (op, fwd, bwd) = profile::take_tag(|| profile::op_name(std::any::type_name::<F>()));
        profile::forward_done(op.clone(), fwd);
        (op, bwd)
    });
    if T::OWNS_TAPE {
        v.slot = Some(GradSlot::default());
        let saved = Saved { t: v.t.clone(), ptr: v.ptr, slot: v.slot.clone() };
        tape.add_backward_op(move |grads: &mut Grads| {
            let started = profile::enabled().then(std::time::Instant::now);
            let g = saved.take(grads, unmapped)?;
            check_grad_len(g.len(), shape.numel());
            let r = backward(grads, g, &saved);
            if let Some(started) = started {
                let (op, bwd) = named.unwrap_or_else(|| (profile::op_name(std::any::type_name::<F>()), 0.0));
                profile::backward_done(op, started, bwd);
            }
            r
        });
    }
    let Var { t, ptr, slot, .. } = v;
    Var { t: t.put_tape(tape), shape, ptr, needs_grad: true, slot, plane_sums: None, pre: None }
}

/// A copy of `t`'s values by one memcpy (dfdx's `as_vec` walks a tensor element by element through its
/// strided iterator: ~1 % of a ResNet-56 step at batch 32, on one thread, for the parameters alone).
pub(crate) fn values(t: &Flat) -> Vec<f32> {
    let mut v = vec![0.0; dfdx::shapes::HasShape::shape(t).0];
    t.copy_into(&mut v);
    v
}

/// Adds `g` into the gradient of `t` (allocating it).
pub(crate) fn accumulate(grads: &mut Grads, t: &Flat, g: &[f32]) -> Result<(), dfdx::tensor::CpuError> {
    accumulate_with(grads, t, g.len(), |d| crate::nn::ops::blas::add_into(d, g))
}

/// Runs `f` on the gradient of `t` (allocated, zero, if there is none yet) of `len` values.
pub(crate) fn accumulate_with(
    grads: &mut Grads,
    t: &Flat,
    len: usize,
    f: impl FnOnce(&mut [f32]),
) -> Result<(), dfdx::tensor::CpuError> {
    let d = grads.get_or_alloc_mut(t)?;
    check_grad_len(d.len(), len);
    f(d);
    Ok(())
}

/// A gradient buffer of the wrong length means two tensors share a dfdx id. That happens when the
/// tensors come from two copies of dfdx's id counter — in evcxr each notebook cell links its own copy of
/// the crates, so a backward pass that touches tensors created in another cell (e.g. the parameters of a
/// model trained in an earlier cell) could mix up gradients. kdscope avoids it (explanations compute no
/// parameter gradients); this check turns any other case into a clear error instead of wrong numbers.
fn check_grad_len(got: usize, want: usize) {
    assert_eq!(
        got, want,
        "gradient buffer of {got} values for a tensor of {want}: two tensors share a dfdx id (were they \
         created in different evcxr notebook cells? run the backward pass in the cell that created them)"
    );
}

/// Takes the gradient of `t` out of `grads` (it is not needed after the op that produced `t` has
/// propagated it), allocating zeros if nothing flowed into `t`.
pub(crate) fn take_grad<S: dfdx::shapes::Shape>(
    grads: &mut Grads,
    t: &Tensor<S, f32, Dev>,
) -> Result<Vec<f32>, dfdx::tensor::CpuError> {
    let g = grads.get_or_alloc_mut(t)?;
    Ok(std::mem::take(&mut **g))
}

/// Merges the tapes of two values (for binary ops).
pub(crate) fn merge_tapes<T: Tape<f32, Dev>>(a: T, b: T) -> T {
    a.merge(b)
}
