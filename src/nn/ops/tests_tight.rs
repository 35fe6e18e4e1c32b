//! The tight-plane kernel ([`super::tight`]) at each width this CPU runs against the definition.
use std::mem::MaybeUninit;

use super::deferred::Deferred;
use super::tight::*;

/// The 3x3 / padding 1 convolution of one image by its definition, in f64.
fn naive(x: &[f32], chw: (usize, usize, usize), wt: &[f32], co: usize) -> Vec<f64> {
    naive_strided(x, chw, wt, co, 1)
}

/// The 3x3 / padding 1 / stride `s` convolution of one image by its definition, in f64: output
/// `(y, x)` (of `h/s x w/s`, `s` dividing the sides) reads input `(s y + ky - 1, s x + kx - 1)`.
pub(super) fn naive_strided(x: &[f32], (c, h, w): (usize, usize, usize), wt: &[f32], co: usize, s: usize) -> Vec<f64> {
    let (ho, wo) = (h / s, w / s);
    let mut out = vec![0.0; co * ho * wo];
    for (o, y, xx, ci, t) in (0..co).flat_map(|o| {
        (0..ho).flat_map(move |y| {
            (0..wo).flat_map(move |xx| (0..c).flat_map(move |ci| (0..9).map(move |t| (o, y, xx, ci, t))))
        })
    }) {
        let (iy, ix) = ((s * y + t / 3) as isize - 1, (s * xx + t % 3) as isize - 1);
        if iy >= 0 && iy < h as isize && ix >= 0 && ix < w as isize {
            out[(o * ho + y) * wo + xx] +=
                (wt[(o * c + ci) * 9 + t] * x[(ci * h + iy as usize) * w + ix as usize]) as f64;
        }
    }
    out
}

/// Written values and their planes' `(sum, sum of squares)` (planes of `hw` values) against the
/// definition's `want`, by `close(got, want, what)`.
pub(super) fn written_with_sums(
    (out, sums): (&[MaybeUninit<f32>], &[(f64, f64)]),
    want: &[f64],
    hw: usize,
    close: &dyn Fn(f32, f64, &str),
) {
    for (k, v) in out.iter().enumerate() {
        // SAFETY: the kernel under test wrote every value (NaN-filled before, which fails `close`).
        close(unsafe { v.assume_init() }, want[k], "plain");
    }
    for (o, &(s, s2)) in sums.iter().enumerate() {
        let plane = &want[o * hw..(o + 1) * hw];
        close(s as f32, plane.iter().sum(), "sum");
        close(s2 as f32, plane.iter().map(|v| v * v).sum(), "sum of squares");
    }
}

/// The layouts the whole stencil can read at `lanes` on `h x w`: tight planes, and with AVX2 the
/// padded grid where rows are whole vectors.
fn layouts(lanes: usize, (h, w): (usize, usize)) -> Vec<Planes> {
    let grid = Planes { grid: true, h, w };
    let mut all = vec![Planes { grid: false, h, w }];
    all.extend(Some(grid).filter(|g| applies_taps(lanes, (h, w), g.taps(), 1)));
    all
}

