//! GPT-2's operations as a backend extension, and the CPU kernels behind them.
//!
//! [`Gpt2Ops`] follows Burn's pattern for custom kernels (its
//! `custom-*-kernel` examples): a trait on the backend whose methods are the
//! operations the model needs, each with a default body composed of Burn ops
//! ([`composed`]: what runs on CUDA and NdArray, and the reference the tests
//! hold the kernels to). Burn's CPU backend, `Flex`, with and without
//! autodiff, overrides them with fused kernels, each with its own backward:
//!
//! - [`nll`]: the weighted sum of next-token negative log-likelihoods from
//!   the logits;
//! - [`causal`]: the whole attention of a block from its fused `q, k, v`;
//! - [`scores`]: the attention probabilities of the cached, generating path;
//! - [`gelu`], [`layer_norm`];
//! - [`products`]: decoding's few-row products (f32 weights through
//!   [`tiles`], bf16 ones through [`bf16`]), and the tied head's `wte`
//!   gradient for the trained rows only;
//! - [`adamw`]: the optimiser's step, parameter and moments in one pass.
//!
//! One parallel, vectorised pass per direction ([`simd`]) instead of several
//! composed ops each. The kernels work row by row and sum in a fixed order, so
//! their results do not depend on the number of threads; they take f32
//! activations (bf16 ones go to the composed ops). [`q8`] and [`bf16`] are the
//! products with compact weights.
//!
//! Nothing here chooses on its own: the model calls these through a
//! [`crate::Pass`], which says whether the kernels or the composed ops run,
//! the products' precision, `wte`'s trained rows and the dropout masks.

pub mod adamw;
pub mod bf16;
pub mod composed;
mod dropout;
mod host;
mod simd;

mod causal;
mod decoding;
mod gelu;
mod layer_norm;
mod nll;
mod products;
pub mod q8;
mod rows;
mod scores;
mod tiles;

use burn::backend::Autodiff;
use burn::backend::flex::Flex;
use burn::prelude::*;
use burn::tensor::Bool;
use burn::tensor::backend::AutodiffBackend;

pub use adamw::AdamWStep;
pub use dropout::{Dropout, DropoutStream, HostMask, Mask};
pub use products::{BF16_STREAMED_ROWS, FEW_ROWS};

use crate::layout::Documents;

/// Runs `work` on a thread of rayon's pool, its caller waiting for it once.
/// The kernels' parallel loops inside it then share their work with the
/// pool's other threads, which keep looking for work between two loops,
/// instead of each loop being sent to the pool from outside, the caller put
/// to sleep and woken again: a generated token is about a hundred loops.
/// Inside the pool already, `work` runs where it is.
pub fn on_pool<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| work())
}

/// One row's cache as [`Gpt2Ops::cached_attention`] reads it: keys and
/// values `[1, h, capacity, hd]`, of which the first `len` positions are filled.
#[derive(Debug, Clone)]
pub struct CachedRow<B: Backend> {
    /// The keys.
    pub keys: Tensor<B, 4>,
    /// The values.
    pub values: Tensor<B, 4>,
    /// The positions filled.
    pub len: usize,
}

/// The operations of GPT-2 that a backend may implement with its own kernels.
/// Every method defaults to the composed Burn ops of [`composed`].
///
/// # Shapes
/// As in each method's doc; `pad` is true at padding keys.
pub trait Gpt2Ops: Backend {
    /// Whether dropout masks are drawn on the host (see [`Mask`]): on the CPU
    /// backends, one counter-based draw per element is several times cheaper
    /// than the backend's scalar Bernoulli sampler.
    const HOST_DROPOUT: bool = false;

    /// Σᵢ wᵢ · −log softmax(logitsᵢ)[targetsᵢ] over the rows of `logits [n,
    /// vocab]`, as a one-element tensor; rows of weight 0 contribute nothing.
    fn nll_sum(logits: Tensor<Self, 2>, targets: &[u32], weights: &[f32]) -> Tensor<Self, 1> {
        composed::nll_sum(logits, targets, weights)
    }

    /// `softmax(scores / divisor)` over the keys each query may see, then
    /// `mask`: `scores [b, h, t, past + t]` (query `i` is position `past + i`
    /// and sees keys `0 ..= past + i`), `pad [b, past + t]`. A query that sees
    /// no key gets zeros.
    fn attention_probs(
        scores: Tensor<Self, 4>,
        past: usize,
        pad: Option<Tensor<Self, 2, Bool>>,
        divisor: f32,
        mask: Mask,
    ) -> Tensor<Self, 4> {
        composed::attention_probs(scores, past, pad, divisor, mask)
    }

