//! The whole causal self-attention of a block from its fused `q, k, v`
//! projections: heads in parallel, read and written in place (no head split or
//! merge copies), the keys past each block of queries skipped, packed
//! documents kept apart (block-diagonal), and its backward.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, unary};
use burn::backend::flex::{Flex, FlexTensor};
use burn::prelude::*;
use burn::tensor::Bool;
use rayon::prelude::*;

use super::composed;
use super::dropout::{HostMask, Mask};
use super::host::{Ad, contiguous, float, host, host_pad, is_f32, new_tensor, record, tensor, values};
use super::simd::{masked_softmax, softmax_backward};
use crate::layout::Documents;

/// [`super::Gpt2Ops::causal_attention`] on Flex.
pub(super) fn flex(
    qkv: Tensor<Flex, 3>,
    n_head: usize,
    pad: Option<Tensor<Flex, 2, Bool>>,
    documents: Option<&Documents>,
    divisor: f32,
    mask: Mask,
) -> Tensor<Flex, 3> {
    if !is_f32(&qkv) || matches!(mask, Mask::Device(_)) {
        return composed::causal_attention(qkv, n_head, pad, documents, divisor, mask);
    }
    let heads = Heads::of(&qkv, n_head, divisor);
    let pad = host_pad(pad);
    let (y, _) = heads.forward(&host(qkv), pad.as_deref(), documents, mask.host());
    tensor(y)
}

/// [`super::Gpt2Ops::causal_attention`] on Flex under autodiff.
pub(super) fn autodiff(
    qkv: Tensor<Ad, 3>,
    n_head: usize,
    pad: Option<Tensor<Ad, 2, Bool>>,
    documents: Option<&Documents>,
    divisor: f32,
    mask: Mask,
) -> Tensor<Ad, 3> {
    if !is_f32(&qkv) || matches!(mask, Mask::Device(_)) {
        return composed::causal_attention(qkv, n_head, pad, documents, divisor, mask);
    }
    let heads = Heads::of(&qkv, n_head, divisor);
    let pad = host_pad(pad);
    let qkv = float(qkv);
    let input = contiguous(qkv.primitive);
    let mask = mask.host();
    let (y, probs) = heads.forward(&input, pad.as_deref(), documents, mask);
    let state = CausalState { qkv: input, probs, mask, heads };
    let op = CausalBackward.prepare::<NoCheckpointing>([qkv.node.clone()]).compute_bound().stateful();
    tensor(record(op, state, y))
}

