//! GPT-2's activation `gelu_new` and its backward, one parallel pass each.

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
use super::simd::{gelu_backward, gelu_forward};

/// [`super::Gpt2Ops::gelu_new`] on Flex.
pub(super) fn flex<const D: usize>(x: Tensor<Flex, D>) -> Tensor<Flex, D> {
    if !is_f32(&x) {
        return composed::gelu_new(x);
    }
    tensor(gelu(&host(x)))
}

/// [`super::Gpt2Ops::gelu_new`] on Flex under autodiff.
pub(super) fn autodiff<const D: usize>(x: Tensor<Ad, D>) -> Tensor<Ad, D> {
    if !is_f32(&x) {
        return composed::gelu_new(x);
    }
    let x = float(x);
    let input = contiguous(x.primitive);
    let y = gelu(&input);
    let op = GeluBackward.prepare::<NoCheckpointing>([x.node.clone()]).compute_bound().stateful();
    tensor(record(op, input, y))
}

const ELEMENTS_PER_TASK: usize = 16_384;

fn gelu(x: &FlexTensor) -> FlexTensor {
    let input = values(x);
    let mut y = vec![0.0f32; input.len()];
    y.par_chunks_mut(ELEMENTS_PER_TASK).zip(input.par_chunks(ELEMENTS_PER_TASK)).for_each(|(y, x)| gelu_forward(x, y));
    new_tensor(y, x.shape())
}

#[derive(Debug)]
struct GeluBackward;

impl Backward<Flex, 1> for GeluBackward {
    type State = FlexTensor;

    fn backward(self, ops: Ops<FlexTensor, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let x = values(&ops.state);
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
            let (mut g, shape) = into_values(grad);
            g.par_chunks_mut(ELEMENTS_PER_TASK)
                .zip(x.par_chunks(ELEMENTS_PER_TASK))
                .for_each(|(g, x)| gelu_backward(x, g));
            new_tensor(g, shape)
        });
    }
}
