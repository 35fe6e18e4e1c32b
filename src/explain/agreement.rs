//! Teacher-vs-student explanation agreement: per image, the Spearman rank correlation of the two maps
//! over pixels (average ranks for ties) and the IoU of their top-`k`% pixels; per class, the means.
use polars::prelude::*;

use super::quality::pearson;
use super::Maps;

/// Average ranks (1-based) of `v`, ties sharing the mean of their positions.
pub fn ranks(v: &[f32]) -> Vec<f32> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0f32; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f32 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            r[k] = avg;
        }
        i = j + 1;
    }
    r
}

/// Spearman rank correlation: Pearson correlation of the average ranks (0 when a map is constant).
pub fn spearman(a: &[f32], b: &[f32]) -> f64 {
    pearson(&ranks(a), &ranks(b))
}

/// Indices of the `ceil(frac · len)` largest values (at least one; ties broken by lower index).
pub fn top_fraction(v: &[f32], frac: f64) -> Vec<usize> {
    let k = ((frac * v.len() as f64).ceil() as usize).clamp(1, v.len());
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// Intersection over union of the top-`frac` pixels of two maps.
pub fn top_iou(a: &[f32], b: &[f32], frac: f64) -> f64 {
    let (ta, tb) = (top_fraction(a, frac), top_fraction(b, frac));
    let mut in_a = vec![false; a.len()];
    ta.iter().for_each(|&i| in_a[i] = true);
    let inter = tb.iter().filter(|&&i| in_a[i]).count();
    inter as f64 / (ta.len() + tb.len() - inter) as f64
}

/// Per image: `image`, `label`, `class`, `rank_corr`, `top_iou` (top `frac` of pixels) between
/// teacher and student maps of the same images (same size).
pub fn agreement_per_image(
    teacher: &Maps,
    student: &Maps,
    images: &[usize],
    labels: &[usize],
    class_names: &[String],
    frac: f64,
) -> anyhow::Result<DataFrame> {
    anyhow::ensure!(
        (teacher.n, teacher.h, teacher.w) == (student.n, student.h, student.w) && teacher.n == images.len(),
        "teacher maps {}x{}x{}, student maps {}x{}x{}, {} images",
        teacher.n,
        teacher.h,
        teacher.w,
        student.n,
        student.h,
        student.w,
        images.len()
    );
    let rc: Vec<f64> = (0..teacher.n).map(|i| spearman(teacher.map(i), student.map(i))).collect();
    let iou: Vec<f64> = (0..teacher.n).map(|i| top_iou(teacher.map(i), student.map(i), frac)).collect();
    Ok(df!(
        "image" => images.iter().map(|&i| i as u32).collect::<Vec<_>>(),
        "label" => labels.iter().map(|&l| l as u32).collect::<Vec<_>>(),
        "class" => labels.iter().map(|&l| class_names[l].clone()).collect::<Vec<_>>(),
        "rank_corr" => rc,
        "top_iou" => iou,
    )?)
}

/// Per class (classes present, in label order): `label`, `class`, `images`, mean `rank_corr`, mean
/// `top_iou`.
pub fn agreement_per_class(per_image: &DataFrame, class_names: &[String]) -> anyhow::Result<DataFrame> {
    let labels: Vec<u32> = crate::notebook::col(per_image, "label")?.u32()?.into_no_null_iter().collect();
    let rc: Vec<f64> = crate::notebook::col(per_image, "rank_corr")?.f64()?.into_no_null_iter().collect();
    let iou: Vec<f64> = crate::notebook::col(per_image, "top_iou")?.f64()?.into_no_null_iter().collect();
    let mut acc = vec![(0u32, 0.0f64, 0.0f64); class_names.len()];
    for ((&l, r), i) in labels.iter().zip(rc).zip(iou) {
        let a = &mut acc[l as usize];
        *a = (a.0 + 1, a.1 + r, a.2 + i);
    }
    let present: Vec<usize> = (0..class_names.len()).filter(|&c| acc[c].0 > 0).collect();
    Ok(df!(
        "label" => present.iter().map(|&c| c as u32).collect::<Vec<_>>(),
        "class" => present.iter().map(|&c| class_names[c].clone()).collect::<Vec<_>>(),
        "images" => present.iter().map(|&c| acc[c].0).collect::<Vec<_>>(),
        "rank_corr" => present.iter().map(|&c| acc[c].1 / acc[c].0 as f64).collect::<Vec<_>>(),
        "top_iou" => present.iter().map(|&c| acc[c].2 / acc[c].0 as f64).collect::<Vec<_>>(),
    )?)
}
