//! Datasets: in-memory image sets, class hierarchies, readers for the standard formats, the
//! built-in synthetic dataset, augmentation and seeded batching.
mod augment;
pub mod cifar;
mod cifar_py;
mod error;
pub mod folder;
mod hierarchy;
pub mod mnist;
pub mod pickle;
pub mod stream;
pub mod synthetic;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use augment::write_image;
pub use augment::{resized_crop_box, Augment};
pub use error::DataError;
pub use hierarchy::read_hierarchy;

use crate::nn::{Shape4, Var};
use std::borrow::Cow;
use std::sync::Arc;
use stream::ImageStream;

/// Class → superclass mapping with names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hierarchy {
    pub super_names: Vec<String>,
    /// `class_to_super[class]` is the superclass index of `class`.
    pub class_to_super: Vec<usize>,
}

impl Hierarchy {
    /// Builds a hierarchy from `(class, superclass)` index pairs; every class must appear once.
    pub fn new(super_names: Vec<String>, class_to_super: Vec<usize>) -> Result<Self, DataError> {
        if let Some((c, &s)) = class_to_super.iter().enumerate().find(|(_, &s)| s >= super_names.len()) {
            return Err(DataError::Invalid(format!(
                "class {c} maps to superclass {s}, but only {} superclasses are named",
                super_names.len()
            )));
        }
        Ok(Self { super_names, class_to_super })
    }

    /// A user hierarchy from superclass name → class names, resolved against `class_names`.
    pub fn from_groups(class_names: &[String], groups: &[(&str, &[&str])]) -> Result<Self, DataError> {
        let mut map = vec![usize::MAX; class_names.len()];
        for (si, (_, members)) in groups.iter().enumerate() {
            for m in members.iter() {
                let c = class_names
                    .iter()
                    .position(|n| n == m)
                    .ok_or_else(|| DataError::Invalid(format!("hierarchy names unknown class '{m}'")))?;
                if map[c] != usize::MAX {
                    return Err(DataError::Invalid(format!("class '{m}' is in two superclasses")));
                }
                map[c] = si;
            }
        }
        if let Some(c) = map.iter().position(|&s| s == usize::MAX) {
            return Err(DataError::Invalid(format!("class '{}' has no superclass", class_names[c])));
        }
        Self::new(groups.iter().map(|(n, _)| n.to_string()).collect(), map)
    }

    pub fn num_super(&self) -> usize {
        self.super_names.len()
    }

    /// Classes of superclass `s`, in class order.
    pub fn members(&self, s: usize) -> Vec<usize> {
        (0..self.class_to_super.len()).filter(|&c| self.class_to_super[c] == s).collect()
    }
}

/// Per-channel normalisation constants.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalization {
    /// CIFAR-100 constants (RepDistiller / mdistiller).
    pub fn cifar100() -> Self {
        Self { mean: vec![0.5071, 0.4865, 0.4409], std: vec![0.2673, 0.2564, 0.2762] }
    }
    pub fn cifar10() -> Self {
        Self { mean: vec![0.4914, 0.4822, 0.4465], std: vec![0.2470, 0.2435, 0.2616] }
    }
    pub fn mnist() -> Self {
        Self { mean: vec![0.1307], std: vec![0.3081] }
    }
    /// ImageNet's constants (torchvision's pretrained models; the default for image folders).
    pub fn imagenet() -> Self {
        Self { mean: vec![0.485, 0.456, 0.406], std: vec![0.229, 0.224, 0.225] }
    }

    /// Per-channel mean and standard deviation of a dataset's pixels (scaled to [0, 1]), as
    /// `--normalize auto` computes them from the training images.
    pub fn of(ds: &Dataset) -> Self {
        let plane = ds.height * ds.width;
        let (mut mean, mut std) = (vec![], vec![]);
        for c in 0..ds.channels {
            let (mut s, mut s2, mut n) = (0.0f64, 0.0f64, 0usize);
            for i in 0..ds.len() {
                for &v in &ds.image(i)[c * plane..(c + 1) * plane] {
                    let x = v as f64 / 255.0;
                    s += x;
                    s2 += x * x;
                    n += 1;
                }
            }
            let m = s / n.max(1) as f64;
            mean.push(m as f32);
            std.push(((s2 / n.max(1) as f64 - m * m).max(0.0).sqrt()).max(1e-6) as f32);
        }
        Self { mean, std }
    }
}

