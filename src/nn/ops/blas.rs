//! Strided single-precision GEMM on top of the `gemm` crate (AVX-512 path enabled), and the
//! threading policy shared by the ops.
use rayon::prelude::*;

/// A read-only strided matrix view: element (i, j) is at `ptr[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    pub data: &'a [f32],
    pub rs: isize,
    pub cs: isize,
}

impl<'a> Mat<'a> {
    /// Row-major `rows x cols` matrix.
    pub fn rm(data: &'a [f32], cols: usize) -> Self {
        Self { data, rs: cols as isize, cs: 1 }
    }
    /// The transpose of a row-major matrix with `cols` columns.
    pub fn rm_t(data: &'a [f32], cols: usize) -> Self {
        Self { data, rs: 1, cs: cols as isize }
    }
}

/// `c (m x n, row-major with row stride ldc) (+)= a (m x k) * b (k x n)`; see [`sgemm_strided`].
///
/// With `accumulate` the product is added to `c`, otherwise `c` is overwritten.
/// `threads > 1` lets the GEMM split its work over the rayon pool (used when the caller does not
/// parallelise over the batch itself).
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    a: Mat,
    b: Mat,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    threads: usize,
) {
    sgemm_strided(m, n, k, a, b, c, (ldc, 1), accumulate, threads)
}

/// `c (+)= a * b` with `c`'s element (i, j) at `c[i * c_strides.0 + j * c_strides.1]`.
///
/// The `gemm` crate is up to 8x faster on some skinny shapes when the destination is column-major
/// (e.g. conv weight gradients: 16 x 144 with k = 1024), so callers pick the faster layout.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm_strided(
    m: usize,
    n: usize,
    k: usize,
    a: Mat,
    b: Mat,
    c: &mut [f32],
    c_strides: (usize, usize),
    accumulate: bool,
    threads: usize,
) {
    // SAFETY: `c` is exclusively borrowed and initialised.
    unsafe { sgemm_raw(m, n, k, a, b, (c.as_mut_ptr(), c.len()), c_strides, accumulate, threads) }
}

/// [`sgemm`] (overwriting) into values not written yet: every element of the `m x n` block of
/// `c` (row stride `ldc`) is written and none is read, as the `gemm` crate does not read its
/// destination without `read_dst` (its kernels' "alpha status" 0). Saves the zero fill a buffer
/// about to be overwritten would otherwise take.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm_uninit(
    m: usize,
    n: usize,
    k: usize,
    a: Mat,
    b: Mat,
    c: &mut [std::mem::MaybeUninit<f32>],
    ldc: usize,
    threads: usize,
) {
    // SAFETY: `c` is exclusively borrowed, and written, not read, without `accumulate`.
    unsafe { sgemm_raw(m, n, k, a, b, (c.as_mut_ptr().cast(), c.len()), (ldc, 1), false, threads) }
}

/// The GEMM of [`sgemm_strided`] into the `c_len` values at `c`, read only with `accumulate`;
/// every view's bounds checked here.
///
/// # Safety
/// `c` must be valid for writes (and, with `accumulate`, reads) of `c_len` values, and not aliased
/// by `a` or `b`.
#[allow(clippy::too_many_arguments)]
unsafe fn sgemm_raw(
    m: usize,
    n: usize,
    k: usize,
    a: Mat,
    b: Mat,
    (c, c_len): (*mut f32, usize),
    c_strides: (usize, usize),
    accumulate: bool,
    threads: usize,
) {
    let (crs, ccs) = c_strides;
    if m == 0 || n == 0 {
        return;
    }
    assert!((m - 1) * crs + (n - 1) * ccs < c_len);
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    // SAFETY: inside `c`'s `c_len` values (the bound above).
                    unsafe { c.add(i * crs + j * ccs).write(0.0) };
                }
            }
        }
        return;
    }
    // Bounds: the furthest element each view touches must be inside its slice.
    let last = |mat: &Mat, r: usize, cc: usize| (r as isize - 1) * mat.rs + (cc as isize - 1) * mat.cs;
    assert!(last(&a, m, k) < a.data.len() as isize && a.rs >= 0 && a.cs >= 0);
    assert!(last(&b, k, n) < b.data.len() as isize && b.rs >= 0 && b.cs >= 0);
    let par = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: all three views were bounds-checked above; `c` is the caller's.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c,
            ccs as isize,
            crs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs,
            a.rs,
            b.data.as_ptr(),
            b.cs,
            b.rs,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// A zero-filled buffer; large ones are filled by all threads (a serial memset of every activation
