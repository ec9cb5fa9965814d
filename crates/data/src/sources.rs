//! From a [`Source`] to the local files to read.

use std::path::PathBuf;

use tp06_artifact::Source;
use tp06_artifact::hub::{Hub, HubRepo, RepoKind};

use crate::DataError;
use crate::read::local_files;

/// The revision where the hub keeps its automatic parquet conversion of a dataset.
const PARQUET_CONVERSION: &str = "refs/convert/parquet";

/// Resolves `source` into files: a local path as is (a directory as its parquet
/// files), a hub dataset as its parquet files for `split` — from the revision
/// asked for, else from the hub's auto-converted `refs/convert/parquet` branch.
pub fn resolve(source: &Source, field: &'static str, split: &str, hub: &Hub) -> Result<Vec<PathBuf>, DataError> {
    let (id, revision) = match source {
        Source::Local(path) => return local_files(path, field),
        Source::Hub { repo, revision } => (repo.as_str(), revision.as_deref()),
    };
    let hub_error = |source| DataError::Hub { field, source };
    let repo = HubRepo::new(RepoKind::Dataset, id, revision);
    let files = hub.list_files(&repo).map_err(hub_error)?;
    let mut chosen = split_parquet_files(&files, split);
    let mut from = repo.clone();
    if chosen.is_empty() && revision.is_none() {
        let converted = HubRepo::new(RepoKind::Dataset, id, Some(PARQUET_CONVERSION));
        tracing::info!("{repo} has no parquet file for split `{split}`; trying {converted}");
        if let Ok(conv_files) = hub.list_files(&converted) {
            chosen = split_parquet_files(&conv_files, split);
            from = converted;
        }
    }
    if chosen.is_empty() {
        return Err(DataError::NoParquet {
            field,
            repo: repo.to_string(),
            split: split.to_string(),
            files: files.iter().take(10).cloned().collect::<Vec<_>>().join(", "),
        });
    }
    chosen.iter().map(|file| hub.get(&from, file).map_err(hub_error)).collect()
}

/// The parquet files of `split` among a repository's files, in name order.
///
/// Recognises the hub layouts `data/train-00000-of-00001.parquet`,
/// `default/train/0000.parquet`, `train.parquet`; a repository with a single
/// parquet file and no split in its name is taken whole.
pub fn split_parquet_files(files: &[String], split: &str) -> Vec<String> {
    let parquet: Vec<&String> = files.iter().filter(|f| f.to_ascii_lowercase().ends_with(".parquet")).collect();
    let mut chosen: Vec<String> = parquet
        .iter()
        .filter(|file| {
            let mut parts = file.split('/').collect::<Vec<_>>();
            let name = parts.pop().unwrap_or_default();
            let stem = name.trim_end_matches(".parquet");
            parts.contains(&split)
                || stem == split
                || stem.starts_with(&format!("{split}-"))
                || stem.starts_with(&format!("{split}_"))
        })
        .map(|f| f.to_string())
        .collect();
    if chosen.is_empty() && parquet.len() == 1 {
        chosen.push(parquet[0].clone());
    }
    chosen.sort();
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn picks_the_split_in_every_hub_layout() {
        let repo = files(&[
            "README.md",
            "data/train-00001-of-00002.parquet",
            "data/train-00000-of-00002.parquet",
            "data/test-00000-of-00001.parquet",
        ]);
        assert_eq!(
            split_parquet_files(&repo, "train"),
            ["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"]
        );
        let converted = files(&["default/train/0000.parquet", "default/validation/0000.parquet"]);
        assert_eq!(split_parquet_files(&converted, "train"), ["default/train/0000.parquet"]);
        assert_eq!(split_parquet_files(&files(&["train.parquet"]), "train"), ["train.parquet"]);
        assert_eq!(split_parquet_files(&files(&["names.parquet"]), "train"), ["names.parquet"]);
        assert!(split_parquet_files(&files(&["a.jsonl", "README.md"]), "train").is_empty());
        assert!(split_parquet_files(&files(&["data/trainer.parquet", "x.parquet"]), "train").is_empty());
    }
}