/// Every output mode against the definition, on planes whose rows are shorter, as long as, and
/// longer than a vector (4x4, 8x2, 16x16, 32x32, 12x4: tails of single vectors), output channel
/// counts that leave blocks of 1 to 8, and the last image of a chunk; on tight planes and, with AVX2
/// where rows are whole vectors, on the padded grid (tiles within a row, across rows of one vector
/// (8x8) or across rows of three (8x24); channel blocks of 6 down to 1).
#[test]
fn tight_matches_naive_in_every_mode() {
    let widths: Vec<usize> = [8, 16].into_iter().filter(|&l| applies_at(l, 4, 4)).collect();
    if widths.is_empty() {
        eprintln!("no AVX2 + FMA on this CPU: the tight kernel does not run here");
        assert!(!conv(&[], (1, 1), (4, 4), &[], 1, Out::Add(&mut [])));
    }
    assert!(!applies_at(8, 3, 5) && !applies_at(16, 6, 4) && !applies_at(4, 4, 4));
    // (16, 24, 32, 32): tiles in segments (its planes exceed half of L1), a single vector at
    // each segment's end; (2, 13, ...): blocks of 6, 6 and 1 (AVX-512), 4 x 3 and 1 (AVX2);
    // (3, 7, 4, 4): only singles; (3, 6, 6, 4): 3 vectors of 8, rows of 4 (AVX2 only).
    for (lanes, planes, (c, co, h, w, nb)) in widths.iter().flat_map(|&l| {
        [
            (3, 7, 4, 4, 2),
            (5, 11, 8, 2, 1),
            (16, 16, 16, 16, 3),
            (2, 13, 32, 32, 2),
            (4, 8, 12, 4, 2),
            (16, 24, 32, 32, 1),
            (3, 6, 6, 4, 2),
            (3, 11, 8, 8, 2),
            (2, 2, 8, 16, 1),
            (1, 1, 16, 8, 2),
            (4, 9, 4, 24, 2),
        ]
        .into_iter()
        .filter(move |&(_, _, h, w, _)| applies_at(l, h, w))
        .flat_map(move |case| layouts(l, (case.2, case.3)).into_iter().map(move |p| (l, p, case)))
    }) {
        let x: Vec<f32> = (0..nb * c * h * w).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
        let wt: Vec<f32> = (0..co * c * 9).map(|i| ((i * 53 % 97) as f32 - 48.0) / 96.0).collect();
        let bias: Vec<f32> = (0..co).map(|o| o as f32 * 0.25 - 1.0).collect();
        let mut buf = vec![f32::NAN; 7];
        let xp = planes.pad((&x, None), (nb, c), &mut buf);
        let (pl, hw) = (planes.plane(), h * w);
        let b = nb - 1;
        let want = naive(&x[b * c * hw..(b + 1) * c * hw], (c, h, w), &wt, co);
        let close = |got: f32, want: f64, what: &str| {
            assert!(
                (got as f64 - want).abs() < 1e-4 * (1.0 + want.abs()),
                "L{lanes} {what} c{c} co{co} {h}x{w} grid {}: {got} vs {want}",
                planes.grid
            )
        };
        let img = &xp[b * pl..];
        // Written plain, with sums.
        let mut out = vec![MaybeUninit::new(f32::NAN); co * hw];
        let mut sums = vec![(7.0, 7.0); co];
        let mode = Out::Write { out: &mut out, bias: None, res: None, relu: false, sums: Some(&mut sums) };
        assert!(planes.conv(lanes, img, (c, nb * pl), &wt, co, mode));
        written_with_sums((&out, &sums), &want, hw, &close);
        // Written plain, without sums.
        let mode = Out::Write { out: &mut out, bias: None, res: None, relu: false, sums: None };
        assert!(planes.conv(lanes, img, (c, nb * pl), &wt, co, mode));
        for (k, v) in out.iter().enumerate() {
            close(unsafe { v.assume_init() }, want[k], "plain, no sums");
        }
        // Written with bias and ReLU, without and with a residual.
        let res: Vec<f32> = (0..co * hw).map(|k| ((k * 29 % 31) as f32 - 15.0) / 8.0).collect();
        for r in [None, Some(&res[..])] {
            let mode = Out::Write { out: &mut out, bias: Some(&bias), res: r, relu: true, sums: None };
            assert!(planes.conv(lanes, img, (c, nb * pl), &wt, co, mode));
            for (k, v) in out.iter().enumerate() {
                let want = want[k] + bias[k / hw] as f64 + r.map_or(0.0, |r| r[k] as f64);
                close(unsafe { v.assume_init() }, want.max(0.0), "bias (+ residual) + relu");
            }
        }
        // Written as a deferred batch norm's input gradient, with its backward sums against
        // held data `z` (about half of it masked by the ReLU).
        let z: Vec<f32> = (0..co * hw).map(|k| ((k * 13 % 23) as f32 - 11.0) / 7.0).collect();
        let pre = Deferred {
            scale: (0..co).map(|o| 0.5 + o as f32 * 0.1).collect(),
            shift: (0..co).map(|o| o as f32 * 0.05 - 0.2).collect(),
            mean: (0..co).map(|o| o as f32 * 0.03).collect(),
        };
        let mut bsums = vec![(7.0, 7.0); co];
        assert!(planes.conv(
            lanes,
            img,
            (c, nb * pl),
            &wt,
            co,
            Out::Grad { out: &mut out, z: &z, pre: &pre, sums: &mut bsums }
        ));
        for (o, &(s, s2)) in bsums.iter().enumerate() {
            let (mut ws, mut ws2) = (0.0, 0.0);
            for k in o * hw..(o + 1) * hw {
                close(unsafe { out[k].assume_init() }, want[k], "input gradient");
                if z[k] * pre.scale[o] + pre.shift[o] > 0.0 {
                    ws += want[k];
                    ws2 += want[k] * (z[k] - pre.mean[o]) as f64;
                }
            }
            close(s as f32, ws, "masked sum");
            close(s2 as f32, ws2, "masked sum against z");
        }
        // Added to what the output holds.
        let mut acc: Vec<f32> = (0..co * hw).map(|k| k as f32 * 0.01).collect();
        assert!(planes.conv(lanes, img, (c, nb * pl), &wt, co, Out::Add(&mut acc)));
        for (k, &v) in acc.iter().enumerate() {
            close(v, want[k] + (k as f32 * 0.01) as f64, "added");
        }
    }
}

