//! Q8_0, llama.cpp's 8-bit format: blocks of 32 values along a row, each
//! stored as one f16 scale `d = max|x| / 127` and 32 signed bytes
//! `q = round(x / d)` (half away from zero), 34 bytes a block, 8.5 bits a
//! value. The quantiser is ggml's reference (`quantize_row_q8_0_ref`, and
//! the `gguf` package's `Q8_0`) bit for bit, and the blocks are laid out as
//! a GGUF file holds them: row after row, each row's blocks in order.
//!
//! A row whose length is not a multiple of 32 ends in a block padded with
//! zeros (a GGUF file cannot hold such a row; the models here always have
//! multiples of 32 but the tests' tiny ones).
//!
//! A [`Q8Matrix`] keeps its blocks as llama.cpp repacks Q8_0 for its batched
//! kernels: eight rows' blocks interleaved four bytes at a time, their
//! scales side by side ([`Q8Matrix::to_bytes`] gives a GGUF file's order).
//! A kernel then reads eight rows as one stream, and one broadcast
//! activation dword meets the eight rows in one instruction.

use half::f16;

/// Values a block holds.
pub const QK8_0: usize = 32;

/// One block: llama.cpp's `block_q8_0`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockQ8_0 {
    /// The scale, as f16 bits.
    pub d: u16,
    /// The quantised values.
    pub qs: [i8; QK8_0],
}

const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34, "llama.cpp's block_q8_0 is 34 bytes");

impl BlockQ8_0 {
    /// The block of `x` (at most 32 values; missing ones are zeros), as
    /// ggml's reference quantiser makes it.
    pub fn quantize(x: &[f32]) -> Self {
        debug_assert!(x.len() <= QK8_0);
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d == 0.0 { 0.0 } else { 1.0 / d };
        let mut qs = [0i8; QK8_0];
        for (q, v) in qs.iter_mut().zip(x) {
            *q = round_half_away(v * id) as i8;
        }
        Self { d: f16::from_f32(d).to_bits(), qs }
    }

    /// The scale as f32.
    pub fn scale(&self) -> f32 {
        f16::from_bits(self.d).to_f32()
    }
}

/// `x` rounded half away from zero, as C's `roundf` and gguf's `np_roundf`
/// (and `f32::round`, which is a library call on x86-64's baseline: 5 % of
/// a batched decoding step went to it), for `|x| < 2³¹`: the quantiser's
/// values are within ±127. NaN gives 0, as `f32::round(NaN) as i8` does.
#[inline]
fn round_half_away(x: f32) -> f32 {
    let whole = (x as i32) as f32; // towards zero
    let fraction = x - whole; // exact
    if fraction >= 0.5 {
        whole + 1.0
    } else if fraction <= -0.5 {
        whole - 1.0
    } else {
        whole
    }
}

/// The transpose of the row-major `[rows, cols]` matrix `values`, row-major
/// `[cols, rows]`: HF's `Conv1D` weight `[in, out]` as GGUF stores it.
pub fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    assert_eq!(values.len(), rows * cols, "a [{rows}, {cols}] matrix");
    let mut transposed = vec![0.0f32; values.len()];
    for (i, row) in values.chunks_exact(cols.max(1)).enumerate() {
        for (j, v) in row.iter().enumerate() {
            transposed[j * rows + i] = *v;
        }
    }
    transposed
}

/// Rows whose blocks a [`Q8Matrix`] stores interleaved.
pub const GROUP_ROWS: usize = 8;

/// Bytes of one block of [`GROUP_ROWS`] rows' values.
pub(crate) const GROUP_BLOCK: usize = GROUP_ROWS * QK8_0;

/// A matrix `[rows, cols]` in Q8_0, each row quantised along its `cols`,
/// stored by groups of [`GROUP_ROWS`] rows (the last padded with rows of
/// zeros): for each group and block, the values as `[dword j][row r][4]`
/// (row `r`'s values `4j .. 4j + 4` at `(8j + r) · 4`) and the eight scales.
#[derive(Clone, PartialEq, Eq)]
pub struct Q8Matrix {
    rows: usize,
    cols: usize,
    quants: Vec<i8>,
    scales: Vec<u16>,
}

impl std::fmt::Debug for Q8Matrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Q8Matrix [{}, {}]", self.rows, self.cols)
    }
}

impl Q8Matrix {
    /// Quantises the row-major `[rows, cols]` matrix `values`.
    pub fn quantize(values: &[f32], rows: usize, cols: usize) -> Self {
        assert_eq!(values.len(), rows * cols, "a [{rows}, {cols}] matrix");
        let per_row = cols.div_ceil(QK8_0);
        let groups = rows.div_ceil(GROUP_ROWS);
        let mut m = Self {
            rows,
            cols,
            quants: vec![0; groups * per_row * GROUP_BLOCK],
            scales: vec![0; groups * per_row * GROUP_ROWS],
        };
        for (r, row) in values.chunks_exact(cols.max(1)).take(rows).enumerate() {
            for (b, chunk) in row.chunks(QK8_0).enumerate() {
                let block = BlockQ8_0::quantize(chunk);
                let (at, lane) = m.place(r, b);
                m.scales[at * GROUP_ROWS + lane] = block.d;
                for (j, dword) in block.qs.chunks_exact(4).enumerate() {
                    let to = at * GROUP_BLOCK + (GROUP_ROWS * j + lane) * 4;
                    m.quants[to..to + 4].copy_from_slice(dword);
                }
            }
        }
        m
    }

