//! The products whose kernels are not general matrix products:
//!
//! - decoding's few rows times a weight matrix (HF's `Conv1D`
//!   and the tied head), whose cost is reading the weights once; the general
//!   product reads them at about two thirds of the memory bandwidth here,
//!   these stream them at nearly all of it;
//! - the tied head under autodiff when only `wte`'s last rows train (the added
//!   names under `wte = "pretrained-rows"`): its backward multiplies only those
//!   rows' columns of the logits' gradient into `wte`'s gradient (on
//!   gpt-fr-cased-small, 1,000 rows of 50,000 instead of a product as large as
//!   the head's own) and leaves the pretrained rows' share zero.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::{Flex, FlexTensor};
use burn::prelude::*;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, FloatDType, TensorMetadata};

use super::bf16;
use super::composed;
use super::host::{Ad, contiguous, float, host, is_f32, new_tensor, record, tensor, values};
use super::tiles;

/// Rows up to which [`flex_linear`] and [`flex_head`] take the streaming
/// kernels ([`tiles`]); more rows go to the general product (training, long
/// prompts). A server's decoding step takes up to this many requests
/// together, each row's values those of the row alone.
pub const FEW_ROWS: usize = 16;

/// Rows up to which bf16 weights are streamed ([`bf16::linear`] and
/// [`bf16::head`]: a prompt of a few words too); past it, [`widened_tiles`].
pub const BF16_STREAMED_ROWS: usize = 16;

/// [`super::Gpt2Ops::linear`] on Flex: the streaming kernels on up to
/// [`FEW_ROWS`] rows of f32 weights, or [`BF16_STREAMED_ROWS`] of bf16 ones
/// ([`bf16::linear`]); more rows of bf16 weights: [`widened_tiles`].
pub(super) fn flex_linear(x: Tensor<Flex, 2>, weight: Tensor<Flex, 2>, bias: Tensor<Flex, 1>) -> Tensor<Flex, 2> {
    let (few, streamed) = (x.dims()[0] <= FEW_ROWS, x.dims()[0] <= BF16_STREAMED_ROWS);
    match (x.dtype(), weight.dtype(), bias.dtype()) {
        (DType::F32, DType::F32, DType::F32) if few && is_by_rows(&weight) => {
            let ([m, k], n) = (x.dims(), weight.dims()[1]);
            let rows = contiguous(float(weight.transpose())); // [n, k], no copy
            let y = tiles::linear_by_rows(
                tiles::Path::detect(),
                values(&host(x)),
                values(&rows),
                values(&host(bias)),
                [m, k, n],
            );
            tensor(new_tensor(y, [m, n].into()))
        }
        (DType::F32, DType::F32, DType::F32) if few => tensor(few_rows_linear(&host(x), &host(weight), &host(bias))),
        (DType::F32, DType::BF16, DType::F32) if streamed => {
            let ([m, _], n) = (x.dims(), weight.dims()[1]);
            let y = bf16::linear(
                bf16::Path::detect(),
                values(&host(x)),
                m,
                bf16s(&host(weight)),
                n,
                Some(values(&host(bias))),
            );
            tensor(new_tensor(y, [m, n].into()))
        }
        (DType::F32, DType::BF16, _) => {
            let n = weight.dims()[1];
            widened_tiles(x, n, |cols| weight.clone().slice([0..weight.dims()[0], cols])) + bias.unsqueeze()
        }
        _ => composed::linear(x, weight, bias),
    }
}

/// [`super::Gpt2Ops::decoding_layout`] on Flex: an f32 weight `[in, out]`
/// stored `[out, in]` (one copy, when it is not already) and seen transposed.
pub(super) fn by_rows(weight: Tensor<Flex, 2>) -> Tensor<Flex, 2> {
    if weight.dtype() != DType::F32 || is_by_rows(&weight) {
        return weight;
    }
    let rows = contiguous(float(weight.transpose())); // [out, in], copied
    tensor::<Flex, 2>(rows).transpose()
}

/// Whether `weight [in, out]` is an `[out, in]` row-major matrix seen transposed.
fn is_by_rows(weight: &Tensor<Flex, 2>) -> bool {
    let primitive = weight.clone().into_primitive().tensor();
    let [k, _] = weight.dims();
    primitive.layout().strides() == [1, k as isize] && k > 1 && weight.dims()[1] > 1
}

/// [`super::Gpt2Ops::tied_head`] on Flex: the streaming kernels, as [`flex_linear`].
pub(super) fn flex_head(hidden: Tensor<Flex, 2>, wte: Tensor<Flex, 2>) -> Tensor<Flex, 2> {
    let (few, streamed) = (hidden.dims()[0] <= FEW_ROWS, hidden.dims()[0] <= BF16_STREAMED_ROWS);
    match (hidden.dtype(), wte.dtype()) {
        (DType::F32, DType::F32) if few => tensor(few_rows_head(&host(hidden), &host(wte))),
        (DType::F32, DType::BF16) if streamed => {
            let ([m, _], vocab) = (hidden.dims(), wte.dims()[0]);
            let y = bf16::head(bf16::Path::detect(), values(&host(hidden)), m, bf16s(&host(wte)), vocab);
            tensor(new_tensor(y, [m, vocab].into()))
        }
        (DType::F32, DType::BF16) => {
            let [vocab, c] = wte.dims();
            widened_tiles(hidden, vocab, |rows| wte.clone().slice([rows, 0..c]).transpose())
        }
        _ => composed::tied_head(hidden, wte),
    }
}

