//! torchvision's `RandomResizedCrop` (scale 0.08–1, aspect ratio 3/4–4/3) on a stored image: a random
//! box, resampled bilinearly back to the image's size, as `transforms.RandomResizedCrop(size)` does to
//! a picture (here the stored, already centre-cropped one; an image at the training size is stored,
//! so the box is never larger than the output and bilinear upsampling needs no antialiasing); and the
//! CIFAR augmentation (padded random crop, flip).
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::Dataset;

/// Area share of the box: torchvision's default `scale`.
const SCALE: (f64, f64) = (0.08, 1.0);
/// Width / height of the box: torchvision's default `ratio`.
const RATIO: (f64, f64) = (3.0 / 4.0, 4.0 / 3.0);

/// The crop box `(top, left, height, width)` of a `height` x `width` image, drawn as torchvision's
/// `RandomResizedCrop.get_params`: ten tries of a random area share and log-uniform aspect ratio,
/// sides rounded half to even as Python does, then the centred box of the nearest allowed ratio.
pub fn resized_crop_box(height: usize, width: usize, rng: &mut impl Rng) -> (usize, usize, usize, usize) {
    let area = (height * width) as f64;
    let (lo, hi) = (RATIO.0.ln(), RATIO.1.ln());
    for _ in 0..10 {
        let target = area * rng.gen_range(SCALE.0..SCALE.1);
        let aspect = rng.gen_range(lo..hi).exp();
        let w = (target * aspect).sqrt().round_ties_even() as usize;
        let h = (target / aspect).sqrt().round_ties_even() as usize;
        if 0 < w && w <= width && 0 < h && h <= height {
            let top = rng.gen_range(0..=height - h);
            let left = rng.gen_range(0..=width - w);
            return (top, left, h, w);
        }
    }
    let in_ratio = width as f64 / height as f64;
    let (h, w) = if in_ratio < RATIO.0 {
        ((width as f64 / RATIO.0).round_ties_even() as usize, width)
    } else if in_ratio > RATIO.1 {
        (height, (height as f64 * RATIO.1).round_ties_even() as usize)
    } else {
        (height, width)
    };
    ((height - h) / 2, (width - w) / 2, h, w)
}

/// Source positions and weights of `out` output cells reading `len` cells from `start`: bilinear with
/// half-pixel centres (`align_corners=False`), clamped to the box's edges, as PyTorch's upsampling.
pub fn taps(start: usize, len: usize, out: usize) -> Vec<(usize, usize, f32)> {
    (0..out)
        .map(|o| {
            let src = ((o as f64 + 0.5) * len as f64 / out as f64 - 0.5).max(0.0);
            let i0 = (src.floor() as usize).min(len - 1);
            let i1 = (i0 + 1).min(len - 1);
            (start + i0, start + i1, (src - i0 as f64) as f32)
        })
        .collect()
}

/// Channel `plane` (`h` x `w` bytes) cropped to `(top, left, bh, bw)` and resampled to `h` x `w`,
/// as values in 0–255.
pub fn resample(plane: &[u8], (h, w): (usize, usize), (top, left, bh, bw): (usize, usize, usize, usize)) -> Vec<f32> {
    let (rows, cols) = (taps(top, bh, h), taps(left, bw, w));
    let px = |y: usize, x: usize| plane[y * w + x] as f32;
    let mut out = Vec::with_capacity(h * w);
    for &(y0, y1, fy) in &rows {
        for &(x0, x1, fx) in &cols {
            let top = px(y0, x0) * (1.0 - fx) + px(y0, x1) * fx;
            let bottom = px(y1, x0) * (1.0 - fx) + px(y1, x1) * fx;
            out.push(top * (1.0 - fy) + bottom * fy);
        }
    }
    out
}

/// Training-time augmentation.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Augment {
    /// Zero padding before the random crop back to the original size (0 disables the crop).
    pub crop_pad: usize,
    /// Random horizontal flips with probability 1/2.
    pub hflip: bool,
    /// torchvision's random-resized crop (replaces the padded crop).
    #[serde(default)]
    pub resized_crop: bool,
}

impl Augment {
    /// Standard CIFAR augmentation: 4-pixel padded random crop and horizontal flip.
    pub const STANDARD: Augment = Augment { crop_pad: 4, hflip: true, resized_crop: false };
    /// ImageNet-style augmentation: random-resized crop and horizontal flip.
    pub const IMAGENET: Augment = Augment { crop_pad: 0, hflip: true, resized_crop: true };
    pub const NONE: Augment = Augment { crop_pad: 0, hflip: false, resized_crop: false };
}

