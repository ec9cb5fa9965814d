//! Fused CPU kernels, each with its own backward: the element-wise work of a
//! training step in one parallel, vectorised pass per direction instead of
//! Burn's composed ops (several passes each, one thread, scalar `exp`).
//!
//! - [`nll_sum`]: the weighted sum of next-token negative log-likelihoods from
//!   the logits (log-softmax, gather and their backward);
//! - [`causal_attention`]: the whole attention of a block from its fused
//!   `q, k, v` projections, heads in parallel, read and written in place (no
//!   head split or merge copies), keys past each query's position skipped;
//! - [`attention_probs`]: scaling, causal and padding mask, softmax and dropout
//!   of the attention scores (the cached, generating path);
//! - [`gelu_new`]: GPT-2's activation;
//! - [`layer_norm`]: with the gradients of input, scale and shift;
//! - [`linear`] and [`tied_head`] on a few rows (decoding): the weights
//!   streamed once at memory speed (inference only); under [`autocast`], their
//!   products in bf16 on any backend (mixed-precision training);
//! - [`tied_head`] under autodiff inside [`wte_trained_from`]: `wte`'s
//!   gradient for its trained rows only (the added names).
//!
//! Each takes tensors of any backend. On Flex, with or without autodiff, it runs
//! the kernel below (`linear` and `tied_head`: without autodiff, on up to
//! [`FEW_ROWS`] rows; else the general product); on any other backend (CUDA, NdArray), or inside
//! [`composed_only`], or with `TP06_FUSED=0` in the environment, it runs the
//! composed Burn ops of [`composed`], which are also what the tests hold the
//! kernels to. The kernels work row by row, so their results do not depend on
//! the number of threads; dropout draws the very masks of [`crate::Dropout`].

use std::any::{Any, TypeId};
use std::cell::Cell;
use std::sync::OnceLock;

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::flex::{Flex, FlexTensor};
use burn::prelude::*;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Bool, DType, FloatDType, TensorMetadata, TensorPrimitive};
use rayon::prelude::*;

use crate::gpt2::{Dropout, DropoutMask};
use crate::precision::Precision;

type Ad = Autodiff<Flex>;

thread_local! {
    static COMPOSED: Cell<bool> = const { Cell::new(false) };
    static AUTOCAST: Cell<Precision> = const { Cell::new(Precision::F32) };
    static WTE_TRAINED_FROM: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Runs `f` with `key` set to `value` on this thread, and puts the previous
/// value back afterwards, even when `f` panics.
fn scoped<T: Copy + 'static, R>(key: &'static std::thread::LocalKey<Cell<T>>, value: T, f: impl FnOnce() -> R) -> R {
    struct Restore<T: Copy + 'static>(&'static std::thread::LocalKey<Cell<T>>, T);
    impl<T: Copy + 'static> Drop for Restore<T> {
        fn drop(&mut self) {
            self.0.set(self.1);
        }
    }
    let _restore = Restore(key, key.replace(value));
    f()
}

/// Runs `f` with the matrix products of [`linear`] (every `Conv1D`) and
/// [`tied_head`] computed in `precision` on f32 inputs and weights, their
/// results widened back to f32: PyTorch's `torch.autocast(dtype=bfloat16)`
/// for GPT-2, where the weights, their gradients and the optimiser stay f32.
/// Layer norms, the attention, `gelu_new` and the loss stay f32 (autocast keeps
/// the norms, softmax and loss in f32; it would run the attention's products
/// in bf16). The casts are recorded by autodiff, so the gradients flow back
/// through them in f32.
pub fn autocast<R>(precision: Precision, f: impl FnOnce() -> R) -> R {
    scoped(&AUTOCAST, precision, f)
}

/// Runs `f` knowing that, of `wte`, only the rows from `from` on train (the
/// added names under `wte = "pretrained-rows"`; `None`: all rows, or none).
/// On Flex under autodiff, [`tied_head`]'s backward then multiplies only
/// those rows' columns of the logits' gradient into `wte`'s gradient and
/// leaves the pretrained rows' share zero (the trainer zeroes their gradient
/// anyway): on gpt-fr-cased-small, 1,000 rows of 50,000 instead of a product
/// as large as the head's own. The values are the same as without it.
pub fn wte_trained_from<R>(from: Option<usize>, f: impl FnOnce() -> R) -> R {
    scoped(&WTE_TRAINED_FROM, from, f)
}

/// The dtype the products of `x` take under [`autocast`], if not f32.
fn autocast_dtype<B: Backend, const D: usize>(x: &Tensor<B, D>) -> Option<FloatDType> {
    let precision = AUTOCAST.get();
    (precision != Precision::F32 && x.dtype() == DType::F32).then(|| precision.dtype())
}

