//! The stride-2 input gradient on the tight kernel ([`super::tight_s2`]) at each width this CPU
//! runs, against the definition.
use super::tight::{pad_tight, plane};
use super::tight_s2::*;

/// `dx[ci][y][x] = sum_(o, ky, kx) w[o][ci][ky][kx] g[o][(y + 1 - ky) / 2][(x + 1 - kx) / 2]` over
/// the taps where both divisions are exact and inside the `h/2 x w/2` output: the stride-2 /
/// padding-1 convolution's input gradient by its definition, in f64.
fn naive(g: &[f32], (co, c, h, w): (usize, usize, usize, usize), wt: &[f32]) -> Vec<f64> {
    let (ho, wo) = (h / 2, w / 2);
    let mut dx = vec![0.0; c * h * w];
    for (ci, y, x, o, t) in (0..c).flat_map(|ci| {
        (0..h).flat_map(move |y| {
            (0..w).flat_map(move |x| (0..co).flat_map(move |o| (0..9).map(move |t| (ci, y, x, o, t))))
        })
    }) {
        let (ny, nx) = ((y + 1) as isize - (t / 3) as isize, (x + 1) as isize - (t % 3) as isize);
        if ny < 0 || nx < 0 || ny % 2 != 0 || nx % 2 != 0 || ny / 2 >= ho as isize || nx / 2 >= wo as isize {
            continue;
        }
        let (oy, ox) = (ny as usize / 2, nx as usize / 2);
        dx[(ci * h + y) * w + x] += (wt[(o * c + ci) * 9 + t] * g[(o * ho + oy) * wo + ox]) as f64;
    }
    dx
}

