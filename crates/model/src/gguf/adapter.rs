//! A LoRA adapter as llama.cpp's adapter GGUF, laid out as its converter
//! (`convert_lora_to_gguf.py`) lays it out: `general.type = "adapter"`,
//! `adapter.type = "lora"`, `adapter.lora.alpha`, and for each adapted layer
//! `blk.N.<layer>.weight.lora_a` (`A [r, in]`, ggml dims `[in, r]`) and
//! `….lora_b` (`B [out, r]`, ggml dims `[r, out]`), in f32. llama.cpp adds
//! `B (A x) · α / r` to the layer's product, reading `r` from `B`; peft's
//! scaling `s` is therefore written as `α = s · r`, which covers rsLoRA.
//!
//! llama.cpp's adapters cannot carry the rows of `wte` an adapter trains
//! (peft's trainable tokens) when the head is tied to `token_embd`, as
//! GPT-2's is: a `token_embd` pair is applied to the head as well, as a
//! product whose shapes do not fit. Those rows go into the base's GGUF
//! instead ([`write_dir`]): the base resized to the adapter's tokenizer, its
//! added rows the adapter's, which is how peft loads an adapter with
//! trainable tokens.

use std::path::Path;

use burn::prelude::*;
use tp06_artifact::Watch;

use super::export::{About, GgufFormat, general_metadata};
use super::format::{self, TensorInfo, TensorType, Value};
use crate::backend::Cpu;
use crate::gpt2::{Gpt2, Lora};
use crate::names::Layer;
use crate::{ModelDir, ModelError};

/// What an adapter file holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    /// Adapted layers (`lora_a`/`lora_b` pairs).
    pub pairs: usize,
    /// Their rank.
    pub r: usize,
    /// `adapter.lora.alpha`.
    pub alpha: f32,
}

/// One adapted layer: its GGUF weight's name and its adapter.
struct Pair<'a, B: Backend> {
    weight: String,
    lora: &'a Lora<B>,
}

/// Writes `model`'s adapters to the GGUF adapter file `path`, atomically.
/// Err: the model has no adapter, or its adapters do not share one `α`.
pub fn write<B: Backend>(model: &Gpt2<B>, about: &About, path: &Path) -> Result<Written, ModelError> {
    let bad = |reason: String| ModelError::Adapter { path: path.to_path_buf(), reason };
    let pairs: Vec<Pair<'_, B>> = model
        .h
        .iter()
        .enumerate()
        .flat_map(|(i, block)| {
            Layer::ALL.into_iter().filter_map(move |layer| {
                let lora = block.conv(layer)?.lora.as_ref()?;
                Some(Pair { weight: format!("blk.{i}.{}.weight", layer.gguf_name()), lora })
            })
        })
        .collect();
    let Some(first) = pairs.first() else {
        return Err(bad("the model has no LoRA adapter; export it without --adapter".into()));
    };
    let r = first.lora.a.dims()[0];
    let alpha = (first.lora.scaling * r as f64) as f32;
    if let Some(odd) = pairs.iter().find(|p| p.lora.a.dims()[0] != r || p.lora.scaling != first.lora.scaling) {
        let reason = format!("{} has another rank or scaling than {}: one file holds one α", odd.weight, first.weight);
        return Err(bad(reason));
    }
    let mut infos = Vec::with_capacity(2 * pairs.len());
    for pair in &pairs {
        let [r, inputs] = pair.lora.a.dims();
        let [outputs, _] = pair.lora.b.dims();
        let info = |suffix: &str, dims: [usize; 2]| TensorInfo {
            name: format!("{}.{suffix}", pair.weight),
            dims: dims.map(|d| d as u64).to_vec(),
            ty: TensorType::F32,
        };
        infos.push(info("lora_a", [inputs, r]));
        infos.push(info("lora_b", [r, outputs]));
    }
    let mut keys = general_metadata(about);
    keys.extend([
        ("general.type".to_string(), Value::Str("adapter".into())),
        ("adapter.type".to_string(), Value::Str("lora".into())),
        ("adapter.lora.alpha".to_string(), Value::F32(alpha)),
        ("general.file_type".to_string(), Value::U32(GgufFormat::F32.file_type())),
    ]);
    format::write(path, &keys, &infos, |i| {
        let lora = pairs[i / 2].lora;
        // Row-major `A [r, in]` and `B [out, r]` are ggml's `[in, r]` and `[r, out]`.
        let factor = if i % 2 == 0 { lora.a.val() } else { lora.b.val() };
        let values = factor.into_data().convert::<f32>().into_vec::<f32>().expect("converted to f32");
        Ok(values.iter().flat_map(|v| v.to_le_bytes()).collect())
    })?;
    Ok(Written { pairs: pairs.len(), r, alpha })
}

/// Writes the peft adapter directory `adapter` as the GGUF adapter file
/// `adapter_path`, and the model directory `base` it goes on as the GGUF
/// model `base_path` in `format`: resized to the adapter's tokenizer, its
/// added rows the adapter's trainable tokens (see the module docs), its
/// other weights `base`'s. On the CPU.
pub fn write_dir(
    base: &Path,
    adapter: &Path,
    about: &About,
    format: GgufFormat,
    base_path: &Path,
    adapter_path: &Path,
    watch: Watch<'_>,
) -> Result<Written, ModelError> {
    let base_dir = ModelDir::open(base)?;
    let tokenizer = match adapter.join(tp06_vocab::outputs::TOKENIZER).is_file() {
        true => adapter,
        false => base_dir.tokenizer_dir(),
    };
    let tok = tp06_vocab::Tok::from_dir(tokenizer)?;
    let stopped = || ModelError::Stopped { path: adapter_path.to_path_buf() };
    let model = base_dir.load_with_adapter::<Cpu>(adapter, tok.vocab_size(), &Default::default())?;
    if watch.stopped() {
        return Err(stopped());
    }
    let written = write(&model, about, adapter_path)?;
    if watch.stopped() {
        return Err(stopped());
    }
    let vocab = tp06_vocab::gguf::gguf_vocab(&tok, model.vocab_size())?;
    let config = base_dir.config().clone();
    super::export::write(crate::lora::unload(model), &config, about, Some(&vocab), format, base_path)?;
    Ok(written)
}
