//! LoRA adapters on GPT-2's `Conv1D` layers, exactly as Hugging Face peft
//! makes, trains, saves, loads and merges them.
//!
//! A layer with an adapter computes `y = x W + b + (dropout(x) Aᵀ) Bᵀ · s`
//! with `A [r, in]`, `B [out, r]` and `s = α / r` (`α / √r` with rsLoRA);
//! `A` starts as peft's `kaiming_uniform_(a = √5)`, which is U(±1/√in), and
//! `B` as 0, so a fresh adapter changes nothing. The base weights are frozen
//! under LoRA; the adapters, and the added names' rows of `wte` when the
//! freeze plan trains them, are what train.
//!
//! On disk an adapter is a peft adapter directory: `adapter_config.json`
//! (peft's `LoraConfig`) and `adapter_model.safetensors`, whose keys are
//! peft's (`base_model.model.transformer.h.0.attn.c_attn.lora_A.weight`);
//! the added rows of `wte` are saved as peft's trainable tokens
//! (`trainable_token_indices`), so `PeftModel.from_pretrained` loads them into
//! a base resized to the tokenizer. The same reader loads the adapters peft
//! writes, and the train stage's checkpoints hold their adapter this way too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::prelude::*;
use rand::SeedableRng;
use rand_distr::{Distribution, Uniform};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Value, json};
use tp06_artifact::{SettingError, Watch};

use crate::ModelError;
use crate::gpt2::{Conv1D, Gpt2};
use crate::kernels::Dropout;
use crate::weights::{self, NamedParams};

/// The adapter's configuration file, as peft names it.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// The adapter's weights, as peft names them.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// peft's prefix of a GPT-2 parameter's key in an adapter file.
const PEFT_PREFIX: &str = "base_model.model.transformer.";
/// Where peft keeps the trainable tokens' rows of `wte`, after [`PEFT_PREFIX`].
const PEFT_TOKENS: &str = "wte.token_adapter.trainable_tokens_delta";

/// A `Conv1D` layer of a block that can carry an adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// `attn.c_attn`: q, k, v (peft's default for GPT-2).
    CAttn,
    /// `attn.c_proj`: the attention's output.
    AttnCProj,
    /// `mlp.c_fc`: the MLP's input.
    CFc,
    /// `mlp.c_proj`: the MLP's output.
    MlpCProj,
}

impl Target {
    /// Every target, in module order.
    pub const ALL: [Target; 4] = [Target::CAttn, Target::AttnCProj, Target::CFc, Target::MlpCProj];

    /// As written in `[model.lora] targets`.
    pub fn name(self) -> &'static str {
        match self {
            Target::CAttn => "c_attn",
            Target::AttnCProj => "attn.c_proj",
            Target::CFc => "c_fc",
            Target::MlpCProj => "mlp.c_proj",
        }
    }

    /// The layer's path in a block (`attn.c_attn`).
    pub fn path(self) -> &'static str {
        match self {
            Target::CAttn => "attn.c_attn",
            Target::AttnCProj => "attn.c_proj",
            Target::CFc => "mlp.c_fc",
            Target::MlpCProj => "mlp.c_proj",
        }
    }

    fn from_path(path: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.path() == path)
    }
}

impl Serialize for Target {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        let known = Self::ALL.map(Target::name);
        Self::ALL.into_iter().find(|t| t.name() == name).ok_or_else(|| {
            serde::de::Error::custom(format!("unknown LoRA target `{name}`; use any of {}", known.join(", ")))
        })
    }
}

/// Which blocks carry adapters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Blocks {
    /// Every block.
    #[default]
    All,
    /// Blocks `from..to` (`[from, to]` in a preset: from included, to excluded).
    Range(usize, usize),
}

impl Blocks {
    /// The block indices of a model of `n_layer` blocks.
    pub fn resolve(self, n_layer: usize) -> std::ops::Range<usize> {
        match self {
            Blocks::All => 0..n_layer,
            Blocks::Range(from, to) => from..to.min(n_layer),
        }
    }
}

