//! Grad-CAM (Selvaraju et al. 2017) and CAM (Zhou et al. 2016) at a named feature tap.
//!
//! For images `x`, target classes `t` and the feature `A` (channels `c`, `h × w`) at the tap:
//! - **Grad-CAM**: `α_c = mean_{h,w} ∂y_t/∂A_c` (gradients from the tape, via a gradient probe on the
//!   real forward pass), map `= ReLU(Σ_c α_c A_c)`;
//! - **CAM** (global-average-pool + linear heads, tap = the last stage): map `= Σ_c W_{t,c} A_c` with the
//!   classifier weights `W` (no ReLU, as in the paper).
//!
//! Maps are returned at the feature resolution; [`Maps::upsampled`] resizes them to the input size.
use anyhow::{ensure, Context};
use dfdx::prelude::*;

use crate::models::Model;
use crate::nn::{dev, Var};

/// One saliency map per image, `h × w` each, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Maps {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub data: Vec<f32>,
}

impl Maps {
    pub fn map(&self, i: usize) -> &[f32] {
        &self.data[i * self.h * self.w..(i + 1) * self.h * self.w]
    }

    /// Bilinear resize of every map to `h × w` (half-pixel centres, edges clamped: OpenCV's
    /// `INTER_LINEAR`, which pytorch-grad-cam uses).
    pub fn upsampled(&self, h: usize, w: usize) -> Maps {
        let mut data = Vec::with_capacity(self.n * h * w);
        let coord = |o: usize, out: usize, inn: usize| {
            let s = ((o as f32 + 0.5) * inn as f32 / out as f32 - 0.5).max(0.0);
            let i0 = (s.floor() as usize).min(inn - 1);
            let i1 = (i0 + 1).min(inn - 1);
            (i0, i1, s - i0 as f32)
        };
        for i in 0..self.n {
            let m = self.map(i);
            for y in 0..h {
                let (y0, y1, fy) = coord(y, h, self.h);
                for x in 0..w {
                    let (x0, x1, fx) = coord(x, w, self.w);
                    let top = m[y0 * self.w + x0] * (1.0 - fx) + m[y0 * self.w + x1] * fx;
                    let bot = m[y1 * self.w + x0] * (1.0 - fx) + m[y1 * self.w + x1] * fx;
                    data.push(top * (1.0 - fy) + bot * fy);
                }
            }
        }
        Maps { n: self.n, h, w, data }
    }

    /// Each map scaled to [0, 1] by its minimum and maximum (a constant map becomes 0).
    pub fn normalized(&self) -> Maps {
        let mut out = self.clone();
        for m in out.data.chunks_mut(self.h * self.w) {
            let (lo, hi) = m.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
            let span = hi - lo;
            m.iter_mut().for_each(|v| *v = if span > 0.0 { (*v - lo) / span } else { 0.0 });
        }
        out
    }
}

fn check_targets(model: &Model, x: &Var, targets: &[usize]) -> anyhow::Result<()> {
    ensure!(targets.len() == x.shape.n, "{} targets for {} images", targets.len(), x.shape.n);
    ensure!(
        targets.iter().all(|&t| t < model.spec.num_classes),
        "target class out of range (the model has {} classes)",
        model.spec.num_classes
    );
    Ok(())
}

/// Grad-CAM maps of `model` (evaluation mode) at feature tap `tap` for classes `targets`.
pub fn grad_cam(model: &Model, x: &Var, tap: &str, targets: &[usize]) -> anyhow::Result<Maps> {
    check_targets(model, x, targets)?;
    let (n, k) = (x.shape.n, model.spec.num_classes);
    let input = Var::from_vec(x.to_vec(), x.shape).traced_input();
    let out = model.forward_probed(input, false, &[tap])?;
    let feat = out.features.get(tap).context("feature tap missing")?;
    let (fs, a) = (feat.shape, feat.to_vec());
    let probe = out.features.probes[0].1.clone();
    let mut mask = vec![0.0f32; n * k];
    for (i, &t) in targets.iter().enumerate() {
        mask[i * k + t] = 1.0;
    }
    let _ = (out.logits.dfdx_matrix() * dev().tensor_from_vec(mask, (n, k))).sum().backward();
    let g = probe.get().context("no gradient reached the tap")?;
    let (c, hw) = (fs.c, fs.h * fs.w);
    let mut data = vec![0.0f32; n * hw];
    for i in 0..n {
        for ch in 0..c {
            let base = (i * c + ch) * hw;
            let alpha = g[base..base + hw].iter().sum::<f32>() / hw as f32;
            for p in 0..hw {
                data[i * hw + p] += alpha * a[base + p];
            }
        }
    }
    data.iter_mut().for_each(|v| *v = v.max(0.0));
    Ok(Maps { n, h: fs.h, w: fs.w, data })
}

