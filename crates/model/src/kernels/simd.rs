//! The kernels' row loops: softmax, its backward, `gelu_new`, layer norm and
//! the streamed products, on slices. Written as plain loops with 8
//! accumulators so that the compiler vectorises them; compiled three times
//! (AVX-512, AVX2 + FMA, the baseline: the best the CPU has is taken) with
//! the same operation order, so all give the same bits.

#[cfg(test)]
/// Tests run a lower build of the kernels than the CPU has through this: 0
/// the best, 1 at most AVX2 + FMA, 2 the baseline.
static HIGHEST_TIER: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Whether the kernels may take their build of `tier` (1: AVX2 + FMA, 0:
/// AVX-512): always, but in tests that ask for a lower one.
#[inline]
#[allow(dead_code)]
fn allowed(tier: u8) -> bool {
    #[cfg(test)]
    return HIGHEST_TIER.load(std::sync::atomic::Ordering::Relaxed) <= tier;
    #[cfg(not(test))]
    {
        let _ = tier;
        true
    }
}

macro_rules! simd_kernel {
    ($(#[$doc:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$doc])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                if allowed(0) && std::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has the features `avx512` was compiled for.
                    return unsafe { avx512($($arg),*) };
                }
                if allowed(1) && std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
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

/// A bf16 value as f32 (exactly: its bits are the high half of an f32's).
#[inline(always)]
fn widen(v: half::bf16) -> f32 {
    f32::from_bits((v.to_bits() as u32) << 16)
}

/// `y[j] ← fma(x[i], w[i·n + j], y[j])` for `i = 0, 1, …` in order: each
/// `y[j]` one chain (the body of [`chain_rows`]), four weight rows per pass
/// over `y`.
#[inline(always)]
fn chains_into(x: &[f32], w: &[f32], n: usize, y: &mut [f32]) {
    let width = y.len();
    let row = |i: usize| &w[i * n..][..width];
    let quads = x.len() / 4 * 4;
    for i in (0..quads).step_by(4) {
        let (w0, w1, w2, w3) = (row(i), row(i + 1), row(i + 2), row(i + 3));
        let (x0, x1, x2, x3) = (x[i], x[i + 1], x[i + 2], x[i + 3]);
        for j in 0..width {
            y[j] = x3.mul_add(w3[j], x2.mul_add(w2[j], x1.mul_add(w1[j], x0.mul_add(w0[j], y[j]))));
        }
    }
    for (i, &xi) in x.iter().enumerate().skip(quads) {
        for (y, &wij) in y.iter_mut().zip(row(i)) {
            *y = xi.mul_add(wij, *y);
        }
    }
}

/// Σ xᵢ·wᵢ in sixteen chains, lane `l` taking `fma(xᵢ, wᵢ, ·)` for the
/// `i ≡ l (mod 16)` in order (a short last chunk padded with zeros), added
/// as [`sum16`] adds them.
#[inline(always)]
fn lane_dot(x: &[f32], w: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let (xc, wc) = (x.chunks_exact(16), w.chunks_exact(16));
    let (xt, wt) = (xc.remainder(), wc.remainder());
    for (a, b) in xc.zip(wc) {
        for l in 0..16 {
            acc[l] = a[l].mul_add(b[l], acc[l]);
        }
    }
    if !xt.is_empty() {
        let (mut a, mut b) = ([0.0f32; 16], [0.0f32; 16]);
        a[..xt.len()].copy_from_slice(xt);
        b[..wt.len()].copy_from_slice(wt);
        for l in 0..16 {
            acc[l] = a[l].mul_add(b[l], acc[l]);
        }
    }
    sum16(acc)
}

/// `acc ← (acc + x₁·w₁) + x₀·w₀`: one lane of `vdpbf16ps` (the odd
/// element's product first, each sum rounded). With bf16 factors the
/// products are exact in f32, so a multiply and an add give its bits (but
/// for subnormals, which it flushes to zero).
#[inline(always)]
fn pair_step(acc: f32, [x0, x1]: [f32; 2], [w0, w1]: [f32; 2]) -> f32 {
    (acc + x1 * w1) + x0 * w0
}

/// The body of [`accumulate_pairs_bf16`]: two pairs of rows per pass over `acc`.
#[inline(always)]
fn pairs_into(x: &[half::bf16], w: &[half::bf16], acc: &mut [f32]) {
    let n = acc.len();
    let row = |i: usize| &w[i * n..(i + 1) * n];
    let (quads, rest) = x.split_at(x.len() / 4 * 4);
    for (i, q) in quads.chunks_exact(4).enumerate() {
        let q = [widen(q[0]), widen(q[1]), widen(q[2]), widen(q[3])];
        let (r0, r1, r2, r3) = (row(4 * i), row(4 * i + 1), row(4 * i + 2), row(4 * i + 3));
        for j in 0..n {
            let a = pair_step(acc[j], [q[0], q[1]], [widen(r0[j]), widen(r1[j])]);
            acc[j] = pair_step(a, [q[2], q[3]], [widen(r2[j]), widen(r3[j])]);
        }
    }
    let first = quads.len();
    for (p, pair) in rest.chunks(2).enumerate() {
        let x0 = widen(pair[0]);
        let r0 = row(first + 2 * p);
        match pair {
            [_, x1] => {
                let (x1, r1) = (widen(*x1), row(first + 2 * p + 1));
                for j in 0..n {
                    acc[j] = pair_step(acc[j], [x0, x1], [widen(r0[j]), widen(r1[j])]);
                }
            }
            _ => {
                for j in 0..n {
                    acc[j] = pair_step(acc[j], [x0, 0.0], [widen(r0[j]), 0.0]);
                }
            }
        }
    }
}

/// Σ xᵢ·wᵢ on 16 lanes as `vdpbf16ps` computes it: lane `l` takes the pair
/// `(2l, 2l + 1)` of each 32 values ([`pair_step`]; a short last chunk is
/// padded with zeros), and the lanes are added as [`sum16`] adds them.
#[inline(always)]
fn pair_dot(x: &[half::bf16], w: &[half::bf16]) -> f32 {
    let mut acc = [0.0f32; 16];
    let (xc, wc) = (x.chunks_exact(32), w.chunks_exact(32));
    let (xt, wt) = (xc.remainder(), wc.remainder());
    for (a, b) in xc.zip(wc) {
        for l in 0..16 {
            acc[l] = pair_step(acc[l], [widen(a[2 * l]), widen(a[2 * l + 1])], [widen(b[2 * l]), widen(b[2 * l + 1])]);
        }
    }
    if !xt.is_empty() {
        let (mut a, mut b) = ([0.0f32; 32], [0.0f32; 32]);
        for (i, (x, w)) in xt.iter().zip(wt).enumerate() {
            (a[i], b[i]) = (widen(*x), widen(*w));
        }
        for l in 0..16 {
            acc[l] = pair_step(acc[l], [a[2 * l], a[2 * l + 1]], [b[2 * l], b[2 * l + 1]]);
        }
    }
    sum16(acc)
}

/// 16 lanes added in the order of a 512-bit register's halving: the halves,
/// then the halves of that, then the pairs `(0, 2)` and `(1, 3)`, then those.
#[inline(always)]
pub(super) fn sum16(a: [f32; 16]) -> f32 {
    let h: [f32; 8] = std::array::from_fn(|i| a[i] + a[i + 8]);
    let s: [f32; 4] = std::array::from_fn(|i| h[i] + h[i + 4]);
    (s[0] + s[2]) + (s[1] + s[3])
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
    pub(super) fn log_sum_exp(x: &[f32]) -> f32 {
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
    pub(super) fn scaled_softmax(x: &mut [f32], lse: f32, scale: f32) {
        for v in x.iter_mut() {
            *v = scale * exp(*v - lse);
        }
    }
}

simd_kernel! {
    /// One row of attention scores, in place: `s ← softmax(s / divisor)` over
    /// the keys `j < visible` not hidden by `pad`, 0 elsewhere (and everywhere
    /// if none is visible).
    pub(super) fn masked_softmax(s: &mut [f32], divisor: f32, visible: usize, pad: Option<&[u8]>) {
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
    pub(super) fn softmax_backward(p: &[f32], divisor: f32, g: &mut [f32]) {
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
    pub(super) fn gelu_forward(x: &[f32], y: &mut [f32]) {
        for (o, &v) in y.iter_mut().zip(x) {
            let z = GELU_K * (v + GELU_C * v * v * v);
            *o = v / (1.0 + exp(-z));
        }
    }
}

simd_kernel! {
    /// `g ← g · gelu_new'(x)`, `gelu_new' = σ + x σ(1 − σ) k (1 + 3c x²)`.
    pub(super) fn gelu_backward(x: &[f32], g: &mut [f32]) {
        for (gi, &v) in g.iter_mut().zip(x) {
            let z = GELU_K * (v + GELU_C * v * v * v);
            let s = 1.0 / (1.0 + exp(-z));
            *gi *= s + v * s * (1.0 - s) * GELU_K * (1.0 + 3.0 * GELU_C * v * v);
        }
    }
}

simd_kernel! {
    /// One row of layer norm: returns (mean, 1/σ) and writes `y`.
    pub(super) fn layer_norm_row(x: &[f32], w: &[f32], b: &[f32], eps: f32, y: &mut [f32]) -> (f32, f32) {
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
    pub(super) fn layer_norm_row_backward(x: &[f32], w: &[f32], mean: f32, rstd: f32, g: &mut [f32], dw: &mut [f32], db: &mut [f32]) {
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

simd_kernel! {
    /// `y[j] ← fma(x[i], w[i·n + j], y[j])` for the rows `i` of `w` in
    /// order (row `i` at `w[i·n ..][..y.len()]`): the chains of
    /// [`super::tiles::linear`].
    pub(super) fn chain_rows(x: &[f32], w: &[f32], n: usize, y: &mut [f32]) {
        chains_into(x, w, n, y)
    }
}

simd_kernel! {
    /// `out[v] = x · w[v·c .. (v+1)·c]`, each [`lane_dot`]'s sixteen chains:
    /// the dot products of [`super::tiles::head`].
    pub(super) fn lane_dots(x: &[f32], w: &[f32], out: &mut [f32]) {
        for (o, row) in out.iter_mut().zip(w.chunks_exact(x.len().max(1))) {
            *o = lane_dot(x, row);
        }
    }
}

simd_kernel! {
    /// `acc[j] += Σᵢ x[i]·w[i·n + j]` over bf16 rows of `w`, the rows taken
    /// in pairs as AVX512-BF16's `vdpbf16ps` takes them (see
    /// [`super::bf16`]): `acc ← (acc + x₂ₚ₊₁·w₂ₚ₊₁) + x₂ₚ·w₂ₚ`, the
    /// products exact (`x` is bf16 too), each sum rounded; a last odd row is
    /// a pair with zeros.
    pub(super) fn accumulate_pairs_bf16(x: &[half::bf16], w: &[half::bf16], acc: &mut [f32]) {
        pairs_into(x, w, acc)
    }
}

simd_kernel! {
    /// `out[v] = x · w[v·c .. (v+1)·c]` (bf16 values, f32 sums) as
    /// `vdpbf16ps` computes it on 16 lanes: [`pair_dot`].
    pub(super) fn dots_pairs_bf16(x: &[half::bf16], w: &[half::bf16], out: &mut [f32]) {
        for (o, row) in out.iter_mut().zip(w.chunks_exact(x.len())) {
            *o = pair_dot(x, row);
        }
    }
}

simd_kernel! {
    /// `y += x`, element by element.
    pub(super) fn add_into(x: &[f32], y: &mut [f32]) {
        for (y, x) in y.iter_mut().zip(x) {
            *y += x;
        }
    }
}

#[cfg(test)]
#[path = "simd_tests.rs"]
mod tests;
