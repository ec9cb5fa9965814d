//! HF weights in and out.
//!
//! Import reads `model.safetensors` when present, else `pytorch_model.bin`, or
//! either's sharded form (an index naming each tensor's shard file); keys
//! may carry the `transformer.` prefix; `lm_head.weight` (tied) and the causal
//! mask buffers `attn.bias`/`attn.masked_bias` are ignored; f16/bf16/f64 are
//! converted to f32. Export writes `model.safetensors` (metadata `format=pt`) with
//! the keys `GPT2LMHeadModel.save_pretrained` writes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use burn::module::{ModuleVisitor, Param};
use burn::prelude::*;
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use tp06_artifact::Watch;

use crate::ModelError;
use crate::config::Gpt2Config;
use crate::gpt2::{Gpt2, assemble};
use crate::names;
use crate::pickle::TorchArchive;
use crate::precision::Precision;
use tp06_artifact::shards::ShardIndex;

/// The weight file names, in order of preference.
pub const SAFETENSORS: &str = "model.safetensors";
/// The PyTorch pickle checkpoint (all the asi/gpt-fr-cased repos have on `main`).
pub const PYTORCH_BIN: &str = "pytorch_model.bin";
/// A sharded safetensors checkpoint's index (`model-0000i-of-0000n.safetensors`).
pub const SAFETENSORS_INDEX: &str = "model.safetensors.index.json";
/// A sharded PyTorch checkpoint's index (`pytorch_model-0000i-of-0000n.bin`).
pub const PYTORCH_BIN_INDEX: &str = "pytorch_model.bin.index.json";
/// The weight files of a model directory, in transformers' order of preference.
pub const WEIGHT_FILES: &[&str] = &[SAFETENSORS, SAFETENSORS_INDEX, PYTORCH_BIN, PYTORCH_BIN_INDEX];

/// What an import applied, ignored and did not expect.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    /// The file read.
    pub file: String,
    /// Parameters set from the file.
    pub applied: usize,
    /// Keys ignored on purpose (tied head, mask buffers).
    pub ignored: Vec<String>,
    /// Keys this model has no use for.
    pub unexpected: Vec<String>,
    /// Stored element types, e.g. `{"F16": 148}`.
    pub dtypes: BTreeMap<String, usize>,
}

/// One checkpoint file, readable tensor by tensor. A safetensors file's
/// header is read from a memory map (which validates it against the file's
/// length); each tensor's bytes are read from the file into the values
/// themselves, so that the mapped pages of the data are never touched and a
/// multi-GB file is not resident twice (as the map's pages and as the
/// model: 7.4 GB at the peak for the 942 M-parameter model, 4.0 GB now).
enum WeightFile {
    Safetensors {
        file: std::fs::File,
        data_start: u64,
        tensors: BTreeMap<String, safetensors::tensor::TensorInfo>,
    },
    Torch(Box<TorchArchive>),
    /// A sharded checkpoint: its shards (with their file names) and which holds each tensor.
    Sharded {
        shards: Vec<(String, WeightFile)>,
        shard_of: BTreeMap<String, usize>,
    },
}

struct Entry {
    key: String,
    shape: Vec<usize>,
    dtype: String,
}

