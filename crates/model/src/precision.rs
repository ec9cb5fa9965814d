//! The format the model's weights are stored in, for inference.
//!
//! `f32` everywhere is the default and what the parity tests pin to
//! transformers at 1e-4. `bf16` is for inference on GPUs, like transformers'
//! `from_pretrained(..., dtype=torch.bfloat16)`: every weight is stored in
//! bf16, so the activations are bf16 too; the logits are read back as f32.
//! On the CPU backend, decoding's products and head stream the bf16
//! weights as they are (half of f32's bytes, summed in f32, rounded once:
//! `kernels/products.rs`); the other fused kernels are f32 only, so the rest
//! of a bf16 pass runs on Burn's composed ops.
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
    /// bfloat16 weights and activations (inference).
    Bf16,
    /// Q8_0 blocks for the `Conv1D` weights and `wte`, f32 around them (inference).
    Int8,
}

impl Precision {
    /// Burn's dtype for the float tensors it keeps (int8's are f32).
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
