//! The report's colours, one place for the charts (Rust), the page's CSS and the page script: teacher
//! and student, who got an image wrong, right/wrong points and the sign of a delta. Each pair a reader
//! must tell apart stays apart for the three colour-vision deficiencies (simulated with Machado et al.
//! 2009 at full severity; see the tests), after Okabe & Ito's palette.
use serde::Serialize;

/// The named colours (CSS hex).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Palette {
    pub teacher: &'static str,
    pub student: &'static str,
    /// Corpus frames: only the student wrong, both wrong, only the teacher wrong.
    pub student_wrong: &'static str,
    pub both_wrong: &'static str,
    pub teacher_wrong: &'static str,
    /// Embedding points coloured by correctness.
    pub correct: &'static str,
    pub wrong: &'static str,
    /// Table deltas (student − teacher) below and above zero.
    pub negative: &'static str,
    pub positive: &'static str,
}

/// The palette every report uses.
pub const PALETTE: Palette = Palette {
    teacher: "#0072B2",
    student: "#E69F00",
    student_wrong: "#E69F00",
    both_wrong: "#7A2E00",
    teacher_wrong: "#56B4E9",
    correct: "#56B4E9",
    wrong: "#D55E00",
    negative: "#B34700",
    positive: "#0060A0",
};

impl Palette {
    /// The pairs a reader must tell apart.
    pub fn pairs(&self) -> [(&'static str, &'static str, &'static str); 6] {
        [
            ("teacher / student", self.teacher, self.student),
            ("student wrong / both wrong", self.student_wrong, self.both_wrong),
            ("student wrong / teacher wrong", self.student_wrong, self.teacher_wrong),
            ("both wrong / teacher wrong", self.both_wrong, self.teacher_wrong),
            ("correct / wrong", self.correct, self.wrong),
            ("negative / positive", self.negative, self.positive),
        ]
    }
}

/// How a colour looks to a reader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vision {
    Normal,
    Protanopia,
    Deuteranopia,
    Tritanopia,
}

impl Vision {
    pub const ALL: [Vision; 4] = [Vision::Normal, Vision::Protanopia, Vision::Deuteranopia, Vision::Tritanopia];

    /// Machado, Oliveira & Fernandes (2009), severity 1, on linear RGB.
    fn matrix(self) -> [[f64; 3]; 3] {
        match self {
            Vision::Normal => [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
            Vision::Protanopia => {
                [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216], [-0.003882, -0.048116, 1.051998]]
            }
            Vision::Deuteranopia => {
                [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413], [-0.011820, 0.042940, 0.968881]]
            }
            Vision::Tritanopia => {
                [[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602], [0.004733, 0.691367, 0.303900]]
            }
        }
    }
}

/// `#rrggbb` as linear RGB in [0, 1].
pub fn linear_rgb(hex: &str) -> anyhow::Result<[f64; 3]> {
    let h = hex.strip_prefix('#').unwrap_or(hex);
    anyhow::ensure!(h.len() == 6 && h.is_ascii(), "colour {hex:?}: expected #rrggbb");
    let mut out = [0.0; 3];
    for (i, o) in out.iter_mut().enumerate() {
        let v = u8::from_str_radix(&h[2 * i..2 * i + 2], 16)? as f64 / 255.0;
        *o = if v <= 0.04045 { v / 12.92 } else { ((v + 0.055) / 1.055).powf(2.4) };
    }
    Ok(out)
}

/// CIE L*a*b* (D65) of a linear RGB colour.
pub fn lab(rgb: [f64; 3]) -> [f64; 3] {
    let [r, g, b] = rgb;
    let x = (0.4124564 * r + 0.3575761 * g + 0.1804375 * b) / 0.95047;
    let y = 0.2126729 * r + 0.7151522 * g + 0.0721750 * b;
    let z = (0.0193339 * r + 0.1191920 * g + 0.9503041 * b) / 1.08883;
    let d: f64 = 6.0 / 29.0;
    let f = |t: f64| if t > d.powi(3) { t.cbrt() } else { t / (3.0 * d * d) + 4.0 / 29.0 };
    let (fx, fy, fz) = (f(x), f(y), f(z));
    [116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)]
}

/// The linear RGB colour as `vision` sees it.
pub fn simulate(rgb: [f64; 3], vision: Vision) -> [f64; 3] {
    let m = vision.matrix();
    let mut out = [0.0; 3];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (m[i][0] * rgb[0] + m[i][1] * rgb[1] + m[i][2] * rgb[2]).clamp(0.0, 1.0);
    }
    out
}

/// CIE76 colour difference of two colours as `vision` sees them.
pub fn delta_e(a: &str, b: &str, vision: Vision) -> anyhow::Result<f64> {
    let (la, lb) = (lab(simulate(linear_rgb(a)?, vision)), lab(simulate(linear_rgb(b)?, vision)));
    Ok(la.iter().zip(&lb).map(|(x, y)| (x - y).powi(2)).sum::<f64>().sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_and_simulation_match_hand_values() {
        // sRGB red: L* 53.24, a* 80.09, b* 67.20 (the textbook value).
        let red = lab(linear_rgb("#ff0000").unwrap());
        for (x, want) in red.iter().zip([53.24, 80.09, 67.20]) {
            assert!((x - want).abs() < 0.01, "{red:?}");
        }
        // Deuteranopia maps pure red to the first column of its matrix.
        assert_eq!(simulate([1.0, 0.0, 0.0], Vision::Deuteranopia), [0.367322, 0.280085, 0.0]);
        assert_eq!(delta_e("#123456", "#123456", Vision::Tritanopia).unwrap(), 0.0);
        assert!(linear_rgb("#12345").is_err() && linear_rgb("#gg0000").is_err());
    }

    #[test]
    fn every_pair_stays_apart_for_colour_blind_readers() {
        const MIN: f64 = 40.0;
        for (what, a, b) in PALETTE.pairs() {
            for v in Vision::ALL {
                let d = delta_e(a, b, v).unwrap();
                assert!(d >= MIN, "{what} ({a} vs {b}) under {v:?}: delta E {d:.1} < {MIN}");
            }
        }
        // The colours this replaced: green/red deltas merged for protanopes and deuteranopes.
        assert!(delta_e("#1b7a36", "#b3261e", Vision::Deuteranopia).unwrap() < 20.0);
        assert!(delta_e("#1b7a36", "#b3261e", Vision::Protanopia).unwrap() < 20.0);
    }
}