/// Added to what `dx` holds, and written over a buffer of NaNs (every value), for output planes
/// whose rows are shorter than a vector (4x4: the right taps' masks inside a vector), as long as
/// one (16x16) and two vectors long (8x8 with AVX2), the last image of a chunk; shapes outside the
/// kernel's blocks are turned down untouched.
#[test]
fn stride2_input_grad_matches_naive() {
    let widths: Vec<usize> = [8, 16].into_iter().filter(|&l| super::tight::applies_at(l, 4, 4)).collect();
    let mut cases = 0;
    for (lanes, (co, c, h, w, nb)) in widths.iter().flat_map(|&l| {
        [(32, 16, 32, 32, 2), (8, 8, 8, 8, 3), (16, 8, 16, 16, 1), (4, 4, 4, 8, 2), (16, 16, 8, 32, 1)]
            .into_iter()
            .filter(move |&(_, c, h, w, _)| applies(l, c, (h, w)))
            .map(move |case| (l, case))
    }) {
        let (ho, wo) = (h / 2, w / 2);
        let g: Vec<f32> = (0..nb * co * ho * wo).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
        let wt: Vec<f32> = (0..co * c * 9).map(|i| ((i * 53 % 97) as f32 - 48.0) / 96.0).collect();
        let parts = parts(&wt, co, c);
        let mut buf = vec![f32::NAN; 5];
        let gt = pad_tight((&g, None), (nb, co), (ho, wo), &mut buf);
        let (b, pl) = (nb - 1, plane(ho, wo));
        let want = naive(&g[b * co * ho * wo..(b + 1) * co * ho * wo], (co, c, h, w), &wt);
        let mut dx: Vec<f32> = (0..c * h * w).map(|k| (k % 7) as f32 * 0.25).collect();
        let mut scratch = vec![f32::NAN; 3];
        let mut written = vec![std::mem::MaybeUninit::new(f32::NAN); c * h * w];
        for out in [Dx::Add(&mut dx), Dx::Write(&mut written)] {
            assert!(input_grad(lanes, &gt[b * pl..], (co, nb * pl), &parts, (c, h, w), out, &mut scratch));
        }
        // SAFETY: `MaybeUninit::new` initialised every value.
        let written: Vec<f32> = written.into_iter().map(|v| unsafe { v.assume_init() }).collect();
        for (k, (&v, &u)) in dx.iter().zip(&written).enumerate() {
            let base = ((k % 7) as f32 * 0.25) as f64;
            for (got, want) in [(v as f64, want[k] + base), (u as f64, want[k])] {
                assert!(
                    (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                    "L{lanes} co{co} c{c} {h}x{w} at {k}: {got} vs {want}"
                );
            }
        }
        cases += 1;
    }
    // AVX-512: all but the 4-channel shape (blocks of 8 channels); AVX2: all five.
    assert_eq!(cases, widths.iter().map(|&l| if l == 16 { 4 } else { 5 }).sum::<usize>(), "shapes run");
    // Odd sides, output planes of part vectors, channels outside whole blocks: not served.
    for (lanes, c, hw) in [(16, 16, (6, 6)), (16, 16, (9, 32)), (16, 16, (4, 4)), (16, 12, (8, 8)), (8, 6, (8, 8))] {
        assert!(!applies(lanes, c, hw), "L{lanes} c{c} {hw:?}");
        let mut dx = vec![1.0f32; c * hw.0 * hw.1];
        let parts = parts(&vec![0.5; 9 * c * c], c, c);
        assert!(!input_grad(lanes, &[], (c, 1), &parts, (c, hw.0, hw.1), Dx::Add(&mut dx), &mut Vec::new()));
        assert!(dx.iter().all(|&v| v == 1.0));
    }
}

/// The forward written plain with the batch norm's plane sums, and with bias and ReLU, against the
/// definition: output rows shorter than a vector (4x4, 2x8), one vector long (16x16), several
/// (8x32 from a 16x64 input), at each width; shapes outside the kernel's blocks are turned down.
#[test]
fn stride2_forward_matches_naive() {
    use super::tight::Out;
    use std::mem::MaybeUninit;
    let widths: Vec<usize> = [8, 16].into_iter().filter(|&l| super::tight::applies_at(l, 4, 4)).collect();
    let mut cases = 0;
    for (lanes, (c, co, h, w)) in widths.iter().flat_map(|&l| {
        [(16, 32, 32, 32), (3, 8, 8, 8), (5, 16, 4, 16), (2, 4, 8, 8), (4, 8, 16, 64)]
            .into_iter()
            .filter(move |&(_, co, h, w)| forward_applies(l, co, (h, w)))
            .map(move |case| (l, case))
    }) {
        let x: Vec<f32> = (0..c * h * w).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
        let wt: Vec<f32> = (0..co * c * 9).map(|i| ((i * 53 % 97) as f32 - 48.0) / 96.0).collect();
        let bias: Vec<f32> = (0..co).map(|o| o as f32 * 0.25 - 1.0).collect();
        let want = super::tests_tight::naive_strided(&x, (c, h, w), &wt, co, 2);
        let hw = h * w / 4;
        let w36 = phase_weights(&wt, co, c);
        let mut buf = vec![f32::NAN; 3];
        let close = |got: f32, want: f64, what: &str| {
            let ok = (got as f64 - want).abs() < 1e-4 * (1.0 + want.abs());
            assert!(ok, "L{lanes} {what} c{c} co{co} {h}x{w}: {got} vs {want}");
        };
        let mut out = vec![MaybeUninit::new(f32::NAN); co * hw];
        let mut sums = vec![(7.0, 7.0); co];
        let o = Out::Write { out: &mut out, bias: None, res: None, relu: false, sums: Some(&mut sums) };
        assert!(forward(lanes, &x, (c, h, w), (&w36, co), o, &mut buf));
        super::tests_tight::written_with_sums((&out, &sums), &want, hw, &close);
        let o = Out::Write { out: &mut out, bias: Some(&bias), res: None, relu: true, sums: None };
        assert!(forward(lanes, &x, (c, h, w), (&w36, co), o, &mut buf));
        for (k, v) in out.iter().enumerate() {
            close(unsafe { v.assume_init() }, (want[k] + bias[k / hw] as f64).max(0.0), "bias + relu");
        }
        cases += 1;
    }
    // AVX-512: all but (2, 4, 8, 8) (4 output channels, not a block of 8); AVX2: all five.
    assert_eq!(cases, widths.iter().map(|&l| if l == 16 { 4 } else { 5 }).sum::<usize>(), "shapes run");
    for (lanes, co, hw) in [(16, 16, (6, 6)), (16, 16, (6, 4)), (16, 12, (8, 8)), (8, 6, (8, 8))] {
        assert!(!forward_applies(lanes, co, hw), "L{lanes} co{co} {hw:?}");
        let mut out = vec![MaybeUninit::new(1.0f32); co * hw.0 * hw.1 / 4];
        let o = Out::Write { out: &mut out, bias: None, res: None, relu: false, sums: None };
        assert!(!forward(lanes, &[], (1, hw.0, hw.1), (&[], co), o, &mut Vec::new()));
        assert!(out.iter().all(|v| unsafe { v.assume_init() } == 1.0));
    }
}
