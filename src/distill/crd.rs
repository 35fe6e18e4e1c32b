//! "Contrastive Representation Distillation" (Tian, Krishnan & Isola, ICLR 2020), as RepDistiller's
//! `CRDLoss` (mdistiller's CIFAR settings): student and teacher pooled features are embedded by a
//! linear layer each into 128 dimensions and L2-normalised; two memory banks hold one embedding per
//! training image (student bank, teacher bank; momentum 0.5). For each image, its own entry and
//! `K = 16384` negatives (drawn with replacement from images of other classes, RepDistiller's
//! "exact" mode) of the *other* model's bank are scored `exp(⟨m, v⟩ / 0.07) / Z` (`Z` fixed on the
//! first batch as `mean · N`), and the NCE loss `−Σ ln(P₁/(P₁ + K/N)) − Σ ln((K/N)/(P₀ + K/N))` (per
//! image) is summed over both directions; weight 0.8, plus cross-entropy. `K` is capped by the
//! number of images of other classes on small datasets.
//!
//! The scores are computed without gathering the `n × (K+1) × 128` bank slices (a dedicated op reads
//! the bank rows in place), so the CIFAR-100 setting runs in CPU memory.
//!
//! The memory banks and `Z` are buffers of the method's store, so training checkpoints keep them, and
//! the negatives of a batch are drawn from a generator seeded by (seed, epoch, batch): a resumed run
//! continues exactly as the uninterrupted one.
use dfdx::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::losses::{constant, cross_entropy, feature_matrix, logits_of, Loss};
use super::{Distiller, LossParts, Setup, StepCtx};
use super::{Method, MethodInfo};
use crate::models::Outputs;
use crate::nn::var::finish;
use crate::nn::{Grads, Linear, Shape4, Store, Tracked, Var};

/// CRD's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CrdConfig {
    pub ce_weight: f32,
    pub weight: f32,
    pub feat_dim: usize,
    pub nce_k: usize,
    pub nce_t: f32,
    pub momentum: f32,
}

impl Default for CrdConfig {
    fn default() -> Self {
        Self { ce_weight: 1.0, weight: 0.8, feat_dim: 128, nce_k: 16384, nce_t: 0.07, momentum: 0.5 }
    }
}

/// Rows of `x` (`(n, d)`) divided by their L2 norms.
pub fn normalize_rows<T: Tape<f32, crate::nn::Dev>>(x: Var<T>) -> Var<T> {
    let (xs, tape, s, needs) = x.split();
    let d = s.per_sample();
    let norms: Vec<f32> =
        xs.data().chunks(d).map(|r| r.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt() as f32).collect();
    let out: Vec<f32> = xs.data().chunks(d).zip(&norms).flat_map(|(r, nrm)| r.iter().map(move |v| v / nrm)).collect();
    finish(out, s, tape, move |grads: &mut Grads, gout, y| {
        if needs {
            // dx = (g − y ⟨y, g⟩) / ‖x‖
            let mut dx = xs.grad_buf(grads)?;
            for ((dr, (gr, yr)), nrm) in dx.chunks_mut(d).zip(gout.chunks(d).zip(y.data().chunks(d))).zip(&norms) {
                let dot: f32 = gr.iter().zip(yr).map(|(a, b)| a * b).sum();
                for ((dv, g), yv) in dr.iter_mut().zip(gr).zip(yr) {
                    *dv += (g - yv * dot) / nrm;
                }
            }
        }
        Ok(())
    })
}

