//! Configuration of the sample stage (`[sample]` in a preset).

use serde::{Deserialize, Serialize};
use tp06_model::Precision;

/// One prompt, with its own temperature if it differs from the default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prompt {
    /// The text the model continues.
    pub text: String,
    /// Sampling temperature for this prompt (else `sample.temperature`).
    pub temperature: Option<f64>,
}

/// The sample stage's settings; the course's values are in `presets/tp06.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The prompts generated after training (course: four).
    pub prompts: Vec<Prompt>,
    /// Sample (`true`, the course) or decode greedily (`false`).
    pub do_sample: bool,
    /// Softmax temperature (course: 0.7; 0 means greedy).
    pub temperature: f64,
    /// Keep only the k most likely tokens (course: 50; 0 disables).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p (course: 0.9; 1 disables).
    pub top_p: f64,
    /// Penalise tokens already in the text, prompt included (course: 1.2; 1 disables).
    pub repetition_penalty: f64,
    /// Maximum total length in tokens, prompt included (course: 150).
    pub max_length: usize,
    /// Generate at most this many new tokens instead (overrides `max_length`).
    pub max_new_tokens: Option<usize>,
    /// Samples per prompt.
    pub num_samples: usize,
    /// Seed of the sampler.
    pub seed: u64,
    /// Also generate with the base model, same prompts and seeds, for comparison.
    pub compare_base: bool,
    /// `bf16`: the weights cast to bfloat16 for generation (GPUs; as
    /// transformers' `dtype=torch.bfloat16`); `f32` (the default) everywhere else.
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
}

impl Config {
    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        let temperatures = std::iter::once(self.temperature).chain(self.prompts.iter().filter_map(|p| p.temperature));
        for t in temperatures {
            if !(t >= 0.0 && t.is_finite()) {
                return Err(format!("sample.temperature: {t} must be ≥ 0 (0 means greedy)"));
            }
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("sample.top_p: {} must be in (0, 1]", self.top_p));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return Err(format!("sample.repetition_penalty: {} must be > 0 (1 disables)", self.repetition_penalty));
        }
        if self.max_length == 0 && self.max_new_tokens.is_none() {
            return Err("sample.max_length: 0; use at least 1 (course: 150)".into());
        }
        if self.num_samples == 0 {
            return Err("sample.num_samples: 0; use at least 1".into());
        }
        Ok(())
    }
}
