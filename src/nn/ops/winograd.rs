//! Winograd F(2x2, 3x3) convolution (Lavin & Gray, "Fast Algorithms for Convolutional Neural
//! Networks", 2016) for the 3x3 / stride 1 / padding 1 layers: 16 multiplications per 2x2 output
//! tile and channel pair instead of 36.
//!
//! With `d` a 4x4 input window (stride 2), `g` a 3x3 kernel and
//! `Bᵀ = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]`, `G = [1 0 0; ½ ½ ½; ½ -½ ½; 0 0 1]`,
//! `Aᵀ = [1 1 1 0; 0 1 -1 -1]`, the 2x2 output tile is `Aᵀ [Σ_ci (G g Gᵀ) ⊙ (Bᵀ d B)] A`. The sum over
//! input channels is, for each of the 16 transformed positions `ξ`, a matrix product
//! `M_ξ (co x tiles) = U_ξ (co x c) · V_ξ (c x tiles)`, run by a register-blocked kernel like the
//! direct one (4 output channels x 2-6 vectors of tiles, the input channels as the inner loop).
//!
//! Layout: each input plane is split into its four polyphase planes `P_ab[i][j] = xpad[2i+a][2j+b]`
//! (rows of `tw + 1`), so a tile's 16 window values are contiguous shifted reads `P_ab[t + di*(tw+1)
//! + dj]` of the tile index `t = i * (tw + 1) + j`, and both transforms are plain vector arithmetic
//! over tiles (one junk tile per row, `j = tw`, is computed and dropped, as the direct kernel drops
//! its padding columns). Images are taken in sub-chunks whose transformed buffers stay in L2.
//! Even plane sizes only ([`applies`]); the others keep the direct kernel.
use std::cell::RefCell;

use pulp::{Simd, WithSimd};

/// Output channels per register block of the transformed-domain product.
const CB: usize = 4;

/// Whether the Winograd path serves a 3x3 / stride 1 / padding 1 convolution of `c` to `co`
/// channels on `h x w` planes: even sides, at least 8 channels each way (with fewer the
/// transforms cost more than the multiplications they save), SIMD with 8 or 16 lanes, and not
/// switched off by `KDSCOPE_WINOGRAD=0` (see [`enabled`]).
pub fn applies(c: usize, co: usize, h: usize, w: usize) -> bool {
    h.is_multiple_of(2) && w.is_multiple_of(2) && h >= 4 && w >= 4 && c >= 8 && co >= 8 && enabled()
}

/// `false` where the environment sets `KDSCOPE_WINOGRAD=0` (every stride-1 3x3 layer then runs the
/// direct kernel: an A/B switch for benchmarks and for bit-level comparisons with older runs) or
/// where the CPU has neither AVX-512 nor AVX2 + FMA. Read once.
pub fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("KDSCOPE_WINOGRAD").map_or(true, |v| v != "0") && super::cpu::lanes() >= 8)
}

/// The transformed weights `U[ξ][o][i] = (G g_oi Gᵀ)[ξ]` of `wt` (`co x c x 3 x 3`, PyTorch layout).
pub fn transform_weights(wt: &[f32], co: usize, c: usize) -> Vec<f32> {
    assert_eq!(wt.len(), co * c * 9, "winograd: {co} x {c} x 3 x 3 weights, got {}", wt.len());
    let g_rows = |a: f32, b: f32, d: f32| [a, 0.5 * (a + b + d), 0.5 * (a - b + d), d];
    let mut u = vec![0.0f32; 16 * co * c];
    for o in 0..co {
        for i in 0..c {
            let k = &wt[(o * c + i) * 9..(o * c + i + 1) * 9];
            // G g (4 x 3), column by column, then (G g) Gᵀ row by row.
            let cols: [[f32; 4]; 3] = std::array::from_fn(|x| g_rows(k[x], k[3 + x], k[6 + x]));
            for r in 0..4 {
                for (l, v) in g_rows(cols[0][r], cols[1][r], cols[2][r]).into_iter().enumerate() {
                    u[((r * 4 + l) * co + o) * c + i] = v;
                }
            }
        }
    }
    u
}

