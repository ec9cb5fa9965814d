//! Configuration of the vocab stage (`[vocab]` in a preset).

use serde::{Deserialize, Serialize};

/// How the Pokémon names are added to the tokenizer's vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AddNames {
    /// Add nothing: the tokenizer stays as it is.
    None,
    /// The course: every name that encodes to more than one token at text start
    /// becomes a plain added token with default options.
    Course,
    /// Every name that is split becomes one token both at text start and after a
    /// space, never matches inside a longer word, and decodes exactly.
    Recommended,
}

/// How the embedding rows of the added tokens are initialised (by the model stage).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InitStrategy {
    /// The course: the embedding of the first of `reference_words` that is a
    /// single token, plus N(0, noise_std²) noise.
    Reference,
    /// The mean of all pretrained rows (Hewitt, 2021).
    Mean,
    /// The mean of the embeddings of the tokens the name used to be split into.
    SubwordMean,
    /// N(0, initializer_range²), as for a fresh model.
    Random,
}

/// The vocab stage's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// How names are added to the vocabulary: `none`, `course` or `recommended`.
    pub add_names: AddNames,
    /// How the new embedding rows are initialised: `reference`, `mean`,
    /// `subword-mean` or `random`.
    pub init: InitStrategy,
    /// For `reference`: candidate words, the first one that encodes to a single
    /// token (at text start) is used (course: `Pokémon`, `Pokemon`, `animal`).
    pub reference_words: Vec<String>,
    /// For `reference`: standard deviation of the Gaussian noise added to each
    /// new row (course: 0.01; 0 for none).
    pub noise_std: f64,
    /// Seed of the initialisation noise.
    pub seed: u64,
}

impl Config {
    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.noise_std >= 0.0 && self.noise_std.is_finite()) {
            return Err(format!("vocab.noise_std: {} must be a finite value ≥ 0", self.noise_std));
        }
        if self.init == InitStrategy::Reference && self.reference_words.is_empty() {
            return Err("vocab.reference_words: empty; the `reference` init needs at least one word".into());
        }
        Ok(())
    }
}
