//! The peft adapter directory, written and read: `adapter_config.json`
//! (peft's `LoraConfig`) and `adapter_model.safetensors` under peft's keys
//! ([`names::peft_key`]), `wte`'s added rows as peft's trainable tokens.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::prelude::*;
use serde_json::{Value, json};
use tp06_artifact::Watch;

use super::config::{Blocks, LoraConfig, Target, scaling};
use crate::ModelError;
use crate::gpt2::{Gpt2, Lora};
use crate::kernels::Dropout;
use crate::names::{self, Factor, Layer};
use crate::weights;

/// The adapter's configuration file, as peft names it.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// The adapter's weights, as peft names them.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

/// What an adapter directory says besides its tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterInfo {
    /// The base model it goes on (peft's `base_model_name_or_path`).
    pub base: String,
    /// `α`.
    pub alpha: f64,
    /// `r`.
    pub r: usize,
    /// Dropout on the adapters' inputs.
    pub dropout: f64,
    /// rsLoRA scaling.
    pub rslora: bool,
    /// The rows of `wte` the adapter carries (peft's trainable tokens).
    pub token_rows: Vec<usize>,
}

/// Writes `model`'s adapters as a peft adapter directory `dir`: `config`
/// as peft's `LoraConfig` for the base `base`, the adapters and (when
/// `token_rows` is not empty) those rows of `wte` as trainable tokens, and
/// `files` (the tokenizer's) copied beside them. Returns the names written.
pub fn write_adapter<B: Backend>(
    model: &Gpt2<B>,
    config: &LoraConfig,
    base: &str,
    token_rows: std::ops::Range<usize>,
    dir: &Path,
    files: &[PathBuf],
) -> Result<Vec<String>, ModelError> {
    tp06_artifact::fs::create_dir_all(dir)?;
    write_adapter_weights(model, token_rows.clone(), &dir.join(ADAPTER_WEIGHTS))?;
    let n_layer = model.h.len();
    let layers = match config.blocks {
        Blocks::All => Value::Null,
        blocks => json!(blocks.resolve(n_layer).collect::<Vec<_>>()),
    };
    let tokens = match token_rows.is_empty() {
        true => Value::Null,
        false => json!({ names::WTE_MODULE: token_rows.collect::<Vec<_>>() }),
    };
    let peft = peft_config(config, base, layers, tokens);
    let text = serde_json::to_string_pretty(&peft).expect("JSON serialises") + "\n";
    tp06_artifact::fs::write_atomic(&dir.join(ADAPTER_CONFIG), text.as_bytes())?;
    let mut names = vec![ADAPTER_CONFIG.to_string(), ADAPTER_WEIGHTS.to_string()];
    names.extend(copy_files(files, dir)?);
    Ok(names)
}

/// Writes `model`'s adapters as a peft adapter directory `dir` configured as
/// the adapter directory `like` (the model stage's): its configuration
/// copied, the adapters' and the trainable tokens' current values written,
/// and `files` copied beside them. Returns the names written.
pub fn write_adapter_like<B: Backend>(
    model: &Gpt2<B>,
    like: &Path,
    dir: &Path,
    files: &[PathBuf],
) -> Result<Vec<String>, ModelError> {
    let info = read_adapter_info(like)?;
    tp06_artifact::fs::create_dir_all(dir)?;
    let rows = match (info.token_rows.first(), info.token_rows.last()) {
        (Some(&first), Some(&last)) if info.token_rows.len() == last + 1 - first => first..last + 1,
        (None, _) => 0..0,
        _ => {
            let reason = "trainable_token_indices are not consecutive rows".to_string();
            return Err(ModelError::Adapter { path: like.join(ADAPTER_CONFIG), reason });
        }
    };
    write_adapter_weights(model, rows, &dir.join(ADAPTER_WEIGHTS))?;
    tp06_artifact::fs::copy_atomic(&like.join(ADAPTER_CONFIG), &dir.join(ADAPTER_CONFIG))?;
    let mut names = vec![ADAPTER_CONFIG.to_string(), ADAPTER_WEIGHTS.to_string()];
    names.extend(copy_files(files, dir)?);
    Ok(names)
}

/// Copies `files` into `dir` under their own names; returns the names.
fn copy_files(files: &[PathBuf], dir: &Path) -> Result<Vec<String>, ModelError> {
    let mut names = Vec::new();
    for from in files {
        let name = from.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        tp06_artifact::fs::copy_atomic(from, &dir.join(&name))?;
        names.push(name);
    }
    Ok(names)
}

