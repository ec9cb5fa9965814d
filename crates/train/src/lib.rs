//! The train stage: the course's fine-tuning (its "Technique 2"), step for step
//! as HF `Trainer` runs it, resumable, observable, exported.
//!
//! Inputs: the data stage (articles), the vocab stage (tokenizer), the model
//! stage (initialised model and freeze plan). Outputs in `RUN_DIR/train/`:
//! `tokens.json` (the token cache), `metrics.jsonl`, `loss.svg`, `export/` (the
//! final model as an HF directory), `best/` (the best validation step's model,
//! when there is a validation split), `checkpoints/`, `manifest.json`; with
//! `train.lr = "find"`, the range test's `lr_find.json` and `lr_find.svg`.

pub mod backprop;
pub mod chart;
pub mod checkpoint;
mod config;
pub mod examples;
pub mod learned;
pub mod lr_find;
pub mod metrics;
pub mod optim;
mod stage;
mod train_loop;
pub mod trainer;

use std::path::PathBuf;

pub use checkpoint::{CHECKPOINT_VERSION, Checkpoint, LoopState};
pub use config::{Config, LearningRate, Packing};
pub use stage::{LR_FIND_DIR, TrainStats, find_lr, held_out, outputs, run};
pub use train_loop::{Evaluation, KeepBest, Loop, Validation, steps_per_epoch, train_loop};
pub use trainer::{Trainer, TrainerSettings};

/// `" (or `COMMAND`)"`, or nothing without a command.
fn or_command(command: &Option<String>) -> String {
    command.as_ref().map(|c| format!(" (or `{c}`)")).unwrap_or_default()
}

/// Everything that can go wrong in the train stage.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A setting's value does not fit (the model, the data).
    #[error(transparent)]
    Setting(#[from] tp06_artifact::SettingError),
    /// No example to train on.
    #[error("no training example: the articles are empty or shorter than one block (train.packing)")]
    NoExamples,
    /// A step whose micro-batches hold no example.
    #[error("step {step}: no training example to step on; check the data stage's output")]
    EmptyStep { step: u64 },
    /// The loss became NaN or infinite.
    #[error(
        "the training loss became {loss} at step {step} (learning rate {lr:e}); training stopped, {checkpoint}; lower train.lr or check the data"
    )]
    NonFinite { step: u64, loss: f64, lr: f64, checkpoint: String },
    /// Ctrl-C: the run was checkpointed and stopped.
    #[error(
        "interrupted at step {step}: checkpoint saved in `{path}`; run the same command again{} to continue",
        or_command(resume)
    )]
    Interrupted {
        step: u64,
        path: PathBuf,
        /// The command that resumes it, when the run directory is known.
        resume: Option<String>,
    },
    /// `--resume` without a checkpoint of this run.
    #[error(
        "--resume: no checkpoint of this run in `{dir}` (the configuration or inputs changed, or training never started); drop --resume to train from the start"
    )]
    NothingToResume { dir: PathBuf },
    /// `--resume` when the last checkpoint was made with other settings or inputs.
    #[error(
        "--resume: the last checkpoint, `{dir}` (step {step}), was made otherwise: {differences}; run with its settings to continue it, or drop --resume to train from the start"
    )]
    ResumeMismatch { dir: PathBuf, step: u64, differences: String },
    /// A checkpoint or metrics file is unreadable.
    #[error("`{path}`: {reason}")]
    Checkpoint { path: PathBuf, reason: String },
    /// `tp06 lr-find` was asked to stop (Ctrl-C, SIGTERM) before it finished.
    #[error(
        "interrupted: the learning-rate range test stopped before it finished and wrote nothing; run `{rerun}` to do it again"
    )]
    RangeTestStopped { rerun: String },
    /// The learning-rate range test found no rate.
    #[error("train.lr = \"find\": {reason}")]
    RangeTest { reason: String },
    /// The loss plot could not be drawn.
    #[error("cannot draw the loss plot: {0}")]
    Plot(#[from] chart::ChartError),
    /// Reading or writing the model failed.
    #[error(transparent)]
    Model(#[from] tp06_model::ModelError),
    /// Reading the tokenizer failed.
    #[error(transparent)]
    Vocab(#[from] tp06_vocab::VocabError),
    /// Reading the articles failed.
    #[error(transparent)]
    Data(#[from] tp06_data::DataError),
    /// A manifest or artifact failed.
    #[error(transparent)]
    Manifest(#[from] tp06_artifact::ManifestError),
    /// Reading or writing a file failed.
    #[error(transparent)]
    Fs(#[from] tp06_artifact::fs::FsError),
    /// Asked to stop (Ctrl-C, SIGTERM) before training started (nothing to resume).
    #[error("{0}")]
    Stopped(#[from] tp06_artifact::Interrupted),
}
