//! GPT-2 hyper-parameters, read from an HF `config.json`.
//!
//! [`HfConfig`] keeps the file's JSON as is (so an exported `config.json` keeps
//! every key the base model had); [`Gpt2Config`] is the resolved, checked view the
//! model is built from. Anything this implementation does not compute exactly as
//! transformers does is refused with a clear error rather than approximated.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ModelError;

/// The activation between `c_fc` and `c_proj`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activation {
    /// `gelu_new` / `gelu_pytorch_tanh`: the tanh approximation (GPT-2's).
    GeluTanh,
    /// `gelu`: the exact erf form.
    Gelu,
    /// `relu`.
    Relu,
    /// `silu` / `swish`.
    Silu,
}

impl Activation {
    /// Parses transformers' `ACT2FN` names that this crate implements.
    pub fn from_hf(name: &str) -> Option<Self> {
        match name {
            "gelu_new" | "gelu_pytorch_tanh" => Some(Activation::GeluTanh),
            "gelu" => Some(Activation::Gelu),
            "relu" => Some(Activation::Relu),
            "silu" | "swish" => Some(Activation::Silu),
            _ => None,
        }
    }
}

/// The resolved GPT-2 configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gpt2Config {
    /// Vocabulary size (rows of `wte`).
    pub vocab_size: usize,
    /// Context length (rows of `wpe`).
    pub n_positions: usize,
    /// Width of the residual stream.
    pub n_embd: usize,
    /// Number of blocks.
    pub n_layer: usize,
    /// Attention heads per block.
    pub n_head: usize,
    /// Width of the MLP (`n_inner`, or 4·n_embd when null).
    pub n_inner: usize,
    /// MLP activation.
    pub activation: Activation,
    /// LayerNorm epsilon.
    pub layer_norm_epsilon: f64,
    /// Divide attention scores by sqrt(head_dim).
    pub scale_attn_weights: bool,
    /// Dropout after the embeddings.
    pub embd_pdrop: f64,
    /// Dropout on the attention probabilities.
    pub attn_pdrop: f64,
    /// Dropout on the attention and MLP outputs.
    pub resid_pdrop: f64,
    /// Standard deviation of the initial weights.
    pub initializer_range: f64,
    /// Beginning-of-sequence id.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence id.
    pub eos_token_id: Option<u32>,
    /// Padding id.
    pub pad_token_id: Option<u32>,
}

impl Gpt2Config {
    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// The same configuration with every dropout rate at 0.
    pub fn without_dropout(mut self) -> Self {
        self.embd_pdrop = 0.0;
        self.attn_pdrop = 0.0;
        self.resid_pdrop = 0.0;
        self
    }

    /// The number of parameters of a model of this shape (tied head counted once).
    pub fn num_params(&self) -> usize {
        let (c, f) = (self.n_embd, self.n_inner);
        let block = 2 * 2 * c + (c * 3 * c + 3 * c) + (c * c + c) + (c * f + f) + (f * c + c);
        self.vocab_size * c + self.n_positions * c + self.n_layer * block + 2 * c
    }
}

/// An HF `config.json`, kept whole.
#[derive(Debug, Clone, PartialEq)]
pub struct HfConfig {
    raw: serde_json::Map<String, Value>,
    origin: String,
}

fn field<'a>(raw: &'a serde_json::Map<String, Value>, key: &str) -> Option<&'a Value> {
    raw.get(key).filter(|v| !v.is_null())
}

