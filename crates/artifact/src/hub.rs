//! Hugging Face hub access through the standard cache.
//!
//! Honours the usual environment: `HF_HOME` (cache at `$HF_HOME/hub`),
//! `HF_ENDPOINT`, `HF_TOKEN` (else the token file `huggingface-cli login` writes),
//! and `HF_HUB_OFFLINE=1` (only the cache is used). Files already in the cache are
//! never downloaded again.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::{Api, ApiBuilder, ApiError};
use hf_hub::{Cache, Repo, RepoType};

/// What kind of hub repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoKind {
    /// A model repository (`hf:asi/gpt-fr-cased-small`).
    Model,
    /// A dataset repository (`hf:chris-lmd/pokepedia-fr`).
    Dataset,
}

/// One repository at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubRepo {
    /// Model or dataset.
    pub kind: RepoKind,
    /// `OWNER/NAME`.
    pub id: String,
    /// Branch, tag or commit (`main` by default).
    pub revision: String,
}

impl HubRepo {
    /// A repository at `revision`, or `main`.
    pub fn new(kind: RepoKind, id: &str, revision: Option<&str>) -> Self {
        Self { kind, id: id.to_string(), revision: revision.unwrap_or("main").to_string() }
    }

    fn repo(&self) -> Repo {
        let kind = match self.kind {
            RepoKind::Model => RepoType::Model,
            RepoKind::Dataset => RepoType::Dataset,
        };
        Repo::with_revision(self.id.clone(), kind, self.revision.clone())
    }
}

impl std::fmt::Display for HubRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            RepoKind::Model => "model",
            RepoKind::Dataset => "dataset",
        };
        write!(f, "{kind} hf:{}@{}", self.id, self.revision)
    }
}

/// Why a hub file could not be had.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// No connection to the hub (and the file is not in the cache).
    #[error("the Hugging Face hub is unreachable for {repo} ({detail}) and `{file}` is not in the cache at {cache}")]
    Unreachable { repo: String, file: String, detail: String, cache: PathBuf },
    /// Offline mode is on and the file is not in the cache.
    #[error("HF_HUB_OFFLINE is set and `{file}` of {repo} is not in the cache at {cache}")]
    NotCached { repo: String, file: String, cache: PathBuf },
    /// The repository or file does not exist (or is private).
    #[error("{repo} has no file `{file}` (HTTP 404: wrong id, revision or file name, or a private repo)")]
    NotFound { repo: String, file: String },
    /// The hub refused the request.
    #[error(
        "the hub refused access to {repo} (HTTP {status}); for a gated or private repo set HF_TOKEN or run `huggingface-cli login`"
    )]
    Denied { repo: String, status: u16 },
    /// Any other failure.
    #[error("cannot fetch `{file}` of {repo}: {detail}")]
    Other { repo: String, file: String, detail: String },
    /// A local model path that does not exist.
    #[error("`{path}` does not exist; {HUB_LAYOUT}")]
    Missing { path: PathBuf },
    /// A local model path that is a file.
    #[error("`{path}` is a file, not a directory; {HUB_LAYOUT}")]
    NotADirectory { path: PathBuf },
}

/// What a local model path should be.
const HUB_LAYOUT: &str = "point it at a model directory in hub layout (config.json, vocab.json, merges.txt, model.safetensors or pytorch_model.bin, or a sharded checkpoint's index and shards)";

impl HubError {
    /// `"; to work offline, point it at a local model directory: {setting}"`
    /// when the hub could not be consulted (unreachable, or offline mode
    /// without the file cached): the failures a local copy works around.
    pub fn offline_hint(&self, setting: &str) -> String {
        match self {
            HubError::Unreachable { .. } | HubError::NotCached { .. } => {
                format!("; to work offline, point it at a local model directory: {setting}")
            }
            _ => String::new(),
        }
    }
}

/// A hub client configured from the environment.
#[derive(Debug, Clone)]
pub struct Hub {
    cache: Cache,
    endpoint: Option<String>,
    token: Option<String>,
    offline: bool,
    progress: bool,
}

fn env_flag(name: &str) -> bool {
    std::env::var(name)
        .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        .unwrap_or(false)
}

