//! The gradient slot of a recorded op's value (see the parent module's docs).
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Grads, Saved, Var};
use crate::nn::ops::bn_grad::{DeferredGrad, ResidualSums};

/// Per `(image, channel)` plane, a batch norm's backward sums of a gradient.
type PlaneSums = Vec<(f64, f64)>;

/// Where the consumers of a recorded op's output leave its gradient during backward, for the op's
/// own backward to take (see the module docs). Empty until a gradient arrives.
#[derive(Clone, Default)]
pub(crate) struct GradSlot {
    g: Arc<Mutex<Vec<f32>>>,
    /// The deferred batch norm's backward sums of the gradient in `g`, where the convolution that
    /// reads its value computed them with its input gradient and nothing was added since.
    sums: Arc<Mutex<Option<PlaneSums>>>,
    /// Where `g` is a batch norm's output gradient that its backward left unmapped: the map to the
    /// gradient this slot stands for ([`DeferredGrad`]), applied by whoever reads `g` other than
    /// the producer's backward that takes it as it is ([`Saved::take_grad_map`]).
    map: Arc<Mutex<Option<DeferredGrad>>>,
    /// Where this is a residual batch norm + ReLU's output: what it asks of the convolution that
    /// adds the last contribution to `g` ([`ResidualSums`]).
    wants: Arc<Mutex<Option<ResidualSums>>>,
}

/// A lock that a panic elsewhere cannot leave half-written: buffers are swapped in whole, so a
/// poisoned lock still holds a consistent value.
fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl GradSlot {
    pub(super) fn lock(&self) -> MutexGuard<'_, Vec<f32>> {
        locked(&self.g)
    }
    pub(super) fn set_sums(&self, s: Option<PlaneSums>) {
        *locked(&self.sums) = s;
    }
    pub(super) fn take_sums(&self) -> Option<PlaneSums> {
        locked(&self.sums).take()
    }
    pub(super) fn set_wants(&self, w: ResidualSums) {
        *locked(&self.wants) = Some(w);
    }
    pub(super) fn wants(&self) -> Option<ResidualSums> {
        locked(&self.wants).clone()
    }
    pub(super) fn forget_wants(&self) {
        *locked(&self.wants) = None;
    }
    /// The gradient, locked, with a pending map applied first.
    pub(super) fn lock_mapped(&self) -> MutexGuard<'_, Vec<f32>> {
        let mut g = self.lock();
        if let Some(map) = locked(&self.map).take() {
            map.apply(&mut g);
        }
        g
    }
}

impl Saved {
    /// [`Self::give`] of a batch norm's output gradient `g` with `map` to this value's gradient (the
    /// batch norm's input gradient): kept unmapped with the map where the slot is empty, mapped and
    /// given otherwise.
    pub(crate) fn give_mapped(
        &self,
        grads: &mut Grads,
        mut g: Vec<f32>,
        map: DeferredGrad,
    ) -> Result<(), dfdx::tensor::CpuError> {
        match &self.slot {
            Some(slot) if self.slot_is_empty() && crate::nn::ops::bn_grad::deferring() => {
                super::check_grad_len(g.len(), self.ptr.1);
                *slot.lock() = g;
                *locked(&slot.map) = Some(map);
                Ok(())
            }
            _ => {
                map.apply(&mut g);
                self.give(grads, g)
            }
        }
    }

    /// A handle to the same data without the gradient slot (held by a [`DeferredGrad`] kept in
    /// that slot, which would otherwise own itself).
    pub(crate) fn without_slot(&self) -> Saved {
        Saved { t: self.t.clone(), ptr: self.ptr, slot: None }
    }

    /// The map still pending on the gradient just taken from this value's slot by a backward that
    /// takes it unmapped ([`super::finish_unmapped`]).
    pub(crate) fn take_grad_map(&self) -> Option<DeferredGrad> {
        self.slot.as_ref().and_then(|s| locked(&s.map).take())
    }

    /// What this value's producer asks of the last contribution to its gradient, if anything
    /// ([`ResidualSums`]).
    pub(crate) fn residual_sums_wanted(&self) -> Option<ResidualSums> {
        self.slot.as_ref().and_then(|s| s.wants())
    }

    /// Drops what this value's producer asked of its gradient ([`Self::residual_sums_wanted`]).
    pub(crate) fn forget_residual_sums(&self) {
        if let Some(slot) = &self.slot {
            slot.forget_wants();
        }
    }

    /// Keeps `sums` with this value's gradient for [`Self::take_grad_sums`], the contribution just
    /// added in place having been the last so far (any later one drops them).
    pub(crate) fn set_grad_sums(&self, sums: Vec<(f64, f64)>) {
        if let Some(slot) = &self.slot {
            slot.set_sums(Some(sums));
        }
    }
}

impl<T> Var<T> {
    /// Asks the convolution that adds the last contribution to this (recorded) value's gradient to
    /// take `wants`' mask and sums as it adds ([`ResidualSums`]).
    pub(crate) fn want_residual_sums(&self, wants: ResidualSums) {
        if let Some(slot) = &self.slot {
            slot.set_wants(wants);
        }
    }
}

/// A value's gradient buffer, borrowed to add into ([`super::Saved::grad_buf`]).
pub(crate) enum GradBuf<'a> {
    Slot(MutexGuard<'a, Vec<f32>>),
    Leaf(&'a mut Vec<f32>),
}

impl std::ops::Deref for GradBuf<'_> {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match self {
            GradBuf::Slot(g) => g,
            GradBuf::Leaf(g) => g,
        }
    }
}

impl std::ops::DerefMut for GradBuf<'_> {
    fn deref_mut(&mut self) -> &mut [f32] {
        match self {
            GradBuf::Slot(g) => g,
            GradBuf::Leaf(g) => g,
        }
    }
}