/// [`super::Gpt2Ops::tied_head`] on Flex under autodiff: when `wte`'s rows
/// from `trained_from` on are the only ones that train, their gradient alone.
/// The values are the same as without it.
pub(super) fn autodiff_head(hidden: Tensor<Ad, 2>, wte: Tensor<Ad, 2>, trained_from: Option<usize>) -> Tensor<Ad, 2> {
    match trained_from {
        Some(from) if from > 0 && is_f32(&hidden) => tensor(head_trained_from(float(hidden), float(wte), from)),
        _ => composed::tied_head(hidden, wte),
    }
}

/// The tied head under autodiff when only `wte`'s rows from `from` on train:
/// the forward product as [`composed::tied_head`]'s, a backward that skips the
/// pretrained rows' share of `wte`'s gradient.
fn head_trained_from(hidden: FloatTensor<Ad>, wte: FloatTensor<Ad>, from: usize) -> FloatTensor<Ad> {
    let state = HeadState { hidden: hidden.primitive.clone(), wte: wte.primitive.clone(), from };
    let logits = tensor::<Flex, 2>(state.hidden.clone()).matmul(tensor::<Flex, 2>(state.wte.clone()).transpose());
    let op =
        HeadBackward.prepare::<NoCheckpointing>([hidden.node.clone(), wte.node.clone()]).compute_bound().stateful();
    record(op, state, float(logits))
}

#[derive(Debug, Clone)]
struct HeadState {
    hidden: FlexTensor,
    wte: FlexTensor,
    /// The first `wte` row whose gradient is computed.
    from: usize,
}

#[derive(Debug)]
struct HeadBackward;

impl Backward<Flex, 2> for HeadBackward {
    type State = HeadState;

    fn backward(self, ops: Ops<HeadState, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [p_hidden, p_wte] = ops.parents;
        let grad = tensor::<Flex, 2>(grads.consume::<Flex>(&ops.node)); // [m, vocab]
        let state = ops.state;
        if let Some(node) = p_wte {
            let (m, vocab, c) = (grad.dims()[0], state.wte.shape()[0], state.wte.shape()[1]);
            let from = state.from.min(vocab);
            let g = contiguous(float(grad.clone()));
            let hidden = contiguous(state.hidden);
            // One zeroed buffer (fresh pages), the trained rows written in place:
            // d wte[v] = Σᵢ g[i, v] · hidden[i] for v ≥ from.
            let mut d_wte = vec![0.0f32; vocab * c];
            if from < vocab {
                // SAFETY: `d_wte` holds `vocab·c` values, rows `from..` are
                // written as a `[vocab − from, c]` matrix; `g` is `[m, vocab]`
                // read as its columns `from..` transposed, `hidden` is `[m, c]`;
                // all contiguous.
                unsafe {
                    gemm::gemm(
                        vocab - from,
                        c,
                        m,
                        d_wte.as_mut_ptr().add(from * c),
                        1,
                        c as isize,
                        false,
                        values(&g).as_ptr().add(from),
                        vocab as isize,
                        1,
                        values(&hidden).as_ptr(),
                        1,
                        c as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::Rayon(rayon::current_num_threads()),
                    );
                }
            }
            grads.register::<Flex>(node.id, new_tensor(d_wte, [vocab, c].into()));
        }
        if let Some(node) = p_hidden {
            grads.register::<Flex>(node.id, float(grad.matmul(tensor::<Flex, 2>(state.wte))));
        }
    }
}

fn few_rows_linear(x: &FlexTensor, weight: &FlexTensor, bias: &FlexTensor) -> FlexTensor {
    let [m, k, n] = [x.shape()[0], x.shape()[1], weight.shape()[1]];
    let y = tiles::linear(tiles::Path::detect(), values(x), values(weight), values(bias), [m, k, n]);
    new_tensor(y, [m, n].into())
}

fn few_rows_head(hidden: &FlexTensor, wte: &FlexTensor) -> FlexTensor {
    let [m, c, vocab] = [hidden.shape()[0], hidden.shape()[1], wte.shape()[0]];
    let y = tiles::head(tiles::Path::detect(), values(hidden), values(wte), [m, c, vocab]);
    new_tensor(y, [m, vocab].into())
}

/// A contiguous bf16 tensor's values.
fn bf16s(x: &FlexTensor) -> &[half::bf16] {
    x.as_slice::<half::bf16>().expect("a contiguous bf16 tensor")
}

/// Bytes of a bf16 weight widened to f32 at a time by [`widened_tiles`].
const WIDENED_TILE_BYTES: usize = 4 << 20;

/// `x [m, k]` rounded to bf16 times a bf16 weight `[k, n]` given as its
/// column ranges (`tile(cols)`: `[k, cols]`), as f32 general products of the
/// rounded activations and the widened weights (both exact), one tile of
/// about [`WIDENED_TILE_BYTES`] at a time: the prompt's many rows at gemm's
/// speed, with no f32 copy of a whole matrix.
fn widened_tiles(
    x: Tensor<Flex, 2>,
    n: usize,
    tile: impl Fn(std::ops::Range<usize>) -> Tensor<Flex, 2>,
) -> Tensor<Flex, 2> {
    let k = x.dims()[1];
    let x = x.cast(FloatDType::BF16).cast(FloatDType::F32);
    let width = (WIDENED_TILE_BYTES / 4 / k.max(1)).max(16) / 16 * 16;
    let tiles = (0..n).step_by(width).map(|j| x.clone().matmul(tile(j..n.min(j + width)).cast(FloatDType::F32)));
    Tensor::cat(tiles.collect(), 1)
}
