//! [`Maps`]: one saliency map per image, with resizing and normalisation.

/// One saliency map per image, `h × w` each, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Maps {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub data: Vec<f32>,
}

impl Maps {
    /// All-zero maps.
    pub fn zeros(n: usize, h: usize, w: usize) -> Self {
        Self { n, h, w, data: vec![0.0; n * h * w] }
    }

    pub fn map(&self, i: usize) -> &[f32] {
        &self.data[i * self.h * self.w..(i + 1) * self.h * self.w]
    }

    /// Map `i` as its own one-image [`Maps`].
    pub fn one(&self, i: usize) -> Maps {
        Maps { n: 1, h: self.h, w: self.w, data: self.map(i).to_vec() }
    }

    /// Bilinear resize of every map to `h × w` (half-pixel centres, edges clamped: OpenCV's
    /// `INTER_LINEAR`, which pytorch-grad-cam uses). Same size: a copy.
    pub fn upsampled(&self, h: usize, w: usize) -> Maps {
        if (h, w) == (self.h, self.w) {
            return self.clone();
        }
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

    /// Each map scaled to [0, 1] by its minimum and maximum (a constant map becomes 0), as
    /// pytorch-grad-cam's `scale_cam_image`.
    pub fn normalized(&self) -> Maps {
        let mut out = self.clone();
        for m in out.data.chunks_mut(self.h * self.w) {
            let (lo, hi) = m.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
            let span = hi - lo;
            m.iter_mut().for_each(|v| *v = if span > 0.0 { (*v - lo) / span } else { 0.0 });
        }
        out
    }

    /// Appends the maps of `other` (same map size).
    pub fn extend(&mut self, other: Maps) {
        assert_eq!((self.h, self.w), (other.h, other.w), "Maps::extend: map sizes differ");
        self.n += other.n;
        self.data.extend(other.data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut a = m.clone();
        a.extend(m.one(0));
        assert_eq!((a.n, a.map(1)), (2, &[0.0, 2.0, 4.0, 6.0][..]));
    }
}
