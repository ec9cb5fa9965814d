//! Products with Q8_0 weights, as llama.cpp computes them
//! (`ggml_vec_dot_q8_0_q8_0`): the activations are quantised to Q8_0 blocks
//! on the fly, and each output is `Σ_blocks d_x · d_w · Σ q_x · q_w`, the
//! integer sums exact. The weights are read once per product, 8.5 bits a
//! weight instead of 32: what bounds decoding on a CPU.
//!
//! Four paths compute the same bits, picked at run time from what the CPU
//! has ([`Path::detect`]): AVX512-VNNI (`vpdpbusd` on 256-bit registers),
//! AVX-VNNI, AVX2 (`vpmaddubsw` then `vpmaddwd`) and scalar. Each output is
//! one f32 chain over its blocks, `acc ← fma(d_x · d_w, sum, acc)`, the
//! block's integer sum exact. The vector paths read a group of eight
//! weight rows as [`Q8Matrix`] stores them (interleaved four bytes at a
//! time): one broadcast dword of an activation block meets the eight rows
//! in one instruction, so a register holds the eight rows' sums, and the
//! eight chains, of up to eight activation rows per pass over the weights.
//! So every path gives the scalar path's bits, a row's values do not depend
//! on the other rows, and no result depends on the number of threads (an
//! output is one task's).

use burn::prelude::*;
use rayon::prelude::*;

use crate::q8::{BlockQ8_0, GROUP_ROWS, Q8Matrix, QK8_0};

/// A kernel path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Plain Rust, eight lanes as the vector paths.
    Scalar,
    /// AVX2, FMA and F16C: `vpmaddubsw` + `vpmaddwd`.
    Avx2,
    /// AVX-VNNI (Alder Lake and later, Zen 5): `vpdpbusd` on 256 bits.
    AvxVnni,
    /// AVX512-VNNI with AVX512-VL (Ice Lake and later, Zen 4): `vpdpbusd` on 256 bits.
    Avx512Vnni,
}

impl Path {
    /// The fastest path this CPU has.
    pub fn detect() -> Self {
        *Self::available().last().expect("the scalar path is always there")
    }

    /// Every path this CPU can run, slowest first.
    pub fn available() -> Vec<Self> {
        let mut paths = vec![Path::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 =
                is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c");
            if avx2 {
                paths.push(Path::Avx2);
            }
            if avx2 && is_x86_feature_detected!("avxvnni") {
                paths.push(Path::AvxVnni);
            }
            if avx2 && is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl") {
                paths.push(Path::Avx512Vnni);
            }
        }
        paths
    }

    /// As named in benchmarks and test output.
    pub fn name(self) -> &'static str {
        match self {
            Path::Scalar => "scalar",
            Path::Avx2 => "avx2",
            Path::AvxVnni => "avx-vnni",
            Path::Avx512Vnni => "avx512-vnni",
        }
    }
}

/// `x [m, k]` times `w [n, k]` transposed, plus `bias [n]`: `[m, n]`. Up to
/// [`STREAMED_ROWS`] rows (decoding, a prompt), the int8 products of
/// [`matmul`]; more (a long prompt, a held-out text), [`matmul_dequantized`]. The product
/// runs on the host CPU whatever `B` is: on a GPU backend `x` is read back
/// and the result sent up (correct, not fast: use bf16 there).
pub fn linear<B: Backend>(x: Tensor<B, 2>, w: &Q8Matrix, bias: Option<Tensor<B, 1>>) -> Tensor<B, 2> {
    let ([m, _], device) = (x.dims(), x.device());
    let host = |t: TensorData| t.convert::<f32>().into_vec::<f32>().expect("converted to f32");
    let bias = bias.map(|b| host(b.into_data()));
    let x = host(x.into_data());
    let y = if m <= STREAMED_ROWS {
        matmul(&x, m, w, bias.as_deref())
    } else {
        matmul_dequantized(&x, m, w, bias.as_deref())
    };
    Tensor::from_data(TensorData::new(y, [m, w.rows()]), &device)
}

/// Rows up to which [`linear`] streams the blocks ([`matmul`] reads them once
/// per [`X_ROWS`] rows); past it, dequantising them once for the general
/// product costs less (measured: a 16-token prompt of the 124 M shape took
/// longer dequantised than streamed four times).
pub const STREAMED_ROWS: usize = 64;

/// Bytes of weights dequantised to f32 at a time by [`matmul_dequantized`].
const DEQUANTIZED_TILE_BYTES: usize = 4 << 20;

