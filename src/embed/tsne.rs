//! t-SNE (van der Maaten & Hinton 2008) as scikit-learn and openTSNE run it: affinities calibrated to
//! a perplexity by binary search on squared Euclidean distances, symmetrised `P = (P + Pᵀ)/Σ`;
//! Student-t (1 degree of freedom) similarities in 2-D; gradient descent with momentum (0.5 during
//! early exaggeration, 0.8 after), per-coordinate gains (+0.2 / ×0.8, at least 0.01), learning rate
//! `max(n / exaggeration / 4, 50)` ("auto"), PCA initialisation scaled to standard deviation 1e-4.
//!
//! Two gradient methods: **exact** (all pairs, `O(n²)` per iteration) and **Barnes-Hut** (affinities
//! on the `⌊3·perplexity⌋ + 1` exact nearest neighbours, repulsion summarised by a quadtree with
//! opening angle θ, `O(n log n)`). The reported KL divergence is the objective at the final points:
//! exact for the exact method, with the quadtree's normalisation for Barnes-Hut (as scikit-learn).
use anyhow::ensure;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::knn::{knn, sqdist};

/// How the gradient is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TsneMethod {
    /// Exact up to [`EXACT_MAX_POINTS`] points, Barnes-Hut above.
    Auto,
    Exact,
    BarnesHut,
}

/// `TsneMethod::Auto` uses the exact gradient up to this many points.
pub const EXACT_MAX_POINTS: usize = 1000;

/// The exact gradient refuses more points than this (its dense affinities would need `8·n²` bytes).
pub const EXACT_LIMIT: usize = 10_000;

/// How the points start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TsneInit {
    /// The first two principal components, scaled to standard deviation 1e-4 (scikit-learn's and
    /// openTSNE's default).
    Pca,
    /// Gaussian with standard deviation 1e-4 (seeded).
    Random,
}

/// t-SNE settings; the defaults are scikit-learn's (1.2+).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TsneConfig {
    pub perplexity: f64,
    pub early_exaggeration: f64,
    /// Iterations with early exaggeration (momentum 0.5).
    pub exaggeration_iters: usize,
    /// Total iterations, exaggeration included.
    pub iters: usize,
    /// `None`: `max(n / early_exaggeration / 4, 50)`.
    pub learning_rate: Option<f64>,
    pub method: TsneMethod,
    /// Barnes-Hut opening angle.
    pub theta: f64,
    pub init: TsneInit,
    pub seed: u64,
    /// Stop when the KL (checked every 50 iterations) has not improved for this many iterations.
    pub iters_without_progress: usize,
    /// Stop when the gradient norm falls below this.
    pub min_grad_norm: f64,
    pub progress: bool,
}

impl Default for TsneConfig {
    fn default() -> Self {
        Self {
            perplexity: 30.0,
            early_exaggeration: 12.0,
            exaggeration_iters: 250,
            iters: 1000,
            learning_rate: None,
            method: TsneMethod::Auto,
            theta: 0.5,
            init: TsneInit::Pca,
            seed: 0,
            iters_without_progress: 300,
            min_grad_norm: 1e-7,
            progress: false,
        }
    }
}

/// A t-SNE embedding.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Tsne {
    pub points: Vec<[f64; 2]>,
    /// KL(P‖Q) at the final points.
    pub kl: f64,
    pub iterations: usize,
    /// The gradient method used (`Exact` or `BarnesHut`).
    pub method: TsneMethod,
    pub learning_rate: f64,
    pub seconds: f64,
    pub config: TsneConfig,
}

impl Tsne {
    /// The points as a flat `n × 2` f32 buffer.
    pub fn flat(&self) -> Vec<f32> {
        super::flat_points(&self.points)
    }
}

const MACHINE_EPSILON: f64 = f64::EPSILON;

