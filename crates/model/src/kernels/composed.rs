//! GPT-2's operations composed of Burn ops: the default of every
//! [`super::Gpt2Ops`] method (what runs on CUDA and NdArray), and the reference
//! the tests hold the kernels to.

use burn::prelude::*;
use burn::tensor::{Bool, TensorPrimitive, activation};

use super::dropout::Mask;
use crate::layout::Documents;

/// See [`super::Gpt2Ops::nll_sum`].
pub fn nll_sum<B: Backend>(logits: Tensor<B, 2>, targets: &[u32], weights: &[f32]) -> Tensor<B, 1> {
    let [n, _] = logits.dims();
    let device = logits.device();
    let targets: Vec<i64> = targets.iter().map(|&t| t as i64).collect();
    let targets = Tensor::<B, 2, Int>::from_data(TensorData::new(targets, [n, 1]), &device);
    let weights = Tensor::<B, 1>::from_data(TensorData::new(weights.to_vec(), [n]), &device);
    // Logits of a bf16 model are widened first, as transformers upcasts them for its loss.
    let logits = logits.cast(burn::tensor::FloatDType::F32);
    let picked = activation::log_softmax(logits, 1).gather(1, targets).reshape([n]);
    (picked * weights).sum().neg()
}

/// See [`super::Gpt2Ops::linear`]. Weights in another dtype than `x`
/// (bf16 weights under f32 activations: [`crate::Precision::Bf16`]): the
/// product in the weights' dtype, the result in `x`'s, then the bias.
pub fn linear<B: Backend>(x: Tensor<B, 2>, weight: Tensor<B, 2>, bias: Tensor<B, 1>) -> Tensor<B, 2> {
    let (dtype, low) = (x.dtype(), weight.dtype());
    if low != dtype {
        return x.cast(low).matmul(weight).cast(dtype) + bias.cast(dtype).unsqueeze();
    }
    burn::tensor::module::linear(x, weight, Some(bias))
}

/// See [`super::Gpt2Ops::tied_head`]. The transposed `wte` is a strided view
/// multiplied as is: no copy of the vocabulary-sized matrix per call. A
/// `wte` in another dtype than `hidden`: as [`linear`].
pub fn tied_head<B: Backend>(hidden: Tensor<B, 2>, wte: Tensor<B, 2>) -> Tensor<B, 2> {
    let (dtype, low) = (hidden.dtype(), wte.dtype());
    if low != dtype {
        return hidden.cast(low).matmul(wte.transpose()).cast(dtype);
    }
    hidden.matmul(wte.transpose())
}

/// See [`super::Gpt2Ops::attention_probs`].
pub fn attention_probs<B: Backend>(
    scores: Tensor<B, 4>,
    past: usize,
    pad: Option<Tensor<B, 2, Bool>>,
    divisor: f32,
    mask: Mask,
) -> Tensor<B, 4> {
    probs_hiding(scores, past, pad, None, divisor, mask)
}

/// [`attention_probs`], the keys of `earlier [b, t, total]` (true = hidden) hidden too.
fn probs_hiding<B: Backend>(
    scores: Tensor<B, 4>,
    past: usize,
    pad: Option<Tensor<B, 2, Bool>>,
    earlier: Option<Tensor<B, 3, Bool>>,
    divisor: f32,
    mask: Mask,
) -> Tensor<B, 4> {
    let [b, h, t, total] = scores.dims();
    let scores = if divisor == 1.0 { scores } else { scores / divisor as f64 };
    // Query i (absolute position past + i) sees keys 0 ..= past + i.
    let causal = Tensor::<B, 2, Bool>::tril_mask([t, total], past as i64, &scores.device()); // true = hidden
    if pad.is_none() && earlier.is_none() {
        let scores = scores.mask_fill(causal.unsqueeze::<4>().expand([b, h, t, total]), f32::NEG_INFINITY);
        return mask.apply(activation::softmax(scores, 3));
    }
    let mut hidden = causal.unsqueeze::<4>().expand([b, 1, t, total]); // [b, 1, t, total]
    if let Some(pad) = pad {
        hidden = hidden.bool_or(pad.reshape([b, 1, 1, total]));
    }
    if let Some(earlier) = earlier {
        hidden = hidden.bool_or(earlier.unsqueeze_dim::<4>(1));
    }
    // Left padding can hide every key of a query: its softmax would be NaN,
    // which the next layer's `probs · v` spreads to every row. Zeros, as the
    // fused kernel gives.
    let blind = hidden.clone().all_dim(3).expand([b, h, t, total]);
    let scores = scores.mask_fill(hidden.expand([b, h, t, total]), f32::NEG_INFINITY);
    mask.apply(activation::softmax(scores, 3).mask_fill(blind, 0.0))
}

