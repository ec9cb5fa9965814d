//! Where an input comes from: a hub repository or a local path.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An input location, written `hf:OWNER/NAME[@REVISION]` for the Hugging Face hub
/// or as a plain local path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    /// A hub repository, at a revision (branch, tag or commit; `main` when absent).
    Hub {
        /// `OWNER/NAME`.
        repo: String,
        /// The revision after `@`, if any.
        revision: Option<String>,
    },
    /// A local file or directory.
    Local(PathBuf),
}

/// A source spec that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// The spec is empty.
    #[error("empty source; expected a local path or hf:OWNER/NAME[@REVISION]")]
    Empty,
    /// A `hf:` spec that is not `OWNER/NAME[@REVISION]`.
    #[error("invalid hub id `{spec}`: {reason}; expected hf:OWNER/NAME[@REVISION], e.g. hf:asi/gpt-fr-cased-small")]
    InvalidHubId { spec: String, reason: &'static str },
}

impl Source {
    /// Whether this source is on the hub.
    pub fn is_hub(&self) -> bool {
        matches!(self, Source::Hub { .. })
    }
}

fn valid_hub_part(part: &str) -> bool {
    let mut chars = part.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && part.len() <= 96
        && part.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !part.contains("--")
        && !part.contains("..")
        && !part.ends_with('.')
}

impl FromStr for Source {
    type Err = SourceError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        if spec.trim().is_empty() {
            return Err(SourceError::Empty);
        }
        let Some(rest) = spec.strip_prefix("hf:") else {
            return Ok(Source::Local(PathBuf::from(spec)));
        };
        let invalid = |reason| SourceError::InvalidHubId { spec: spec.to_string(), reason };
        let (repo, revision) = match rest.split_once('@') {
            Some((repo, revision)) => {
                if revision.is_empty() || revision.chars().any(|c| c.is_whitespace() || c == '@') {
                    return Err(invalid("the revision after `@` is empty or malformed"));
                }
                (repo, Some(revision.to_string()))
            }
            None => (rest, None),
        };
        let Some((owner, name)) = repo.split_once('/') else {
            return Err(invalid("missing `/` between owner and name"));
        };
        if !valid_hub_part(owner) || !valid_hub_part(name) {
            return Err(invalid("owner and name may use letters, digits, `-`, `_` and `.`"));
        }
        Ok(Source::Hub { repo: repo.to_string(), revision })
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Hub { repo, revision: Some(rev) } => write!(f, "hf:{repo}@{rev}"),
            Source::Hub { repo, revision: None } => write!(f, "hf:{repo}"),
            Source::Local(path) => write!(f, "{}", path.display()),
        }
    }
}

impl Serialize for Source {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Source {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spec = String::deserialize(deserializer)?;
        spec.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hub_ids_with_and_without_revision() {
        assert_eq!(
            "hf:asi/gpt-fr-cased-small".parse::<Source>().unwrap(),
            Source::Hub { repo: "asi/gpt-fr-cased-small".into(), revision: None }
        );
        assert_eq!(
            "hf:chris-lmd/pokepedia-fr@refs/convert/parquet".parse::<Source>().unwrap(),
            Source::Hub { repo: "chris-lmd/pokepedia-fr".into(), revision: Some("refs/convert/parquet".into()) }
        );
    }

    #[test]
    fn anything_else_is_a_local_path() {
        for spec in ["../shared/data/articles.parquet", "data/demo", "/abs/x.jsonl", "asi/gpt"] {
            assert_eq!(spec.parse::<Source>().unwrap(), Source::Local(spec.into()));
        }
    }

    #[test]
    fn rejects_malformed_hub_ids() {
        for spec in ["hf:", "hf:noslash", "hf:a/b@", "hf:/name", "hf:own er/x", "hf:a/b/c", "hf:a/b@x y"] {
            let err = spec.parse::<Source>().unwrap_err();
            assert!(err.to_string().contains("hf:OWNER/NAME"), "{spec}: {err}");
        }
        assert_eq!("  ".parse::<Source>().unwrap_err(), SourceError::Empty);
    }

    #[test]
    fn display_round_trips_through_serde() {
        for spec in ["hf:asi/gpt-fr-cased-base@main", "hf:a/b", "some/path.parquet"] {
            let source: Source = spec.parse().unwrap();
            assert_eq!(source.to_string(), spec);
            let json = serde_json::to_string(&source).unwrap();
            assert_eq!(serde_json::from_str::<Source>(&json).unwrap(), source);
        }
    }
}
