//! The artifact contract shared by every pipeline stage.
//!
//! Stages talk to each other only through files under `RUN_DIR/<stage>/`. A stage
//! is *done* exactly when its `manifest.json` exists: the manifest is written last,
//! atomically, and deleted first when the stage starts again, so a stage killed
//! half-way never looks complete.
//!
//! This crate owns:
//! - [`Stage`] and [`RunDir`]: the names and places of the stages and their files;
//! - [`Manifest`]: what a finished stage records (schema version, resolved config,
//!   inputs with content hashes, outputs, timings, headline numbers);
//! - [`Source`]: where an input comes from (`hf:OWNER/NAME[@REV]` or a local path)
//!   and [`hub`], which resolves hub sources through the standard HF cache;
//! - [`StageContext`]: what every stage's `run` takes besides its settings;
//! - [`Progress`]: the seam through which libraries report long work to the binary;
//! - [`fs`]: atomic writes and content hashes;
//! - [`fault`]: the fault injection the reliability tests use;
//! - [`environment`]: what every manifest records about where it ran.

mod context;
pub mod fault;
pub mod fs;
pub mod hub;
mod manifest;
mod progress;
mod setting;
pub mod shards;
mod source;
mod stage;

pub use context::{Interrupted, Resume, StageContext};
pub use manifest::{
    Begin, Fingerprint, InputRecord, Manifest, ManifestError, OutputRecord, SCHEMA_VERSION, StageReport, StageWriter,
    UpstreamCheck,
};
pub use setting::SettingError;
/// `1234567` → `1,234,567` with `separator` between groups of three digits.
pub fn group_digits(n: usize, separator: char) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(separator);
        }
        out.push(c);
    }
    out
}

/// The library versions, platform and stage-specific facts a manifest records.
pub fn environment(stage_specific: serde_json::Value) -> serde_json::Value {
    let mut env = serde_json::json!({
        "tp06": env!("CARGO_PKG_VERSION"),
        "libraries": {
            "burn": env!("TP06_VERSION_BURN"),
            "tokenizers": env!("TP06_VERSION_TOKENIZERS"),
            "polars": env!("TP06_VERSION_POLARS"),
            "hf-hub": env!("TP06_VERSION_HF_HUB"),
        },
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
    });
    if let (Some(env), serde_json::Value::Object(extra)) = (env.as_object_mut(), stage_specific) {
        env.extend(extra);
    }
    env
}

pub use progress::{NoProgress, Progress, ProgressTask, Watch};
pub use source::{Source, SourceError};
pub use stage::{RunDir, Stage, UnknownStage};

/// The version of this tool, recorded in every manifest.
pub const TOOL_VERSION: &str = env!("CARGO_PKG_VERSION");