    /// Quantises the transpose of the row-major `[cols, rows]` matrix
    /// `values`: HF's `Conv1D` weight `[in, out]` becomes `[out, in]`, each
    /// output's weights a row of blocks along the input (as GGUF stores it).
    pub fn quantize_transposed(values: &[f32], cols: usize, rows: usize) -> Self {
        Self::quantize(&transpose(values, cols, rows), rows, cols)
    }

    /// Where row `r`'s block `b` is: its group's block index and its lane.
    fn place(&self, r: usize, b: usize) -> (usize, usize) {
        ((r / GROUP_ROWS) * self.blocks_per_row() + b, r % GROUP_ROWS)
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Values a row holds.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Blocks a row holds.
    pub fn blocks_per_row(&self) -> usize {
        self.cols.div_ceil(QK8_0)
    }

    /// Groups of [`GROUP_ROWS`] rows.
    pub fn groups(&self) -> usize {
        self.rows.div_ceil(GROUP_ROWS)
    }

    /// Group `g`'s values (`blocks_per_row` blocks of [`GROUP_ROWS`] · 32
    /// bytes) and scales (f16 bits, [`GROUP_ROWS`] a block).
    pub(crate) fn group(&self, g: usize) -> (&[i8], &[u16]) {
        let n = self.blocks_per_row();
        (
            &self.quants[g * n * GROUP_BLOCK..(g + 1) * n * GROUP_BLOCK],
            &self.scales[g * n * GROUP_ROWS..(g + 1) * n * GROUP_ROWS],
        )
    }

    /// Row `r`'s block `b`.
    pub fn block(&self, r: usize, b: usize) -> BlockQ8_0 {
        let (at, lane) = self.place(r, b);
        let mut qs = [0i8; QK8_0];
        for (j, dword) in qs.chunks_exact_mut(4).enumerate() {
            let from = at * GROUP_BLOCK + (GROUP_ROWS * j + lane) * 4;
            dword.copy_from_slice(&self.quants[from..from + 4]);
        }
        BlockQ8_0 { d: self.scales[at * GROUP_ROWS + lane], qs }
    }

    /// Row `r`'s blocks.
    pub fn row(&self, r: usize) -> Vec<BlockQ8_0> {
        (0..self.blocks_per_row()).map(|b| self.block(r, b)).collect()
    }

    /// The blocks as the bytes a GGUF file holds: row after row, 34 bytes a block.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.rows * self.blocks_per_row() * 34);
        for r in 0..self.rows {
            for block in self.row(r) {
                out.extend(block.d.to_le_bytes());
                out.extend(block.qs.map(|q| q as u8));
            }
        }
        out
    }

    /// Row `r` as f32 (`d · q`).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        for (block, out) in self.row(r).iter().zip(out.chunks_mut(QK8_0)) {
            let d = block.scale();
            for (o, q) in out.iter_mut().zip(block.qs) {
                *o = d * q as f32;
            }
        }
    }

    /// The whole matrix as f32, row-major `[rows, cols]`.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0.0f32; self.rows * self.cols];
        for (r, row) in out.chunks_exact_mut(self.cols.max(1)).enumerate().take(self.rows) {
            self.dequantize_row(r, row);
        }
        out
    }

    /// Bytes the blocks take (the last group's padding rows included).
    pub fn bytes(&self) -> usize {
        self.quants.len() + 2 * self.scales.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// By hand: max 127 gives d = 1, so each value is its own rounding (half
    /// away from zero); a block of zeros has d = 0 and zeros.
    #[test]
    fn a_block_by_hand() {
        let mut x = [0.0f32; 32];
        x[0] = -127.0;
        x[1] = 2.5;
        x[2] = -2.5;
        x[3] = 0.49;
        let b = BlockQ8_0::quantize(&x);
        assert_eq!(b.scale(), 1.0);
        assert_eq!(&b.qs[..4], &[-127, 3, -3, 0]);
        let zero = BlockQ8_0::quantize(&[0.0; 32]);
        assert_eq!((zero.d, zero.qs), (0, [0; 32]));
    }

    /// A row shorter than a block is padded with zeros; a transposed
    /// quantisation is the quantisation of the transpose.
    #[test]
    fn padding_and_transposition() {
        let m = Q8Matrix::quantize(&[1.0, -0.5, 0.25], 1, 3);
        assert_eq!((m.blocks_per_row(), &m.row(0)[0].qs[..4]), (1, &[127, -64, 32, 0][..]));
        assert_eq!(m.to_bytes().len(), 34);
        let w: Vec<f32> = (0..6).map(|i| i as f32 - 2.5).collect(); // [in 2, out 3]
        let t = Q8Matrix::quantize_transposed(&w, 2, 3);
        let by_hand = Q8Matrix::quantize(&[w[0], w[3], w[1], w[4], w[2], w[5]], 3, 2);
        assert_eq!(t, by_hand);
        assert_eq!(t.dequantize().len(), 6);
    }
}

#[cfg(test)]
mod rounding {
    #[test]
    fn rounding_is_f32_round_on_the_quantiser_s_range() {
        let mut x = -130.0f32;
        while x <= 130.0 {
            for v in [x, x.next_up(), x.next_down()] {
                assert_eq!(super::round_half_away(v), v.round(), "{v}");
            }
            x += 0.125;
        }
        assert_eq!(super::round_half_away(f32::NAN) as i8, f32::NAN.round() as i8);
        assert_eq!(super::round_half_away(0.49999997), 0.0);
    }
}
