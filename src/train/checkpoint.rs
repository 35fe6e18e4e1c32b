//! Checkpoints as safetensors files named like PyTorch's `state_dict` of the same architecture
//! (RepDistiller / mdistiller naming: `conv1.weight`, `bn1.running_mean`, `layer1.0.conv1.weight`,
//! `fc.weight`, …), so a file written here loads into the PyTorch model with
//! `model.load_state_dict(safetensors.torch.load_file(path))` and vice versa.
//!
//! Model files carry the architecture (`kdscope.spec`) and the class names (`kdscope.classes`) in their
//! metadata, written in sorted order so the same run always writes the same bytes. Training runs also
//! write `<path>.train-state.safetensors`: the model again (`model.*`), the optimiser's momentum buffers,
//! the distillation method's modules and the history. That file is the epoch's single commit point: it
//! is written (atomically: temporary file, fsync, rename, fsync of the folder) before the model file, so
//! a kill at any instant leaves a complete resume point, and resuming rewrites a model file that lags
//! behind it. Stale temporary files of killed runs are removed when a run starts.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::History;
use crate::io::write_atomic;
use crate::models::{Model, ModelSpec};
use crate::nn::{Sgd, Store};

use crate::interop::{classes_in, spec_in, CLASSES_KEY, SPEC_KEY};
const EPOCH_KEY: &str = "kdscope.epoch";
const HISTORY_KEY: &str = "kdscope.history";
/// Prefix of the model's own tensors in the training-state file.
const MODEL_PREFIX: &str = "model.";

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn bytes_f32(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// Named tensors to serialise: (name, dtype, shape, little-endian bytes).
type Entry = (String, Dtype, Vec<usize>, Vec<u8>);

fn serialize(entries: &[Entry], meta: HashMap<String, String>) -> anyhow::Result<Vec<u8>> {
    let views: Vec<(String, TensorView)> = entries
        .iter()
        .map(|(n, d, s, b)| Ok((n.clone(), TensorView::new(*d, s.clone(), b)?)))
        .collect::<Result<_, safetensors::SafeTensorError>>()?;
    let bytes = safetensors::serialize(views, &Some(meta.clone()))?;
    sort_metadata(bytes, &meta)
}

/// safetensors writes the metadata map in the hash order of the process (tensors it sorts by name), so
/// two runs that train identical weights would write different bytes. The sorted map serialises to the
/// same length and sits first in the header: it is written over the unsorted one in place.
fn sort_metadata(mut bytes: Vec<u8>, meta: &HashMap<String, String>) -> anyhow::Result<Vec<u8>> {
    const KEY: &[u8] = b"{\"__metadata__\":";
    let json = serde_json::to_vec(&meta.iter().collect::<BTreeMap<_, _>>())?;
    let start = 8 + KEY.len();
    let end = start + json.len();
    ensure!(
        bytes.get(8..start) == Some(KEY) && bytes.get(start) == Some(&b'{') && bytes.get(end - 1) == Some(&b'}'),
        "safetensors header not laid out as expected (metadata first)"
    );
    bytes[start..end].copy_from_slice(&json);
    Ok(bytes)
}

fn model_entries(model: &Model) -> Vec<Entry> {
    store_entries(&model.store, "")
}

/// Parameters and batch-norm buffers of `store`, names prefixed with `prefix`.
fn store_entries(store: &Store, prefix: &str) -> Vec<Entry> {
    let mut e: Vec<Entry> = store
        .params
        .iter()
        .map(|p| (format!("{prefix}{}", p.name), Dtype::F32, p.shape.clone(), f32_bytes(&p.values())))
        .collect();
    for bn in &store.bns {
        let st = bn.stats.lock().expect("batch-norm statistics lock");
        let (c, n) = (st.mean.len(), &bn.prefix);
        e.push((format!("{prefix}{n}.running_mean"), Dtype::F32, vec![c], f32_bytes(&st.mean)));
        e.push((format!("{prefix}{n}.running_var"), Dtype::F32, vec![c], f32_bytes(&st.var)));
        e.push((format!("{prefix}{n}.num_batches_tracked"), Dtype::I64, vec![], st.batches.to_le_bytes().to_vec()));
    }
    for b in &store.buffers {
        e.push((format!("{prefix}{}", b.name), Dtype::F32, b.shape.clone(), f32_bytes(&b.values)));
    }
    e
}

/// Momentum buffers of `store`'s parameters.
fn velocity_entries(store: &Store, prefix: &str, sgd: &mut Sgd) -> Vec<Entry> {
    store
        .params
        .iter()
        .map(|p| (format!("velocity.{prefix}{}", p.name), Dtype::F32, p.shape.clone(), f32_bytes(&sgd.velocity(p))))
        .collect()
}

fn model_meta(model: &Model, epoch: Option<usize>) -> HashMap<String, String> {
    let mut m = HashMap::new();
    m.insert("format".into(), "pt".into());
    m.insert(SPEC_KEY.into(), serde_json::to_string(&model.spec).expect("spec serialises"));
    m.insert("kdscope.version".into(), env!("CARGO_PKG_VERSION").into());
    if let Some(c) = &model.classes {
        m.insert(CLASSES_KEY.into(), serde_json::to_string(c).expect("names serialise"));
    }
    if let Some(e) = epoch {
        m.insert(EPOCH_KEY.into(), e.to_string());
    }
    m
}

/// Saves a model's parameters and batch-norm buffers.
pub fn save_model(path: impl AsRef<Path>, model: &Model) -> anyhow::Result<()> {
    let bytes = serialize(&model_entries(model), model_meta(model, None))?;
    write_atomic(path.as_ref(), &bytes)
}

/// A checkpoint file's bytes and its metadata (read once per load).
fn read_with_meta(path: &Path) -> anyhow::Result<(Vec<u8>, HashMap<String, String>)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let (_, meta) =
        SafeTensors::read_metadata(&bytes).with_context(|| format!("{}: not a safetensors file", path.display()))?;
    let meta = meta.metadata().clone().unwrap_or_default();
    Ok((bytes, meta))
}

