use crate::data::{make_batch, Dataset};
use crate::models::Model;
use crate::predictions::Predictions;

/// Runs `model` in evaluation mode over `data` in batches of `batch` (no augmentation).
pub fn evaluate(model: &Model, data: &Dataset, batch: usize) -> Predictions {
    super::tune_allocator();
    let mut logits = Vec::with_capacity(data.len() * model.spec.num_classes);
    let idx: Vec<usize> = (0..data.len()).collect();
    for chunk in idx.chunks(batch.max(1)) {
        let b = make_batch(data, chunk, None);
        logits.extend_from_slice(model.logits(b.x).data());
    }
    Predictions { num_classes: model.spec.num_classes, labels: data.labels.clone(), logits }
}