/// Writes image `i` of `ds` normalised (and augmented with `rng` when `aug` is given) into `out`.
pub(super) fn write_image(ds: &Dataset, i: usize, aug: Option<(Augment, &mut ChaCha8Rng)>, out: &mut [f32]) {
    let (c, h, w) = (ds.channels, ds.height, ds.width);
    let img = ds.image(i);
    let (dy, dx, flip) = match aug {
        Some((a, rng)) if a.resized_crop => {
            let b = resized_crop_box(h, w, rng);
            let flip = a.hflip && rng.gen_bool(0.5);
            for ch in 0..c {
                let (m, s) = (ds.norm.mean[ch], ds.norm.std[ch]);
                let plane = resample(&img[ch * h * w..(ch + 1) * h * w], (h, w), b);
                for y in 0..h {
                    for x in 0..w {
                        let v = plane[y * w + if flip { w - 1 - x } else { x }];
                        out[(ch * h + y) * w + x] = (v / 255.0 - m) / s;
                    }
                }
            }
            return;
        }
        Some((a, rng)) => {
            let p = a.crop_pad as isize;
            let dy = if p > 0 { rng.gen_range(-p..=p) } else { 0 };
            let dx = if p > 0 { rng.gen_range(-p..=p) } else { 0 };
            (dy, dx, a.hflip && rng.gen_bool(0.5))
        }
        None => (0, 0, false),
    };
    for ch in 0..c {
        let (m, s) = (ds.norm.mean[ch], ds.norm.std[ch]);
        let zero = (0.0 - m) / s;
        for y in 0..h {
            let sy = y as isize + dy;
            for x in 0..w {
                let xx = if flip { w - 1 - x } else { x };
                let sx = xx as isize + dx;
                out[(ch * h + y) * w + x] = if sy < 0 || sy >= h as isize || sx < 0 || sx >= w as isize {
                    zero
                } else {
                    (img[(ch * h + sy as usize) * w + sx as usize] as f32 / 255.0 - m) / s
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    #[test]
    fn boxes_follow_torchvisions_rules() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut full = 0;
        for _ in 0..2000 {
            let (t, l, h, w) = resized_crop_box(64, 48, &mut rng);
            assert!(h >= 1 && w >= 1 && t + h <= 64 && l + w <= 48, "{t} {l} {h} {w}");
            let share = (h * w) as f64 / (64.0 * 48.0);
            let ratio = w as f64 / h as f64;
            // Rounding the sides to whole pixels moves share and ratio a little past the limits.
            assert!((0.06..=1.0).contains(&share) && (0.7..=1.4).contains(&ratio), "{share} {ratio}");
            full += (h == 64 && w == 48) as usize;
        }
        assert!(full < 100, "the centred fallback is rare on a 4:3 image ({full})");
        // A 100 x 2 strip never fits a box of ratio ≥ 3/4 of enough area: the fallback, width 2,
        // height round(2 / 0.75) = round(2.67) = 3, centred: top (100 - 3) / 2 = 48.
        assert_eq!(resized_crop_box(100, 2, &mut rng), (48, 0, 3, 2));
        // 2 x 100: height 2, width round(2 * 4/3) = 3, left (100 - 3) / 2 = 48.
        assert_eq!(resized_crop_box(2, 100, &mut rng), (0, 48, 2, 3));
    }

    #[test]
    fn imagenet_augmentation_in_batches() {
        // A 1-channel 8 x 8 ramp (value 10 * column) and a uniform image.
        let mut pixels: Vec<u8> = (0..64).map(|i| (i % 8) as u8 * 10).collect();
        pixels.extend(std::iter::repeat_n(90u8, 64));
        let ds = Dataset {
            name: "ramp".into(),
            channels: 1,
            height: 8,
            width: 8,
            pixels,
            stream: None,
            labels: vec![0, 0],
            class_names: vec!["a".into()],
            hierarchy: None,
            norm: super::super::Normalization { mean: vec![0.0], std: vec![1.0 / 255.0] },
            provenance: vec![],
        };
        let batch = |seed| super::super::make_batch(&ds, &[0, 1], Some((Augment::IMAGENET, seed))).x.data().to_vec();
        assert_eq!(batch(3), batch(3), "seeded");
        let outs: Vec<Vec<f32>> = (0..20).map(batch).collect();
        for o in &outs {
            // The uniform image stays uniform; every row of the ramp is the same resampled ramp,
            // monotone (increasing, or decreasing when flipped) within 0..=70.
            assert!(o[64..].iter().all(|&v| (v - 90.0).abs() < 1e-3), "{:?}", &o[64..]);
            let row = &o[..8];
            assert!((0..8).all(|y| o[y * 8..y * 8 + 8] == *row));
            let up = row.windows(2).all(|p| p[1] >= p[0] - 1e-3);
            let down = row.windows(2).all(|p| p[1] <= p[0] + 1e-3);
            assert!((up || down) && row.iter().all(|v| (-1e-3..=70.001).contains(v)), "{row:?}");
        }
        assert!(outs.iter().any(|o| o[..8] != outs[0][..8]), "the crops differ between seeds");
    }

    #[test]
    fn resampling_by_hand() {
        // The whole image is itself.
        let plane: Vec<u8> = (0..12).map(|v| v * 20).collect();
        assert_eq!(resample(&plane, (3, 4), (0, 0, 3, 4)), plane.iter().map(|&v| v as f32).collect::<Vec<_>>());
        // Columns 1..3 of row 0 (values 20, 40) to 4 columns: sources -0.25→0 (clamped), 0.25, 0.75,
        // 1.25→ 1 at the edge: 20, 25, 35, 40; rows all read row 0 of a one-row box.
        let out = resample(&plane, (3, 4), (0, 1, 1, 2));
        assert_eq!(&out[..4], &[20.0, 25.0, 35.0, 40.0]);
        assert_eq!(&out[4..8], &out[..4]);
    }
}
