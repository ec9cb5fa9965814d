//! The format the model's weights are stored in, for inference.
//!
//! `f32` everywhere is the default and what the parity tests pin to
//! transformers at 1e-4.
//!
//! `bf16` stores the `Conv1D` weights and `wte` (also the tied head) in
//! bf16, half of f32's bytes; `wpe`, the norms, the biases, the activations
//! and the KV cache stay f32, as in llama.cpp's bf16 models. Each product
//! rounds its input to bf16 and sums the exact products in f32, as
//! AVX512-BF16's `vdpbf16ps` does ([`crate::kernels::bf16`], which decoding
//! runs on; a GPU multiplies in bf16 natively). A LoRA adapter is merged first.
//!
//! `int8` stores the `Conv1D` weights and `wte` (also the tied head) as
//! llama.cpp's Q8_0 blocks ([`crate::q8`]), 8.5 bits a weight; `wpe`, the
//! norms, the biases, the activations and the KV cache stay f32. The
//! products read the blocks directly ([`crate::kernels::q8`]): decoding
//! reads a quarter of f32's bytes a token. A LoRA adapter is merged first.

use std::fmt;
use std::str::FromStr;

use burn::tensor::FloatDType;
use serde::{Deserialize, Serialize};

/// The format of the weights and activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit floats (the default; training always keeps f32 weights).
    #[default]
    F32,
    /// bfloat16 for the `Conv1D` weights and `wte`, f32 around them (inference).
    Bf16,
    /// Q8_0 blocks for the `Conv1D` weights and `wte`, f32 around them (inference).
    Int8,
}

impl Precision {
    /// The dtype of the products' inputs: bf16 for bf16 (the weights under
    /// inference, the autocast products in training), else f32.
    pub fn dtype(self) -> FloatDType {
        match self {
            Precision::F32 | Precision::Int8 => FloatDType::F32,
            Precision::Bf16 => FloatDType::BF16,
        }
    }

    /// Whether this is the default, f32 (serde skips it, so that adding the
    /// setting left the fingerprints of f32 runs as they were).
    pub fn is_f32(&self) -> bool {
        *self == Precision::F32
    }

    /// `f32`, `bf16` or `int8`, as written on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            "int8" => Ok(Precision::Int8),
            other => Err(format!("unknown precision `{other}`; the precisions are f32, bf16 and int8")),
        }
    }
}
