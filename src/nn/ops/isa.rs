//! The vector operations of the kernels written once for two widths ([`super::tight`]): [`W16`]
//! (AVX-512) and [`W8`] (AVX2 + FMA). Every method is `#[inline(always)]` and called only from
//! `#[target_feature]` entries of the matching width, so each compiles to its one instruction there.
use std::arch::x86_64::*;

pub trait Isa {
    /// Lanes per vector.
    const N: usize;
    type V: Copy;
    /// A load mask of `N` lanes.
    type M: Copy;
    unsafe fn zero() -> Self::V;
    unsafe fn set1(v: f32) -> Self::V;
    unsafe fn load(p: *const f32) -> Self::V;
    /// Lanes whose bit is set in `m` loaded, the others zero (and not read).
    unsafe fn load_masked(m: Self::M, p: *const f32) -> Self::V;
    /// The input of a left or right tap, whose lanes outside `m` must not count: AVX2 loads them
    /// as zero (and does not read them); AVX-512 loads every lane (all `N` must be readable) and
    /// [`Isa::tap_fmadd`] leaves those lanes out.
    unsafe fn tap_load(m: Self::M, p: *const f32) -> Self::V;
    /// `c + a * b` for `b` from [`Isa::tap_load`] with the same `m`. AVX-512: on the lanes of `m`
    /// only (one merge-masked FMA, which costs what an FMA costs; a zero-masking load takes a
    /// micro-op of the FMA ports); AVX2: on all lanes.
    unsafe fn tap_fmadd(m: Self::M, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    unsafe fn store(p: *mut f32, v: Self::V);
    /// The mask of the lanes whose bit is set in `bits`.
    unsafe fn mask(bits: u16) -> Self::M;
    unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
    /// `y` where `act > 0` (ordered: not where `act` is NaN), else `0`.
    unsafe fn where_positive(act: Self::V, y: Self::V) -> Self::V;
}

/// AVX-512: 16 lanes, mask registers.
pub struct W16;
/// AVX2 + FMA: 8 lanes, masks as vectors.
pub struct W8;

/// The methods that are one intrinsic each, for vectors `$v`.
macro_rules! one_intrinsic_each {
    ($v:ty: $zero:ident, $set1:ident, $load:ident, $store:ident, $fmadd:ident, [$add:ident, $sub:ident, $mul:ident, $max:ident]) => {
        #[inline(always)]
        unsafe fn zero() -> $v {
            $zero()
        }
        #[inline(always)]
        unsafe fn set1(v: f32) -> $v {
            $set1(v)
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> $v {
            $load(p)
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: $v) {
            $store(p, v)
        }
        #[inline(always)]
        unsafe fn fmadd(a: $v, b: $v, c: $v) -> $v {
            $fmadd(a, b, c)
        }
        #[inline(always)]
        unsafe fn add(a: $v, b: $v) -> $v {
            $add(a, b)
        }
        #[inline(always)]
        unsafe fn sub(a: $v, b: $v) -> $v {
            $sub(a, b)
        }
        #[inline(always)]
        unsafe fn mul(a: $v, b: $v) -> $v {
            $mul(a, b)
        }
        #[inline(always)]
        unsafe fn max(a: $v, b: $v) -> $v {
            $max(a, b)
        }
    };
}

impl Isa for W16 {
    const N: usize = 16;
    type V = __m512;
    type M = __mmask16;
    one_intrinsic_each!(__m512: _mm512_setzero_ps, _mm512_set1_ps, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_fmadd_ps,
        [_mm512_add_ps, _mm512_sub_ps, _mm512_mul_ps, _mm512_max_ps]);
    #[inline(always)]
    unsafe fn load_masked(m: __mmask16, p: *const f32) -> __m512 {
        _mm512_maskz_loadu_ps(m, p)
    }
    #[inline(always)]
    unsafe fn tap_load(_: __mmask16, p: *const f32) -> __m512 {
        _mm512_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn tap_fmadd(m: __mmask16, a: __m512, b: __m512, c: __m512) -> __m512 {
        fmadd_merge16(m, a, b, c)
    }
    #[inline(always)]
    unsafe fn mask(bits: u16) -> __mmask16 {
        bits
    }
    #[inline(always)]
    unsafe fn where_positive(act: __m512, y: __m512) -> __m512 {
        _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_GT_OQ>(act, _mm512_setzero_ps()), y)
    }
}

impl Isa for W8 {
    const N: usize = 8;
    type V = __m256;
    type M = __m256i;
    one_intrinsic_each!(__m256: _mm256_setzero_ps, _mm256_set1_ps, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_fmadd_ps,
        [_mm256_add_ps, _mm256_sub_ps, _mm256_mul_ps, _mm256_max_ps]);
    #[inline(always)]
    unsafe fn load_masked(m: __m256i, p: *const f32) -> __m256 {
        _mm256_maskload_ps(p, m)
    }
    #[inline(always)]
    unsafe fn tap_load(m: __m256i, p: *const f32) -> __m256 {
        Self::load_masked(m, p)
    }
    #[inline(always)]
    unsafe fn tap_fmadd(_: __m256i, a: __m256, b: __m256, c: __m256) -> __m256 {
        _mm256_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn mask(bits: u16) -> __m256i {
        let lane = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
        _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(i32::from(bits)), lane), lane)
    }
    #[inline(always)]
    unsafe fn where_positive(act: __m256, y: __m256) -> __m256 {
        _mm256_and_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(act, _mm256_setzero_ps()), y)
    }
}

/// `c + a * b` on the lanes of `m`, the others `c`, as one `vfmadd231ps` merging into `c` (the
/// intrinsic `_mm512_mask3_fmadd_ps` compiled to an FMA and a masked move, on the FMA ports too).
/// Its own `#[target_feature]` function so the assembly may name AVX-512 registers; it inlines into
/// the AVX-512 entries that call it.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn fmadd_merge16(m: __mmask16, a: __m512, b: __m512, mut c: __m512) -> __m512 {
    std::arch::asm!(
        "vfmadd231ps {c}{{{m}}}, {a}, {b}",
        c = inout(zmm_reg) c,
        m = in(kreg) m,
        a = in(zmm_reg) a,
        b = in(zmm_reg) b,
        options(pure, nomem, nostack, preserves_flags)
    );
    c
}
