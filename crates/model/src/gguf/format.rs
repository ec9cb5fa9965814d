//! GGUF, llama.cpp's model file, version 3, as ggml's `gguf.cpp` reads it:
//! the magic `GGUF`, the version, the tensor and metadata counts, the
//! metadata (typed key–value pairs), one info per tensor (name, dimensions
//! with the contiguous one first, ggml type, offset), then the tensors' data,
//! each at a multiple of [`ALIGNMENT`] from the data section's start, which
//! is itself aligned. Everything is little-endian.
//!
//! The writer streams: the infos are written from the tensors' shapes and
//! types, then each tensor's bytes are asked for in order, so that a model
//! is never held twice in memory on the way to its file.

use std::io::{self, Write};
use std::path::Path;

use crate::ModelError;

/// The file's first four bytes.
pub const MAGIC: &[u8; 4] = b"GGUF";
/// The format version written.
pub const VERSION: u32 = 3;
/// Alignment of the data section and of each tensor's data (ggml's
/// default, `GGUF_DEFAULT_ALIGNMENT`; written as `general.alignment`).
pub const ALIGNMENT: u64 = 32;

/// A metadata value (the types this writer needs of `gguf_type`).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `GGUF_TYPE_UINT32`.
    U32(u32),
    /// `GGUF_TYPE_INT32`.
    I32(i32),
    /// `GGUF_TYPE_FLOAT32`.
    F32(f32),
    /// `GGUF_TYPE_BOOL`.
    Bool(bool),
    /// `GGUF_TYPE_STRING`.
    Str(String),
    /// `GGUF_TYPE_ARRAY` of strings.
    Strs(Vec<String>),
    /// `GGUF_TYPE_ARRAY` of `INT32`.
    I32s(Vec<i32>),
}

// ggml's `enum gguf_type`.
const TYPE_UINT32: u32 = 4;
const TYPE_INT32: u32 = 5;
const TYPE_FLOAT32: u32 = 6;
const TYPE_BOOL: u32 = 7;
const TYPE_STRING: u32 = 8;
const TYPE_ARRAY: u32 = 9;

impl Value {
    fn write(&self, out: &mut impl Write) -> io::Result<()> {
        match self {
            Value::U32(v) => {
                out.write_all(&TYPE_UINT32.to_le_bytes())?;
                out.write_all(&v.to_le_bytes())
            }
            Value::I32(v) => {
                out.write_all(&TYPE_INT32.to_le_bytes())?;
                out.write_all(&v.to_le_bytes())
            }
            Value::F32(v) => {
                out.write_all(&TYPE_FLOAT32.to_le_bytes())?;
                out.write_all(&v.to_le_bytes())
            }
            Value::Bool(v) => {
                out.write_all(&TYPE_BOOL.to_le_bytes())?;
                out.write_all(&[*v as u8])
            }
            Value::Str(s) => {
                out.write_all(&TYPE_STRING.to_le_bytes())?;
                string(out, s)
            }
            Value::Strs(items) => {
                out.write_all(&TYPE_ARRAY.to_le_bytes())?;
                out.write_all(&TYPE_STRING.to_le_bytes())?;
                out.write_all(&(items.len() as u64).to_le_bytes())?;
                items.iter().try_for_each(|s| string(out, s))
            }
            Value::I32s(items) => {
                out.write_all(&TYPE_ARRAY.to_le_bytes())?;
                out.write_all(&TYPE_INT32.to_le_bytes())?;
                out.write_all(&(items.len() as u64).to_le_bytes())?;
                items.iter().try_for_each(|v| out.write_all(&v.to_le_bytes()))
            }
        }
    }
}

/// A GGUF string: its length in bytes (u64), then its UTF-8 bytes.
fn string(out: &mut impl Write, s: &str) -> io::Result<()> {
    out.write_all(&(s.len() as u64).to_le_bytes())?;
    out.write_all(s.as_bytes())
}

/// The ggml tensor types this writer stores (`enum ggml_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorType {
    /// `GGML_TYPE_F32`.
    F32,
    /// `GGML_TYPE_F16`.
    F16,
    /// `GGML_TYPE_Q8_0`: rows of 34-byte blocks of 32 values ([`crate::q8`]).
    Q8_0,
    /// `GGML_TYPE_BF16`.
    Bf16,
}

