//! How far the added embedding rows moved during training: reads `wte` from
//! the model stage's and the export's `model.safetensors` (only that tensor),
//! measures each added row's distance to its initial vector and finds the
//! nearest pretrained tokens.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

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

#[derive(serde::Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (u64, u64),
}

/// Reads the 2-D tensor `wte.weight` (with or without the `transformer.`
/// prefix) from a safetensors file, converting f16/bf16 to f32.
pub fn read_wte(path: &Path) -> Result<Matrix, String> {
    let fail = |why: String| format!("{}: {why}", path.display());
    let mut file = File::open(path).map_err(|e| fail(e.to_string()))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|e| fail(format!("no safetensors header ({e})")))?;
    let len = u64::from_le_bytes(len);
    let size = file.metadata().map_err(|e| fail(e.to_string()))?.len();
    if len > size.saturating_sub(8) || len > 100 << 20 {
        return Err(fail(format!("header length {len} does not fit the file ({size} bytes)")));
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header).map_err(|e| fail(e.to_string()))?;
    let entries: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| fail(format!("bad header: {e}")))?;
    let (name, entry) = ["transformer.wte.weight", "wte.weight"]
        .iter()
        .find_map(|n| entries.get(*n).map(|v| (*n, v.clone())))
        .ok_or_else(|| fail("no `wte.weight` tensor".into()))?;
    let entry: Entry = serde_json::from_value(entry).map_err(|e| fail(format!("`{name}`: {e}")))?;
    let [rows, cols] = entry.shape[..] else {
        return Err(fail(format!("`{name}` has shape {:?}, expected 2-D", entry.shape)));
    };
    let width = match entry.dtype.as_str() {
        "F32" => 4,
        "F16" | "BF16" => 2,
        other => return Err(fail(format!("`{name}` has dtype {other}"))),
    };
    let (start, end) = entry.data_offsets;
    if end - start != (rows * cols * width) as u64 || 8 + len + end > size {
        return Err(fail(format!("`{name}` data does not match its shape (truncated file?)")));
    }
    file.seek(SeekFrom::Start(8 + len + start)).map_err(|e| fail(e.to_string()))?;
    let mut bytes = vec![0u8; (end - start) as usize];
    file.read_exact(&mut bytes).map_err(|e| fail(e.to_string()))?;
    let values = match width {
        4 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        _ if entry.dtype == "BF16" => {
            bytes.chunks_exact(2).map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16)).collect()
        }
        _ => bytes.chunks_exact(2).map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]]))).collect(),
    };
    Ok(Matrix { rows, cols, values })
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((h >> 10) & 0x1f) as i32;
    let frac = (h & 0x3ff) as f32;
    sign * match exp {
        0 => frac * 2f32.powi(-24),
        31 => {
            if frac == 0.0 {
                f32::INFINITY
            } else {
                f32::NAN
            }
        }
        e => (1.0 + frac / 1024.0) * 2f32.powi(e - 15),
    }
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
            "`wte` changed shape: {}×{} before, {}×{} after",
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
        write_safetensors(&path, "transformer.wte.weight", "F32", [3, 2], &f32s);
        let m = read_wte(&path).unwrap();
        assert_eq!((m.rows, m.cols, m.row(1)), (3, 2, &[0.5f32, 3.0][..]));
        // f16: 1.0 = 0x3c00, -2.0 = 0xc000; bf16: the high half of the f32.
        let f16s: Vec<u8> =
            [0x3c00u16, 0xc000, 0x3800, 0x4200, 0, 0xb400].iter().flat_map(|v| v.to_le_bytes()).collect();
        write_safetensors(&path, "wte.weight", "F16", [3, 2], &f16s);
        assert_eq!(read_wte(&path).unwrap().values, values);
        let bf16s: Vec<u8> = values.iter().flat_map(|v| ((v.to_bits() >> 16) as u16).to_le_bytes()).collect();
        write_safetensors(&path, "wte.weight", "BF16", [3, 2], &bf16s);
        assert_eq!(read_wte(&path).unwrap().values, values);
        write_safetensors(&path, "wte.weight", "F32", [3, 2], &f32s[..20]);
        assert!(read_wte(&path).unwrap_err().contains("does not match its shape"));
        write_safetensors(&path, "wpe.weight", "F32", [3, 2], &f32s);
        assert!(read_wte(&path).unwrap_err().contains("no `wte.weight`"));
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
            write_safetensors(&path, "wte.weight", "F32", [6, 4], &values);
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
