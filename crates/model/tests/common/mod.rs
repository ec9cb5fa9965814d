//! What several of the model crate's test files build.

use tp06_model::{Activation, Gpt2Config};

/// A GPT-2 of 2 blocks and 4 heads, `n_embd` wide (MLP twice that), no
/// dropout, in memory.
pub fn tiny_config(vocab_size: usize, n_positions: usize, n_embd: usize) -> Gpt2Config {
    Gpt2Config {
        vocab_size,
        n_positions,
        n_embd,
        n_layer: 2,
        n_head: 4,
        n_inner: 2 * n_embd,
        activation: Activation::GeluTanh,
        layer_norm_epsilon: 1e-5,
        scale_attn_weights: true,
        embd_pdrop: 0.0,
        attn_pdrop: 0.0,
        resid_pdrop: 0.0,
        initializer_range: 0.02,
        bos_token_id: None,
        eos_token_id: None,
        pad_token_id: None,
    }
}
