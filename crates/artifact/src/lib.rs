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
//! - [`Progress`]: the seam through which libraries report long work to the binary;
//! - [`fs`]: atomic writes and content hashes.

pub mod fs;
pub mod hub;
mod manifest;
mod progress;
mod source;
mod stage;

pub use manifest::{
    Begin, Fingerprint, InputRecord, Manifest, ManifestError, OutputRecord, SCHEMA_VERSION, StageReport, StageWriter,
    UpstreamCheck,
};
pub use progress::{NoProgress, Progress, ProgressTask};
pub use source::{Source, SourceError};
pub use stage::{RunDir, Stage, UnknownStage};

/// The version of this tool, recorded in every manifest.
pub const TOOL_VERSION: &str = env!("CARGO_PKG_VERSION");
