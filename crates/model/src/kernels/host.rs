//! What the kernels share on Burn's CPU backend: moving tensors between Burn's
//! types and host slices, and recording a kernel's backward with autodiff.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::ops::{Backward, OpsKind};
use burn::backend::flex::{Flex, FlexTensor};
use burn::prelude::*;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Bool, DType, TensorMetadata, TensorPrimitive};

/// Burn's CPU backend with gradients, the one the training kernels run on.
pub(super) type Ad = Autodiff<Flex>;

/// The output of a fused op under autodiff, with `state` kept for its backward
/// when an input needs a gradient.
pub(super) fn record<O: Backward<Flex, N>, const N: usize>(
    op: OpsKind<O, Flex, O::State, NoCheckpointing, N>,
    state: O::State,
    out: FlexTensor,
) -> FloatTensor<Ad> {
    match op {
        OpsKind::Tracked(prep) => prep.finish(state, out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}

/// Whether the kernels take `x` (they are f32 only; bf16 goes to the composed ops).
pub(super) fn is_f32<B: Backend, const D: usize>(x: &Tensor<B, D>) -> bool {
    x.dtype() == DType::F32
}

pub(super) fn float<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> FloatTensor<B> {
    tensor.into_primitive().tensor()
}

pub(super) fn tensor<B: Backend, const D: usize>(primitive: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(primitive))
}

/// A contiguous f32 copy-free view of `x` when it already is one.
pub(super) fn contiguous(x: FlexTensor) -> FlexTensor {
    let y = x.to_contiguous();
    drop(x); // so that `y` is the only owner when `x` was already contiguous
    y
}

/// The contiguous storage of a Flex tensor.
pub(super) fn host<const D: usize>(x: Tensor<Flex, D>) -> FlexTensor {
    contiguous(float(x))
}

pub(super) fn values(x: &FlexTensor) -> &[f32] {
    x.as_slice::<f32>().expect("a contiguous f32 tensor")
}

pub(super) fn new_tensor(values: Vec<f32>, shape: burn::tensor::Shape) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// The padding mask on the host, one byte per key (non-zero = hidden): what
/// Flex stores for a bool tensor, with or without autodiff.
pub(super) fn host_pad<B: Backend<BoolTensorPrimitive = FlexTensor>>(
    pad: Option<Tensor<B, 2, Bool>>,
) -> Option<Vec<u8>> {
    pad.map(|pad| contiguous(pad.into_primitive()).storage::<u8>().to_vec())
}

/// `x`'s storage to write in place when nothing else holds it, else a copy.
pub(super) fn into_values(x: FlexTensor) -> (Vec<f32>, burn::tensor::Shape) {
    let x = contiguous(x);
    let shape = x.shape();
    let data = x.into_data();
    (data.into_vec::<f32>().expect("an f32 tensor"), shape)
}

/// Rows per parallel task: enough work per task to amortise the scheduling.
pub(super) fn rows_per_task(row_len: usize) -> usize {
    (16_384 / row_len.max(1)).max(1)
}
