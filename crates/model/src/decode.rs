//! One decoding step over rows that are each at their own position, with
//! their own cache: what a server runs to decode several requests at once.
//!
//! The products (`Conv1D`, the tied head), the norms and the activation take
//! the rows together, so that a step reads the weights once for all of them;
//! the attention takes each row alone, against its own cache (the blocks'
//! own forward, given one cache slot per row). Every kernel
//! computes a row on its own, in an order that does not depend on the other
//! rows, so each row's logits are bit for bit those of decoding it alone
//! ([`Gpt2::forward_cached`] with one row), as long as the step's rows take
//! the same product kernels as one row does: up to
//! [`crate::kernels::FEW_ROWS`] rows of f32 weights,
//! [`crate::kernels::BF16_STREAMED_ROWS`] of bf16 ones and
//! [`crate::kernels::q8::STREAMED_ROWS`] of int8 ones ([`Gpt2::rows_per_step`]).

use burn::prelude::*;

use crate::gpt2::{Gpt2, KvCache};
use crate::kernels::{self, Gpt2Ops};
use crate::layout::Layout;
use crate::pass::Pass;
use crate::precision::Precision;

impl<B: Gpt2Ops> Gpt2<B> {
    /// The next-token logits `[n, vocab]` of `n` rows: row `i` is the token
    /// `ids[i]` at position `caches[i].len()`, its keys and values added to
    /// `caches[i]`.
    ///
    /// # Panics
    /// If `ids` and `caches` differ in length, or a cache belongs to a model
    /// with another number of blocks.
    pub fn decode_rows(&self, ids: &[u32], caches: &mut [&mut KvCache<B>], pass: &mut Pass) -> Tensor<B, 2> {
        assert_eq!(ids.len(), caches.len(), "one cache per row");
        let n = ids.len();
        let device = self.wte.weight.device();
        let column = |values: Vec<i64>| TensorData::new(values, [n]);
        let tokens = Tensor::<B, 1, Int>::from_data(column(ids.iter().map(|&i| i64::from(i)).collect()), &device);
        let positions = column(caches.iter().map(|c| c.len as i64).collect());
        let positions = Tensor::<B, 1, Int>::from_data(positions, &device);
        let pos = self.wpe.weight.val().select(0, positions).unsqueeze_dim::<3>(1); // [n, 1, c]
        let tok = self.wte.lookup(tokens.unsqueeze_dim::<2>(1)); // [n, 1, c]
        let mut x = pass.dropout(self.drop, tok + pos);
        for (l, block) in self.h.iter().enumerate() {
            let mut slots: Vec<&mut _> = caches.iter_mut().map(|cache| &mut cache.layers[l]).collect();
            x = block.forward_cached(x, &Layout::plain(), Some(&mut slots), pass);
        }
        for cache in caches.iter_mut() {
            cache.len += 1;
        }
        let hidden = self.ln_f.forward(x, pass); // [n, 1, c]
        let c = hidden.dims()[2];
        self.head_2d(hidden.reshape([n, c]), pass)
    }

    /// The model with its f32 `Conv1D` weights laid out for decoding
    /// ([`Gpt2Ops::decoding_layout`]: on the CPU, each stored `[out, in]` so
    /// that the few-row products read it row by row), the same values. What
    /// generation and serving load; training and export keep HF's `[in, out]`.
    pub fn for_decoding(mut self) -> Self {
        for block in &mut self.h {
            for conv in [&mut block.attn.c_attn, &mut block.attn.c_proj, &mut block.mlp.c_fc, &mut block.mlp.c_proj] {
                if conv.q8.is_none() {
                    conv.weight = conv.weight.clone().map(B::decoding_layout);
                }
            }
        }
        self
    }

    /// The most rows a [`Self::decode_rows`] step takes with each row's
    /// logits still those of decoding it alone: the rows up to which the
    /// weights' product kernels are the ones a single row takes.
    pub fn rows_per_step(&self) -> usize {
        match self.precision() {
            Precision::F32 => kernels::FEW_ROWS,
            Precision::Bf16 => kernels::BF16_STREAMED_ROWS,
            Precision::Int8 => kernels::q8::STREAMED_ROWS,
        }
    }
}
