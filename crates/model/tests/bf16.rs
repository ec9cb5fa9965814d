//! The bf16 products ([`tp06_model::kernels::bf16`]) against independent
//! references: `vdpbf16ps` as Intel's manual defines it (each lane
//! `acc ← (acc + a₂ₗ₊₁·b₂ₗ₊₁) + a₂ₗ·b₂ₗ`, the products exact), emulated here
//! in f64 and rounded to f32 step by step; and the exact sum in f64 of the
//! rounded inputs. Every path this CPU has runs, and the test says which.

use half::bf16;
use tp06_model::kernels::bf16::{Path, head, linear};

use tp06_testkit::uniform as values;

fn to_bf16(x: &[f32]) -> Vec<bf16> {
    x.iter().map(|v| bf16::from_f32(*v)).collect()
}

/// One `vdpbf16ps` lane step from Intel's pseudocode: the odd element's
/// product added first, then the even one's, each sum rounded to f32. The
/// products of two bf16 are exact in f64 and in f32, so the f64 sum rounded
/// to f32 is the instruction's rounding of the exact sum.
fn step(acc: f32, a: [bf16; 2], b: [bf16; 2]) -> f32 {
    let p = |i: usize| a[i].to_f64() * b[i].to_f64();
    let t = (acc as f64 + p(1)) as f32;
    (t as f64 + p(0)) as f32
}

/// A dot product on 16 lanes as the head computes it: lane `l` takes pair
/// `(2l, 2l + 1)` of each 32 values (zeros past the end), then the lanes
/// added in halves: `(0..8) + (8..16)`, `(0..4) + (4..8)`, `(0 + 2) + (1 + 3)`.
fn lane_dot(x: &[bf16], w: &[bf16]) -> f32 {
    let at = |v: &[bf16], i: usize| v.get(i).copied().unwrap_or(bf16::ZERO);
    let mut acc = [0.0f32; 16];
    for chunk in (0..x.len()).step_by(32) {
        for (l, a) in acc.iter_mut().enumerate() {
            let (i, j) = (chunk + 2 * l, chunk + 2 * l + 1);
            *a = step(*a, [at(x, i), at(x, j)], [at(w, i), at(w, j)]);
        }
    }
    let h: Vec<f32> = (0..8).map(|i| acc[i] + acc[i + 8]).collect();
    let s: Vec<f32> = (0..4).map(|i| h[i] + h[i + 4]).collect();
    (s[0] + s[2]) + (s[1] + s[3])
}

/// Column `j` of `x · w` (`w [k, n]`) as the linear product computes it from
/// zero: the rows in pairs, an odd last row paired with a zero.
fn pair_column(x: &[bf16], w: &[bf16], n: usize, j: usize) -> f32 {
    let mut acc = 0.0f32;
    for p in (0..x.len()).step_by(2) {
        let (x1, w1) = if p + 1 < x.len() { (x[p + 1], w[(p + 1) * n + j]) } else { (bf16::ZERO, bf16::ZERO) };
        acc = step(acc, [x[p], x1], [w[p * n + j], w1]);
    }
    acc
}

/// The exact sum in f64 of the rounded inputs, and the sum of the products' sizes.
fn exact(x: &[bf16], w: impl Iterator<Item = bf16>) -> (f64, f64) {
    x.iter().zip(w).fold((0.0, 0.0), |(s, a), (x, w)| {
        let p = x.to_f64() * w.to_f64();
        (s + p, a + p.abs())
    })
}

/// The head: each logit is the 16-lane dot product bit for bit on every path,
/// on odd widths (one value, not a multiple of 32, the course's 768) and on a
/// vocabulary of 50,000 rows; and the exact sum within 1e-6 of its terms' size.
#[test]
fn the_head_is_the_lane_dot_product_bit_for_bit_on_every_path() {
    let paths = Path::available();
    eprintln!("bf16 kernel paths on this CPU: {paths:?} (the fastest: {})", Path::detect().name());
    for (m, c, vocab) in [(1, 1, 3), (2, 31, 17), (3, 33, 40), (4, 96, 257), (1, 768, 300), (1, 64, 50_000)] {
        let x = values(m * c, (m * 13 + c) as u64, 2.0);
        let w = to_bf16(&values(vocab * c, (vocab + c) as u64, 0.1));
        let xb = to_bf16(&x);
        for &path in &paths {
            let got = head(path, &x, m, &w, vocab);
            for i in 0..m {
                let xr = &xb[i * c..(i + 1) * c];
                for v in (0..vocab).step_by(1 + vocab / 997) {
                    let wr = &w[v * c..(v + 1) * c];
                    let ours = got[i * vocab + v];
                    let want = lane_dot(xr, wr);
                    assert_eq!(
                        ours.to_bits(),
                        want.to_bits(),
                        "{}: [{m}, {c}] row {i} logit {v}: {ours} vs {want}",
                        path.name()
                    );
                    let (sum, size) = exact(xr, wr.iter().copied());
                    assert!((ours as f64 - sum).abs() <= 1e-6 * size + 1e-30, "{}: {ours} vs {sum}", path.name());
                }
            }
        }
    }
}

