//! What this CPU offers the kernels: the SIMD level run-time dispatch picks and the cache sizes
//! that size their blocks.

/// The instantiation of the SIMD kernels that run-time dispatch picks on this CPU.
pub fn simd_level() -> &'static str {
    match f32_lanes() {
        16 => "AVX-512 (16 lanes)",
        8 => "AVX2 + FMA (8 lanes)",
        _ => "portable (no AVX2)",
    }
}

/// f32 lanes of the vectors run-time dispatch picks on this CPU (16, 8, or 4 and fewer without
/// AVX2 + FMA), found once.
pub fn f32_lanes() -> usize {
    struct Lanes;
    impl pulp::WithSimd for Lanes {
        type Output = usize;
        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _: S) -> usize {
            S::F32_LANES
        }
    }
    static LANES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *LANES.get_or_init(|| pulp::Arch::new().dispatch(Lanes))
}

thread_local! {
    pub(super) static NARROW: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the kernels written for AVX-512 only ([`super::tight`], [`super::wgrad16`]) may run on
/// this thread: the CPU has AVX-512 and [`without_wide_kernels`] is not in force. The convolution
/// decides once per call, on the calling thread.
pub fn wide_kernels() -> bool {
    f32_lanes() == 16 && !NARROW.with(|n| n.get())
}

/// Runs `f` with the AVX-512-only kernels off on this thread, so the convolutions take the paths an
/// AVX2 CPU takes (the planar kernels, still at this CPU's vector width): for tests that compare
/// both on one machine.
pub fn without_wide_kernels<R>(f: impl FnOnce() -> R) -> R {
    super::with_flag(&NARROW, f)
}

/// Runs `f` compiled for the widest vector instructions this CPU has (AVX-512, AVX2 + FMA, or the
/// baseline), chosen at run time. The crate is built for baseline x86-64 (SSE2), where the
/// element-wise loops around the kernels (copies, batch norm) would run 4 lanes wide; inlined into
/// `pulp`'s per-level functions they are vectorised for the level that runs.
#[inline(always)]
pub(crate) fn multiversioned<R>(f: impl FnOnce() -> R) -> R {
    pulp::Arch::new().dispatch(f)
}

/// Bytes of this CPU's level-`level` data cache per core (Linux sysfs), read once; `fallback` where
/// it cannot be read.
pub fn cache_bytes(level: u8, fallback: usize) -> usize {
    static SIZES: std::sync::OnceLock<[Option<usize>; 4]> = std::sync::OnceLock::new();
    let sizes = SIZES.get_or_init(|| {
        let mut out = [None; 4];
        for i in 0..8 {
            let dir = format!("/sys/devices/system/cpu/cpu0/cache/index{i}");
            let read = |f: &str| std::fs::read_to_string(format!("{dir}/{f}")).ok().map(|s| s.trim().to_string());
            let (Some(lv), Some(kind), Some(size)) = (read("level"), read("type"), read("size")) else { continue };
            if let (Ok(lv), Some(bytes)) = (lv.parse::<usize>(), parse_size(&size)) {
                if kind != "Instruction" && lv < 4 && bytes >= 16 << 10 {
                    out[lv] = Some(bytes);
                }
            }
        }
        out
    });
    sizes.get(level as usize).copied().flatten().unwrap_or(fallback)
}

/// A sysfs cache size (`48K`, `2048K`, `32M`, `65536`) in bytes.
fn parse_size(s: &str) -> Option<usize> {
    let (num, mult) = match (s.strip_suffix('K'), s.strip_suffix('M')) {
        (Some(n), _) => (n, 1 << 10),
        (_, Some(n)) => (n, 1 << 20),
        _ => (s, 1),
    };
    num.parse::<usize>().ok()?.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_sizes_parse_and_fall_back() {
        assert_eq!(parse_size("48K"), Some(48 << 10));
        assert_eq!(parse_size("32M"), Some(32 << 20));
        assert_eq!(parse_size("65536"), Some(65536));
        assert_eq!(parse_size("big"), None);
        assert_eq!(cache_bytes(3 + 6, 777), 777);
        if std::path::Path::new("/sys/devices/system/cpu/cpu0/cache/index0/size").exists() {
            assert!(cache_bytes(1, 0) >= 16 << 10);
        }
    }
}
