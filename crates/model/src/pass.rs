//! One forward pass's settings: everything besides the weights and the inputs
//! that decides what the model computes, passed to every module's `forward`.
//!
//! A pass runs each operation through the backend's [`Gpt2Ops`] kernels or
//! the [`composed`] Burn ops, multiplies in f32 or under autocast, knows which
//! rows of `wte` train, and draws dropout masks from its own stream (training)
//! or none (inference, evaluation).

use std::fmt;
use std::str::FromStr;

use burn::prelude::*;
use burn::tensor::{Bool, DType, FloatDType};

use crate::kernels::{Dropout, DropoutStream, Gpt2Ops, Mask, composed};
use crate::layout::Documents;
use crate::precision::Precision;

/// Which implementation of the operations runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// The backend's own ([`Gpt2Ops`]): fused kernels on the CPU backend, the
    /// composed ops elsewhere.
    Backend,
    /// The composed Burn ops on every backend: the kernels' reference, and the
    /// benchmark's measure of what the kernels bring.
    Composed,
}

impl Kernels {
    /// `backend` or `composed`, as written on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Kernels::Backend => "backend",
            Kernels::Composed => "composed",
        }
    }
}

impl fmt::Display for Kernels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Kernels {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "backend" => Ok(Kernels::Backend),
            "composed" => Ok(Kernels::Composed),
            other => Err(format!("unknown kernels `{other}`: expected `backend` or `composed`")),
        }
    }
}

/// The settings of one forward pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Pass {
    /// The implementation of the operations.
    pub kernels: Kernels,
    /// The precision of the matrix products of every `Conv1D` and of the tied
    /// head, on f32 inputs and weights, their results widened back to f32:
    /// PyTorch's `torch.autocast(dtype=bfloat16)` for GPT-2, where the weights,
    /// their gradients and the optimiser stay f32. Layer norms, the attention,
    /// `gelu_new` and the loss stay f32 (autocast keeps the norms, softmax and
    /// loss in f32; it would run the attention's products in bf16). The casts
    /// are recorded by autodiff, so the gradients flow back through them.
    /// `F32`: no autocast.
    pub autocast: Precision,
    /// Of `wte`, the first row that trains when only the last rows do (the
    /// added names under `wte = "pretrained-rows"`); `None`: all rows, or none.
    /// The values are the same either way; the backward may skip the other
    /// rows' gradient.
    pub wte_trained_from: Option<usize>,
    /// Where dropout masks come from; `None`: no dropout.
    pub dropout: Option<DropoutStream>,
}

impl Pass {
    /// Inference or evaluation: the backend's kernels, f32, no dropout.
    pub fn inference() -> Self {
        Self { kernels: Kernels::Backend, autocast: Precision::F32, wte_trained_from: None, dropout: None }
    }

    /// Training: dropout masks drawn from a stream seeded with `dropout_seed`.
    pub fn training(dropout_seed: u64) -> Self {
        Self { dropout: Some(DropoutStream::new(dropout_seed)), ..Self::inference() }
    }

    /// The same pass with the operations of `kernels`.
    pub fn with_kernels(self, kernels: Kernels) -> Self {
        Self { kernels, ..self }
    }

    /// The same pass with the products under `autocast`.
    pub fn with_autocast(self, autocast: Precision) -> Self {
        Self { autocast, ..self }
    }

    /// The same pass knowing that `wte`'s rows from `from` on are the ones that train.
    pub fn with_wte_trained_from(self, from: Option<usize>) -> Self {
        Self { wte_trained_from: from, ..self }
    }

    /// The mask of the next dropout site of rate `dropout.p` (drawn now, in
    /// the order the sites run).
    pub fn mask<B: Gpt2Ops>(&mut self, dropout: Dropout) -> Mask {
        match &mut self.dropout {
            Some(stream) if dropout.p > 0.0 => {
                if B::HOST_DROPOUT {
                    Mask::Host(stream.next_host(dropout.p))
                } else {
                    Mask::Device(dropout.p)
                }
            }
            _ => Mask::Off,
        }
    }

    /// Whether the dropout site `dropout` drops anything in this pass.
    pub fn drops(&self, dropout: Dropout) -> bool {
        self.dropout.is_some() && dropout.p > 0.0
    }

    /// One decoding step's attention ([`Gpt2Ops::cached_attention`]): the
    /// backend's kernel or the composed ops, as [`Self::attention_probs`].
    pub fn cached_attention<B: Gpt2Ops>(
        &self,
        q: Tensor<B, 2>,
        rows: Vec<crate::kernels::CachedRow<B>>,
        n_head: usize,
        divisor: f32,
    ) -> Tensor<B, 2> {
        match self.kernels {
            Kernels::Backend => <B as Gpt2Ops>::cached_attention(q, rows, n_head, divisor),
            Kernels::Composed => composed::cached_attention(q, rows, n_head, divisor),
        }
    }

    /// Dropout of `x` at `dropout`'s rate.
    pub fn dropout<B: Gpt2Ops, const D: usize>(&mut self, dropout: Dropout, x: Tensor<B, D>) -> Tensor<B, D> {
        self.mask::<B>(dropout).apply(x)
    }

    /// The dtype of the products of `x` under autocast, if not f32.
    fn autocast_dtype<B: Backend, const D: usize>(&self, x: &Tensor<B, D>) -> Option<FloatDType> {
        (self.autocast != Precision::F32 && x.dtype() == DType::F32).then(|| self.autocast.dtype())
    }

