//! A model as one GGUF file for llama.cpp's `gpt2` architecture, laid out as
//! llama.cpp's converter (`convert_hf_to_gguf.py`, `GPT2Model`) lays it out:
//! its tensor names ([`crate::names::Entry::gguf`]), the `Conv1D` weights
//! transposed to `[out, in]` (each output's weights contiguous), no
//! `output.weight` (llama.cpp ties the head to `token_embd` when it is
//! absent), and the architecture's metadata.
//!
//! With a tokenizer, its `tokenizer.ggml.*` metadata
//! ([`tp06_vocab::gguf`]): llama.cpp then tokenizes and decodes as we do.
//!
//! The matrices are stored in the export's [`GgufFormat`]; the vectors (norms,
//! biases) and `position_embd` stay f32, as the converter keeps them. A matrix
//! whose rows are not a multiple of 32 values cannot be Q8_0 and is written
//! in f16, as the converter falls back.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use burn::prelude::*;
use serde::{Deserialize, Serialize};
use tp06_artifact::Watch;

use super::format::{self, TensorInfo, TensorType, Value};
use tp06_vocab::gguf::GgufVocab;

use crate::backend::Cpu;
use crate::names::{self, Kind};
use crate::q8::{Q8Matrix, QK8_0};
use crate::weights::NamedParams;
use crate::{Gpt2, Gpt2Config, ModelDir, ModelError, Precision};

/// How a GGUF export stores its matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GgufFormat {
    /// Every tensor in f32.
    #[default]
    F32,
    /// The matrices in f16.
    F16,
    /// The matrices in llama.cpp's Q8_0 blocks ([`crate::q8`]).
    Q8_0,
}

impl GgufFormat {
    /// As written on the command line and in file names.
    pub fn name(self) -> &'static str {
        match self {
            GgufFormat::F32 => "f32",
            GgufFormat::F16 => "f16",
            GgufFormat::Q8_0 => "q8_0",
        }
    }

    /// llama.cpp's `general.file_type` (`enum llama_ftype`).
    pub fn file_type(self) -> u32 {
        match self {
            GgufFormat::F32 => 0,
            GgufFormat::F16 => 1,
            GgufFormat::Q8_0 => 7,
        }
    }

    /// The type of a matrix whose rows hold `row` values.
    fn matrix_type(self, row: usize) -> TensorType {
        match self {
            GgufFormat::F32 => TensorType::F32,
            GgufFormat::Q8_0 if row.is_multiple_of(QK8_0) => TensorType::Q8_0,
            GgufFormat::F16 | GgufFormat::Q8_0 => TensorType::F16,
        }
    }
}

impl fmt::Display for GgufFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for GgufFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "f32" => Ok(GgufFormat::F32),
            "f16" => Ok(GgufFormat::F16),
            "q8_0" => Ok(GgufFormat::Q8_0),
            other => Err(format!("unknown GGUF format `{other}`; the formats are f32, f16 and q8_0")),
        }
    }
}

/// What the file says about the model (`general.*`).
#[derive(Debug, Clone, Default)]
pub struct About {
    /// `general.name`.
    pub name: String,
    /// `general.source.url`: where the model was read from.
    pub source: Option<String>,
    /// `general.base_model.0.name`: the model it was fine-tuned from.
    pub base: Option<String>,
}

/// One tensor of the file: its entry, its GGUF info, its values' layout.
struct Planned {
    entry: names::Entry,
    info: TensorInfo,
}

/// The tensors of a model of shape `config` in `format`, in the table's order.
fn plan(config: &Gpt2Config, format: GgufFormat) -> Vec<Planned> {
    names::table(config)
        .into_iter()
        .map(|entry| {
            // ggml's dims: the contiguous one first. A `Conv1D` weight `[in, out]`
            // is stored `[out, in]`, so its dims are `[in, out]`.
            let (dims, ty) = match (entry.kind, &entry.shape[..]) {
                (Kind::Weight { .. }, &[inputs, outputs]) => (vec![inputs, outputs], format.matrix_type(inputs)),
                (_, &[rows, cols]) if entry.name == names::WPE => (vec![cols, rows], TensorType::F32),
                (_, &[rows, cols]) => (vec![cols, rows], format.matrix_type(cols)),
                (_, &[n]) => (vec![n], TensorType::F32),
                _ => unreachable!("the table's tensors are vectors and matrices"),
            };
            let dims = dims.into_iter().map(|d| d as u64).collect();
            let info = TensorInfo { name: entry.gguf.clone(), dims, ty };
            Planned { entry, info }
        })
        .collect()
}

/// The tokenizer's metadata, as llama.cpp's GPT-2 vocabulary reads it.
fn tokenizer_metadata(vocab: &GgufVocab) -> Vec<(String, Value)> {
    let mut out = vec![
        ("tokenizer.ggml.model".to_string(), Value::Str("gpt2".into())),
        ("tokenizer.ggml.pre".to_string(), Value::Str(tp06_vocab::gguf::PRE.into())),
        ("tokenizer.ggml.tokens".to_string(), Value::Strs(vocab.tokens.clone())),
        ("tokenizer.ggml.token_type".to_string(), Value::I32s(vocab.types.iter().map(|t| *t as i32).collect())),
        ("tokenizer.ggml.merges".to_string(), Value::Strs(vocab.merges.clone())),
    ];
    let ids = [("bos", vocab.bos), ("eos", vocab.eos), ("unknown", vocab.unk), ("padding", vocab.pad)];
    for (role, id) in ids {
        if let Some(id) = id {
            out.push((format!("tokenizer.ggml.{role}_token_id"), Value::U32(id)));
        }
    }
    // GPT-2 adds nothing around a text (transformers' GPT2Tokenizer).
    out.push(("tokenizer.ggml.add_bos_token".to_string(), Value::Bool(false)));
    out.push(("tokenizer.ggml.add_eos_token".to_string(), Value::Bool(false)));
    out
}

