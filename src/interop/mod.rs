//! Models made elsewhere: PyTorch checkpoints (`torch.save` files: the zip format of PyTorch ≥ 1.6, the
//! legacy and tar formats, read by burn's `pytorch-reader` without libtorch), plain safetensors files
//! (`safetensors.torch.save_file(model.state_dict(), …)`) and kdscope's own checkpoints, all read into
//! one [`StateDict`] of f32 tensors.
//!
//! [`import_model`] finds the state dict inside the usual wrappers (`{'model': …}`, `{'state_dict': …}`,
//! DataParallel's `module.`, mdistiller's distiller `student.` / `teacher.`; see [`select`]), infers the
//! architecture from tensor names and shapes ([`infer`]) unless told, and loads it strictly: every
//! missing key, unexpected key and shape mismatch is listed at once, as PyTorch's `load_state_dict` does.
//!
//! ```no_run
//! use kdscope::interop::{import_model, ImportOptions};
//! // an mdistiller teacher: {'model': state_dict, 'acc': …}
//! let teacher = import_model("resnet56_vanilla/ckpt_epoch_240.pth", &ImportOptions::default())?;
//! // a distiller checkpoint holding student.* and teacher.*: take the student, force the architecture
//! let opts = ImportOptions { prefer: Some("student".into()), arch: Some("resnet20".into()), ..Default::default() };
//! let student = import_model("kd/student_best.pth", &opts)?;
//! # Ok::<(), anyhow::Error>(())
//! ```
pub mod infer;
pub mod logits;
pub mod select;
mod torch;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;

use anyhow::{bail, Context};
use safetensors::tensor::{Dtype, SafeTensors};

use crate::models::{Model, ModelSpec};
use crate::nn::{PId, Store};

pub use select::ImportOptions;

/// The safetensors metadata key of a kdscope checkpoint's architecture.
pub const SPEC_KEY: &str = "kdscope.spec";
/// The safetensors metadata key of the class names a kdscope checkpoint was trained on (JSON list).
pub const CLASSES_KEY: &str = "kdscope.classes";

/// A tensor converted to f32 (from f16, bf16, f64 or an integer type).
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// Named tensors of a checkpoint, after the wrapper and prefixes were taken off.
#[derive(Clone, Debug, Default)]
pub struct StateDict {
    pub tensors: BTreeMap<String, Tensor>,
    /// Where they came from: the file and the subtree read (`model.module.`), for messages.
    pub source: String,
    /// A kdscope checkpoint's metadata (safetensors header), empty for other files.
    pub meta: HashMap<String, String>,
    /// Whether NaN or infinite values may be loaded (see [`ImportOptions::allow_non_finite`]).
    pub allow_non_finite: bool,
}

impl StateDict {
    /// Names and shapes, the view architecture inference works on.
    pub fn shapes(&self) -> BTreeMap<String, Vec<usize>> {
        self.tensors.iter().map(|(k, t)| (k.clone(), t.shape.clone())).collect()
    }

    /// The architecture a kdscope checkpoint records in its metadata.
    pub fn kdscope_spec(&self) -> anyhow::Result<Option<ModelSpec>> {
        spec_in(&self.meta, &self.source)
    }

    /// The class names a kdscope checkpoint records (one per output).
    pub fn kdscope_classes(&self) -> anyhow::Result<Option<Vec<String>>> {
        classes_in(&self.meta, &self.source)
    }
}

/// The architecture recorded under [`SPEC_KEY`] in a kdscope file's metadata (`source` names the file).
pub(crate) fn spec_in(meta: &HashMap<String, String>, source: &str) -> anyhow::Result<Option<ModelSpec>> {
    meta.get(SPEC_KEY)
        .map(|s| serde_json::from_str(s).with_context(|| format!("{source}: bad {SPEC_KEY} metadata")))
        .transpose()
}

