//! Exact k-nearest neighbours by brute force (squared Euclidean distance), parallel over query rows;
//! ties are broken by index, so the result is deterministic.
use rayon::prelude::*;

/// The `k` nearest other rows of every row of `x` (`n × d`, row-major), nearest first.
#[derive(Clone, Debug, PartialEq)]
pub struct Knn {
    pub k: usize,
    /// `n × k` neighbour indices.
    pub idx: Vec<u32>,
    /// `n × k` squared distances.
    pub dist2: Vec<f32>,
}

impl Knn {
    pub fn neighbours(&self, i: usize) -> &[u32] {
        &self.idx[i * self.k..(i + 1) * self.k]
    }
    pub fn distances2(&self, i: usize) -> &[f32] {
        &self.dist2[i * self.k..(i + 1) * self.k]
    }
}

/// Squared Euclidean distance with 16 independent accumulators (vectorises).
#[inline]
pub fn sqdist(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..16 {
            let t = x[l] - y[l];
            acc[l] += t * t;
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += (x - y) * (x - y);
    }
    s
}

/// Exact k-nearest neighbours of every row (excluding the row itself). `k` is capped at `n − 1`.
pub fn knn(x: &[f32], d: usize, k: usize) -> Knn {
    assert!(d > 0 && x.len().is_multiple_of(d), "knn: {} values are not rows of {d}", x.len());
    let n = x.len() / d;
    let k = k.min(n.saturating_sub(1));
    let rows: Vec<(Vec<u32>, Vec<f32>)> = (0..n)
        .into_par_iter()
        .map_init(
            || Vec::with_capacity(n),
            |buf: &mut Vec<(f32, u32)>, i| {
                buf.clear();
                let xi = &x[i * d..(i + 1) * d];
                buf.extend((0..n).filter(|&j| j != i).map(|j| (sqdist(xi, &x[j * d..(j + 1) * d]), j as u32)));
                let cmp = |a: &(f32, u32), b: &(f32, u32)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
                if k < buf.len() {
                    buf.select_nth_unstable_by(k, cmp);
                    buf.truncate(k);
                }
                buf.sort_unstable_by(cmp);
                (buf.iter().map(|p| p.1).collect(), buf.iter().map(|p| p.0).collect())
            },
        )
        .collect();
    let mut out = Knn { k, idx: Vec::with_capacity(n * k), dist2: Vec::with_capacity(n * k) };
    for (i, d) in rows {
        out.idx.extend(i);
        out.dist2.extend(d);
    }
    out
}