impl Serialize for Blocks {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Blocks::All => s.serialize_str("all"),
            Blocks::Range(from, to) => [*from, *to].serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Blocks {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Range(Vec<usize>),
        }
        match Raw::deserialize(d)? {
            Raw::Text(t) if t == "all" => Ok(Blocks::All),
            Raw::Range(r) if r.len() == 2 => Ok(Blocks::Range(r[0], r[1])),
            _ => Err(serde::de::Error::custom("blocks are \"all\" or [from, to] (from included, to excluded)")),
        }
    }
}

fn default_targets() -> Vec<Target> {
    vec![Target::CAttn]
}

/// `[model.lora]`: the adapters' shape and where they go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraConfig {
    /// The rank `r` of `A [r, in]` and `B [out, r]`.
    pub r: usize,
    /// `α`: the update is scaled by `α / r` (`α / √r` with `rslora`).
    pub alpha: f64,
    /// Dropout on the adapter's input (peft's `lora_dropout`).
    #[serde(default)]
    pub dropout: f64,
    /// The layers of each block that carry one: any of `c_attn`,
    /// `attn.c_proj`, `c_fc`, `mlp.c_proj` (peft's default for GPT-2: `c_attn`).
    #[serde(default = "default_targets")]
    pub targets: Vec<Target>,
    /// `"all"`, or `[from, to]`: the blocks from `from` to `to` − 1.
    #[serde(default)]
    pub blocks: Blocks,
    /// Rank-stabilised scaling `α / √r` (peft's `use_rslora`).
    #[serde(default)]
    pub rslora: bool,
}

impl LoraConfig {
    /// The factor of the adapter's product.
    pub fn scaling(&self) -> f64 {
        scaling(self.alpha, self.r, self.rslora)
    }

    /// Checks the values serde cannot, for a model of `n_layer` blocks
    /// (`usize::MAX` before the model is known: the block range is then
    /// checked for order only).
    pub fn validate(&self, n_layer: usize) -> Result<(), SettingError> {
        if self.r == 0 {
            return Err(SettingError::new("model.lora.r", "0; the rank must be at least 1 (8 or 16 are usual)"));
        }
        if !(self.alpha > 0.0 && self.alpha.is_finite()) {
            return Err(SettingError::new("model.lora.alpha", format!("{} must be a finite value > 0", self.alpha)));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(SettingError::new("model.lora.dropout", format!("{} must be in [0, 1)", self.dropout)));
        }
        if self.targets.is_empty() {
            return Err(SettingError::new("model.lora.targets", "empty; name at least one layer, e.g. [\"c_attn\"]"));
        }
        let mut seen = self.targets.clone();
        seen.sort();
        seen.dedup();
        if seen.len() != self.targets.len() {
            return Err(SettingError::new("model.lora.targets", "a layer is named twice"));
        }
        if let Blocks::Range(from, to) = self.blocks
            && !(from < to && to <= n_layer)
        {
            let problem = match n_layer {
                usize::MAX => format!("[{from}, {to}] is empty; use [from, to] with from < to, or \"all\""),
                _ => format!(
                    "[{from}, {to}] is not a range of the model's {n_layer} blocks; \
                     use [from, to] with 0 ≤ from < to ≤ {n_layer}, or \"all\""
                ),
            };
            return Err(SettingError::new("model.lora.blocks", problem));
        }
        Ok(())
    }

    /// The number of adapter parameters on a model of `n_embd` and `n_inner`
    /// with `n_layer` blocks.
    pub fn num_params(&self, n_layer: usize, n_embd: usize, n_inner: usize) -> usize {
        let per_block: usize = self
            .targets
            .iter()
            .map(|t| {
                let (i, o) = shape_of(*t, n_embd, n_inner);
                self.r * (i + o)
            })
            .sum();
        per_block * self.blocks.resolve(n_layer).len()
    }
}

/// `α / r`, or `α / √r` with rsLoRA.
fn scaling(alpha: f64, r: usize, rslora: bool) -> f64 {
    if rslora { alpha / (r as f64).sqrt() } else { alpha / r as f64 }
}

/// `(in, out)` of `target`'s weight.
fn shape_of(target: Target, n_embd: usize, n_inner: usize) -> (usize, usize) {
    match target {
        Target::CAttn => (n_embd, 3 * n_embd),
        Target::AttnCProj => (n_embd, n_embd),
        Target::CFc => (n_embd, n_inner),
        Target::MlpCProj => (n_inner, n_embd),
    }
}