/// Runs `f` with the composed Burn ops in place of the kernels on this thread
/// (tests compare the two; the benchmark measures the difference).
pub fn composed_only<R>(f: impl FnOnce() -> R) -> R {
    scoped(&COMPOSED, true, f)
}

/// The implementations an operation can run.
enum Route {
    Flex,
    Autodiff,
    Composed,
}

/// Which implementation runs for `x` (the kernels are f32 only).
fn route<B: Backend, const D: usize>(x: &Tensor<B, D>) -> Route {
    static DISABLED: OnceLock<bool> = OnceLock::new();
    let disabled = *DISABLED.get_or_init(|| std::env::var("TP06_FUSED").is_ok_and(|v| v == "0"));
    if disabled || COMPOSED.get() || x.dtype() != DType::F32 {
        Route::Composed
    } else if TypeId::of::<B>() == TypeId::of::<Flex>() {
        Route::Flex
    } else if TypeId::of::<B>() == TypeId::of::<Ad>() {
        Route::Autodiff
    } else {
        Route::Composed
    }
}

/// Moves a value to the type it is known (by [`route`]) to have.
fn cast<T: 'static, U: 'static>(value: T) -> U {
    let boxed: Box<dyn Any> = Box::new(value);
    *boxed.downcast::<U>().expect("route() checked the backend type")
}

/// The output of a fused op under autodiff, with `state` kept for its backward
/// when an input needs a gradient.
fn record<O: Backward<Flex, N>, const N: usize>(
    op: OpsKind<O, Flex, O::State, NoCheckpointing, N>,
    state: O::State,
    out: FlexTensor,
) -> FloatTensor<Ad> {
    match op {
        OpsKind::Tracked(prep) => prep.finish(state, out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}

fn float<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> FloatTensor<B> {
    tensor.into_primitive().tensor()
}

fn tensor<B: Backend, const D: usize>(primitive: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(primitive))
}

/// A contiguous f32 copy-free view of `x` when it already is one.
fn contiguous(x: FlexTensor) -> FlexTensor {
    let y = x.to_contiguous();
    drop(x); // so that `y` is the only owner when `x` was already contiguous
    y
}

fn values(x: &FlexTensor) -> &[f32] {
    x.as_slice::<f32>().expect("a contiguous f32 tensor")
}

fn new_tensor(values: Vec<f32>, shape: burn::tensor::Shape) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// The padding mask of a Flex tensor (with or without autodiff) on the host, one
/// byte per key (non-zero = hidden): what Flex stores for a bool tensor.
fn host_pad<B: Backend>(pad: Option<Tensor<B, 2, Bool>>) -> Option<Vec<u8>> {
    pad.map(|pad| contiguous(cast(pad.into_primitive())).storage::<u8>().to_vec())
}

/// `x`'s storage to write in place when nothing else holds it, else a copy.
fn into_values(x: FlexTensor) -> (Vec<f32>, burn::tensor::Shape) {
    let x = contiguous(x);
    let shape = x.shape();
    let data = x.into_data();
    (data.into_vec::<f32>().expect("an f32 tensor"), shape)
}

/// Rows per parallel task: enough work per task to amortise the scheduling.
fn rows_per_task(row_len: usize) -> usize {
    (16_384 / row_len.max(1)).max(1)
}

// ---------------------------------------------------------------------------
// Vectorised element kernels. Written as plain loops with 8 accumulators so
// that the compiler vectorises them; compiled twice (AVX2 + FMA when the CPU
// has them, else the baseline) with the same operation order, so both give
// the same bits.

#[cfg(test)]
thread_local! {
    /// Tests run the kernels' baseline build on a CPU with AVX2 through this.
    static BASELINE_ONLY: Cell<bool> = const { Cell::new(false) };
}

/// Whether the kernels must skip their AVX2 build (tests only).
#[inline]
fn baseline_only() -> bool {
    #[cfg(test)]
    return BASELINE_ONLY.get();
    #[cfg(not(test))]
    false
}

macro_rules! simd_kernel {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$doc])*
        fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                if !baseline_only() && std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU has the features `avx2` was compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

/// `eˣ` to about 1 ulp (Cephes' `expf`: `2ⁿ · p(r)`, `|r| ≤ ln 2 / 2`), written
/// without branches or library calls so that loops over it vectorise; 0 below
/// −87.3 (where f32 underflows), NaN for NaN.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2²³: adding it rounds to an integer
    let clamped = x.clamp(-87.336_54, 88.376_26);
    let t = clamped * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = clamped - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    let two_n = f32::from_bits(
        (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32).wrapping_add(127).wrapping_shl(23) as u32,
    );
    let y = e * two_n;
    if x < -87.336_54 {
        0.0
    } else if x.is_nan() {
        x
    } else {
        y
    }
}