/// CAM maps at the last feature stage (`layer3` for ResNets, `final` for WRNs) with the FC weights.
pub fn cam(model: &Model, x: &Var, targets: &[usize]) -> anyhow::Result<Maps> {
    check_targets(model, x, targets)?;
    let tap = match model.spec.arch {
        crate::models::Arch::Wrn { .. } => "final",
        _ => "layer3",
    };
    let out = model.forward_with(Var::from_vec(x.to_vec(), x.shape), false, true);
    let feat = out.features.get(tap).context("feature tap missing")?;
    let (fs, a) = (feat.shape, feat.to_vec());
    let w = model.store.get(model.store.find("fc.weight").context("model has no fc.weight")?).values();
    let (c, hw) = (fs.c, fs.h * fs.w);
    let mut data = vec![0.0f32; x.shape.n * hw];
    for (i, &t) in targets.iter().enumerate() {
        for ch in 0..c {
            let wt = w[t * c + ch];
            for p in 0..hw {
                data[i * hw + p] += wt * a[(i * c + ch) * hw + p];
            }
        }
    }
    Ok(Maps { n: x.shape.n, h: fs.h, w: fs.w, data })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::Shape4;

    fn batch(n: usize) -> Var {
        let x: Vec<f32> = (0..n * 3 * 32 * 32).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
        Var::from_vec(x, Shape4 { n, c: 3, h: 32, w: 32 })
    }

    /// On a GAP + linear head, Grad-CAM at the last stage is ReLU(CAM) / (h·w) (its α_c = W_tc / hw).
    #[test]
    fn grad_cam_equals_relu_cam_on_the_last_stage() {
        let m = Model::build("resnet8", 10, 5).unwrap();
        let x = batch(2);
        let targets = [3, 8];
        let g = grad_cam(&m, &x, "layer3", &targets).unwrap();
        let c = cam(&m, &x, &targets).unwrap();
        assert_eq!((g.n, g.h, g.w), (2, 8, 8));
        assert!(c.data.iter().any(|&v| v > 0.0) && c.data.iter().any(|&v| v < 0.0), "a non-trivial case");
        for (a, b) in g.data.iter().zip(&c.data) {
            assert!((a - b.max(0.0) / 64.0).abs() < 1e-6, "{a} vs {b}");
        }
        assert!(grad_cam(&m, &x, "layer3", &[1]).is_err());
        assert!(grad_cam(&m, &x, "layer3", &[1, 10]).is_err());
    }

    #[test]
    fn bilinear_upsampling_by_hand() {
        // 1x2 map [0, 1] to 1x4: centres at x = -0.25, 0.25, 0.75, 1.25 in input pixels, clamped.
        let m = Maps { n: 1, h: 1, w: 2, data: vec![0.0, 1.0] };
        assert_eq!(m.upsampled(1, 4).data, vec![0.0, 0.25, 0.75, 1.0]);
        let m = Maps { n: 1, h: 2, w: 2, data: vec![0.0, 2.0, 4.0, 6.0] };
        let u = m.upsampled(4, 4);
        assert_eq!(&u.data[0..4], &[0.0, 0.5, 1.5, 2.0]);
        assert_eq!(&u.data[4..8], &[1.0, 1.5, 2.5, 3.0]);
        assert_eq!(m.normalized().data, vec![0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0]);
    }
}
