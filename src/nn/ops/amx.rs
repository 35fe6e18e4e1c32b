//! bf16 mixed precision on Intel AMX tiles: the 3x3 / stride 1 / padding 1 convolutions (forward
//! and input gradient in [`super::amx_conv`], weight gradient in [`super::amx_wgrad`]) with their
//! inputs, weights and output gradients rounded to bf16 (round to nearest even) and every sum in
//! f32, as `torch.autocast("cpu", dtype=torch.bfloat16)` runs a convolution; the weights, their
//! gradients, the optimiser and every other op stay f32. Off unless asked for:
//! `KDSCOPE_PRECISION=bf16`, or [`with_bf16`]; only where the CPU has AMX-BF16 and the OS grants the
//! tile state ([`available`]).
//!
//! This file: the mode, the CPU and OS checks, the rounding, and the tile operations both kernels
//! use (configuration, zero / load / store of the C tiles, one K step's loads and products), written
//! as inline assembly (Rust's AMX intrinsics are not stable): tiles 0-3 hold C (f32 sums), 4-5 A,
//! 6-7 B (tile 5 a fourth B with one block of A, [`step_single`]).
use std::arch::asm;
use std::cell::Cell;
use std::sync::OnceLock;

/// The values `KDSCOPE_PRECISION` accepts (`fp32`, the default, or `bf16`).
pub const PRECISIONS: [&str; 2] = ["fp32", "bf16"];

/// Whether this CPU has AMX-BF16 tiles (cpuid leaf 7: AMX-BF16, EDX bit 22; AMX-TILE, bit 24) and
/// AVX-512 (F, BW: the copies and epilogues around the tiles are compiled for it), and Linux grants
/// this process the tiles' state (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`, Linux 5.16
/// or later); checked once.
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(detect)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    use std::arch::x86_64::{__cpuid, __cpuid_count};
    // cpuid leaf 7 is read where the CPU reports it (the highest leaf checked first).
    let has = __cpuid(0).eax >= 7 && {
        let edx = __cpuid_count(7, 0).edx;
        edx & (1 << 22) != 0 && edx & (1 << 24) != 0
    };
    let vectors = is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw");
    // SAFETY: arch_prctl with these arguments only asks for a permission; it returns 0 or an error.
    has && vectors && unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) } == 0
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// Whether the environment's `KDSCOPE_PRECISION` asks for bf16 ([`parse_precision`]).
fn env_precision() -> anyhow::Result<bool> {
    parse_precision(std::env::var("KDSCOPE_PRECISION").ok().as_deref())
}

/// Whether `KDSCOPE_PRECISION` asks for bf16 (an unknown value is refused: [`check_precision_env`]).
pub(crate) fn parse_precision(value: Option<&str>) -> anyhow::Result<bool> {
    match value {
        None | Some("fp32") => Ok(false),
        Some("bf16") => Ok(true),
        Some(v) => anyhow::bail!("KDSCOPE_PRECISION is {v:?}: expected one of {}", PRECISIONS.join(", ")),
    }
}

/// Checks `KDSCOPE_PRECISION`: an error that names a value other than `fp32` or `bf16`, or `bf16`
/// on a CPU or OS without AMX-BF16 tiles.
pub fn check_precision_env() -> anyhow::Result<()> {
    if env_precision()? && !available() {
        anyhow::bail!(
            "KDSCOPE_PRECISION=bf16 runs on AMX-BF16 tiles (Intel Xeon 4th generation or later, Linux 5.16 or \
             later), which this CPU or OS does not offer"
        );
    }
    Ok(())
}

/// Whether the 3x3 stride-1 convolutions on this thread run in bf16 on AMX tiles: asked for
/// (`KDSCOPE_PRECISION=bf16`, or inside [`with_bf16`]) and [`available`]. The convolution decides
/// once per call, on the calling thread (its backward follows its forward).
pub fn bf16_active() -> bool {
    static ENV: OnceLock<bool> = OnceLock::new();
    let env = *ENV.get_or_init(|| {
        env_precision().unwrap_or_else(|e| {
            eprintln!("warning: {e:#}; convolutions stay fp32");
            false
        })
    });
    (env || super::cpu::BF16.with(Cell::get)) && available()
}

