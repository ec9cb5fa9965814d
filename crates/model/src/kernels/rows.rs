//! How the streamed products split their work (decoding's few rows times a
//! weight matrix, read once): the tasks, each one's share of the weights, and
//! the order in which their results are put together, so that no result
//! depends on the number of threads. The row kernels (bf16 weights) are the
//! caller's (`bf16`).

use rayon::prelude::*;

use super::simd::add_into;

/// Weight rows per task of [`linear_rows`]: each task sums its rows into its
/// own partial output, and the partials are added in task order, so that the
/// result does not depend on the number of threads.
const WEIGHT_ROWS_PER_TASK: usize = 64;

/// Vocabulary rows per task of [`head_rows`].
const VOCAB_ROWS_PER_TASK: usize = 256;

/// A row kernel of [`linear_rows`] or [`head_rows`] for activations of
/// element `X` and weights of element `T`.
pub(super) type RowKernel<X, T> = fn(&[X], &[T], &mut [f32]);

/// `x [m, k]` times `w [k, n]` plus `bias [n]`: `[m, n]`, each task summing
/// its weight rows into its own partial output with `accumulate`, the
/// partials added in task order.
pub(super) fn linear_rows<X: Sync, T: Sync>(
    x: &[X],
    w: &[T],
    bias: &[f32],
    [m, k, n]: [usize; 3],
    accumulate: RowKernel<X, T>,
) -> Vec<f32> {
    let mut partials = vec![0.0f32; k.div_ceil(WEIGHT_ROWS_PER_TASK) * m * n];
    partials.par_chunks_mut(m * n).enumerate().for_each(|(task, partial)| {
        let rows = task * WEIGHT_ROWS_PER_TASK..(k.min((task + 1) * WEIGHT_ROWS_PER_TASK));
        for (r, acc) in partial.chunks_exact_mut(n).enumerate() {
            accumulate(&x[r * k..][rows.clone()], &w[rows.start * n..rows.end * n], acc);
        }
    });
    let mut y: Vec<f32> = bias.repeat(m);
    for partial in partials.chunks_exact(m * n) {
        add_into(partial, &mut y);
    }
    y
}

/// `hidden [m, c]` times `wte [vocab, c]` transposed: `[m, vocab]`, each
/// logit one of `dots`' dot products.
pub(super) fn head_rows<X: Sync, T: Sync>(
    x: &[X],
    w: &[T],
    [m, c, vocab]: [usize; 3],
    dots: RowKernel<X, T>,
) -> Vec<f32> {
    let mut y = vec![0.0f32; m * vocab];
    // Task j: vocabulary rows j·R .. (j+1)·R for every hidden row, so that each
    // block of `wte` is read from memory once.
    let mut tasks: Vec<Vec<&mut [f32]>> =
        (0..vocab.div_ceil(VOCAB_ROWS_PER_TASK)).map(|_| Vec::with_capacity(m)).collect();
    for row in y.chunks_exact_mut(vocab) {
        for (task, out) in tasks.iter_mut().zip(row.chunks_mut(VOCAB_ROWS_PER_TASK)) {
            task.push(out);
        }
    }
    tasks.into_par_iter().enumerate().for_each(|(task, outs)| {
        let block = &w[task * VOCAB_ROWS_PER_TASK * c..];
        for (r, out) in outs.into_iter().enumerate() {
            dots(&x[r * c..(r + 1) * c], &block[..out.len() * c], out);
        }
    });
    y
}
