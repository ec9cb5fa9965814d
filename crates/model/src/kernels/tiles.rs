//! Decoding's products with f32 weights on a few rows (up to
//! [`super::FEW_ROWS`]: one row a token, one row a request when a server
//! decodes several at once), tiled in registers: each weight vector is
//! loaded once for up to [`TILE_ROWS`] activation rows, so that a step of
//! several rows costs little more than one, which is bound by reading the
//! weights.
//!
//! Every output is summed in one order that depends on neither the number of
//! rows, nor the tile, nor the number of threads, nor the CPU, so a row's
//! values are bit for bit those of the row alone:
//!
//! - `Conv1D` with its weight `[in, out]` as HF stores it ([`linear`]):
//!   `y[r][j]` starts at `bias[j]` and takes `fma(x[r][i], w[i][j], ·)` for
//!   `i = 0, 1, …, k − 1`. Each output is a chain of its own, so the width of
//!   a vector does not matter.
//! - The tied head ([`head`]): `logit[r][v]` is sixteen chains, lane `l`
//!   taking `fma(h[r][i], wte[v][i], ·)` for the `i ≡ l (mod 16)` in order (a
//!   short last chunk padded with zeros), added as [`super::simd::sum16`]
//!   adds them.
//! - `Conv1D` with its weight laid out `[out, in]` for decoding
//!   ([`linear_by_rows`]): the head's sums, then `+ bias[j]`. Each task then
//!   reads whole rows of contiguous weights, which the memory streams at
//!   about twice the rate of the `[in, out]` stripes' strided rows (those
//!   are read 512 bytes at a time, one row every `4·out` bytes).
//!
//! [`Path::Avx512`] keeps the tiles in `zmm` registers; [`Path::Portable`]
//! is [`super::simd`]'s loops (compiled for AVX2 + FMA and for the
//! baseline) with `f32::mul_add`, which gives the same bits.

use rayon::prelude::*;

use super::simd::{add_into, chain_rows, lane_dots};

/// Activation rows that share one pass over the weights.
const TILE_ROWS: usize = 8;

/// Weight columns per task of [`linear`] (each task writes its own columns).
const STRIPE: usize = 128;

/// Weight rows per pass of [`linear`]'s tiles over their stripe: the
/// stripe's share of them (`DEPTH · STRIPE` values, 128 KiB) stays in the
/// cache for its other tiles.
const DEPTH: usize = 256;

/// Vocabulary rows per task of [`head`].
const VOCAB_PER_TASK: usize = 64;

/// A kernel path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Path {
    /// [`super::simd`]'s loops, on the best build the CPU has.
    Portable,
    /// AVX-512 (`vfmadd231ps` on `zmm` tiles).
    Avx512,
}

impl Path {
    /// The fastest path this CPU has.
    pub(super) fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx512f") {
            return Path::Avx512;
        }
        Path::Portable
    }
}

/// `x [m, k]` times `w [k, n]` plus `bias [n]`: `[m, n]`, on `path` (which the
/// CPU must have).
pub(super) fn linear(path: Path, x: &[f32], w: &[f32], bias: &[f32], [m, k, n]: [usize; 3]) -> Vec<f32> {
    assert!(x.len() == m * k && w.len() == k * n && bias.len() == n, "x [{m}, {k}], w [{k}, {n}], bias [{n}]");
    let stripes: Vec<Vec<f32>> = (0..n.div_ceil(STRIPE))
        .into_par_iter()
        .map(|s| {
            let cols = s * STRIPE..n.min((s + 1) * STRIPE);
            let width = cols.len();
            let mut y: Vec<f32> = bias[cols.clone()].repeat(m); // [m, width]
            for start in (0..k).step_by(DEPTH) {
                let depth = DEPTH.min(k - start);
                let w = &w[start * n + cols.start..(start + depth - 1) * n + cols.end];
                for (g, y) in y.chunks_mut(TILE_ROWS * width).enumerate() {
                    let rows = y.len() / width;
                    let x = &x[g * TILE_ROWS * k + start..][..(rows - 1) * k + depth];
                    stripe(path, Stripe { x, k, w, n, depth, y, width, rows });
                }
            }
            y
        })
        .collect();
    side_by_side(&stripes, [m, n], STRIPE)
}