    /// See [`Gpt2Ops::nll_sum`].
    pub fn nll_sum<B: Gpt2Ops>(&self, logits: Tensor<B, 2>, targets: &[u32], weights: &[f32]) -> Tensor<B, 1> {
        let [n, vocab] = logits.dims();
        assert_eq!((targets.len(), weights.len()), (n, n), "one target and one weight per row");
        assert!(targets.iter().all(|&t| (t as usize) < vocab), "targets within the vocabulary");
        match self.kernels {
            Kernels::Backend => <B as Gpt2Ops>::nll_sum(logits, targets, weights),
            Kernels::Composed => composed::nll_sum(logits, targets, weights),
        }
    }

    /// See [`Gpt2Ops::attention_probs`]; dropout at `dropout`'s rate.
    pub fn attention_probs<B: Gpt2Ops>(
        &mut self,
        scores: Tensor<B, 4>,
        past: usize,
        pad: Option<Tensor<B, 2, Bool>>,
        divisor: f32,
        dropout: Dropout,
    ) -> Tensor<B, 4> {
        let mask = self.mask::<B>(dropout);
        match self.kernels {
            Kernels::Backend => <B as Gpt2Ops>::attention_probs(scores, past, pad, divisor, mask),
            Kernels::Composed => composed::attention_probs(scores, past, pad, divisor, mask),
        }
    }

    /// See [`Gpt2Ops::causal_attention`]; dropout at `dropout`'s rate.
    pub fn causal_attention<B: Gpt2Ops>(
        &mut self,
        qkv: Tensor<B, 3>,
        n_head: usize,
        pad: Option<Tensor<B, 2, Bool>>,
        documents: Option<&Documents>,
        divisor: f32,
        dropout: Dropout,
    ) -> Tensor<B, 3> {
        let mask = self.mask::<B>(dropout);
        match self.kernels {
            Kernels::Backend => <B as Gpt2Ops>::causal_attention(qkv, n_head, pad, documents, divisor, mask),
            Kernels::Composed => composed::causal_attention(qkv, n_head, pad, documents, divisor, mask),
        }
    }

    /// See [`Gpt2Ops::gelu_new`].
    pub fn gelu_new<B: Gpt2Ops, const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self.kernels {
            Kernels::Backend => <B as Gpt2Ops>::gelu_new(x),
            Kernels::Composed => composed::gelu_new(x),
        }
    }

    /// See [`Gpt2Ops::layer_norm`].
    pub fn layer_norm<B: Gpt2Ops, const D: usize>(
        &self,
        x: Tensor<B, D>,
        weight: Tensor<B, 1>,
        bias: Tensor<B, 1>,
        eps: f64,
    ) -> Tensor<B, D> {
        match self.kernels {
            Kernels::Backend => <B as Gpt2Ops>::layer_norm(x, weight, bias, eps),
            Kernels::Composed => composed::layer_norm(x, weight, bias, eps),
        }
    }

    /// See [`Gpt2Ops::linear`]; under autocast, the product in its precision.
    pub fn linear<B: Gpt2Ops>(&self, x: Tensor<B, 2>, weight: Tensor<B, 2>, bias: Tensor<B, 1>) -> Tensor<B, 2> {
        if let Some(low) = self.autocast_dtype(&x) {
            return composed::linear(x.cast(low), weight.cast(low), bias.cast(low)).cast(FloatDType::F32);
        }
        match self.kernels {
            Kernels::Backend => <B as Gpt2Ops>::linear(x, weight, bias),
            Kernels::Composed => composed::linear(x, weight, bias),
        }
    }

    /// A LoRA adapter's share of its layer's output: `x [n, in]` →
    /// `(dropout(x) Aᵀ) Bᵀ · scaling [n, out]` with `a [r, in]`, `b [out, r]`,
    /// the two thin products under autocast as the layer's own.
    pub fn lora<B: Gpt2Ops>(
        &mut self,
        x: Tensor<B, 2>,
        a: Tensor<B, 2>,
        b: Tensor<B, 2>,
        scaling: f64,
        dropout: Dropout,
    ) -> Tensor<B, 2> {
        let x = self.dropout(dropout, x);
        if let Some(low) = self.autocast_dtype(&x) {
            let down = x.cast(low).matmul(a.cast(low).transpose()); // [n, r]
            return (down.matmul(b.cast(low).transpose()).cast(FloatDType::F32)) * scaling; // [n, out]
        }
        x.matmul(a.transpose()).matmul(b.transpose()) * scaling // [n, r] → [n, out]
    }

    /// See [`Gpt2Ops::tied_head`]; under autocast, the product in its precision.
    pub fn tied_head<B: Gpt2Ops>(&self, hidden: Tensor<B, 2>, wte: Tensor<B, 2>) -> Tensor<B, 2> {
        if let Some(low) = self.autocast_dtype(&hidden) {
            return composed::tied_head(hidden.cast(low), wte.cast(low)).cast(FloatDType::F32);
        }
        match self.kernels {
            Kernels::Backend => <B as Gpt2Ops>::tied_head(hidden, wte, self.wte_trained_from),
            Kernels::Composed => composed::tied_head(hidden, wte),
        }
    }
}