impl WeightFile {
    fn open(path: &Path) -> Result<(Self, Vec<Entry>), ModelError> {
        let bad = |reason: String| ModelError::Weights { path: path.to_path_buf(), reason };
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if ShardIndex::is_index(name) {
            return Self::open_sharded(path);
        }
        if name == SAFETENSORS || path.extension().is_some_and(|e| e == "safetensors") {
            let file = std::fs::File::open(path).map_err(|e| bad(format!("cannot read: {e}")))?;
            // SAFETY: the map is read-only and lives as long as this value; the
            // file is an artifact or model file that nothing writes in place
            // (every artifact is written to a temporary sibling and renamed).
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| bad(format!("cannot read: {e}")))?;
            let (header, metadata) = SafeTensors::read_metadata(&map)
                .map_err(|e| bad(format!("not a valid safetensors file ({e}); truncated or corrupt?")))?;
            let tensors: BTreeMap<String, safetensors::tensor::TensorInfo> =
                metadata.tensors().into_iter().map(|(key, info)| (key, info.clone())).collect();
            let entries = tensors
                .iter()
                .map(|(key, info)| Entry {
                    key: key.clone(),
                    shape: info.shape.clone(),
                    dtype: format!("{:?}", info.dtype),
                })
                .collect();
            Ok((WeightFile::Safetensors { file, data_start: 8 + header as u64, tensors }, entries))
        } else {
            let archive = TorchArchive::open(path).map_err(bad)?;
            let entries = archive
                .tensors()
                .iter()
                .map(|(key, t)| Entry { key: key.clone(), shape: t.shape.clone(), dtype: format!("{:?}", t.dtype) })
                .collect();
            Ok((WeightFile::Torch(Box::new(archive)), entries))
        }
    }

    /// Opens every shard an index names. Each tensor the index maps must be
    /// in its shard; a shard's tensors the index does not list are kept, as
    /// transformers loads whole shards.
    fn open_sharded(path: &Path) -> Result<(Self, Vec<Entry>), ModelError> {
        let bad = |reason: String| ModelError::Weights { path: path.to_path_buf(), reason };
        let index = ShardIndex::read(path).map_err(bad)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut shards: Vec<(String, WeightFile)> = Vec::new();
        let (mut shard_of, mut all) = (BTreeMap::new(), Vec::new());
        for name in index.files() {
            let shard = dir.join(name);
            if ShardIndex::is_index(name) {
                return Err(bad(format!("its shard `{name}` is another index; shards are weight files")));
            }
            if !shard.is_file() {
                return Err(bad(format!(
                    "its shard `{name}` is missing; a sharded checkpoint needs every shard its index names (download them all)"
                )));
            }
            let (file, entries) = Self::open(&shard)?;
            for entry in entries {
                if let Some(other) = shard_of.insert(entry.key.clone(), shards.len()) {
                    let first = &shards[other].0;
                    return Err(bad(format!("`{}` is in two shards, `{first}` and `{name}`", entry.key)));
                }
                all.push(entry);
            }
            shards.push((name.to_string(), file));
        }
        for (tensor, file) in &index.weight_map {
            if shard_of.get(tensor).map(|&i| shards[i].0.as_str()) != Some(file.as_str()) {
                return Err(bad(format!("`weight_map.{tensor}` says `{file}`, which does not hold it")));
            }
        }
        Ok((WeightFile::Sharded { shards, shard_of }, all))
    }

    fn read_f32(&mut self, key: &str) -> Result<Vec<f32>, String> {
        match self {
            WeightFile::Sharded { shards, shard_of } => {
                let (name, shard) = &mut shards[*shard_of.get(key).ok_or_else(|| format!("no tensor `{key}`"))?];
                shard.read_f32(key).map_err(|reason| format!("shard `{name}`: {reason}"))
            }
            WeightFile::Safetensors { file, data_start, tensors } => {
                use safetensors::Dtype;
                use std::io::{Read, Seek, SeekFrom};
                let info = tensors.get(key).ok_or_else(|| format!("no tensor `{key}`"))?;
                let (start, end) = info.data_offsets;
                let at = *data_start + start as u64;
                let cannot = |e: std::io::Error| format!("cannot read `{key}`: {e} (truncated file?)");
                if info.dtype == Dtype::F32 {
                    // Straight into the values: one copy of the tensor, never two.
                    let mut values = vec![0.0f32; (end - start) / 4];
                    // SAFETY: the slice covers exactly the values' bytes; every bit
                    // pattern is an f32.
                    let bytes =
                        unsafe { std::slice::from_raw_parts_mut(values.as_mut_ptr().cast::<u8>(), end - start) };
                    file.seek(SeekFrom::Start(at)).and_then(|_| file.read_exact(bytes)).map_err(cannot)?;
                    if cfg!(target_endian = "big") {
                        values.iter_mut().for_each(|v| *v = f32::from_bits(u32::from_le(v.to_bits())));
                    }
                    return Ok(values);
                }
                let mut data = vec![0u8; end - start];
                file.seek(SeekFrom::Start(at)).and_then(|_| file.read_exact(&mut data)).map_err(cannot)?;
                let chunks = |n: usize| data.chunks_exact(n);
                Ok(match info.dtype {
                    Dtype::F32 => unreachable!("read above"),
                    Dtype::F16 => chunks(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
                    Dtype::BF16 => chunks(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
                    Dtype::F64 => {
                        chunks(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32).collect()
                    }
                    other => return Err(format!("`{key}` is {other:?}, not floating point")),
                })
            }
            WeightFile::Torch(archive) => archive.read_f32(key),
        }
    }
}

/// The weight file of a model directory, the first of [`WEIGHT_FILES`] it
/// has: `model.safetensors`, else `pytorch_model.bin`, or a sharded
/// checkpoint's index (which [`load`] reads as one file).
pub fn weight_file(dir: &Path) -> Result<PathBuf, ModelError> {
    WEIGHT_FILES
        .iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| ModelError::NoWeights { dir: dir.to_path_buf() })
}