    /// Causal self-attention of `qkv [b, t, 3c]` (q, k, v along the last axis,
    /// `n_head` heads each): `softmax(q kᵀ / divisor)` over the keys at or
    /// before each query, in its own document when `documents` are packed,
    /// not hidden by `pad [b, t]`; then `mask`, times `v`, heads side by side
    /// → `[b, t, c]`. A query that sees no key at all (left padding) gets zeros.
    fn causal_attention(
        qkv: Tensor<Self, 3>,
        n_head: usize,
        pad: Option<Tensor<Self, 2, Bool>>,
        documents: Option<&Documents>,
        divisor: f32,
        mask: Mask,
    ) -> Tensor<Self, 3> {
        composed::causal_attention(qkv, n_head, pad, documents, divisor, mask)
    }

    /// GPT-2's `gelu_new`, `½x(1 + tanh(√(2/π)(x + 0.044715x³)))`.
    fn gelu_new<const D: usize>(x: Tensor<Self, D>) -> Tensor<Self, D> {
        composed::gelu_new(x)
    }

    /// `nn.LayerNorm` over the last dimension (biased variance, like torch).
    fn layer_norm<const D: usize>(
        x: Tensor<Self, D>,
        weight: Tensor<Self, 1>,
        bias: Tensor<Self, 1>,
        eps: f64,
    ) -> Tensor<Self, D> {
        composed::layer_norm(x, weight, bias, eps)
    }

    /// HF's `Conv1D`: `x [m, k] · weight [k, n] + bias [n]`.
    fn linear(x: Tensor<Self, 2>, weight: Tensor<Self, 2>, bias: Tensor<Self, 1>) -> Tensor<Self, 2> {
        composed::linear(x, weight, bias)
    }

    /// One decoding step's attention: row `i`'s query `q[i]` (of `q [n, c]`,
    /// `n_head` heads side by side) against the first `rows[i].len`
    /// positions of its own cache, `softmax(q kᵀ / divisor) v`, the heads
    /// side by side → `[n, c]`. No dropout (generation only).
    fn cached_attention(
        q: Tensor<Self, 2>,
        rows: Vec<CachedRow<Self>>,
        n_head: usize,
        divisor: f32,
    ) -> Tensor<Self, 2> {
        composed::cached_attention(q, rows, n_head, divisor)
    }

    /// `buffer [b, h, capacity, hd]` with `values [b, h, t, hd]` written at
    /// the positions `at .. at + t`: a cache's new keys or values. In place
    /// when nothing else holds `buffer` (Flex), else a copy.
    fn write_positions(buffer: Tensor<Self, 4>, values: Tensor<Self, 4>, at: usize) -> Tensor<Self, 4> {
        let t = values.dims()[2];
        buffer.slice_assign(burn::tensor::s![.., .., at..at + t], values)
    }

    /// A `Conv1D` weight `[in, out]` laid out for decoding, the same values
    /// ([`crate::Gpt2::for_decoding`]): as it is by default; on Flex, f32
    /// weights stored `[out, in]` and seen transposed, which
    /// [`Self::linear`]'s few-row kernel streams row by row.
    fn decoding_layout(weight: Tensor<Self, 2>) -> Tensor<Self, 2> {
        weight
    }

    /// The logits of the tied head: `hidden [m, c] · wteᵀ` with `wte [vocab,
    /// c]`. `trained_from`: of `wte`, only the rows from this one on train, so
    /// a backend may skip the other rows' gradient (the trainer never reads it).
    fn tied_head(hidden: Tensor<Self, 2>, wte: Tensor<Self, 2>, trained_from: Option<usize>) -> Tensor<Self, 2> {
        let _ = trained_from;
        composed::tied_head(hidden, wte)
    }

    /// One AdamW step of a flattened parameter from its gradient and moments:
    /// `[param, m, v]` after it (see [`AdamWStep`]; [`adamw::composed`]).
    fn adamw(
        param: Tensor<Self, 1>,
        grad: Tensor<Self, 1>,
        m: Tensor<Self, 1>,
        v: Tensor<Self, 1>,
        step: &AdamWStep,
    ) -> [Tensor<Self, 1>; 3] {
        adamw::composed(param, grad, m, v, step)
    }
}

impl Gpt2Ops for Flex {
    const HOST_DROPOUT: bool = true;

    fn nll_sum(logits: Tensor<Self, 2>, targets: &[u32], weights: &[f32]) -> Tensor<Self, 1> {
        nll::flex(logits, targets, weights)
    }

    fn attention_probs(
        scores: Tensor<Self, 4>,
        past: usize,
        pad: Option<Tensor<Self, 2, Bool>>,
        divisor: f32,
        mask: Mask,
    ) -> Tensor<Self, 4> {
        scores::flex(scores, past, pad, divisor, mask)
    }