/// Conditional probabilities `p_{j|i}` of one row of squared distances, calibrated by binary search
/// on the precision β so that the entropy equals `ln(perplexity)` (scikit-learn's
/// `_binary_search_perplexity`: 100 steps, tolerance 1e-5).
pub fn conditional_row(dist2: &[f32], perplexity: f64, out: &mut [f64]) {
    let desired = perplexity.ln();
    let (mut beta, mut lo, mut hi) = (1.0f64, f64::NEG_INFINITY, f64::INFINITY);
    for _ in 0..100 {
        let mut sum = 0.0;
        for (o, &d) in out.iter_mut().zip(dist2) {
            *o = (-(d as f64) * beta).exp();
            sum += *o;
        }
        if sum == 0.0 {
            sum = 1e-8;
        }
        let mut sum_dp = 0.0;
        for (o, &d) in out.iter_mut().zip(dist2) {
            *o /= sum;
            sum_dp += d as f64 * *o;
        }
        let diff = sum.ln() + beta * sum_dp - desired;
        if diff.abs() <= 1e-5 {
            break;
        }
        if diff > 0.0 {
            lo = beta;
            beta = if hi == f64::INFINITY { beta * 2.0 } else { (beta + hi) / 2.0 };
        } else {
            hi = beta;
            beta = if lo == f64::NEG_INFINITY { beta / 2.0 } else { (beta + lo) / 2.0 };
        }
    }
}

/// Dense joint probabilities (`n × n`, zero diagonal, clamped at machine epsilon off it) from all
/// pairwise squared distances.
pub fn joint_probabilities_exact(x: &[f32], d: usize, perplexity: f64) -> Vec<f64> {
    let n = x.len() / d;
    let mut p = vec![0.0; n * n];
    p.par_chunks_mut(n).enumerate().for_each_init(
        || (vec![0f32; n.saturating_sub(1)], vec![0f64; n.saturating_sub(1)]),
        |(dist, cond), (i, row)| {
            let xi = &x[i * d..(i + 1) * d];
            for (slot, j) in (0..n).filter(|&j| j != i).enumerate() {
                dist[slot] = sqdist(xi, &x[j * d..(j + 1) * d]);
            }
            conditional_row(dist, perplexity, cond);
            for (slot, j) in (0..n).filter(|&j| j != i).enumerate() {
                row[j] = cond[slot];
            }
        },
    );
    let mut sym = vec![0.0; n * n];
    let mut total = 0.0;
    for i in 0..n {
        for j in 0..n {
            sym[i * n + j] = p[i * n + j] + p[j * n + i];
            total += sym[i * n + j];
        }
    }
    let total = total.max(MACHINE_EPSILON);
    for i in 0..n {
        for j in 0..n {
            sym[i * n + j] = if i == j { 0.0 } else { (sym[i * n + j] / total).max(MACHINE_EPSILON) };
        }
    }
    sym
}

/// Sparse symmetric joint probabilities in CSR form.
#[derive(Clone, Debug)]
pub struct SparseP {
    pub indptr: Vec<usize>,
    pub indices: Vec<u32>,
    pub values: Vec<f64>,
}

/// Joint probabilities on the `k = min(n − 1, ⌊3·perplexity + 1⌋)` exact nearest neighbours
/// (scikit-learn's Barnes-Hut affinities): `P = (P_cond + P_condᵀ) / Σ`.
pub fn joint_probabilities_knn(x: &[f32], d: usize, perplexity: f64) -> SparseP {
    let n = x.len() / d;
    let k = ((3.0 * perplexity + 1.0) as usize).min(n.saturating_sub(1));
    let nn = knn(x, d, k);
    let mut cond = vec![0.0; n * k];
    cond.par_chunks_mut(k.max(1)).enumerate().for_each(|(i, row)| conditional_row(nn.distances2(i), perplexity, row));
    let mut rows: Vec<Vec<(u32, f64)>> = vec![Vec::with_capacity(2 * k); n];
    for i in 0..n {
        for (slot, &j) in nn.neighbours(i).iter().enumerate() {
            let v = cond[i * k + slot];
            rows[i].push((j, v));
            rows[j as usize].push((i as u32, v));
        }
    }
    let mut out = SparseP { indptr: vec![0], indices: vec![], values: vec![] };
    for r in rows.iter_mut() {
        r.sort_unstable_by_key(|e| e.0);
        let mut last: Option<u32> = None;
        for &(j, v) in r.iter() {
            if last == Some(j) {
                *out.values.last_mut().unwrap() += v;
            } else {
                out.indices.push(j);
                out.values.push(v);
                last = Some(j);
            }
        }
        out.indptr.push(out.indices.len());
    }
    let total: f64 = out.values.iter().sum::<f64>().max(MACHINE_EPSILON);
    out.values.iter_mut().for_each(|v| *v /= total);
    out
}