/// Runs `f` with the bf16 convolutions on this thread (and the pool's work it starts), where
/// [`available`]: as `KDSCOPE_PRECISION=bf16` does for the whole process.
pub fn with_bf16<R>(f: impl FnOnce() -> R) -> R {
    super::with_flag(&super::cpu::BF16, f)
}

/// `x` rounded to the nearest bf16, ties to even (NaN stays NaN). Branch-free, so loops of it
/// vectorise.
#[inline(always)]
pub fn bf16(x: f32) -> u16 {
    let b = x.to_bits();
    let rounded = b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16;
    let nan = (b & 0x7fff_ffff) > 0x7f80_0000;
    (if nan { (b >> 16) | 0x40 } else { rounded }) as u16
}

/// Two values rounded to bf16 side by side (`lo` first in memory): one 32-bit pair of the VNNI
/// layout.
#[inline(always)]
pub fn pair(lo: f32, hi: f32) -> u32 {
    bf16(lo) as u32 | (bf16(hi) as u32) << 16
}

/// The f32 value of a bf16.
#[inline(always)]
pub fn f32_of(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// The layout of one AMX tile register (palette 1): the 64-byte operand of `ldtilecfg`.
#[repr(C, align(64))]
pub(super) struct TileCfg {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

impl TileCfg {
    /// Tiles 0-3 (C): 16 rows of `c_bytes`; 4-5 (A): 16 rows of `a_bytes`; 6-7 (B): `b_rows` rows
    /// of `c_bytes`.
    pub(super) fn gemm(c_bytes: usize, a_bytes: usize, b_rows: usize) -> Self {
        let mut cfg = TileCfg { palette: 1, start_row: 0, reserved: [0; 14], colsb: [0; 16], rows: [0; 16] };
        for t in 0..8 {
            (cfg.colsb[t], cfg.rows[t]) = match t {
                0..4 => (c_bytes as u16, 16),
                4..6 => (a_bytes as u16, 16),
                _ => (c_bytes as u16, b_rows as u8),
            };
        }
        cfg
    }

    /// Tiles 0-3 (C): 16 rows of `c_bytes`; 4 (A): 16 rows of `a_bytes`; 5-7 (B): `b_rows` rows of
    /// `c_bytes` ([`step_single`]).
    pub(super) fn gemm_single(c_bytes: usize, a_bytes: usize, b_rows: usize) -> Self {
        let mut cfg = Self::gemm(c_bytes, a_bytes, b_rows);
        (cfg.colsb[5], cfg.rows[5]) = (c_bytes as u16, b_rows as u8);
        cfg
    }

    /// Loads this configuration, runs `f` (which zeroes or loads its C tiles) and releases the tiles.
    pub(super) fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        assert!(available(), "AMX tiles used where the CPU or OS has none");
        // SAFETY: the CPU runs AMX instructions and the process may use the tile state (asserted).
        unsafe { asm!("ldtilecfg [{}]", in(reg) self, options(nostack, readonly)) };
        let r = f();
        // SAFETY: as above.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
        r
    }
}

/// Zeroes the C tiles (0-3).
pub(super) fn zero_c() {
    // SAFETY: only called inside `TileCfg::run` (tiles configured).
    unsafe { asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem)) };
}

/// Stores the C tiles (0-3) into `s`, each 16 rows of 64 bytes.
pub(super) fn store_c(s: &mut Scratch) {
    // SAFETY: only called inside `TileCfg::run`; the scratch holds 4 tiles of 16 rows x 64 bytes.
    unsafe {
        let s = s.0.as_mut_ptr();
        asm!(
            "tilestored [{s} + {st}], tmm0", "tilestored [{t1} + {st}], tmm1",
            "tilestored [{t2} + {st}], tmm2", "tilestored [{t3} + {st}], tmm3",
            s = in(reg) s, t1 = in(reg) s.add(1), t2 = in(reg) s.add(2), t3 = in(reg) s.add(3),
            st = in(reg) 64usize, options(nostack)
        );
    }
}