/// An image set: `u8` images in CHW order, one label each, held in memory (`pixels`) or streamed
/// from their files (`stream`, see [`stream`]).
#[derive(Clone, Debug)]
pub struct Dataset {
    pub name: String,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// The images one after the other (empty when streamed or labels-only).
    pub pixels: Vec<u8>,
    /// Where the images come from when they are not held in `pixels`.
    pub stream: Option<Arc<ImageStream>>,
    pub labels: Vec<usize>,
    pub class_names: Vec<String>,
    pub hierarchy: Option<Hierarchy>,
    pub norm: Normalization,
    /// Files it was read from with their SHA-256 (or a description of how it was generated).
    pub provenance: Vec<(String, String)>,
}

impl Dataset {
    /// A split known only by its labels (predictions made elsewhere, no images): reports built on it
    /// leave out thumbnails.
    pub fn labels_only(name: &str, labels: Vec<usize>, class_names: Vec<String>, hierarchy: Option<Hierarchy>) -> Self {
        Self {
            name: name.into(),
            channels: 3,
            height: 0,
            width: 0,
            pixels: vec![],
            stream: None,
            labels,
            class_names,
            hierarchy,
            norm: Normalization { mean: vec![0.0; 3], std: vec![1.0; 3] },
            provenance: vec![],
        }
    }

    /// Whether the split carries its images (not one made by [`Dataset::labels_only`]).
    pub fn has_images(&self) -> bool {
        !self.pixels.is_empty() || self.stream.is_some()
    }

    /// Whether the images are read from their files on demand.
    pub fn is_streamed(&self) -> bool {
        self.stream.is_some()
    }

    /// Fails, naming the files, if a streamed image could not be decoded after the dataset was opened
    /// (it read as black); always fine in memory.
    pub fn check_stream(&self) -> Result<(), DataError> {
        self.stream.as_ref().map_or(Ok(()), |s| s.check())
    }