/// What the output transform does with each result: `out = relu?(y + bias)` or `out += y`.
#[derive(Clone, Copy, Debug)]
pub enum Store<'a> {
    Write { bias: Option<&'a [f32]>, relu: bool },
    Accumulate,
}

thread_local! {
    /// Phase planes, transformed input, transformed output, output phase planes.
    static BUFS: RefCell<[Vec<f32>; 4]> = const { RefCell::new([Vec::new(), Vec::new(), Vec::new(), Vec::new()]) };
}

/// `out (nb x co x h x w) (+)= conv3x3(x (nb x c x h x w), weights)` with `u` from
/// [`transform_weights`]; `false` (and `out` untouched) where the CPU has neither AVX-512 nor
/// AVX2 + FMA.
///
/// # Panics
/// If `h` or `w` is odd or a length does not match.
#[allow(clippy::too_many_arguments)]
pub fn conv3x3(
    x: &[f32],
    nb: usize,
    c: usize,
    (h, w): (usize, usize),
    u: &[f32],
    co: usize,
    out: &mut [f32],
    store: Store,
) -> bool {
    assert!(h.is_multiple_of(2) && w.is_multiple_of(2) && h > 0 && w > 0, "winograd: even sides only, got {h}x{w}");
    assert!(x.len() >= nb * c * h * w && out.len() >= nb * co * h * w && u.len() == 16 * co * c);
    if let Store::Write { bias: Some(b), .. } = store {
        assert_eq!(b.len(), co);
    }
    BUFS.with(|b| {
        let mut b = b.borrow_mut();
        let [phase, v, m, y] = &mut *b;
        let k = Kernel { x, nb, c, t: Tiles { h, w }, u, co, out, store, phase, v, m, y };
        pulp::Arch::new().dispatch(k)
    })
}

/// Tile geometry of one `h x w` plane.
#[derive(Clone, Copy, Debug)]
struct Tiles {
    h: usize,
    w: usize,
}

impl Tiles {
    fn th(self) -> usize {
        self.h / 2
    }
    fn tw(self) -> usize {
        self.w / 2
    }
    /// Row length of the phase planes and of the tile grid (one junk tile per row).
    fn pw(self) -> usize {
        self.tw() + 1
    }
    /// Tile positions per image.
    fn per_image(self) -> usize {
        self.th() * self.pw()
    }
}

struct Kernel<'a> {
    x: &'a [f32],
    nb: usize,
    c: usize,
    t: Tiles,
    u: &'a [f32],
    co: usize,
    out: &'a mut [f32],
    store: Store<'a>,
    phase: &'a mut Vec<f32>,
    v: &'a mut Vec<f32>,
    m: &'a mut Vec<f32>,
    y: &'a mut Vec<f32>,
}

/// Sizes every loop of [`Kernel`] shares (`l` lanes, `tile` = tiles per register block).
#[derive(Clone, Copy)]
struct Dims {
    c: usize,
    co: usize,
    t: Tiles,
    /// Tile positions per image, and rounded up to whole vectors.
    ti: usize,
    ti_r: usize,
    /// Stride of the phase planes, of the transformed buffers' rows and of the output phases.
    ps: usize,
    tp: usize,
}

impl Dims {
    /// Stride of `ξ` in the transformed input (`c` rows of `tp`) and output (`co` rows): one cache
    /// line more than the rows, so the 16 streams a transform writes or reads do not all map to the
    /// same few L1 sets (with `c x tp` a multiple of 1 KiB they would, and evict each other).
    fn vx(&self) -> usize {
        16 * self.tp + 16
    }
    fn mx(&self) -> usize {
        16 * self.tp + 16
    }
}

fn resize(buf: &mut Vec<f32>, len: usize) {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
}

