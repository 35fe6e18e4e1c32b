//! Embeddings of what a model predicts: DarkSight (a 2-D picture of its dark knowledge, with a
//! Naive-Bayes student that reproduces its predictions), t-SNE baselines on probabilities, logits
//! and penultimate features, and their evaluation — KDE confidence, accuracy-vs-data-kept rejection
//! curves, local fidelity `M_k`.
//!
//! Every function here works on plain row-major matrices (`n × c` logits or probabilities, `n × d`
//! features), so predictions from anywhere can be embedded; [`section`] runs the lot for a teacher
//! and a student and returns the report's [`crate::report::EmbedSection`] (frames only).
//!
//! ```
//! use kdscope::embed::{darksight, local_fidelity, tsne, DarkSightConfig, TsneConfig};
//! // 60 points of 3 classes: confident logits with a little per-point variation.
//! let logits: Vec<f32> = (0..60).flat_map(|i| {
//!     let c = i % 3;
//!     (0..3).map(move |k| if k == c { 4.0 + (i % 7) as f32 * 0.2 } else { (i % 5) as f32 * 0.1 })
//! }).collect();
//! let ds = darksight(&logits, 3, &DarkSightConfig::quick(300)).unwrap();
//! let predicted: Vec<usize> = (0..60).map(|i| i % 3).collect();
//! assert!(ds.agreement(&predicted) > 0.95);
//! let ts = tsne(&logits, 3, &TsneConfig { perplexity: 10.0, iters: 300, ..Default::default() }).unwrap();
//! assert!(ts.kl.is_finite());
//! let probs = ds.probabilities();
//! let m = local_fidelity(&ds.flat(), &probs, 3, 5).unwrap();
//! assert_eq!(m.len(), 5);
//! ```
pub mod darksight;
pub mod divergence;
pub mod fidelity;
pub mod kde;
pub mod knn;
pub mod rejection;
pub mod section;
#[cfg(test)]
mod tests;
pub mod tsne;

pub use darksight::{darksight, Annealing, DarkSight, DarkSightConfig, DarkSightInit};
pub use divergence::{entropy, jsd, mean_symmetric_kl, student_t2_logpdf, symmetric_kl};
pub use fidelity::local_fidelity;
pub use kde::{kde_log_density, Bandwidth, Kde, KdeScope};
pub use knn::{knn, Knn};
pub use rejection::{max_probability, negative_entropy, rejection_curve};
pub use section::{
    embed_predictions, model_outputs, section, section_from_predictions, sections_from, EmbedConfig, ModelEmbeddings,
    TsneInput,
};
pub use tsne::{exact_kl, tsne, Tsne, TsneConfig, TsneInit, TsneMethod};

/// 2-D points as a flat `n × 2` f32 buffer (what [`knn`] and [`local_fidelity`] take).
pub fn flat_points(points: &[[f64; 2]]) -> Vec<f32> {
    points.iter().flat_map(|p| [p[0] as f32, p[1] as f32]).collect()
}

/// Seeded synthetic logits (`n × classes`) with the structure of a real classifier's: 80 % confident
/// predictions, 15 % confused between the true class and a sibling of its group of 4 classes, 5 % nearly
/// flat; point `i` has label `i % classes`. For benchmarks and examples.
pub fn synthetic_logits(n: usize, classes: usize, seed: u64) -> (Vec<f32>, Vec<usize>) {
    use rand::{Rng, SeedableRng};
    use rand_distr::{Distribution, StandardNormal};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut logits = Vec::with_capacity(n * classes);
    for i in 0..n {
        let c = i % classes;
        let mut row: Vec<f32> = (0..classes).map(|_| StandardNormal.sample(&mut rng)).collect();
        let u: f64 = rng.gen();
        if u < 0.80 {
            row[c] += 6.0;
        } else if u < 0.95 {
            let group = c / 4 * 4;
            let sib = (group + rng.gen_range(0..4)).min(classes - 1);
            row[c] += 4.0;
            row[sib] += 3.5;
        } else {
            row[c] += 1.5;
        }
        logits.extend(row);
    }
    (logits, (0..n).map(|i| i % classes).collect())
}