fn is_ignored(key: &str) -> bool {
    key == names::LM_HEAD || key.ends_with(".attn.bias") || key.ends_with(".attn.masked_bias")
}

/// Reads a GPT-2 from `path` (a safetensors or PyTorch file) for `config`.
pub fn load<B: Backend>(
    path: &Path,
    config: &Gpt2Config,
    device: &B::Device,
) -> Result<(Gpt2<B>, LoadReport), ModelError> {
    load_watched(path, config, device, Watch::none())
}

/// [`load`], its tensors shown by `watch` as the task `load`, stopped between
/// two tensors when `watch` says so ([`ModelError::Stopped`]).
pub fn load_watched<B: Backend>(
    path: &Path,
    config: &Gpt2Config,
    device: &B::Device,
    watch: Watch<'_>,
) -> Result<(Gpt2<B>, LoadReport), ModelError> {
    load_in(path, config, Precision::F32, device, watch)
}

/// [`load_watched`], each weight stored in `precision` as soon as it is
/// read (a model is never whole in f32 on its way to bf16 or int8).
pub fn load_in<B: Backend>(
    path: &Path,
    config: &Gpt2Config,
    precision: Precision,
    device: &B::Device,
    watch: Watch<'_>,
) -> Result<(Gpt2<B>, LoadReport), ModelError> {
    let (mut file, entries) = WeightFile::open(path)?;
    let mut report = LoadReport { file: path.display().to_string(), ..Default::default() };
    // Our name (without `transformer.`) → stored key.
    let mut by_name: BTreeMap<String, &Entry> = BTreeMap::new();
    for entry in &entries {
        *report.dtypes.entry(entry.dtype.clone()).or_default() += 1;
        let name = names::our_name(&entry.key);
        if is_ignored(name) {
            report.ignored.push(entry.key.clone());
        } else {
            by_name.insert(name.to_string(), entry);
        }
    }
    let mut task = watch.begin("load", by_name.len() as u64);
    let mut used = BTreeSet::new();
    let mut failure: Option<ModelError> = None;
    let mut read = |name: &str, shape: &[usize]| -> Option<Vec<f32>> {
        if failure.is_some() {
            return None;
        }
        let bad = |reason: String| ModelError::Weights { path: path.to_path_buf(), reason };
        let Some(entry) = by_name.get(name) else {
            failure = Some(ModelError::MissingTensor { path: path.to_path_buf(), name: name.to_string() });
            return None;
        };
        if entry.shape != shape {
            failure = Some(bad(format!(
                "`{}` has shape {:?} but config.json implies {:?}; the weights and config.json disagree (vocab_size, n_embd, n_inner?)",
                entry.key, entry.shape, shape
            )));
            return None;
        }
        if watch.stops_at("tensor") {
            failure = Some(ModelError::Stopped { path: path.to_path_buf() });
            return None;
        }
        used.insert(name.to_string());
        task.set_position(used.len() as u64);
        match file.read_f32(&entry.key) {
            Ok(values) if values.len() == shape.iter().product::<usize>() => Some(values),
            Ok(values) => {
                failure = Some(bad(format!(
                    "`{}` holds {} values, expected {}",
                    entry.key,
                    values.len(),
                    shape.iter().product::<usize>()
                )));
                None
            }
            Err(reason) => {
                failure = Some(bad(reason));
                None
            }
        }
    };
    let model = assemble::<B>(
        config,
        |entry| read(&entry.name, &entry.shape).unwrap_or_else(|| vec![0.0; entry.len()]),
        precision,
        device,
    );
    task.finish();
    if let Some(err) = failure {
        return Err(err);
    }
    report.applied = used.len();
    report.unexpected = by_name.keys().filter(|k| !used.contains(*k)).map(|k| k.to_string()).collect();
    if !report.unexpected.is_empty() {
        tracing::warn!("{}: unexpected tensors ignored: {}", path.display(), report.unexpected.join(", "));
    }
    Ok((model, report))
}