/// The architecture recorded in a checkpoint, if it was written by kdscope.
pub fn read_spec(path: impl AsRef<Path>) -> anyhow::Result<Option<ModelSpec>> {
    let path = path.as_ref();
    spec_in(&read_with_meta(path)?.1, &path.display().to_string())
}

/// Loads a model from a checkpoint: kdscope's own (its architecture recorded in the metadata, checked
/// against its tensors), a `torch.save` file or a plain safetensors file (architecture inferred; see
/// [`crate::interop`] for the options).
pub fn load_model(path: impl AsRef<Path>) -> anyhow::Result<Model> {
    crate::interop::import_model(path, &crate::interop::ImportOptions::default())
}

/// Loads parameters and buffers into `model`, checking the architecture (from the metadata when
/// present) and every tensor's name and shape (all problems listed at once).
pub fn load_into(path: impl AsRef<Path>, model: &mut Model) -> anyhow::Result<()> {
    let sd = crate::interop::read_state_dict(path, &Default::default())?;
    load_state(&sd, model)
}

/// [`load_into`] on a state dict already read.
fn load_state(sd: &crate::interop::StateDict, model: &mut Model) -> anyhow::Result<()> {
    if let Some(spec) = sd.kdscope_spec()? {
        if spec != model.spec {
            bail!("{} holds {}, but the model is {}", sd.source, spec, model.spec);
        }
    }
    crate::interop::load_state_dict(model, sd)
}

