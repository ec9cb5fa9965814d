//! How far the added embedding rows moved during training: reads `wte` from
//! the model stage's and the export's `model.safetensors` (only that tensor),
//! measures each added row's distance to its initial vector and finds the
//! nearest pretrained tokens.

use std::path::Path;

use tp06_model::names;

/// A `[rows, cols]` matrix, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Values.
    pub values: Vec<f32>,
}

impl Matrix {
    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.cols..(i + 1) * self.cols]
    }
}

/// Reads the 2-D token embedding from a weight file, under either key HF
/// files hold it ([`tp06_model::read_param`]), converting f16/bf16 to f32;
/// of a safetensors file only that tensor is read.
pub fn read_wte(path: &Path) -> Result<Matrix, String> {
    let (name, shape, values) = tp06_model::read_param(path, names::WTE).map_err(|e| e.to_string())?;
    let [rows, cols] = shape[..] else {
        return Err(format!("{}: `{name}` has shape {shape:?}, expected 2-D", path.display()));
    };
    Ok(Matrix { rows, cols, values })
}

fn norm(a: &[f32]) -> f64 {
    a.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>().sqrt()
}

/// Euclidean distance.
pub fn distance(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| ((x - y) as f64).powi(2)).sum::<f64>().sqrt()
}

/// Cosine similarity (0 when either vector is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let d: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let n = norm(a) * norm(b);
    if n == 0.0 { 0.0 } else { d / n }
}

/// The `k` rows among the first `limit` of `m` most similar (cosine) to `v`.
pub fn nearest(m: &Matrix, limit: usize, v: &[f32], k: usize) -> Vec<(usize, f64)> {
    let mut scored: Vec<(usize, f64)> = (0..limit.min(m.rows)).map(|i| (i, cosine(m.row(i), v))).collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored.truncate(k);
    scored
}

/// Distances of the added rows (`from..rows`) between two matrices of the same shape.
pub fn movement(before: &Matrix, after: &Matrix, from: usize) -> Result<Vec<f64>, String> {
    if before.rows != after.rows || before.cols != after.cols {
        return Err(format!(
            "the token embedding changed shape: {}×{} before, {}×{} after",
            before.rows, before.cols, after.rows, after.cols
        ));
    }
    Ok((from..before.rows).map(|i| distance(before.row(i), after.row(i))).collect())
}

/// Mean norm of rows `range`, for scale.
pub fn mean_norm(m: &Matrix, range: std::ops::Range<usize>) -> f64 {
    let n = range.len().max(1) as f64;
    range.map(|i| norm(m.row(i))).sum::<f64>() / n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_safetensors(path: &Path, name: &str, dtype: &str, shape: [usize; 2], data: &[u8]) {
        let header = serde_json::json!({ name: { "dtype": dtype, "shape": shape, "data_offsets": [0, data.len()] }, "__metadata__": {"format": "pt"} });
        let header = serde_json::to_vec(&header).unwrap();
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(&header);
        bytes.extend_from_slice(data);
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn reads_wte_in_f32_f16_and_bf16_and_rejects_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let values = [1.0f32, -2.0, 0.5, 3.0, 0.0, -0.25];
        let f32s: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        write_safetensors(&path, &names::hf_key(names::WTE), "F32", [3, 2], &f32s);
        let m = read_wte(&path).unwrap();
        assert_eq!((m.rows, m.cols, m.row(1)), (3, 2, &[0.5f32, 3.0][..]));
        // f16: 1.0 = 0x3c00, -2.0 = 0xc000; bf16: the high half of the f32.
        let f16s: Vec<u8> =
            [0x3c00u16, 0xc000, 0x3800, 0x4200, 0, 0xb400].iter().flat_map(|v| v.to_le_bytes()).collect();
        write_safetensors(&path, names::WTE, "F16", [3, 2], &f16s);
        assert_eq!(read_wte(&path).unwrap().values, values);
        let bf16s: Vec<u8> = values.iter().flat_map(|v| ((v.to_bits() >> 16) as u16).to_le_bytes()).collect();
        write_safetensors(&path, names::WTE, "BF16", [3, 2], &bf16s);
        assert_eq!(read_wte(&path).unwrap().values, values);
        write_safetensors(&path, names::WTE, "F32", [3, 2], &f32s[..20]);
        let truncated = read_wte(&path).unwrap_err();
        assert!(truncated.contains("m.safetensors") && truncated.contains("truncated or corrupt"), "{truncated}");
        write_safetensors(&path, names::WPE, "F32", [3, 2], &f32s);
        let absent = read_wte(&path).unwrap_err();
        let both = format!("no tensor `{}` or `{}`", names::hf_key(names::WTE), names::WTE);
        assert!(absent.contains(&both), "{absent}");
    }

    #[test]
    fn distances_and_neighbours_are_the_textbook_ones() {
        let m = Matrix { rows: 3, cols: 2, values: vec![1.0, 0.0, 0.0, 1.0, 3.0, 4.0] };
        assert_eq!(distance(m.row(0), m.row(2)), 20f64.sqrt());
        assert!((cosine(m.row(1), m.row(2)) - 0.8).abs() < 1e-12);
        assert_eq!(nearest(&m, 2, m.row(2), 1), vec![(1, 0.8)]);
        let moved = Matrix { rows: 3, cols: 2, values: vec![1.0, 0.0, 0.0, 1.0, 0.0, 0.0] };
        assert_eq!(movement(&m, &moved, 2).unwrap(), vec![5.0]);
        assert!((mean_norm(&m, 0..3) - 7.0 / 3.0).abs() < 1e-12);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

        /// A damaged file gives the matrix or an error naming it; never a panic.
        #[test]
        fn damaged_files_never_panic(cut in 0usize..200, flips in proptest::collection::vec((0usize..200, 1u8..=255), 0..6)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("m.safetensors");
            let values: Vec<u8> = (0..24).flat_map(|i| (i as f32).to_le_bytes()).collect();
            write_safetensors(&path, names::WTE, "F32", [6, 4], &values);
            let mut bytes = std::fs::read(&path).unwrap();
            for (at, b) in flips {
                let i = at % bytes.len();
                bytes[i] ^= b;
            }
            bytes.truncate(bytes.len().saturating_sub(cut));
            std::fs::write(&path, bytes).unwrap();
            if let Err(e) = read_wte(&path) {
                proptest::prop_assert!(e.contains("m.safetensors"), "{e}");
            }
        }
    }
}