/// One layer's adapter.
#[derive(Module, Debug)]
pub struct Lora<B: Backend> {
    /// `[r, in]`: peft's `lora_A.weight`.
    pub a: Param<Tensor<B, 2>>,
    /// `[out, r]`: peft's `lora_B.weight`.
    pub b: Param<Tensor<B, 2>>,
    /// The product's factor, `α / r` or `α / √r`.
    pub scaling: f64,
    /// Dropout on the adapter's input.
    pub dropout: Dropout,
}

impl<B: Backend> Lora<B> {
    /// `ΔW = Aᵀ Bᵀ · s`, `[in, out]` as the `Conv1D` weight it adds to.
    pub fn delta(&self) -> Tensor<B, 2> {
        self.a.val().transpose().matmul(self.b.val().transpose()) * self.scaling
    }
}

/// The layer `target` of block `i`.
fn layer_mut<B: Backend>(model: &mut Gpt2<B>, i: usize, target: Target) -> &mut Conv1D<B> {
    let block = &mut model.h[i];
    match target {
        Target::CAttn => &mut block.attn.c_attn,
        Target::AttnCProj => &mut block.attn.c_proj,
        Target::CFc => &mut block.mlp.c_fc,
        Target::MlpCProj => &mut block.mlp.c_proj,
    }
}

/// `model` with fresh adapters as `config` places them: A as peft draws it
/// (U(±1/√in), seeded per layer by `seed` and its name), B = 0.
pub fn attach<B: Backend>(mut model: Gpt2<B>, config: &LoraConfig, seed: u64, device: &B::Device) -> Gpt2<B> {
    let n_layer = model.h.len();
    for i in config.blocks.resolve(n_layer) {
        for &target in &config.targets {
            let layer = layer_mut(&mut model, i, target);
            let [inputs, outputs] = layer.weight.dims();
            let name = format!("h.{i}.{}.lora.a", target.path());
            let a = uniform_values(seed, &name, 1.0 / (inputs as f64).sqrt(), config.r * inputs);
            layer.lora = Some(Lora {
                a: Param::from_tensor(Tensor::from_data(TensorData::new(a, [config.r, inputs]), device)),
                b: Param::from_tensor(Tensor::zeros([outputs, config.r], device)),
                scaling: config.scaling(),
                dropout: Dropout { p: config.dropout },
            });
        }
    }
    model
}

/// A stream of U(−bound, bound) values for the tensor `name`.
fn uniform_values(seed: u64, name: &str, bound: f64, n: usize) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ crate::init::name_hash(name));
    let uniform = Uniform::new_inclusive(-bound, bound).expect("a finite bound");
    (0..n).map(|_| uniform.sample(&mut rng) as f32).collect()
}

/// The weights that carry an adapter, by name (`h.0.attn.c_attn.weight`),
/// with it.
pub(crate) fn weights_with_adapters<B: Backend>(model: &Gpt2<B>) -> BTreeMap<String, (&Param<Tensor<B, 2>>, &Lora<B>)> {
    let mut out = BTreeMap::new();
    for i in 0..model.h.len() {
        for target in Target::ALL {
            let layer = layer_of(model, i, target);
            if let Some(lora) = &layer.lora {
                out.insert(format!("h.{i}.{}.weight", target.path()), (&layer.weight, lora));
            }
        }
    }
    out
}

/// `model` with every adapter folded into its layer's weight (peft's
/// `merge_and_unload`): `W + Aᵀ Bᵀ · s`, and no adapters left.
pub fn merge<B: Backend>(mut model: Gpt2<B>) -> Gpt2<B> {
    for i in 0..model.h.len() {
        for target in Target::ALL {
            let layer = layer_mut(&mut model, i, target);
            if let Some(lora) = layer.lora.take() {
                layer.weight = Param::from_tensor((layer.weight.val() + lora.delta()).detach());
            }
        }
    }
    model
}

impl<B: Backend> Gpt2<B> {
    /// Whether any layer carries an adapter.
    pub fn has_lora(&self) -> bool {
        self.h.iter().any(|b| b.has_lora())
    }

