//! Configuration of the train stage (`[train]` in a preset).

use serde::{Deserialize, Serialize};
use tp06_artifact::SettingError;
use tp06_model::Precision;

pub use crate::examples::Packing;

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// `train.lr`: a rate, or the range test's suggestion.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LearningRate {
    /// This peak rate.
    Fixed(f64),
    /// The suggestion of a range test run first (`"find"`).
    Find,
}

impl LearningRate {
    /// The rate, when fixed.
    pub fn fixed(self) -> Option<f64> {
        match self {
            LearningRate::Fixed(lr) => Some(lr),
            LearningRate::Find => None,
        }
    }
}

impl Serialize for LearningRate {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            LearningRate::Fixed(lr) => serializer.serialize_f64(*lr),
            LearningRate::Find => serializer.serialize_str("find"),
        }
    }
}

impl<'de> Deserialize<'de> for LearningRate {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Spelling {
            Rate(f64),
            Name(String),
        }
        match Spelling::deserialize(deserializer)? {
            Spelling::Rate(lr) => Ok(LearningRate::Fixed(lr)),
            Spelling::Name(name) if name == "find" => Ok(LearningRate::Find),
            Spelling::Name(name) => Err(serde::de::Error::custom(format!(
                "`{name}`: use a rate (e.g. 5e-5) or \"find\" (a range test picks it)"
            ))),
        }
    }
}

/// The train stage's settings; the course's values are in `presets/tp06.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Passes over the training set (course: 10). Ignored when `max_steps` is set.
    pub epochs: u32,
    /// Stop after this many optimiser steps (overrides `epochs`, as in HF).
    pub max_steps: Option<u64>,
    /// Sequences per micro-batch (course: 2).
    pub batch_size: usize,
    /// Micro-batches accumulated per optimiser step (course: 8).
    pub grad_accum: usize,
    /// Peak learning rate (course: 5e-5), or `"find"`: the suggestion of a
    /// learning-rate range test run first from the same initial state
    /// (`tp06 lr-find`); the rate used is in the stage's statistics.
    pub lr: LearningRate,
    /// Linear warm-up steps from 0 to `lr` (course: 100), then linear decay to 0.
    pub warmup_steps: u64,
    /// The warm-up as a fraction of all the run's steps instead (HF's
    /// `warmup_ratio`); with it, `warmup_steps` must be 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_ratio: Option<f64>,
    /// AdamW decoupled weight decay, not applied to biases and LayerNorm weights (0.01).
    pub weight_decay: f64,
    /// AdamW β₁ (0.9).
    pub adam_beta1: f64,
    /// AdamW β₂ (0.999).
    pub adam_beta2: f64,
    /// AdamW ε (1e-8).
    pub adam_epsilon: f64,
    /// Clip the global gradient norm to this value (1.0; 0 disables).
    pub max_grad_norm: f64,
    /// Tokens per example: longer articles are cut, shorter ones padded (256).
    pub max_length: usize,
    /// Seed of shuffling and dropout (course: 42).
    pub seed: u64,
    /// Train on the padding positions too (the course's defect: `labels = input_ids`).
    pub pad_in_loss: bool,
    /// How articles share examples: `false`, one per example, cut at
    /// `max_length` (the course); `true`, concatenated with `</s>` into full
    /// blocks as HF `run_clm` does (articles attend to each other, the
    /// remainder dropped); `"documents"`, every token: long articles go on in
    /// the next block, short ones share blocks, each attending to itself only.
    pub packing: Packing,
    /// With `packing = "documents"`: tokens of an article that goes on in a
    /// new block repeated there as context (out of the loss). Default 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub window_overlap: usize,
    /// Log the training loss every this many steps (course: 10).
    pub logging_every: u64,
    /// Evaluate on the validation split every this many steps (0: only at the end).
    pub eval_every: u64,
    /// Write a resumable checkpoint every this many steps (course: 500).
    pub checkpoint_every: u64,
    /// Checkpoints kept on disk (course: 2).
    pub keep_checkpoints: usize,
    /// `bf16`: the forward passes' matrix products in bfloat16 over f32
    /// weights (mixed precision, like `torch.autocast` and the HF Trainer's
    /// `bf16=True`), for GPUs; `f32` (the default) everywhere else. (`int8`
    /// is for generation only, and refused here.)
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
    /// Activation checkpointing per block: keep only each block's input
    /// during the forward pass and run the block again in the backward pass,
    /// so that one block's activations are alive at a time instead of all of
    /// them, for one more forward pass of the trained blocks. The gradients
    /// are the same. Off by default (false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gradient_checkpointing: bool,
    /// Also write `export/` and `best/` as GGUF files for llama.cpp
    /// (`export.gguf`, `best.gguf` beside them) in this format: `f32`,
    /// `f16` or `q8_0`. None by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gguf: Option<tp06_model::gguf::GgufFormat>,
}