impl Hub {
    /// A client from `HF_HOME`, `HF_ENDPOINT`, `HF_TOKEN` and `HF_HUB_OFFLINE`.
    pub fn from_env() -> Self {
        let cache = Cache::from_env();
        let token = std::env::var("HF_TOKEN").ok().filter(|t| !t.trim().is_empty()).or_else(|| cache.token());
        Self {
            cache,
            endpoint: std::env::var("HF_ENDPOINT").ok().filter(|e| !e.is_empty()),
            token,
            offline: env_flag("HF_HUB_OFFLINE"),
            progress: false,
        }
    }

    /// Shows a progress bar for downloads.
    pub fn with_progress(mut self, progress: bool) -> Self {
        self.progress = progress;
        self
    }

    /// The cache directory (`$HF_HOME/hub` or `~/.cache/huggingface/hub`).
    pub fn cache_dir(&self) -> &Path {
        self.cache.path()
    }

    fn api(&self) -> Result<Api, ApiError> {
        let mut builder = ApiBuilder::from_cache(self.cache.clone())
            .with_progress(self.progress)
            .with_token(self.token.clone())
            .with_retries(2);
        if let Some(endpoint) = &self.endpoint {
            builder = builder.with_endpoint(endpoint.clone());
        }
        builder.build()
    }

    /// The cached snapshot directory of `repo`, if its revision was ever resolved.
    fn snapshot_dir(&self, repo: &HubRepo) -> Option<PathBuf> {
        let folder = self.cache.path().join(repo.repo().folder_name());
        let commit = std::fs::read_to_string(folder.join("refs").join(&repo.revision)).ok();
        // A commit hash used as the revision has no ref file: it is the snapshot name.
        let commit = commit.map(|c| c.trim().to_string()).unwrap_or_else(|| repo.revision.clone());
        let dir = folder.join("snapshots").join(commit);
        dir.is_dir().then_some(dir)
    }

    fn map_error(&self, repo: &HubRepo, file: &str, err: ApiError) -> HubError {
        let (repo_name, file_name) = (repo.to_string(), file.to_string());
        match err {
            ApiError::RequestError(boxed) => match *boxed {
                ureq::Error::Status(404, _) => HubError::NotFound { repo: repo_name, file: file_name },
                ureq::Error::Status(status @ (401 | 403), _) => HubError::Denied { repo: repo_name, status },
                ureq::Error::Status(status, _) => {
                    HubError::Other { repo: repo_name, file: file_name, detail: format!("HTTP {status}") }
                }
                ureq::Error::Transport(t) => HubError::Unreachable {
                    repo: repo_name,
                    file: file_name,
                    detail: t.to_string(),
                    cache: self.cache.path().clone(),
                },
            },
            other => HubError::Other { repo: repo_name, file: file_name, detail: other.to_string() },
        }
    }

    /// The files of `repo` (paths relative to its root).
    ///
    /// Online, asks the hub; offline (or when the hub is unreachable), lists the
    /// cached snapshot.
    pub fn list_files(&self, repo: &HubRepo) -> Result<Vec<String>, HubError> {
        let cached = || self.snapshot_dir(repo).map(|dir| list_dir_files(&dir));
        if self.offline {
            return cached().ok_or_else(|| HubError::NotCached {
                repo: repo.to_string(),
                file: "(file list)".into(),
                cache: self.cache.path().clone(),
            });
        }
        let online = self
            .api()
            .and_then(|api| api.repo(repo.repo()).info())
            .map(|info| info.siblings.into_iter().map(|s| s.rfilename).collect::<Vec<_>>());
        match online {
            Ok(files) => Ok(files),
            Err(err) => {
                let err = self.map_error(repo, "(file list)", err);
                match (&err, cached()) {
                    (HubError::Unreachable { .. }, Some(files)) => {
                        tracing::warn!("{err}; using the cached snapshot");
                        Ok(files)
                    }
                    _ => Err(err),
                }
            }
        }
    }

    /// A local path for `file` of `repo`, from the cache or downloaded into it.
    pub fn get(&self, repo: &HubRepo, file: &str) -> Result<PathBuf, HubError> {
        if let Some(path) = self.snapshot_dir(repo).map(|d| d.join(file)).filter(|p| p.is_file()) {
            return Ok(path);
        }
        if self.offline {
            return Err(HubError::NotCached {
                repo: repo.to_string(),
                file: file.to_string(),
                cache: self.cache.path().clone(),
            });
        }
        tracing::info!("downloading `{file}` of {repo}");
        self.api().and_then(|api| api.repo(repo.repo()).download(file)).map_err(|err| self.map_error(repo, file, err))
    }
}

