//! The floating-point format the model computes in.
//!
//! `f32` everywhere is the default and what the parity tests pin to
//! transformers at 1e-4. `bf16` is for inference on GPUs, like transformers'
//! `from_pretrained(..., dtype=torch.bfloat16)`: every weight is stored in
//! bf16, so the activations are bf16 too; the logits are read back as f32.
//! On the CPU backends it runs (the tests check it there) but is not faster:
//! the fused kernels are f32 only, and Burn's CPU products widen bf16 to f32.

use std::fmt;
use std::str::FromStr;

use burn::module::{Module, ModuleMapper, Param};
use burn::prelude::*;
use burn::tensor::FloatDType;
use serde::{Deserialize, Serialize};

use crate::Gpt2;

/// The format of the weights and activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit floats (the default; training always keeps f32 weights).
    #[default]
    F32,
    /// bfloat16 weights and activations (inference).
    Bf16,
}

impl Precision {
    /// Burn's dtype for it.
    pub fn dtype(self) -> FloatDType {
        match self {
            Precision::F32 => FloatDType::F32,
            Precision::Bf16 => FloatDType::BF16,
        }
    }

    /// Whether this is the default, f32 (serde skips it, so that adding the
    /// setting left the fingerprints of f32 runs as they were).
    pub fn is_f32(&self) -> bool {
        *self == Precision::F32
    }

    /// `f32` or `bf16`, as written on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
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
            other => Err(format!("unknown precision `{other}`; the precisions are f32 and bf16")),
        }
    }
}

/// Casts every float parameter of a module to one dtype.
struct CastParams(FloatDType);

impl<B: Backend> ModuleMapper<B> for CastParams {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let dtype = self.0;
        param.map(|t| t.cast(dtype))
    }
}

impl<B: Backend> Gpt2<B> {
    /// The model with every weight in `precision` (a no-op for the format it
    /// is already in). For inference: training keeps f32 weights.
    pub fn with_precision(self, precision: Precision) -> Self {
        if self.precision() == precision {
            return self;
        }
        self.map(&mut CastParams(precision.dtype()))
    }

    /// The format the weights are in (that of `wte`).
    pub fn precision(&self) -> Precision {
        match self.wte.weight.dtype() {
            burn::tensor::DType::BF16 => Precision::Bf16,
            _ => Precision::F32,
        }
    }
}
