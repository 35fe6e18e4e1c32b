//! Streamed image folders: images decoded when a batch asks for them, in parallel, with a bounded
//! cache, so a folder larger than memory trains and evaluates with a flat memory profile.
//!
//! A streamed [`Dataset`](super::Dataset) holds the file of each image instead of its pixels. The
//! bytes an image decodes to are exactly those the in-memory path stores (same decoder, same resize
//! and centre crop), so batches, augmentations, trained weights and reports are identical whichever
//! path is taken. The cache keeps the first decoded images up to its byte budget and never evicts
//! them: for the repeated scans of evaluation and the random order of training epochs alike, that
//! hits as often as any eviction policy would (budget / dataset size), without a lock on the hot path.
use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use super::DataError;

/// A byte budget shared by every stream drawn from one folder (its parts and subsets).
#[derive(Debug)]
pub struct CacheBudget {
    limit: usize,
    used: AtomicUsize,
}

impl CacheBudget {
    pub fn new(limit_bytes: usize) -> Arc<Self> {
        Arc::new(Self { limit: limit_bytes, used: AtomicUsize::new(0) })
    }

    /// Reserves `n` bytes if they fit.
    pub(crate) fn take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| u.checked_add(n).filter(|&t| t <= self.limit))
            .is_ok()
    }

    /// Bytes of decoded images held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// Turns a file into the `len()` CHW bytes of one image.
pub(crate) type DecodeFn = dyn Fn(&std::path::Path, &mut [u8]) -> Result<(), String> + Send + Sync;

/// The images of a streamed dataset: one file each, decoded on demand.
pub struct ImageStream {
    files: Vec<PathBuf>,
    image_len: usize,
    decode: Arc<DecodeFn>,
    slots: Vec<OnceLock<Arc<[u8]>>>,
    budget: Arc<CacheBudget>,
    decodes: AtomicUsize,
    failed: Mutex<Vec<String>>,
}

impl std::fmt::Debug for ImageStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageStream")
            .field("files", &self.files.len())
            .field("image_len", &self.image_len)
            .field("cached", &self.cached())
            .field("budget", &self.budget)
            .finish()
    }
}

impl ImageStream {
    pub(crate) fn new(files: Vec<PathBuf>, image_len: usize, decode: Arc<DecodeFn>, budget: Arc<CacheBudget>) -> Self {
        let slots = (0..files.len()).map(|_| OnceLock::new()).collect();
        Self { files, image_len, decode, slots, budget, decodes: AtomicUsize::new(0), failed: Mutex::new(vec![]) }
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The file image `i` is read from.
    pub fn file(&self, i: usize) -> &std::path::Path {
        &self.files[i]
    }

    /// Sets cached images whose bytes the budget already counts.
    pub(crate) fn with_cached(self, cached: Vec<(usize, Arc<[u8]>)>) -> Self {
        for (i, b) in cached {
            let _ = self.slots[i].set(b);
        }
        self
    }

    /// Keeps `bytes` as image `i` if the budget allows (images decoded after opening; those of the
    /// opening pass arrive through [`ImageStream::with_cached`]).
    pub(crate) fn offer(&self, i: usize, bytes: &[u8]) {
        if self.slots[i].get().is_none() && self.budget.take(bytes.len()) && self.slots[i].set(bytes.into()).is_err() {
            // Another thread cached it first: give the reservation back.
            self.budget.used.fetch_sub(bytes.len(), Ordering::Relaxed);
        }
    }

    /// The CHW bytes of image `i`: from the cache, or decoded now (and cached if the budget allows).
    /// A file that no longer decodes (changed or removed since the dataset was opened) reads as black
    /// and is recorded; [`ImageStream::check`] reports it.
    pub fn image(&self, i: usize) -> Cow<'_, [u8]> {
        if let Some(b) = self.slots[i].get() {
            return Cow::Borrowed(b);
        }
        let mut buf = vec![0u8; self.image_len];
        self.decodes.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = (self.decode)(&self.files[i], &mut buf) {
            buf.fill(0);
            let msg = format!("{} ({e})", self.files[i].display());
            let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
            if !failed.contains(&msg) {
                eprintln!("warning: {msg}: no longer readable since the dataset was opened");
                failed.push(msg);
            }
            return Cow::Owned(buf);
        }
        self.offer(i, &buf);
        match self.slots[i].get() {
            Some(b) => Cow::Borrowed(b),
            None => Cow::Owned(buf),
        }
    }

    /// The images `idx` as a stream of their own, sharing the cached images (no new memory) and the
    /// budget; the rest decode on demand.
    pub fn select(&self, idx: &[usize]) -> ImageStream {
        let s = ImageStream::new(
            idx.iter().map(|&i| self.files[i].clone()).collect(),
            self.image_len,
            self.decode.clone(),
            self.budget.clone(),
        );
        for (k, &i) in idx.iter().enumerate() {
            if let Some(b) = self.slots[i].get() {
                let _ = s.slots[k].set(b.clone());
            }
        }
        s
    }

    /// Images held in the cache.
    pub fn cached(&self) -> usize {
        self.slots.iter().filter(|s| s.get().is_some()).count()
    }
    /// Images decoded from their files since the stream was made.
    pub fn decodes(&self) -> usize {
        self.decodes.load(Ordering::Relaxed)
    }
    pub fn budget(&self) -> &CacheBudget {
        &self.budget
    }

    /// Fails, naming the files, if an image could not be decoded after the dataset was opened.
    pub fn check(&self) -> Result<(), DataError> {
        let failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        if failed.is_empty() {
            return Ok(());
        }
        Err(DataError::Invalid(format!(
            "{} image file(s) could not be read any more after the dataset was opened (they read as black): {}",
            failed.len(),
            failed.join("; ")
        )))
    }
}
