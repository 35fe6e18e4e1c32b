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
    *LANES.get_or_init(|| arch().dispatch(Lanes))
}

/// The SIMD levels [`arch`] can be held to by `KDSCOPE_SIMD`.
pub const SIMD_LEVELS: [&str; 3] = ["avx512", "avx2", "portable"];

/// The instruction set every kernel dispatches to: the widest this CPU has, or a narrower one where
/// the environment variable `KDSCOPE_SIMD` asks for it (`avx2`: AVX2 + FMA, 8 lanes, the AMD Zen 3
/// machines' level; `portable`: no AVX2; `avx512`: the widest, as unset). So the kernels an AVX2
/// CPU runs can be run, tested and timed on an AVX-512 machine. The matrix products of the
/// `gemm` crate (stride-2 and 1x1 convolutions through im2col, linear layers) keep their own
/// dispatch. A value that is not one of [`SIMD_LEVELS`], or asks for a level this CPU lacks, is
/// refused by [`check_simd_env`] (the command line checks it before anything runs); in a library
/// or notebook the kernels then say so once on stderr and use the widest level.
pub fn arch() -> pulp::Arch {
    static ARCH: std::sync::OnceLock<pulp::Arch> = std::sync::OnceLock::new();
    *ARCH.get_or_init(|| {
        level_arch(std::env::var("KDSCOPE_SIMD").ok().as_deref()).unwrap_or_else(|e| {
            eprintln!("kdscope: {e}; the kernels use the widest level this CPU has");
            pulp::Arch::new()
        })
    })
}

/// Checks `KDSCOPE_SIMD` (see [`arch`]): an error that names the value and the accepted ones.
pub fn check_simd_env() -> anyhow::Result<()> {
    level_arch(std::env::var("KDSCOPE_SIMD").ok().as_deref()).map(|_| ())
}

/// The dispatch for a requested level (`None`: the widest).
fn level_arch(level: Option<&str>) -> anyhow::Result<pulp::Arch> {
    let best = pulp::Arch::new();
    let Some(level) = level.map(str::trim).filter(|l| !l.is_empty()) else { return Ok(best) };
    let accepted = SIMD_LEVELS.join(", ");
    #[cfg(target_arch = "x86_64")]
    {
        use pulp::x86::{V3, V4};
        let arch = match level.to_ascii_lowercase().as_str() {
            "avx512" => V4::try_new().map(pulp::Arch::V4),
            "avx2" => V3::try_new().map(pulp::Arch::V3),
            "portable" => Some(pulp::Arch::Scalar),
            _ => anyhow::bail!("KDSCOPE_SIMD is {level:?}: expected one of {accepted}"),
        };
        arch.ok_or_else(|| anyhow::anyhow!("KDSCOPE_SIMD is {level:?}, which this CPU does not have"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        anyhow::ensure!(SIMD_LEVELS.contains(&level), "KDSCOPE_SIMD is {level:?}: expected one of {accepted}");
        Ok(best)
    }
}

thread_local! {
    pub(super) static PLANAR: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    pub(super) static AVX2_KERNELS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// bf16 convolutions on AMX tiles asked for on this thread (`amx::with_bf16`).
    pub(super) static BF16: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The vector width of the tight-plane and channel-blocked kernels ([`super::tight`],
/// [`super::wgrad_blocked`]) on this thread: 16 (AVX-512), 8 (AVX2 + FMA, or AVX-512 under
/// [`with_avx2_kernels`]), or 0 where neither runs and the planar kernels serve (no AVX2, or
/// [`with_planar_kernels`] in force). The convolution decides once per call, on the calling
/// thread.
pub fn kernel_lanes() -> usize {
    let lanes = f32_lanes();
    if PLANAR.with(|n| n.get()) || lanes < 8 {
        0
    } else if AVX2_KERNELS.with(|n| n.get()) {
        8
    } else {
        lanes.min(16)
    }
}

/// Runs `f` with the tight-plane and channel-blocked kernels off on this thread, so the
/// convolutions take the planar kernels (at this CPU's vector width), as a CPU without those
/// kernels would: for tests that compare both on one machine.
pub fn with_planar_kernels<R>(f: impl FnOnce() -> R) -> R {
    super::with_flag(&PLANAR, f)
}

/// Whether the tight-plane and channel-blocked kernels of vectors of `lanes` (16: AVX-512, 8: AVX2
/// + FMA) can run: the dispatch level ([`arch`]) reaches that width.
pub fn width_runs(lanes: usize) -> bool {
    matches!(lanes, 8 | 16) && f32_lanes() >= lanes
}

/// Runs `f` with the tight-plane and channel-blocked kernels at their AVX2 width (8 lanes) on this
/// thread, where the CPU has AVX2 + FMA (the other kernels keep the dispatch's width): for tests
/// that check the AVX2 kernels on an AVX-512 machine.
pub fn with_avx2_kernels<R>(f: impl FnOnce() -> R) -> R {
    super::with_flag(&AVX2_KERNELS, f)
}

/// Runs `f` compiled for the vector instructions [`arch`] picks (the widest this CPU has, AVX-512,
/// AVX2 + FMA or the baseline, unless `KDSCOPE_SIMD` holds it lower), chosen at run time. The crate is built for baseline x86-64 (SSE2), where the
/// element-wise loops around the kernels (copies, batch norm) would run 4 lanes wide; inlined into
/// `pulp`'s per-level functions they are vectorised for the level that runs.
#[inline(always)]
pub(crate) fn multiversioned<R>(f: impl FnOnce() -> R) -> R {
    arch().dispatch(f)
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

    #[test]
    fn simd_levels_are_checked() {
        let e = level_arch(Some("avx3")).unwrap_err().to_string();
        assert!(e.contains("\"avx3\"") && e.contains("avx512, avx2, portable"), "{e}");
        assert!(matches!(level_arch(Some("portable")), Ok(pulp::Arch::Scalar)));
        assert!(level_arch(None).is_ok() && level_arch(Some(" ")).is_ok());
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
            assert_eq!(matches!(level_arch(Some("AVX2")), Ok(pulp::Arch::V3(_))), avx2);
            if !is_x86_feature_detected!("avx512f") {
                let e = level_arch(Some("avx512")).unwrap_err().to_string();
                assert!(e.contains("does not have"), "{e}");
            }
        }
    }
}