impl WithSimd for Kernel<'_> {
    type Output = bool;

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> bool {
        let Kernel { x, nb, c, t, u, co, out, store, phase, v, m, y } = self;
        let (l, vt) = match S::F32_LANES {
            16 => (16, 6),
            8 => (8, 2),
            _ => return false,
        };
        let (ti, pw) = (t.per_image(), t.pw());
        let ti_r = ti.div_ceil(l) * l;
        // Tiles per sub-chunk: its transformed input and output (16 x (c + co) x tiles values) in
        // half the L2 cache.
        let budget = super::cpu::cache_bytes(2, 1 << 20) / 2 / (16 * 4 * (c + co));
        let sub = (budget / ti).clamp(1, nb.max(1));
        let tile = l * vt;
        // Room for the last image's vector overshoot past `sub * ti`.
        let tp = (sub * ti + l).div_ceil(tile) * tile;
        // A tile reads its phase planes up to `t + pw + 1 + l` for `t < ti_r`.
        let ps = ti_r + pw + 1;
        let d = Dims { c, co, t, ti, ti_r, ps, tp };
        // Zeroed once: the data positions are rewritten per plane, the borders never are.
        phase.clear();
        phase.resize(4 * ps * c + t.h * t.w, 0.0);
        resize(v, c * d.vx());
        resize(m, co * d.mx());
        resize(y, 4 * ti_r);
        let plane = t.h * t.w;
        for s0 in (0..nb).step_by(sub) {
            let n = sub.min(nb - s0);
            for b in 0..n {
                for ci in 0..c {
                    let xs = &x[((s0 + b) * c + ci) * plane..((s0 + b) * c + ci + 1) * plane];
                    let (ph, eo) = phase.split_at_mut(4 * ps * c);
                    split_phases(xs, t, ps, &mut ph[4 * ps * ci..4 * ps * (ci + 1)], eo);
                }
                for ci in 0..c {
                    // SAFETY: reads stay below `4 * ps` and writes below `16 * vx` (see `Dims`).
                    unsafe { input_tiles(simd, &d, &phase[4 * ps * ci..], &mut v[..], ci, b * ti) };
                }
            }
            let used = (n * ti).div_ceil(tile) * tile;
            // SAFETY: the buffers hold `16 x c x tp` and `16 x co x tp` values, `used <= tp`.
            unsafe {
                match vt {
                    6 => product::<S, 6>(simd, &d, u, v, m, used),
                    _ => product::<S, 2>(simd, &d, u, v, m, used),
                }
            }
            for b in 0..n {
                for o in 0..co {
                    // SAFETY: reads `m` below `16 * mx`, writes `y` below `4 * ti_r`.
                    unsafe { output_tiles(simd, &d, m, y, o, b * ti) };
                    let dst = &mut out[((s0 + b) * co + o) * plane..((s0 + b) * co + o + 1) * plane];
                    merge_phases(y, &d, dst, store, o);
                }
            }
        }
        true
    }
}

/// Splits one `h x w` plane into the interior of its four zero-padded phase planes: the even and
/// odd columns of the whole plane first (one long loop, which vectorises), then each row's two
/// halves into the phase planes of its parity. `eo` holds `h * w` values.
#[inline(always)]
fn split_phases(xs: &[f32], t: Tiles, ps: usize, phase: &mut [f32], eo: &mut [f32]) {
    let (tw, pw, half) = (t.tw(), t.pw(), t.h * t.tw());
    let (ev, od) = eo.split_at_mut(half);
    for ((e, o), pair) in ev.iter_mut().zip(od.iter_mut()).zip(xs.chunks_exact(2)) {
        *e = pair[0];
        *o = pair[1];
    }
    let (even, odd) = phase.split_at_mut(2 * ps);
    for yy in 0..t.h {
        // Padded row `yy + 1`; column `x + 1`: even `x` lands in the odd-column phase at `x / 2`,
        // odd `x` in the even-column phase at `(x + 1) / 2`.
        let (r, i) = ((yy + 1) & 1, (yy + 1) >> 1);
        let planes = if r == 0 { &mut *even } else { &mut *odd };
        let (p0, p1) = planes.split_at_mut(ps);
        p1[i * pw..i * pw + tw].copy_from_slice(&ev[yy * tw..(yy + 1) * tw]);
        p0[i * pw + 1..i * pw + 1 + tw].copy_from_slice(&od[yy * tw..(yy + 1) * tw]);
    }
}

