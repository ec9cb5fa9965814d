//! Products with Q8_0 weights, as llama.cpp computes them
//! (`ggml_vec_dot_q8_0_q8_0`): the activations are quantised to Q8_0 blocks
//! on the fly, and each output is `Σ_blocks d_x · d_w · Σ q_x · q_w`, the
//! integer sums exact. The weights are read once per product, 8.5 bits a
//! weight instead of 32: what bounds decoding on a CPU.
//!
//! Four paths compute the same bits, picked at run time from what the CPU
//! has ([`Path::detect`]): AVX512-VNNI (`vpdpbusd` on 256-bit registers),
//! AVX-VNNI, AVX2 (`vpmaddubsw` then `vpmaddwd`) and scalar (the VNNI
//! paths take the weights as unsigned bytes, see [`XBlock`]). Each 32-value
//! block is eight lanes of four products; a lane's integer sum is converted
//! to f32 and accumulated as `fma(d_x · d_w, sum, acc)` in eight f32 lanes,
//! which are added in one fixed order at the end. The scalar path does the
//! same eight lanes, so every path gives the scalar path's bits, and no
//! result depends on the number of threads (an output is one task's).

use burn::prelude::*;
use rayon::prelude::*;

use crate::q8::{BlockQ8_0, Q8Matrix, QK8_0};

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
/// per [`GROUP`] rows); past it, dequantising them once for the general
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

/// Output rows of the weight per task.
const ROWS_PER_TASK: usize = 64;

/// Activation rows whose products share one pass over a weight row.
const GROUP: usize = 4;

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
    // Each task: its weight rows, all activation rows; written back by column.
    let tasks: Vec<Vec<f32>> = (0..n.div_ceil(ROWS_PER_TASK))
        .into_par_iter()
        .map(|task| {
            let rows: Vec<usize> = (task * ROWS_PER_TASK..n.min((task + 1) * ROWS_PER_TASK)).collect();
            let mut out = vec![0.0f32; rows.len() * m];
            // Two weight rows at a time for several activation rows: each
            // activation block is loaded once for both (one row keeps the
            // one-row kernel, whose accumulator stays in a register).
            for (pair, rs) in rows.chunks(2).enumerate() {
                let j = 2 * pair;
                for (g, group) in xs.chunks(GROUP).enumerate() {
                    let (at, len) = (j * m + g * GROUP, group.len());
                    match *rs {
                        [r0, r1] if len > 1 => {
                            let (first, second) = out.split_at_mut((j + 1) * m + g * GROUP);
                            let sums = [&mut first[at..at + len], &mut second[..len]];
                            dot_rows2(path, group, [w.row(r0), w.row(r1)], sums);
                        }
                        _ => {
                            for (t, &r) in rs.iter().enumerate() {
                                dot_rows(path, group, w.row(r), &mut out[at + t * m..at + t * m + len]);
                            }
                        }
                    }
                }
            }
            out
        })
        .collect();
    let mut y = vec![0.0f32; m * n];
    for (task, out) in tasks.iter().enumerate() {
        for (j, sums) in out.chunks_exact(m.max(1)).enumerate() {
            let col = task * ROWS_PER_TASK + j;
            for (i, s) in sums.iter().enumerate() {
                y[i * n + col] = s + bias.map_or(0.0, |b| b[col]);
            }
        }
    }
    y
}

/// [`dot_rows`] for two weight rows at once: `out[t][i] = x_i · w_t`, each
/// sum in [`dot_rows`]' order (the same bits).
fn dot_rows2(path: Path, xs: &[&[XBlock]], w: [&[BlockQ8_0]; 2], out: [&mut [f32]; 2]) {
    let [out0, out1] = out;
    match path {
        // SAFETY (each path): `matmul_with` checked that the CPU has its features.
        #[cfg(target_arch = "x86_64")]
        Path::Avx2 => unsafe { x86::dot_rows2_avx2(xs, w, [out0, out1]) },
        #[cfg(target_arch = "x86_64")]
        Path::AvxVnni => unsafe { x86::dot_rows2_avx_vnni(xs, w, [out0, out1]) },
        #[cfg(target_arch = "x86_64")]
        Path::Avx512Vnni => unsafe { x86::dot_rows2_avx512_vnni(xs, w, [out0, out1]) },
        _ => {
            dot_rows(path, xs, w[0], out0);
            dot_rows(path, xs, w[1], out1);
        }
    }
}

/// An activation's Q8_0 block as the kernels read it, worked out once per
/// product instead of once per weight row it meets: its values, its scale
/// as f32, and `−128 ·` each lane's sum of values, which the VNNI paths
/// start their integer sums from: they take the weights as unsigned bytes
/// `w + 128` (one `xor` a weight block, shared by the rows), so that
/// `−128·Σx + Σ(w + 128)·x = Σ w·x` with no sign fix-up per row. The values
/// are within ±127 (ggml's quantiser). 68 bytes, so that a product's
/// activations stay in the nearest caches.
#[derive(Debug, Clone, Copy)]
struct XBlock {
    qs: [i8; QK8_0],
    scale: f32,
    offset: [i32; 8],
}

impl XBlock {
    fn of(block: &BlockQ8_0) -> Self {
        let scale = block.scale();
        let offset = std::array::from_fn(|lane| {
            -128 * block.qs[4 * lane..4 * lane + 4].iter().map(|&q| i32::from(q)).sum::<i32>()
        });
        Self { qs: block.qs, scale, offset }
    }
}

/// `out[i] = x_i · w` for each activation row `x_i` of `xs` (at most [`GROUP`]).
fn dot_rows(path: Path, xs: &[&[XBlock]], w: &[BlockQ8_0], out: &mut [f32]) {
    match path {
        Path::Scalar => dot_rows_scalar(xs, w, out),
        // SAFETY (each path): `matmul_with` checked that the CPU has its features.
        #[cfg(target_arch = "x86_64")]
        Path::Avx2 => unsafe { x86::dot_rows_avx2(xs, w, out) },
        #[cfg(target_arch = "x86_64")]
        Path::AvxVnni => unsafe { x86::dot_rows_avx_vnni(xs, w, out) },
        #[cfg(target_arch = "x86_64")]
        Path::Avx512Vnni => unsafe { x86::dot_rows_avx512_vnni(xs, w, out) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("no vector path off x86-64"),
    }
}

/// The eight lanes added as the vector paths add them: the two halves,
/// then the halves of that, then the last two.
fn sum_lanes(a: [f32; 8]) -> f32 {
    let s = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
    (s[0] + s[2]) + (s[1] + s[3])
}

fn dot_rows_scalar(xs: &[&[XBlock]], w: &[BlockQ8_0], out: &mut [f32]) {
    for (x, out) in xs.iter().zip(out) {
        let mut acc = [0.0f32; 8];
        for (xb, wb) in x.iter().zip(w) {
            let d = xb.scale * wb.scale();
            for (lane, acc) in acc.iter_mut().enumerate() {
                let sum: i32 = (4 * lane..4 * lane + 4).map(|j| xb.qs[j] as i32 * wb.qs[j] as i32).sum();
                *acc = d.mul_add(sum as f32, *acc);
            }
        }
        *out = sum_lanes(acc);
    }
}

#[cfg(target_arch = "x86_64")]
#[path = "q8_x86.rs"]
mod x86;