/// Scores `⟨bank[idx[i][j]], v_i⟩` of embeddings `v` (`(n, d)`) against bank rows (`idx`: `n × m`),
/// as an `(n, m)` value; the bank is a constant.
pub fn bank_scores<T: Tape<f32, crate::nn::Dev>>(v: Var<T>, bank: &[f32], idx: Vec<usize>, m: usize) -> Var<T> {
    let (vs, tape, s, needs) = v.split();
    let (n, d) = (s.n, s.per_sample());
    assert_eq!(idx.len(), n * m, "bank_scores: {} indices for {n} × {m}", idx.len());
    let bank = std::sync::Arc::new(bank.to_vec());
    let mut out = vec![0.0f32; n * m];
    out.par_chunks_mut(m).enumerate().for_each(|(i, o)| {
        let vi = &vs.data()[i * d..(i + 1) * d];
        for (o, &r) in o.iter_mut().zip(&idx[i * m..(i + 1) * m]) {
            *o = bank[r * d..(r + 1) * d].iter().zip(vi).map(|(a, b)| a * b).sum();
        }
    });
    finish(out, Shape4::mat(n, m), tape, move |grads: &mut Grads, gout, _| {
        if needs {
            let mut dv = vs.grad_buf(grads)?;
            dv.par_chunks_mut(d).enumerate().for_each(|(i, dvi)| {
                for (g, &r) in gout[i * m..(i + 1) * m].iter().zip(&idx[i * m..(i + 1) * m]) {
                    for (a, b) in dvi.iter_mut().zip(&bank[r * d..(r + 1) * d]) {
                        *a += g * b;
                    }
                }
            });
        }
        Ok(())
    })
}

/// The NCE loss of scores `s` (`(n, K+1)`, column 0 the positive) turned into `P = exp(s/T)/Z`, with
/// noise probability `1/N` (`N` bank entries): `−(1/n) Σ_i [ln(P_i0/(P_i0 + K/N + ε)) +
/// Σ_j≥1 ln((K/N)/(P_ij + K/N + ε))]`, ε = 1e-7.
pub fn nce_loss(scores: Var<Tracked>, t: f32, z: f32, n_data: usize) -> Loss {
    let (n, m) = (scores.shape.n, scores.shape.c);
    let k = (m - 1) as f32;
    let c = k / n_data as f32;
    let s = feature_matrix(scores);
    let mut pos = vec![0.0f32; n * m];
    for i in 0..n {
        pos[i * m] = 1.0;
    }
    // ln P_i0 = s_i0/T − ln Z.
    let log_pos = (s.with_empty_tape() * constant(pos, n, m)).sum::<(), _>() / t - n as f32 * z.ln();
    let denom = ((s / t).exp() / z + (c + 1e-7)).ln().sum::<(), _>();
    (log_pos - denom + n as f32 * k * c.ln()).negate() / n as f32
}

/// Indices of the buffers in CRD's store.
const BANK_S: usize = 0;
const BANK_T: usize = 1;
const Z: usize = 2;

/// CRD.
pub struct Crd {
    pub cfg: CrdConfig,
    embed_s: Option<Linear>,
    embed_t: Option<Linear>,
    /// The embeddings' parameters and, as buffers, the memory banks (`memory_s`, `memory_t`:
    /// `N × feat_dim`, student and teacher) and the normalisation constants `z` (fixed on the first
    /// batch; 0 until then).
    store: Store,
    k: usize,
    seed: u64,
    labels: Vec<usize>,
    /// Image indices of each class.
    by_class: Vec<Vec<usize>>,
    rng: ChaCha8Rng,
}

impl Crd {
    pub fn new(cfg: CrdConfig) -> Self {
        Self {
            cfg,
            embed_s: None,
            embed_t: None,
            store: Store::new(),
            k: 0,
            seed: 0,
            labels: Vec::new(),
            by_class: Vec::new(),
            rng: ChaCha8Rng::seed_from_u64(0),
        }
    }