/// A NaN at the end of a row and one at the start of the next reach only their own 3x3
/// neighbourhoods: the left and right taps read the neighbouring row's value at the plane's edge
/// columns (AVX-512 loads it and leaves the lane out of the FMA, AVX2 loads it as zero), and no
/// output outside the neighbourhoods may see it. On the padded grid the zeros between rows stand
/// between them.
#[test]
fn edge_taps_never_see_the_neighbouring_row() {
    for lanes in [8, 16].into_iter().filter(|&l| applies_at(l, 16, 16)) {
        for (planes, (c, co, h, w)) in [(3, 8, 16, 16), (2, 7, 8, 8), (4, 9, 32, 32)]
            .into_iter()
            .flat_map(|case| layouts(lanes, (case.2, case.3)).into_iter().map(move |p| (p, case)))
        {
            let hw = h * w;
            let mut x: Vec<f32> = (0..c * hw).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
            let wt: Vec<f32> = (0..co * c * 9).map(|i| ((i * 53 % 97) as f32 - 48.0) / 96.0).collect();
            let want = naive(&x, (c, h, w), &wt, co);
            // Channel 1: the last value of row 2 and the first of row 5.
            let (a, b) = (hw + 2 * w + w - 1, hw + 5 * w);
            x[a] = f32::NAN;
            x[b] = f32::NAN;
            let mut buf = Vec::new();
            let xp = planes.pad((&x, None), (1, c), &mut buf);
            let mut out = vec![MaybeUninit::new(0.0f32); co * hw];
            let mode = Out::Write { out: &mut out, bias: None, res: None, relu: false, sums: None };
            assert!(planes.conv(lanes, xp, (c, planes.plane()), &wt, co, mode));
            let near = |q: usize, (yy, xx): (usize, usize)| {
                let (y, x) = (q / w, q % w);
                y.abs_diff(yy) <= 1 && x.abs_diff(xx) <= 1
            };
            for (k, v) in out.iter().enumerate() {
                let (q, got) = (k % hw, unsafe { v.assume_init() });
                if near(q, (2, w - 1)) || near(q, (5, 0)) {
                    assert!(got.is_nan(), "L{lanes} {h}x{w} {planes:?}: output {k} should see the NaN");
                } else {
                    let d = (got as f64 - want[k]).abs();
                    assert!(
                        d < 1e-4 * (1.0 + want[k].abs()),
                        "L{lanes} {h}x{w} {planes:?}: output {k}: {got} vs {}",
                        want[k]
                    );
                }
            }
        }
    }
}