/// `V[ξ][ci][at + t] = (Bᵀ d_t B)[ξ]` for the tiles `t < ti` of one plane's phase planes.
///
/// # Safety
/// `phase` holds `4 * ps` values and `v` `16 * vx`, with `at + ti_r <= tp`.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn input_tiles<S: Simd>(simd: S, d: &Dims, phase: &[f32], v: &mut [f32], ci: usize, at: usize) {
    let (l, pw) = (S::F32_LANES, d.t.pw());
    debug_assert!(phase.len() >= 4 * d.ps && v.len() >= d.c * d.vx() && at + d.ti_r <= d.tp);
    let (p, vo) = (phase.as_ptr(), v.as_mut_ptr());
    let ld = |q: *const f32| q.cast::<S::f32s>().read_unaligned();
    for t0 in (0..d.ti).step_by(l) {
        // Window row r, column x: phase (r % 2, x % 2) at offset (r / 2) * pw + x / 2.
        let win: [[S::f32s; 4]; 4] = std::array::from_fn(|r| {
            std::array::from_fn(|x| ld(p.add(((r & 1) * 2 + (x & 1)) * d.ps + t0 + (r >> 1) * pw + (x >> 1))))
        });
        // Bᵀ d: rows.
        let rows: [[S::f32s; 4]; 4] = std::array::from_fn(|x| {
            let [d0, d1, d2, d3] = [win[0][x], win[1][x], win[2][x], win[3][x]];
            [simd.sub_f32s(d0, d2), simd.add_f32s(d1, d2), simd.sub_f32s(d2, d1), simd.sub_f32s(d1, d3)]
        });
        // (Bᵀ d) B: columns.
        for k in 0..4 {
            let [e0, e1, e2, e3] = [rows[0][k], rows[1][k], rows[2][k], rows[3][k]];
            let out = [simd.sub_f32s(e0, e2), simd.add_f32s(e1, e2), simd.sub_f32s(e2, e1), simd.sub_f32s(e1, e3)];
            for (li, val) in out.into_iter().enumerate() {
                vo.add(ci * d.vx() + (k * 4 + li) * d.tp + at + t0).cast::<S::f32s>().write_unaligned(val);
            }
        }
    }
}

/// `M_ξ[o][t] = Σ_i U_ξ[o][i] V_ξ[i][t]` for the 16 `ξ` and tiles `t < used`.
///
/// # Safety
/// `u`, `v`, `m` hold `16 x co x c`, `16 x c x tp`, `16 x co x tp` values; `used <= tp` is a
/// multiple of `VT` vectors.
#[inline(always)]
unsafe fn product<S: Simd, const VT: usize>(simd: S, d: &Dims, u: &[f32], v: &[f32], m: &mut [f32], used: usize) {
    assert!(u.len() >= 16 * d.co * d.c && v.len() >= d.c * d.vx() && m.len() >= d.co * d.mx());
    let full = d.co / CB * CB;
    for xi in 0..16 {
        let (ub, vb, mb) = (u.as_ptr().add(xi * d.co * d.c), v.as_ptr().add(xi * d.tp), m.as_mut_ptr().add(xi * d.tp));
        for t0 in (0..used).step_by(S::F32_LANES * VT) {
            for o0 in (0..full).step_by(CB) {
                block::<S, CB, VT>(simd, d, ub, vb.add(t0), mb.add(t0), o0);
            }
            for o0 in full..d.co {
                block::<S, 1, VT>(simd, d, ub, vb.add(t0), mb.add(t0), o0);
            }
        }
    }
}

/// `NB` output channels from `o0` x `VT` vectors of tiles, accumulated over the input channels in
/// registers.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn block<S: Simd, const NB: usize, const VT: usize>(
    simd: S,
    d: &Dims,
    ub: *const f32,
    vb: *const f32,
    mb: *mut f32,
    o0: usize,
) {
    let l = S::F32_LANES;
    let mut acc = [[simd.splat_f32s(0.0); VT]; NB];
    for i in 0..d.c {
        let w: [S::f32s; NB] = std::array::from_fn(|b| simd.splat_f32s(*ub.add((o0 + b) * d.c + i)));
        let row = vb.add(i * d.vx());
        for vi in 0..VT {
            let xv = row.add(vi * l).cast::<S::f32s>().read_unaligned();
            for b in 0..NB {
                acc[b][vi] = simd.mul_add_f32s(w[b], xv, acc[b][vi]);
            }
        }
    }
    for b in 0..NB {
        for vi in 0..VT {
            mb.add((o0 + b) * d.mx() + vi * l).cast::<S::f32s>().write_unaligned(acc[b][vi]);
        }
    }
}

