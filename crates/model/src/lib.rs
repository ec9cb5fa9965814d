//! GPT-2 in Burn, equal to HF transformers' `GPT2LMHeadModel`, with HF weights in
//! and out; the freeze plan; and the model stage.
//!
//! The model code is written once, generic over the Burn backend; the concrete
//! backends are picked in [`backend`] by cargo features.

pub mod backend;
mod cache;
mod config;
mod config_stage;
mod convert;
mod decode;
mod freeze;
pub mod gguf;
mod gpt2;
mod init;
pub mod kernels;
mod layout;
pub mod lora;
mod model_dir;
pub mod names;
mod pass;
mod pickle;
mod precision;
pub mod q8;
pub mod rng;
mod stage;
mod weights;

use std::path::PathBuf;

pub use config::{Activation, Gpt2Config, HfConfig};
pub use config_stage::{BlockCount, FreezeConfig, InitStrategy, StageConfig, WteFreeze};
pub use freeze::{FreezePlan, GroupReport, ParamReport, parameter_names, thousands};
pub use gpt2::{Attention, Block, Conv1D, Embedding, Gpt2, KvCache, LayerNorm, Mlp};
pub use init::{RowInit, ScratchInit, init_from_scratch, init_from_scratch_in, resize_wte};
pub use kernels::{AdamWStep, Dropout, Gpt2Ops, TrainBackend};
pub use layout::{Documents, Layout};
pub use model_dir::{ADAPTER_DIR, CONFIG, ModelDir, Needs};
pub use names::group_of;
pub use pass::{Kernels, Pass};
pub use precision::Precision;
pub use stage::{ModelStats, load_base, load_stage_model, outputs, run};
pub use weights::{
    LoadReport, NamedParams, PYTORCH_BIN, PYTORCH_BIN_INDEX, SAFETENSORS, SAFETENSORS_INDEX, WEIGHT_FILES, load,
    load_watched, read_param, read_tensor, read_tensors, save_safetensors, weight_file, write_tensors,
};

/// Everything that can go wrong with a model directory or its files.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// `config.json` is missing, malformed, or describes what is not implemented.
    #[error("{origin}: {reason}")]
    Config { origin: String, reason: String },
    /// A file could not be read.
    #[error("{action} `{path}`: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The directory has no weight file.
    #[error(
        "`{dir}` has no weights (no {}, {} or a sharded checkpoint's index); point model.base at a model directory in hub layout",
        weights::SAFETENSORS,
        weights::PYTORCH_BIN
    )]
    NoWeights { dir: PathBuf },
    /// The weight file is unreadable or disagrees with `config.json`.
    #[error("`{path}`: {reason}")]
    Weights { path: PathBuf, reason: String },
    /// A parameter is absent from the weight file.
    #[error(
        "`{path}` has no tensor for parameter `{name}` (with or without the `transformer.` prefix); is it a GPT-2 checkpoint?"
    )]
    MissingTensor { path: PathBuf, name: String },
    /// Writing an artifact failed.
    #[error(transparent)]
    Fs(#[from] tp06_artifact::fs::FsError),
    /// An upstream stage or this stage's manifest failed.
    #[error(transparent)]
    Manifest(#[from] tp06_artifact::ManifestError),
    /// The vocab stage's artifacts could not be read.
    #[error(transparent)]
    Vocab(#[from] tp06_vocab::VocabError),
    /// The base model could not be fetched.
    #[error("model.base: {source}{}", source.offline_hint("--set model.base=DIR"))]
    Hub {
        #[source]
        source: tp06_artifact::hub::HubError,
    },
    /// A setting's value does not fit (the model, its tokenizer).
    #[error(transparent)]
    Setting(#[from] tp06_artifact::SettingError),
    /// The tokenizer is larger than the model's embedding.
    #[error(
        "the tokenizer has {tokens} tokens but the model only {rows} embedding rows (`{config}`): they do not belong together"
    )]
    TokenizerMismatch { tokens: usize, rows: usize, config: PathBuf },
    /// An artifact of the model stage is unreadable.
    #[error("`{path}`: {reason}; re-run the model stage")]
    Artifact { path: PathBuf, reason: String },
    /// An adapter directory is unreadable or does not fit the model.
    #[error("`{path}`: {reason}")]
    Adapter { path: PathBuf, reason: String },
    /// Asked to stop (Ctrl-C, SIGTERM) before it finished.
    #[error("{0}")]
    Interrupted(#[from] tp06_artifact::Interrupted),
    /// Reading or writing a weight file stopped between two tensors, as asked
    /// (a stage turns it into [`ModelError::Interrupted`]).
    #[error("stopped before `{path}` was read or written whole")]
    Stopped { path: PathBuf },
}
