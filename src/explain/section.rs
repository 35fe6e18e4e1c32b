//! Builds the report's explanations section ([`ExplainSection`]) from models: corpus maps for the
//! pop-up, quality metrics per model, teacher-student agreement per class, UniCAM scores and
//! captioned overlays. This is the explain layer's side of the one-way flow; the report only reads
//! the result.
use anyhow::Context;
use base64::Engine;
use image::imageops::FilterType;
use image::RgbImage;

use super::agreement::{agreement_per_class, agreement_per_image};
use super::overlay::overlay;
use super::quality::{quality_per_image, quality_summary};
use super::unicam::{unicam, LabelEmbedding};
use super::{explain_images, method, Maps};
use crate::data::{make_batch, sample_indices, Dataset};
use crate::models::Model;
use crate::report::{CorpusMaps, ExplainSection};

/// What the section computes.
#[derive(Clone, Debug)]
pub struct SectionConfig {
    /// Methods whose maps the corpus pop-up offers.
    pub methods: Vec<String>,
    /// The method scored by the quality metrics and the agreement table.
    pub metric_method: String,
    /// Random test images (seeded) for the quality metrics and UniCAM.
    pub samples: usize,
    pub seed: u64,
    pub batch: usize,
    /// Fraction of pixels in the top-k% IoU.
    pub top_fraction: f64,
    /// Classes shown in the example overlays (the first corpus image of each).
    pub examples: usize,
    pub unicam: bool,
}

impl Default for SectionConfig {
    fn default() -> Self {
        Self {
            methods: vec!["grad-cam".into(), "grad-cam++".into(), "guided-backprop".into()],
            metric_method: "grad-cam".into(),
            samples: 200,
            seed: 0,
            batch: 64,
            top_fraction: 0.2,
            examples: 10,
            unicam: true,
        }
    }
}

/// Map levels kept in the page: 32 (5 bits) are more than a colour map shows, and compress 2-3x.
pub const MAP_LEVELS: u32 = 32;