impl TensorType {
    /// Its `ggml_type` number.
    pub fn id(self) -> u32 {
        match self {
            TensorType::F32 => 0,
            TensorType::F16 => 1,
            TensorType::Q8_0 => 8,
            TensorType::Bf16 => 30,
        }
    }

    /// Bytes of a tensor of `dims` (the contiguous dimension first), or why
    /// it cannot be stored in this type.
    pub fn bytes(self, dims: &[u64]) -> Result<u64, String> {
        let count: u64 = dims.iter().product();
        match self {
            TensorType::F32 => Ok(4 * count),
            TensorType::F16 | TensorType::Bf16 => Ok(2 * count),
            TensorType::Q8_0 => {
                let row = dims.first().copied().unwrap_or(1);
                if !row.is_multiple_of(crate::q8::QK8_0 as u64) {
                    return Err(format!("Q8_0 needs rows of a multiple of 32 values, not {row}"));
                }
                Ok(count / crate::q8::QK8_0 as u64 * 34)
            }
        }
    }
}

/// One tensor's entry.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// Its name (`blk.0.attn_qkv.weight`).
    pub name: String,
    /// Its dimensions as ggml orders them: the contiguous one first (a
    /// row-major `[rows, cols]` matrix is `[cols, rows]`).
    pub dims: Vec<u64>,
    /// How its values are stored.
    pub ty: TensorType,
}

/// `n` rounded up to a multiple of [`ALIGNMENT`].
fn aligned(n: u64) -> u64 {
    n.div_ceil(ALIGNMENT) * ALIGNMENT
}

/// Writes the GGUF file `path` atomically: `metadata` in its order (with
/// `general.alignment` added), then `tensors`, whose bytes `data(i)` gives
/// in order (each exactly [`TensorType::bytes`] long).
pub fn write(
    path: &Path,
    metadata: &[(String, Value)],
    tensors: &[TensorInfo],
    mut data: impl FnMut(usize) -> Result<Vec<u8>, ModelError>,
) -> Result<(), ModelError> {
    let bad = |reason: String| ModelError::Weights { path: path.to_path_buf(), reason };
    let sizes: Vec<u64> = tensors
        .iter()
        .map(|t| t.ty.bytes(&t.dims).map_err(|reason| bad(format!("`{}`: {reason}", t.name))))
        .collect::<Result<_, _>>()?;
    let io_error = |e: io::Error| ModelError::Io { action: "cannot write", path: path.to_path_buf(), source: e };
    tp06_artifact::fs::write_atomic_with(path, |out| {
        let mut header = Vec::new();
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&VERSION.to_le_bytes());
        header.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        header.extend_from_slice(&(metadata.len() as u64 + 1).to_le_bytes());
        let alignment = ("general.alignment".to_string(), Value::U32(ALIGNMENT as u32));
        for (key, value) in metadata.iter().chain(std::iter::once(&alignment)) {
            string(&mut header, key).map_err(io_error)?;
            value.write(&mut header).map_err(io_error)?;
        }
        let mut offset = 0u64;
        for (tensor, size) in tensors.iter().zip(&sizes) {
            string(&mut header, &tensor.name).map_err(io_error)?;
            header.extend_from_slice(&(tensor.dims.len() as u32).to_le_bytes());
            for d in &tensor.dims {
                header.extend_from_slice(&d.to_le_bytes());
            }
            header.extend_from_slice(&tensor.ty.id().to_le_bytes());
            header.extend_from_slice(&offset.to_le_bytes());
            offset = aligned(offset + size);
        }
        header.resize(aligned(header.len() as u64) as usize, 0);
        out.write_all(&header).map_err(io_error)?;
        // Each tensor starts aligned: its padding rounds its own size up.
        for (i, (tensor, size)) in tensors.iter().zip(&sizes).enumerate() {
            let bytes = data(i)?;
            if bytes.len() as u64 != *size {
                return Err(bad(format!("`{}`: {} bytes of data for {size}", tensor.name, bytes.len())));
            }
            out.write_all(&bytes).map_err(io_error)?;
            out.write_all(&vec![0u8; (aligned(*size) - size) as usize]).map_err(io_error)?;
        }
        Ok(())
    })
}
