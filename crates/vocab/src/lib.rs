//! The vocab stage: the base tokenizer, how the names tokenise, and the names
//! added to the vocabulary (the course's "Technique 1").
//!
//! Inputs: the data stage (its names and training articles) and the tokenizer
//! files of `model.base`. Outputs in `RUN_DIR/vocab/`: `tokenizer.json`,
//! `tokenizer_config.json` and `special_tokens_map.json` (the files transformers
//! loads), `added_names.json` (every added token with its name, form and the
//! pieces it replaced), `vocab_info.json` (ids the later stages need), `manifest.json`.
//!
//! This crate never links Burn.

mod config;
pub mod extend;
pub mod gguf;
mod stats;
mod tokenizer;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tp06_artifact::hub::HubError;
use tp06_artifact::{
    Begin, InputRecord, ManifestError, Source, Stage, StageContext, StageReport, StageWriter, UpstreamCheck,
};

pub use config::{AddNames, Config};
pub use extend::{AddedName, Form, byte_level, collateral, round_trip_failures};
pub use stats::{NameStat, VocabStats, reference_word};
pub use tokenizer::{Specials, Tok, files, tokenizer_files};

/// Everything that can go wrong in the vocab stage.
#[derive(Debug, thiserror::Error)]
pub enum VocabError {
    /// A tokenizer file is unreadable or inconsistent.
    #[error("tokenizer `{path}`: {reason}")]
    Tokenizer { path: PathBuf, reason: String },
    /// The model directory has no tokenizer at all.
    #[error(
        "`{dir}` has no tokenizer: it needs tokenizer.json, or vocab.json + merges.txt (+ special_tokens_map.json) as on the hub"
    )]
    NoTokenizer { dir: PathBuf },
    /// The extension did not make every name one token.
    #[error("the extended tokenizer does not round-trip {count} name sentence(s), e.g. {example}")]
    RoundTrip { count: usize, example: String },
    /// The base model could not be fetched.
    #[error("model.base: {source}{}", source.offline_hint("--set model.base=DIR"))]
    Hub {
        #[source]
        source: HubError,
    },
    /// Reading the data stage's artifacts failed.
    #[error(transparent)]
    Data(#[from] tp06_data::DataError),
    /// The manifest or an artifact file failed.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// Reading or writing a file failed.
    #[error(transparent)]
    Fs(#[from] tp06_artifact::fs::FsError),
    /// Asked to stop (Ctrl-C, SIGTERM) before it finished.
    #[error("{0}")]
    Interrupted(#[from] tp06_artifact::Interrupted),
}

/// The vocab stage's outputs.
pub mod outputs {
    /// The tokenizer with the names added.
    pub const TOKENIZER: &str = "tokenizer.json";
    /// transformers' tokenizer options.
    pub const TOKENIZER_CONFIG: &str = "tokenizer_config.json";
    /// transformers' special tokens.
    pub const SPECIAL_TOKENS_MAP: &str = "special_tokens_map.json";
    /// The added tokens ([`crate::AddedName`]).
    pub const ADDED_TOKENS: &str = "added_names.json";
    /// The ids later stages need ([`crate::VocabInfo`]).
    pub const VOCAB_INFO: &str = "vocab_info.json";
    /// The files of an HF model directory that come from the tokenizer.
    pub const HF_FILES: [&str; 3] = [TOKENIZER, TOKENIZER_CONFIG, SPECIAL_TOKENS_MAP];
}

/// Ids and sizes the model and train stages need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VocabInfo {
    /// Rows of the base model's embedding (the base tokenizer's size).
    pub base_vocab_size: usize,
    /// Rows needed after the extension.
    pub vocab_size: usize,
    /// `<s>`.
    pub bos_id: Option<u32>,
    /// `</s>`.
    pub eos_id: Option<u32>,
    /// The id padding uses (the course: pad = eos).
    pub pad_id: u32,
}

impl VocabInfo {
    /// Reads `vocab.json` of the vocab stage.
    pub fn read(path: &Path) -> Result<Self, VocabError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| VocabError::Tokenizer { path: path.to_path_buf(), reason: format!("cannot read ({e})") })?;
        serde_json::from_str(&text)
            .map_err(|e| VocabError::Tokenizer { path: path.to_path_buf(), reason: e.to_string() })
    }
}

/// Reads `added_tokens.json` of the vocab stage.
pub fn read_added(path: &Path) -> Result<Vec<AddedName>, VocabError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| VocabError::Tokenizer { path: path.to_path_buf(), reason: format!("cannot read ({e})") })?;
    serde_json::from_str(&text).map_err(|e| VocabError::Tokenizer { path: path.to_path_buf(), reason: e.to_string() })
}

/// The tokenizer files the vocab stage reads from a model directory.
pub const TOKENIZER_FILES: &[&[&str]] = &[
    &[files::TOKENIZER_JSON],
    &[files::VOCAB_JSON],
    &[files::MERGES_TXT],
    &[files::SPECIAL_TOKENS_MAP],
    &[files::TOKENIZER_CONFIG],
    &["config.json"],
];

