//! The data stage: read the corpus and the names, keep the Pokémon articles,
//! hold out a validation split.
//!
//! Inputs: `data.articles` (columns `title`, `content`) and `data.names` (column
//! `name`), each a hub dataset `hf:OWNER/NAME[@REV]` or a local file.
//! Outputs in `RUN_DIR/data/`: `train.parquet`, `valid.parquet` (when
//! `valid_fraction > 0`), `names.parquet`, `manifest.json`.
//!
//! This crate never links Burn.

mod filter;
mod read;
mod sources;
mod stats;

use std::path::PathBuf;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use tp06_artifact::hub::HubError;
use tp06_artifact::{Begin, InputRecord, ManifestError, Source, Stage, StageContext, StageReport, StageWriter};

pub use filter::{FilterMode, NameMatcher};
pub use read::{Article, read_articles, read_articles_artifact, read_names, write_articles, write_names};
pub use stats::{DataStats, LengthStats};

/// Configuration of the data stage (`[data]` in a preset).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The articles: a hub dataset (`hf:chris-lmd/pokepedia-fr`) or a local
    /// `.parquet`/`.jsonl`/`.csv` file (or a directory of parquet files) with
    /// string columns `title` and `content`.
    pub articles: Source,
    /// The names: a hub dataset (`hf:chris-lmd/pokemon-names-fr`) or a local
    /// `.parquet`/`.jsonl`/`.csv` file with a string column `name`, or a `.txt`
    /// file with one name per line.
    pub names: Source,
    /// The split read from hub datasets (`train` in the course).
    pub split: String,
    /// How titles are matched to names: `exact` (the course: `title.lower()` in
    /// the lowercased names) or `normalized` (also Unicode NFC and trimming).
    pub filter: FilterMode,
    /// Fraction of the kept articles held out for validation, in `[0, 0.5]`
    /// (`0`: no validation split, as in the course).
    pub valid_fraction: f64,
    /// Seed of the validation split.
    pub seed: u64,
}

impl Config {
    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), DataError> {
        if !(0.0..=0.5).contains(&self.valid_fraction) || self.valid_fraction.is_nan() {
            return Err(DataError::Config {
                field: "data.valid_fraction",
                reason: format!("{} is out of range; use a value in [0, 0.5]", self.valid_fraction),
            });
        }
        if self.split.trim().is_empty() {
            return Err(DataError::Config {
                field: "data.split",
                reason: "empty split name; the course uses \"train\"".into(),
            });
        }
        Ok(())
    }
}

