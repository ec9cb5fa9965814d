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
        assert_eq!(ours.as_bytes(), theirs.data(), "{input}: the blocks differ");
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