/// and gradient buffer costs several percent of a training step).
pub(crate) fn zeroed(n: usize) -> Vec<f32> {
    if n < 1 << 16 {
        return vec![0.0; n];
    }
    let mut v = Vec::with_capacity(n);
    (0..n).into_par_iter().with_min_len(1 << 14).map(|_| 0.0f32).collect_into_vec(&mut v);
    v
}

/// A buffer of `n` values written once each, in chunks of `chunk` values, by `fill(index, chunk)`
/// (in parallel when `par`), without zero-filling it first; with what `fill` returned for each
/// chunk, in order. `fill` must write every value of the chunk it is given (`MaybeUninit::write`);
/// the last chunk is shorter where `n` is not a multiple of `chunk`.
pub(crate) fn written<R: Send>(
    n: usize,
    chunk: usize,
    par: bool,
    fill: impl Fn(usize, &mut [std::mem::MaybeUninit<f32>]) -> R + Sync + Send,
) -> (Vec<f32>, Vec<R>) {
    assert!(n == 0 || chunk > 0, "written: {n} values in chunks of 0");
    let (mut out, chunk) = (Vec::with_capacity(n), chunk.max(1));
    let spare = &mut out.spare_capacity_mut()[..n];
    let ret = if par {
        spare.par_chunks_mut(chunk).enumerate().map(|(i, o)| fill(i, o)).collect()
    } else {
        spare.chunks_mut(chunk).enumerate().map(|(i, o)| fill(i, o)).collect()
    };
    // SAFETY: the chunks cover all `n` values and `fill` wrote each of them (its contract).
    unsafe { out.set_len(n) };
    (out, ret)
}

/// Number of worker threads of the rayon pool.
pub(crate) fn threads() -> usize {
    rayon::current_num_threads().max(1)
}

/// A raw pointer that may be shared across rayon tasks writing disjoint parts of one buffer.
#[derive(Clone, Copy)]
pub(crate) struct SyncPtr(pub *mut f32);
// SAFETY: users write disjoint index ranges only.
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}

impl SyncPtr {
    /// # Safety
    /// The range must be in bounds and not accessed by any other task at the same time.
    pub unsafe fn slice<'a>(self, start: usize, len: usize) -> &'a mut [f32] {
        std::slice::from_raw_parts_mut(self.0.add(start), len)
    }
    /// [`Self::slice`] of memory that may not be initialised yet (a `Vec`'s spare capacity).
    ///
    /// # Safety
    /// As [`Self::slice`], within the allocation.
    pub unsafe fn slice_uninit<'a>(self, start: usize, len: usize) -> &'a mut [std::mem::MaybeUninit<f32>] {
        std::slice::from_raw_parts_mut(self.0.add(start).cast(), len)
    }
}

const PAR_CHUNK: usize = 1 << 14;

/// A copy of `src`, made by all threads for large buffers.
pub(crate) fn copied_par(src: &[f32]) -> Vec<f32> {
    let mut v = Vec::with_capacity(src.len());
    src.par_iter().with_min_len(PAR_CHUNK).copied().collect_into_vec(&mut v);
    v
}

/// `dst += src`, element-wise, by all threads for large buffers.
pub(crate) fn add_into_par(dst: &mut [f32], src: &[f32]) {
    dst.par_chunks_mut(PAR_CHUNK).zip(src.par_chunks(PAR_CHUNK)).for_each(|(d, s)| add_into(d, s));
}

/// `dst += src`, element-wise.
pub(crate) fn add_into(dst: &mut [f32], src: &[f32]) {
    debug_assert_eq!(dst.len(), src.len());
    for (d, s) in dst.iter_mut().zip(src) {
        *d += *s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    #[test]
    fn sgemm_matches_naive_in_all_layouts() {
        let (m, n, k) = (7, 5, 9);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.91).cos()).collect();
        let want = naive(m, n, k, &a, &b);
        let mut c = vec![1.0; m * n];
        sgemm(m, n, k, Mat::rm(&a, k), Mat::rm(&b, n), &mut c, n, false, 1);
        for (x, y) in c.iter().zip(&want) {
            assert!((x - y).abs() < 1e-5);
        }
        // transposed storage of a, accumulate
        let mut at = vec![0.0; k * m];
        for i in 0..m {
            for p in 0..k {
                at[p * m + i] = a[i * k + p];
            }
        }
        sgemm(m, n, k, Mat::rm_t(&at, m), Mat::rm(&b, n), &mut c, n, true, 2);
        for (x, y) in c.iter().zip(&want) {
            assert!((x - 2.0 * y).abs() < 1e-4);
        }
    }
}