/// [`matmul`] for many rows: the same values (the activations quantised to
/// Q8_0 too, as llama.cpp does), multiplied on the f32 general product: the
/// activations' blocks dequantised once, and the weights one tile of output
/// rows of about [`DEQUANTIZED_TILE_BYTES`] at a time. Only the order of the
/// sums differs from [`matmul`]'s; the product runs at gemm's speed instead
/// of one dot product per output and row.
pub fn matmul_dequantized(x: &[f32], m: usize, w: &Q8Matrix, bias: Option<&[f32]>) -> Vec<f32> {
    let (k, n) = (w.cols(), w.rows());
    assert_eq!(x.len(), m * k, "x is [{m}, {k}]");
    let x = Q8Matrix::quantize(x, m, k).dequantize();
    let mut y = vec![0.0f32; m * n];
    let height = (DEQUANTIZED_TILE_BYTES / 4 / k.max(1)).max(1);
    let mut tile = vec![0.0f32; height.min(n) * k];
    for start in (0..n).step_by(height) {
        let rows = height.min(n - start);
        for (r, out) in tile.chunks_exact_mut(k.max(1)).take(rows).enumerate() {
            w.dequantize_row(start + r, out);
        }
        if k == 0 {
            continue;
        }
        // SAFETY: `y` is `[m, n]` and its columns `start..start + rows` are
        // written; `x` is `[m, k]`; `tile` holds `rows` rows of `k` values,
        // read transposed as `[k, rows]`; all contiguous and in bounds.
        unsafe {
            gemm::gemm(
                m,
                rows,
                k,
                y.as_mut_ptr().add(start),
                1,
                n as isize,
                false,
                x.as_ptr(),
                1,
                k as isize,
                tile.as_ptr(),
                k as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(rayon::current_num_threads()),
            );
        }
    }
    if let Some(bias) = bias {
        for row in y.chunks_exact_mut(n.max(1)) {
            super::simd::add_into(bias, row);
        }
    }
    y
}

/// The rows `ids [b, t]` of the table `w`, dequantised: `[b, t, cols]`.
pub fn embedding<B: Backend>(w: &Q8Matrix, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
    let ([b, t], device) = (ids.dims(), ids.device());
    let ids = ids.into_data().convert::<i64>().into_vec::<i64>().expect("converted to i64");
    let c = w.cols();
    let mut out = vec![0.0f32; b * t * c];
    for (id, row) in ids.iter().zip(out.chunks_exact_mut(c.max(1))) {
        w.dequantize_row(*id as usize, row);
    }
    Tensor::from_data(TensorData::new(out, [b, t, c]), &device)
}

/// Groups of [`GROUP_ROWS`] weight rows per task.
const GROUPS_PER_TASK: usize = 8;

/// Activation rows that share one pass over a group of weight rows.
const X_ROWS: usize = 8;

/// `x [m, k]` (row-major) times the Q8_0 matrix `w [n, k]` transposed, plus
/// `bias [n]` when given: `[m, n]`, on the fastest path.
pub fn matmul(x: &[f32], m: usize, w: &Q8Matrix, bias: Option<&[f32]>) -> Vec<f32> {
    matmul_with(Path::detect(), x, m, w, bias)
}

/// [`matmul`] on `path` (which the CPU must have: see [`Path::available`]).
pub fn matmul_with(path: Path, x: &[f32], m: usize, w: &Q8Matrix, bias: Option<&[f32]>) -> Vec<f32> {
    let (k, n) = (w.cols(), w.rows());
    assert_eq!(x.len(), m * k, "x is [{m}, {k}]");
    assert!(Path::available().contains(&path), "this CPU has no {} path", path.name());
    let per_row = w.blocks_per_row();
    // The activations quantised once, the rows on the pool's threads.
    let blocks =
        |row: &[f32]| row.chunks(QK8_0).map(|values| XBlock::of(&BlockQ8_0::quantize(values))).collect::<Vec<_>>();
    let xq: Vec<XBlock> = x.par_chunks_exact(k.max(1)).take(m).flat_map_iter(blocks).collect();
    let xs: Vec<&[XBlock]> = xq.chunks_exact(per_row.max(1)).take(m).collect();
    // Each task: its groups of weight rows, all activation rows: `[m, rows]`.
    let tasks: Vec<Vec<f32>> = (0..w.groups().div_ceil(GROUPS_PER_TASK))
        .into_par_iter()
        .map(|task| {
            let groups = task * GROUPS_PER_TASK..w.groups().min((task + 1) * GROUPS_PER_TASK);
            let first = groups.start * GROUP_ROWS;
            let width = n.min(groups.end * GROUP_ROWS) - first;
            let mut out = vec![0.0f32; m * width];
            for g in groups {
                let (j, len) = (g * GROUP_ROWS - first, GROUP_ROWS.min(n - g * GROUP_ROWS));
                for (c, chunk) in xs.chunks(X_ROWS).enumerate() {
                    let mut sums = [[0.0f32; GROUP_ROWS]; X_ROWS];
                    dot_group(path, chunk, w, g, &mut sums[..chunk.len()]);
                    for (i, sums) in sums[..chunk.len()].iter().enumerate() {
                        let at = (c * X_ROWS + i) * width + j;
                        out[at..at + len].copy_from_slice(&sums[..len]);
                    }
                }
            }
            out
        })
        .collect();
    let mut y = vec![0.0f32; m * n];
    for (task, out) in tasks.iter().enumerate() {
        let start = task * GROUPS_PER_TASK * GROUP_ROWS;
        let width = out.len() / m.max(1);
        for (row, sums) in y.chunks_exact_mut(n.max(1)).zip(out.chunks_exact(width.max(1))) {
            row[start..start + width].copy_from_slice(sums);
            if let Some(bias) = bias {
                super::simd::add_into(&bias[start..start + width], &mut row[start..start + width]);
            }
        }
    }
    y
}

