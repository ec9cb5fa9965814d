//! Layer norm under autodiff, with the gradients of input, scale and shift
//! in one parallel pass (Burn's autodiff composes it from ~10 ops and
//! differentiates each). Without autodiff, Flex's own layer norm is already
//! one fused pass, so the composed op runs.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::{Flex, FlexTensor};
use burn::prelude::*;
use burn::tensor::TensorMetadata;
use rayon::prelude::*;

use super::composed;
use super::host::{Ad, contiguous, float, into_values, is_f32, new_tensor, record, rows_per_task, tensor, values};
use super::simd::{layer_norm_row, layer_norm_row_backward};

/// [`super::Gpt2Ops::layer_norm`] on Flex under autodiff.
pub(super) fn autodiff<const D: usize>(
    x: Tensor<Ad, D>,
    weight: Tensor<Ad, 1>,
    bias: Tensor<Ad, 1>,
    eps: f64,
) -> Tensor<Ad, D> {
    if !is_f32(&x) {
        return composed::layer_norm(x, weight, bias, eps);
    }
    let [x, w, b] = [float(x), float(weight), float(bias)];
    let state = LayerNormState {
        x: contiguous(x.primitive.clone()),
        w: contiguous(w.primitive.clone()),
        b: contiguous(b.primitive.clone()),
        eps: eps as f32,
        stats: Vec::new(),
    };
    let (y, stats) = layer_norm_forward(&state);
    let state = LayerNormState { stats, ..state };
    let nodes = [x.node.clone(), w.node.clone(), b.node.clone()];
    let op = LayerNormBackward.prepare::<NoCheckpointing>(nodes).compute_bound().stateful();
    tensor(record(op, state, y))
}

#[derive(Debug, Clone)]
struct LayerNormState {
    x: FlexTensor,
    w: FlexTensor,
    b: FlexTensor,
    eps: f32,
    /// (mean, 1/σ) per row.
    stats: Vec<(f32, f32)>,
}

fn layer_norm_forward(s: &LayerNormState) -> (FlexTensor, Vec<(f32, f32)>) {
    let (x, w, b) = (values(&s.x), values(&s.w), values(&s.b));
    let c = w.len();
    let mut y = vec![0.0f32; x.len()];
    let stats = y
        .par_chunks_mut(c)
        .zip(x.par_chunks(c))
        .with_min_len(rows_per_task(c))
        .map(|(y, x)| layer_norm_row(x, w, b, s.eps, y))
        .collect();
    (new_tensor(y, s.x.shape()), stats)
}

#[derive(Debug)]
struct LayerNormBackward;

impl Backward<Flex, 3> for LayerNormBackward {
    type State = LayerNormState;

    fn backward(self, ops: Ops<LayerNormState, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [px, pw, pb] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let s = ops.state;
        let (x, w) = (values(&s.x), values(&s.w));
        let c = w.len();
        let (mut g, shape) = into_values(grad);
        // Fixed blocks of rows, each with its own partial dw/db, summed in block
        // order: the same result whatever the number of threads.
        let rows_per_block = rows_per_task(c);
        let partials: Vec<(Vec<f32>, Vec<f32>)> = g
            .par_chunks_mut(rows_per_block * c)
            .zip(x.par_chunks(rows_per_block * c))
            .enumerate()
            .map(|(block, (g, x))| {
                let (mut dw, mut db) = (vec![0.0f32; c], vec![0.0f32; c]);
                for (r, (g, x)) in g.chunks_mut(c).zip(x.chunks(c)).enumerate() {
                    let (mean, rstd) = s.stats[block * rows_per_block + r];
                    layer_norm_row_backward(x, w, mean, rstd, g, &mut dw, &mut db);
                }
                (dw, db)
            })
            .collect();
        let (mut dw, mut db) = (vec![0.0f32; c], vec![0.0f32; c]);
        for (pdw, pdb) in &partials {
            for i in 0..c {
                dw[i] += pdw[i];
                db[i] += pdb[i];
            }
        }
        if let Some(node) = px {
            grads.register::<Flex>(node.id, new_tensor(g, shape));
        }
        if let Some(node) = pw {
            grads.register::<Flex>(node.id, new_tensor(dw, [c].into()));
        }
        if let Some(node) = pb {
            grads.register::<Flex>(node.id, new_tensor(db, [c].into()));
        }
    }
}
