//! The cross-entropy of the next-token logits: log-softmax, gather, the
//! weighted sum, and their backward, one parallel pass over the logits each.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, unary};
use burn::backend::flex::{Flex, FlexTensor};
use burn::prelude::*;
use burn::tensor::TensorMetadata;
use rayon::prelude::*;

use super::composed;
use super::host::{Ad, contiguous, float, host, into_values, is_f32, new_tensor, record, tensor, values};
use super::simd::{log_sum_exp, scaled_softmax};

/// [`super::Gpt2Ops::nll_sum`] on Flex.
pub(super) fn flex(logits: Tensor<Flex, 2>, targets: &[u32], weights: &[f32]) -> Tensor<Flex, 1> {
    if !is_f32(&logits) {
        return composed::nll_sum(logits, targets, weights);
    }
    let (loss, _) = nll_forward(&host(logits), targets, weights);
    tensor(loss)
}

/// [`super::Gpt2Ops::nll_sum`] on Flex under autodiff.
pub(super) fn autodiff(logits: Tensor<Ad, 2>, targets: &[u32], weights: &[f32]) -> Tensor<Ad, 1> {
    if !is_f32(&logits) {
        return composed::nll_sum(logits, targets, weights);
    }
    let logits = float(logits);
    let x = contiguous(logits.primitive);
    let (loss, lse) = nll_forward(&x, targets, weights);
    let state = NllState { logits: x, lse, targets: targets.to_vec(), weights: weights.to_vec() };
    let op = NllBackward.prepare::<NoCheckpointing>([logits.node.clone()]).compute_bound().stateful();
    tensor(record(op, state, loss))
}

/// The loss and each row's log Σ e^logits.
fn nll_forward(logits: &FlexTensor, targets: &[u32], weights: &[f32]) -> (FlexTensor, Vec<f32>) {
    let x = values(logits);
    let vocab = logits.shape()[1];
    let lse: Vec<f32> = x.par_chunks(vocab).with_min_len(4).map(log_sum_exp).collect();
    // Rows summed in order: the same total whatever the number of threads.
    let mut total = 0.0f64;
    for (i, row) in x.chunks(vocab).enumerate() {
        if weights[i] != 0.0 {
            total += (weights[i] * (lse[i] - row[targets[i] as usize])) as f64;
        }
    }
    (new_tensor(vec![total as f32], [1].into()), lse)
}

#[derive(Debug, Clone)]
struct NllState {
    logits: FlexTensor,
    lse: Vec<f32>,
    targets: Vec<u32>,
    weights: Vec<f32>,
}

#[derive(Debug)]
struct NllBackward;

impl Backward<Flex, 1> for NllBackward {
    type State = NllState;

    fn backward(self, ops: Ops<NllState, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let NllState { logits, lse, targets, weights } = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
            let g = values(&contiguous(grad))[0];
            let vocab = logits.shape()[1];
            // ∂/∂logits = g·w·(softmax − onehot), written over the logits when no one else holds them.
            let (mut x, shape) = into_values(logits);
            x.par_chunks_mut(vocab).with_min_len(4).enumerate().for_each(|(i, row)| {
                let scale = g * weights[i];
                if scale == 0.0 {
                    row.fill(0.0);
                    return;
                }
                scaled_softmax(row, lse[i], scale);
                row[targets[i] as usize] -= scale;
            });
            new_tensor(x, shape)
        });
    }
}
