//! `train::tune_allocator` in a process of its own (no test harness: its threads would hold malloc
//! arenas of their own before the call, as a notebook's would): large buffers made by other threads
//! come from the one heap and stay there for the next step, instead of being mapped afresh.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn main() {
    kdscope::train::tune_allocator();
    // Bytes glibc holds in mmap'd blocks, and in its heaps (every arena's).
    let held = || {
        // SAFETY: mallinfo2 only reads the allocator's counters.
        let m = unsafe { libc::mallinfo2() };
        (m.hblkhd, m.arena)
    };
    let n = 96 << 20;
    let (mapped0, heap0) = held();
    // A 96 MiB buffer (more than glibc's highest mmap threshold, 32 MiB, and a thread arena's 64
    // MiB heap) made, filled and dropped by a new thread, three times in turn: as a training step's
    // activations are, step after step.
    for round in 0..3 {
        std::thread::spawn(move || {
            let v = vec![1u8; n];
            let (mapped, heap) = held();
            assert!(
                mapped < mapped0 + n,
                "round {round}: the {n}-byte buffer was mmap'd ({mapped0} -> {mapped} bytes in mmap'd blocks)"
            );
            assert!(heap >= heap0 + n, "round {round}: the heaps hold {heap} bytes ({heap0} before) with {n} in use");
            std::hint::black_box(v);
        })
        .join()
        .unwrap();
    }
    let (_, heap) = held();
    assert!(heap < heap0 + 2 * n, "three {n}-byte buffers in turn grew the heaps {heap0} -> {heap} bytes: not reused");
    println!("test allocator: large buffers from other threads come from the one heap and are reused ... ok");
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn main() {}