/// The four output phases `Y_ab[t] = (Aᵀ M_t A)[a][b]` of output channel `o` for one image's tiles.
///
/// # Safety
/// `m` holds `16 x co x tp` values with `at + ti_r <= tp`; `y` holds `4 * ti_r`.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn output_tiles<S: Simd>(simd: S, d: &Dims, m: &[f32], y: &mut [f32], o: usize, at: usize) {
    debug_assert!(m.len() >= d.co * d.mx() && y.len() >= 4 * d.ti_r && at + d.ti_r <= d.tp);
    let (mp, yp) = (m.as_ptr(), y.as_mut_ptr());
    let sum3 = |a, b, c| simd.add_f32s(simd.add_f32s(a, b), c);
    let diff3 = |a, b, c| simd.sub_f32s(simd.sub_f32s(a, b), c);
    for t0 in (0..d.ti).step_by(S::F32_LANES) {
        let mv: [S::f32s; 16] =
            std::array::from_fn(|xi| mp.add(o * d.mx() + xi * d.tp + at + t0).cast::<S::f32s>().read_unaligned());
        // Aᵀ M: rows, then columns.
        let s: [[S::f32s; 4]; 2] = [
            std::array::from_fn(|x| sum3(mv[x], mv[4 + x], mv[8 + x])),
            std::array::from_fn(|x| diff3(mv[4 + x], mv[8 + x], mv[12 + x])),
        ];
        for a in 0..2 {
            let [e0, e1, e2, e3] = s[a];
            yp.add((a * 2) * d.ti_r + t0).cast::<S::f32s>().write_unaligned(sum3(e0, e1, e2));
            yp.add((a * 2 + 1) * d.ti_r + t0).cast::<S::f32s>().write_unaligned(diff3(e1, e2, e3));
        }
    }
}