/// `general.*`: the architecture and what the file says about its model.
pub(super) fn general_metadata(about: &About) -> Vec<(String, Value)> {
    let mut out = vec![
        ("general.architecture".to_string(), Value::Str("gpt2".into())),
        ("general.name".to_string(), Value::Str(about.name.clone())),
    ];
    if let Some(source) = &about.source {
        out.push(("general.source.url".into(), Value::Str(source.clone())));
    }
    if let Some(base) = &about.base {
        out.push(("general.base_model.count".into(), Value::U32(1)));
        out.push(("general.base_model.0.name".into(), Value::Str(base.clone())));
    }
    out
}

/// The architecture's metadata, as the converter's `GPT2Model` writes it.
fn metadata(config: &Gpt2Config, about: &About, format: GgufFormat) -> Vec<(String, Value)> {
    let mut out = general_metadata(about);
    let count = |n: usize| Value::U32(n as u32);
    out.extend([
        ("gpt2.block_count".to_string(), count(config.n_layer)),
        ("gpt2.context_length".to_string(), count(config.n_positions)),
        ("gpt2.embedding_length".to_string(), count(config.n_embd)),
        ("gpt2.feed_forward_length".to_string(), count(config.n_inner)),
        ("gpt2.attention.head_count".to_string(), count(config.n_head)),
        ("gpt2.attention.layer_norm_epsilon".to_string(), Value::F32(config.layer_norm_epsilon as f32)),
        ("general.file_type".to_string(), Value::U32(format.file_type())),
    ]);
    out
}

/// Writes `model` (of shape `config`; any precision, its adapters merged
/// first) to the GGUF file `path` in `format`, with `vocab`'s tokenizer
/// when given, atomically, one tensor converted at a time.
pub fn write<B: Backend>(
    model: Gpt2<B>,
    config: &Gpt2Config,
    about: &About,
    vocab: Option<&GgufVocab>,
    format: GgufFormat,
    path: &Path,
) -> Result<(), ModelError> {
    if let Some(vocab) = vocab
        && vocab.tokens.len() != model.vocab_size()
    {
        let reason =
            format!("the tokenizer has {} tokens for {} embedding rows", vocab.tokens.len(), model.vocab_size());
        return Err(ModelError::Weights { path: path.to_path_buf(), reason });
    }
    let model = crate::lora::merge(model.with_precision(Precision::F32));
    let params = NamedParams::of(&model);
    let by_name: std::collections::BTreeMap<&str, &Tensor<B, 1>> =
        params.params.iter().map(|(name, _, t)| (name.as_str(), t)).collect();
    let planned = plan(config, format);
    let fell_back: Vec<&str> = planned
        .iter()
        .filter(|p| format == GgufFormat::Q8_0 && p.info.ty == TensorType::F16)
        .map(|p| p.info.name.as_str())
        .collect();
    if !fell_back.is_empty() {
        tracing::info!("rows not a multiple of 32 values, written in f16 instead of Q8_0: {}", fell_back.join(", "));
    }
    let infos: Vec<TensorInfo> = planned.iter().map(|p| p.info.clone()).collect();
    let mut keys = metadata(config, about, format);
    keys.extend(vocab.map(tokenizer_metadata).unwrap_or_default());
    format::write(path, &keys, &infos, |i| {
        let Planned { entry, info } = &planned[i];
        let tensor = by_name
            .get(entry.name.as_str())
            .ok_or_else(|| ModelError::MissingTensor { path: path.to_path_buf(), name: entry.name.clone() })?;
        let values = NamedParams::<B>::values(tensor);
        Ok(bytes(&values, entry, info.ty))
    })
}

/// Writes the model directory `dir` (its adapter merged, if it has one) to
/// the GGUF file `path` in `format` with its tokenizer, on the CPU; returns
/// the number of tokens written.
pub fn write_dir(
    dir: &Path,
    about: &About,
    format: GgufFormat,
    path: &Path,
    watch: Watch<'_>,
) -> Result<usize, ModelError> {
    let model_dir = ModelDir::open(dir)?;
    let tok = tp06_vocab::Tok::from_dir(model_dir.tokenizer_dir())?;
    let (model, _) = model_dir.load::<Cpu>(&Default::default(), watch)?;
    let vocab = tp06_vocab::gguf::gguf_vocab(&tok, model.vocab_size())?;
    write(model, model_dir.config(), about, Some(&vocab), format, path)?;
    Ok(vocab.tokens.len())
}

/// The bytes of a tensor of `entry` holding `values` (row-major, HF's
/// layout) as stored in the file: a `Conv1D` weight `[in, out]` transposed
/// to `[out, in]`.
fn bytes(values: &[f32], entry: &names::Entry, ty: TensorType) -> Vec<u8> {
    let transposed;
    let (values, rows) = match (entry.kind, &entry.shape[..]) {
        (Kind::Weight { .. }, &[inputs, outputs]) => {
            transposed = crate::q8::transpose(values, inputs, outputs);
            (&transposed[..], outputs)
        }
        (_, shape) => (values, shape[0]),
    };
    match ty {
        TensorType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        TensorType::F16 => values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect(),
        TensorType::Bf16 => values.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect(),
        TensorType::Q8_0 => Q8Matrix::quantize(values, rows, values.len() / rows).to_bytes(),
    }
}