/// Every parameter with its HF name (`wte.weight`, `h.0.attn.c_attn.weight` …),
/// shape, and values flattened (cheap handles, read on demand).
pub struct NamedParams<B: Backend> {
    path: Vec<String>,
    /// `(name, shape, flattened tensor)` in module order.
    pub params: Vec<(String, Vec<usize>, Tensor<B, 1>)>,
}

impl<B: Backend> NamedParams<B> {
    /// Collects the parameters of `model`.
    pub fn of(model: &Gpt2<B>) -> Self {
        let mut visitor = Self { path: Vec::new(), params: Vec::new() };
        model.visit(&mut visitor);
        visitor
    }

    /// The values of one parameter.
    pub fn values(tensor: &Tensor<B, 1>) -> Vec<f32> {
        tensor.clone().into_data().convert::<f32>().into_vec::<f32>().expect("converted to f32")
    }
}

impl<B: Backend> ModuleVisitor<B> for NamedParams<B> {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let tensor = param.val();
        let shape = tensor.dims().to_vec();
        let n = shape.iter().product::<usize>();
        self.params.push((self.path.join("."), shape, tensor.reshape([n])));
    }
}

/// Writes `model` as `model.safetensors` with HF's keys (`transformer.…`, no
/// `lm_head.weight`) and metadata `format=pt`, atomically; its adapters, if
/// any, are not merged nor written (a checkpoint writes them beside).
pub fn save_safetensors<B: Backend>(model: &Gpt2<B>, path: &Path) -> Result<(), ModelError> {
    write_tensors(path, hf_tensors(model), Watch::none())
}

/// `model`'s parameters under HF's keys; its adapters, if any, left out
/// (see [`crate::lora::write_adapter`]).
pub(crate) fn hf_tensors<B: Backend>(model: &Gpt2<B>) -> Vec<(String, Vec<usize>, Tensor<B, 1>)> {
    NamedParams::of(model)
        .params
        .into_iter()
        .filter(|(name, _, _)| !names::is_lora(name))
        .map(|(name, shape, tensor)| (names::hf_key(&name), shape, tensor))
        .collect()
}

