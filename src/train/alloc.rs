//! Process set-up for training and inference.

/// Keeps freed activation buffers in the heap instead of returning them to the OS: glibc's defaults
/// (mmap for blocks over 128 KiB, trimming) make every training step page-fault its activations
/// in again, costing about 30 % of a ResNet step. Called once by the training entry points; safe to
/// call repeatedly.
pub fn tune_allocator() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes allocator parameters.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        }
    });
}