impl HfConfig {
    /// Reads and checks `config.json`.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::Io {
            path: path.to_path_buf(),
            action: "cannot read the model config",
            source: e,
        })?;
        Self::from_json_str(&text, &path.display().to_string())
    }

    /// Parses `config.json` text (`origin` names it in errors).
    pub fn from_json_str(text: &str, origin: &str) -> Result<Self, ModelError> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| ModelError::Config { origin: origin.to_string(), reason: format!("not valid JSON ({e})") })?;
        let Value::Object(raw) = value else {
            return Err(ModelError::Config { origin: origin.to_string(), reason: "not a JSON object".into() });
        };
        let config = Self { raw, origin: origin.to_string() };
        config.resolve()?;
        Ok(config)
    }

    /// A configuration from a resolved one (for models made from scratch).
    pub fn from_gpt2(config: &Gpt2Config) -> Self {
        let activation = match config.activation {
            Activation::GeluTanh => "gelu_new",
            Activation::Gelu => "gelu",
            Activation::Relu => "relu",
            Activation::Silu => "silu",
        };
        let value = serde_json::json!({
            "activation_function": activation,
            "architectures": ["GPT2LMHeadModel"],
            "attn_pdrop": config.attn_pdrop,
            "bos_token_id": config.bos_token_id,
            "embd_pdrop": config.embd_pdrop,
            "eos_token_id": config.eos_token_id,
            "initializer_range": config.initializer_range,
            "layer_norm_epsilon": config.layer_norm_epsilon,
            "model_type": "gpt2",
            "n_embd": config.n_embd,
            "n_head": config.n_head,
            "n_inner": config.n_inner,
            "n_layer": config.n_layer,
            "n_positions": config.n_positions,
            "pad_token_id": config.pad_token_id,
            "resid_pdrop": config.resid_pdrop,
            "scale_attn_weights": config.scale_attn_weights,
            "tie_word_embeddings": true,
            "vocab_size": config.vocab_size,
        });
        let Value::Object(raw) = value else { unreachable!("a JSON object literal") };
        Self { raw, origin: "generated".into() }
    }

    fn error(&self, reason: impl Into<String>) -> ModelError {
        ModelError::Config { origin: self.origin.clone(), reason: reason.into() }
    }

    fn usize_field(&self, key: &str) -> Result<usize, ModelError> {
        match field(&self.raw, key) {
            Some(v) => v
                .as_u64()
                .filter(|&n| n > 0)
                .map(|n| n as usize)
                .ok_or_else(|| self.error(format!("`{key}` is {v}, expected a positive integer"))),
            None => Err(self.error(format!("`{key}` is missing"))),
        }
    }

    fn f64_field(&self, key: &str, default: f64) -> Result<f64, ModelError> {
        match field(&self.raw, key) {
            Some(v) => v.as_f64().ok_or_else(|| self.error(format!("`{key}` is {v}, expected a number"))),
            None => Ok(default),
        }
    }

    fn bool_field(&self, key: &str, default: bool) -> Result<bool, ModelError> {
        match field(&self.raw, key) {
            Some(v) => v.as_bool().ok_or_else(|| self.error(format!("`{key}` is {v}, expected true or false"))),
            None => Ok(default),
        }
    }

    fn token_id(&self, key: &str) -> Result<Option<u32>, ModelError> {
        match field(&self.raw, key) {
            None => Ok(None),
            Some(Value::Array(ids)) if ids.len() == 1 => Ok(ids[0].as_u64().map(|n| n as u32)),
            Some(v) => v
                .as_u64()
                .map(|n| Some(n as u32))
                .ok_or_else(|| self.error(format!("`{key}` is {v}, expected a token id"))),
        }
    }

    /// The resolved configuration; refuses what this crate does not implement.
    pub fn resolve(&self) -> Result<Gpt2Config, ModelError> {
        if let Some(model_type) = field(&self.raw, "model_type")
            && model_type != "gpt2"
        {
            return Err(self.error(format!("`model_type` is {model_type}; only \"gpt2\" models are supported")));
        }
        let n_embd = self.usize_field("n_embd")?;
        let n_head = self.usize_field("n_head")?;
        if n_embd % n_head != 0 {
            return Err(self.error(format!("`n_embd` {n_embd} is not a multiple of `n_head` {n_head}")));
        }
        let n_inner = match field(&self.raw, "n_inner") {
            None => 4 * n_embd,
            Some(_) => self.usize_field("n_inner")?,
        };
        let activation_name = field(&self.raw, "activation_function").and_then(Value::as_str).unwrap_or("gelu_new");
        let activation = Activation::from_hf(activation_name).ok_or_else(|| {
            self.error(format!(
                "`activation_function` \"{activation_name}\" is not implemented; supported: gelu_new, gelu_pytorch_tanh, gelu, relu, silu"
            ))
        })?;
        for (key, what) in [
            ("scale_attn_by_inverse_layer_idx", "attention scaled by the inverse layer index"),
            ("reorder_and_upcast_attn", "reordered, upcast attention"),
            ("add_cross_attention", "cross-attention"),
        ] {
            if self.bool_field(key, false)? {
                return Err(self.error(format!("`{key}` is true: {what} is not implemented")));
            }
        }
        if !self.bool_field("tie_word_embeddings", true)? {
            return Err(self.error(
                "`tie_word_embeddings` is false: only GPT-2 with the LM head tied to the token embeddings is supported",
            ));
        }
        let rate = |key: &str| -> Result<f64, ModelError> {
            let p = self.f64_field(key, 0.1)?;
            if (0.0..1.0).contains(&p) {
                Ok(p)
            } else {
                Err(self.error(format!("`{key}` is {p}, expected a rate in [0, 1)")))
            }
        };
        let epsilon = self.f64_field("layer_norm_epsilon", 1e-5)?;
        if epsilon.is_nan() || epsilon <= 0.0 {
            return Err(self.error(format!("`layer_norm_epsilon` is {epsilon}, expected > 0")));
        }
        // The std of the initial weights (a model trained from scratch draws from it).
        let initializer_range = self.f64_field("initializer_range", 0.02)?;
        if !(initializer_range.is_finite() && initializer_range >= 0.0) {
            return Err(self.error(format!("`initializer_range` is {initializer_range}, expected a finite number ≥ 0")));
        }
        Ok(Gpt2Config {
            vocab_size: self.usize_field("vocab_size")?,
            n_positions: self.usize_field("n_positions")?,
            n_embd,
            n_layer: self.usize_field("n_layer")?,
            n_head,
            n_inner,
            activation,
            layer_norm_epsilon: epsilon,
            scale_attn_weights: self.bool_field("scale_attn_weights", true)?,
            embd_pdrop: rate("embd_pdrop")?,
            attn_pdrop: rate("attn_pdrop")?,
            resid_pdrop: rate("resid_pdrop")?,
            initializer_range,
            bos_token_id: self.token_id("bos_token_id")?,
            eos_token_id: self.token_id("eos_token_id")?,
            pad_token_id: self.token_id("pad_token_id")?,
        })
    }

    /// The same file with another vocabulary size (after adding tokens).
    pub fn with_vocab_size(&self, vocab_size: usize) -> Self {
        let mut copy = self.clone();
        copy.raw.insert("vocab_size".into(), Value::from(vocab_size));
        copy
    }

    /// The same file with `key` set to `value`.
    pub fn with(&self, key: &str, value: Value) -> Self {
        let mut copy = self.clone();
        copy.raw.insert(key.into(), value);
        copy
    }

    /// The JSON text of the file.
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(&self.raw).expect("a JSON map serialises") + "\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"{
        "activation_function": "gelu_new", "model_type": "gpt2", "n_embd": 768, "n_head": 12,
        "n_inner": null, "n_layer": 12, "n_positions": 1024, "vocab_size": 50000,
        "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1, "layer_norm_epsilon": 1e-5,
        "some_future_key": {"kept": true}
    }"#;

    #[test]
    fn resolves_gpt_fr_cased_small() {
        let c = HfConfig::from_json_str(SMALL, "small").unwrap().resolve().unwrap();
        assert_eq!((c.n_layer, c.n_head, c.n_embd, c.n_inner, c.head_dim()), (12, 12, 768, 3072, 64));
        assert_eq!(c.activation, Activation::GeluTanh);
        assert_eq!((c.bos_token_id, c.eos_token_id, c.pad_token_id), (Some(0), Some(2), Some(1)));
        assert_eq!(c.attn_pdrop, 0.1, "HF's default dropout");
        // GPT-2 small with this vocabulary: 124.4 M parameters (tied head).
        assert_eq!(c.num_params(), 50000 * 768 + 1024 * 768 + 12 * 7_087_872 + 2 * 768);
    }

    #[test]
    fn token_ids_as_transformers_writes_them() {
        // A number, a one-element list (newer configs), or null / absent (none).
        for (patch, expected) in [("2", Some(2)), ("[2]", Some(2)), ("null", None)] {
            let text = SMALL.replace(r#""eos_token_id": 2"#, &format!(r#""eos_token_id": {patch}"#));
            let c = HfConfig::from_json_str(&text, "cfg").unwrap().resolve().unwrap();
            assert_eq!(c.eos_token_id, expected, "{patch}");
        }
    }

    #[test]
    fn keeps_unknown_keys_and_updates_vocab() {
        let c = HfConfig::from_json_str(SMALL, "small").unwrap().with_vocab_size(50123);
        let text = c.to_json_pretty();
        assert!(text.contains("some_future_key"));
        assert_eq!(HfConfig::from_json_str(&text, "x").unwrap().resolve().unwrap().vocab_size, 50123);
    }

    #[test]
    fn refuses_what_is_not_implemented() {
        for (patch, fragment) in [
            (r#""activation_function": "quick_gelu""#, "quick_gelu"),
            (r#""scale_attn_by_inverse_layer_idx": true"#, "scale_attn_by_inverse_layer_idx"),
            (r#""reorder_and_upcast_attn": true"#, "reorder_and_upcast_attn"),
            (r#""tie_word_embeddings": false"#, "tie_word_embeddings"),
            (r#""model_type": "llama""#, "model_type"),
            (r#""n_head": 7"#, "not a multiple"),
            (r#""attn_pdrop": 1.5"#, "attn_pdrop"),
            (r#""n_layer": -1"#, "n_layer"),
            (r#""initializer_range": -0.02"#, "initializer_range"),
            (r#""n_layer": 0"#, "n_layer"),
            (r#""eos_token_id": [2, 3]"#, "eos_token_id"),
            (r#""layer_norm_epsilon": 0"#, "layer_norm_epsilon"),
        ] {
            let mut map: serde_json::Map<String, Value> = serde_json::from_str(SMALL).unwrap();
            let patch_map: serde_json::Map<String, Value> = serde_json::from_str(&format!("{{{patch}}}")).unwrap();
            map.extend(patch_map);
            let err = HfConfig::from_json_str(&Value::Object(map).to_string(), "cfg").unwrap_err().to_string();
            assert!(err.contains(fragment) && err.contains("cfg"), "{patch}: {err}");
        }
        let err = HfConfig::from_json_str("{\"n_embd\": 4", "broken.json").unwrap_err().to_string();
        assert!(err.contains("broken.json") && err.contains("not valid JSON"), "{err}");
        let err = HfConfig::from_json_str(r#"{"n_embd": 8, "n_head": 2}"#, "partial").unwrap_err().to_string();
        assert!(err.contains("`vocab_size` is missing"), "{err}");
    }
}
