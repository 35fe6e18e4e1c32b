//! The channel-blocked weight gradient ([`super::wgrad_blocked`]) and its blocked copy at each
//! block size this CPU runs, against the definition.
use super::deferred::Deferred;
use super::direct::tests::{check_weight_grad, naive_weight_grad};
use super::direct::Padded;
use super::wgrad_blocked::*;
/// Block sizes this CPU runs (8 needs AVX2 + FMA, 16 AVX-512), so an AVX-512 machine checks
/// both.
fn levels() -> Vec<usize> {
    [8, 16].into_iter().filter(|&l| applies(l, l)).collect()
}

/// The blocked copy puts channel `L cb + l` of image `b`, pixel `(y, x)` at lane `l` of
/// position `b * plane + (y + 1) * wp + x + 1` of block `cb`, and zeros everywhere else, over
/// whatever the buffer held: planes of fewer than `L` pixels (no transpose), and of 35 and 64
/// (transposes that cross rows, then a tail or none); with a deferred batch norm + ReLU, its
/// map of each value, bit for bit.
#[test]
fn pad_blocked_places_every_value() {
    for lanes in [8, 16] {
        for (h, w) in [(3, 5), (5, 7), (8, 8), (2, 3)] {
            pad_blocked_case(2, 32, lanes, Padded { h, w });
        }
    }
}

fn pad_blocked_case(nb: usize, c: usize, lanes: usize, g: Padded) {
    let x: Vec<f32> = (0..nb * c * g.h * g.w).map(|i| (i as f32 + 1.0) * if i % 3 == 0 { -0.7 } else { 1.3 }).collect();
    let pre = Deferred {
        scale: (0..c).map(|i| 0.3 + i as f32 * 0.07).collect(),
        shift: (0..c).map(|i| i as f32 * 0.11 - 1.5).collect(),
        mean: vec![0.0; c],
    };
    for map in [None, Some(&pre)] {
        let mut buf = vec![f32::NAN; 10];
        let xb = pad_blocked((&x, map), (nb, c, lanes), g, &mut buf);
        let bs = block_positions(nb, g);
        assert_eq!(xb.len(), c / lanes * bs * lanes);
        assert_eq!(xb.as_ptr() as usize % 64, 0);
        let mut inside = 0;
        for (k, &v) in xb.iter().enumerate() {
            let (l, p, cb) = (k % lanes, k / lanes % bs, k / (lanes * bs));
            let (b, q) = (p / g.plane(), p % g.plane());
            let (row, col) = (q / g.wp(), q % g.wp());
            let want = if b < nb && (1..=g.h).contains(&row) && col >= 1 {
                inside += 1;
                let (ci, v) = (cb * lanes + l, x[((b * c + cb * lanes + l) * g.h + row - 1) * g.w + col - 1]);
                map.map_or(v, |m| m.value(ci, v))
            } else {
                0.0
            };
            assert_eq!(v.to_bits(), want.to_bits(), "{g:?} L{lanes}: block {cb} position {p} lane {l}: {v} vs {want}");
        }
        assert_eq!(inside, x.len());
    }
}