/// The first two principal components of `x` (`n × d`), via power iteration with deflation on the
/// covariance; each component's largest-magnitude loading is made positive (scikit-learn's sign rule).
pub fn pca2(x: &[f32], d: usize) -> Vec<[f64; 2]> {
    let n = x.len() / d;
    let mut mean = vec![0.0f64; d];
    for r in x.chunks(d) {
        mean.iter_mut().zip(r).for_each(|(m, &v)| *m += v as f64);
    }
    mean.iter_mut().for_each(|m| *m /= n.max(1) as f64);
    let mut cov = vec![0.0f64; d * d];
    for r in x.chunks(d) {
        for a in 0..d {
            let va = r[a] as f64 - mean[a];
            for b in a..d {
                cov[a * d + b] += va * (r[b] as f64 - mean[b]);
            }
        }
    }
    for a in 0..d {
        for b in 0..a {
            cov[a * d + b] = cov[b * d + a];
        }
    }
    let mut comps: Vec<Vec<f64>> = vec![];
    for c in 0..2.min(d) {
        // Deterministic start, away from any axis.
        let mut v: Vec<f64> = (0..d).map(|i| 1.0 + 0.1 * ((i * 7 + c * 3) % 11) as f64).collect();
        for _ in 0..1000 {
            let mut w: Vec<f64> = (0..d).map(|a| (0..d).map(|b| cov[a * d + b] * v[b]).sum()).collect();
            for u in &comps {
                let dot: f64 = w.iter().zip(u).map(|(a, b)| a * b).sum();
                w.iter_mut().zip(u).for_each(|(a, b)| *a -= dot * b);
            }
            let norm = w.iter().map(|a| a * a).sum::<f64>().sqrt();
            if norm == 0.0 {
                break;
            }
            w.iter_mut().for_each(|a| *a /= norm);
            let change: f64 = w.iter().zip(&v).map(|(a, b)| (a - b).abs()).sum();
            v = w;
            if change < 1e-12 {
                break;
            }
        }
        let big = v.iter().cloned().fold(0.0f64, |m, a| if a.abs() > m.abs() { a } else { m });
        if big < 0.0 {
            v.iter_mut().for_each(|a| *a = -*a);
        }
        comps.push(v);
    }
    x.chunks(d)
        .map(|r| {
            let mut p = [0.0; 2];
            for (c, u) in comps.iter().enumerate() {
                p[c] = r.iter().zip(&mean).zip(u).map(|((&v, m), w)| (v as f64 - m) * w).sum();
            }
            p
        })
        .collect()
}

/// The gradient `4 (e·attraction − repulsion / Z)` from per-point sums `[attraction x, y, repulsion
/// x, y, Σ_j q_ij (unnormalised), Σ_j p_ij (log p_ij − log q_ij)]`, with `Z = Σ_i Σ_j q_ij`; returns
/// KL(P‖Q) `= Σ p (log p − log q_unnorm) + log Z` (as `Σ p = 1`) when asked, else 0.
fn finish_gradient(rows: &[[f64; 6]], exaggeration: f64, grad: &mut [f64], with_kl: bool) -> f64 {
    let z: f64 = rows.iter().map(|r| r[4]).sum();
    for (i, r) in rows.iter().enumerate() {
        grad[2 * i] = 4.0 * (exaggeration * r[0] - r[2] / z);
        grad[2 * i + 1] = 4.0 * (exaggeration * r[1] - r[3] / z);
    }
    if with_kl {
        rows.iter().map(|r| r[5]).sum::<f64>() + z.ln()
    } else {
        0.0
    }
}

/// Exact gradient (`4 Σ_j (e·p_ij − q_ij) (1 + ‖y_i − y_j‖²)⁻¹ (y_i − y_j)`) and, optionally, KL(P‖Q).
fn exact_gradient(p: &[f64], y: &[f64], exaggeration: f64, grad: &mut [f64], with_kl: bool) -> f64 {
    let n = y.len() / 2;
    // Per row: attraction, repulsion (Σ q² Δ), Σ q, Σ p log q.
    let rows: Vec<[f64; 6]> = (0..n)
        .into_par_iter()
        .map(|i| {
            let (xi, yi) = (y[2 * i], y[2 * i + 1]);
            let prow = &p[i * n..(i + 1) * n];
            let mut r = [0.0; 6];
            for j in 0..n {
                if j == i {
                    continue;
                }
                let (dx, dy) = (xi - y[2 * j], yi - y[2 * j + 1]);
                let q = 1.0 / (1.0 + dx * dx + dy * dy);
                let pq = prow[j] * q;
                r[0] += pq * dx;
                r[1] += pq * dy;
                let qq = q * q;
                r[2] += qq * dx;
                r[3] += qq * dy;
                r[4] += q;
                if with_kl {
                    r[5] += prow[j] * (prow[j].max(MACHINE_EPSILON).ln() - q.ln());
                }
            }
            r
        })
        .collect();
    finish_gradient(&rows, exaggeration, grad, with_kl)
}