/// `hidden [m, c]` times `wte [vocab, c]` transposed: `[m, vocab]`, on `path`
/// (which the CPU must have).
pub(super) fn head(path: Path, hidden: &[f32], wte: &[f32], [m, c, vocab]: [usize; 3]) -> Vec<f32> {
    assert!(hidden.len() == m * c && wte.len() == vocab * c, "hidden [{m}, {c}], table [{vocab}, {c}]");
    let blocks: Vec<Vec<f32>> = (0..vocab.div_ceil(VOCAB_PER_TASK))
        .into_par_iter()
        .map(|t| {
            let rows = t * VOCAB_PER_TASK..vocab.min((t + 1) * VOCAB_PER_TASK);
            let mut out = vec![0.0f32; m * rows.len()]; // [m, rows]
            let w = &wte[rows.start * c..rows.end * c];
            for (g, out) in out.chunks_mut(TILE_ROWS * rows.len()).enumerate() {
                let x = &hidden[g * TILE_ROWS * c..][..out.len() / rows.len() * c];
                dots(path, x, w, c, out);
            }
            out
        })
        .collect();
    side_by_side(&blocks, [m, vocab], VOCAB_PER_TASK)
}

/// The tasks' outputs, each `[m, its columns]` (task `t` the columns from
/// `t · per_task`), put side by side: `[m, n]`.
fn side_by_side(parts: &[Vec<f32>], [m, n]: [usize; 2], per_task: usize) -> Vec<f32> {
    let mut y = vec![0.0f32; m * n];
    for (t, part) in parts.iter().enumerate() {
        let width = part.len() / m.max(1);
        for (row, out) in part.chunks_exact(width.max(1)).zip(y.chunks_exact_mut(n.max(1))) {
            out[t * per_task..t * per_task + width].copy_from_slice(row);
        }
    }
    y
}

/// `x [m, k]` times `w_rows [n, k]` transposed plus `bias [n]`: `[m, n]`, on
/// `path` (which the CPU must have).
pub(super) fn linear_by_rows(path: Path, x: &[f32], w_rows: &[f32], bias: &[f32], [m, k, n]: [usize; 3]) -> Vec<f32> {
    assert_eq!(bias.len(), n, "bias [{n}]");
    let mut y = head(path, x, w_rows, [m, k, n]);
    for row in y.chunks_exact_mut(n.max(1)) {
        add_into(bias, row);
    }
    y
}

/// One pass of [`linear`]: `rows` activation rows over `depth` weight rows
/// of one stripe.
struct Stripe<'a> {
    /// Row `r`'s values from the pass's first weight row: `x[r·k ..][..depth]`.
    x: &'a [f32],
    k: usize,
    /// The stripe's columns of the pass's weight rows: row `i` at `w[i·n ..][..width]`.
    w: &'a [f32],
    n: usize,
    depth: usize,
    /// The chains so far, `[rows, width]`, carried on.
    y: &'a mut [f32],
    width: usize,
    rows: usize,
}

fn stripe(path: Path, s: Stripe) {
    match path {
        // SAFETY: the callers were given a path the CPU has.
        #[cfg(target_arch = "x86_64")]
        Path::Avx512 => unsafe { avx512::stripe(s) },
        _ => {
            for (r, y) in s.y.chunks_exact_mut(s.width).enumerate() {
                chain_rows(&s.x[r * s.k..][..s.depth], s.w, s.n, y);
            }
        }
    }
}

