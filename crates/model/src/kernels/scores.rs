//! The attention probabilities of the cached, generating path: scaling, the
//! causal and padding masks, softmax and dropout of the scores in one parallel
//! pass per direction.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, unary};
use burn::backend::flex::{Flex, FlexTensor};
use burn::prelude::*;
use burn::tensor::{Bool, TensorMetadata};
use rayon::prelude::*;

use super::composed;
use super::dropout::{HostMask, Mask};
use super::host::{
    Ad, contiguous, float, host, host_pad, into_values, is_f32, new_tensor, record, rows_per_task, tensor, values,
};
use super::simd::{masked_softmax, softmax_backward};

/// [`super::Gpt2Ops::attention_probs`] on Flex.
pub(super) fn flex(
    scores: Tensor<Flex, 4>,
    past: usize,
    pad: Option<Tensor<Flex, 2, Bool>>,
    divisor: f32,
    mask: Mask,
) -> Tensor<Flex, 4> {
    if !is_f32(&scores) || matches!(mask, Mask::Device(_)) {
        return composed::attention_probs(scores, past, pad, divisor, mask);
    }
    let geometry = Geometry::of(&scores, past, divisor);
    let pad = host_pad(pad);
    let (out, _) = attention_forward(host(scores), &geometry, pad.as_deref(), mask.host());
    tensor(out)
}

/// [`super::Gpt2Ops::attention_probs`] on Flex under autodiff.
pub(super) fn autodiff(
    scores: Tensor<Ad, 4>,
    past: usize,
    pad: Option<Tensor<Ad, 2, Bool>>,
    divisor: f32,
    mask: Mask,
) -> Tensor<Ad, 4> {
    if !is_f32(&scores) || matches!(mask, Mask::Device(_)) {
        return composed::attention_probs(scores, past, pad, divisor, mask);
    }
    let geometry = Geometry::of(&scores, past, divisor);
    let pad = host_pad(pad);
    let scores = float(scores);
    let mask = mask.host();
    let (out, probs) = attention_forward(contiguous(scores.primitive), &geometry, pad.as_deref(), mask);
    let state = AttentionState { probs, mask, divisor };
    let op = AttentionBackward.prepare::<NoCheckpointing>([scores.node.clone()]).compute_bound().stateful();
    tensor(record(op, state, out))
}

/// The shape of one call: query `i` (of `t`) is position `past + i` among `total` keys.
struct Geometry {
    h: usize,
    t: usize,
    total: usize,
    past: usize,
    divisor: f32,
}

impl Geometry {
    fn of<B: Backend>(scores: &Tensor<B, 4>, past: usize, divisor: f32) -> Self {
        let [_, h, t, total] = scores.dims();
        Self { h, t, total, past, divisor }
    }
}

/// The output (after dropout) and the probabilities (before).
fn attention_forward(
    scores: FlexTensor,
    g: &Geometry,
    pad: Option<&[u8]>,
    mask: Option<HostMask>,
) -> (FlexTensor, FlexTensor) {
    let shape = scores.shape();
    let (mut out, _) = into_values(scores);
    out.par_chunks_mut(g.total).with_min_len(rows_per_task(g.total)).enumerate().for_each(|(row, s)| {
        let (batch, i) = (row / (g.h * g.t), row % g.t);
        let pad = pad.map(|p| &p[batch * g.total..(batch + 1) * g.total]);
        masked_softmax(s, g.divisor, g.past + i + 1, pad);
    });
    let probs = new_tensor(out, shape.clone());
    match mask {
        None => (probs.clone(), probs),
        Some(mask) => {
            let p = values(&probs);
            let mut dropped = vec![0.0f32; p.len()];
            dropped.par_chunks_mut(g.total).with_min_len(rows_per_task(g.total)).enumerate().for_each(|(row, d)| {
                let start = row * g.total;
                mask.apply(start as u64, &p[start..start + g.total], d);
            });
            (new_tensor(dropped, shape), probs)
        }
    }
}

#[derive(Debug, Clone)]
struct AttentionState {
    probs: FlexTensor,
    mask: Option<HostMask>,
    divisor: f32,
}

#[derive(Debug)]
struct AttentionBackward;

impl Backward<Flex, 1> for AttentionBackward {
    type State = AttentionState;

    fn backward(self, ops: Ops<AttentionState, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let AttentionState { probs, mask, divisor } = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
            let total = *probs.shape().last().expect("rank 4");
            let p = values(&probs);
            let (mut g, shape) = into_values(grad);
            g.par_chunks_mut(total).with_min_len(rows_per_task(total)).enumerate().for_each(|(row, gr)| {
                if let Some(mask) = mask {
                    let base = (row * total) as u64;
                    for (j, v) in gr.iter_mut().enumerate() {
                        *v *= mask.factor(base + j as u64);
                    }
                }
                softmax_backward(&p[row * total..(row + 1) * total], divisor, gr);
            });
            new_tensor(g, shape)
        });
    }
}