fn tensor_f32(st: &SafeTensors, path: &Path, name: &str, shape: &[usize]) -> anyhow::Result<Vec<f32>> {
    let t = st.tensor(name).map_err(|_| anyhow::anyhow!("{}: tensor '{name}' is missing", path.display()))?;
    ensure!(t.dtype() == Dtype::F32, "{}: tensor '{name}' is {:?}, expected F32", path.display(), t.dtype());
    if t.shape() != shape {
        bail!("{}: tensor '{name}' has shape {:?}, the model expects {shape:?}", path.display(), t.shape());
    }
    Ok(bytes_f32(t.data()))
}

/// Reads `store`'s parameters and batch-norm buffers (names prefixed with `prefix`) from `st`;
/// `explain` may add context to a missing or mis-shaped parameter's error.
fn load_store(
    st: &SafeTensors,
    path: &Path,
    store: &mut Store,
    prefix: &str,
    explain: impl Fn(anyhow::Error, &str) -> anyhow::Error,
) -> anyhow::Result<()> {
    let mut values = Vec::with_capacity(store.params.len());
    for p in &store.params {
        values.push(tensor_f32(st, path, &format!("{prefix}{}", p.name), &p.shape).map_err(|e| explain(e, &p.name))?);
    }
    for (i, v) in values.into_iter().enumerate() {
        store.set(crate::nn::PId(i), v);
    }
    for bn in &store.bns {
        let mut stats = bn.stats.lock().expect("batch-norm statistics lock");
        let (c, n) = (stats.mean.len(), &bn.prefix);
        stats.mean = tensor_f32(st, path, &format!("{prefix}{n}.running_mean"), &[c])?;
        stats.var = tensor_f32(st, path, &format!("{prefix}{n}.running_var"), &[c])?;
        let name = format!("{prefix}{n}.num_batches_tracked");
        if let Ok(t) = st.tensor(&name) {
            ensure!(
                t.dtype() == Dtype::I64 && t.data().len() == 8,
                "{}: '{name}' must be a scalar I64",
                path.display()
            );
            stats.batches = i64::from_le_bytes(t.data().try_into().expect("8 bytes"));
        }
    }
    for b in &mut store.buffers {
        b.values = tensor_f32(st, path, &format!("{prefix}{}", b.name), &b.shape)?;
    }
    Ok(())
}

/// Path of the training-state companion file of a checkpoint.
pub fn train_state_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".train-state.safetensors");
    PathBuf::from(s)
}

/// Prefix of a distillation method's own modules in the training-state file.
const METHOD_PREFIX: &str = "method.";

/// Saves a resumable training checkpoint: first the training-state file (the commit point: the model,
/// the optimiser state, the history and the distillation method's own modules (`method`, if it has
/// any) with their optimiser state), then the model file.
pub fn save_training(
    path: &Path,
    model: &Model,
    method: Option<&Store>,
    sgd: &mut Sgd,
    history: &History,
) -> anyhow::Result<()> {
    let epoch = history.epochs.len();
    let mut entries = store_entries(&model.store, MODEL_PREFIX);
    entries.extend(velocity_entries(&model.store, "", sgd));
    if let Some(m) = method {
        entries.extend(store_entries(m, METHOD_PREFIX));
        entries.extend(velocity_entries(m, METHOD_PREFIX, sgd));
    }
    let mut meta = model_meta(model, Some(epoch));
    meta.insert(HISTORY_KEY.into(), serde_json::to_string(history)?);
    write_atomic(&train_state_path(path), &serialize(&entries, meta)?)?;
    write_atomic(path, &serialize(&model_entries(model), model_meta(model, Some(epoch)))?)
}

/// Removes temporary files that killed writers of `path` and of its training state left behind
/// (`.<name>.<pid>.tmp` whose process is gone).
pub fn remove_stale_temporaries(path: &Path) -> anyhow::Result<()> {
    crate::io::remove_stale_temporaries(path)?;
    crate::io::remove_stale_temporaries(&train_state_path(path))
}