    /// Builds the embeddings and banks for `s_dim`/`t_dim` pooled widths and the training labels.
    pub fn build(&mut self, s_dim: usize, t_dim: usize, labels: &[usize], seed: u64) -> anyhow::Result<()> {
        let n = labels.len();
        let classes = labels.iter().max().map_or(0, |m| m + 1);
        let mut by_class = vec![Vec::new(); classes];
        for (i, &l) in labels.iter().enumerate() {
            by_class[l].push(i);
        }
        let smallest_other = by_class.iter().map(|c| n - c.len()).min().unwrap_or(0);
        anyhow::ensure!(smallest_other > 0, "CRD needs images of at least two classes");
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xC4D);
        let mut store = Store::new();
        let d = self.cfg.feat_dim;
        self.embed_s = Some(Linear::new(&mut store, &mut rng, "embed_s.linear", s_dim, d, true));
        self.embed_t = Some(Linear::new(&mut store, &mut rng, "embed_t.linear", t_dim, d, true));
        // RepDistiller's bank init: U(−σ, σ), σ = 1/sqrt(d/3).
        let sd = 1.0 / (d as f32 / 3.0).sqrt();
        let bank_s: Vec<f32> = (0..n * d).map(|_| rng.gen_range(-sd..sd)).collect();
        let bank_t: Vec<f32> = (0..n * d).map(|_| rng.gen_range(-sd..sd)).collect();
        assert_eq!(store.add_buffer("memory_s", vec![n, d], bank_s), BANK_S);
        assert_eq!(store.add_buffer("memory_t", vec![n, d], bank_t), BANK_T);
        assert_eq!(store.add_buffer("z", vec![2], vec![0.0; 2]), Z);
        self.k = self.cfg.nce_k.min(smallest_other);
        self.labels = labels.to_vec();
        self.by_class = by_class;
        self.store = store;
        self.seed = seed;
        self.rng = rng;
        Ok(())
    }

    /// Bank rows per image: its own index, then `K` negatives of other classes (with replacement).
    fn contrast_indices(&mut self, indices: &[usize]) -> Vec<usize> {
        let n = self.labels.len();
        let mut out = Vec::with_capacity(indices.len() * (self.k + 1));
        for &i in indices {
            out.push(i);
            let own = &self.by_class[self.labels[i]];
            for _ in 0..self.k {
                // Uniform over the images of other classes: draw among N − |own| ranks, skip the own class.
                let mut r = self.rng.gen_range(0..n - own.len());
                for &o in own {
                    if o <= r {
                        r += 1;
                    }
                }
                out.push(r);
            }
        }
        out
    }

    /// The two-way CRD loss for pooled features and bank rows `idx` (`n × (K+1)`, row `i` starting with
    /// the image's own index); updates the banks afterwards.
    pub fn contrast_loss(&mut self, s: Var<Tracked>, t: &Var, indices: &[usize], idx: Vec<usize>) -> Loss {
        let (es, et) = (self.embed_s.as_ref().expect("CRD used before setup"), self.embed_t.as_ref().expect("setup"));
        let v1 = normalize_rows(es.forward(&self.store, s));
        let v2 = normalize_rows(et.forward(&self.store, t.detach().traced_input()));
        let (v1, v1d) = v1.fork();
        let (v2, v2d) = v2.fork();
        let m = self.k + 1;
        let d = self.cfg.feat_dim;
        let t_ = self.cfg.nce_t;
        let s1 = bank_scores(v1, &self.store.buffers[BANK_T].values, idx.clone(), m);
        let s2 = bank_scores(v2, &self.store.buffers[BANK_S].values, idx, m);
        let n_data = self.labels.len();
        if self.store.buffers[Z].values[0] == 0.0 {
            let z = |sc: &[f32]| {
                (sc.iter().map(|v| ((v / t_) as f64).exp()).sum::<f64>() / sc.len() as f64 * n_data as f64) as f32
            };
            self.store.buffers[Z].values = vec![z(s1.data()), z(s2.data())];
        }
        let (z1, z2) = (self.store.buffers[Z].values[0], self.store.buffers[Z].values[1]);
        let loss = nce_loss(s1, t_, z1, n_data) + nce_loss(s2, t_, z2, n_data);
        // Momentum update of both banks at the batch's own rows.
        let mom = self.cfg.momentum;
        let (bs, rest) = self.store.buffers.split_at_mut(BANK_T);
        for (bank, v) in [(&mut bs[BANK_S].values, v1d.data()), (&mut rest[0].values, v2d.data())] {
            for (row, &i) in v.chunks(d).zip(indices) {
                let b = &mut bank[i * d..(i + 1) * d];
                for (a, x) in b.iter_mut().zip(row) {
                    *a = *a * mom + x * (1.0 - mom);
                }
                let norm = b.iter().map(|v| v * v).sum::<f32>().sqrt();
                b.iter_mut().for_each(|v| *v /= norm);
            }
        }
        loss
    }

    pub fn store_mut(&mut self) -> &mut Store {
        &mut self.store
    }

    /// The memory banks (student, teacher) as flat `N × feat_dim` rows.
    pub fn banks_mut(&mut self) -> (&mut Vec<f32>, &mut Vec<f32>) {
        let (a, b) = self.store.buffers.split_at_mut(BANK_T);
        (&mut a[BANK_S].values, &mut b[0].values)
    }
}