/// A 2-D quadtree over the points, storing counts and coordinate sums per cell.
struct QuadTree {
    nodes: Vec<Node>,
}

#[derive(Clone, Copy)]
struct Node {
    cx: f64,
    cy: f64,
    /// Half the cell's side.
    hw: f64,
    sx: f64,
    sy: f64,
    count: u32,
    /// Index of the first of four children; 0 for a leaf.
    children: u32,
    /// The point stored in a leaf (`u32::MAX`: none).
    point: u32,
}

impl Node {
    fn new(cx: f64, cy: f64, hw: f64) -> Self {
        Node { cx, cy, hw, sx: 0.0, sy: 0.0, count: 0, children: 0, point: u32::MAX }
    }
    fn child(&self, x: f64, y: f64) -> u32 {
        self.children + (x >= self.cx) as u32 + 2 * (y >= self.cy) as u32
    }
}

impl QuadTree {
    fn build(y: &[f64]) -> Self {
        let n = y.len() / 2;
        let (mut lo, mut hi) = ([f64::INFINITY; 2], [f64::NEG_INFINITY; 2]);
        for p in y.chunks(2) {
            for a in 0..2 {
                lo[a] = lo[a].min(p[a]);
                hi[a] = hi[a].max(p[a]);
            }
        }
        let hw = ((hi[0] - lo[0]).max(hi[1] - lo[1]) / 2.0) * (1.0 + 1e-5) + 1e-10;
        let mut t = QuadTree { nodes: Vec::with_capacity(2 * n + 1) };
        t.nodes.push(Node::new((lo[0] + hi[0]) / 2.0, (lo[1] + hi[1]) / 2.0, hw));
        for i in 0..n {
            t.insert(i as u32, y[2 * i], y[2 * i + 1], y);
        }
        t
    }

    fn insert(&mut self, i: u32, x: f64, yv: f64, y: &[f64]) {
        let mut ni = 0usize;
        let mut depth = 0;
        loop {
            let node = &mut self.nodes[ni];
            node.count += 1;
            node.sx += x;
            node.sy += yv;
            if node.children != 0 {
                ni = node.child(x, yv) as usize;
                depth += 1;
                continue;
            }
            if node.point == u32::MAX {
                node.point = i;
                return;
            }
            let q = node.point as usize;
            let (qx, qy) = (y[2 * q], y[2 * q + 1]);
            if (qx == x && qy == yv) || depth > 60 {
                return; // a duplicate: counted in this leaf
            }
            // Split: the leaf's earlier points (all at q's position) move to one child.
            let (cx, cy, h) = (node.cx, node.cy, node.hw / 2.0);
            let prev = node.count - 1;
            let first = self.nodes.len() as u32;
            self.nodes[ni].children = first;
            self.nodes[ni].point = u32::MAX;
            for c in 0..4 {
                let ox = if c & 1 == 1 { h } else { -h };
                let oy = if c & 2 == 2 { h } else { -h };
                self.nodes.push(Node::new(cx + ox, cy + oy, h));
            }
            let qc = self.nodes[ni].child(qx, qy) as usize;
            let child = &mut self.nodes[qc];
            child.count = prev;
            child.sx = qx * prev as f64;
            child.sy = qy * prev as f64;
            child.point = q as u32;
            ni = self.nodes[ni].child(x, yv) as usize;
            depth += 1;
        }
    }