/// A local directory holding a model's files: a local source as is, a hub
/// source as its cached snapshot after fetching the files of `wanted` it has.
///
/// `wanted` lists alternatives in order of preference inside each group, e.g.
/// `&[&["config.json"], &["model.safetensors", "pytorch_model.bin"]]` fetches
/// `config.json` and the first weight file the repository has.
pub fn model_dir(hub: &Hub, source: &crate::Source, wanted: &[&[&str]]) -> Result<PathBuf, HubError> {
    let (id, revision) = match source {
        crate::Source::Local(path) if path.is_dir() => return Ok(path.clone()),
        crate::Source::Local(path) if path.exists() => return Err(HubError::NotADirectory { path: path.clone() }),
        crate::Source::Local(path) => return Err(HubError::Missing { path: path.clone() }),
        crate::Source::Hub { repo, revision } => (repo.as_str(), revision.as_deref()),
    };
    let repo = HubRepo::new(RepoKind::Model, id, revision);
    let files = hub.list_files(&repo)?;
    let mut dir = None;
    for group in wanted {
        if let Some(file) = group.iter().find(|f| files.iter().any(|have| have == *f)) {
            let path = hub.get(&repo, file)?;
            if crate::shards::ShardIndex::is_index(file) {
                // A sharded checkpoint: every shard its index names.
                let index = crate::shards::ShardIndex::read(&path).map_err(|detail| HubError::Other {
                    repo: repo.to_string(),
                    file: file.to_string(),
                    detail,
                })?;
                for shard in index.files() {
                    hub.get(&repo, shard)?;
                }
            }
            dir = path.parent().map(Path::to_path_buf);
        }
    }
    dir.ok_or_else(|| HubError::NotFound {
        repo: repo.to_string(),
        file: wanted.iter().flat_map(|g| g.iter()).copied().collect::<Vec<_>>().join(", "),
    })
}

