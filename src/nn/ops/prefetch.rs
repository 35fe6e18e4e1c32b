//! Software prefetch for the passes that stream activations from memory a plane at a time (the
//! batch norms' passes).
//!
//! Such a pass reads each `(image, channel)` plane in turn (32x32 planes are one 4 KiB page). The
//! values come from memory, not cache: the activations of a batch (8 MiB a tensor at 16 x 32 x 32
//! x 128) were written in the forward pass long before. The hardware's L2 streamer does not cross a
//! 4 KiB page, so each plane's first lines are fetched at the full memory latency, and such a pass
//! ran latency-bound, not bandwidth-bound: on the Intel Xeon with AMX (family 6 model 167) the
//! residual batch norm's first backward pass (reading the output gradient, the output and the
//! input) took the same time with one of its three streams left out. Asking for the lines one
//! plane (at least 4 KiB) ahead while working on a plane keeps the loads in flight.

/// A buffer that a pass reads plane by plane, to prefetch from (it may be the buffer the pass
/// writes, as a mutably chunked gradient).
#[derive(Clone, Copy)]
pub(crate) struct Stream {
    ptr: *const f32,
    len: usize,
}

// SAFETY: the pointer is only handed to prefetch instructions, which read nothing architecturally
// and never fault.
unsafe impl Send for Stream {}
unsafe impl Sync for Stream {}

/// Values ahead of a plane's start that the prefetch reaches: one plane, and at least 4 KiB.
const MIN_AHEAD: usize = 1024;

impl Stream {
    pub(crate) fn of(v: &[f32]) -> Self {
        Self { ptr: v.as_ptr(), len: v.len() }
    }

    /// While plane `i` (of `hw` values) is worked on: brings the lines `max(hw, 1024)` values
    /// further on, as many as a plane has, towards the L2 cache. Plane by plane, every line is asked
    /// for once, one plane (or 4 KiB) before it is read. Nothing past the buffer.
    #[inline]
    pub(crate) fn ahead(self, i: usize, hw: usize) {
        let skip = hw.max(MIN_AHEAD);
        let (from, to) = ((i * hw + skip).min(self.len), ((i + 1) * hw + skip).min(self.len));
        #[cfg(target_arch = "x86_64")]
        for k in (from..to).step_by(16) {
            // SAFETY: `k < len`, inside the buffer; a prefetch has no architectural effect.
            unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(self.ptr.add(k).cast()) };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (from, to);
    }
}