#[inline(always)]
fn max8(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for k in 0..8 {
            acc[k] = if c[k] > acc[k] { c[k] } else { acc[k] };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for &v in acc.iter().chain(tail) {
        m = if v > m { v } else { m };
    }
    m
}

/// Σ xᵢ·yᵢ in a fixed order, `LANES` products in flight (a multiple of 8).
#[inline(always)]
fn dot<const LANES: usize>(x: &[f32], y: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let (xc, yc) = (x.chunks_exact(LANES), y.chunks_exact(LANES));
    let (xt, yt) = (xc.remainder(), yc.remainder());
    for (a, b) in xc.zip(yc) {
        for k in 0..LANES {
            acc[k] += a[k] * b[k];
        }
    }
    let mut s = sum8(&acc);
    for (a, b) in xt.iter().zip(yt) {
        s += a * b;
    }
    s
}

/// Σ xᵢ in a fixed order.
#[inline(always)]
fn sum8(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for k in 0..8 {
            acc[k] += c[k];
        }
    }
    let mut s = 0.0;
    for a in acc {
        s += a;
    }
    for &v in tail {
        s += v;
    }
    s
}

/// `x ← e^(x − m)` and returns the sum, in a fixed order. The exponentials are
/// one plain loop (so that it vectorises), the sum another.
#[inline(always)]
fn exp_shift_sum(x: &mut [f32], m: f32) -> f32 {
    for v in x.iter_mut() {
        *v = exp(*v - m);
    }
    sum8(x)
}

simd_kernel! {
    /// log Σ e^x of one row of logits.
    fn log_sum_exp(x: &[f32]) -> f32 {
        let m = max8(x);
        if m.is_infinite() {
            return m;
        }
        let mut buffer = [0.0f32; 512];
        let mut s = 0.0;
        for block in x.chunks(buffer.len()) {
            let e = &mut buffer[..block.len()];
            e.copy_from_slice(block);
            s += exp_shift_sum(e, m);
        }
        m + s.ln()
    }
}

simd_kernel! {
    /// `x ← scale · e^(x − lse)`: the softmax of a row of logits, scaled.
    fn scaled_softmax(x: &mut [f32], lse: f32, scale: f32) {
        for v in x.iter_mut() {
            *v = scale * exp(*v - lse);
        }
    }
}

simd_kernel! {
    /// One row of attention scores, in place: `s ← softmax(s / divisor)` over
    /// the keys `j < visible` not hidden by `pad`, 0 elsewhere (and everywhere
    /// if none is visible).
    fn masked_softmax(s: &mut [f32], divisor: f32, visible: usize, pad: Option<&[u8]>) {
        let (seen, unseen) = s.split_at_mut(visible);
        unseen.fill(0.0);
        match pad {
            None => {
                for o in seen.iter_mut() {
                    *o /= divisor;
                }
            }
            Some(pad) => {
                for (o, &hidden) in seen.iter_mut().zip(pad) {
                    *o = if hidden != 0 { f32::NEG_INFINITY } else { *o / divisor };
                }
            }
        }
        let m = max8(seen);
        if m == f32::NEG_INFINITY {
            seen.fill(0.0);
            return;
        }
        let sum = exp_shift_sum(seen, m);
        let inv = 1.0 / sum;
        for o in seen.iter_mut() {
            *o *= inv;
        }
    }
}

simd_kernel! {
    /// The softmax backward of one row, in place: `g ← (p ⊙ (g − ⟨g, p⟩)) / divisor`.
    fn softmax_backward(p: &[f32], divisor: f32, g: &mut [f32]) {
        let dot = dot::<8>(g, p);
        for (gj, &pj) in g.iter_mut().zip(p) {
            *gj = pj * (*gj - dot) / divisor;
        }
    }
}

/// `2·√(2/π)`: `½(1 + tanh u) = σ(2u)`.
const GELU_K: f32 = 2.0 * 0.797_884_6;
const GELU_C: f32 = 0.044_715;

simd_kernel! {
    /// `gelu_new(x) = x · σ(2√(2/π)(x + 0.044715x³))`.
    fn gelu_forward(x: &[f32], y: &mut [f32]) {
        for (o, &v) in y.iter_mut().zip(x) {
            let z = GELU_K * (v + GELU_C * v * v * v);
            *o = v / (1.0 + exp(-z));
        }
    }
}

