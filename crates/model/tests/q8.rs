//! Our Q8_0 quantiser against the `gguf` package's (ggml's reference),
//! byte for byte: `fixtures/quant/q8_0.safetensors`, made by
//! `fixtures/make_quant_fixtures.py` (random rows at four scales, blocks of
//! zeros, exact ties, spikes, scales below f16's range, a 1792-wide row).

use std::path::Path;

use safetensors::SafeTensors;
use tp06_model::q8::{Q8Matrix, QK8_0};

#[test]
fn our_blocks_are_the_gguf_package_s_byte_for_byte() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/quant/q8_0.safetensors");
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    for (input, expected) in [("input", "q8_0"), ("wide_input", "wide_q8_0")] {
        let x = st.tensor(input).unwrap();
        let [rows, cols] = x.shape()[..] else { panic!("2-D") };
        let values: Vec<f32> = x.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        let ours = Q8Matrix::quantize(&values, rows, cols);
        let theirs = st.tensor(expected).unwrap();
        assert_eq!(theirs.shape(), [rows, cols / QK8_0 * 34]);
        assert_eq!(ours.to_bytes(), theirs.data(), "{input}: the blocks differ");
        // Dequantised, each value is within half a step of the block's exact
        // scale, plus what storing the scale in f16 moved its up to 127 steps.
        let back = ours.dequantize();
        for (r, row) in values.chunks_exact(cols).enumerate() {
            for (b, block) in ours.row(r).iter().enumerate() {
                let x = &row[b * QK8_0..(b + 1) * QK8_0];
                let exact = x.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0;
                let bound = exact * 0.5 + 127.0 * (exact - block.scale()).abs();
                for (j, v) in x.iter().enumerate() {
                    let w = back[r * cols + b * QK8_0 + j];
                    assert!((v - w).abs() <= bound * 1.0001 + 1e-30, "{input} [{r}]: {v} → {w}");
                }
            }
        }
    }
}

use tp06_testkit::uniform as values;

/// The product the kernels compute, in f64 from the blocks: each output
/// `Σ_blocks d_x · d_w · Σ q_x · q_w` plus its bias, and the sum of every
/// product's size, `Σ |d_x · d_w · q_x · q_w|`, for a relative bound.
fn reference(x: &[f32], m: usize, w: &Q8Matrix, bias: &[f32]) -> Vec<(f64, f64)> {
    let xq = Q8Matrix::quantize(x, m, w.cols());
    let mut out = Vec::new();
    for i in 0..m {
        for (r, b) in bias.iter().enumerate().take(w.rows()) {
            let (mut sum, mut size) = (*b as f64, b.abs() as f64);
            for (xb, wb) in xq.row(i).iter().zip(w.row(r)) {
                let dot: i64 = xb.qs.iter().zip(wb.qs).map(|(a, b)| *a as i64 * b as i64).sum();
                let abs: i64 = xb.qs.iter().zip(wb.qs).map(|(a, b)| (*a as i64 * b as i64).abs()).sum();
                let d = xb.scale() as f64 * wb.scale() as f64;
                sum += d * dot as f64;
                size += (d * abs as f64).abs();
            }
            out.push((sum, size));
        }
    }
    out
}

/// On odd sizes (a row that is not a multiple of 32, one row, the course's
/// width, a head of 50,000 rows), every path this CPU has gives the scalar
/// path's bits, and the scalar path the f64 sum within 1e-6 of its terms'
/// size; the result is also the f32 product within what 8 bits allow.
#[test]
fn every_path_gives_the_scalar_bits_and_the_exact_sum() {
    use tp06_model::kernels::q8::{Path, matmul_with};
    let paths = Path::available();
    eprintln!("q8 kernel paths on this CPU: {:?} (the fastest: {})", paths, Path::detect().name());
    for (m, k, n) in [(1, 32, 1), (1, 45, 7), (3, 96, 130), (5, 1792, 67), (17, 64, 200), (1, 64, 50_000)] {
        let x = values(m * k, (m * 31 + k) as u64, 1.5);
        let w_values = values(n * k, (n * 7 + k) as u64, 0.05);
        let w = Q8Matrix::quantize(&w_values, n, k);
        let bias = values(n, 3, 0.1);
        let scalar = matmul_with(Path::Scalar, &x, m, &w, Some(&bias));
        for (i, ((got, (exact, size)), _)) in scalar.iter().zip(reference(&x, m, &w, &bias)).zip(0..).enumerate() {
            assert!((*got as f64 - exact).abs() <= 1e-6 * size.max(1e-30), "[{m}, {k}] × [{n}]: {i}: {got} vs {exact}");
        }
        for &path in &paths {
            let got = matmul_with(path, &x, m, &w, Some(&bias));
            assert!(
                got.iter().zip(&scalar).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{}: [{m}, {k}] × [{n}]",
                path.name()
            );
        }
        // Against the f32 product x · Wᵀ + b: 8-bit weights and activations.
        for i in 0..m {
            for r in (0..n).step_by(97) {
                let f: f32 = (0..k).map(|j| x[i * k + j] * w_values[r * k + j]).sum::<f32>() + bias[r];
                let bound: f32 = (0..k).map(|j| (x[i * k + j] * w_values[r * k + j]).abs()).sum::<f32>() * 0.02;
                assert!(
                    (scalar[i * n + r] - f).abs() <= bound + 1e-6,
                    "[{m}, {k}] × [{n}]: {} vs {f}",
                    scalar[i * n + r]
                );
            }
        }
    }
}

/// The prompt's product (many rows): the activations' blocks' values times
/// the weights', in f64 within 1e-5 of its terms' size, on odd sizes; and
/// the decoding product's values within the same bound.
#[test]
fn many_rows_multiply_the_dequantised_weights() {
    use tp06_model::kernels::q8::{matmul, matmul_dequantized};
    for (m, k, n) in [(5, 45, 7), (17, 96, 130), (9, 1792, 67), (6, 64, 50_000)] {
        let x = values(m * k, (m * 17 + k) as u64, 1.5);
        let w = Q8Matrix::quantize(&values(n * k, (n * 3 + k) as u64, 0.05), n, k);
        let bias = values(n, 4, 0.1);
        let got = matmul_dequantized(&x, m, &w, Some(&bias));
        let int8 = matmul(&x, m, &w, Some(&bias));
        let (dequantized, xd) = (w.dequantize(), Q8Matrix::quantize(&x, m, k).dequantize());
        for i in 0..m {
            for r in (0..n).step_by(1 + n / 300) {
                let terms = (0..k).map(|j| xd[i * k + j] as f64 * dequantized[r * k + j] as f64);
                let (sum, size) = terms.fold((bias[r] as f64, bias[r].abs() as f64), |(s, a), p| (s + p, a + p.abs()));
                let ours = got[i * n + r] as f64;
                assert!((ours - sum).abs() <= 1e-5 * size + 1e-30, "[{m}, {k}] × [{n}] at ({i}, {r}): {ours} vs {sum}");
                let decoded = int8[i * n + r] as f64;
                assert!((ours - decoded).abs() <= 1e-5 * size + 1e-30, "({i}, {r}): {ours} vs int8 {decoded}");
            }
        }
    }
}