/// An activation's Q8_0 block as the kernels read it, worked out once per
/// product instead of once per weight group it meets: its values, its scale
/// as f32, and `−128 · Σ q`, which the VNNI paths start their integer sums
/// from: they take the weights as unsigned bytes `w + 128` (one `xor` per
/// weight vector, shared by the activation rows), so that
/// `−128·Σx + Σ(w + 128)·x = Σ w·x`. The values are within ±127 (ggml's
/// quantiser).
#[derive(Debug, Clone, Copy)]
struct XBlock {
    qs: [i8; QK8_0],
    scale: f32,
    offset: i32,
}

impl XBlock {
    fn of(block: &BlockQ8_0) -> Self {
        let offset = -128 * block.qs.iter().map(|&q| i32::from(q)).sum::<i32>();
        Self { qs: block.qs, scale: block.scale(), offset }
    }

    /// Its values `4j .. 4j + 4` as one little-endian dword.
    fn dword(&self, j: usize) -> i32 {
        i32::from_le_bytes([0, 1, 2, 3].map(|e| self.qs[4 * j + e] as u8))
    }
}

/// `sums[i][r] = x_i · w_{8g + r}` for the activation rows `x_i` of `xs` (at
/// most [`X_ROWS`]) and the weight rows of group `g`.
fn dot_group(path: Path, xs: &[&[XBlock]], w: &Q8Matrix, g: usize, sums: &mut [[f32; GROUP_ROWS]]) {
    let (quants, scales) = w.group(g);
    // The next group's values follow (for the prefetches; never read).
    let next = quants.as_ptr_range().end;
    match path {
        Path::Scalar => dot_group_scalar(xs, w, g, sums),
        // SAFETY (each path): `matmul_with` checked that the CPU has its features.
        #[cfg(target_arch = "x86_64")]
        Path::Avx2 => unsafe { x86::dot_group_avx2(xs, quants, scales, next, sums) },
        #[cfg(target_arch = "x86_64")]
        Path::AvxVnni => unsafe { x86::dot_group_avx_vnni(xs, quants, scales, next, sums) },
        #[cfg(target_arch = "x86_64")]
        Path::Avx512Vnni => unsafe { x86::dot_group_avx512_vnni(xs, quants, scales, next, sums) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("no vector path off x86-64"),
    }
}

fn dot_group_scalar(xs: &[&[XBlock]], w: &Q8Matrix, g: usize, sums: &mut [[f32; GROUP_ROWS]]) {
    let rows: Vec<Vec<BlockQ8_0>> = (0..GROUP_ROWS)
        .map(|r| if g * GROUP_ROWS + r < w.rows() { w.row(g * GROUP_ROWS + r) } else { Vec::new() })
        .collect();
    for (x, sums) in xs.iter().zip(sums) {
        for (row, sum) in rows.iter().zip(sums.iter_mut()) {
            let mut acc = 0.0f32;
            for (xb, wb) in x.iter().zip(row) {
                let s: i32 = xb.qs.iter().zip(&wb.qs).map(|(&a, &b)| i32::from(a) * i32::from(b)).sum();
                acc = (xb.scale * wb.scale()).mul_add(s as f32, acc);
            }
            *sum = acc;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[path = "q8_x86.rs"]
mod x86;