simd_kernel! {
    /// `g ← g · gelu_new'(x)`, `gelu_new' = σ + x σ(1 − σ) k (1 + 3c x²)`.
    fn gelu_backward(x: &[f32], g: &mut [f32]) {
        for (gi, &v) in g.iter_mut().zip(x) {
            let z = GELU_K * (v + GELU_C * v * v * v);
            let s = 1.0 / (1.0 + exp(-z));
            *gi *= s + v * s * (1.0 - s) * GELU_K * (1.0 + 3.0 * GELU_C * v * v);
        }
    }
}

simd_kernel! {
    /// One row of layer norm: returns (mean, 1/σ) and writes `y`.
    fn layer_norm_row(x: &[f32], w: &[f32], b: &[f32], eps: f32, y: &mut [f32]) -> (f32, f32) {
        let n = x.len() as f32;
        let mean = sum8(x) / n;
        for (o, &v) in y.iter_mut().zip(x) {
            *o = v - mean;
        }
        let var = dot::<8>(y, y) / n;
        let rstd = 1.0 / (var + eps).sqrt();
        for ((o, &wi), &bi) in y.iter_mut().zip(w).zip(b) {
            *o = *o * rstd * wi + bi;
        }
        (mean, rstd)
    }
}

simd_kernel! {
    /// Layer norm backward of one row: `dx` in place of `g` (= dy on entry);
    /// adds this row's terms to `dw` and `db`.
    fn layer_norm_row_backward(x: &[f32], w: &[f32], mean: f32, rstd: f32, g: &mut [f32], dw: &mut [f32], db: &mut [f32]) {
        let n = x.len() as f32;
        let (mut sum_gw, mut sum_gw_xhat) = (0.0f32, 0.0f32);
        for i in 0..x.len() {
            let xhat = (x[i] - mean) * rstd;
            let dy = g[i];
            dw[i] += dy * xhat;
            db[i] += dy;
            let gw = dy * w[i];
            sum_gw += gw;
            sum_gw_xhat += gw * xhat;
        }
        let (mean_gw, mean_gw_xhat) = (sum_gw / n, sum_gw_xhat / n);
        for i in 0..x.len() {
            let xhat = (x[i] - mean) * rstd;
            g[i] = rstd * (g[i] * w[i] - mean_gw - xhat * mean_gw_xhat);
        }
    }
}

// ---------------------------------------------------------------------------
// Cross-entropy.