/// The training history stored beside a checkpoint (in its train-state file), if there is one.
pub fn read_history(path: &Path) -> anyhow::Result<Option<History>> {
    let sp = train_state_path(path);
    if !sp.exists() {
        return Ok(None);
    }
    let (_, meta) = read_with_meta(&sp)?;
    let h = meta.get(HISTORY_KEY).context("training state has no history")?;
    Ok(Some(serde_json::from_str(h).with_context(|| format!("{}: malformed history", sp.display()))?))
}

/// Restores a training checkpoint into `model`, the method's modules and `sgd` from its training-state
/// file; returns the history so far. A model file that lags behind the state (a kill between the two
/// writes of an epoch) is rewritten from it.
pub fn load_training(
    path: &Path,
    model: &mut Model,
    method: Option<&mut Store>,
    sgd: &mut Sgd,
) -> anyhow::Result<History> {
    let sp = train_state_path(path);
    let (bytes, meta) = read_with_meta(&sp)?;
    let history: History = serde_json::from_str(meta.get(HISTORY_KEY).context("training state has no history")?)
        .with_context(|| format!("{}: malformed history", sp.display()))?;
    let st = SafeTensors::deserialize(&bytes).with_context(|| format!("{}: not a safetensors file", sp.display()))?;
    let epoch = history.epochs.len();
    ensure!(
        meta.get(EPOCH_KEY).map(String::as_str) == Some(&epoch.to_string()),
        "{}: records epoch {:?} but a history of {epoch} epochs",
        sp.display(),
        meta.get(EPOCH_KEY)
    );
    let source = sp.display().to_string();
    if let Some(spec) = spec_in(&meta, &source)? {
        ensure!(spec == model.spec, "{source} holds {spec}, but the model is {}", model.spec);
    }
    if let (Some(saved), Some(now)) = (classes_in(&meta, &source)?, &model.classes) {
        ensure!(
            &saved == now,
            "{source} was trained on other classes ({}) than the dataset's ({}); resume on the same dataset",
            crate::models::class_list_summary(&saved),
            crate::models::class_list_summary(now)
        );
    }
    if st.names().iter().any(|n| n.starts_with(MODEL_PREFIX)) {
        load_store(&st, &sp, &mut model.store, MODEL_PREFIX, |e, _| e)?;
        // The model file is rewritten unless it is this epoch's (same bytes as it would be written).
        let model_epoch = read_with_meta(path).ok().and_then(|(_, m)| m.get(EPOCH_KEY).cloned());
        if model_epoch.as_deref() != Some(&epoch.to_string()) {
            write_atomic(path, &serialize(&model_entries(model), model_meta(model, Some(epoch)))?)?;
        }
    } else {
        // A state file written before the state held the model: the model file must be its epoch's.
        let sd = crate::interop::read_state_dict(path, &Default::default())?;
        load_state(&sd, model)?;
        let model_epoch = sd.meta.get(EPOCH_KEY).cloned();
        ensure!(
            model_epoch.as_deref() == Some(&epoch.to_string()),
            "{} (epoch {:?}) and {} (epoch {epoch}) are from different epochs",
            path.display(),
            model_epoch,
            sp.display()
        );
    }
    restore_velocities(&st, &sp, &model.store, "", sgd)?;
    if let Some(m) = method {
        load_store(&st, &sp, m, METHOD_PREFIX, |e, _| {
            e.context("(was the checkpoint trained with another method or pair?)")
        })?;
        restore_velocities(&st, &sp, m, METHOD_PREFIX, sgd)?;
    }
    Ok(history)
}

fn restore_velocities(st: &SafeTensors, path: &Path, store: &Store, prefix: &str, sgd: &mut Sgd) -> anyhow::Result<()> {
    for p in &store.params {
        let v = tensor_f32(st, path, &format!("velocity.{prefix}{}", p.name), &p.shape)?;
        sgd.set_velocity(p, &v)?;
    }
    Ok(())
}