/// Loads C tile `t` (0-3) from 16 rows `stride` bytes apart at `p`.
pub(super) fn load_tile(t: usize, p: *const f32, stride: usize) {
    // SAFETY: only called inside `TileCfg::run`, with `p` addressing the tile's rows in the output.
    unsafe {
        match t {
            0 => asm!("tileloadd tmm0, [{p} + {s}]", p = in(reg) p, s = in(reg) stride, options(nostack, readonly)),
            1 => asm!("tileloadd tmm1, [{p} + {s}]", p = in(reg) p, s = in(reg) stride, options(nostack, readonly)),
            2 => asm!("tileloadd tmm2, [{p} + {s}]", p = in(reg) p, s = in(reg) stride, options(nostack, readonly)),
            _ => asm!("tileloadd tmm3, [{p} + {s}]", p = in(reg) p, s = in(reg) stride, options(nostack, readonly)),
        }
    }
}

/// Stores C tile `t` (0-3) into 16 rows `stride` bytes apart at `p`.
pub(super) fn store_tile(t: usize, p: *mut f32, stride: usize) {
    // SAFETY: only called inside `TileCfg::run`, with `p` addressing the tile's rows in the output.
    unsafe {
        match t {
            0 => asm!("tilestored [{p} + {s}], tmm0", p = in(reg) p, s = in(reg) stride, options(nostack)),
            1 => asm!("tilestored [{p} + {s}], tmm1", p = in(reg) p, s = in(reg) stride, options(nostack)),
            2 => asm!("tilestored [{p} + {s}], tmm2", p = in(reg) p, s = in(reg) stride, options(nostack)),
            _ => asm!("tilestored [{p} + {s}], tmm3", p = in(reg) p, s = in(reg) stride, options(nostack)),
        }
    }
}

#[repr(C, align(64))]
pub(super) struct Scratch(pub(super) [[[f32; 16]; 16]; 4]);

/// One K step: `C[cb * 2 + r] += A[cb] . B[r]` for `nc` A tiles and `nr` B tiles (tiles 0-3:
/// C, 4-5: A, 6-7: B).
///
/// # Safety
/// Tiles configured ([`TileCfg::run`]); the pointers address whole tiles at their strides.
#[inline(always)]
pub(super) unsafe fn step(
    nc: usize,
    nr: usize,
    (a0, a1, sa): (*const u16, *const u16, usize),
    (b0, b1, sb): (*const u16, *const u16, usize),
) {
    unsafe {
        match (nc, nr) {
            (2, 2) => asm!(
                "tileloadd tmm4, [{a0} + {sa}]", "tileloadd tmm5, [{a1} + {sa}]",
                "tileloadd tmm6, [{b0} + {sb}]", "tileloadd tmm7, [{b1} + {sb}]",
                "tdpbf16ps tmm0, tmm4, tmm6", "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6", "tdpbf16ps tmm3, tmm5, tmm7",
                a0 = in(reg) a0, a1 = in(reg) a1, sa = in(reg) sa, b0 = in(reg) b0, b1 = in(reg) b1, sb = in(reg) sb,
                options(nostack, readonly)
            ),
            (1, 2) => asm!(
                "tileloadd tmm4, [{a0} + {sa}]", "tileloadd tmm6, [{b0} + {sb}]", "tileloadd tmm7, [{b1} + {sb}]",
                "tdpbf16ps tmm0, tmm4, tmm6", "tdpbf16ps tmm1, tmm4, tmm7",
                a0 = in(reg) a0, sa = in(reg) sa, b0 = in(reg) b0, b1 = in(reg) b1, sb = in(reg) sb,
                options(nostack, readonly)
            ),
            (2, 1) => asm!(
                "tileloadd tmm4, [{a0} + {sa}]", "tileloadd tmm5, [{a1} + {sa}]", "tileloadd tmm6, [{b0} + {sb}]",
                "tdpbf16ps tmm0, tmm4, tmm6", "tdpbf16ps tmm2, tmm5, tmm6",
                a0 = in(reg) a0, a1 = in(reg) a1, sa = in(reg) sa, b0 = in(reg) b0, sb = in(reg) sb,
                options(nostack, readonly)
            ),
            _ => asm!(
                "tileloadd tmm4, [{a0} + {sa}]", "tileloadd tmm6, [{b0} + {sb}]", "tdpbf16ps tmm0, tmm4, tmm6",
                a0 = in(reg) a0, sa = in(reg) sa, b0 = in(reg) b0, sb = in(reg) sb,
                options(nostack, readonly)
            ),
        }
    }
}