    /// The adapters' parameters: `(name, shape, values)`, our names (`h.0.attn.c_attn.lora.a`).
    pub fn lora_params(&self) -> Vec<(String, Vec<usize>, Tensor<B, 1>)> {
        NamedParams::of(self).params.into_iter().filter(|(name, _, _)| is_lora(name)).collect()
    }

    /// The parameters that may change under LoRA ([`trains_under_lora`]), as [`Self::lora_params`].
    pub fn params_trained_under_lora(&self) -> Vec<(String, Vec<usize>, Tensor<B, 1>)> {
        NamedParams::of(self).params.into_iter().filter(|(name, _, _)| trains_under_lora(name)).collect()
    }
}

/// Whether `name` is an adapter's parameter.
pub fn is_lora(name: &str) -> bool {
    name.contains(".lora.")
}

/// Whether parameter `name` may change under LoRA: the adapters and `wte`
/// (its added rows); the rest of the base is frozen
/// ([`crate::FreezePlan::under_lora`]).
pub fn trains_under_lora(name: &str) -> bool {
    is_lora(name) || name == "wte.weight"
}

/// peft's key of our adapter parameter `name`: `h.0.attn.c_attn.lora.a` →
/// `base_model.model.transformer.h.0.attn.c_attn.lora_A.weight`.
pub fn peft_key(name: &str) -> Option<String> {
    let (layer, factor) = name.rsplit_once(".lora.")?;
    let factor = match factor {
        "a" => "lora_A",
        "b" => "lora_B",
        _ => return None,
    };
    Some(format!("{PEFT_PREFIX}{layer}.{factor}.weight"))
}

