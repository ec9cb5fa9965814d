//! One decoding step's attention on Flex: each row's one new query against
//! its own cache, every row and head in one parallel pass (instead of a
//! dozen Burn ops a row and block). A head's output depends on its row
//! alone, so a row decoded beside others gets the bits it gets alone.

use burn::backend::flex::Flex;
use burn::prelude::*;
use burn::tensor::TensorMetadata;
use rayon::prelude::*;

use super::CachedRow;
use super::host::{host, new_tensor, tensor, values};
use super::simd::{chain_rows, lane_dots, masked_softmax};

/// [`super::Gpt2Ops::cached_attention`] on Flex (f32 only; other types take
/// the composed ops).
pub(super) fn flex(q: Tensor<Flex, 2>, rows: Vec<CachedRow<Flex>>, n_head: usize, divisor: f32) -> Tensor<Flex, 2> {
    let f32s = q.dtype() == burn::tensor::DType::F32 && rows.iter().all(|r| r.keys.dtype() == q.dtype());
    if !f32s {
        return super::composed::cached_attention(q, rows, n_head, divisor);
    }
    let [n, c] = q.dims();
    assert_eq!(rows.len(), n, "one cache per query");
    let hd = c / n_head;
    let q = host(q);
    let caches: Vec<_> = rows.into_iter().map(|r| (host(r.keys), host(r.values), r.len)).collect();
    let q = values(&q);
    let mut out = vec![0.0f32; n * c];
    // One scores buffer per worker, not one per row and head.
    out.par_chunks_mut(hd.max(1)).enumerate().for_each_init(Vec::new, |scores: &mut Vec<f32>, (task, o)| {
        let (row, head) = (task / n_head, task % n_head);
        let (keys, vals, len) = &caches[row];
        let capacity = keys.shape()[2];
        let at = head * capacity * hd;
        let (keys, vals) = (&values(keys)[at..at + len * hd], &values(vals)[at..at + len * hd]);
        scores.resize(*len, 0.0);
        lane_dots(&q[row * c + head * hd..][..hd], keys, scores);
        masked_softmax(scores, divisor, *len, None);
        chain_rows(scores, vals, hd, o);
    });
    tensor(new_tensor(out, [n, c].into()))
}
