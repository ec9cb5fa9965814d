//! The vector paths of [`super`]'s Q8_0 products on x86-64: AVX2,
//! AVX-VNNI and AVX512-VNNI, each giving the scalar path's bits.

use std::arch::x86_64::*;

use super::{BlockQ8_0, GROUP, XBlock};

/// The eight f32 lanes of `v` added as [`super::sum_lanes`] adds them.
#[inline]
#[target_feature(enable = "avx2")]
fn sum_lanes(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let t = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps::<1>(t, t)))
}

/// A block's scale as f32, converted by the CPU (F16C).
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn scale(block: &BlockQ8_0) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(block.d as i32)))
}

/// 32 bytes (a block's values).
#[inline]
#[target_feature(enable = "avx2")]
fn load<T>(bytes: &[T; 32]) -> __m256i {
    const { assert!(std::mem::size_of::<T>() == 1) };
    // SAFETY: `bytes` is 32 bytes; the load is unaligned.
    unsafe { _mm256_loadu_si256(bytes.as_ptr().cast()) }
}

/// The body of each path: the rows' dot products with `w`, `$lanes`
/// giving the eight lane sums of `|x| · sign(w, x)` for one block.
macro_rules! dot_rows {
    ($xs:expr, $w:expr, $out:expr, |$ax:ident, $sw:ident| $lanes:expr) => {{
        let mut acc = [_mm256_setzero_ps(); GROUP];
        for (b, wb) in $w.iter().enumerate() {
            let qw = load(&wb.qs);
            let dw = scale(wb);
            for (x, acc) in $xs.iter().zip(acc.iter_mut()) {
                let xb: &XBlock = &x[b];
                let qx = load(&xb.qs);
                let ($ax, $sw) = (_mm256_sign_epi8(qx, qx), _mm256_sign_epi8(qw, qx));
                let d = _mm256_set1_ps(xb.scale * dw);
                *acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps($lanes), *acc);
            }
        }
        for (acc, out) in acc.iter().zip($out) {
            *out = sum_lanes(*acc);
        }
    }};
}

/// [`dot_rows!`] for two weight rows: each activation block loaded once
/// for both, each row's sums in the same order as alone.
macro_rules! dot_rows2 {
    ($xs:expr, $w:expr, $out:expr, |$ax:ident, $sw:ident| $lanes:expr) => {{
        let [w0, w1] = $w;
        let (mut acc0, mut acc1) = ([_mm256_setzero_ps(); GROUP], [_mm256_setzero_ps(); GROUP]);
        for (b, (wb0, wb1)) in w0.iter().zip(w1.iter()).enumerate() {
            let (qw0, qw1) = (load(&wb0.qs), load(&wb1.qs));
            let (dw0, dw1) = (scale(wb0), scale(wb1));
            for (i, x) in $xs.iter().enumerate() {
                let xb: &XBlock = &x[b];
                let qx = load(&xb.qs);
                let ax = _mm256_sign_epi8(qx, qx);
                let ($ax, $sw) = (ax, _mm256_sign_epi8(qw0, qx));
                let d = _mm256_set1_ps(xb.scale * dw0);
                acc0[i] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps($lanes), acc0[i]);
                let ($ax, $sw) = (ax, _mm256_sign_epi8(qw1, qx));
                let d = _mm256_set1_ps(xb.scale * dw1);
                acc1[i] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps($lanes), acc1[i]);
            }
        }
        let [out0, out1] = $out;
        for (acc, out) in [(acc0, out0), (acc1, out1)] {
            for (acc, out) in acc.iter().zip(out.iter_mut()) {
                *out = sum_lanes(*acc);
            }
        }
    }};
}

