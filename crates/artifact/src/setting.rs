//! The error of a setting whose value does not fit.

/// A setting whose value does not fit: its key as the user wrote it
/// (`train.lr`, or a flag such as `--top-p`) and what is wrong with it, with
/// the way out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct SettingError {
    /// The setting's key.
    pub key: String,
    /// What is wrong with its value, and what would do.
    pub problem: String,
}

impl SettingError {
    /// The error of setting `key`.
    pub fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self { key: key.into(), problem: problem.into() }
    }

    /// The same error with the key renamed by `rename` (a setting's flag on a
    /// command line, say).
    pub fn renamed(self, rename: impl FnOnce(&str) -> String) -> Self {
        Self { key: rename(&self.key), problem: self.problem }
    }
}