    /// Repulsive force `Σ_j q_ij² (y_i − y_j)` and `Σ_j q_ij` (unnormalised), summarising a cell
    /// when its side is below `theta` times the distance to its centre of mass.
    /// `pos` holds all points (a leaf's points sit at its stored point's position).
    fn repulsion(&self, x: f64, y: f64, pos: &[f64], theta2: f64, stack: &mut Vec<u32>) -> (f64, f64, f64) {
        let (mut fx, mut fy, mut sq) = (0.0, 0.0, 0.0);
        stack.clear();
        stack.push(0);
        while let Some(ni) = stack.pop() {
            let node = &self.nodes[ni as usize];
            if node.count == 0 {
                continue;
            }
            let c = node.count as f64;
            let (dx, dy) = if node.children == 0 {
                let p = node.point as usize;
                (x - pos[2 * p], y - pos[2 * p + 1])
            } else {
                (x - node.sx / c, y - node.sy / c)
            };
            let d2 = dx * dx + dy * dy;
            let side = 2.0 * node.hw;
            if node.children == 0 || side * side < theta2 * d2 {
                if node.children == 0 && d2 == 0.0 {
                    sq += c - 1.0; // the point itself and its exact duplicates
                    continue;
                }
                let q = 1.0 / (1.0 + d2);
                sq += c * q;
                fx += c * q * q * dx;
                fy += c * q * q * dy;
            } else {
                stack.extend(node.children..node.children + 4);
            }
        }
        (fx, fy, sq)
    }
}

/// Barnes-Hut gradient; returns KL(P‖Q) (with the tree's normalisation) when asked.
fn bh_gradient(p: &SparseP, y: &[f64], exaggeration: f64, theta: f64, grad: &mut [f64], with_kl: bool) -> f64 {
    let n = y.len() / 2;
    let tree = QuadTree::build(y);
    let theta2 = theta * theta;
    let rows: Vec<[f64; 6]> = (0..n)
        .into_par_iter()
        .map_init(Vec::new, |stack, i| {
            let (xi, yi) = (y[2 * i], y[2 * i + 1]);
            let (rx, ry, sq) = tree.repulsion(xi, yi, y, theta2, stack);
            let mut r = [0.0, 0.0, rx, ry, sq, 0.0];
            for e in p.indptr[i]..p.indptr[i + 1] {
                let j = p.indices[e] as usize;
                let (dx, dy) = (xi - y[2 * j], yi - y[2 * j + 1]);
                let q = 1.0 / (1.0 + dx * dx + dy * dy);
                let pq = p.values[e] * q;
                r[0] += pq * dx;
                r[1] += pq * dy;
                if with_kl {
                    r[5] += p.values[e] * (p.values[e].max(MACHINE_EPSILON).ln() - q.ln());
                }
            }
            r
        })
        .collect();
    finish_gradient(&rows, exaggeration, grad, with_kl)
}

enum Affinities {
    Dense(Vec<f64>),
    Sparse(SparseP, f64),
}

impl Affinities {
    fn gradient(&self, y: &[f64], ex: f64, grad: &mut [f64], with_kl: bool) -> f64 {
        match self {
            Affinities::Dense(p) => exact_gradient(p, y, ex, grad, with_kl),
            Affinities::Sparse(p, theta) => bh_gradient(p, y, ex, *theta, grad, with_kl),
        }
    }
}

/// KL(P‖Q) of given 2-D points under the exact affinities of `x` (to compare embeddings made by
/// other tools on the same input).
pub fn exact_kl(x: &[f32], d: usize, perplexity: f64, points: &[[f64; 2]]) -> f64 {
    let p = joint_probabilities_exact(x, d, perplexity);
    let y: Vec<f64> = points.iter().flat_map(|p| [p[0], p[1]]).collect();
    let mut g = vec![0.0; y.len()];
    exact_gradient(&p, &y, 1.0, &mut g, true)
}