/// See [`super::Gpt2Ops::causal_attention`].
pub fn causal_attention<B: Backend>(
    qkv: Tensor<B, 3>,
    n_head: usize,
    pad: Option<Tensor<B, 2, Bool>>,
    documents: Option<&Documents>,
    divisor: f32,
    mask: Mask,
) -> Tensor<B, 3> {
    let earlier = documents.map(|d| d.earlier_documents::<B>(&qkv.device())); // [b, t, t]
    let [q, k, v] = split_heads(qkv, n_head);
    let probs = probs_hiding(q.matmul(k.swap_dims(2, 3)), 0, pad, earlier, divisor, mask);
    merge_heads(probs.matmul(v))
}

/// See [`super::Gpt2Ops::cached_attention`]: each row alone, its query
/// against the filled positions of its cache.
pub fn cached_attention<B: Backend>(
    q: Tensor<B, 2>,
    rows: Vec<super::CachedRow<B>>,
    n_head: usize,
    divisor: f32,
) -> Tensor<B, 2> {
    let [n, c] = q.dims();
    let outputs = rows.into_iter().enumerate().map(|(i, row)| {
        let q = q.clone().slice(s![i..i + 1]).reshape([1, n_head, 1, c / n_head]);
        let (k, v) = (row.keys.slice(s![.., .., 0..row.len]), row.values.slice(s![.., .., 0..row.len]));
        let probs = attention_probs(q.matmul(k.swap_dims(2, 3)), row.len - 1, None, divisor, Mask::Off);
        merge_heads(probs.matmul(v)).reshape([1, c])
    });
    let y = Tensor::cat(outputs.collect(), 0);
    debug_assert_eq!(y.dims(), [n, c]);
    y
}

/// `qkv [b, t, 3c]` → q, k, v, each `[b, h, t, c / h]`.
pub fn split_heads<B: Backend>(qkv: Tensor<B, 3>, n_head: usize) -> [Tensor<B, 4>; 3] {
    let [b, t, c3] = qkv.dims();
    let hd = c3 / 3 / n_head;
    let mut parts = qkv.chunk(3, 2).into_iter().map(|part| part.reshape([b, t, n_head, hd]).swap_dims(1, 2));
    [(); 3].map(|_| parts.next().expect("three parts"))
}

/// `[b, h, t, hd]` → `[b, t, h·hd]`: the heads side by side.
pub fn merge_heads<B: Backend>(y: Tensor<B, 4>) -> Tensor<B, 3> {
    let [b, h, t, hd] = y.dims();
    y.swap_dims(1, 2).reshape([b, t, h * hd])
}

/// See [`super::Gpt2Ops::gelu_new`]; computed as the identical `x · σ(2√(2/π)(x +
/// 0.044715x³))`: one sigmoid instead of a power, a tanh and three passes.
pub fn gelu_new<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    const TWO_SQRT_2_OVER_PI: f64 = 2.0 * 0.797_884_560_802_865_4;
    let cube = x.clone() * x.clone() * x.clone();
    let inner = (x.clone() + cube * 0.044715) * TWO_SQRT_2_OVER_PI;
    x * activation::sigmoid(inner)
}

/// See [`super::Gpt2Ops::layer_norm`].
pub fn layer_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 1>,
    bias: Tensor<B, 1>,
    eps: f64,
) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(B::layer_norm(
        x.into_primitive().tensor(),
        weight.into_primitive().tensor(),
        Some(bias.into_primitive().tensor()),
        eps,
    )))
}