/// Interleaves the four output phases of channel `o` into its `h x w` plane `dst`.
#[inline(always)]
fn merge_phases(y: &[f32], d: &Dims, dst: &mut [f32], store: Store, o: usize) {
    let (tw, pw, w) = (d.t.tw(), d.t.pw(), d.t.w);
    for (r, row) in dst.chunks_exact_mut(w).enumerate() {
        let (a, i) = (r & 1, r >> 1);
        let y0 = &y[(a * 2) * d.ti_r + i * pw..][..tw];
        let y1 = &y[(a * 2 + 1) * d.ti_r + i * pw..][..tw];
        let cells = row.chunks_exact_mut(2).zip(y0.iter().zip(y1));
        match store {
            Store::Accumulate => cells.for_each(|(p, (a, b))| {
                p[0] += a;
                p[1] += b;
            }),
            Store::Write { bias, relu } => {
                let bo = bias.map_or(0.0, |b| b[o]);
                if relu {
                    cells.for_each(|(p, (a, b))| {
                        p[0] = (a + bo).max(0.0);
                        p[1] = (b + bo).max(0.0);
                    })
                } else {
                    cells.for_each(|(p, (a, b))| {
                        p[0] = a + bo;
                        p[1] = b + bo;
                    })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The convolution by its definition, in f64.
    fn naive(x: &[f32], (c, h, w): (usize, usize, usize), wt: &[f32], co: usize) -> Vec<f64> {
        let mut out = vec![0.0f64; co * h * w];
        for o in 0..co {
            for yy in 0..h {
                for xx in 0..w {
                    let mut acc = 0.0f64;
                    for ci in 0..c {
                        for t in 0..9 {
                            let (iy, ix) = (yy as isize + (t / 3) as isize - 1, xx as isize + (t % 3) as isize - 1);
                            if iy >= 0 && iy < h as isize && ix >= 0 && ix < w as isize {
                                acc += wt[(o * c + ci) * 9 + t] as f64
                                    * x[(ci * h + iy as usize) * w + ix as usize] as f64;
                            }
                        }
                    }
                    out[(o * h + yy) * w + xx] = acc;
                }
            }
        }
        out
    }

    fn data(n: usize, mul: usize, m: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * mul % m) as f32 - (m / 2) as f32) / (m / 2) as f32).collect()
    }

    /// Runs the kernel on SIMD level `level` (0: AVX2 + FMA, 1: AVX-512) where this CPU has it.
    #[cfg(target_arch = "x86_64")]
    fn on_level(level: usize, k: Kernel) -> Option<bool> {
        use pulp::{x86, Simd};
        match level {
            0 => x86::V3::try_new().map(|s| Simd::vectorize(s, k)),
            _ => x86::V4::try_new().map(|s| Simd::vectorize(s, k)),
        }
    }

    #[test]
    fn weight_transform_is_g_g_gt() {
        // One kernel 1..9: G g Gᵀ by hand (row 1 of G g is ½(g0 + g1 + g2) per column, ...).
        let g: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        let u = transform_weights(&g, 1, 1);
        let gg = [[1.0, 2.0, 3.0], [6.0, 7.5, 9.0], [2.0, 2.5, 3.0], [7.0, 8.0, 9.0]];
        for r in 0..4 {
            let [a, b, c] = gg[r];
            let want = [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c];
            for l in 0..4 {
                assert_eq!(u[r * 4 + l], want[l] as f32, "U[{r}][{l}]");
            }
        }
    }

    #[test]
    fn matches_the_definition() {
        // Sub-chunks of one and of many images, a last partial sub-chunk, channel counts that are
        // not multiples of the 4-channel block, planes from 2x2 to 32x32, non-square.
        for (nb, c, co, h, w) in
            [(3, 8, 8, 32, 32), (40, 9, 13, 4, 4), (5, 16, 6, 8, 8), (2, 3, 5, 2, 2), (7, 8, 9, 6, 10)]
        {
            let x = data(nb * c * h * w, 37, 101);
            let wt = data(co * c * 9, 53, 97);
            let bias = data(co, 11, 13);
            let u = transform_weights(&wt, co, c);
            let want: Vec<f64> =
                (0..nb).flat_map(|b| naive(&x[b * c * h * w..(b + 1) * c * h * w], (c, h, w), &wt, co)).collect();
            let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
            let check = |got: &[f32], f: &dyn Fn(usize, f64) -> f64, what: &str| {
                for (k, (g, wv)) in got.iter().zip(&want).enumerate() {
                    let wv = f(k, *wv);
                    assert!(
                        ((*g as f64) - wv).abs() < 2e-6 * scale,
                        "{what} nb{nb} c{c} co{co} {h}x{w} at {k}: {g} vs {wv}"
                    );
                }
            };
            let bias_of = |k: usize| bias[(k / (h * w)) % co] as f64;
            let mut out = vec![f32::NAN; nb * co * h * w];
            if conv3x3(&x, nb, c, (h, w), &u, co, &mut out, Store::Write { bias: None, relu: false }) {
                check(&out, &|_, v| v, "write");
                conv3x3(&x, nb, c, (h, w), &u, co, &mut out, Store::Accumulate);
                check(&out, &|_, v| 2.0 * v, "accumulate");
                conv3x3(&x, nb, c, (h, w), &u, co, &mut out, Store::Write { bias: Some(&bias), relu: true });
                check(&out, &|k, v| (v + bias_of(k)).max(0.0), "bias + relu");
            }
            #[cfg(target_arch = "x86_64")]
            for level in 0..2 {
                let mut out = vec![f32::NAN; nb * co * h * w];
                let (mut p, mut v, mut m, mut y) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
                let k = Kernel {
                    x: &x,
                    nb,
                    c,
                    t: Tiles { h, w },
                    u: &u,
                    co,
                    out: &mut out,
                    store: Store::Write { bias: Some(&bias), relu: false },
                    phase: &mut p,
                    v: &mut v,
                    m: &mut m,
                    y: &mut y,
                };
                if on_level(level, k) == Some(true) {
                    check(&out, &|k, v| v + bias_of(k), ["avx2", "avx512"][level]);
                } else if level == 0 {
                    assert!(
                        !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")),
                        "AVX2 kernel must run"
                    );
                }
            }
        }
    }
}