/// The class names recorded under [`CLASSES_KEY`] in a kdscope file's metadata.
pub(crate) fn classes_in(meta: &HashMap<String, String>, source: &str) -> anyhow::Result<Option<Vec<String>>> {
    meta.get(CLASSES_KEY)
        .map(|s| {
            serde_json::from_str(s)
                .with_context(|| format!("{source}: bad {CLASSES_KEY} metadata (expected a list of names)"))
        })
        .transpose()
}

/// What kind of file a checkpoint path holds, from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Safetensors,
    /// Anything `torch.save` writes (zip, legacy pickle stream, tar).
    Torch,
    Npy,
}

/// The kind of checkpoint file at `path` (by content, not by extension).
pub fn file_kind(path: &Path) -> anyhow::Result<FileKind> {
    use std::io::Read;
    let mut head = [0u8; 16];
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let n = f.read(&mut head).with_context(|| format!("reading {}", path.display()))?;
    let head = &head[..n];
    Ok(if head.starts_with(b"\x93NUMPY") {
        FileKind::Npy
    } else if n >= 9 && head[8] == b'{' {
        FileKind::Safetensors
    } else {
        FileKind::Torch
    })
}

/// The element types a checkpoint's numbers come in (both file formats map theirs onto these).
#[derive(Clone, Copy)]
pub(crate) enum Elem {
    F32,
    F16,
    BF16,
    F64,
    I64,
    I32,
}

/// Little-endian elements as f32 (kdscope builds for little-endian targets only, so this also reads
/// pytorch-reader's native-endian bytes).
pub(crate) fn decode(elem: Elem, b: &[u8]) -> Vec<f32> {
    use half::{bf16, f16};
    match elem {
        Elem::F32 => b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Elem::F16 => b.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Elem::BF16 => b.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Elem::F64 => b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32).collect(),
        Elem::I64 => b.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as f32).collect(),
        Elem::I32 => b.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32).collect(),
    }
}

fn to_f32(dtype: Dtype, b: &[u8]) -> Option<Vec<f32>> {
    let elem = match dtype {
        Dtype::F32 => Elem::F32,
        Dtype::F16 => Elem::F16,
        Dtype::BF16 => Elem::BF16,
        Dtype::F64 => Elem::F64,
        Dtype::I64 => Elem::I64,
        Dtype::I32 => Elem::I32,
        _ => return None,
    };
    Some(decode(elem, b))
}

/// Every tensor of a safetensors file (any of f32, f16, bf16, f64, i64, i32) and its metadata.
fn read_safetensors(path: &Path) -> anyhow::Result<(BTreeMap<String, Tensor>, HashMap<String, String>)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes)
        .with_context(|| format!("{}: not a valid safetensors file", path.display()))?;
    let meta = meta.metadata().clone().unwrap_or_default();
    let st = SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{}: not a valid safetensors file", path.display()))?;
    let mut out = BTreeMap::new();
    for (name, t) in st.tensors() {
        let values = to_f32(t.dtype(), t.data()).with_context(|| {
            format!("{}: tensor '{name}' has dtype {:?}, not a number type", path.display(), t.dtype())
        })?;
        out.insert(name, Tensor { shape: t.shape().to_vec(), values });
    }
    Ok((out, meta))
}