/// Runs the vocab stage into `run`.
/// `base` is the base model (`model.base`), whose tokenizer the names extend.
pub fn run(ctx: &StageContext, config: &Config, base: &Source) -> Result<StageReport, VocabError> {
    let (run, hub, force) = (ctx.run, ctx.hub, ctx.force);
    let data = UpstreamCheck::require(run, Stage::Data)?;
    let dir = tp06_artifact::hub::model_dir(hub, base, TOKENIZER_FILES).map_err(|source| VocabError::Hub { source })?;
    let mut inputs = vec![data.input.clone()];
    for file in tokenizer_files(&dir) {
        inputs.push(InputRecord::file("tokenizer", &file)?);
    }
    let config_json = serde_json::to_value(config).expect("the vocab config serialises");
    let writer = match StageWriter::begin_unless_up_to_date(run, Stage::Vocab, config_json, inputs, force)? {
        Begin::UpToDate(manifest) => {
            let stats: VocabStats = serde_json::from_value(manifest.stats.clone()).unwrap_or_default();
            return Ok(StageReport { summary: stats.summary(), manifest, up_to_date: true });
        }
        Begin::Run(writer) => writer,
    };

    let base_tok = Tok::from_dir(&dir)?;
    let names = tp06_data::read_names(&[data.manifest.output_path(run, tp06_data::outputs::NAMES)])?;
    let train = tp06_data::read_articles_artifact(&data.manifest.output_path(run, tp06_data::outputs::TRAIN))?;

    let (tok, added) = match config.add_names {
        AddNames::None => (base_tok.clone(), Vec::new()),
        AddNames::Course => extend::course(&base_tok, &names)?,
        AddNames::Recommended => extend::recommended(&base_tok, &names)?,
    };
    let failures = match config.add_names {
        AddNames::Recommended => round_trip_failures(&tok, &names)?,
        _ => Vec::new(),
    };
    if let Some(example) = failures.first() {
        return Err(VocabError::RoundTrip { count: failures.len(), example: example.clone() });
    }
    let texts: Vec<&str> = train.iter().map(|a| a.content.as_str()).collect();
    let changed = match config.add_names {
        AddNames::Recommended => collateral(&base_tok, &tok, &texts, &names)?,
        _ => Default::default(),
    };
    if !changed.is_empty() {
        tracing::warn!(
            "the extension changed the tokens of {} other word(s), e.g. {}",
            changed.len(),
            changed.keys().take(5).cloned().collect::<Vec<_>>().join(", ")
        );
    }

    let eos_id = tok.special_id(tok.specials.eos.as_ref());
    let info = VocabInfo {
        base_vocab_size: base_tok.vocab_size(),
        vocab_size: tok.vocab_size(),
        bos_id: tok.special_id(tok.specials.bos.as_ref()),
        eos_id,
        // The course sets `tokenizer.pad_token = tokenizer.eos_token`.
        pad_id: eos_id.or_else(|| tok.special_id(tok.specials.pad.as_ref())).unwrap_or(0),
    };
    let stats = VocabStats::compute(&base_tok, &tok, &names, &added, &texts, changed.len(), &info)?;

    ctx.check_stop(Stage::Vocab)?;
    tp06_artifact::fs::write_atomic(&writer.path(outputs::TOKENIZER), tok.to_json()?.as_bytes())?;
    let eos = tok.specials.eos.clone();
    let special_map = serde_json::json!({
        "bos_token": tok.specials.bos, "eos_token": eos, "unk_token": tok.specials.unk,
        "pad_token": eos, "mask_token": tok.specials.mask,
    });
    tp06_artifact::fs::write_json_atomic(&writer.path(outputs::SPECIAL_TOKENS_MAP), &special_map)?;
    // `PreTrainedTokenizerFast` makes transformers load tokenizer.json as it is
    // (a `GPT2Tokenizer` would rebuild the pre-tokenizer and drop the extension).
    let tokenizer_config = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": false, "add_prefix_space": false, "clean_up_tokenization_spaces": false,
        "bos_token": tok.specials.bos, "eos_token": eos, "unk_token": tok.specials.unk,
        "pad_token": eos, "mask_token": tok.specials.mask, "model_max_length": 1_000_000_000_000_000_000u64,
    });
    tp06_artifact::fs::write_json_atomic(&writer.path(outputs::TOKENIZER_CONFIG), &tokenizer_config)?;
    tp06_artifact::fs::write_json_atomic(&writer.path(outputs::ADDED_TOKENS), &added)?;
    tp06_artifact::fs::write_json_atomic(&writer.path(outputs::VOCAB_INFO), &info)?;

    let outputs: Vec<String> = [
        outputs::TOKENIZER,
        outputs::TOKENIZER_CONFIG,
        outputs::SPECIAL_TOKENS_MAP,
        outputs::ADDED_TOKENS,
        outputs::VOCAB_INFO,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let environment = serde_json::json!({ "tokenizer_source": dir.display().to_string() });
    let manifest = writer.finish(&outputs, environment, serde_json::to_value(&stats).expect("stats serialise"))?;
    Ok(StageReport { summary: stats.summary(), manifest, up_to_date: false })
}
