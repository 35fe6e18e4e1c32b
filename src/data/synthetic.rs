//! The built-in synthetic dataset: deterministic 3x32x32 colour images in 20 classes grouped into 5
//! superclasses, generated from a seed, so the demo and the tests need no download.
//!
//! **fractals-20** (the default, [`SynthConfig::fractal`]): each superclass is a random contractive
//! iterated function system (3–5 affine maps, as in FractalDB) drawn in its own hue (red, lime, green,
//! blue, violet, ±[`SynthConfig::fractal_hue`] degrees); each of its four classes is a fixed random
//! perturbation of the system's maps ([`SynthConfig::fractal_class_shift`]); each image perturbs its
//! class's maps again ([`SynthConfig::fractal_jitter`]) and renders them with the chaos game at a random
//! size, place, tilt and mirror over a gradient background with pixel noise. The hue tells the
//! superclass; only the fractal's shape tells the four classes of a superclass apart, so errors stay
//! within superclasses, and telling similar self-similar shapes apart is where depth pays: in the demo's
//! schedule ResNet-56 reaches 72.5 % where ResNet-8 gets 64.7 % (BENCHMARKS.md).
//!
//! **shapes-20** (`fractal: false`, the earlier default): each superclass is a shape family with its
//! own hue (disk, square, triangle, ring, cross). The object carries stripes (random orientation,
//! frequency and phase) that blend its colour with an accent colour, and the four classes of a
//! superclass differ only in the accent's hue: four shades [`SynthConfig::accent_step`] degrees apart,
//! each jittered by ±[`SynthConfig::accent_jitter`], so neighbouring classes overlap a little.
//! Position, size, rotation, saturation, brightness, stripe contrast, a weaker brightness grating,
//! background gradients, distractor shapes and pixel noise vary per image. ResNet-8 learns it as well
//! as ResNet-56 does.
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{DataError, DataSplit, Dataset, Hierarchy, Normalization};

pub const SUPER_NAMES: [&str; 5] = ["disk", "square", "triangle", "ring", "cross"];
/// Superclass names of the fractal variant: the hues of its five systems (0°, 72°, …, 288°).
pub const FRACTAL_SUPER_NAMES: [&str; 5] = ["red", "lime", "green", "blue", "violet"];
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
    /// Experimental relational variant of shapes-20 (off by default): within a superclass the four classes are
    /// two accent hues (the outer two of the default four) x whether two small markers in opposite
    /// corners of the image have the same colour (black or white) or not. Global average pooling
    /// of local features cannot tell "same" from "different" when no receptive field covers both
    /// markers, so the relation needs depth.
    pub relation: bool,
    /// fractals-20 (the default) rather than shapes-20: see the module documentation. The accent,
    /// confounder, contrast and relation settings above apply to shapes-20 only; `noise` to both.
    pub fractal: bool,
    /// Size of each class's fixed perturbation of its superclass's maps (matrix entries get half).
    pub fractal_class_shift: f32,
    /// Size of each image's own perturbation of its class's maps.
    pub fractal_jitter: f32,
    /// Fractal variant: jitter of the superclass hue, degrees (negative: random hue, no colour cue).
    pub fractal_hue: f32,
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
            fractal: true,
            fractal_class_shift: 0.2,
            fractal_jitter: 0.1,
            fractal_hue: 20.0,
        }
    }
}

/// The most images per class and part the generator makes (20 classes: 3 GB of pixels).
pub const MAX_PER_CLASS: usize = 50_000;

impl SynthConfig {
    /// Checks every setting, naming the first one out of range.
    pub fn validate(&self) -> Result<(), DataError> {
        let bad = |field: &str, want: &str, got: String| {
            Err(DataError::Invalid(format!("synthetic dataset: {field} must be {want}, got {got}")))
        };
        let finite_at_least = |v: f32, lo: f32| v.is_finite() && v >= lo;
        for (field, n) in [("train_per_class", self.train_per_class), ("test_per_class", self.test_per_class)] {
            if !(1..=MAX_PER_CLASS).contains(&n) {
                return bad(field, &format!("between 1 and {MAX_PER_CLASS}"), n.to_string());
            }
        }
        for (field, v) in [
            ("accent_jitter", self.accent_jitter),
            ("noise", self.noise),
            ("fractal_class_shift", self.fractal_class_shift),
            ("fractal_jitter", self.fractal_jitter),
        ] {
            if !finite_at_least(v, 0.0) {
                return bad(field, "a finite number ≥ 0", v.to_string());
            }
        }
        for (field, v) in [("accent_step", self.accent_step), ("fractal_hue", self.fractal_hue)] {
            if !v.is_finite() {
                return bad(field, "finite", v.to_string());
            }
        }
        if !(self.confounder.is_finite() && (0.0..=1.0).contains(&self.confounder)) {
            return bad("confounder", "in [0, 1]", self.confounder.to_string());
        }
        let (lo, hi) = self.contrast;
        if !(lo.is_finite() && hi.is_finite() && 0.0 <= lo && lo <= hi && hi <= 1.0) {
            return bad("contrast", "a range [lo, hi] with 0 ≤ lo ≤ hi ≤ 1", format!("[{lo}, {hi}]"));
        }
        Ok(())
    }
}

