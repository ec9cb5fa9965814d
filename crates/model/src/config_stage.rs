//! Configuration of the model stage (`[model]` in a preset).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tp06_artifact::{SettingError, Source};

/// Which rows of the token embedding `wte` (and so of the tied LM head) train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WteFreeze {
    /// All rows frozen, the added names included (the course: they never learn).
    All,
    /// Pretrained rows frozen, the added rows train.
    PretrainedRows,
    /// Every row trains.
    None,
}

/// How many of the lower transformer blocks are frozen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockCount {
    /// `n_layer / 2` (the course).
    Half,
    /// Exactly this many (at most `n_layer`: the model stage refuses more).
    Count(usize),
}

impl BlockCount {
    /// The number of blocks for a model of `n_layer` blocks.
    pub fn resolve(self, n_layer: usize) -> usize {
        match self {
            BlockCount::Half => n_layer / 2,
            BlockCount::Count(n) => n.min(n_layer),
        }
    }
}

impl Serialize for BlockCount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            BlockCount::Half => s.serialize_str("half"),
            BlockCount::Count(n) => s.serialize_u64(*n as u64),
        }
    }
}

impl<'de> Deserialize<'de> for BlockCount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Number(u64),
        }
        match Raw::deserialize(d)? {
            Raw::Text(t) if t == "half" => Ok(BlockCount::Half),
            Raw::Number(n) => Ok(BlockCount::Count(n as usize)),
            Raw::Text(other) => {
                Err(serde::de::Error::custom(format!("`{other}` is not a block count; use \"half\" or a number")))
            }
        }
    }
}

/// What is frozen during training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreezeConfig {
    /// Token embeddings (tied to the LM head): `all`, `pretrained-rows` or `none`.
    pub wte: WteFreeze,
    /// Freeze the position embeddings `wpe`.
    pub wpe: bool,
    /// Lower blocks frozen: `"half"` (course) or a number.
    pub lower_blocks: BlockCount,
    /// Freeze the final layer norm `ln_f`.
    pub ln_f: bool,
}

/// How the embedding rows of the added names are initialised.
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

/// The model stage's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    /// The base model: `hf:OWNER/NAME[@REV]` or a local directory in hub layout
    /// (`config.json`, weights, tokenizer files).
    pub base: Source,
    /// Initialise the weights from scratch (seeded, N(0, initializer_range²))
    /// instead of reading them; the directory then needs only `config.json` and
    /// the tokenizer. Used by the offline demo.
    pub from_scratch: bool,
    /// Seed of the from-scratch initialisation and of the added rows' noise.
    pub seed: u64,
    /// How the embedding rows of the names the vocab stage added are
    /// initialised: `reference`, `mean`, `subword-mean` or `random`.
    pub init: InitStrategy,
    /// For `reference`: candidate words, the first one that encodes to a single
    /// token (at text start, with the base tokenizer) is used (course:
    /// `Pokémon`, `Pokemon`, `animal`).
    pub reference_words: Vec<String>,
    /// For `reference`: standard deviation of the Gaussian noise added to each
    /// new row (course: 0.01; 0 for none).
    pub noise_std: f64,
    /// The freeze plan.
    pub freeze: FreezeConfig,
    /// LoRA adapters (`[model.lora]`); none when absent. Under LoRA the base
    /// weights are frozen whatever `freeze` says of the blocks, `wpe` and
    /// `ln_f`; `freeze.wte` still says whether the added names' rows train.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<crate::lora::LoraConfig>,
}

impl StageConfig {
    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), SettingError> {
        if !(self.noise_std >= 0.0 && self.noise_std.is_finite()) {
            return Err(SettingError::new("model.noise_std", format!("{} must be a finite value ≥ 0", self.noise_std)));
        }
        if self.init == InitStrategy::Reference && self.reference_words.is_empty() {
            return Err(SettingError::new(
                "model.reference_words",
                "empty; the `reference` init needs at least one word",
            ));
        }
        if let Some(lora) = &self.lora {
            lora.validate(usize::MAX)?;
        }
        if self.lora.is_some() && self.freeze.wte == WteFreeze::None {
            return Err(SettingError::new(
                "model.freeze.wte",
                "\"none\" trains every row of wte, which a LoRA adapter cannot carry; \
                 use \"pretrained-rows\" (the added names train) or \"all\"",
            ));
        }
        Ok(())
    }
}