/// A map (values in [0, 1], `h` × `w`) as the base64 of a grayscale PNG at [`MAP_LEVELS`] levels.
pub fn map_png_base64(m: &[f32], h: usize, w: usize) -> anyhow::Result<String> {
    use image::codecs::png::{CompressionType, FilterType as PngFilter, PngEncoder};
    let top = (MAP_LEVELS - 1) as f32;
    let b: Vec<u8> = m.iter().map(|v| ((v.clamp(0.0, 1.0) * top).round() * 255.0 / top).round() as u8).collect();
    let mut bytes = Vec::new();
    let enc = PngEncoder::new_with_quality(&mut bytes, CompressionType::Best, PngFilter::Adaptive);
    image::ImageEncoder::write_image(enc, &b, w as u32, h as u32, image::ExtendedColorType::L8)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn tile(img: &RgbImage, scale: u32) -> RgbImage {
    image::imageops::resize(img, img.width() * scale, img.height() * scale, FilterType::Nearest)
}

/// Images side by side with a 4-pixel white gap.
fn strip(tiles: &[RgbImage]) -> RgbImage {
    let h = tiles.iter().map(|t| t.height()).max().unwrap_or(0);
    let w: u32 = tiles.iter().map(|t| t.width() + 4).sum::<u32>().saturating_sub(4);
    let mut out = RgbImage::from_pixel(w.max(1), h.max(1), image::Rgb([255, 255, 255]));
    let mut x = 0;
    for t in tiles {
        image::imageops::replace(&mut out, t, x as i64, 0);
        x += t.width() + 4;
    }
    out
}

/// The explanations section for `teacher` and `student` (and a `base` student trained without KD,
/// which also becomes UniCAM's reference), on `test`, with maps for the corpus images `corpus`
/// (see [`crate::report::KdViews::corpus_indices`]). Models are named by the first tuple element.
pub fn section(
    teacher: (&str, &Model),
    student: (&str, &Model),
    base: Option<(&str, &Model)>,
    test: &Dataset,
    corpus: &[usize],
    cfg: &SectionConfig,
) -> anyhow::Result<ExplainSection> {
    let labels: Vec<usize> = corpus.iter().map(|&i| test.labels[i]).collect();
    let mut out = ExplainSection::default();
    let metric = method(&cfg.metric_method)?;
    let mut metric_maps: Option<(Maps, Maps)> = None;
    for name in &cfg.methods {
        let m = method(name)?;
        let mt = explain_images(m.as_ref(), teacher.1, test, corpus, &labels, cfg.batch)?.normalized();
        let ms = explain_images(m.as_ref(), student.1, test, corpus, &labels, cfg.batch)?.normalized();
        let mut cm = CorpusMaps { method: m.name(), h: mt.h, w: mt.w, ..Default::default() };
        for (k, &i) in corpus.iter().enumerate() {
            cm.teacher.insert(i, map_png_base64(mt.map(k), mt.h, mt.w)?);
            cm.student.insert(i, map_png_base64(ms.map(k), ms.h, ms.w)?);
        }
        out.corpus_maps.push(cm);
        if m.name() == metric.name() {
            metric_maps = Some((mt, ms));
        }
    }
    let (mt, ms) = match metric_maps {
        Some(p) => p,
        None => (
            explain_images(metric.as_ref(), teacher.1, test, corpus, &labels, cfg.batch)?.normalized(),
            explain_images(metric.as_ref(), student.1, test, corpus, &labels, cfg.batch)?.normalized(),
        ),
    };
    if !corpus.is_empty() {
        let per_image = agreement_per_image(&mt, &ms, corpus, &labels, &test.class_names, cfg.top_fraction)?;
        out.agreement = Some(agreement_per_class(&per_image, &test.class_names)?);
    }

    let sample = sample_indices(test.len(), cfg.samples, cfg.seed);
    let targets: Vec<usize> = sample.iter().map(|&i| test.labels[i]).collect();
    let mut quality = None;
    for (name, model) in [Some(teacher), Some(student), base].into_iter().flatten() {
        let per_image = quality_per_image(model, metric.as_ref(), test, &sample, &targets, cfg.batch)?;
        let row = quality_summary(name, &metric.name(), &per_image)?;
        match &mut quality {
            None => quality = Some(row),
            Some(q) => {
                q.vstack_mut(&row)?;
            }
        }
    }
    out.quality = quality;

    // Examples: the first corpus image of the first `examples` classes.
    let mut ex: Vec<usize> = vec![];
    let mut seen = std::collections::BTreeSet::new();
    for (k, &l) in labels.iter().enumerate() {
        if ex.len() < cfg.examples && seen.insert(l) {
            ex.push(k);
        }
    }
    let reference = base.unwrap_or(teacher);
    let uni = if cfg.unicam && ex.len() > 3 {
        let idx: Vec<usize> = ex.iter().map(|&k| corpus[k]).collect();
        let b = make_batch(test, &idx, None);
        Some(unicam(student.1, reference.1, &b.x, &b.labels, &LabelEmbedding::OneHot)?)
    } else {
        None
    };
    for (j, &k) in ex.iter().enumerate() {
        let img = test.rgb_image(corpus[k]);
        let mut tiles = vec![tile(&img, 3), tile(&overlay(&img, &mt, k, 0.5), 3), tile(&overlay(&img, &ms, k, 0.5), 3)];
        if let Some(u) = &uni {
            tiles.push(tile(&overlay(&img, &u.distilled.normalized(), j, 0.5), 3));
            tiles.push(tile(&overlay(&img, &u.residual.normalized(), j, 0.5), 3));
        }
        out.examples.push((test.class_names[labels[k]].clone(), strip(&tiles)));
    }
    let mut notes = vec![
        ("metric method".to_string(), metric.name()),
        (
            "quality images".to_string(),
            format!("{} random test images (seed {}), target = true class", sample.len(), cfg.seed),
        ),
        ("agreement".to_string(), format!("{} corpus images, top {:.0} % IoU", corpus.len(), cfg.top_fraction * 100.0)),
        (
            "examples".to_string(),
            format!(
                "image | teacher {0} | student {0}{1}",
                metric.name(),
                if uni.is_some() {
                    format!(" | UniCAM distilled (student) | UniCAM residual ({})", reference.0)
                } else {
                    String::new()
                }
            ),
        ),
    ];

    if cfg.unicam {
        let mut acc = (0usize, 0.0, 0.0, 0.0);
        for chunk in sample.chunks(cfg.batch.max(8)) {
            if chunk.len() < 8 {
                continue;
            }
            let b = make_batch(test, chunk, None);
            let u = unicam(student.1, reference.1, &b.x, &b.labels, &LabelEmbedding::OneHot)?;
            let n = chunk.len() as f64;
            acc = (acc.0 + chunk.len(), acc.1 + n * u.fss, acc.2 + n * u.rs_distilled, acc.3 + n * u.rs_residual);
        }
        if acc.0 > 0 {
            let n = acc.0 as f64;
            out.unicam = Some(
                polars::df!(
                    "student" => [student.0], "reference" => [reference.0], "images" => [acc.0 as u32],
                    "fss" => [acc.1 / n], "rs_distilled" => [acc.2 / n], "rs_residual" => [acc.3 / n],
                )
                .context("UniCAM frame")?,
            );
            notes.push((
                "UniCAM".into(),
                format!(
                    "batches of {} images, one-hot label embedding; scores are batch-size-weighted means",
                    cfg.batch.max(8)
                ),
            ));
        }
    }
    out.notes = notes;
    Ok(out)
}