fn list_dir_files(dir: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(relative) = path.strip_prefix(dir) {
                files.push(relative.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_model_paths_say_what_is_wrong_and_only_hub_failures_suggest_a_local_copy() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, "").unwrap();
        let missing = model_dir(&Hub::from_env(), &crate::Source::Local(dir.path().join("absent")), &[]).unwrap_err();
        assert!(
            matches!(missing, HubError::Missing { .. })
                && missing.to_string().contains("does not exist; point it at a model directory in hub layout"),
            "{missing}"
        );
        let a_file = model_dir(&Hub::from_env(), &crate::Source::Local(file), &[]).unwrap_err();
        assert!(a_file.to_string().contains("is a file, not a directory"), "{a_file}");
        assert_eq!(
            model_dir(&Hub::from_env(), &crate::Source::Local(dir.path().to_path_buf()), &[]).unwrap(),
            dir.path()
        );
        for local in [&missing, &a_file] {
            assert_eq!(local.offline_hint("--set model.base=DIR"), "");
        }
        let offline = HubError::NotCached { repo: "asi/x".into(), file: "config.json".into(), cache: "/c".into() };
        assert_eq!(
            offline.offline_hint("--set model.base=DIR"),
            "; to work offline, point it at a local model directory: --set model.base=DIR"
        );
    }

    /// A hub client on a fake cache, pointed at a closed loopback port.
    fn hub_in(cache: &Path, offline: bool) -> Hub {
        Hub {
            cache: Cache::new(cache.to_path_buf()),
            endpoint: Some("http://127.0.0.1:9".into()),
            token: None,
            offline,
            progress: false,
        }
    }

    fn fake_snapshot(cache: &Path, folder: &str, revision: &str, files: &[&str]) {
        let repo = cache.join(folder);
        let reference = repo.join("refs").join(revision);
        std::fs::create_dir_all(reference.parent().unwrap()).unwrap();
        std::fs::write(reference, "abc123").unwrap();
        for file in files {
            let path = repo.join("snapshots/abc123").join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, file).unwrap();
        }
    }

    /// A sharded checkpoint's index brings its shards; a shard the cache
    /// lacks is named, offline.
    #[test]
    fn a_shard_index_fetches_every_shard_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let index =
            r#"{"weight_map": {"first.weight": "model-1.safetensors", "second.weight": "model-2.safetensors"}}"#;
        let files = ["config.json", "model.safetensors.index.json", "model-1.safetensors", "model-2.safetensors"];
        fake_snapshot(dir.path(), "models--asi--big", "main", &files);
        let snapshot = dir.path().join("models--asi--big/snapshots/abc123");
        std::fs::write(snapshot.join("model.safetensors.index.json"), index).unwrap();
        let hub = hub_in(dir.path(), true);
        let source = crate::Source::Hub { repo: "asi/big".into(), revision: None };
        let wanted: &[&[&str]] = &[&["config.json"], &["model.safetensors", "model.safetensors.index.json"]];
        assert_eq!(model_dir(&hub, &source, wanted).unwrap(), snapshot);

        std::fs::remove_file(snapshot.join("model-2.safetensors")).unwrap();
        let err = model_dir(&hub, &source, wanted).unwrap_err();
        assert!(matches!(&err, HubError::NotCached { file, .. } if file == "model-2.safetensors"), "{err}");
        std::fs::write(snapshot.join("model.safetensors.index.json"), "{}").unwrap();
        let err = model_dir(&hub, &source, wanted).unwrap_err().to_string();
        assert!(err.contains("model.safetensors.index.json") && err.contains("no `weight_map`"), "{err}");
    }

    #[test]
    fn cached_files_are_used_offline() {
        let dir = tempfile::tempdir().unwrap();
        fake_snapshot(dir.path(), "datasets--chris-lmd--pokepedia-fr", "main", &["data/train-0.parquet", "README.md"]);
        let hub = hub_in(dir.path(), true);
        let repo = HubRepo::new(RepoKind::Dataset, "chris-lmd/pokepedia-fr", None);
        assert_eq!(hub.list_files(&repo).unwrap(), ["README.md", "data/train-0.parquet"]);
        let path = hub.get(&repo, "data/train-0.parquet").unwrap();
        assert_eq!(std::fs::read_to_string(path).unwrap(), "data/train-0.parquet");
    }

    #[test]
    fn offline_without_cache_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub_in(dir.path(), true);
        let repo = HubRepo::new(RepoKind::Model, "asi/gpt-fr-cased-small", None);
        let err = hub.get(&repo, "config.json").unwrap_err();
        assert!(matches!(err, HubError::NotCached { .. }), "{err}");
        assert!(err.to_string().contains("HF_HUB_OFFLINE"));
    }

    #[test]
    fn unreachable_hub_is_reported_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub_in(dir.path(), false);
        let repo = HubRepo::new(RepoKind::Model, "asi/gpt-fr-cased-small", None);
        let err = hub.get(&repo, "config.json").unwrap_err();
        assert!(matches!(err, HubError::Unreachable { .. }), "{err}");
        assert!(err.to_string().contains("unreachable"), "{err}");
    }

    #[test]
    fn unreachable_hub_falls_back_to_cached_listing() {
        let dir = tempfile::tempdir().unwrap();
        fake_snapshot(dir.path(), "models--asi--gpt-fr-cased-small", "main", &["config.json"]);
        let hub = hub_in(dir.path(), false);
        let repo = HubRepo::new(RepoKind::Model, "asi/gpt-fr-cased-small", None);
        assert_eq!(hub.list_files(&repo).unwrap(), ["config.json"]);
        assert!(hub.get(&repo, "config.json").is_ok());
    }

    #[test]
    fn nested_revisions_resolve_like_the_hf_cache() {
        let dir = tempfile::tempdir().unwrap();
        fake_snapshot(
            dir.path(),
            "datasets--chris-lmd--pokepedia-fr",
            "refs/convert/parquet",
            &["default/train/0000.parquet"],
        );
        let hub = hub_in(dir.path(), true);
        let repo = HubRepo::new(RepoKind::Dataset, "chris-lmd/pokepedia-fr", Some("refs/convert/parquet"));
        assert_eq!(hub.list_files(&repo).unwrap(), ["default/train/0000.parquet"]);
    }
}