fn super_names(cfg: &SynthConfig) -> [&'static str; 5] {
    if cfg.fractal {
        FRACTAL_SUPER_NAMES
    } else {
        SUPER_NAMES
    }
}

/// Class names: `<superclass>-<a…d>` (e.g. `blue-b` for the fractal dataset, `ring-b` for shapes-20,
/// where `a`…`d` are the accent hues in order).
pub fn class_names(cfg: &SynthConfig) -> Vec<String> {
    super_names(cfg).iter().flat_map(|s| CLASS_NAMES.iter().map(move |o| format!("{s}-{o}"))).collect()
}

pub fn hierarchy(cfg: &SynthConfig) -> Hierarchy {
    Hierarchy {
        super_names: super_names(cfg).iter().map(|s| s.to_string()).collect(),
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

/// A linear colour gradient across the 32x32 image between two pale random colours (saturation below
/// 0.35, value in `value`), in a random direction: the background of both renderers.
struct Gradient {
    from: [f32; 3],
    to: [f32; 3],
    dir: f32,
}

impl Gradient {
    fn random(rng: &mut ChaCha8Rng, value: std::ops::Range<f32>) -> Self {
        let from = hsv(rng.gen_range(0.0..360.0), rng.gen_range(0.0..0.35), rng.gen_range(value.clone()));
        let to = hsv(rng.gen_range(0.0..360.0), rng.gen_range(0.0..0.35), rng.gen_range(value));
        Gradient { from, to, dir: rng.gen_range(0.0..std::f32::consts::TAU) }
    }

    /// The colour at pixel `(x, y)`.
    fn at(&self, x: usize, y: usize) -> [f32; 3] {
        let t = ((x as f32 - 15.5) * self.dir.cos() + (y as f32 - 15.5) * self.dir.sin()) / 44.0 + 0.5;
        std::array::from_fn(|c| self.from[c] * (1.0 - t) + self.to[c] * t)
    }
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
    let background = Gradient::random(rng, 0.2..0.8);
    let mut img: Vec<[f32; 3]> = (0..S * S).map(|i| background.at(i % S, i / S)).collect();
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

/// One affine map of an iterated function system: `x -> a x + b` (`a` row-major 2x2). The chaos game
/// picks a map with probability proportional to `|det a|` (plus a floor), see [`render_fractal`].
#[derive(Clone, Copy, Debug)]
struct AffineMap {
    a: [f32; 4],
    b: [f32; 2],
}

fn gauss(rng: &mut ChaCha8Rng) -> f32 {
    rng.sample::<f32, _>(rand_distr::StandardNormal)
}

/// Scales `a` down so its spectral norm is at most `max` (keeps the system contractive).
fn contract(mut m: AffineMap, max: f32) -> AffineMap {
    let [p, q, r, s] = m.a;
    let (e, f, g, h) = ((p + s) / 2.0, (p - s) / 2.0, (r + q) / 2.0, (r - q) / 2.0);
    let sigma = (e * e + h * h).sqrt() + (f * f + g * g).sqrt();
    if sigma > max {
        m.a.iter_mut().for_each(|v| *v *= max / sigma);
    }
    m
}

/// The 20 class systems: superclass `k` gets a random base system, each class a fixed perturbation.
fn fractal_classes(cfg: &SynthConfig) -> Vec<Vec<AffineMap>> {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x0F4A_C7A1);
    let mut classes = Vec::with_capacity(20);
    for _ in 0..5 {
        let n = rng.gen_range(3..=5usize);
        let base: Vec<AffineMap> = (0..n)
            .map(|_| {
                let (t, f) = (rng.gen_range(0.0..std::f32::consts::TAU), rng.gen_range(0.0..std::f32::consts::TAU));
                let (s1, s2) = (rng.gen_range(0.3..0.75f32), rng.gen_range(0.3..0.75f32));
                let s2 = if rng.gen_bool(0.25) { -s2 } else { s2 };
                // a = R(t) diag(s1, s2) R(f)
                let (ct, st, cf, sf) = (t.cos(), t.sin(), f.cos(), f.sin());
                let a = [
                    ct * s1 * cf - st * s2 * sf,
                    -ct * s1 * sf - st * s2 * cf,
                    st * s1 * cf + ct * s2 * sf,
                    -st * s1 * sf + ct * s2 * cf,
                ];
                AffineMap { a, b: [rng.gen_range(-1.0..1.0), rng.gen_range(-1.0..1.0)] }
            })
            .collect();
        for _ in 0..4 {
            classes.push(base.iter().map(|m| perturb(m, cfg.fractal_class_shift, &mut rng)).collect());
        }
    }
    classes
}

fn perturb(m: &AffineMap, size: f32, rng: &mut ChaCha8Rng) -> AffineMap {
    let mut out = *m;
    out.a.iter_mut().for_each(|v| *v += size * 0.5 * gauss(rng));
    out.b.iter_mut().for_each(|v| *v += size * gauss(rng));
    contract(out, 0.85)
}

/// Renders one fractal image of class system `maps` into `out` (CHW bytes).
fn render_fractal(cfg: &SynthConfig, class: usize, maps: &[AffineMap], rng: &mut ChaCha8Rng, out: &mut [u8]) {
    const S: usize = 32;
    let maps: Vec<AffineMap> = maps.iter().map(|m| perturb(m, cfg.fractal_jitter, rng)).collect();
    let weights: Vec<f32> = maps.iter().map(|m| (m.a[0] * m.a[3] - m.a[1] * m.a[2]).abs() + 0.05).collect();
    let total: f32 = weights.iter().sum();
    let mut pts = Vec::with_capacity(4000);
    let (mut x, mut y) = (0.0f32, 0.0f32);
    for i in 0..4020 {
        let mut r = rng.gen_range(0.0..total);
        let mut k = 0;
        while k + 1 < maps.len() && r >= weights[k] {
            r -= weights[k];
            k += 1;
        }
        let m = &maps[k];
        (x, y) = (m.a[0] * x + m.a[1] * y + m.b[0], m.a[2] * x + m.a[3] * y + m.b[1]);
        if i >= 20 {
            pts.push((x, y));
        }
    }
    let (mut x0, mut x1, mut y0, mut y1) = (f32::MAX, f32::MIN, f32::MAX, f32::MIN);
    for &(x, y) in &pts {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    let extent = (x1 - x0).max(y1 - y0).max(1e-3);
    let size = rng.gen_range(18.0..28.0f32);
    let scale = size / extent * if rng.gen_bool(0.5) { -1.0 } else { 1.0 };
    let rot = rng.gen_range(-0.6..0.6f32);
    let slack = (16.0 - size / 2.0).max(0.0);
    let (cx, cy) = (16.0 + rng.gen_range(-slack..=slack), 16.0 + rng.gen_range(-slack..=slack));
    let (mx, my) = ((x0 + x1) / 2.0, (y0 + y1) / 2.0);
    let mut density = vec![0.0f32; S * S];
    for &(x, y) in &pts {
        let (u, v) = ((x - mx) * scale, (y - my) * scale.abs());
        let (px, py) = (cx + u * rot.cos() - v * rot.sin() - 0.5, cy + u * rot.sin() + v * rot.cos() - 0.5);
        let (ix, iy) = (px.floor(), py.floor());
        let (fx, fy) = (px - ix, py - iy);
        for (dx, dy, w) in
            [(0, 0, (1.0 - fx) * (1.0 - fy)), (1, 0, fx * (1.0 - fy)), (0, 1, (1.0 - fx) * fy), (1, 1, fx * fy)]
        {
            let (xx, yy) = (ix as i64 + dx, iy as i64 + dy);
            if (0..S as i64).contains(&xx) && (0..S as i64).contains(&yy) {
                density[yy as usize * S + xx as usize] += w;
            }
        }
    }
    let mut nz: Vec<f32> = density.iter().copied().filter(|&d| d > 0.0).collect();
    nz.sort_by(|a, b| a.total_cmp(b));
    let q = nz.get(nz.len() * 3 / 4).copied().unwrap_or(1.0).max(1e-3);
    let background = Gradient::random(rng, 0.15..0.6);
    let hue = if cfg.fractal_hue < 0.0 {
        rng.gen_range(0.0..360.0)
    } else {
        (class / 4) as f32 * 72.0 + rng.gen_range(-cfg.fractal_hue..=cfg.fractal_hue)
    };
    let col = hsv(hue, rng.gen_range(0.4..1.0), rng.gen_range(0.7..1.0));
    for (i, d) in density.iter().enumerate() {
        let bg = background.at(i % S, i / S);
        let alpha = (d / q).min(1.0);
        for c in 0..3 {
            let v = bg[c] * (1.0 - alpha) + col[c] * alpha;
            let n = gauss(rng) * cfg.noise;
            out[c * S * S + i] = (v * 255.0 + n).round().clamp(0.0, 255.0) as u8;
        }
    }
}

fn generate(cfg: &SynthConfig, per_class: usize, split_tag: u64, name: &str) -> Dataset {
    let n = per_class * 20;
    let il = 3 * 32 * 32;
    let mut pixels = vec![0u8; n * il];
    // Classes interleave (0, 1, …, 19, 0, …) so any prefix is balanced.
    let labels: Vec<usize> = (0..n).map(|i| i % 20).collect();
    let variant = if cfg.fractal { "fractals-20" } else { "shapes-20" };
    let systems = if cfg.fractal { fractal_classes(cfg) } else { Vec::new() };
    pixels.par_chunks_mut(il).enumerate().for_each(|(i, out)| {
        let mut rng =
            ChaCha8Rng::seed_from_u64(cfg.seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ (split_tag << 40) ^ i as u64);
        if cfg.fractal {
            render_fractal(cfg, i % 20, &systems[i % 20], &mut rng, out);
        } else {
            render(cfg, i % 20, &mut rng, out);
        }
    });
    Dataset::rgb32(
        &format!("{}-{name}", variant.replace('-', "")),
        pixels,
        labels,
        class_names(cfg),
        Some(hierarchy(cfg)),
        Normalization::cifar100(),
        vec![(
            "generated".into(),
            format!("kdscope synthetic {variant} {}", serde_json::to_string(cfg).unwrap_or_default()),
        )],
    )
}

/// Generates the train and test splits (disjoint random streams) of the built-in dataset:
/// fractals-20 by default, shapes-20 with `fractal: false`.
///
/// # Panics
/// On settings [`SynthConfig::validate`] refuses; [`try_builtin_dataset`] returns the error instead.
pub fn builtin_dataset(cfg: &SynthConfig) -> DataSplit {
    try_builtin_dataset(cfg).unwrap_or_else(|e| panic!("{e}"))
}

/// [`builtin_dataset`], with an error naming the first setting out of range.
pub fn try_builtin_dataset(cfg: &SynthConfig) -> Result<DataSplit, DataError> {
    cfg.validate()?;
    Ok(DataSplit {
        train: generate(cfg, cfg.train_per_class, 1, "train"),
        test: generate(cfg, cfg.test_per_class, 2, "test"),
    })
}

/// A test split of 32×32 RGB images of uniform noise, the worst case for PNG and JPEG (nothing
/// compresses), for scale checks of reports: `classes` classes of `per_class` images (labels cycle
/// through the classes), named `class-<c>`, in `supers` superclasses of consecutive classes
/// (`super-<g>`); seeded.
pub fn noise_split(classes: usize, per_class: usize, supers: usize, seed: u64) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let labels: Vec<usize> = (0..classes * per_class).map(|i| i % classes).collect();
    let pixels: Vec<u8> = (0..labels.len() * 3072).map(|_| rng.gen()).collect();
    let supers = supers.clamp(1, classes.max(1));
    let h = Hierarchy {
        super_names: (0..supers).map(|g| format!("super-{g}")).collect(),
        class_to_super: (0..classes).map(|c| c * supers / classes).collect(),
    };
    let names = (0..classes).map(|c| format!("class-{c}")).collect();
    Dataset::rgb32("noise", pixels, labels, names, Some(h), Normalization::cifar100(), vec![])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_balanced() {
        let cfg = SynthConfig { train_per_class: 3, test_per_class: 2, ..Default::default() };
        let a = builtin_dataset(&cfg);
        let b = builtin_dataset(&cfg);
        assert_eq!(a.train.pixels, b.train.pixels);
        assert_eq!(a.train.len(), 60);
        assert_eq!(a.test.len(), 40);
        assert_ne!(a.train.image(0), a.test.image(0));
        let c = builtin_dataset(&SynthConfig { seed: 1, ..cfg });
        assert_ne!(a.train.pixels, c.train.pixels);
        a.train.validate().unwrap();
        assert_eq!(a.train.hierarchy.as_ref().unwrap().members(3), vec![12, 13, 14, 15]);
        assert_eq!(a.train.class_names[13], "blue-b");
        let shapes = builtin_dataset(&SynthConfig { fractal: false, ..cfg });
        assert_eq!(shapes.train.class_names[13], "ring-b");
        assert_ne!(shapes.train.pixels, a.train.pixels);
    }

    #[test]
    fn relation_markers_encode_the_class_low_bit() {
        let cfg = SynthConfig {
            train_per_class: 6,
            test_per_class: 1,
            noise: 0.0,
            relation: true,
            fractal: false,
            ..Default::default()
        };
        let d = builtin_dataset(&cfg).train;
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

    /// Spectral norm by brute force: the largest stretch of `a` over 720 unit directions.
    fn max_stretch(a: [f32; 4]) -> f32 {
        (0..720)
            .map(|k| {
                let t = k as f32 * std::f32::consts::PI / 360.0;
                let (x, y) = (t.cos(), t.sin());
                (a[0] * x + a[1] * y).hypot(a[2] * x + a[3] * y)
            })
            .fold(0.0f32, f32::max)
    }

    #[test]
    fn contraction_bounds_the_spectral_norm() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..200 {
            let a = [0; 4].map(|_| rng.gen_range(-2.0..2.0f32));
            let m = contract(AffineMap { a, b: [0.0; 2] }, 0.85);
            let (norm, before) = (max_stretch(m.a), max_stretch(a));
            assert!(norm <= 0.85 + 1e-3, "{norm}");
            if before <= 0.85 {
                assert_eq!(m.a, a, "already contractive maps are left alone");
            } else {
                assert!((norm - 0.85).abs() < 2e-3, "scaled to the bound: {norm}");
            }
        }
    }

    #[test]
    fn fractal_classes_share_their_superclass_system_and_hue() {
        let cfg = SynthConfig {
            train_per_class: 4,
            test_per_class: 1,
            noise: 0.0,
            fractal: true,
            fractal_class_shift: 0.2,
            fractal_hue: 20.0,
            ..Default::default()
        };
        // Class systems: perturbations of one base per superclass, so parameters are closer within a
        // superclass than across (0.2 shift against base entries spread over [-1, 1]).
        let sys = fractal_classes(&cfg);
        assert_eq!(sys.len(), 20);
        let dist = |p: &[AffineMap], q: &[AffineMap]| -> Option<f32> {
            (p.len() == q.len()).then(|| {
                p.iter()
                    .zip(q)
                    .map(|(m, n)| {
                        (0..4).map(|i| (m.a[i] - n.a[i]).abs()).sum::<f32>()
                            + (0..2).map(|i| (m.b[i] - n.b[i]).abs()).sum::<f32>()
                    })
                    .sum::<f32>()
                    / p.len() as f32
            })
        };
        let (mut within, mut across) = (Vec::new(), Vec::new());
        for i in 0..20 {
            for j in i + 1..20 {
                if let Some(d) = dist(&sys[i], &sys[j]) {
                    if i / 4 == j / 4 {
                        within.push(d)
                    } else {
                        across.push(d)
                    }
                }
            }
        }
        assert_eq!(within.len(), 5 * 6, "classes of a superclass have as many maps as its base");
        let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
        assert!(!across.is_empty() && mean(&within) < 0.6 * mean(&across), "{} vs {}", mean(&within), mean(&across));
        // Images: the brightest saturated pixels carry the superclass hue (within the jitter).
        let d = builtin_dataset(&cfg).train;
        for i in 0..d.len() {
            let img = d.image(i);
            let best = (0..1024)
                .max_by_key(|&p| {
                    let (r, g, b) = (img[p] as i32, img[1024 + p] as i32, img[2048 + p] as i32);
                    r.max(g).max(b) - r.min(g).min(b)
                })
                .unwrap();
            let [r, g, b] = [img[best], img[1024 + best], img[2048 + best]].map(|v| v as f32);
            let (mx, mn) = (r.max(g).max(b), r.min(g).min(b));
            let h = 60.0
                * if mx == r {
                    ((g - b) / (mx - mn)).rem_euclid(6.0)
                } else if mx == g {
                    (b - r) / (mx - mn) + 2.0
                } else {
                    (r - g) / (mx - mn) + 4.0
                };
            let target = (d.labels[i] / 4) as f32 * 72.0;
            let off = ((h - target + 540.0).rem_euclid(360.0) - 180.0).abs();
            assert!(off <= 20.0 + 6.0, "image {i}: hue {h} against superclass hue {target}");
        }
        assert_eq!(builtin_dataset(&cfg).train.pixels, d.pixels, "deterministic");
    }
}