impl Config {
    /// Warm-up steps of a run of `total_steps`.
    pub fn warmup(&self, total_steps: u64) -> u64 {
        match self.warmup_ratio {
            Some(ratio) => (ratio * total_steps as f64).ceil() as u64,
            None => self.warmup_steps,
        }
    }

    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), SettingError> {
        let fail = |key: &str, problem: String| Err(SettingError::new(format!("train.{key}"), problem));
        if self.precision == tp06_model::Precision::Int8 {
            return fail("precision", "int8 is for generation (sample.precision, --precision of sample and serve); training runs in f32 or bf16".into());
        }
        let positive =
            |key: &str, v: f64| if v > 0.0 && v.is_finite() { Ok(()) } else { fail(key, format!("{v} must be > 0")) };
        if let Some(lr) = self.lr.fixed() {
            positive("lr", lr)?;
        }
        if let Some(ratio) = self.warmup_ratio {
            if !(0.0..1.0).contains(&ratio) {
                return fail("warmup_ratio", format!("{ratio} must be in [0, 1)"));
            }
            if self.warmup_steps != 0 {
                return fail(
                    "warmup_ratio",
                    format!("set with train.warmup_steps = {}; keep one of them (warmup_steps = 0)", self.warmup_steps),
                );
            }
        }
        if self.packing == Packing::Documents && self.window_overlap * 2 > self.max_length {
            return fail(
                "window_overlap",
                format!("{} is more than half of train.max_length ({})", self.window_overlap, self.max_length),
            );
        }
        if self.batch_size == 0 {
            return fail("batch_size", "0; use at least 1 (course: 2)".into());
        }
        if self.grad_accum == 0 {
            return fail("grad_accum", "0; use at least 1 (course: 8)".into());
        }
        if self.max_length < 2 {
            return fail("max_length", format!("{} is too short; use at least 2 (course: 256)", self.max_length));
        }
        if self.epochs == 0 && self.max_steps.is_none() {
            return fail("epochs", "0 and no train.max_steps; nothing to train".into());
        }
        if self.max_steps == Some(0) {
            return fail("max_steps", "0; use at least 1, or remove it to train by epochs".into());
        }
        for (key, v) in [("adam_beta1", self.adam_beta1), ("adam_beta2", self.adam_beta2)] {
            if !(0.0..1.0).contains(&v) {
                return fail(key, format!("{v} must be in [0, 1)"));
            }
        }
        positive("adam_epsilon", self.adam_epsilon)?;
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return fail("weight_decay", format!("{} must be ≥ 0", self.weight_decay));
        }
        if !(self.max_grad_norm >= 0.0 && self.max_grad_norm.is_finite()) {
            return fail("max_grad_norm", format!("{} must be ≥ 0 (0 disables clipping)", self.max_grad_norm));
        }
        if self.keep_checkpoints == 0 {
            return fail("keep_checkpoints", "0; keep at least 1 so a run can resume".into());
        }
        if self.logging_every == 0 {
            return fail("logging_every", "0; use at least 1".into());
        }
        if self.checkpoint_every == 0 {
            return fail("checkpoint_every", "0; use at least 1 (a run is checkpointed every so many steps)".into());
        }
        Ok(())
    }
}
