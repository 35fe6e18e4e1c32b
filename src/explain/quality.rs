//! Explanation-quality metrics after Poppi et al. 2021 ("Revisiting The Evaluation of Class
//! Activation Mapping for Explainability: A Novel Metric and Experimental Analysis", ADCC), computed
//! per image and summarised per model. For an image `x`, target class `t`, saliency map `L(x)` scaled
//! to [0, 1] and resized to the input, `Y = softmax(f(x))_t` and `O = softmax(f(x ⊙ L(x)))_t` (the
//! explanation-masked image `x ⊙ L(x)` multiplies the *normalised* input, so masked-out pixels become
//! the dataset's mean colour):
//!
//! - **Average Drop** `= (1/N) Σ max(0, Y − O) / Y · 100` (lower is better);
//! - **Increase in Confidence** `= (1/N) Σ 1[Y < O] · 100` (higher is better);
//! - **Coherency** (Pearson form of ADCC) `= (1/N) Σ (ρ(L(x ⊙ L(x)), L(x)) + 1) / 2`, `ρ` the Pearson
//!   correlation over pixels (higher is better; 0.5 when a map is constant);
//! - **Coherency (SSIM)** `= (1/N) Σ SSIM(L(x ⊙ L(x)), L(x))` ([`ssim`]; the form the compression
//!   study used);
//! - **Complexity** `= (1/N) Σ ‖L(x)‖₁ / (H·W)` (lower is better);
//! - **ADCC** `= (1/N) Σ 3 / (1/Coherency(x) + 1/(1 − Complexity(x)) + 1/(1 − AD(x)))`, the harmonic
//!   mean per image with `AD(x) = max(0, Y − O)/Y` (0 when any term is 0).
use anyhow::ensure;
use polars::prelude::*;

use super::Saliency;
use crate::data::{make_batch, Dataset};
use crate::models::Model;
use crate::nn::Var;
use crate::predictions::log_softmax_rows;

/// Pearson correlation of two equally long samples (0 when either is constant).
pub fn pearson(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "pearson: lengths differ");
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().map(|&v| v as f64).sum::<f64>() / n, b.iter().map(|&v| v as f64).sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (dx, dy) = (x as f64 - ma, y as f64 - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    if saa > 0.0 && sbb > 0.0 {
        sab / (saa * sbb).sqrt()
    } else {
        0.0
    }
}

/// Structural similarity (Wang et al. 2004) of two `h × w` maps with values in [0, 1]: Gaussian window
/// of size 11 (or the largest odd size that fits) and σ = 1.5, `C1 = 0.01²`, `C2 = 0.03²`, mean over
/// the valid window positions (the reference implementation's settings, data range 1).
pub fn ssim(a: &[f32], b: &[f32], h: usize, w: usize) -> f64 {
    assert!(a.len() == h * w && b.len() == h * w, "ssim: maps are not {h}x{w}");
    let mut k = 11.min(h).min(w);
    if k.is_multiple_of(2) {
        k -= 1;
    }
    let sigma = 1.5f64;
    let r = (k / 2) as f64;
    let g1: Vec<f64> = (0..k).map(|i| (-((i as f64 - r).powi(2)) / (2.0 * sigma * sigma)).exp()).collect();
    let s: f64 = g1.iter().sum();
    let g1: Vec<f64> = g1.iter().map(|v| v / s).collect();
    let (c1, c2) = (0.01f64.powi(2), 0.03f64.powi(2));
    let (mut total, mut count) = (0.0, 0);
    for y0 in 0..=h - k {
        for x0 in 0..=w - k {
            let (mut ma, mut mb, mut saa, mut sbb, mut sab) = (0.0, 0.0, 0.0, 0.0, 0.0);
            for dy in 0..k {
                for dx in 0..k {
                    let wt = g1[dy] * g1[dx];
                    let (p, q) = (a[(y0 + dy) * w + x0 + dx] as f64, b[(y0 + dy) * w + x0 + dx] as f64);
                    ma += wt * p;
                    mb += wt * q;
                    saa += wt * p * p;
                    sbb += wt * q * q;
                    sab += wt * p * q;
                }
            }
            let (va, vb, cov) = (saa - ma * ma, sbb - mb * mb, sab - ma * mb);
            total += ((2.0 * ma * mb + c1) * (2.0 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2));
            count += 1;
        }
    }
    total / count as f64
}

/// ADCC of one image from its coherency, complexity and drop fraction (all in [0, 1]).
pub fn adcc(coherency: f64, complexity: f64, drop: f64) -> f64 {
    let terms = [coherency, 1.0 - complexity, 1.0 - drop];
    if terms.iter().any(|&t| t <= 0.0) {
        return 0.0;
    }
    3.0 / terms.iter().map(|t| 1.0 / t).sum::<f64>()
}

