//! The built-in synthetic dataset ("shapes-20"): deterministic 3x32x32 colour images in 20 classes
//! grouped into 5 superclasses, generated from a seed, so the demo and the tests need no download.
//!
//! Each superclass is a shape family with its own hue (disk, square, triangle, ring, cross). The
//! object carries stripes (random orientation, frequency and phase) that blend its colour with an
//! accent colour, and the four classes of a superclass differ only in the accent's hue: four shades
//! [`SynthConfig::accent_step`] degrees apart, each jittered by ±[`SynthConfig::accent_jitter`], so
//! neighbouring classes overlap a little. Classes of one superclass are therefore far more
//! confusable with each other than with classes of other superclasses, and neighbouring accents are
//! more confusable than distant ones (the "dark knowledge" a teacher passes on). Position, size,
//! rotation, saturation, brightness, stripe contrast, a weaker brightness grating, background
//! gradients, distractor shapes and pixel noise vary per image.
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{DataSplit, Dataset, Hierarchy, Normalization};

pub const SUPER_NAMES: [&str; 5] = ["disk", "square", "triangle", "ring", "cross"];
const CLASS_NAMES: [&str; 4] = ["a", "b", "c", "d"];

/// Size and difficulty of the synthetic dataset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SynthConfig {
    pub seed: u64,
    pub train_per_class: usize,
    pub test_per_class: usize,
    /// Hue distance between the accents of neighbouring classes, degrees.
    pub accent_step: f32,
    /// Uniform jitter of the accent hue, degrees.
    pub accent_jitter: f32,
    /// Standard deviation of the pixel noise (0-255 scale).
    pub noise: f32,
    /// Amplitude of the weaker brightness grating at a random orientation.
    pub confounder: f32,
    /// Range of the stripe contrast (how far the stripes blend towards the accent colour).
    pub contrast: (f32, f32),
    /// Experimental relational variant (off by default): within a superclass the four classes are
    /// two accent hues (the outer two of the default four) x whether two small markers in opposite
    /// corners of the image have the same colour (black or white) or not. Global average pooling
    /// of local features cannot tell "same" from "different" when no receptive field covers both
    /// markers, so the relation needs depth.
    pub relation: bool,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            train_per_class: 150,
            test_per_class: 50,
            accent_step: 30.0,
            accent_jitter: 14.0,
            noise: 12.0,
            confounder: 0.2,
            contrast: (0.45, 0.8),
            relation: false,
        }
    }
}

/// Class names: `<shape>-<accent>` with accents `a`…`d` in hue order (e.g. `ring-b`).
pub fn class_names() -> Vec<String> {
    SUPER_NAMES.iter().flat_map(|s| CLASS_NAMES.iter().map(move |o| format!("{s}-{o}"))).collect()
}

pub fn hierarchy() -> Hierarchy {
    Hierarchy {
        super_names: SUPER_NAMES.iter().map(|s| s.to_string()).collect(),
        class_to_super: (0..20).map(|c| c / 4).collect(),
    }
}

fn hsv(h: f32, s: f32, v: f32) -> [f32; 3] {
    let h = h.rem_euclid(360.0) / 60.0;
    let c = v * s;
    let x = c * (1.0 - ((h % 2.0) - 1.0).abs());
    let (r, g, b) = match h as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = v - c;
    [r + m, g + m, b + m]
}

/// Signed "inside" test of shape `kind` at local coordinates `(u, v)` (already rotated and scaled so
/// the shape has unit size): returns true inside.
fn inside(kind: usize, u: f32, v: f32) -> bool {
    match kind {
        0 => u * u + v * v <= 1.0,
        1 => u.abs() <= 0.85 && v.abs() <= 0.85,
        2 => (-0.7..=0.9).contains(&v) && u.abs() <= (0.9 - v) * 0.62,
        3 => {
            let r2 = u * u + v * v;
            (0.42..=1.0).contains(&r2)
        }
        _ => (u.abs() <= 0.38 && v.abs() <= 1.0) || (v.abs() <= 0.38 && u.abs() <= 1.0),
    }
}