/// Σᵢ wᵢ · −log softmax(logitsᵢ)[targetsᵢ] over the rows of `logits [n, vocab]`,
/// as a one-element tensor; rows of weight 0 contribute nothing.
pub fn nll_sum<B: Backend>(logits: Tensor<B, 2>, targets: &[u32], weights: &[f32]) -> Tensor<B, 1> {
    let [n, vocab] = logits.dims();
    assert_eq!((targets.len(), weights.len()), (n, n), "one target and one weight per row");
    assert!(targets.iter().all(|&t| (t as usize) < vocab), "targets within the vocabulary");
    match route(&logits) {
        Route::Composed => composed::nll_sum(logits, targets, weights),
        Route::Flex => {
            let (loss, _) = nll_forward(&contiguous(cast(float(logits))), targets, weights);
            tensor(cast(loss))
        }
        Route::Autodiff => {
            let logits: FloatTensor<Ad> = cast(float(logits));
            let x = contiguous(logits.primitive);
            let (loss, lse) = nll_forward(&x, targets, weights);
            let state = NllState { logits: x, lse, targets: targets.to_vec(), weights: weights.to_vec() };
            let op = NllBackward.prepare::<NoCheckpointing>([logits.node.clone()]).compute_bound().stateful();
            let out = record(op, state, loss);
            tensor(cast(out))
        }
    }
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

// ---------------------------------------------------------------------------
// Attention probabilities.

/// `softmax(scores / divisor)` over the keys each query may see, then dropout:
/// `scores [b, h, t, past + t]` (query `i` is position `past + i` and sees keys
/// `0 ..= past + i`), `pad [b, past + t]` hides padding keys (true = hidden).
pub fn attention_probs<B: Backend>(
    scores: Tensor<B, 4>,
    past: usize,
    pad: Option<Tensor<B, 2, Bool>>,
    divisor: f32,
    dropout: Dropout,
) -> Tensor<B, 4> {
    let [_, h, t, total] = scores.dims();
    let geometry = Geometry { h, t, total, past, divisor };
    match route(&scores) {
        Route::Composed => composed::attention_probs(scores, past, pad, divisor, dropout),
        Route::Flex => {
            let pad = host_pad(pad);
            let (probs, _) = attention_forward(contiguous(cast(float(scores))), &geometry, pad.as_deref(), None);
            tensor(cast(probs))
        }
        Route::Autodiff => {
            let pad = host_pad(pad);
            let scores: FloatTensor<Ad> = cast(float(scores));
            let mask = (dropout.p > 0.0).then(|| DropoutMask::next(dropout.p));
            let (out, probs) = attention_forward(contiguous(scores.primitive), &geometry, pad.as_deref(), mask);
            let state = AttentionState { probs, mask, divisor };
            let op = AttentionBackward.prepare::<NoCheckpointing>([scores.node.clone()]).compute_bound().stateful();
            let out = record(op, state, out);
            tensor(cast(out))
        }
    }
}

struct Geometry {
    h: usize,
    t: usize,
    total: usize,
    past: usize,
    divisor: f32,
}

/// The output (after dropout) and the probabilities (before).
fn attention_forward(
    scores: FlexTensor,
    g: &Geometry,
    pad: Option<&[u8]>,
    mask: Option<DropoutMask>,
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
    mask: Option<DropoutMask>,
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

// ---------------------------------------------------------------------------
// Causal attention.

/// Causal self-attention of `qkv [b, t, 3c]` (q, k, v along the last axis,
/// `n_head` heads each): `softmax(q kᵀ / divisor)` over the keys at or before
/// each query and not hidden by `pad [b, t]` (true = padding), then dropout,
/// times `v`, heads side by side → `[b, t, c]`. No cache: the keys are the
/// queries' positions. A query that sees no key at all (left padding) gets
/// zeros, on both routes.
pub fn causal_attention<B: Backend>(
    qkv: Tensor<B, 3>,
    n_head: usize,
    pad: Option<Tensor<B, 2, Bool>>,
    divisor: f32,
    dropout: Dropout,
) -> Tensor<B, 3> {
    let [b, t, c3] = qkv.dims();
    let heads = Heads { b, t, h: n_head, c: c3 / 3, hd: c3 / 3 / n_head, divisor };
    match route(&qkv) {
        Route::Composed => composed::causal_attention(qkv, n_head, pad, divisor, dropout),
        Route::Flex => {
            let pad = host_pad(pad);
            let (y, _) = heads.forward(&contiguous(cast(float(qkv))), pad.as_deref(), None);
            tensor(cast(y))
        }
        Route::Autodiff => {
            let pad = host_pad(pad);
            let qkv: FloatTensor<Ad> = cast(float(qkv));
            let input = contiguous(qkv.primitive);
            let mask = (dropout.p > 0.0).then(|| DropoutMask::next(dropout.p));
            let (y, probs) = heads.forward(&input, pad.as_deref(), mask);
            let state = CausalState { qkv: input, probs, mask, heads };
            let op = CausalBackward.prepare::<NoCheckpointing>([qkv.node.clone()]).compute_bound().stateful();
            let out = record(op, state, y);
            tensor(cast(out))
        }
    }
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
    /// Offset of head `hi` of sequence `bi`'s part (0 = q, 1 = k, 2 = v) in `qkv`.
    fn at(&self, bi: usize, hi: usize, part: usize) -> usize {
        bi * self.t * 3 * self.c + part * self.c + hi * self.hd
    }

    /// The output `[b, t, c]` and the probabilities before dropout `[b, h, t, t]`.
    fn forward(&self, qkv: &FlexTensor, pad: Option<&[u8]>, mask: Option<DropoutMask>) -> (FlexTensor, FlexTensor) {
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
                    masked_softmax(row, divisor, i + 1, pad);
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
    fn backward(&self, qkv: &FlexTensor, probs: &FlexTensor, mask: Option<DropoutMask>, dy: &FlexTensor) -> FlexTensor {
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
    mask: Option<DropoutMask>,
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

// ---------------------------------------------------------------------------
// gelu_new.

/// GPT-2's `gelu_new`, `½x(1 + tanh(√(2/π)(x + 0.044715x³)))`.
pub fn gelu_new<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    match route(&x) {
        Route::Composed => composed::gelu_new(x),
        Route::Flex => tensor(cast(gelu(&contiguous(cast(float(x)))))),
        Route::Autodiff => {
            let x: FloatTensor<Ad> = cast(float(x));
            let input = contiguous(x.primitive);
            let y = gelu(&input);
            let op = GeluBackward.prepare::<NoCheckpointing>([x.node.clone()]).compute_bound().stateful();
            let out = record(op, input, y);
            tensor(cast(out))
        }
    }
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

// ---------------------------------------------------------------------------
// Layer norm.

/// `nn.LayerNorm` over the last dimension (biased variance, like torch).
pub fn layer_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 1>,
    bias: Tensor<B, 1>,
    eps: f64,
) -> Tensor<B, D> {
    match route(&x) {
        // Flex's own layer norm is already one fused pass; only its gradient is composed.
        Route::Composed | Route::Flex => composed::layer_norm(x, weight, bias, eps),
        Route::Autodiff => {
            let [x, w, b]: [FloatTensor<Ad>; 3] = [cast(float(x)), cast(float(weight)), cast(float(bias))];
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
            let out = record(op, state, y);
            tensor(cast(out))
        }
    }
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

// ---------------------------------------------------------------------------
// Decoding's products: a few rows times a weight matrix. Their cost is reading
// the weights once, which the general matrix product does at about two thirds
// of the memory bandwidth here; these stream them at nearly all of it.

/// Rows up to which [`linear`] and [`tied_head`] take the streaming kernels;
/// more rows go to the general product (training, prompts, batched passes).
pub const FEW_ROWS: usize = 4;

/// Weight rows per task of [`linear`]: each task sums its rows into its own
/// partial output, and the partials are added in task order, so that the
/// result does not depend on the number of threads.
const WEIGHT_ROWS_PER_TASK: usize = 64;

/// Vocabulary rows per task of [`tied_head`].
const VOCAB_ROWS_PER_TASK: usize = 256;

/// HF's `Conv1D`: `x [m, k] · weight [k, n] + bias [n]`.
pub fn linear<B: Backend>(x: Tensor<B, 2>, weight: Tensor<B, 2>, bias: Tensor<B, 1>) -> Tensor<B, 2> {
    if let Some(low) = autocast_dtype(&x) {
        return composed::linear(x.cast(low), weight.cast(low), bias.cast(low)).cast(FloatDType::F32);
    }
    match route(&x) {
        Route::Flex if x.dims()[0] <= FEW_ROWS => {
            let [x, weight, bias] = [float(x), float(weight), float(bias)].map(|t| contiguous(cast(t)));
            tensor(cast(few_rows_linear(&x, &weight, &bias)))
        }
        _ => composed::linear(x, weight, bias),
    }
}

/// The logits of the tied head: `hidden [m, c] · wteᵀ` with `wte [vocab, c]`.
pub fn tied_head<B: Backend>(hidden: Tensor<B, 2>, wte: Tensor<B, 2>) -> Tensor<B, 2> {
    if let Some(low) = autocast_dtype(&hidden) {
        return composed::tied_head(hidden.cast(low), wte.cast(low)).cast(FloatDType::F32);
    }
    match route(&hidden) {
        Route::Flex if hidden.dims()[0] <= FEW_ROWS => {
            let [hidden, wte] = [float(hidden), float(wte)].map(|t| contiguous(cast(t)));
            tensor(cast(few_rows_head(&hidden, &wte)))
        }
        Route::Autodiff if WTE_TRAINED_FROM.get().is_some_and(|from| from > 0) => {
            let from = WTE_TRAINED_FROM.get().unwrap_or_default();
            tensor(cast(head_trained_from(cast(float(hidden)), cast(float(wte)), from)))
        }
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
    let (m, k, n) = (x.shape()[0], x.shape()[1], weight.shape()[1]);
    let (x, w) = (values(x), values(weight));
    let mut partials = vec![0.0f32; k.div_ceil(WEIGHT_ROWS_PER_TASK) * m * n];
    partials.par_chunks_mut(m * n).enumerate().for_each(|(task, partial)| {
        let rows = task * WEIGHT_ROWS_PER_TASK..(k.min((task + 1) * WEIGHT_ROWS_PER_TASK));
        for (r, acc) in partial.chunks_exact_mut(n).enumerate() {
            accumulate_rows(&x[r * k..][rows.clone()], &w[rows.start * n..rows.end * n], acc);
        }
    });
    let mut y: Vec<f32> = values(bias).repeat(m);
    for partial in partials.chunks_exact(m * n) {
        add_into(partial, &mut y);
    }
    new_tensor(y, [m, n].into())
}

fn few_rows_head(hidden: &FlexTensor, wte: &FlexTensor) -> FlexTensor {
    let (m, c, vocab) = (hidden.shape()[0], hidden.shape()[1], wte.shape()[0]);
    let (x, w) = (values(hidden), values(wte));
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
    new_tensor(y, [m, vocab].into())
}

simd_kernel! {
    /// `acc[j] += Σᵢ x[i]·w[i·n + j]` over the rows of `w` (`n = acc.len()`),
    /// four rows per pass over `acc`, in a fixed order.
    fn accumulate_rows(x: &[f32], w: &[f32], acc: &mut [f32]) {
        let n = acc.len();
        let (quads, rest) = x.split_at(x.len() / 4 * 4);
        for (i, q) in quads.chunks_exact(4).enumerate() {
            let rows = &w[4 * i * n..4 * (i + 1) * n];
            let (r0, r1, r2, r3) = (&rows[..n], &rows[n..2 * n], &rows[2 * n..3 * n], &rows[3 * n..]);
            for j in 0..n {
                acc[j] += q[0] * r0[j] + q[1] * r1[j] + q[2] * r2[j] + q[3] * r3[j];
            }
        }
        for (i, &a) in rest.iter().enumerate() {
            let row = &w[(quads.len() + i) * n..][..n];
            for j in 0..n {
                acc[j] += a * row[j];
            }
        }
    }
}

simd_kernel! {
    /// `out[v] = x · w[v·c .. (v+1)·c]`, each a dot product in a fixed order.
    fn dots(x: &[f32], w: &[f32], out: &mut [f32]) {
        for (o, row) in out.iter_mut().zip(w.chunks_exact(x.len())) {
            *o = dot::<32>(x, row);
        }
    }
}

simd_kernel! {
    fn add_into(x: &[f32], y: &mut [f32]) {
        for (y, x) in y.iter_mut().zip(x) {
            *y += x;
        }
    }
}

/// The same operations composed of Burn ops: what runs on the other backends,
/// and the reference of the tests.
pub mod composed {
    use burn::prelude::*;
    use burn::tensor::{Bool, TensorPrimitive, activation};

    use crate::gpt2::Dropout;

    /// See [`super::nll_sum`].
    pub fn nll_sum<B: Backend>(logits: Tensor<B, 2>, targets: &[u32], weights: &[f32]) -> Tensor<B, 1> {
        let [n, _] = logits.dims();
        let device = logits.device();
        let targets: Vec<i64> = targets.iter().map(|&t| t as i64).collect();
        let targets = Tensor::<B, 2, Int>::from_data(TensorData::new(targets, [n, 1]), &device);
        let weights = Tensor::<B, 1>::from_data(TensorData::new(weights.to_vec(), [n]), &device);
        let picked = activation::log_softmax(logits, 1).gather(1, targets).reshape([n]);
        (picked * weights).sum().neg()
    }

    /// See [`super::linear`].
    pub fn linear<B: Backend>(x: Tensor<B, 2>, weight: Tensor<B, 2>, bias: Tensor<B, 1>) -> Tensor<B, 2> {
        burn::tensor::module::linear(x, weight, Some(bias))
    }

    /// See [`super::tied_head`]. The transposed `wte` is a strided view
    /// multiplied as is: no copy of the vocabulary-sized matrix per call.
    pub fn tied_head<B: Backend>(hidden: Tensor<B, 2>, wte: Tensor<B, 2>) -> Tensor<B, 2> {
        hidden.matmul(wte.transpose())
    }

    /// See [`super::attention_probs`].
    pub fn attention_probs<B: Backend>(
        scores: Tensor<B, 4>,
        past: usize,
        pad: Option<Tensor<B, 2, Bool>>,
        divisor: f32,
        dropout: Dropout,
    ) -> Tensor<B, 4> {
        let [b, h, t, total] = scores.dims();
        let scores = if divisor == 1.0 { scores } else { scores / divisor as f64 };
        // Query i (absolute position past + i) sees keys 0 ..= past + i.
        let causal = Tensor::<B, 2, Bool>::tril_mask([t, total], past as i64, &scores.device()); // true = hidden
        let Some(pad) = pad else {
            let scores = scores.mask_fill(causal.unsqueeze::<4>().expand([b, h, t, total]), f32::NEG_INFINITY);
            return dropout.forward(activation::softmax(scores, 3));
        };
        let hidden = causal.unsqueeze::<4>().bool_or(pad.reshape([b, 1, 1, total])); // [b, 1, t, total]
        // Left padding can hide every key of a query: its softmax would be NaN,
        // which the next layer's `probs · v` spreads to every row. Zeros, as the
        // fused kernel gives.
        let blind = hidden.clone().all_dim(3).expand([b, h, t, total]);
        let scores = scores.mask_fill(hidden.expand([b, h, t, total]), f32::NEG_INFINITY);
        dropout.forward(activation::softmax(scores, 3).mask_fill(blind, 0.0))
    }

    /// See [`super::causal_attention`].
    pub fn causal_attention<B: Backend>(
        qkv: Tensor<B, 3>,
        n_head: usize,
        pad: Option<Tensor<B, 2, Bool>>,
        divisor: f32,
        dropout: Dropout,
    ) -> Tensor<B, 3> {
        let [q, k, v] = split_heads(qkv, n_head);
        let probs = attention_probs(q.matmul(k.swap_dims(2, 3)), 0, pad, divisor, dropout);
        merge_heads(probs.matmul(v))
    }

    /// `qkv [b, t, 3c]` → q, k, v, each `[b, h, t, c / h]`.
    pub(crate) fn split_heads<B: Backend>(qkv: Tensor<B, 3>, n_head: usize) -> [Tensor<B, 4>; 3] {
        let [b, t, c3] = qkv.dims();
        let hd = c3 / 3 / n_head;
        let mut parts = qkv.chunk(3, 2).into_iter().map(|part| part.reshape([b, t, n_head, hd]).swap_dims(1, 2));
        [(); 3].map(|_| parts.next().expect("three parts"))
    }

    /// `[b, h, t, hd]` → `[b, t, h·hd]`: the heads side by side.
    pub(crate) fn merge_heads<B: Backend>(y: Tensor<B, 4>) -> Tensor<B, 3> {
        let [b, h, t, hd] = y.dims();
        y.swap_dims(1, 2).reshape([b, t, h * hd])
    }

    /// See [`super::gelu_new`]; computed as the identical `x · σ(2√(2/π)(x +
    /// 0.044715x³))`: one sigmoid instead of a power, a tanh and three passes.
    pub fn gelu_new<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
        const TWO_SQRT_2_OVER_PI: f64 = 2.0 * 0.797_884_560_802_865_4;
        let cube = x.clone() * x.clone() * x.clone();
        let inner = (x.clone() + cube * 0.044715) * TWO_SQRT_2_OVER_PI;
        x * activation::sigmoid(inner)
    }

    /// See [`super::layer_norm`].
    pub fn layer_norm<B: Backend, const D: usize>(
        x: Tensor<B, D>,
        weight: Tensor<B, 1>,
        bias: Tensor<B, 1>,
        eps: f64,
    ) -> Tensor<B, D> {
        Tensor::from_primitive(TensorPrimitive::Float(B::layer_norm(
            x.into_primitive().tensor(),
            weight.into_primitive().tensor(),
            Some(bias.into_primitive().tensor()),
            eps,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_avx2_and_baseline_builds_of_the_kernels_give_the_same_bits() {
        // Inputs of unit scale with a spread, some exactly at the softmax's edge cases.
        let x: Vec<f32> =
            (0..1003).map(|i| ((i * 7919 % 1000) as f32 / 100.0 - 5.0) * if i % 3 == 0 { 3.0 } else { 1.0 }).collect();
        let w: Vec<f32> = (0..1003).map(|i| 0.5 + (i % 17) as f32 / 16.0).collect();
        let pad: Vec<u8> = (0..1003).map(|i| (i % 11 == 0) as u8).collect();
        let run = || {
            let mut out = vec![log_sum_exp(&x)];
            let mut row = x.clone();
            masked_softmax(&mut row, 8.0, 900, Some(&pad));
            out.extend(&row);
            let mut g = x.clone();
            softmax_backward(&row, 8.0, &mut g);
            out.extend(&g);
            let mut y = vec![0.0; x.len()];
            gelu_forward(&x, &mut y);
            out.extend(&y);
            gelu_backward(&x, &mut y);
            out.extend(&y);
            let (mean, rstd) = layer_norm_row(&x, &w, &w, 1e-5, &mut y);
            out.extend([mean, rstd]);
            out.extend(&y);
            let (mut dw, mut db) = (vec![0.0; x.len()], vec![0.0; x.len()]);
            layer_norm_row_backward(&x, &w, mean, rstd, &mut y, &mut dw, &mut db);
            out.extend(&y);
            out.extend(&dw);
            let mut s = x.clone();
            scaled_softmax(&mut s, out[0], 0.5);
            out.extend(&s);
            let mut acc = vec![0.25; 59];
            accumulate_rows(&x[..17], &x[..17 * 59], &mut acc);
            add_into(&w[..59], &mut acc);
            out.extend(&acc);
            let mut logits = vec![0.0; 13];
            dots(&x[..75], &w[..13 * 75], &mut logits);
            out.extend(&logits);
            out.into_iter().map(f32::to_bits).collect::<Vec<_>>()
        };
        let simd = run();
        #[cfg(target_arch = "x86_64")]
        let both = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
        #[cfg(not(target_arch = "x86_64"))]
        let both = false;
        if !both {
            tp06_testkit::note("this CPU has no AVX2 + FMA: the kernels' baseline build was compared with itself");
        }
        BASELINE_ONLY.set(true);
        let baseline = run();
        BASELINE_ONLY.set(false);
        assert_eq!(simd, baseline);
    }

    #[test]
    fn exp_is_within_two_ulp_of_libm_and_saturates_like_it() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (ours, libm) = (exp(x) as f64, (x as f64).exp());
            worst = worst.max(((ours - libm) / libm).abs());
            x += 0.0137;
        }
        assert!(worst < 2.5e-7, "relative error {worst}");
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(f32::NAN).is_nan());
    }
}
