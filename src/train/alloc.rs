//! Process set-up for training and inference.

/// Keeps freed activation buffers in the heap instead of returning them to the OS: glibc's defaults
/// (mmap for blocks over 128 KiB, trimming) make every training step page-fault its activations
/// in again, costing about 30 % of a ResNet step. Called first thing by the CLI's `main`, and by the
/// training and benchmark entry points for library and notebook use; safe to call repeatedly.
///
/// - no trimming: freed memory stays in the heap for the next step's buffers;
/// - no `mmap` blocks at all: glibc's highest threshold is 32 MiB, and a larger block (ResNet-50's
///   224 px activations at batch 32 are 25-103 MB, ResNet-18's first stage at batch 128 33.5 MB) was
///   mapped afresh and unmapped on every use, each first write a page fault and a zeroed page;
/// - one arena for all threads: a worker thread's own arena holds at most 64 MiB a heap and maps
///   anything larger, and each arena keeps its freed memory apart from the others'.
///
/// AMD EPYC family 25 model 17, 2 threads: torchvision ResNet-50 at 224 px, batch 32, 6.7-6.9 ->
/// 5.3-5.8 s a training step (`clear_page_erms` and the page-fault path had been 14 % of `perf`'s
/// samples), peak RSS 5.4 -> 3.2 GB; CIFAR ResNet-18 b128 +6 % training, +8-10 % inference, peak RSS
/// 1.17 -> 0.78 GB; ResNet-20/56 within noise. Call it before any other thread allocates: threads
/// that allocated before keep their own arena, and a thread started later may share theirs
/// (`tests/allocator.rs`).
pub fn tune_allocator() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes allocator parameters.
        unsafe {
            libc::mallopt(libc::M_MMAP_MAX, 0);
            libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    });
}
