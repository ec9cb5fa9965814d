//! Greedy decoding through the KV cache, for checks against transformers; the
//! full sampler lives in the sample crate.

use burn::prelude::*;
use burn::tensor::s;

use crate::gpt2::{Gpt2, KvCache};
use crate::kernels::Gpt2Ops;
use crate::pass::Pass;

/// The prompt followed by up to `max_new_tokens` greedy tokens: the prompt is
/// run once, then one token per step through the cache. Stops after `eos` or at
/// the context length.
pub fn greedy<B: Gpt2Ops>(model: &Gpt2<B>, prompt: &[u32], max_new_tokens: usize, eos: Option<u32>) -> Vec<u32> {
    let device = model.wte.weight.device();
    let mut cache = KvCache::new(model.h.len());
    let mut tokens = prompt.to_vec();
    let mut input = prompt.to_vec();
    for _ in 0..max_new_tokens {
        if tokens.len() >= model.n_positions() || input.is_empty() {
            break;
        }
        let n = input.len();
        let ids = Tensor::<B, 2, Int>::from_data(
            TensorData::new(input.iter().map(|&i| i as i64).collect::<Vec<_>>(), [1, n]),
            &device,
        );
        let logits = model.forward_cached(ids, &mut cache, &mut Pass::inference()); // [1, n, vocab]
        let last = logits.slice(s![.., n - 1..n, ..]).flatten::<1>(0, 2); // [vocab]
        let next = last.argmax(0).into_scalar().elem::<i64>() as u32;
        tokens.push(next);
        if Some(next) == eos {
            break;
        }
        input = vec![next];
    }
    tokens
}