/// Renders one image of class `class` into `out` (CHW bytes).
fn render(cfg: &SynthConfig, class: usize, rng: &mut ChaCha8Rng, out: &mut [u8]) {
    const S: usize = 32;
    let kind = class / 4;
    let hue = kind as f32 * 72.0 + rng.gen_range(-15.0..15.0);
    // Relational variant: accents a and d only; the class's low bit is the marker relation.
    let accent_index = if cfg.relation { (class % 4 / 2) as f32 * 3.0 } else { (class % 4) as f32 };
    let accent_hue = kind as f32 * 72.0
        + 180.0
        + (accent_index - 1.5) * cfg.accent_step
        + rng.gen_range(-cfg.accent_jitter..=cfg.accent_jitter);
    let orient = rng.gen_range(0.0..std::f32::consts::PI);
    // Background: a colour gradient.
    let bg0 = hsv(rng.gen_range(0.0..360.0), rng.gen_range(0.0..0.35), rng.gen_range(0.2..0.8));
    let bg1 = hsv(rng.gen_range(0.0..360.0), rng.gen_range(0.0..0.35), rng.gen_range(0.2..0.8));
    let gdir = rng.gen_range(0.0..std::f32::consts::TAU);
    let mut img = vec![[0.0f32; 3]; S * S];
    for y in 0..S {
        for x in 0..S {
            let t = ((x as f32 - 15.5) * gdir.cos() + (y as f32 - 15.5) * gdir.sin()) / 44.0 + 0.5;
            for c in 0..3 {
                img[y * S + x][c] = bg0[c] * (1.0 - t) + bg1[c] * t;
            }
        }
    }
    // Distractors: two small faint shapes of random families.
    for _ in 0..2 {
        let (dk, cx, cy, r) =
            (rng.gen_range(0..5), rng.gen_range(0.0..32.0f32), rng.gen_range(0.0..32.0f32), rng.gen_range(2.5..5.0f32));
        let col = hsv(rng.gen_range(0.0..360.0), rng.gen_range(0.2..0.8), rng.gen_range(0.3..1.0));
        let alpha = rng.gen_range(0.25..0.5);
        for y in 0..S {
            for x in 0..S {
                if inside(dk, (x as f32 - cx) / r, (y as f32 - cy) / r) {
                    for c in 0..3 {
                        img[y * S + x][c] = img[y * S + x][c] * (1.0 - alpha) + col[c] * alpha;
                    }
                }
            }
        }
    }
    // The object.
    let (cx, cy) = (15.5 + rng.gen_range(-5.0..5.0f32), 15.5 + rng.gen_range(-5.0..5.0f32));
    let radius = rng.gen_range(8.0..12.0f32);
    let rot = rng.gen_range(0.0..std::f32::consts::TAU);
    let col = hsv(hue, rng.gen_range(0.55..1.0), rng.gen_range(0.55..1.0));
    let accent = hsv(accent_hue, rng.gen_range(0.6..1.0), rng.gen_range(0.6..1.0));
    let (freq, phase) = (rng.gen_range(0.75..1.15f32), rng.gen_range(0.0..std::f32::consts::TAU));
    let amp = rng.gen_range(cfg.contrast.0..cfg.contrast.1.max(cfg.contrast.0 + 1e-6));
    let conf_dir = rng.gen_range(0.0..std::f32::consts::PI);
    let (cfreq, cphase) = (rng.gen_range(0.6..1.3f32), rng.gen_range(0.0..std::f32::consts::TAU));
    let (od, cd) = (orient, conf_dir);
    for y in 0..S {
        for x in 0..S {
            let (dx, dy) = (x as f32 - cx, y as f32 - cy);
            let (u, v) = ((dx * rot.cos() + dy * rot.sin()) / radius, (-dx * rot.sin() + dy * rot.cos()) / radius);
            if !inside(kind, u, v) {
                continue;
            }
            let main = (freq * (dx * od.cos() + dy * od.sin()) + phase).sin();
            let conf = (cfreq * (dx * cd.cos() + dy * cd.sin()) + cphase).sin();
            let t = amp * 0.5 * (main + 1.0);
            let shade = 1.0 + cfg.confounder * conf;
            for c in 0..3 {
                img[y * S + x][c] = (col[c] * (1.0 - t) + accent[c] * t) * shade;
            }
        }
    }
    if cfg.relation {
        // Two 4x4 markers on a random diagonal, 1-3 px from the corners: same colour for even
        // classes, different for odd ones.
        let same = class.is_multiple_of(2);
        let first = rng.gen_bool(0.5);
        let second = if same { first } else { !first };
        let anti = rng.gen_bool(0.5);
        for (k, white) in [first, second].into_iter().enumerate() {
            let (ox, oy) = (rng.gen_range(1..=3usize), rng.gen_range(1..=3usize));
            let (mut x0, y0) = if k == 0 { (ox, oy) } else { (S - 4 - ox, S - 4 - oy) };
            if anti {
                x0 = S - 4 - x0;
            }
            let v = if white { 0.95 } else { 0.05 };
            for y in y0..y0 + 4 {
                for x in x0..x0 + 4 {
                    img[y * S + x] = [v; 3];
                }
            }
        }
    }
    for (i, p) in img.iter().enumerate() {
        for c in 0..3 {
            let n: f32 = rng.sample::<f32, _>(rand_distr::StandardNormal) * cfg.noise;
            out[c * S * S + i] = (p[c] * 255.0 + n).round().clamp(0.0, 255.0) as u8;
        }
    }
}

