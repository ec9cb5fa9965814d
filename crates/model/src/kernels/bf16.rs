//! Products with bf16 weights under f32 activations
//! ([`crate::Precision::Bf16`]), as AVX512-BF16's `vdpbf16ps` computes them
//! (and llama.cpp's bf16 products): the activations are rounded to bf16 (to
//! nearest even), and each pair of values goes into one f32 lane as
//! `acc ← (acc + x₂ₗ₊₁·w₂ₗ₊₁) + x₂ₗ·w₂ₗ`, the products exact, each sum
//! rounded. The weights are read as they are stored: half of f32's bytes.
//!
//! Two paths compute the same bits, picked at run time ([`Path::detect`]):
//! `vdpbf16ps` itself, and a widening path that turns each bf16 into an f32
//! and multiplies and adds in the same order (the products of two bf16 are
//! exact in f32, so a multiply and an add round as `vdpbf16ps` does), built
//! for AVX-512, AVX2 or the baseline like the other kernels (`simd`). The one
//! difference: `vdpbf16ps` flushes subnormal inputs and results (below
//! 1.2·10⁻³⁸) to zero, which trained weights and activations never reach.
//!
//! - [`linear`]: `x [m, k]` times `w [k, n]`, HF's `Conv1D` layout. Pairs of
//!   weight rows are interleaved in registers, the pair `(x₂ₚ, x₂ₚ₊₁)`
//!   broadcast: no repacked copy of the weights.
//! - [`head`]: `x [m, c]` times `wte [vocab, c]` transposed, each logit a dot
//!   product on 16 lanes (lane `l` takes the pair `(2l, 2l + 1)` of each 32
//!   values), the lanes added in a fixed order.
//!
//! No result depends on the number of threads: an output is one task's, or
//! the sum of fixed tasks' partials added in order (`rows`).

use half::bf16;

use super::rows::{head_rows, linear_rows};
use super::simd::{accumulate_pairs_bf16, dots_pairs_bf16};

/// A kernel path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Each bf16 widened to f32: the AVX-512, AVX2 + FMA or baseline build.
    Widening,
    /// AVX512-BF16's `vdpbf16ps` (Cooper Lake, Sapphire Rapids and later, Zen 4).
    Avx512Bf16,
}

impl Path {
    /// The fastest path this CPU has.
    pub fn detect() -> Self {
        *Self::available().last().expect("the widening path is always there")
    }

    /// Every path this CPU can run, slowest first.
    pub fn available() -> Vec<Self> {
        let mut paths = vec![Path::Widening];
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16") {
            paths.push(Path::Avx512Bf16);
        }
        paths
    }

    /// As named in benchmarks and test output.
    pub fn name(self) -> &'static str {
        match self {
            Path::Widening => "widening",
            Path::Avx512Bf16 => "avx512-bf16",
        }
    }

    fn check(self) {
        assert!(Self::available().contains(&self), "this CPU has no {} path", self.name());
    }
}

/// `x [m, k]` (row-major f32, rounded to bf16 here) times `w [k, n]` plus
/// `bias [n]` when given: `[m, n]`.
pub fn linear(path: Path, x: &[f32], m: usize, w: &[bf16], n: usize, bias: Option<&[f32]>) -> Vec<f32> {
    path.check();
    let k = x.len().checked_div(m).unwrap_or(0);
    assert_eq!((x.len(), w.len()), (m * k, k * n), "x is [{m}, {k}] and w [{k}, {n}]");
    let zeros;
    let bias = match bias {
        Some(b) => b,
        None => {
            zeros = vec![0.0; n];
            &zeros
        }
    };
    let accumulate = match path {
        Path::Widening => accumulate_pairs_bf16,
        #[cfg(target_arch = "x86_64")]
        Path::Avx512Bf16 => x86::accumulate_pairs,
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("no vector path off x86-64"),
    };
    linear_rows(&rounded(x), w, bias, [m, k, n], accumulate)
}

/// `x [m, c]` (row-major f32, rounded to bf16 here) times `wte [vocab, c]`
/// transposed: `[m, vocab]`.
pub fn head(path: Path, x: &[f32], m: usize, wte: &[bf16], vocab: usize) -> Vec<f32> {
    path.check();
    let c = x.len().checked_div(m).unwrap_or(0);
    assert_eq!((x.len(), wte.len()), (m * c, vocab * c), "x is [{m}, {c}] and the table [{vocab}, {c}]");
    let dots = match path {
        Path::Widening => dots_pairs_bf16,
        #[cfg(target_arch = "x86_64")]
        Path::Avx512Bf16 => x86::dots_pairs,
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("no vector path off x86-64"),
    };
    head_rows(&rounded(x), wte, [m, c, vocab], dots)
}