/// Against the definition, at each block size this CPU runs, on planes from 1x1 to 32x32, odd
/// and even sides, segments that split an image's rows (32 wide: 8 rows a segment), output
/// channel counts that leave blocks of 1 to 4 (AVX2) and 1, 2 and 2 + 2 (AVX-512), and a `dw`
/// that already holds values (the kernel adds to it).
#[test]
fn blocked_weight_grad_matches_naive() {
    if levels().is_empty() {
        eprintln!("no AVX2 + FMA on this CPU: the blocked weight gradient does not run here");
    }
    for lanes in levels() {
        // Stride 2 (even sides): 32x32 (16x16 out, 16 rows a segment), 8x6 (4x3), 2x2 (1x1).
        for (c, co, h, w, nb, s) in [
            (16, 3, 7, 9, 2, 1),
            (32, 4, 32, 32, 2, 1),
            (16, 7, 8, 8, 3, 1),
            (16, 1, 1, 1, 2, 1),
            (48, 5, 5, 3, 1, 1),
            (16, 6, 4, 4, 1, 1),
            (16, 5, 32, 32, 2, 2),
            (32, 7, 8, 6, 3, 2),
            (16, 2, 2, 2, 2, 2),
            (16, 21, 4, 4, 2, 1), // output channels past one block of lanes (8 + 8 + 5, 16 + 5)
        ] {
            let x: Vec<f32> = (0..nb * c * h * w).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
            let gy: Vec<f32> = (0..nb * co * h * w / s / s).map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0).collect();
            let want = naive_weight_grad(&x, &gy, (nb, c, co), (h, w), s);
            let g = Padded { h, w };
            let (mut xbuf, mut acc) = (vec![f32::NAN; 3], vec![f32::NAN; 5]);
            let xb = pad_blocked((&x, None), (nb, c, lanes), g, &mut xbuf);
            let mut dw = vec![0.5f32; c * 9 * co];
            assert!(weight_grad(xb, &gy, (c, co, nb, lanes), (g, s), &mut dw, &mut acc));
            let what = format!("blocked L{lanes} {h}x{w} nb{nb} stride {s}");
            check_weight_grad(&dw, 0.5, &want, (c, co), &what);
        }
    }
    // Channels not in whole blocks, and block sizes no kernel has.
    assert!(!weight_grad(&[], &[], (12, 1, 1, 8), (Padded { h: 1, w: 1 }, 1), &mut [], &mut Vec::new()));
    assert!(!weight_grad(&[], &[], (8, 1, 1, 16), (Padded { h: 1, w: 1 }, 1), &mut [], &mut Vec::new()));
    assert!(!weight_grad(&[], &[], (12, 1, 1, 4), (Padded { h: 1, w: 1 }, 1), &mut [], &mut Vec::new()));
}

/// The output-blocked variant (a first layer: input channels not in whole blocks) against the
/// definition, at each block size this CPU runs: 1, 3 and 5 input channels (one, a whole and a
/// partial group of three broadcasts), one and two output blocks, planes from 1x1 to 32x32 (8
/// rows a segment at 32 wide), a `dw` that already holds values; and where it declines.
#[test]
fn output_blocked_weight_grad_matches_naive() {
    for lanes in levels() {
        for (c, cob, h, w, nb) in
            [(3, 1, 32, 32, 2), (1, 2, 7, 9, 3), (5, 1, 4, 4, 1), (3, 2, 1, 1, 2), (3, 1, 5, 3, 2)]
        {
            let co = cob * lanes;
            let x: Vec<f32> = (0..nb * c * h * w).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
            let gy: Vec<f32> = (0..nb * co * h * w).map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0).collect();
            let want = naive_weight_grad(&x, &gy, (nb, c, co), (h, w), 1);
            let g = Padded { h, w };
            let (mut gbuf, mut acc) = (vec![f32::NAN; 3], vec![f32::NAN; 5]);
            let gb = pad_blocked((&gy, None), (nb, co, lanes), g, &mut gbuf);
            let mut dw = vec![0.5f32; c * 9 * co];
            assert!(weight_grad_by_output(&x, gb, (c, co, nb, lanes), g, &mut dw, &mut acc));
            check_weight_grad(&dw, 0.5, &want, (c, co), &format!("output-blocked L{lanes} c{c} {h}x{w} nb{nb}"));
        }
        // Input channels in whole blocks (the input-blocked kernel's case), output channels not.
        assert!(!applies_by_output(lanes, lanes, lanes) && !applies_by_output(3, lanes + 1, lanes));
        assert!(!weight_grad_by_output(
            &[],
            &[],
            (3, lanes + 1, 1, lanes),
            Padded { h: 1, w: 1 },
            &mut [],
            &mut Vec::new()
        ));
    }
}