/// Softmax probability of each row's target class.
fn target_probability(logits: &[f32], k: usize, targets: &[usize]) -> Vec<f64> {
    log_softmax_rows(logits, k, 1.0).chunks(k).zip(targets).map(|(row, &t)| row[t].exp()).collect()
}

/// Per-image quality of `method`'s maps for `model` on images `indices` of `data` with `targets`
/// (batches of `batch`). Columns: `image`, `label`, `target`, `score`, `masked_score`, `drop`
/// (percent), `increase` (0 or 100), `coherency`, `coherency_ssim`, `complexity`, `adcc`.
pub fn quality_per_image(
    model: &Model,
    method: &dyn Saliency,
    data: &Dataset,
    indices: &[usize],
    targets: &[usize],
    batch: usize,
) -> anyhow::Result<DataFrame> {
    ensure!(indices.len() == targets.len(), "{} images but {} targets", indices.len(), targets.len());
    let k = model.spec.num_classes;
    let cols = 8;
    let mut vals: Vec<Vec<f64>> = (0..cols).map(|_| Vec::with_capacity(indices.len())).collect();
    for (idx, tg) in indices.chunks(batch.max(1)).zip(targets.chunks(batch.max(1))) {
        let b = make_batch(data, idx, None);
        let s = b.x.shape;
        let maps = method.maps(model, &b.x, tg)?.normalized();
        let mut masked = b.x.to_vec();
        for (i, img) in masked.chunks_mut(s.per_sample()).enumerate() {
            let m = maps.map(i);
            for plane in img.chunks_mut(s.plane()) {
                plane.iter_mut().zip(m).for_each(|(v, &w)| *v *= w);
            }
        }
        let masked = Var::from_vec(masked, s);
        let y = target_probability(model.logits(Var::from_vec(b.x.to_vec(), s)).data(), k, tg);
        let o = target_probability(model.logits(Var::from_vec(masked.to_vec(), s)).data(), k, tg);
        let maps2 = method.maps(model, &masked, tg)?.normalized();
        for i in 0..idx.len() {
            let (m, m2) = (maps.map(i), maps2.map(i));
            let drop = ((y[i] - o[i]).max(0.0) / y[i]).min(1.0);
            let coh = (pearson(m2, m) + 1.0) / 2.0;
            let comp = m.iter().map(|v| v.abs() as f64).sum::<f64>() / m.len() as f64;
            let row = [
                y[i],
                o[i],
                drop * 100.0,
                if y[i] < o[i] { 100.0 } else { 0.0 },
                coh,
                ssim(m2, m, s.h, s.w),
                comp,
                adcc(coh, comp, drop),
            ];
            for (c, v) in vals.iter_mut().zip(row) {
                c.push(v);
            }
        }
    }
    let names = ["score", "masked_score", "drop", "increase", "coherency", "coherency_ssim", "complexity", "adcc"];
    let mut columns: Vec<Column> = vec![
        Column::new("image".into(), indices.iter().map(|&i| i as u32).collect::<Vec<_>>()),
        Column::new("label".into(), indices.iter().map(|&i| data.labels[i] as u32).collect::<Vec<_>>()),
        Column::new("target".into(), targets.iter().map(|&t| t as u32).collect::<Vec<_>>()),
    ];
    columns.extend(names.iter().zip(vals).map(|(n, v)| Column::new((*n).into(), v)));
    Ok(DataFrame::new_infer_height(columns)?)
}

/// One summary row from a [`quality_per_image`] frame: `model`, `method`, `images`, `average_drop`,
/// `increase_in_confidence`, `coherency`, `coherency_ssim`, `complexity`, `adcc` (means of the
/// per-image columns).
pub fn quality_summary(model: &str, method: &str, per_image: &DataFrame) -> anyhow::Result<DataFrame> {
    let mean =
        |c: &str| -> anyhow::Result<f64> { Ok(crate::notebook::col(per_image, c)?.f64()?.mean().unwrap_or(f64::NAN)) };
    Ok(df!(
        "model" => [model],
        "method" => [method],
        "images" => [per_image.height() as u32],
        "average_drop" => [mean("drop")?],
        "increase_in_confidence" => [mean("increase")?],
        "coherency" => [mean("coherency")?],
        "coherency_ssim" => [mean("coherency_ssim")?],
        "complexity" => [mean("complexity")?],
        "adcc" => [mean("adcc")?],
    )?)
}