/// `out[r·len + v] = x_r · w_v` for the rows `x_r` of `x [rows, c]` and
/// `w_v` of `w [len, c]`.
fn dots(path: Path, x: &[f32], w: &[f32], c: usize, out: &mut [f32]) {
    match path {
        // SAFETY: the callers were given a path the CPU has.
        #[cfg(target_arch = "x86_64")]
        Path::Avx512 => unsafe { avx512::dots(x, w, c, out) },
        _ => {
            let len = w.len() / c.max(1);
            for (x, out) in x.chunks_exact(c.max(1)).zip(out.chunks_exact_mut(len.max(1))) {
                lane_dots(x, w, out);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::Stripe;

    /// The lanes below `len` (of 16).
    #[inline]
    fn mask(len: usize) -> __mmask16 {
        if len >= 16 { !0 } else { (1u16 << len) - 1 }
    }

    /// [`super::stripe`]: the widest tile whose chains fit in 16 registers.
    #[target_feature(enable = "avx512f")]
    pub(super) fn stripe(s: Stripe) {
        match s.rows {
            1 => columns::<1, 8>(s),
            2 => columns::<2, 8>(s),
            3 => columns::<3, 4>(s),
            4 => columns::<4, 4>(s),
            5 => columns::<5, 2>(s),
            6 => columns::<6, 2>(s),
            7 => columns::<7, 2>(s),
            8 => columns::<8, 2>(s),
            rows => unreachable!("a pass takes 1 to {} rows, not {rows}", super::TILE_ROWS),
        }
    }

    /// The stripe `V` vectors of 16 columns at a time, the last ones masked.
    #[target_feature(enable = "avx512f")]
    fn columns<const R: usize, const V: usize>(mut s: Stripe) {
        assert!(s.x.len() >= (R - 1) * s.k + s.depth && s.y.len() >= R * s.width);
        assert!(s.depth > 0 && s.w.len() >= (s.depth - 1) * s.n + s.width);
        for col in (0..s.width).step_by(16 * V) {
            let masks: [__mmask16; V] = std::array::from_fn(|v| mask(s.width.saturating_sub(col + 16 * v)));
            // SAFETY: the lanes read and written are within the slices
            // (asserted above; masked lanes are not touched).
            unsafe { tile::<R, V>(&mut s, col, masks) };
        }
    }

    /// `R` rows' chains of the columns `col .. col + 16·V` over the pass's
    /// weight rows, held in registers.
    ///
    /// # Safety
    /// The unmasked lanes are within `s`'s slices.
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const R: usize, const V: usize>(s: &mut Stripe, col: usize, masks: [__mmask16; V]) {
        // SAFETY (each access): within the slices by the caller's contract.
        let (x, w, y) = unsafe { (s.x.as_ptr(), s.w.as_ptr().add(col), s.y.as_mut_ptr().add(col)) };
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        for (r, acc) in acc.iter_mut().enumerate() {
            for (v, acc) in acc.iter_mut().enumerate() {
                *acc = unsafe { _mm512_maskz_loadu_ps(masks[v], y.add(r * s.width + 16 * v)) };
            }
        }
        let mut wv = [_mm512_setzero_ps(); V];
        for i in 0..s.depth {
            for (v, wv) in wv.iter_mut().enumerate() {
                *wv = unsafe { _mm512_maskz_loadu_ps(masks[v], w.add(i * s.n + 16 * v)) };
            }
            for (r, acc) in acc.iter_mut().enumerate() {
                let xv = _mm512_set1_ps(unsafe { *x.add(r * s.k + i) });
                for (acc, wv) in acc.iter_mut().zip(wv) {
                    *acc = _mm512_fmadd_ps(xv, wv, *acc);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            for (v, acc) in acc.iter().enumerate() {
                unsafe { _mm512_mask_storeu_ps(y.add(r * s.width + 16 * v), masks[v], *acc) };
            }
        }
    }

    /// [`super::dots`]: up to 4 rows against 4 vocabulary rows at a time,
    /// more rows against 2.
    #[target_feature(enable = "avx512f")]
    pub(super) fn dots(x: &[f32], w: &[f32], c: usize, out: &mut [f32]) {
        match x.len() / c.max(1) {
            1 => vocabulary::<1, 4>(x, w, c, out),
            2 => vocabulary::<2, 4>(x, w, c, out),
            3 => vocabulary::<3, 4>(x, w, c, out),
            4 => vocabulary::<4, 4>(x, w, c, out),
            5 => vocabulary::<5, 2>(x, w, c, out),
            6 => vocabulary::<6, 2>(x, w, c, out),
            7 => vocabulary::<7, 2>(x, w, c, out),
            8 => vocabulary::<8, 2>(x, w, c, out),
            rows => unreachable!("a pass takes 1 to {} rows, not {rows}", super::TILE_ROWS),
        }
    }

    /// The vocabulary rows `V` at a time, then one at a time.
    #[target_feature(enable = "avx512f")]
    fn vocabulary<const R: usize, const V: usize>(x: &[f32], w: &[f32], c: usize, out: &mut [f32]) {
        let len = w.len() / c.max(1);
        assert!(x.len() == R * c && out.len() == R * len && w.len() == len * c);
        let mut v = 0;
        while v + V <= len {
            // SAFETY: rows `v .. v + V` of `w` are within it (checked by the loop).
            unsafe { dot_tile::<R, V>(x, w, c, v, out) };
            v += V;
        }
        while v < len {
            // SAFETY: row `v` of `w` is within it.
            unsafe { dot_tile::<R, 1>(x, w, c, v, out) };
            v += 1;
        }
    }

    /// `out[r·len + v + t] = x_r · w_{v+t}` for `t < V`, in sixteen lanes
    /// each, the last chunk masked (its lanes zero), the lanes added as
    /// `sum16` adds them.
    ///
    /// # Safety
    /// `x` is `[R, c]`, `w` has rows `v .. v + V`, `out` is `[R, len]`.
    #[target_feature(enable = "avx512f")]
    unsafe fn dot_tile<const R: usize, const V: usize>(x: &[f32], w: &[f32], c: usize, v: usize, out: &mut [f32]) {
        let len = out.len() / R;
        // SAFETY (each access): within the slices by the caller's contract.
        let (x, w) = unsafe { (x.as_ptr(), w.as_ptr().add(v * c)) };
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        let mut wv = [_mm512_setzero_ps(); V];
        let mut i = 0;
        while i < c {
            let m = mask(c - i);
            for (t, wv) in wv.iter_mut().enumerate() {
                *wv = unsafe { _mm512_maskz_loadu_ps(m, w.add(t * c + i)) };
                _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add((V + t) * c + i).cast());
            }
            for (r, acc) in acc.iter_mut().enumerate() {
                let xv = unsafe { _mm512_maskz_loadu_ps(m, x.add(r * c + i)) };
                for (acc, wv) in acc.iter_mut().zip(wv) {
                    *acc = _mm512_fmadd_ps(xv, wv, *acc);
                }
            }
            i += 16;
        }
        for (r, acc) in acc.iter().enumerate() {
            for (t, acc) in acc.iter().enumerate() {
                out[r * len + v + t] = sum16(*acc);
            }
        }
    }

    /// The sixteen lanes added as `super::super::simd::sum16` adds them:
    /// the halves, the halves of that, then `(0, 2)` and `(1, 3)`, then those.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn sum16(a: __m512) -> f32 {
        let low = _mm512_castps512_ps256(a);
        let high = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(a)));
        let h = _mm256_add_ps(low, high);
        let s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h));
        let t = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps::<1>(t, t)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values of unit scale with a spread, from a seed.
    fn values(len: usize, seed: u64) -> Vec<f32> {
        tp06_testkit::uniform(len, seed, 1.0)
    }

    fn paths() -> Vec<Path> {
        let best = Path::detect();
        tp06_testkit::note(&format!("f32 tiles: comparing {best:?} with the portable path"));
        if best == Path::Portable { vec![Path::Portable] } else { vec![Path::Portable, best] }
    }

    /// Every row of an `m`-row product is the bits of that row alone, on each
    /// path, and equal to the f64 product within f32 rounding.
    #[test]
    fn each_row_is_its_own_product_alone_on_every_path_and_close_to_f64() {
        // Off every block: 300 weight rows (a pass of 256 and a rest), 150
        // columns (a stripe of 128 and a rest; 8 vectors, 4, 2 and masked
        // ones), 131 vocabulary rows (two tasks of 64 and a rest; 4, 2 and 1
        // at a time), 45 wide (two chunks of 16 and a masked one).
        let (k, n, c, vocab) = (300, 150, 45, 131);
        let (w, bias, wte) = (values(k * n, 1), values(n, 2), values(vocab * c, 3));
        let w_rows: Vec<f32> = (0..n * k).map(|e| w[(e % k) * n + e / k]).collect(); // [n, k]
        let mut firsts: Vec<(Vec<f32>, Vec<f32>)> = Vec::new();
        for path in paths() {
            for m in [1, 2, 3, 4, 5, 8, 9, 16] {
                let (x, hidden) = (values(m * k, 10 + m as u64), values(m * c, 40 + m as u64));
                let y = linear(path, &x, &w, &bias, [m, k, n]);
                let logits = head(path, &hidden, &wte, [m, c, vocab]);
                let by_rows = linear_by_rows(path, &x, &w_rows, &bias, [m, k, n]);
                for r in 0..m {
                    let alone = linear_by_rows(Path::Portable, &x[r * k..][..k], &w_rows, &bias, [1, k, n]);
                    assert_eq!(&by_rows[r * n..][..n], &alone[..], "{path:?}: linear by rows, row {r} of {m}");
                    let alone = linear(Path::Portable, &x[r * k..][..k], &w, &bias, [1, k, n]);
                    assert_eq!(&y[r * n..][..n], &alone[..], "{path:?}: linear, row {r} of {m}");
                    let alone = head(Path::Portable, &hidden[r * c..][..c], &wte, [1, c, vocab]);
                    assert_eq!(&logits[r * vocab..][..vocab], &alone[..], "{path:?}: head, row {r} of {m}");
                    for j in 0..n {
                        let exact: f64 =
                            bias[j] as f64 + (0..k).map(|i| x[r * k + i] as f64 * w[i * n + j] as f64).sum::<f64>();
                        assert!((y[r * n + j] as f64 - exact).abs() < 1e-4, "linear [{r}, {j}]");
                        assert!((by_rows[r * n + j] as f64 - exact).abs() < 1e-4, "linear by rows [{r}, {j}]");
                    }
                    for v in 0..vocab {
                        let exact: f64 = (0..c).map(|i| hidden[r * c + i] as f64 * wte[v * c + i] as f64).sum();
                        assert!((logits[r * vocab + v] as f64 - exact).abs() < 1e-5, "head [{r}, {v}]");
                    }
                }
                if m == 1 {
                    firsts.push((y, logits));
                }
            }
        }
        assert!(firsts.windows(2).all(|p| p[0] == p[1]), "the paths give the same bits");
    }

    #[test]
    fn the_products_do_not_depend_on_the_number_of_threads() {
        let (m, k, n, c, vocab) = (6, 600, 700, 96, 900);
        let (x, w, bias) = (values(m * k, 4), values(k * n, 5), values(n, 6));
        let (hidden, wte) = (values(m * c, 7), values(vocab * c, 8));
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let path = Path::detect();
                (linear(path, &x, &w, &bias, [m, k, n]), head(path, &hidden, &wte, [m, c, vocab]))
            })
        };
        assert_eq!(run(1), run(3));
    }
}
