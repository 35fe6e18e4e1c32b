//! The gradient slot of a recorded op's value (see the parent module's docs).
use std::sync::{Arc, Mutex, MutexGuard};

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