/// Our name of peft's key (the inverse of [`peft_key`]), with the block and
/// layer it belongs to.
fn our_name(key: &str) -> Option<(String, usize, Target, char)> {
    let rest = key.strip_prefix(PEFT_PREFIX)?;
    let (layer, factor) = if let Some(layer) = rest.strip_suffix(".lora_A.weight") {
        (layer, 'a')
    } else {
        (rest.strip_suffix(".lora_B.weight")?, 'b')
    };
    let (block, path) = layer.strip_prefix("h.")?.split_once('.')?;
    let block: usize = block.parse().ok()?;
    let target = Target::from_path(path)?;
    Some((format!("{layer}.lora.{factor}"), block, target, factor))
}

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
        false => json!({ "wte": token_rows.collect::<Vec<_>>() }),
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
        tensors.push((format!("{PEFT_PREFIX}{PEFT_TOKENS}"), vec![token_rows.len(), n_embd], flat));
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
        Some(Value::Object(by_layer)) => match by_layer.get("wte") {
            Some(Value::Array(ids)) if by_layer.len() == 1 => {
                ids.iter().filter_map(Value::as_u64).map(|i| i as usize).collect()
            }
            _ => return Err(bad("trainable_token_indices: only `wte`'s rows are supported".into())),
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
    type Factor = Option<(Vec<usize>, Vec<f32>)>;
    let mut factors: BTreeMap<(usize, Target), [Factor; 2]> = BTreeMap::new();
    let mut tokens = None;
    for (key, value) in tensors {
        if key == format!("{PEFT_PREFIX}{PEFT_TOKENS}") {
            tokens = Some(value);
            continue;
        }
        let Some((_, block, target, factor)) = our_name(&key) else {
            return Err(bad(format!("`{key}` is not a LoRA factor of a GPT-2 layer nor wte's trainable tokens")));
        };
        if block >= n_layer {
            return Err(bad(format!("`{key}`: the model has {n_layer} blocks")));
        }
        factors.entry((block, target)).or_default()[(factor == 'b') as usize] = Some(value);
    }
    if factors.is_empty() {
        return Err(bad("no LoRA factors".into()));
    }
    for ((block, target), [a, b]) in factors {
        let layer = layer_mut(&mut model, block, target);
        let name = format!("h.{block}.{}", target.path());
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
                return Err(bad(format!(
                    "the adapter trains row {row} of wte but the model has {rows} rows; resize the base to the adapter's tokenizer first"
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

/// `model` with the adapters of `like` (their places, scaling and dropout),
/// their values taken from `tensors` by our names (`h.0.attn.c_attn.lora.a`),
/// as a checkpoint holds them. Err: the name of a missing or misshapen tensor.
pub fn with_adapter_values<B: Backend>(
    mut model: Gpt2<B>,
    like: &Gpt2<B>,
    tensors: &weights::NamedTensors,
    device: &B::Device,
) -> Result<Gpt2<B>, String> {
    for i in 0..model.h.len().min(like.h.len()) {
        for target in Target::ALL {
            let Some(lora) = &layer_of(like, i, target).lora else { continue };
            let value = |factor: &str, dims: [usize; 2]| {
                tensor_named(tensors, &format!("h.{i}.{}.lora.{factor}", target.path()), dims, device)
            };
            let (a, b) = (value("a", lora.a.dims())?, value("b", lora.b.dims())?);
            layer_mut(&mut model, i, target).lora = Some(Lora {
                a: Param::from_tensor(a),
                b: Param::from_tensor(b),
                scaling: lora.scaling,
                dropout: lora.dropout,
            });
        }
    }
    Ok(model)
}

/// `like` with the values of what trains under LoRA taken from `tensors`
/// ([`Gpt2::params_trained_under_lora`], as a checkpoint holds them): its
/// adapters and `wte`; the frozen rest stays `like`'s own. Err: the name of a
/// missing or misshapen tensor.
pub fn with_trained_values<B: Backend>(
    like: &Gpt2<B>,
    tensors: &weights::NamedTensors,
    device: &B::Device,
) -> Result<Gpt2<B>, String> {
    let mut model = with_adapter_values(like.clone(), like, tensors, device)?;
    model.wte.weight = Param::from_tensor(tensor_named(tensors, "wte.weight", like.wte.weight.dims(), device)?);
    Ok(model)
}

/// The tensor `name` of `tensors`, of shape `dims`. Err: `name` missing or misshapen.
fn tensor_named<B: Backend>(
    tensors: &weights::NamedTensors,
    name: &str,
    dims: [usize; 2],
    device: &B::Device,
) -> Result<Tensor<B, 2>, String> {
    match tensors.get(name) {
        Some((shape, values)) if *shape == dims => Ok(Tensor::from_data(TensorData::new(values.clone(), dims), device)),
        Some((shape, _)) => Err(format!("`{name}` is {shape:?}, not {dims:?}")),
        None => Err(format!("no tensor `{name}`")),
    }
}

/// The layer `target` of block `i`, read-only.
fn layer_of<B: Backend>(model: &Gpt2<B>, i: usize, target: Target) -> &Conv1D<B> {
    let block = &model.h[i];
    match target {
        Target::CAttn => &block.attn.c_attn,
        Target::AttnCProj => &block.attn.c_proj,
        Target::CFc => &block.mlp.c_fc,
        Target::MlpCProj => &block.mlp.c_proj,
    }
}

/// `model` (a base model) with its `wte` grown to `vocab_size` rows, as
/// transformers' `resize_token_embeddings` before peft loads an adapter
/// trained with added tokens: the new rows are the adapter's trainable
/// tokens, so every one of them must be among those `info` names (they are
/// zero until [`load_adapter`] writes them).
pub fn grow_for_adapter<B: Backend>(
    mut model: Gpt2<B>,
    info: &AdapterInfo,
    vocab_size: usize,
    adapter: &Path,
    device: &B::Device,
) -> Result<Gpt2<B>, ModelError> {
    let [rows, n_embd] = model.wte.weight.dims();
    if vocab_size <= rows {
        return Ok(model);
    }
    if let Some(row) = (rows..vocab_size).find(|r| !info.token_rows.contains(r)) {
        let reason = format!(
            "its tokenizer has {vocab_size} tokens, the base model {rows} rows, and the adapter does not carry row {row} \
             (trainable_token_indices): it was not trained with these added tokens"
        );
        return Err(ModelError::Adapter { path: adapter.join(ADAPTER_CONFIG), reason });
    }
    let grown = Tensor::cat(vec![model.wte.weight.val(), Tensor::zeros([vocab_size - rows, n_embd], device)], 0);
    model.wte.weight = Param::from_tensor(grown.detach());
    Ok(model)
}
