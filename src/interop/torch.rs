//! Files written by `torch.save`, read with burn's `pytorch-reader` (no libtorch; it checks every length
//! the file declares against the file before allocating, and refuses tensors over its size limit).
use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context};
use pytorch_reader::{DType, PytorchReader};

use super::{decode, Elem, Tensor};

fn elem(dtype: DType) -> Option<Elem> {
    Some(match dtype {
        DType::F32 => Elem::F32,
        DType::F16 => Elem::F16,
        DType::BF16 => Elem::BF16,
        DType::F64 => Elem::F64,
        DType::I64 => Elem::I64,
        DType::I32 => Elem::I32,
        _ => return None,
    })
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
    let names = reader.tensors().iter().filter(|(_, t)| elem(t.dtype()).is_some()).map(|(n, _)| n.clone()).collect();
    let prefix = choose(names)?;
    let mut out = BTreeMap::new();
    for (name, t) in reader.tensors() {
        let Some(short) = name.strip_prefix(&prefix) else { continue };
        let bytes = t.read().with_context(|| format!("{}: reading tensor '{name}'", path.display()))?;
        let Some(e) = elem(t.dtype()) else { continue };
        let values = decode(e, &bytes);
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