    fn causal_attention(
        qkv: Tensor<Self, 3>,
        n_head: usize,
        pad: Option<Tensor<Self, 2, Bool>>,
        documents: Option<&Documents>,
        divisor: f32,
        mask: Mask,
    ) -> Tensor<Self, 3> {
        causal::flex(qkv, n_head, pad, documents, divisor, mask)
    }

    fn gelu_new<const D: usize>(x: Tensor<Self, D>) -> Tensor<Self, D> {
        gelu::flex(x)
    }

    // layer_norm: Flex's own is already one fused pass.

    fn linear(x: Tensor<Self, 2>, weight: Tensor<Self, 2>, bias: Tensor<Self, 1>) -> Tensor<Self, 2> {
        products::flex_linear(x, weight, bias)
    }

    fn decoding_layout(weight: Tensor<Self, 2>) -> Tensor<Self, 2> {
        products::by_rows(weight)
    }

    fn write_positions(buffer: Tensor<Self, 4>, values: Tensor<Self, 4>, at: usize) -> Tensor<Self, 4> {
        host::write_positions(buffer, values, at)
    }

    fn cached_attention(
        q: Tensor<Self, 2>,
        rows: Vec<CachedRow<Self>>,
        n_head: usize,
        divisor: f32,
    ) -> Tensor<Self, 2> {
        decoding::flex(q, rows, n_head, divisor)
    }

    fn tied_head(hidden: Tensor<Self, 2>, wte: Tensor<Self, 2>, _: Option<usize>) -> Tensor<Self, 2> {
        products::flex_head(hidden, wte)
    }

    fn adamw(
        param: Tensor<Self, 1>,
        grad: Tensor<Self, 1>,
        m: Tensor<Self, 1>,
        v: Tensor<Self, 1>,
        step: &AdamWStep,
    ) -> [Tensor<Self, 1>; 3] {
        adamw::flex(param, grad, m, v, step)
    }
}

impl Gpt2Ops for Autodiff<Flex> {
    const HOST_DROPOUT: bool = true;

    fn nll_sum(logits: Tensor<Self, 2>, targets: &[u32], weights: &[f32]) -> Tensor<Self, 1> {
        nll::autodiff(logits, targets, weights)
    }

    fn attention_probs(
        scores: Tensor<Self, 4>,
        past: usize,
        pad: Option<Tensor<Self, 2, Bool>>,
        divisor: f32,
        mask: Mask,
    ) -> Tensor<Self, 4> {
        scores::autodiff(scores, past, pad, divisor, mask)
    }

    fn causal_attention(
        qkv: Tensor<Self, 3>,
        n_head: usize,
        pad: Option<Tensor<Self, 2, Bool>>,
        documents: Option<&Documents>,
        divisor: f32,
        mask: Mask,
    ) -> Tensor<Self, 3> {
        causal::autodiff(qkv, n_head, pad, documents, divisor, mask)
    }

    fn gelu_new<const D: usize>(x: Tensor<Self, D>) -> Tensor<Self, D> {
        gelu::autodiff(x)
    }

    fn layer_norm<const D: usize>(
        x: Tensor<Self, D>,
        weight: Tensor<Self, 1>,
        bias: Tensor<Self, 1>,
        eps: f64,
    ) -> Tensor<Self, D> {
        layer_norm::autodiff(x, weight, bias, eps)
    }

    // linear: the general product, which autodiff differentiates as one.

    fn tied_head(hidden: Tensor<Self, 2>, wte: Tensor<Self, 2>, trained_from: Option<usize>) -> Tensor<Self, 2> {
        products::autodiff_head(hidden, wte, trained_from)
    }
}

/// A backend GPT-2 trains on: autodiff with the model's operations, over a
/// backend that has them too (evaluation and export run there).
pub trait TrainBackend: AutodiffBackend<InnerBackend: Gpt2Ops> + Gpt2Ops {}

impl<B: AutodiffBackend<InnerBackend: Gpt2Ops> + Gpt2Ops> TrainBackend for B {}

// The other backends run the composed ops.
#[cfg(feature = "ndarray")]
mod ndarray {
    use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
    use burn::backend::{Autodiff, NdArray};

    impl super::Gpt2Ops for NdArray {
        const HOST_DROPOUT: bool = true;
    }
    impl<C: CheckpointStrategy> super::Gpt2Ops for Autodiff<NdArray, C> {
        const HOST_DROPOUT: bool = true;
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
    use burn::backend::{Autodiff, Cuda};

    impl super::Gpt2Ops for Cuda {}
    impl<C: CheckpointStrategy> super::Gpt2Ops for Autodiff<Cuda, C> {}
}