/// Writes f32 tensors to a safetensors file (metadata `format=pt`), sorted by
/// name, atomically and one tensor at a time, so a large model is never copied
/// whole on the host. The tensors are shown by `watch` as the task `write`;
/// when it says stop, the writing stops between two tensors
/// ([`ModelError::Stopped`]) and nothing is left at `path` (pass
/// [`Watch::unstoppable`] for a file that must be written whole once begun).
pub fn write_tensors<B: Backend>(
    path: &Path,
    tensors: Vec<(String, Vec<usize>, Tensor<B, 1>)>,
    watch: Watch<'_>,
) -> Result<(), ModelError> {
    let made = tensors
        .into_iter()
        .map(|(name, shape, t)| -> (String, Vec<usize>, Make<'_, B>) { (name, shape, Box::new(move || t.clone())) });
    write_made(path, made.collect(), watch)
}

/// A tensor to write, made (flattened) when its turn comes.
pub(crate) type Make<'a, B> = Box<dyn Fn() -> Tensor<B, 1> + 'a>;

/// [`write_tensors`] of tensors made one at a time as they are written.
pub(crate) fn write_made<B: Backend>(
    path: &Path,
    mut tensors: Vec<(String, Vec<usize>, Make<'_, B>)>,
    watch: Watch<'_>,
) -> Result<(), ModelError> {
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut offset = 0usize;
    for (name, shape, _) in &tensors {
        let bytes = shape.iter().product::<usize>() * 4;
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let mut header = serde_json::to_vec(&serde_json::Value::Object(header)).expect("a JSON map serialises");
    // The data starts after the 8-byte length and the header: pad the header to a multiple of 8.
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let io = |e: std::io::Error| tp06_artifact::fs::FsError::new("cannot write", path, e);
    tp06_artifact::fs::write_atomic_with(path, |writer| -> Result<(), ModelError> {
        use std::io::Write;
        writer.write_all(&(header.len() as u64).to_le_bytes()).map_err(io)?;
        writer.write_all(&header).map_err(io)?;
        let mut task = watch.begin("write", tensors.len() as u64);
        for (done, (_, _, tensor)) in tensors.iter().enumerate() {
            if watch.stops_at("tensor") {
                return Err(ModelError::Stopped { path: path.to_path_buf() });
            }
            let values = NamedParams::<B>::values(&tensor());
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            writer.write_all(&bytes).map_err(io)?;
            task.set_position(done as u64 + 1);
        }
        task.finish();
        Ok(())
    })
}

/// Tensors by name: shape and values.
pub type NamedTensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// Reads one tensor of a weight file (safetensors or PyTorch), the first of
/// `keys` it holds, as f32 (f16, bf16 and f64 widened or narrowed): `(key,
/// shape, values)`. Of a safetensors file only the header and that tensor's
/// bytes are read.
pub fn read_tensor(path: &Path, keys: &[&str]) -> Result<(String, Vec<usize>, Vec<f32>), ModelError> {
    let (mut file, entries) = WeightFile::open(path)?;
    let bad = |reason: String| ModelError::Weights { path: path.to_path_buf(), reason };
    let entry = keys
        .iter()
        .find_map(|key| entries.iter().find(|e| e.key == *key))
        .ok_or_else(|| bad(format!("no tensor `{}`", keys.join("` or `"))))?;
    let values = file.read_f32(&entry.key).map_err(bad)?;
    if values.len() != entry.shape.iter().product::<usize>() {
        return Err(bad(format!("`{}` does not hold its shape {:?}", entry.key, entry.shape)));
    }
    Ok((entry.key.clone(), entry.shape.clone(), values))
}

/// Reads our parameter `name` (`wte.weight`) of an HF weight file, under
/// either key HF files use for it ([`names::hf_keys`]): `(key, shape, values)`.
pub fn read_param(path: &Path, name: &str) -> Result<(String, Vec<usize>, Vec<f32>), ModelError> {
    let keys = names::hf_keys(name);
    read_tensor(path, &[keys[0].as_str(), keys[1].as_str()])
}

/// Reads every floating-point tensor of a weight file (a checkpoint's
/// safetensors files written by [`write_tensors`], or an HF model's weights),
/// as f32; integer and boolean buffers are left out.
pub fn read_tensors(path: &Path) -> Result<NamedTensors, ModelError> {
    let (mut file, entries) = WeightFile::open(path)?;
    let mut out = BTreeMap::new();
    for entry in entries.into_iter().filter(|e| matches!(e.dtype.as_str(), "F32" | "F16" | "BF16" | "F64")) {
        let values =
            file.read_f32(&entry.key).map_err(|reason| ModelError::Weights { path: path.to_path_buf(), reason })?;
        out.insert(entry.key, (entry.shape, values));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;

    /// A file of tensors that is not `model.safetensors` (a checkpoint's
    /// `optimizer.safetensors`) reads back as written, its header padded so
    /// the data starts 8-byte aligned, as safetensors writes it.
    #[test]
    fn tensors_round_trip_through_any_safetensors_name_with_an_aligned_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("optimizer.safetensors");
        let device = Default::default();
        let a = Tensor::<Cpu, 1>::from_floats([1.0, -2.5, 3.25], &device);
        let b = Tensor::<Cpu, 1>::from_floats([0.5; 6], &device);
        write_tensors(&path, vec![("m.a".into(), vec![3], a), ("m.b".into(), vec![2, 3], b)], Watch::none()).unwrap();
        let read = read_tensors(&path).unwrap();
        assert_eq!(read["m.a"], (vec![3], vec![1.0, -2.5, 3.25]));
        assert_eq!(read["m.b"], (vec![2, 3], vec![0.5; 6]));
        let bytes = std::fs::read(&path).unwrap();
        let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert_eq!((8 + header) % 8, 0, "data starts 8-byte aligned");
        // One tensor: the first of the keys the file holds.
        let (key, shape, values) = read_tensor(&path, &["m.c", "m.b", "m.a"]).unwrap();
        assert_eq!((key.as_str(), shape, values), ("m.b", vec![2, 3], vec![0.5; 6]));
        let absent = read_tensor(&path, &["m.c"]).unwrap_err().to_string();
        assert!(absent.contains("optimizer.safetensors") && absent.contains("no tensor `m.c`"), "{absent}");
    }

    /// Sets the stop flag once a task reaches `at` units, and keeps the last position.
    struct StopAt {
        at: u64,
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
        seen: std::sync::Arc<std::sync::atomic::AtomicU64>,
    }

    impl tp06_artifact::Progress for StopAt {
        fn begin(&self, _name: &str, _total: u64) -> Box<dyn tp06_artifact::ProgressTask> {
            Box::new(StopAt { at: self.at, stop: self.stop.clone(), seen: self.seen.clone() })
        }
    }

    impl tp06_artifact::ProgressTask for StopAt {
        fn set_position(&mut self, position: u64) {
            self.seen.store(position, std::sync::atomic::Ordering::SeqCst);
            if position >= self.at {
                self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        fn set_message(&mut self, _message: String) {}
        fn finish(&mut self) {}
    }

    fn stop_at(at: u64) -> StopAt {
        StopAt { at, stop: Default::default(), seen: Default::default() }
    }

    /// Asked to stop, loading ends before the next tensor and writing leaves
    /// no file; each tensor counts as one unit of progress.
    #[test]
    fn loading_and_writing_stop_between_two_tensors() {
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/model/tiny-bin");
        let config = crate::HfConfig::from_file(&fixtures.join("config.json")).unwrap().resolve().unwrap();
        let bin = fixtures.join(PYTORCH_BIN);
        let progress = stop_at(3);
        let watch = Watch { progress: &progress, stop: &progress.stop };
        let err = load_watched::<Cpu>(&bin, &config, &Default::default(), watch).expect_err("stopped");
        assert!(matches!(err, ModelError::Stopped { .. }), "{err}");
        assert_eq!(progress.seen.load(std::sync::atomic::Ordering::SeqCst), 3, "three tensors read, then the stop");

        let (model, _) = load::<Cpu>(&bin, &config, &Default::default()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let progress = stop_at(1);
        let watch = Watch { progress: &progress, stop: &progress.stop };
        let err = crate::ModelDir::write(&model, dir.path(), &[], watch).unwrap_err();
        assert!(matches!(err, ModelError::Stopped { .. }), "{err}");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert!(left.is_empty(), "nothing half-written: {left:?}");
        // Unstoppable, the same watch writes the file whole.
        crate::ModelDir::write(&model, dir.path(), &[], watch.unstoppable()).unwrap();
        assert_eq!(read_tensors(&dir.path().join(SAFETENSORS)).unwrap().len(), NamedParams::of(&model).params.len());
    }

    /// A PyTorch file's tensor reads as the same model's safetensors one.
    #[test]
    fn one_tensor_reads_alike_from_pytorch_and_safetensors_files() {
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/model");
        let bin = fixtures.join("tiny-bin/pytorch_model.bin");
        let (key, shape, values) = read_param(&bin, names::WTE).unwrap();
        let config = crate::HfConfig::from_file(&fixtures.join("tiny-bin/config.json")).unwrap().resolve().unwrap();
        assert_eq!(shape, [config.vocab_size, config.n_embd], "{key}");
        let (model, _) = load::<Cpu>(&bin, &config, &Default::default()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let st = dir.path().join(SAFETENSORS);
        save_safetensors(&model, &st).unwrap();
        let (st_key, st_shape, st_values) = read_param(&st, names::WTE).unwrap();
        assert_eq!(st_key, names::hf_key(names::WTE), "written under HF's key");
        assert_eq!((st_shape, st_values), (shape, values));
    }
}