/// Embeds the rows of `x` (`n × d`, row-major) in 2-D.
pub fn tsne(x: &[f32], d: usize, cfg: &TsneConfig) -> anyhow::Result<Tsne> {
    ensure!(d > 0 && !x.is_empty() && x.len().is_multiple_of(d), "t-SNE: {} values are not rows of {d}", x.len());
    ensure!(x.iter().all(|v| v.is_finite()), "t-SNE: the input contains NaN or infinite values");
    let n = x.len() / d;
    ensure!(n >= 3, "t-SNE needs at least 3 points, got {n}");
    ensure!(
        cfg.perplexity > 0.0 && cfg.perplexity < n as f64,
        "t-SNE: perplexity {} must be positive and below the number of points ({n})",
        cfg.perplexity
    );
    ensure!(cfg.exaggeration_iters <= cfg.iters, "t-SNE: exaggeration_iters exceeds iters");
    let started = std::time::Instant::now();
    let method = match cfg.method {
        TsneMethod::Auto if n <= EXACT_MAX_POINTS => TsneMethod::Exact,
        TsneMethod::Auto => TsneMethod::BarnesHut,
        m => m,
    };
    ensure!(
        method != TsneMethod::Exact || n <= EXACT_LIMIT,
        "exact t-SNE keeps all {n}² affinities; use Barnes-Hut above {EXACT_LIMIT} points"
    );
    let aff = match method {
        TsneMethod::Exact => Affinities::Dense(joint_probabilities_exact(x, d, cfg.perplexity)),
        _ => Affinities::Sparse(joint_probabilities_knn(x, d, cfg.perplexity), cfg.theta),
    };
    let mut y: Vec<f64> = match cfg.init {
        TsneInit::Pca => {
            let pc = pca2(x, d);
            let m = pc.iter().map(|p| p[0]).sum::<f64>() / n as f64;
            let sd = (pc.iter().map(|p| (p[0] - m).powi(2)).sum::<f64>() / n as f64).sqrt();
            let s = if sd > 0.0 { 1e-4 / sd } else { 1.0 };
            pc.iter().flat_map(|p| [p[0] * s, p[1] * s]).collect()
        }
        TsneInit::Random => {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed);
            (0..2 * n)
                .map(|_| {
                    let z: f64 = StandardNormal.sample(&mut rng);
                    1e-4 * z
                })
                .collect::<Vec<f64>>()
        }
    };
    let lr = cfg.learning_rate.unwrap_or((n as f64 / cfg.early_exaggeration / 4.0).max(50.0));
    let pb = crate::io::progress_bar(cfg.iters as u64, "t-SNE", "iterations", cfg.progress);
    let mut grad = vec![0.0; 2 * n];
    let mut it = 0;
    for (stage, (end, momentum, ex)) in
        [(cfg.exaggeration_iters, 0.5, cfg.early_exaggeration), (cfg.iters, 0.8, 1.0)].into_iter().enumerate()
    {
        let mut update = vec![0.0; 2 * n];
        let mut gains = vec![1.0f64; 2 * n];
        let (mut best, mut best_it) = (f64::INFINITY, it);
        while it < end {
            let check = (it + 1) % 50 == 0;
            let kl = aff.gradient(&y, ex, &mut grad, check);
            for a in 0..2 * n {
                if update[a] * grad[a] < 0.0 {
                    gains[a] += 0.2;
                } else {
                    gains[a] *= 0.8;
                }
                gains[a] = gains[a].max(0.01);
                grad[a] *= gains[a];
                update[a] = momentum * update[a] - lr * grad[a];
                y[a] += update[a];
            }
            it += 1;
            pb.inc(1);
            if check {
                ensure!(kl.is_finite(), "t-SNE diverged at iteration {it}");
                pb.set_message(format!("KL {kl:.4}"));
                if kl < best {
                    (best, best_it) = (kl, it);
                } else if stage == 1 && it - best_it > cfg.iters_without_progress {
                    break;
                }
                if grad.iter().map(|g| g * g).sum::<f64>().sqrt() <= cfg.min_grad_norm {
                    break;
                }
            }
        }
    }
    pb.finish_and_clear();
    let kl = aff.gradient(&y, 1.0, &mut grad, true);
    Ok(Tsne {
        points: y.chunks(2).map(|p| [p[0], p[1]]).collect(),
        kl,
        iterations: it,
        method,
        learning_rate: lr,
        seconds: started.elapsed().as_secs_f64(),
        config: cfg.clone(),
    })
}

#[cfg(test)]
pub(crate) mod test_hooks {
    /// Barnes-Hut gradient and KL.
    pub fn bh(p: &super::SparseP, y: &[f64], ex: f64, theta: f64, grad: &mut [f64]) -> f64 {
        super::bh_gradient(p, y, ex, theta, grad, true)
    }
    /// Exact gradient and KL on dense affinities.
    pub fn exact(p: &[f64], y: &[f64], ex: f64, grad: &mut [f64]) -> f64 {
        super::exact_gradient(p, y, ex, grad, true)
    }
}