    /// A 3 x 32 x 32 colour dataset (CIFAR and the built-in dataset).
    #[allow(clippy::too_many_arguments)]
    pub fn rgb32(
        name: &str,
        pixels: Vec<u8>,
        labels: Vec<usize>,
        class_names: Vec<String>,
        hierarchy: Option<Hierarchy>,
        norm: Normalization,
        provenance: Vec<(String, String)>,
    ) -> Dataset {
        Dataset {
            name: name.into(),
            channels: 3,
            height: 32,
            width: 32,
            pixels,
            stream: None,
            labels,
            class_names,
            hierarchy,
            norm,
            provenance,
        }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }
    /// Raw CHW bytes of image `i` (decoded now if streamed and not cached).
    pub fn image(&self, i: usize) -> Cow<'_, [u8]> {
        match &self.stream {
            Some(s) => s.image(i),
            None => Cow::Borrowed(&self.pixels[i * self.image_len()..(i + 1) * self.image_len()]),
        }
    }

    /// Image `i` as an RGB image (grey images are repeated over the three channels).
    pub fn rgb_image(&self, i: usize) -> image::RgbImage {
        let px = self.image(i);
        let plane = self.height * self.width;
        image::RgbImage::from_fn(self.width as u32, self.height as u32, |x, y| {
            let at = y as usize * self.width + x as usize;
            let ch = |c: usize| px[c.min(self.channels - 1) * plane + at];
            image::Rgb([ch(0), ch(1), ch(2)])
        })
    }

    /// The first `n` images of every class as RGB images, class by class (for a look at the data).
    pub fn class_examples(&self, n: usize) -> Vec<image::RgbImage> {
        let mut by_class = vec![Vec::new(); self.num_classes()];
        for (i, &l) in self.labels.iter().enumerate() {
            if by_class[l].len() < n {
                by_class[l].push(self.rgb_image(i));
            }
        }
        by_class.into_iter().flatten().collect()
    }

    /// A subset by indices (e.g. a quick evaluation sample).
    pub fn subset(&self, idx: &[usize]) -> Dataset {
        let labels = idx.iter().map(|&i| self.labels[i]).collect();
        if let Some(s) = &self.stream {
            return Dataset { stream: Some(Arc::new(s.select(idx))), labels, ..self.meta() };
        }
        let mut pixels = Vec::with_capacity(idx.len() * self.image_len());
        for &i in idx {
            pixels.extend_from_slice(&self.image(i));
        }
        Dataset { pixels, labels, ..self.meta() }
    }

    /// The first `n` images of each class.
    pub fn take_per_class(&self, n: usize) -> Dataset {
        let mut count = vec![0usize; self.num_classes()];
        let idx: Vec<usize> = (0..self.len())
            .filter(|&i| {
                let c = &mut count[self.labels[i]];
                *c += 1;
                *c <= n
            })
            .collect();
        self.subset(&idx)
    }

    /// Everything but the images and labels.
    fn meta(&self) -> Dataset {
        Dataset {
            name: self.name.clone(),
            channels: self.channels,
            height: self.height,
            width: self.width,
            pixels: Vec::new(),
            stream: None,
            labels: Vec::new(),
            class_names: self.class_names.clone(),
            hierarchy: self.hierarchy.clone(),
            norm: self.norm.clone(),
            provenance: self.provenance.clone(),
        }
    }

    /// Checks labels against the class list.
    pub fn validate(&self) -> Result<(), DataError> {
        if let Some(s) = &self.stream {
            if s.len() != self.len() {
                return Err(DataError::Invalid(format!(
                    "{}: {} image files for {} labels",
                    self.name,
                    s.len(),
                    self.len()
                )));
            }
        } else if self.pixels.len() != self.len() * self.image_len() {
            return Err(DataError::Invalid(format!(
                "{}: {} pixel bytes for {} images of {}x{}x{}",
                self.name,
                self.pixels.len(),
                self.len(),
                self.channels,
                self.height,
                self.width
            )));
        }
        if let Some((i, &l)) = self.labels.iter().enumerate().find(|(_, &l)| l >= self.num_classes()) {
            return Err(DataError::Invalid(format!(
                "{}: image {i} has label {l}, but there are {} classes",
                self.name,
                self.num_classes()
            )));
        }
        if let Some(h) = &self.hierarchy {
            if h.class_to_super.len() != self.num_classes() {
                return Err(DataError::Invalid(format!(
                    "{}: hierarchy covers {} classes, dataset has {}",
                    self.name,
                    h.class_to_super.len(),
                    self.num_classes()
                )));
            }
        }
        if self.norm.mean.len() != self.channels || self.norm.std.len() != self.channels {
            return Err(DataError::Invalid(format!(
                "{}: normalisation has {} channels, images have {}",
                self.name,
                self.norm.mean.len(),
                self.channels
            )));
        }
        Ok(())
    }
}

/// A train/test pair.
#[derive(Clone, Debug)]
pub struct DataSplit {
    pub train: Dataset,
    pub test: Dataset,
}

/// One batch: normalised NCHW input and labels.
pub struct Batch {
    pub x: Var,
    pub labels: Vec<usize>,
    /// Dataset indices of the images in the batch.
    pub indices: Vec<usize>,
}

/// `n` distinct indices of `0..len` drawn with `seed`, in increasing order (all of them when `n ≥ len`).
pub fn sample_indices(len: usize, n: usize, seed: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..len).collect();
    idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    idx.truncate(n);
    idx.sort_unstable();
    idx
}

/// Builds a batch from dataset indices. With `aug`, image `k` of the batch is augmented with an RNG
/// seeded from `(seed, indices[k])`, so results do not depend on the thread count.
pub fn make_batch(ds: &Dataset, indices: &[usize], aug: Option<(Augment, u64)>) -> Batch {
    let il = ds.image_len();
    let mut x = vec![0.0f32; indices.len() * il];
    x.par_chunks_mut(il).zip(indices.par_iter()).for_each(|(out, &i)| match aug {
        Some((a, seed)) => {
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            write_image(ds, i, Some((a, &mut rng)), out)
        }
        None => write_image(ds, i, None, out),
    });
    Batch {
        x: Var::from_vec(x, Shape4::new(indices.len(), ds.channels, ds.height, ds.width)),
        labels: indices.iter().map(|&i| ds.labels[i]).collect(),
        indices: indices.to_vec(),
    }
}

