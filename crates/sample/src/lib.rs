//! The sample stage: generation with transformers' sampling semantics through
//! the KV cache, exact decoding of added names, the course's prompts on the
//! fine-tuned and base models, and the exploration notebook's demos (smart
//! initialisation, temperature / top-k / top-p).

mod config;
pub mod explore;
pub mod generate;
pub mod processors;
mod sequence;
pub mod stage;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

pub use config::{AdHoc, Config, Overrides, Prompt};
pub use generate::{Flow, Generated, Length, Step, generate, generate_observed, generate_unless, sample_seed};
pub use processors::Processing;
pub use sequence::{Sequence, decode_step};
pub use stage::{SampleRecord, SampleStats, outputs, run};

/// The first 40 characters of `text`, marked when cut.
fn abridged(text: &str) -> String {
    match text.char_indices().nth(40) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// Everything that can go wrong when sampling.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    /// A setting's value does not fit.
    #[error(transparent)]
    Setting(#[from] tp06_artifact::SettingError),
    /// The tokenizer is larger than the model's embedding.
    #[error(
        "the tokenizer in `{dir}` has {tokens} tokens but the model only {rows} embedding rows: they do not belong together"
    )]
    TokenizerMismatch { dir: PathBuf, tokens: usize, rows: usize },
    /// The smart-initialisation demo found no single-token reference word.
    #[error(
        "none of the reference words ({words}) is a single token in this tokenizer; pass one that is with --reference"
    )]
    NoReferenceWord { words: String },
    /// The smart-initialisation demo's name did not become one token.
    #[error("{name:?} did not become a single token")]
    NotOneToken { name: String },
    /// A prompt is too long for the model.
    #[error("the prompt {:?} is {tokens} tokens but the model's context is {context}; shorten it", abridged(prompt))]
    PromptTooLong { prompt: String, tokens: usize, context: usize },
    /// A prompt that encodes to nothing.
    #[error("the prompt {0:?} is empty")]
    EmptyPrompt(String),
    /// Loading the model failed.
    #[error(transparent)]
    Model(#[from] tp06_model::ModelError),
    /// The tokenizer failed.
    #[error(transparent)]
    Vocab(#[from] tp06_vocab::VocabError),
    /// A manifest or artifact failed.
    #[error(transparent)]
    Manifest(#[from] tp06_artifact::ManifestError),
    /// Reading or writing a file failed.
    #[error(transparent)]
    Fs(#[from] tp06_artifact::fs::FsError),
    /// Asked to stop (Ctrl-C, SIGTERM) before it finished.
    #[error("{0}")]
    Interrupted(#[from] tp06_artifact::Interrupted),
    /// Work outside a stage (a demo) stopped, as asked, before it finished.
    #[error("interrupted: {what} stopped before it finished and wrote nothing")]
    Stopped { what: String },
}

/// What a model directory needs to generate: `config.json`, weights, the
/// tokenizer's files.
pub const NEEDS: tp06_model::Needs = tp06_model::Needs { weights: true, tokenizer: true };

/// A model with its tokenizer, ready to generate.
pub struct Generator<B: burn::prelude::Backend> {
    /// The model.
    pub model: tp06_model::Gpt2<B>,
    /// Its tokenizer.
    pub tok: tp06_vocab::Tok,
    /// `</s>`.
    pub eos: Option<u32>,
    /// Where it was loaded from.
    pub dir: PathBuf,
}

impl<B: tp06_model::Gpt2Ops> Generator<B> {
    /// Loads an HF model directory (config, weights, tokenizer files).
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self, SampleError> {
        Self::load_watched(dir, device, tp06_artifact::Watch::none())
    }

    /// [`load`](Self::load), the weights' reading shown by `watch` and
    /// stopped between two tensors when that says so.
    pub fn load_watched(dir: &Path, device: &B::Device, watch: tp06_artifact::Watch<'_>) -> Result<Self, SampleError> {
        Self::load_in(dir, tp06_model::Precision::F32, device, watch)
    }

    /// [`load_watched`](Self::load_watched) with the weights in `precision`,
    /// each converted as it is read.
    pub fn load_in(
        dir: &Path,
        precision: tp06_model::Precision,
        device: &B::Device,
        watch: tp06_artifact::Watch<'_>,
    ) -> Result<Self, SampleError> {
        let model_dir = tp06_model::ModelDir::open(dir)?;
        let rows = model_dir.config().vocab_size;
        let tok = tp06_vocab::Tok::from_dir(model_dir.tokenizer_dir())?;
        if tok.vocab_size() > rows {
            return Err(SampleError::TokenizerMismatch { dir: dir.to_path_buf(), tokens: tok.vocab_size(), rows });
        }
        let (model, _) = model_dir.load_in::<B>(precision, device, watch)?;
        let model = model.for_decoding();
        let eos = tok.special_id(tok.specials.eos.as_ref());
        Ok(Self { model, tok, eos, dir: dir.to_path_buf() })
    }

    /// Loads the HF model directory `dir` with the peft LoRA adapter
    /// `adapter` on it (ours or one peft wrote): the adapter's tokenizer when
    /// it has one, the base's `wte` grown to it (its added rows are the
    /// adapter's trainable tokens), and the adapter merged into the weights,
    /// which are then converted to `precision`.
    pub fn load_with_adapter(
        dir: &Path,
        adapter: &Path,
        precision: tp06_model::Precision,
        device: &B::Device,
    ) -> Result<Self, SampleError> {
        let base = tp06_model::ModelDir::open(dir)?;
        let tok = tp06_vocab::Tok::from_dir(base.tokenizer_dir_with(Some(adapter)))?;
        let model = base.load_with_adapter::<B>(adapter, tok.vocab_size(), device)?;
        let model = tp06_model::lora::merge(model).with_precision(precision).for_decoding();
        if tok.vocab_size() > model.vocab_size() {
            let rows = model.vocab_size();
            return Err(SampleError::TokenizerMismatch { dir: adapter.to_path_buf(), tokens: tok.vocab_size(), rows });
        }
        let eos = tok.special_id(tok.specials.eos.as_ref());
        Ok(Self { model, tok, eos, dir: adapter.to_path_buf() })
    }

    /// The ids of `prompt`, checked against the context length.
    pub fn encode_prompt(&self, prompt: &str) -> Result<Vec<u32>, SampleError> {
        let ids = self.tok.encode(prompt)?;
        if ids.is_empty() {
            return Err(SampleError::EmptyPrompt(prompt.to_string()));
        }
        if ids.len() >= self.model.n_positions() {
            return Err(SampleError::PromptTooLong {
                prompt: prompt.to_string(),
                tokens: ids.len(),
                context: self.model.n_positions(),
            });
        }
        Ok(ids)
    }

    /// Generates `samples` texts for `prompt`: the prompt and its continuation,
    /// decoded exactly, special tokens skipped.
    pub fn complete(
        &self,
        prompt: &str,
        processing: &Processing,
        length: Length,
        samples: usize,
        seed: u64,
    ) -> Result<Vec<(String, Generated)>, SampleError> {
        let never = AtomicBool::new(false);
        Ok(self.complete_unless(prompt, processing, length, samples, seed, &never)?.expect("never stopped"))
    }

    /// [`complete`](Self::complete), given up between two tokens when `stop`
    /// is set: `Ok(None)` then.
    pub fn complete_unless(
        &self,
        prompt: &str,
        processing: &Processing,
        length: Length,
        samples: usize,
        seed: u64,
        stop: &AtomicBool,
    ) -> Result<Option<Vec<(String, Generated)>>, SampleError> {
        let ids = self.encode_prompt(prompt)?;
        let Some(generated) = generate_unless(&self.model, &ids, processing, length, self.eos, samples, seed, stop)
        else {
            return Ok(None);
        };
        let texts: Result<Vec<_>, SampleError> =
            generated.into_iter().map(|g| Ok((self.tok.decode(&g.ids, true)?, g))).collect();
        texts.map(Some)
    }
}