/// Reads the state dict of a checkpoint: all tensors of the file, then the subtree `opts` selects (or
/// the one [`select::choose`] finds).
pub fn read_state_dict(path: impl AsRef<Path>, opts: &ImportOptions) -> anyhow::Result<StateDict> {
    let path = path.as_ref();
    let choose =
        |names: Vec<String>| select::choose(names, opts).with_context(|| format!("reading {}", path.display()));
    let (tensors, subtree, meta) = match file_kind(path)? {
        FileKind::Safetensors => {
            let (all, meta) = read_safetensors(path)?;
            let prefix = choose(all.keys().cloned().collect())?;
            let t = all.into_iter().filter_map(|(k, t)| Some((k.strip_prefix(&prefix)?.to_string(), t))).collect();
            (t, prefix, meta)
        }
        FileKind::Torch => {
            let (t, prefix) = torch::read(path, choose)?;
            (t, prefix, HashMap::new())
        }
        FileKind::Npy => bail!(
            "{} is a NumPy array, not a checkpoint (for logits saved with numpy.save, use --teacher-logits / \
             --student-logits)",
            path.display()
        ),
    };
    let source =
        if subtree.is_empty() { path.display().to_string() } else { format!("{} [{subtree}*]", path.display()) };
    Ok(StateDict { tensors, source, meta, allow_non_finite: opts.allow_non_finite })
}

/// Names and shapes a model's state dict has (parameters, batch-norm statistics, other buffers), without
/// the `num_batches_tracked` counters, in the store's order.
pub fn expected_entries(store: &Store) -> Vec<(String, Vec<usize>)> {
    let mut e: Vec<(String, Vec<usize>)> = store.params.iter().map(|p| (p.name.clone(), p.shape.clone())).collect();
    for bn in &store.bns {
        let c = bn.stats.lock().expect("batch-norm statistics lock").mean.len();
        e.push((format!("{}.running_mean", bn.prefix), vec![c]));
        e.push((format!("{}.running_var", bn.prefix), vec![c]));
    }
    e.extend(store.buffers.iter().map(|b| (b.name.clone(), b.shape.clone())));
    e
}

/// Why a state dict does not fit a model, every problem at once (PyTorch's `load_state_dict` report).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Mismatch {
    pub missing: Vec<String>,
    pub unexpected: Vec<String>,
    /// (name, shape in the file, shape in the model)
    pub shapes: Vec<(String, Vec<usize>, Vec<usize>)>,
}

impl Mismatch {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.shapes.is_empty()
    }
    /// How far off a candidate architecture is (for choosing the closest one in messages).
    pub fn size(&self) -> usize {
        self.missing.len() + self.unexpected.len() + self.shapes.len()
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn list(f: &mut fmt::Formatter<'_>, what: &str, v: &[String]) -> fmt::Result {
            if v.is_empty() {
                return Ok(());
            }
            let shown: Vec<String> = v.iter().map(|k| format!("\"{k}\"")).collect();
            writeln!(f, "\t{what} key(s) in state_dict: {}.", shown.join(", "))
        }
        list(f, "Missing", &self.missing)?;
        list(f, "Unexpected", &self.unexpected)?;
        for (k, file, model) in &self.shapes {
            writeln!(
                f,
                "\tsize mismatch for {k}: copying a param with shape {file:?} from checkpoint, the shape in current \
                 model is {model:?}."
            )?;
        }
        Ok(())
    }
}

/// Compares a state dict's names and shapes with what `store` expects (`num_batches_tracked` is
/// optional and ignored).
pub fn compare(shapes: &BTreeMap<String, Vec<usize>>, store: &Store) -> Mismatch {
    let expected = expected_entries(store);
    let mut m = Mismatch::default();
    let mut known = std::collections::HashSet::new();
    for (name, shape) in &expected {
        known.insert(name.as_str());
        match shapes.get(name) {
            None => m.missing.push(name.clone()),
            Some(s) if s != shape => m.shapes.push((name.clone(), s.clone(), shape.clone())),
            Some(_) => {}
        }
    }
    for name in shapes.keys() {
        if !known.contains(name.as_str()) && !is_batch_counter(name, store) {
            m.unexpected.push(name.clone());
        }
    }
    m
}

fn is_batch_counter(name: &str, store: &Store) -> bool {
    name.strip_suffix(".num_batches_tracked").is_some_and(|p| store.bns.iter().any(|b| b.prefix == p))
}