/// Writes `model`'s adapters and `wte`'s `token_rows` under peft's keys to `path`.
fn write_adapter_weights<B: Backend>(
    model: &Gpt2<B>,
    token_rows: std::ops::Range<usize>,
    path: &Path,
) -> Result<(), ModelError> {
    let mut tensors: Vec<(String, Vec<usize>, Tensor<B, 1>)> = model
        .lora_params()
        .into_iter()
        .filter_map(|(name, shape, t)| peft_key(&name).map(|key| (key, shape, t)))
        .collect();
    if !token_rows.is_empty() {
        let n_embd = model.wte.weight.dims()[1];
        let rows = model.wte.weight.val().slice([token_rows.clone(), 0..n_embd]);
        let flat = rows.reshape([token_rows.len() * n_embd]);
        tensors.push((peft_tokens_key(), vec![token_rows.len(), n_embd], flat));
    }
    weights::write_tensors(path, tensors, Watch::none())
}

/// peft's `LoraConfig` for `config`, as `save_pretrained` writes it.
fn peft_config(config: &LoraConfig, base: &str, layers: Value, tokens: Value) -> Value {
    // peft matches a target by the end of a module's name: `c_attn` and
    // `c_fc` are unique, the two `c_proj` need their parent.
    let targets: Vec<&str> = config.targets.iter().map(|t| t.name()).collect();
    json!({
        "alpha_pattern": {},
        "auto_mapping": null,
        "base_model_name_or_path": base,
        "bias": "none",
        "fan_in_fan_out": true,
        "inference_mode": true,
        "init_lora_weights": true,
        "layers_pattern": null,
        "layers_to_transform": layers,
        "lora_alpha": config.alpha,
        "lora_dropout": config.dropout,
        "modules_to_save": null,
        "peft_type": "LORA",
        "r": config.r,
        "rank_pattern": {},
        "revision": null,
        "target_modules": targets,
        "task_type": "CAUSAL_LM",
        "trainable_token_indices": tokens,
        "use_dora": false,
        "use_rslora": config.rslora,
    })
}

/// Reads a peft adapter directory's configuration.
pub fn read_adapter_info(dir: &Path) -> Result<AdapterInfo, ModelError> {
    let path = dir.join(ADAPTER_CONFIG);
    let text = std::fs::read_to_string(&path).map_err(|e| ModelError::Io {
        path: path.clone(),
        action: "cannot read the adapter's configuration (is it a peft adapter directory?)",
        source: e,
    })?;
    let bad = |reason: String| ModelError::Adapter { path: path.clone(), reason };
    let config: Value = serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let field = |key: &str| config.get(key).filter(|v| !v.is_null());
    match field("peft_type").and_then(Value::as_str) {
        Some("LORA") => {}
        other => return Err(bad(format!("peft_type is {other:?}; only LoRA adapters are read"))),
    }
    for (key, plain) in [("use_dora", json!(false)), ("bias", json!("none"))] {
        if let Some(v) = field(key)
            && *v != plain
        {
            return Err(bad(format!("{key} = {v} is not supported (only {plain})")));
        }
    }
    for key in ["rank_pattern", "alpha_pattern"] {
        if field(key).and_then(Value::as_object).is_some_and(|m| !m.is_empty()) {
            return Err(bad(format!("{key} is not supported: every layer must share r and lora_alpha")));
        }
    }
    if field("modules_to_save").and_then(Value::as_array).is_some_and(|m| !m.is_empty()) {
        return Err(bad("modules_to_save is not supported; save the added rows as trainable_token_indices".into()));
    }
    let r = field("r")
        .and_then(Value::as_u64)
        .filter(|&r| r > 0)
        .ok_or_else(|| bad("r is missing or not a positive integer".into()))?;
    let alpha = field("lora_alpha").and_then(Value::as_f64).ok_or_else(|| bad("lora_alpha is missing".into()))?;
    let token_rows = match field("trainable_token_indices") {
        None => Vec::new(),
        Some(Value::Array(ids)) => ids.iter().filter_map(Value::as_u64).map(|i| i as usize).collect(),
        Some(Value::Object(by_layer)) => match by_layer.get(names::WTE_MODULE) {
            Some(Value::Array(ids)) if by_layer.len() == 1 => {
                ids.iter().filter_map(Value::as_u64).map(|i| i as usize).collect()
            }
            _ => {
                let only = names::WTE_MODULE;
                return Err(bad(format!("trainable_token_indices: only `{only}`'s rows are supported")));
            }
        },
        Some(other) => return Err(bad(format!("trainable_token_indices = {other} is not a list of rows"))),
    };
    Ok(AdapterInfo {
        base: field("base_model_name_or_path").and_then(Value::as_str).unwrap_or_default().to_string(),
        alpha,
        r: r as usize,
        dropout: field("lora_dropout").and_then(Value::as_f64).unwrap_or(0.0),
        rslora: field("use_rslora").and_then(Value::as_bool).unwrap_or(false),
        token_rows,
    })
}

