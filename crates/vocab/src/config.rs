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

/// The vocab stage's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// How names are added to the vocabulary: `none`, `course` or `recommended`.
    /// (How their embedding rows are initialised is the model stage's: `[model]`.)
    pub add_names: AddNames,
}
