//! The vector paths of [`super`]'s Q8_0 products on x86-64: AVX2,
//! AVX-VNNI and AVX512-VNNI, each giving the scalar path's bits.

use std::arch::x86_64::*;

use super::{GROUP_ROWS, XBlock};
use crate::q8::GROUP_BLOCK;

/// The eight rows' values `4j .. 4j + 4` of one block (32 bytes).
#[inline]
#[target_feature(enable = "avx2")]
fn load(quants: &[i8], at: usize) -> __m256i {
    let bytes = &quants[at..at + 32];
    // SAFETY: `bytes` is 32 bytes; the load is unaligned.
    unsafe { _mm256_loadu_si256(bytes.as_ptr().cast()) }
}

/// The eight rows' scales of one block, as f32 (F16C).
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn scales8(scales: &[u16], at: usize) -> __m256 {
    let halves = &scales[at..at + GROUP_ROWS];
    // SAFETY: `halves` is 16 bytes; the load is unaligned.
    _mm256_cvtph_ps(unsafe { _mm_loadu_si128(halves.as_ptr().cast()) })
}

/// The body of each path: for each block, the group's eight value vectors
/// made once (`$prep`), then for each activation row its eight rows' integer
/// sums (`$init`, then `$step` for each of the block's eight dwords),
/// scaled and added to its eight chains. The next group's lines are asked
/// for as the block goes: the weights come from memory, and the arithmetic
/// between two loads leaves the hardware's prefetchers behind.
macro_rules! dot_group {
    ($xs:expr, $quants:expr, $scales:expr, $next:expr, $sums:expr,
     |$w:ident| $prep:expr, |$xb:ident| $init:expr, |$acc:ident, $wj:ident, $xj:ident| $step:expr) => {{
        let (quants, scales): (&[i8], &[u16]) = ($quants, $scales);
        let blocks = scales.len() / GROUP_ROWS;
        let mut chains = [_mm256_setzero_ps(); super::X_ROWS];
        let mut values = [_mm256_setzero_si256(); 8];
        for b in 0..blocks {
            for line in 0..GROUP_BLOCK / 64 {
                _mm_prefetch::<_MM_HINT_T0>($next.wrapping_add(b * GROUP_BLOCK + line * 64).cast());
            }
            for (j, v) in values.iter_mut().enumerate() {
                let $w = load(quants, b * GROUP_BLOCK + 32 * j);
                *v = $prep;
            }
            let ws = scales8(scales, b * GROUP_ROWS);
            for (x, chain) in $xs.iter().zip(chains.iter_mut()) {
                let $xb: &XBlock = &x[b];
                let mut $acc = $init;
                for (j, &$wj) in values.iter().enumerate() {
                    let $xj = _mm256_set1_epi32($xb.dword(j));
                    $acc = $step;
                }
                let d = _mm256_mul_ps(_mm256_set1_ps($xb.scale), ws);
                *chain = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps($acc), *chain);
            }
        }
        for (chain, sums) in chains.iter().zip($sums.iter_mut()) {
            let sums: &mut [f32; GROUP_ROWS] = sums;
            // SAFETY: `sums` is eight f32; the store is unaligned.
            unsafe { _mm256_storeu_ps(sums.as_mut_ptr(), *chain) };
        }
    }};
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn dot_group_avx2(
    xs: &[&[XBlock]],
    quants: &[i8],
    scales: &[u16],
    next: *const i8,
    sums: &mut [[f32; GROUP_ROWS]],
) {
    let ones = _mm256_set1_epi16(1);
    // |x| ≤ 127 and |w| ≤ 127: a pair's sum fits i16 without saturating.
    dot_group!(xs, quants, scales, next, sums, |w| w, |_xb| _mm256_setzero_si256(), |acc, w, x| {
        let products = _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(w, x));
        _mm256_add_epi32(acc, _mm256_madd_epi16(products, ones))
    })
}

/// A VNNI path: the weights as unsigned bytes (`xor 0x80`), each row's
/// integer sums started from the activation block's offset ([`XBlock`]).
macro_rules! vnni_path {
    ($name:ident, $features:literal, $dpbusd:ident) => {
        #[target_feature(enable = $features)]
        pub(super) fn $name(
            xs: &[&[XBlock]],
            quants: &[i8],
            scales: &[u16],
            next: *const i8,
            sums: &mut [[f32; GROUP_ROWS]],
        ) {
            let flip = _mm256_set1_epi8(-128);
            dot_group!(
                xs,
                quants,
                scales,
                next,
                sums,
                |w| _mm256_xor_si256(w, flip),
                |xb| _mm256_set1_epi32(xb.offset),
                |acc, w, x| $dpbusd(acc, w, x)
            )
        }
    };
}

vnni_path!(dot_group_avx_vnni, "avx2,fma,f16c,avxvnni", _mm256_dpbusd_avx_epi32);
vnni_path!(dot_group_avx512_vnni, "avx2,fma,f16c,avx512vnni,avx512vl", _mm256_dpbusd_epi32);