/// [`dot_rows2!`] on VNNI: the weight blocks as unsigned bytes
/// (`xor 0x80`), each row's integer sums started from its block's
/// offset ([`XBlock`]), `d` one product of the two scales' lanes.
macro_rules! dot_rows2_vnni {
    ($xs:expr, $w:expr, $out:expr, $dpbusd:ident) => {{
        let [w0, w1] = $w;
        let flip = _mm256_set1_epi8(-128);
        let (mut acc0, mut acc1) = ([_mm256_setzero_ps(); GROUP], [_mm256_setzero_ps(); GROUP]);
        // The next two rows follow `w1` (`matmul_with` pairs rows `r, r + 1`).
        let next = w1.as_ptr().wrapping_add(w1.len());
        for (b, (wb0, wb1)) in w0.iter().zip(w1.iter()).enumerate() {
            prefetch(next.wrapping_add(b));
            prefetch(next.wrapping_add(w1.len() + b));
            let (uw0, uw1) = (_mm256_xor_si256(load(&wb0.qs), flip), _mm256_xor_si256(load(&wb1.qs), flip));
            let (dw0, dw1) = (_mm256_set1_ps(scale(wb0)), _mm256_set1_ps(scale(wb1)));
            for (i, x) in $xs.iter().enumerate() {
                let xb: &XBlock = &x[b];
                let (qx, offset) = (load(&xb.qs), load_lanes(&xb.offset));
                let xs = _mm256_set1_ps(xb.scale);
                let sum0 = _mm256_cvtepi32_ps($dpbusd(offset, uw0, qx));
                acc0[i] = _mm256_fmadd_ps(_mm256_mul_ps(xs, dw0), sum0, acc0[i]);
                let sum1 = _mm256_cvtepi32_ps($dpbusd(offset, uw1, qx));
                acc1[i] = _mm256_fmadd_ps(_mm256_mul_ps(xs, dw1), sum1, acc1[i]);
            }
        }
        let [out0, out1] = $out;
        for (acc, out) in [(acc0, out0), (acc1, out1)] {
            for (acc, out) in acc.iter().zip(out.iter_mut()) {
                *out = sum_lanes(*acc);
            }
        }
    }};
}

/// [`dot_rows!`] on VNNI, as [`dot_rows2_vnni!`].
macro_rules! dot_rows_vnni {
    ($xs:expr, $w:expr, $out:expr, $dpbusd:ident) => {{
        let flip = _mm256_set1_epi8(-128);
        let mut acc = [_mm256_setzero_ps(); GROUP];
        let next = $w.as_ptr().wrapping_add($w.len()); // the next weight row
        for (b, wb) in $w.iter().enumerate() {
            prefetch(next.wrapping_add(b));
            let uw = _mm256_xor_si256(load(&wb.qs), flip);
            let dw = _mm256_set1_ps(scale(wb));
            for (x, acc) in $xs.iter().zip(acc.iter_mut()) {
                let xb: &XBlock = &x[b];
                let sum = _mm256_cvtepi32_ps($dpbusd(load_lanes(&xb.offset), uw, load(&xb.qs)));
                *acc = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(xb.scale), dw), sum, *acc);
            }
        }
        for (acc, out) in acc.iter().zip($out) {
            *out = sum_lanes(*acc);
        }
    }};
}

/// Asks for the line of `block` ahead of its use: the weights come from
/// memory, and several rows' worth of arithmetic between two rows' loads
/// leaves the hardware's prefetchers behind (measured: the weight's first
/// load was the kernel's hottest instruction at 8 rows).
#[inline]
#[target_feature(enable = "avx2")]
fn prefetch(block: *const BlockQ8_0) {
    _mm_prefetch::<_MM_HINT_T0>(block.cast());
}

/// Eight i32 lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn load_lanes(lanes: &[i32; 8]) -> __m256i {
    // SAFETY: `lanes` is 32 bytes; the load is unaligned.
    unsafe { _mm256_loadu_si256(lanes.as_ptr().cast()) }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn dot_rows2_avx2(xs: &[&[XBlock]], w: [&[BlockQ8_0]; 2], out: [&mut [f32]; 2]) {
    let ones = _mm256_set1_epi16(1);
    dot_rows2!(xs, w, out, |ax, sw| _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sw), ones))
}

#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
pub(super) fn dot_rows2_avx_vnni(xs: &[&[XBlock]], w: [&[BlockQ8_0]; 2], out: [&mut [f32]; 2]) {
    dot_rows2_vnni!(xs, w, out, _mm256_dpbusd_avx_epi32)
}

#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
pub(super) fn dot_rows2_avx512_vnni(xs: &[&[XBlock]], w: [&[BlockQ8_0]; 2], out: [&mut [f32]; 2]) {
    dot_rows2_vnni!(xs, w, out, _mm256_dpbusd_epi32)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn dot_rows_avx2(xs: &[&[XBlock]], w: &[BlockQ8_0], out: &mut [f32]) {
    let ones = _mm256_set1_epi16(1);
    // |x| ≤ 127 and |w| ≤ 127: a pair's sum fits i16 without saturating.
    dot_rows!(xs, w, out, |ax, sw| _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sw), ones))
}

#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
pub(super) fn dot_rows_avx_vnni(xs: &[&[XBlock]], w: &[BlockQ8_0], out: &mut [f32]) {
    dot_rows_vnni!(xs, w, out, _mm256_dpbusd_avx_epi32)
}

#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
pub(super) fn dot_rows_avx512_vnni(xs: &[&[XBlock]], w: &[BlockQ8_0], out: &mut [f32]) {
    dot_rows_vnni!(xs, w, out, _mm256_dpbusd_epi32)
}