/// `model` with the adapter of the peft directory `dir` (ours, or one peft
/// wrote): its layers' adapters as the weight file holds them, and its
/// trainable tokens' rows written into `wte` (the model must already have
/// those rows: the base resized to the adapter's tokenizer).
pub fn load_adapter<B: Backend>(
    mut model: Gpt2<B>,
    dir: &Path,
    device: &B::Device,
) -> Result<(Gpt2<B>, AdapterInfo), ModelError> {
    let info = read_adapter_info(dir)?;
    let path = dir.join(ADAPTER_WEIGHTS);
    let tensors = weights::read_tensors(&path)?;
    let bad = |reason: String| ModelError::Adapter { path: path.clone(), reason };
    let n_layer = model.h.len();
    // Each layer's [A, B] as read: (shape, values).
    type Read = Option<(Vec<usize>, Vec<f32>)>;
    let mut factors: BTreeMap<(usize, Layer), [Read; 2]> = BTreeMap::new();
    let mut tokens = None;
    for (key, value) in tensors {
        if key == peft_tokens_key() {
            tokens = Some(value);
            continue;
        }
        let Some((block, layer, factor)) = names::parse_peft_key(&key).filter(|(_, l, _)| Target::of(*l).is_some())
        else {
            let tokens = names::WTE_MODULE;
            return Err(bad(format!("`{key}` is not a LoRA factor of a GPT-2 layer nor {tokens}'s trainable tokens")));
        };
        if block >= n_layer {
            return Err(bad(format!("`{key}`: the model has {n_layer} blocks")));
        }
        factors.entry((block, layer)).or_default()[(factor == Factor::B) as usize] = Some(value);
    }
    if factors.is_empty() {
        return Err(bad("no LoRA factors".into()));
    }
    for ((block, layer), [a, b]) in factors {
        let name = names::layer(block, layer);
        let layer = model.h[block].conv_mut(layer).expect("a target is a Conv1D");
        let (Some((a_shape, a)), Some((b_shape, b))) = (a, b) else {
            return Err(bad(format!("`{name}` has lora_A or lora_B but not both")));
        };
        let [inputs, outputs] = layer.weight.dims();
        if a_shape != [info.r, inputs] || b_shape != [outputs, info.r] {
            return Err(bad(format!(
                "`{name}`: lora_A {a_shape:?} and lora_B {b_shape:?}, but r = {} and the layer is [{inputs}, {outputs}]: \
                 the adapter was made for another model",
                info.r
            )));
        }
        layer.lora = Some(Lora {
            a: Param::from_tensor(Tensor::from_data(TensorData::new(a, [info.r, inputs]), device)),
            b: Param::from_tensor(Tensor::from_data(TensorData::new(b, [outputs, info.r]), device)),
            scaling: scaling(info.alpha, info.r, info.rslora),
            dropout: Dropout { p: info.dropout },
        });
    }
    match (tokens, info.token_rows.is_empty()) {
        (None, true) => {}
        (Some((shape, values)), false) => {
            let [rows, n_embd] = model.wte.weight.dims();
            if shape != [info.token_rows.len(), n_embd] {
                return Err(bad(format!(
                    "the trainable tokens are {shape:?}, not [{}, {n_embd}]",
                    info.token_rows.len()
                )));
            }
            if let Some(&row) = info.token_rows.iter().find(|&&r| r >= rows) {
                let embedding = names::WTE_MODULE;
                return Err(bad(format!(
                    "the adapter trains row {row} of {embedding} but the model has {rows} rows; resize the base to the adapter's tokenizer first"
                )));
            }
            let mut wte = model.wte.weight.val();
            for (k, &row) in info.token_rows.iter().enumerate() {
                let values = values[k * n_embd..(k + 1) * n_embd].to_vec();
                let new = Tensor::<B, 2>::from_data(TensorData::new(values, [1, n_embd]), device);
                wte = wte.slice_assign([row..row + 1, 0..n_embd], new);
            }
            model.wte.weight = Param::from_tensor(wte.detach()); // a leaf of its own
        }
        (Some(_), true) => {
            return Err(bad("trainable tokens saved but no trainable_token_indices in the configuration".into()));
        }
        (None, false) => return Err(bad("trainable_token_indices named but their rows are not saved".into())),
    }
    Ok((model, info))
}

/// The key of `wte`'s trainable tokens in a peft adapter file.
fn peft_tokens_key() -> String {
    format!("{}{}", names::PEFT_PREFIX, names::PEFT_TOKENS)
}

/// peft's key of our adapter parameter `name`: `h.0.attn.c_attn.lora.a` →
/// `base_model.model.transformer.h.0.attn.c_attn.lora_A.weight`.
pub fn peft_key(name: &str) -> Option<String> {
    let (block, layer, factor) = names::parse_lora(name)?;
    Some(names::peft_key(block, layer, factor))
}