/// `x` rounded to bf16 (to nearest even).
fn rounded(x: &[f32]) -> Vec<bf16> {
    x.iter().map(|v| bf16::from_f32(*v)).collect()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use half::bf16;

    use crate::kernels::simd::accumulate_pairs_bf16;

    /// Two bf16 as the 32 bits of a pair: `lo` the even element, `hi` the odd.
    fn pair(lo: bf16, hi: bf16) -> i32 {
        (lo.to_bits() as u32 | (hi.to_bits() as u32) << 16) as i32
    }

    /// The 16 values of `r0` and of `r1` from `j` on, interleaved as 16 pairs.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn interleave(r0: &[bf16], r1: &[bf16], j: usize) -> __m512bh {
        debug_assert!(j + 16 <= r0.len() && j + 16 <= r1.len());
        // SAFETY: 16 values from `j` lie within each row (checked above); the loads are unaligned.
        let (a, b) =
            unsafe { (_mm256_loadu_si256(r0.as_ptr().add(j).cast()), _mm256_loadu_si256(r1.as_ptr().add(j).cast())) };
        let pairs = _mm512_or_si512(_mm512_cvtepu16_epi32(a), _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(b)));
        // SAFETY: a vector of 32 bf16 is any 512 bits.
        unsafe { std::mem::transmute::<__m512i, __m512bh>(pairs) }
    }

    /// [`super::linear`]'s row kernel on `vdpbf16ps`. The CPU has the path's
    /// features: [`super::linear`] checked them.
    pub(super) fn accumulate_pairs(x: &[bf16], w: &[bf16], acc: &mut [f32]) {
        // SAFETY: see above.
        unsafe { accumulate_pairs_avx512(x, w, acc) }
    }

    /// Pairs of rows per pass over `acc`.
    const PAIRS_PER_PASS: usize = 4;

    #[target_feature(enable = "avx512f,avx512bf16")]
    fn accumulate_pairs_avx512(x: &[bf16], w: &[bf16], acc: &mut [f32]) {
        let n = acc.len();
        let wide = n / 16 * 16;
        if wide < n {
            // The last columns on the widening path: the same steps, so the same bits.
            let mut tail = acc[wide..].to_vec();
            let narrow: Vec<bf16> = w.chunks_exact(n).flat_map(|row| row[wide..].iter().copied()).collect();
            accumulate_pairs_bf16(x, &narrow, &mut tail);
            acc[wide..].copy_from_slice(&tail);
        }
        // An odd last row pairs with a row of zeros, and its value with a zero.
        let zeros = if x.len() % 2 == 1 { vec![bf16::ZERO; n] } else { Vec::new() };
        let pairs: Vec<(__m512bh, &[bf16], &[bf16])> = x
            .chunks(2)
            .enumerate()
            .map(|(p, xs)| {
                let r0 = &w[2 * p * n..][..n];
                let (hi, r1) = match xs {
                    [_, x1] => (*x1, &w[(2 * p + 1) * n..][..n]),
                    _ => (bf16::ZERO, &zeros[..]),
                };
                // SAFETY: 32 bf16 are any 512 bits.
                let xv = unsafe { std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(pair(xs[0], hi))) };
                (xv, r0, r1)
            })
            .collect();
        for group in pairs.chunks(PAIRS_PER_PASS) {
            for j in (0..wide).step_by(16) {
                // SAFETY: `j + 16 ≤ n`; the accesses are unaligned.
                let mut a = unsafe { _mm512_loadu_ps(acc.as_ptr().add(j)) };
                for &(xv, r0, r1) in group {
                    a = _mm512_dpbf16_ps(a, xv, interleave(r0, r1, j));
                }
                // SAFETY: as the load.
                unsafe { _mm512_storeu_ps(acc.as_mut_ptr().add(j), a) };
            }
        }
    }

    /// [`super::head`]'s row kernel on `vdpbf16ps`. The CPU has the path's
    /// features: [`super::head`] checked them.
    pub(super) fn dots_pairs(x: &[bf16], w: &[bf16], out: &mut [f32]) {
        // SAFETY: see above.
        unsafe { dots_pairs_avx512(x, w, out) }
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    fn dots_pairs_avx512(x: &[bf16], w: &[bf16], out: &mut [f32]) {
        let c = x.len();
        let wide = c / 32 * 32;
        if wide < c {
            // A short last chunk padded with zeros, as the widening path pads it.
            for (o, row) in out.iter_mut().zip(w.chunks_exact(c)) {
                let mut padded = ([bf16::ZERO; 32], [bf16::ZERO; 32]);
                padded.0[..c - wide].copy_from_slice(&x[wide..]);
                padded.1[..c - wide].copy_from_slice(&row[wide..]);
                *o = dot(x, row, wide, Some((&padded.0, &padded.1)));
            }
        } else {
            for (o, row) in out.iter_mut().zip(w.chunks_exact(c.max(1))) {
                *o = dot(x, row, wide, None);
            }
        }
    }

    /// The pair dot product of the first `wide` values of `x` and `w` (a
    /// multiple of 32), then of the padded last chunk, if any.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bf16")]
    fn dot(x: &[bf16], w: &[bf16], wide: usize, last: Option<(&[bf16; 32], &[bf16; 32])>) -> f32 {
        let load = |p: *const bf16| {
            // SAFETY: the callers pass 32 values from `p`; 32 bf16 are any 512 bits.
            unsafe { std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(p.cast())) }
        };
        let mut acc = _mm512_setzero_ps();
        for j in (0..wide).step_by(32) {
            // `j + 32 ≤ wide ≤ len` for both.
            acc = _mm512_dpbf16_ps(acc, load(x[j..].as_ptr()), load(w[j..].as_ptr()));
        }
        if let Some((xs, ws)) = last {
            acc = _mm512_dpbf16_ps(acc, load(xs.as_ptr()), load(ws.as_ptr()));
        }
        sum16(acc)
    }

    /// The 16 lanes added as [`crate::kernels::simd::sum16`] adds them.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn sum16(v: __m512) -> f32 {
        let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
        let h = _mm256_add_ps(_mm512_castps512_ps256(v), hi);
        let s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h));
        let t = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps::<1>(t, t)))
    }
}
