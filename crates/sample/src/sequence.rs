//! A sequence decoded beside others, one token per step: what a server
//! batches. Its prompt is prefilled alone; then each step decodes its last
//! token together with the other sequences' in one
//! [`Gpt2::decode_rows`] ([`decode_step`]). It chooses its tokens as
//! [`crate::generate_observed`] chooses a row's: its own processors, its
//! own generator. Its logits are bit for bit those of decoding it alone, so
//! its text is the one it gets alone.

use burn::prelude::*;
use burn::tensor::s;
use rand::SeedableRng;
use tp06_model::{Gpt2, Gpt2Ops, KvCache, Pass};

use crate::generate::{Flow, Length, Step};
use crate::processors::Processing;

/// One sequence: its ids so far, its cache, the logits of its next token.
#[derive(Debug, Clone)]
pub struct Sequence<B: Backend> {
    ids: Vec<u32>,
    prompt: usize,
    new_max: usize,
    cache: KvCache<B>,
    logits: Vec<f32>,
    rng: rand_chacha::ChaCha8Rng,
    processing: Processing,
    eos: Option<u32>,
    done: bool,
}

impl<B: Gpt2Ops> Sequence<B> {
    /// `prompt` prefilled alone, its first token's logits ready: decoded
    /// with `processing`, `length` long, ending at `eos`, drawing from the
    /// generator seeded with `seed` ([`crate::sample_seed`] of the request's
    /// seed and the sample's index, as [`crate::generate`] seeds its rows).
    pub fn start(
        model: &Gpt2<B>,
        prompt: &[u32],
        processing: Processing,
        length: Length,
        eos: Option<u32>,
        seed: u64,
    ) -> Self {
        let new_max = length.new_tokens(prompt.len(), model.n_positions());
        let mut cache = KvCache::new(model.h.len());
        let done = prompt.is_empty() || new_max == 0;
        let logits = if done {
            Vec::new()
        } else {
            let device = model.wte.weight.device();
            let ids = prompt.iter().map(|&i| i64::from(i)).collect::<Vec<_>>();
            let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [1, prompt.len()]), &device);
            tp06_model::kernels::on_pool(|| {
                let logits = model.forward_cached(ids, &mut cache, &mut Pass::inference()); // [1, t, vocab]
                let (t, vocab) = (prompt.len(), logits.dims()[2]);
                let last = logits.slice(s![.., t - 1..t, ..]).reshape([vocab]);
                last.into_data().convert::<f32>().into_vec().expect("f32 logits")
            })
        };
        Self {
            ids: prompt.to_vec(),
            prompt: prompt.len(),
            new_max,
            cache,
            logits,
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed),
            processing,
            eos,
            done,
        }
    }

    /// The same prefilled prompt with the generator seeded with `seed`
    /// instead: another sample of it, with no second prefill.
    pub fn fork(&self, seed: u64) -> Self {
        Self { rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed), ..self.clone() }
    }

    /// Whether it takes no more tokens: its length reached, `eos` or a
    /// [`Flow::EndRow`] chosen.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The prompt's ids followed by the new ones.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// How many of [`Self::ids`] are new.
    pub fn new_tokens(&self) -> usize {
        self.ids.len() - self.prompt
    }

    /// Chooses the next token from the current logits and shows it to
    /// `observe`; on [`Flow::Stop`] nothing is kept. Call it only while the
    /// sequence is not done, once after [`Self::start`] and once after each
    /// [`decode_step`].
    pub fn choose(&mut self, observe: &mut dyn FnMut(Step<'_>) -> Flow) -> Flow {
        assert!(!self.done, "a finished sequence chooses no token");
        let token = self.processing.choose(&self.logits, &self.ids, &mut self.rng);
        let flow = observe(Step { row: 0, logits: &self.logits, seen: &self.ids, token });
        match flow {
            Flow::Stop => return flow,
            Flow::EndRow => self.done = true,
            Flow::Continue => {}
        }
        self.ids.push(token);
        if Some(token) == self.eos || self.new_tokens() >= self.new_max {
            self.done = true;
        }
        flow
    }
}

/// One decoding step of every sequence of `sequences` that is not done: its
/// last token through the model, at most [`Gpt2::rows_per_step`] sequences
/// in one [`Gpt2::decode_rows`], its next token's logits ready for
/// [`Sequence::choose`]. Returns how many sequences it decoded.
pub fn decode_step<B: Gpt2Ops>(model: &Gpt2<B>, sequences: &mut [&mut Sequence<B>]) -> usize {
    let mut active: Vec<&mut Sequence<B>> = sequences.iter_mut().filter(|s| !s.done).map(|s| &mut **s).collect();
    let vocab = model.vocab_size();
    for group in active.chunks_mut(model.rows_per_step().max(1)) {
        let ids: Vec<u32> = group.iter().map(|s| *s.ids.last().expect("a started sequence has ids")).collect();
        let mut caches: Vec<&mut KvCache<B>> = group.iter_mut().map(|s| &mut s.cache).collect();
        let logits: Vec<f32> = tp06_model::kernels::on_pool(|| {
            let logits = model.decode_rows(&ids, &mut caches, &mut Pass::inference());
            logits.into_data().convert::<f32>().into_vec().expect("f32 logits")
        });
        for (s, row) in group.iter_mut().zip(logits.chunks_exact(vocab)) {
            s.logits = row.to_vec();
        }
    }
    active.len()
}