/// Everything that can go wrong in the data stage.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A configuration value is out of range.
    #[error("{field}: {reason}")]
    Config { field: &'static str, reason: String },
    /// A file cannot be opened.
    #[error("{field}: cannot open `{path}`: {source}; check the path (--set {field}=PATH)")]
    Open {
        field: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The extension is not one of the supported formats.
    #[error(
        "{field}: `{path}` is not a supported table; use .parquet, .jsonl, .csv (or .txt for names), or a directory of .parquet files"
    )]
    UnsupportedFormat { field: &'static str, path: PathBuf },
    /// The file cannot be parsed.
    #[error("{field}: cannot read `{path}`: {reason}; is it a complete, uncorrupted file?")]
    Unreadable { field: &'static str, path: PathBuf, reason: String },
    /// A required column is absent.
    #[error("{field}: `{path}` has no column `{column}` (columns: {}); the file needs string columns {}", available.join(", "), expected_columns(field))]
    MissingColumn { field: &'static str, path: PathBuf, column: String, available: Vec<String> },
    /// A required column is not of string type.
    #[error("{field}: column `{column}` of `{path}` has type {found}, expected strings")]
    WrongType { field: &'static str, path: PathBuf, column: String, found: String },
    /// A required column holds nulls.
    #[error(
        "{field}: column `{column}` of `{path}` has {count} null value(s), the first at row {row}; every row needs a value"
    )]
    NullValue { field: &'static str, path: PathBuf, column: String, row: usize, count: usize },
    /// A line of a text format is bad.
    #[error("{field}: `{path}` line {line}: {reason}")]
    BadLine { field: &'static str, path: PathBuf, line: usize, reason: String },
    /// The table has no rows.
    #[error("{field}: `{path}` holds no {what}")]
    Empty { field: &'static str, what: &'static str, path: String },
    /// No article title matched a name.
    #[error("no article was kept: none of the {total} titles equals one of the {names} names ({hint})")]
    NothingKept { total: usize, names: usize, hint: String },
    /// A hub source could not be fetched.
    #[error("{field}: {source}; to work offline, point it at a local copy: --set {field}=PATH")]
    Hub {
        field: &'static str,
        #[source]
        source: HubError,
    },
    /// A hub dataset holds no parquet file for the split.
    #[error(
        "{field}: `{repo}` has no parquet file for split `{split}` (files: {files}); set data.split or --set {field}=PATH"
    )]
    NoParquet { field: &'static str, repo: String, split: String, files: String },
    /// An output could not be written.
    #[error("cannot write `{path}`: {reason}")]
    Write { path: PathBuf, reason: String },
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

fn expected_columns(field: &str) -> &'static str {
    match field {
        "data.names" => "`name`",
        _ => "`title` and `content`",
    }
}

/// The data stage's outputs, for the stages downstream.
pub mod outputs {
    /// Training articles.
    pub const TRAIN: &str = "train.parquet";
    /// Validation articles (only when a split is held out).
    pub const VALID: &str = "valid.parquet";
    /// The names, as used by the filter.
    pub const NAMES: &str = "names.parquet";
}

/// Runs the data stage into `run`, unless it is up to date (or `force`).
pub fn run(ctx: &StageContext, config: &Config) -> Result<StageReport, DataError> {
    let (run, hub, force) = (ctx.run, ctx.hub, ctx.force);
    config.validate()?;
    let article_files = sources::resolve(&config.articles, "data.articles", &config.split, hub)?;
    let name_files = sources::resolve(&config.names, "data.names", &config.split, hub)?;
    let mut inputs = Vec::new();
    for (role, files) in [("articles", &article_files), ("names", &name_files)] {
        for file in files {
            inputs.push(InputRecord::file(role, file)?);
        }
    }
    let config_json = serde_json::to_value(config).expect("the data config serialises");
    let writer = match StageWriter::begin_unless_up_to_date(run, Stage::Data, config_json, inputs, force)? {
        Begin::UpToDate(manifest) => {
            let stats: DataStats = serde_json::from_value(manifest.stats.clone()).unwrap_or_default();
            return Ok(StageReport { summary: stats.summary(), manifest, up_to_date: true });
        }
        Begin::Run(writer) => writer,
    };

    let articles = read::read_articles(&article_files)?;
    let names = read::read_names(&name_files)?;
    let selection = filter::select(&articles, &names, config.filter)?;
    let (train, valid) = split(selection.kept.clone(), config.valid_fraction, config.seed);

    let mut outputs = vec![outputs::TRAIN.to_string(), outputs::NAMES.to_string()];
    read::write_articles(&writer.path(outputs::TRAIN), &train)?;
    read::write_names(&writer.path(outputs::NAMES), &selection.names)?;
    let valid_path = writer.path(outputs::VALID);
    if valid.is_empty() {
        tp06_artifact::fs::remove_file_if_exists(&valid_path)?;
    } else {
        read::write_articles(&valid_path, &valid)?;
        outputs.push(outputs::VALID.to_string());
    }

    let stats = DataStats::compute(&articles, &selection, train.len(), valid.len());
    let environment = serde_json::json!({ "seed": config.seed });
    ctx.check_stop(Stage::Data)?;
    let manifest = writer.finish(&outputs, environment, serde_json::to_value(&stats).expect("stats serialise"))?;
    Ok(StageReport { summary: stats.summary(), manifest, up_to_date: false })
}

/// Splits the kept articles into (train, valid): a seeded shuffle picks
/// `round(n × fraction)` validation articles (at least one when the fraction is
/// positive and there are two or more articles); both parts keep corpus order.
pub fn split(articles: Vec<Article>, fraction: f64, seed: u64) -> (Vec<Article>, Vec<Article>) {
    let n = articles.len();
    if fraction <= 0.0 || n < 2 {
        return (articles, Vec::new());
    }
    let n_valid = ((n as f64 * fraction).round() as usize).clamp(1, n - 1);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    let mut is_valid = vec![false; n];
    for &i in &order[..n_valid] {
        is_valid[i] = true;
    }
    let (mut train, mut valid) = (Vec::with_capacity(n - n_valid), Vec::with_capacity(n_valid));
    for (article, valid_one) in articles.into_iter().zip(is_valid) {
        if valid_one { valid.push(article) } else { train.push(article) }
    }
    (train, valid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn articles(n: usize) -> Vec<Article> {
        (0..n).map(|i| Article { title: format!("T{i}"), content: format!("c{i}") }).collect()
    }

    #[test]
    fn split_is_deterministic_disjoint_and_sized() {
        let (train, valid) = split(articles(100), 0.1, 42);
        assert_eq!((train.len(), valid.len()), (90, 10));
        let (train2, valid2) = split(articles(100), 0.1, 42);
        assert_eq!((train.clone(), valid.clone()), (train2, valid2));
        let (_, valid3) = split(articles(100), 0.1, 43);
        assert_ne!(valid, valid3, "another seed gives another split");
        let mut all: Vec<_> = train.iter().chain(&valid).map(|a| a.title.clone()).collect();
        all.sort();
        let mut expected: Vec<_> = articles(100).into_iter().map(|a| a.title).collect();
        expected.sort();
        assert_eq!(all, expected);
        // Corpus order is kept inside each part.
        let idx = |a: &Article| a.title[1..].parse::<usize>().unwrap();
        assert!(valid.windows(2).all(|w| idx(&w[0]) < idx(&w[1])));
    }

    #[test]
    fn split_edge_cases() {
        assert_eq!(split(articles(10), 0.0, 1).1.len(), 0);
        assert_eq!(split(articles(1), 0.5, 1).1.len(), 0);
        assert_eq!(split(articles(3), 0.01, 1).1.len(), 1, "a positive fraction holds out at least one");
    }

    #[test]
    fn config_rejects_out_of_range_fraction() {
        let mut config = Config {
            articles: "a.parquet".parse().unwrap(),
            names: "n.txt".parse().unwrap(),
            split: "train".into(),
            filter: FilterMode::Exact,
            valid_fraction: 0.7,
            seed: 0,
        };
        assert!(config.validate().unwrap_err().to_string().contains("data.valid_fraction"));
        config.valid_fraction = 0.1;
        config.validate().unwrap();
    }
}