/// The linear product: within one task's rows (64) each output is the bias
/// plus the paired column sum bit for bit; on more rows every path gives the
/// widening path's bits and the exact sum within 1e-6 of its terms' size.
/// Columns not a multiple of 16 and odd rows included.
#[test]
fn the_linear_product_pairs_rows_as_vdpbf16ps_on_every_path() {
    let paths = Path::available();
    eprintln!("bf16 kernel paths on this CPU: {paths:?} (the fastest: {})", Path::detect().name());
    for (m, k, n) in [(1, 1, 1), (1, 7, 15), (3, 33, 17), (4, 64, 48), (2, 130, 33), (1, 768, 2304)] {
        let x = values(m * k, (m * 31 + k) as u64, 1.5);
        let w = to_bf16(&values(k * n, (n * 7 + k) as u64, 0.05));
        let bias = values(n, 3, 0.1);
        let xb = to_bf16(&x);
        let widening = linear(Path::Widening, &x, m, &w, n, Some(&bias));
        for &path in &paths {
            let got = linear(path, &x, m, &w, n, Some(&bias));
            assert!(
                got.iter().zip(&widening).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{} against the widening path: [{m}, {k}] × [{n}]",
                path.name()
            );
        }
        for i in 0..m {
            let xr = &xb[i * k..(i + 1) * k];
            for j in 0..n {
                let ours = widening[i * n + j];
                if k <= 64 {
                    let want = bias[j] + pair_column(xr, &w, n, j);
                    assert_eq!(ours.to_bits(), want.to_bits(), "[{m}, {k}] × [{n}] at ({i}, {j}): {ours} vs {want}");
                }
                let (sum, size) = exact(xr, (0..k).map(|r| w[r * n + j]));
                let (sum, size) = (sum + bias[j] as f64, size + bias[j].abs() as f64);
                assert!((ours as f64 - sum).abs() <= 1e-6 * size + 1e-30, "[{m}, {k}] × [{n}]: {ours} vs {sum}");
            }
        }
    }
}

/// Against the f32 product of the unrounded values: rounding the activations
/// and the weights to bf16 moves each output by at most 2⁻⁸ of Σ|x·w|.
#[test]
fn bf16_products_are_the_f32_ones_within_bf16_rounding() {
    let (m, k, n) = (2, 256, 96);
    let x = values(m * k, 5, 1.0);
    let wf = values(k * n, 6, 0.05);
    let got = linear(Path::detect(), &x, m, &to_bf16(&wf), n, None);
    for i in 0..m {
        for j in 0..n {
            let f: f64 = (0..k).map(|r| x[i * k + r] as f64 * wf[r * n + j] as f64).sum();
            let size: f64 = (0..k).map(|r| (x[i * k + r] as f64 * wf[r * n + j] as f64).abs()).sum();
            assert!((got[i * n + j] as f64 - f).abs() <= size / 256.0, "({i}, {j}): {} vs {f}", got[i * n + j]);
        }
    }
}

/// Results do not depend on the number of threads.
#[test]
fn one_thread_and_three_give_the_same_bits() {
    let (m, k, n, vocab) = (3, 300, 200, 700);
    let x = values(m * k, 8, 1.0);
    let w = to_bf16(&values(k * n, 9, 0.05));
    let wte = to_bf16(&values(vocab * k, 10, 0.05));
    let run = || (linear(Path::detect(), &x, m, &w, n, None), head(Path::detect(), &x, m, &wte, vocab));
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(run);
    let three = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap().install(run);
    assert!(one == three, "1 vs 3 threads differ");
}
