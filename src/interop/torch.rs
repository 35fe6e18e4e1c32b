//! Files written by `torch.save`, read with burn's `pytorch-reader` (no libtorch; it checks every length
//! the file declares against the file before allocating, and refuses tensors over its size limit).
use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context};
use pytorch_reader::{DType, PytorchReader};

use super::Tensor;

fn to_f32(dtype: DType, b: &[u8]) -> Option<Vec<f32>> {
    use half::{bf16, f16};
    // pytorch-reader hands back native-endian bytes; kdscope only builds for little-endian targets.
    let v = match dtype {
        DType::F32 => b.chunks_exact(4).map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]])).collect(),
        DType::F16 => b.chunks_exact(2).map(|c| f16::from_ne_bytes([c[0], c[1]]).to_f32()).collect(),
        DType::BF16 => b.chunks_exact(2).map(|c| bf16::from_ne_bytes([c[0], c[1]]).to_f32()).collect(),
        DType::F64 => b.chunks_exact(8).map(|c| f64::from_ne_bytes(c.try_into().expect("8 bytes")) as f32).collect(),
        DType::I64 => b.chunks_exact(8).map(|c| i64::from_ne_bytes(c.try_into().expect("8 bytes")) as f32).collect(),
        DType::I32 => b.chunks_exact(4).map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]) as f32).collect(),
        _ => return None,
    };
    Some(v)
}

/// The tensors of a `torch.save` file whose dotted paths (`model.module.conv1.weight`) start with the
/// prefix `choose` picks from all the paths, as f32 under their names without that prefix. Only those
/// are read (not an optimizer's state saved beside them); tensors that are not numbers (bool, small
/// integers) are left out.
pub(super) fn read(
    path: &Path,
    choose: impl FnOnce(Vec<String>) -> anyhow::Result<String>,
) -> anyhow::Result<(BTreeMap<String, Tensor>, String)> {
    let reader = PytorchReader::new(path).map_err(|e| anyhow::anyhow!("{e}")).with_context(|| {
        format!("{}: not a PyTorch checkpoint (torch.save file) or a safetensors file", path.display())
    })?;
    let numeric = |d: DType| to_f32(d, &[]).is_some();
    let names = reader.tensors().iter().filter(|(_, t)| numeric(t.dtype())).map(|(n, _)| n.clone()).collect();
    let prefix = choose(names)?;
    let mut out = BTreeMap::new();
    for (name, t) in reader.tensors() {
        let Some(short) = name.strip_prefix(&prefix) else { continue };
        let bytes = t.read().with_context(|| format!("{}: reading tensor '{name}'", path.display()))?;
        let Some(values) = to_f32(t.dtype(), &bytes) else { continue };
        if values.len() != t.num_elements() {
            bail!(
                "{}: tensor '{name}' holds {} values, its shape {:?} says {}",
                path.display(),
                values.len(),
                t.shape(),
                t.num_elements()
            );
        }
        out.insert(short.to_string(), Tensor { shape: t.shape().to_vec(), values });
    }
    Ok((out, prefix))
}