/// A pointer that parallel tasks write through, each to its own elements.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: the tasks given a `Shared` write disjoint elements (one head of one
// sequence each) and the buffer outlives them.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    /// The pointer (a method, so that closures capture the whole `Shared`).
    fn at(&self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// `dst[m, n] = lhs[m, k] · rhs[k, n]`, each matrix given by a pointer and its
/// (row, column) strides; one thread (the heads run in parallel).
///
/// # Safety
/// The pointers with their strides must address valid `f32`s for the shapes,
/// and nothing else may access `dst`'s elements meanwhile.
unsafe fn product(
    m: usize,
    n: usize,
    k: usize,
    dst: (*mut f32, usize, usize),
    lhs: (*const f32, usize, usize),
    rhs: (*const f32, usize, usize),
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.0,
            dst.2 as isize,
            dst.1 as isize,
            false,
            lhs.0,
            lhs.2 as isize,
            lhs.1 as isize,
            rhs.0,
            rhs.2 as isize,
            rhs.1 as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Rows of queries per product: the keys after a block's last query are skipped.
const QUERY_BLOCK: usize = 64;

/// The geometry of one attention call.
#[derive(Debug, Clone, Copy)]
struct Heads {
    b: usize,
    t: usize,
    h: usize,
    c: usize,
    hd: usize,
    divisor: f32,
}

impl Heads {
    fn of<B: Backend>(qkv: &Tensor<B, 3>, n_head: usize, divisor: f32) -> Self {
        let [b, t, c3] = qkv.dims();
        Self { b, t, h: n_head, c: c3 / 3, hd: c3 / 3 / n_head, divisor }
    }

    /// Offset of head `hi` of sequence `bi`'s part (0 = q, 1 = k, 2 = v) in `qkv`.
    fn at(&self, bi: usize, hi: usize, part: usize) -> usize {
        bi * self.t * 3 * self.c + part * self.c + hi * self.hd
    }

    /// The output `[b, t, c]` and the probabilities before dropout `[b, h, t, t]`.
    /// A query sees the keys of its own document only, when `documents` are packed.
    fn forward(
        &self,
        qkv: &FlexTensor,
        pad: Option<&[u8]>,
        documents: Option<&Documents>,
        mask: Option<HostMask>,
    ) -> (FlexTensor, FlexTensor) {
        let Heads { b, t, h, c, hd, divisor } = *self;
        let x = values(qkv);
        let mut probs = vec![0.0f32; b * h * t * t];
        let mut y = vec![0.0f32; b * t * c];
        let out = Shared(y.as_mut_ptr());
        probs.par_chunks_mut(t * t).enumerate().for_each(|(pair, p)| {
            let (bi, hi) = (pair / h, pair % h);
            let (q, k, v) =
                (x[self.at(bi, hi, 0)..].as_ptr(), x[self.at(bi, hi, 1)..].as_ptr(), x[self.at(bi, hi, 2)..].as_ptr());
            let pad = pad.map(|p| &p[bi * t..(bi + 1) * t]);
            let mut dropped = mask.map(|_| vec![0.0f32; t * t]);
            for r0 in (0..t).step_by(QUERY_BLOCK) {
                let r1 = (r0 + QUERY_BLOCK).min(t);
                // SAFETY: q rows r0..r1 and k rows 0..r1 lie in `x`; `p` is this pair's [t, t].
                unsafe {
                    product(
                        r1 - r0,
                        r1,
                        hd,
                        (p[r0 * t..].as_mut_ptr(), t, 1),
                        (q.add(r0 * 3 * c), 3 * c, 1),
                        (k, 1, 3 * c),
                    )
                };
                for i in r0..r1 {
                    let row = &mut p[i * t..(i + 1) * t];
                    // Keys from the start of the query's document on; none before it.
                    let from = documents.map_or(0, |d| d.first_key(bi, i));
                    row[..from].fill(0.0);
                    masked_softmax(&mut row[from..], divisor, i + 1 - from, pad.map(|p| &p[from..]));
                    if let (Some(mask), Some(d)) = (mask, dropped.as_mut()) {
                        mask.apply(((pair * t + i) * t) as u64, &row[..=i], &mut d[i * t..=i * t + i]);
                    }
                }
                let weights = dropped.as_deref().unwrap_or(p);
                // SAFETY: this pair's output columns hi·hd.. of rows r0..r1 are written by this task only.
                unsafe {
                    product(
                        r1 - r0,
                        hd,
                        r1,
                        (out.at((bi * t + r0) * c + hi * hd), c, 1),
                        (weights[r0 * t..].as_ptr(), t, 1),
                        (v, 3 * c, 1),
                    )
                };
            }
        });
        (new_tensor(y, [b, t, c].into()), new_tensor(probs, [b, h, t, t].into()))
    }

    /// `∂/∂qkv` from `∂/∂y`.
    fn backward(&self, qkv: &FlexTensor, probs: &FlexTensor, mask: Option<HostMask>, dy: &FlexTensor) -> FlexTensor {
        let Heads { b, t, h, c, hd, divisor } = *self;
        let (x, p_all, g) = (values(qkv), values(probs), values(dy));
        let mut dx = vec![0.0f32; b * t * 3 * c];
        let out = Shared(dx.as_mut_ptr());
        (0..b * h).into_par_iter().for_each(|pair| {
            let (bi, hi) = (pair / h, pair % h);
            let p = &p_all[pair * t * t..(pair + 1) * t * t];
            let (q, k, v) =
                (x[self.at(bi, hi, 0)..].as_ptr(), x[self.at(bi, hi, 1)..].as_ptr(), x[self.at(bi, hi, 2)..].as_ptr());
            let gy = g[bi * t * c + hi * hd..].as_ptr();
            let (dq, dk, dv) = (out.at(self.at(bi, hi, 0)), out.at(self.at(bi, hi, 1)), out.at(self.at(bi, hi, 2)));
            // The dropout factors, drawn once, on and below the diagonal (above it p is 0),
            // and the weights v was multiplied by: the probabilities after dropout.
            let factors: Option<Vec<f32>> = mask.map(|mask| {
                let mut f = vec![0.0f32; t * t];
                for i in 0..t {
                    let base = ((pair * t + i) * t) as u64;
                    for (j, fj) in f[i * t..=i * t + i].iter_mut().enumerate() {
                        *fj = mask.factor(base + j as u64);
                    }
                }
                f
            });
            let dropped: Option<Vec<f32>> = factors.as_ref().map(|f| p.iter().zip(f).map(|(pj, fj)| pj * fj).collect());
            let weights = dropped.as_deref().unwrap_or(p);
            let mut ds = vec![0.0f32; t * t];
            // SAFETY (all products): the pointers address this pair's rows of `x`, `g`,
            // `p`/`ds`, and this pair's q/k/v columns of `dx`, written by this task only.
            unsafe {
                // ∂v = weightsᵀ · ∂y
                product(t, hd, t, (dv, 3 * c, 1), (weights.as_ptr(), 1, t), (gy, c, 1));
                // ∂weights = ∂y · vᵀ
                product(t, t, hd, (ds.as_mut_ptr(), t, 1), (gy, c, 1), (v, 1, 3 * c));
            }
            for i in 0..t {
                let row = &mut ds[i * t..(i + 1) * t];
                if let Some(f) = &factors {
                    for (gj, fj) in row.iter_mut().zip(&f[i * t..(i + 1) * t]) {
                        *gj *= fj;
                    }
                }
                softmax_backward(&p[i * t..(i + 1) * t], divisor, row);
            }
            unsafe {
                // ∂q = ∂s · k, ∂k = ∂sᵀ · q
                product(t, hd, t, (dq, 3 * c, 1), (ds.as_ptr(), t, 1), (k, 3 * c, 1));
                product(t, hd, t, (dk, 3 * c, 1), (ds.as_ptr(), 1, t), (q, 3 * c, 1));
            }
        });
        new_tensor(dx, [b, t, 3 * c].into())
    }
}

#[derive(Debug, Clone)]
struct CausalState {
    qkv: FlexTensor,
    probs: FlexTensor,
    mask: Option<HostMask>,
    heads: Heads,
}

#[derive(Debug)]
struct CausalBackward;

impl Backward<Flex, 1> for CausalBackward {
    type State = CausalState;

    fn backward(self, ops: Ops<CausalState, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let s = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
            s.heads.backward(&s.qkv, &s.probs, s.mask, &contiguous(grad))
        });
    }
}