impl Default for Crd {
    fn default() -> Self {
        Self::new(CrdConfig::default())
    }
}

impl Distiller for Crd {
    fn name(&self) -> String {
        "crd".into()
    }
    fn hyper(&self) -> serde_json::Value {
        json!({"config": self.cfg, "negatives": self.k})
    }
    fn needs_features(&self) -> bool {
        true
    }
    fn setup(&mut self, setup: &Setup) -> anyhow::Result<()> {
        let t = &setup.teacher_layout;
        self.build(setup.student_layout.pool_channels, t.pool_channels, setup.train_labels, setup.seed)
    }
    fn modules(&self) -> Option<&Store> {
        Some(&self.store)
    }
    fn modules_mut(&mut self) -> Option<&mut Store> {
        Some(&mut self.store)
    }
    fn loss(
        &mut self,
        mut student: Outputs<Tracked>,
        teacher: &Outputs<NoneTape>,
        labels: &[usize],
        ctx: StepCtx<'_>,
    ) -> LossParts {
        let t = teacher.features.get("pool").expect("teacher pooled feature");
        let s = student.features.take("pool").expect("student pooled feature");
        // Negatives from a generator seeded by (seed, epoch, first image of the batch): the same on resume.
        let first = ctx.indices.first().copied().unwrap_or(0) as u64;
        self.rng = ChaCha8Rng::seed_from_u64(
            self.seed
                ^ 0xC4D
                ^ (ctx.epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                ^ first.wrapping_mul(0xBF58_476D_1CE4_E5B9),
        );
        let idx = self.contrast_indices(ctx.indices);
        let feat = self.contrast_loss(s, t, ctx.indices, idx);
        let ce = cross_entropy(logits_of(student.logits), labels);
        super::combine(ce, self.cfg.ce_weight, "crd", feat, self.cfg.weight)
    }
}

/// `crd` in the registry.
pub const METHOD: MethodInfo = MethodInfo {
    name: "crd",
    aliases: &[],
    about: "contrastive representation distillation (128-d, 16384 negatives, T 0.07), ×0.8",
    build: |name, params| Ok(Method::distill(Crd::new(super::tuned(CrdConfig::default(), params, name)?))),
};

#[cfg(test)]
mod tests {
    use super::*;

    /// Each image's contrast row starts with itself and draws its negatives from every other class
    /// (and only from those); `K` is capped by the smallest number of other-class images.
    #[test]
    fn negatives_come_from_other_classes() {
        let labels = [0, 1, 2, 0, 1, 2, 0, 1, 2, 2];
        let mut crd = Crd::new(CrdConfig { nce_k: 500, feat_dim: 4, ..CrdConfig::default() });
        crd.build(8, 8, &labels, 3).unwrap();
        assert_eq!(crd.k, 6);
        let idx = crd.contrast_indices(&[0, 4, 9]);
        let mut seen = std::collections::BTreeSet::new();
        for (row, &own) in idx.chunks(7).zip(&[0usize, 4, 9]) {
            assert_eq!(row[0], own);
            for &j in &row[1..] {
                assert!(j < labels.len() && labels[j] != labels[own], "negative {j} of image {own}");
                seen.insert((own, j));
            }
        }
        // Over many draws every other-class image appears.
        let many = crd.contrast_indices(&[0; 40]);
        let drawn: std::collections::BTreeSet<usize> = many.chunks(7).flat_map(|r| r[1..].to_vec()).collect();
        assert_eq!(drawn.into_iter().collect::<Vec<_>>(), vec![1, 2, 4, 5, 7, 8, 9]);
        assert!(Crd::default().build(8, 8, &[1, 1, 1], 0).is_err());
    }
}
