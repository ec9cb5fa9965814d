//! Stage names and the run directory layout.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One pipeline stage, in pipeline order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Reads the corpus and the names, filters and splits the articles.
    Data,
    /// Builds the tokenizer and adds the names to its vocabulary.
    Vocab,
    /// Loads the base model, resizes and initialises the embeddings, plans freezing.
    Model,
    /// Fine-tunes the model.
    Train,
    /// Generates text with the fine-tuned model.
    Sample,
}

impl Stage {
    /// Every stage, in pipeline order.
    pub const ALL: [Stage; 5] = [Stage::Data, Stage::Vocab, Stage::Model, Stage::Train, Stage::Sample];

    /// The stage's name, as used for its directory and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Data => "data",
            Stage::Vocab => "vocab",
            Stage::Model => "model",
            Stage::Train => "train",
            Stage::Sample => "sample",
        }
    }

    /// The command that (re)runs this stage, for error hints.
    pub fn rerun_hint(self, run_dir: &Path) -> String {
        format!("cargo xtask {} --run-dir {}", self.name(), run_dir.display())
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A stage name that is not one of [`Stage::ALL`].
#[derive(Debug, thiserror::Error)]
#[error("unknown stage `{0}`; expected one of data, vocab, model, train, sample")]
pub struct UnknownStage(pub String);

impl FromStr for Stage {
    type Err = UnknownStage;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Stage::ALL.into_iter().find(|stage| stage.name() == s).ok_or_else(|| UnknownStage(s.to_string()))
    }
}

/// The root of one pipeline run: `RUN_DIR/<stage>/…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// A run directory rooted at `root` (created lazily by the stages).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `RUN_DIR/<stage>/`.
    pub fn stage_dir(&self, stage: Stage) -> PathBuf {
        self.root.join(stage.name())
    }

    /// `RUN_DIR/<stage>/<file>`.
    pub fn file(&self, stage: Stage, file: &str) -> PathBuf {
        self.stage_dir(stage).join(file)
    }

    /// `RUN_DIR/<stage>/manifest.json`.
    pub fn manifest_path(&self, stage: Stage) -> PathBuf {
        self.file(stage, "manifest.json")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_names_round_trip_in_order() {
        let names: Vec<_> = Stage::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(names, ["data", "vocab", "model", "train", "sample"]);
        for stage in Stage::ALL {
            assert_eq!(stage.name().parse::<Stage>().unwrap(), stage);
        }
        assert!(Stage::Data < Stage::Sample);
        let err = "trian".parse::<Stage>().unwrap_err();
        assert!(err.to_string().contains("trian"));
    }

    #[test]
    fn run_dir_layout() {
        let run = RunDir::new("/tmp/run");
        assert_eq!(run.manifest_path(Stage::Vocab), Path::new("/tmp/run/vocab/manifest.json"));
        assert_eq!(run.file(Stage::Data, "train.parquet"), Path::new("/tmp/run/data/train.parquet"));
    }
}