/// One K step of one A tile and `k` (1-4) B tiles: `C[j] += A . B[j]` (tiles 0-3: C, 4: A, 5-7:
/// B; the fourth B reuses tile 5 once its product has read it).
///
/// # Safety
/// Tiles configured by [`TileCfg::gemm_single`]; the pointers address whole tiles at their strides.
#[inline(always)]
pub(super) unsafe fn step_single(k: usize, (a, sa): (*const u16, usize), b: [*const u16; 4], sb: usize) {
    unsafe {
        match k {
            4 => asm!(
                "tileloadd tmm4, [{a} + {sa}]", "tileloadd tmm5, [{b0} + {sb}]",
                "tileloadd tmm6, [{b1} + {sb}]", "tileloadd tmm7, [{b2} + {sb}]",
                "tdpbf16ps tmm0, tmm4, tmm5", "tdpbf16ps tmm1, tmm4, tmm6", "tdpbf16ps tmm2, tmm4, tmm7",
                "tileloadd tmm5, [{b3} + {sb}]", "tdpbf16ps tmm3, tmm4, tmm5",
                a = in(reg) a, sa = in(reg) sa, b0 = in(reg) b[0], b1 = in(reg) b[1], b2 = in(reg) b[2],
                b3 = in(reg) b[3], sb = in(reg) sb, options(nostack, readonly)
            ),
            3 => asm!(
                "tileloadd tmm4, [{a} + {sa}]", "tileloadd tmm5, [{b0} + {sb}]",
                "tileloadd tmm6, [{b1} + {sb}]", "tileloadd tmm7, [{b2} + {sb}]",
                "tdpbf16ps tmm0, tmm4, tmm5", "tdpbf16ps tmm1, tmm4, tmm6", "tdpbf16ps tmm2, tmm4, tmm7",
                a = in(reg) a, sa = in(reg) sa, b0 = in(reg) b[0], b1 = in(reg) b[1], b2 = in(reg) b[2],
                sb = in(reg) sb, options(nostack, readonly)
            ),
            2 => asm!(
                "tileloadd tmm4, [{a} + {sa}]", "tileloadd tmm5, [{b0} + {sb}]", "tileloadd tmm6, [{b1} + {sb}]",
                "tdpbf16ps tmm0, tmm4, tmm5", "tdpbf16ps tmm1, tmm4, tmm6",
                a = in(reg) a, sa = in(reg) sa, b0 = in(reg) b[0], b1 = in(reg) b[1], sb = in(reg) sb,
                options(nostack, readonly)
            ),
            _ => asm!(
                "tileloadd tmm4, [{a} + {sa}]", "tileloadd tmm5, [{b0} + {sb}]", "tdpbf16ps tmm0, tmm4, tmm5",
                a = in(reg) a, sa = in(reg) sa, b0 = in(reg) b[0], sb = in(reg) sb, options(nostack, readonly)
            ),
        }
    }
}