fn generate(cfg: &SynthConfig, per_class: usize, split_tag: u64, name: &str) -> Dataset {
    let n = per_class * 20;
    let il = 3 * 32 * 32;
    let mut pixels = vec![0u8; n * il];
    // Classes interleave (0, 1, …, 19, 0, …) so any prefix is balanced.
    let labels: Vec<usize> = (0..n).map(|i| i % 20).collect();
    pixels.par_chunks_mut(il).enumerate().for_each(|(i, out)| {
        let mut rng =
            ChaCha8Rng::seed_from_u64(cfg.seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ (split_tag << 40) ^ i as u64);
        render(cfg, i % 20, &mut rng, out);
    });
    Dataset::rgb32(
        name,
        pixels,
        labels,
        class_names(),
        Some(hierarchy()),
        Normalization::cifar100(),
        vec![(
            "generated".into(),
            format!("kdscope synthetic shapes-20 {}", serde_json::to_string(cfg).unwrap_or_default()),
        )],
    )
}

/// Generates the train and test splits (disjoint random streams).
pub fn shapes20(cfg: &SynthConfig) -> DataSplit {
    DataSplit {
        train: generate(cfg, cfg.train_per_class, 1, "shapes20-train"),
        test: generate(cfg, cfg.test_per_class, 2, "shapes20-test"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_balanced() {
        let cfg = SynthConfig { train_per_class: 3, test_per_class: 2, ..Default::default() };
        let a = shapes20(&cfg);
        let b = shapes20(&cfg);
        assert_eq!(a.train.pixels, b.train.pixels);
        assert_eq!(a.train.len(), 60);
        assert_eq!(a.test.len(), 40);
        assert_ne!(a.train.image(0), a.test.image(0));
        let c = shapes20(&SynthConfig { seed: 1, ..cfg });
        assert_ne!(a.train.pixels, c.train.pixels);
        a.train.validate().unwrap();
        assert_eq!(a.train.hierarchy.as_ref().unwrap().members(3), vec![12, 13, 14, 15]);
        assert_eq!(a.train.class_names[13], "ring-b");
    }

    #[test]
    fn relation_markers_encode_the_class_low_bit() {
        let cfg =
            SynthConfig { train_per_class: 6, test_per_class: 1, noise: 0.0, relation: true, ..Default::default() };
        let d = shapes20(&cfg).train;
        let mut seen = [0usize; 2];
        for i in 0..d.len() {
            let img = d.image(i);
            // Marker pixels are the only exactly grey, near-black or near-white ones.
            let (mut white, mut black) = (Vec::new(), Vec::new());
            for p in 0..32 * 32 {
                let (r, g, b) = (img[p], img[1024 + p], img[2048 + p]);
                if r == g && g == b && r >= 240 {
                    white.push((p % 32, p / 32));
                } else if r == g && g == b && r <= 15 {
                    black.push((p % 32, p / 32));
                }
            }
            assert_eq!(white.len() + black.len(), 32, "image {i}: two 4x4 markers");
            let all: Vec<_> = white.iter().chain(&black).collect();
            // Both in corner regions, on one diagonal: one near the top, one near the bottom edge.
            assert!(all.iter().all(|&&(x, y)| !(8..24).contains(&x) && !(8..24).contains(&y)), "image {i}");
            assert_eq!(all.iter().filter(|&&&(_, y)| y < 8).count(), 16);
            let same = white.is_empty() || black.is_empty();
            assert_eq!(same, d.labels[i].is_multiple_of(2), "image {i} of class {}", d.labels[i]);
            seen[same as usize] += 1;
        }
        assert!(seen[0] > 0 && seen[1] > 0);
    }
}
