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

/// [`super::Gpt2Ops::write_positions`] on Flex: `written` copied into
/// `buffer`'s storage when it is contiguous f32 and held by nothing else, one
/// run of `t·hd` values per row and head; otherwise Burn's `slice_assign`.
pub(super) fn write_positions(buffer: Tensor<Flex, 4>, written: Tensor<Flex, 4>, at: usize) -> Tensor<Flex, 4> {
    let ([b, h, capacity, hd], t) = (buffer.dims(), written.dims()[2]);
    assert!(at + t <= capacity, "positions {at}..{} past a capacity of {capacity}", at + t);
    if t * hd == 0 {
        return buffer;
    }
    let mut storage = float(buffer);
    let start = storage.layout().contiguous_offsets().map(|(start, _)| start);
    let new = host(written);
    let f32s = storage.dtype() == DType::F32 && new.dtype() == DType::F32;
    if let (Some(start), true) = (start, f32s)
        && let Some(dst) = storage.try_storage_mut::<f32>()
    {
        let dst = &mut dst[start..start + b * h * capacity * hd];
        for (row, src) in dst.chunks_exact_mut(capacity * hd).zip(values(&new).chunks_exact(t * hd)) {
            row[at * hd..(at + t) * hd].copy_from_slice(src);
        }
        return tensor(storage);
    }
    tensor::<Flex, 4>(storage).slice_assign(burn::tensor::s![.., .., at..at + t], tensor(new))
}