/// Loads `sd` into `model` strictly: nothing is changed unless every parameter and buffer is present
/// with its shape and no tensor is left over; NaN or infinite values are refused.
pub fn load_state_dict(model: &mut Model, sd: &StateDict) -> anyhow::Result<()> {
    let m = compare(&sd.shapes(), &model.store);
    if !m.is_empty() {
        bail!("Error(s) in loading state_dict for {} from {}:\n{m}", model.spec, sd.source);
    }
    let non_finite: Vec<&String> =
        sd.tensors.iter().filter(|(_, t)| t.values.iter().any(|v| !v.is_finite())).map(|(n, _)| n).collect();
    if let Some(name) = non_finite.first() {
        if !sd.allow_non_finite {
            bail!(
                "{}: tensor '{name}' holds NaN or infinite values{} (--allow-non-finite loads it anyway)",
                sd.source,
                if non_finite.len() > 1 {
                    format!(", and {} more tensors do", non_finite.len() - 1)
                } else {
                    String::new()
                }
            );
        }
        eprintln!(
            "warning: {}: NaN or infinite values loaded in {} tensor(s), first '{name}'",
            sd.source,
            non_finite.len()
        );
    }
    let get = |n: &str| sd.tensors[n].values.clone();
    for i in 0..model.store.params.len() {
        let v = get(&model.store.params[i].name);
        model.store.set(PId(i), v);
    }
    for bn in &model.store.bns {
        let mut st = bn.stats.lock().expect("batch-norm statistics lock");
        st.mean = get(&format!("{}.running_mean", bn.prefix));
        st.var = get(&format!("{}.running_var", bn.prefix));
        if let Some(t) = sd.tensors.get(&format!("{}.num_batches_tracked", bn.prefix)) {
            st.batches = t.values.first().copied().unwrap_or(0.0) as i64;
        }
    }
    for b in &mut model.store.buffers {
        b.values = get(&b.name);
    }
    Ok(())
}

/// Reads a checkpoint of any supported kind and returns the model it holds: the architecture from
/// `opts.arch`, else from a kdscope checkpoint's metadata, else inferred from the tensors.
pub fn import_model(path: impl AsRef<Path>, opts: &ImportOptions) -> anyhow::Result<Model> {
    let sd = read_state_dict(path, opts)?;
    model_from_state_dict(&sd, opts.arch.as_deref())
}

/// The model `sd` holds (see [`import_model`]). A kdscope checkpoint's recorded architecture must agree
/// with what its tensors show (the tensors, bounded by the file's size, decide what gets built, never the
/// metadata alone).
pub fn model_from_state_dict(sd: &StateDict, arch: Option<&str>) -> anyhow::Result<Model> {
    // Every value is replaced by the checkpoint's (the load is strict): no need to draw initial ones.
    crate::nn::without_init(|| model_from_state_dict_inner(sd, arch))
}

fn model_from_state_dict_inner(sd: &StateDict, arch: Option<&str>) -> anyhow::Result<Model> {
    let shapes = sd.shapes();
    let mut model = match arch {
        Some(a) => {
            Model::try_new(infer::spec_for_arch(&shapes, a).with_context(|| format!("reading {}", sd.source))?, 0)?
        }
        None => {
            let model = infer::infer_model(&shapes).with_context(|| format!("reading {}", sd.source))?;
            if let Some(spec) = sd.kdscope_spec()? {
                anyhow::ensure!(
                    spec == model.spec,
                    "{}: the metadata says {spec}, the tensors are those of {}",
                    sd.source,
                    model.spec
                );
            }
            model
        }
    };
    load_state_dict(&mut model, sd)?;
    if let Some(c) = sd.kdscope_classes()? {
        anyhow::ensure!(
            c.len() == model.spec.num_classes,
            "{}: {CLASSES_KEY} names {} classes, the model has {} outputs",
            sd.source,
            c.len(),
            model.spec.num_classes
        );
        model.classes = Some(c);
    }
    Ok(model)
}