/// Index batches of one epoch: shuffled with `(seed, epoch)` when `shuffle`, the last partial batch
/// kept unless `drop_last`.
pub fn epoch_batches(
    n: usize,
    batch: usize,
    shuffle: bool,
    seed: u64,
    epoch: usize,
    drop_last: bool,
) -> Vec<Vec<usize>> {
    assert!(batch > 0, "batch size must be positive");
    let mut idx: Vec<usize> = (0..n).collect();
    if shuffle {
        let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64));
        idx.shuffle(&mut rng);
    }
    idx.chunks(batch).filter(|c| !drop_last || c.len() == batch).map(|c| c.to_vec()).collect()
}

/// SHA-256 of a byte slice, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    crate::io::hex(&<sha2::Sha256 as sha2::Digest>::digest(bytes))
}

/// Reads a whole file with a contextual error.
pub(crate) fn read_file(path: &std::path::Path) -> Result<Vec<u8>, DataError> {
    std::fs::read(path).map_err(|e| DataError::Io { path: path.to_path_buf(), source: e })
}

#[cfg(test)]
mod tests {
    use rand::Rng;

    use super::*;

    fn tiny() -> Dataset {
        Dataset {
            name: "tiny".into(),
            channels: 1,
            height: 2,
            width: 3,
            pixels: vec![0, 51, 102, 153, 204, 255, 255, 255, 255, 0, 0, 0],
            stream: None,
            labels: vec![0, 1],
            class_names: vec!["a".into(), "b".into()],
            hierarchy: None,
            norm: Normalization { mean: vec![0.5], std: vec![0.5] },
            provenance: vec![],
        }
    }

    #[test]
    fn batch_normalises_and_flips() {
        let ds = tiny();
        let b = make_batch(&ds, &[0], None);
        let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6);
        assert!(close(b.x.data(), &[-1.0, -0.6, -0.2, 0.2, 0.6, 1.0]), "{:?}", b.x.data());
        // No crop and certain flip is not expressible via the RNG; check the flip path directly.
        let mut out = vec![0.0; 6];
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        // Find a seed state that flips: draw until gen_bool would be true, then replay.
        loop {
            let mut probe = rng.clone();
            if probe.gen_bool(0.5) {
                break;
            }
            rng.gen_bool(0.5);
        }
        write_image(&ds, 0, Some((Augment { crop_pad: 0, hflip: true, resized_crop: false }, &mut rng)), &mut out);
        assert!(close(&out, &[-0.2, -0.6, -1.0, 1.0, 0.6, 0.2]), "{out:?}");
    }

    #[test]
    fn crop_pads_with_normalised_zero() {
        let ds = tiny();
        // With padding 4 on a 2x3 image, some crops must show padding (value of pixel 0 = -1).
        let mut seen_pad = false;
        for s in 0..20 {
            let b = make_batch(&ds, &[1], Some((Augment { crop_pad: 4, hflip: false, resized_crop: false }, s)));
            let d = b.x.data();
            seen_pad |= d.iter().any(|&v| v == -1.0) && d.contains(&1.0);
            assert!(d.iter().all(|&v| v == -1.0 || v == 1.0));
        }
        assert!(seen_pad);
    }

    #[test]
    fn epoch_batches_are_seeded_permutations() {
        let a = epoch_batches(10, 4, true, 3, 1, false);
        let b = epoch_batches(10, 4, true, 3, 1, false);
        let c = epoch_batches(10, 4, true, 3, 2, false);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.iter().map(Vec::len).collect::<Vec<_>>(), vec![4, 4, 2]);
        let mut all: Vec<usize> = a.concat();
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert_eq!(epoch_batches(10, 4, false, 0, 0, true).len(), 2);
    }

    #[test]
    fn hierarchy_from_groups() {
        let names: Vec<String> = ["cat", "dog", "car"].iter().map(|s| s.to_string()).collect();
        let h = Hierarchy::from_groups(&names, &[("animal", &["cat", "dog"]), ("vehicle", &["car"])]).unwrap();
        assert_eq!(h.class_to_super, vec![0, 0, 1]);
        assert_eq!(h.members(0), vec![0, 1]);
        assert!(Hierarchy::from_groups(&names, &[("animal", &["cat", "dog"])]).is_err());
        assert!(Hierarchy::from_groups(&names, &[("a", &["cat", "dog", "car"]), ("b", &["cat"])]).is_err());
    }
}
