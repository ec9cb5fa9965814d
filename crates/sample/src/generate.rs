//! Decoding: the prompt is run once (prefill), then one token per step through
//! the KV cache. Several samples of one prompt decode together as a batch.

use std::sync::atomic::{AtomicBool, Ordering};

use burn::prelude::*;
use burn::tensor::s;
use rand::SeedableRng;
use tp06_model::{Gpt2, Gpt2Ops, KvCache, Pass};

use crate::processors::Processing;

/// How long to decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Length {
    /// Total length in tokens, prompt included (transformers' `max_length`).
    Total(usize),
    /// New tokens after the prompt (`max_new_tokens`).
    New(usize),
}

impl Length {
    /// The most new tokens after a prompt of `prompt` tokens, within a
    /// context of `limit` positions.
    pub fn new_tokens(self, prompt: usize, limit: usize) -> usize {
        match self {
            Length::Total(total) => total.min(limit).saturating_sub(prompt),
            Length::New(n) => n.min(limit.saturating_sub(prompt)),
        }
    }
}

/// One generated sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// The prompt's ids followed by the new ones (without anything after `</s>`).
    pub ids: Vec<u32>,
    /// How many of `ids` are new.
    pub new_tokens: usize,
    /// Whether it ended with `</s>`.
    pub stopped: bool,
}

/// The seed of sample `index` of a prompt decoded with `seed`.
pub fn sample_seed(seed: u64, index: usize) -> u64 {
    seed.wrapping_add((index as u64).wrapping_mul(tp06_model::rng::GAMMA))
}

/// Decodes `samples` continuations of `prompt`. Sample `i` draws from its own
/// generator seeded with [`sample_seed`]`(seed, i)`, so a run is reproducible
/// and sample `i` does not depend on how many are asked for.
pub fn generate<B: Gpt2Ops>(
    model: &Gpt2<B>,
    prompt: &[u32],
    processing: &Processing,
    length: Length,
    eos: Option<u32>,
    samples: usize,
    seed: u64,
) -> Vec<Generated> {
    let never = AtomicBool::new(false);
    generate_unless(model, prompt, processing, length, eos, samples, seed, &never).expect("never stopped")
}

/// [`generate`], given up between two tokens when `stop` is set (Ctrl-C,
/// SIGTERM): `None` then. On the 1 B model a token takes a fraction of a
/// second where a whole generation takes tens of seconds.
#[allow(clippy::too_many_arguments)]
pub fn generate_unless<B: Gpt2Ops>(
    model: &Gpt2<B>,
    prompt: &[u32],
    processing: &Processing,
    length: Length,
    eos: Option<u32>,
    samples: usize,
    seed: u64,
    stop: &AtomicBool,
) -> Option<Vec<Generated>> {
    let mut observe = |_: Step<'_>| if stop.load(Ordering::SeqCst) { Flow::Stop } else { Flow::Continue };
    if stop.load(Ordering::SeqCst) {
        return None;
    }
    generate_observed(model, prompt, processing, length, eos, samples, seed, &mut observe)
}

/// One token chosen for one row, as [`generate_observed`] shows it.
pub struct Step<'a> {
    /// The row (the sample of the prompt).
    pub row: usize,
    /// The model's logits for this position, before any processor.
    pub logits: &'a [f32],
    /// The row's ids before this token: the prompt's, then the new ones.
    pub seen: &'a [u32],
    /// The token chosen.
    pub token: u32,
}

/// What decoding does after a [`Step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Go on.
    Continue,
    /// This row is complete (a stop sequence): it gets no more tokens.
    EndRow,
    /// Give up the whole generation: [`generate_observed`] returns `None`.
    Stop,
}

/// The decoder itself: [`generate`] with `observe` shown each token of each
/// row as it is chosen (a server streams it; a stop flag ends it).
#[allow(clippy::too_many_arguments)]
pub fn generate_observed<B: Gpt2Ops>(
    model: &Gpt2<B>,
    prompt: &[u32],
    processing: &Processing,
    length: Length,
    eos: Option<u32>,
    samples: usize,
    seed: u64,
    observe: &mut dyn FnMut(Step<'_>) -> Flow,
) -> Option<Vec<Generated>> {
    let device = model.wte.weight.device();
    let new_max = length.new_tokens(prompt.len(), model.n_positions());
    let mut rngs: Vec<rand_chacha::ChaCha8Rng> =
        (0..samples).map(|i| rand_chacha::ChaCha8Rng::seed_from_u64(sample_seed(seed, i))).collect();
    let mut sequences: Vec<Vec<u32>> = vec![prompt.to_vec(); samples];
    let mut finished = vec![false; samples];
    let mut cache = KvCache::new(model.h.len());
    let mut input: Vec<u32> = prompt.iter().copied().cycle().take(prompt.len() * samples).collect();
    let mut width = prompt.len();
    for _ in 0..new_max {
        if finished.iter().all(|f| *f) || width == 0 {
            break;
        }
        tp06_artifact::fault::interrupt("token");
        let ids = Tensor::<B, 2, Int>::from_data(
            TensorData::new(input.iter().map(|&i| i as i64).collect::<Vec<_>>(), [samples, width]),
            &device,
        );
        let (last, vocab) = tp06_model::kernels::on_pool(|| {
            let logits = model.forward_cached(ids, &mut cache, &mut Pass::inference()); // [samples, width, vocab]
            let vocab = logits.dims()[2];
            let last = logits.slice(s![.., width - 1..width, ..]).reshape([samples * vocab]); // [samples · vocab]
            let last: Vec<f32> = last.into_data().convert::<f32>().into_vec().expect("f32 logits");
            (last, vocab)
        });
        let mut next = Vec::with_capacity(samples);
        for (row, raw) in last.chunks_exact(vocab).enumerate() {
            if finished[row] {
                next.push(eos.unwrap_or(0)); // padding for a finished row, never kept
                continue;
            }
            let token = processing.choose(raw, &sequences[row], &mut rngs[row]);
            match observe(Step { row, logits: raw, seen: &sequences[row], token }) {
                Flow::Stop => return None,
                Flow::EndRow => finished[row] = true,
                Flow::Continue => {}
            }
            sequences[row].push(token);
            if Some(token) == eos {
                finished[row] = true;
            }
            next.push(token);
        }
        input = next;
        width = 1;
    }
    let generated = sequences
        .into_iter()
        .map(|ids| {
            let stopped = eos.is_some() && ids.len() > prompt.len() && ids.last().copied() == eos;
            Generated { new_tokens: ids.len() - prompt.len(), ids, stopped }
        })
        .collect();
    Some(generated)
}
