//! `manifest.json`: the record, and the "done" marker, of a finished stage.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::fs::{self, FsError};
use crate::{RunDir, Stage, TOOL_VERSION};

/// The manifest schema this build writes and reads. Bump it whenever the layout
/// of a manifest or of any stage artifact changes incompatibly.
pub const SCHEMA_VERSION: u32 = 1;

/// What a finished stage records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`SCHEMA_VERSION`] of the writer.
    pub schema_version: u32,
    /// The stage that wrote this manifest.
    pub stage: Stage,
    /// The version of the tool that wrote it.
    pub tool_version: String,
    /// Hash of the schema version, stage, configuration and input hashes: two runs
    /// with the same fingerprint compute the same thing.
    pub fingerprint: Fingerprint,
    /// The stage's resolved configuration.
    pub config: Value,
    /// Every input, with its content hash.
    pub inputs: Vec<InputRecord>,
    /// Every output file, relative to the stage directory, with its content hash.
    pub outputs: Vec<OutputRecord>,
    /// Seconds since the Unix epoch when the stage started.
    pub started_unix: u64,
    /// Wall-clock seconds the stage took.
    pub seconds: f64,
    /// Where it ran: backend, threads, seed, library versions.
    pub environment: Value,
    /// The stage's headline numbers.
    pub stats: Value,
}

/// One input of a stage: a source file or an upstream stage's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputRecord {
    /// The input's role (`articles`, `names`, `base_model`, …) or, for an upstream
    /// stage, the stage's name.
    pub name: String,
    /// The upstream stage, when this input is another stage's manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
    /// Where the input was read from (a local path, or the resolved hub cache file).
    pub path: String,
    /// SHA-256 of its content; for an upstream stage, its
    /// [`Manifest::result_hash`] (fingerprint and outputs, not timings).
    pub sha256: String,
    /// Its size in bytes.
    pub bytes: u64,
}

impl InputRecord {
    /// Hashes a source file.
    pub fn file(name: &str, path: &Path) -> Result<Self, FsError> {
        let bytes = std::fs::metadata(path).map_err(|e| FsError::new("cannot read", path, e))?.len();
        Ok(Self {
            name: name.to_string(),
            stage: None,
            path: path.display().to_string(),
            sha256: fs::sha256_file(path)?,
            bytes,
        })
    }
}

/// One output file of a stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputRecord {
    /// Path relative to the stage directory, with `/` separators.
    pub path: String,
    /// SHA-256 of its content; for an upstream stage, its
    /// [`Manifest::result_hash`] (fingerprint and outputs, not timings).
    pub sha256: String,
    /// Its size in bytes.
    pub bytes: u64,
}

/// See [`Manifest::fingerprint`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fingerprint(pub String);

impl Fingerprint {
    /// The fingerprint of a stage run with `config` over `inputs`.
    pub fn compute(stage: Stage, config: &Value, inputs: &[InputRecord]) -> Self {
        let hashed: Vec<(&str, &str)> = inputs.iter().map(|i| (i.name.as_str(), i.sha256.as_str())).collect();
        let canonical = serde_json::json!({
            "schema_version": SCHEMA_VERSION,
            "stage": stage,
            "config": config,
            "inputs": hashed,
        });
        Self(fs::sha256_bytes(canonical.to_string().as_bytes()))
    }
}

/// Why a stage's manifest cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The stage has not finished (or never ran) in this run directory.
    #[error("stage `{stage}` has not run in `{run}` (no {stage}/manifest.json); run it first: {hint}")]
    Missing { stage: Stage, run: PathBuf, hint: String },
    /// The manifest is not valid JSON of the expected shape.
    #[error("`{path}` is not a valid manifest ({reason}); re-run the stage: {hint}")]
    Invalid { path: PathBuf, reason: String, hint: String },
    /// The manifest was written by an incompatible version of the tool.
    #[error("`{path}` has schema version {found}, this tool reads version {expected}; re-run the stage: {hint}")]
    SchemaMismatch { path: PathBuf, found: u32, expected: u32, hint: String },
    /// The manifest no longer describes what is on disk.
    #[error("stage `{stage}` is stale: {reason}; re-run it: {hint}")]
    Stale { stage: Stage, reason: String, hint: String },
    /// A file could not be read or written.
    #[error(transparent)]
    Fs(#[from] FsError),
}

impl Manifest {
    /// Reads `RUN_DIR/<stage>/manifest.json`, checking its schema version.
    pub fn load(run: &RunDir, stage: Stage) -> Result<Self, ManifestError> {
        let path = run.manifest_path(stage);
        let hint = stage.rerun_hint(run.root());
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ManifestError::Missing { stage, run: run.root().to_path_buf(), hint });
            }
            Err(e) => return Err(FsError::new("cannot read", &path, e).into()),
        };
        let raw: Value = serde_json::from_str(&text).map_err(|e| ManifestError::Invalid {
            path: path.clone(),
            reason: e.to_string(),
            hint: hint.clone(),
        })?;
        let found = raw.get("schema_version").and_then(Value::as_u64).unwrap_or(0) as u32;
        if found != SCHEMA_VERSION {
            return Err(ManifestError::SchemaMismatch { path, found, expected: SCHEMA_VERSION, hint });
        }
        let manifest: Manifest = serde_json::from_value(raw).map_err(|e| ManifestError::Invalid {
            path: path.clone(),
            reason: e.to_string(),
            hint: hint.clone(),
        })?;
        if manifest.stage != stage {
            return Err(ManifestError::Invalid {
                path,
                reason: format!("it was written by stage `{}`", manifest.stage),
                hint,
            });
        }
        Ok(manifest)
    }

    /// Checks that every recorded output is on disk with its recorded content.
    pub fn verify_outputs(&self, run: &RunDir) -> Result<(), ManifestError> {
        let dir = run.stage_dir(self.stage);
        for output in &self.outputs {
            let path = dir.join(&output.path);
            let stale = |reason: String| ManifestError::Stale {
                stage: self.stage,
                reason,
                hint: self.stage.rerun_hint(run.root()),
            };
            let meta =
                std::fs::metadata(&path).map_err(|_| stale(format!("output `{}` is missing", path.display())))?;
            if meta.len() != output.bytes || fs::sha256_file(&path)? != output.sha256 {
                return Err(stale(format!("output `{}` changed since the manifest was written", path.display())));
            }
        }
        Ok(())
    }

    /// The hash a downstream stage records for this stage as its input: the
    /// fingerprint (what was computed from what) and every output's content —
    /// not the manifest file, whose timings differ between identical runs. A
    /// stage re-run to the same result leaves its downstream stages up to date.
    pub fn result_hash(&self) -> String {
        let outputs: Vec<(&str, &str)> = self.outputs.iter().map(|o| (o.path.as_str(), o.sha256.as_str())).collect();
        let canonical = serde_json::json!({ "fingerprint": self.fingerprint.0, "outputs": outputs });
        fs::sha256_bytes(canonical.to_string().as_bytes())
    }

    /// Checks that the upstream stages this stage read are still the ones on disk.
    pub fn verify_upstream(&self, run: &RunDir) -> Result<(), ManifestError> {
        for input in &self.inputs {
            let Some(upstream) = input.stage else { continue };
            let current = match run.manifest_path(upstream).exists() {
                true => Manifest::load(run, upstream).ok().map(|m| m.result_hash()),
                false => None,
            };
            if current.as_deref() != Some(input.sha256.as_str()) {
                return Err(ManifestError::Stale {
                    stage: self.stage,
                    reason: format!("its input stage `{upstream}` was re-run or removed since"),
                    hint: self.stage.rerun_hint(run.root()),
                });
            }
        }
        Ok(())
    }

    /// The absolute path of one of this stage's outputs.
    pub fn output_path(&self, run: &RunDir, relative: &str) -> PathBuf {
        run.stage_dir(self.stage).join(relative)
    }
}

/// The result of checking an upstream stage before reading its artifacts.
#[derive(Debug, Clone)]
pub struct UpstreamCheck {
    /// The upstream manifest.
    pub manifest: Manifest,
    /// The input record a downstream stage stores for it.
    pub input: InputRecord,
}

impl UpstreamCheck {
    /// Loads and fully checks `stage` in `run`: present, right schema, outputs
    /// intact, and not stale with respect to its own upstream stages.
    pub fn require(run: &RunDir, stage: Stage) -> Result<Self, ManifestError> {
        let manifest = Manifest::load(run, stage)?;
        manifest.verify_outputs(run)?;
        manifest.verify_upstream(run)?;
        let path = run.manifest_path(stage);
        let mut input = InputRecord::file(stage.name(), &path)?;
        input.stage = Some(stage);
        input.sha256 = manifest.result_hash();
        Ok(Self { manifest, input })
    }
}

/// What [`StageWriter::begin_unless_up_to_date`] found.
#[derive(Debug)]
pub enum Begin {
    /// The stage already ran with the same configuration and inputs, and its
    /// outputs are intact: nothing to do.
    UpToDate(Manifest),
    /// The stage must run; write its outputs, then call [`StageWriter::finish`].
    Run(StageWriter),
}

/// What a stage returns: its manifest, whether it was skipped, and a readable summary.
#[derive(Debug, Clone)]
pub struct StageReport {
    /// The stage's manifest (the existing one when it was up to date).
    pub manifest: Manifest,
    /// Whether the stage was skipped because it was up to date.
    pub up_to_date: bool,
    /// Tables and figures for people, printed by the binary.
    pub summary: String,
}

/// Writes one stage: removes the old manifest on [`StageWriter::begin`], and writes
/// the new one, last and atomically, on [`StageWriter::finish`].
#[derive(Debug)]
pub struct StageWriter {
    run: RunDir,
    stage: Stage,
    config: Value,
    inputs: Vec<InputRecord>,
    fingerprint: Fingerprint,
    started: Instant,
    started_unix: u64,
}

impl StageWriter {
    /// Starts `stage`: its directory exists and holds no manifest afterwards.
    pub fn begin(run: &RunDir, stage: Stage, config: Value, inputs: Vec<InputRecord>) -> Result<Self, ManifestError> {
        let dir = run.stage_dir(stage);
        fs::create_dir_all(&dir)?;
        fs::remove_file_if_exists(&run.manifest_path(stage))?;
        let fingerprint = Fingerprint::compute(stage, &config, &inputs);
        let started_unix = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        Ok(Self { run: run.clone(), stage, config, inputs, fingerprint, started: Instant::now(), started_unix })
    }

    /// Like [`StageWriter::begin`], unless the stage is up to date with this
    /// configuration and these inputs (and `force` is off).
    pub fn begin_unless_up_to_date(
        run: &RunDir,
        stage: Stage,
        config: Value,
        inputs: Vec<InputRecord>,
        force: bool,
    ) -> Result<Begin, ManifestError> {
        let fingerprint = Fingerprint::compute(stage, &config, &inputs);
        if !force && Manifest::is_up_to_date(run, stage, &fingerprint) {
            return Ok(Begin::UpToDate(Manifest::load(run, stage)?));
        }
        Ok(Begin::Run(Self::begin(run, stage, config, inputs)?))
    }

    /// The stage directory.
    pub fn dir(&self) -> PathBuf {
        self.run.stage_dir(self.stage)
    }

    /// A file in the stage directory.
    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir().join(relative)
    }

    /// The fingerprint the manifest will carry.
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    /// Hashes `outputs` (relative to the stage directory) and writes the manifest.
    pub fn finish(self, outputs: &[String], environment: Value, stats: Value) -> Result<Manifest, ManifestError> {
        let dir = self.dir();
        let outputs = outputs
            .iter()
            .map(|relative| {
                let path = dir.join(relative);
                let bytes = std::fs::metadata(&path).map_err(|e| FsError::new("cannot read output", &path, e))?.len();
                Ok(OutputRecord { path: relative.clone(), sha256: fs::sha256_file(&path)?, bytes })
            })
            .collect::<Result<Vec<_>, ManifestError>>()?;
        let manifest = Manifest {
            schema_version: SCHEMA_VERSION,
            stage: self.stage,
            tool_version: TOOL_VERSION.to_string(),
            fingerprint: self.fingerprint,
            config: self.config,
            inputs: self.inputs,
            outputs,
            started_unix: self.started_unix,
            seconds: self.started.elapsed().as_secs_f64(),
            environment: crate::environment(environment),
            stats,
        };
        crate::fault::crash("manifest");
        fs::write_json_atomic(&self.run.manifest_path(self.stage), &manifest)?;
        Ok(manifest)
    }
}

impl Manifest {
    /// Whether `stage` is up to date: its manifest exists with the `expected`
    /// fingerprint and its outputs are intact.
    pub fn is_up_to_date(run: &RunDir, stage: Stage, expected: &Fingerprint) -> bool {
        match Manifest::load(run, stage) {
            Ok(m) => &m.fingerprint == expected && m.verify_outputs(run).is_ok(),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn write_stage(run: &RunDir, stage: Stage, inputs: Vec<InputRecord>, content: &[u8]) -> Manifest {
        let writer = StageWriter::begin(run, stage, json!({"k": 1}), inputs).unwrap();
        fs::write_atomic(&writer.path("out.bin"), content).unwrap();
        writer.finish(&["out.bin".to_string()], json!({}), json!({"n": 3})).unwrap()
    }

    #[test]
    fn manifest_round_trips_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        let written = write_stage(&run, Stage::Data, vec![], b"hello");
        let loaded = Manifest::load(&run, Stage::Data).unwrap();
        assert_eq!(written, loaded);
        assert_eq!(loaded.outputs[0].sha256, fs::sha256_bytes(b"hello"));
        assert_eq!(loaded.stats["n"], 3);
        loaded.verify_outputs(&run).unwrap();
        assert!(Manifest::is_up_to_date(&run, Stage::Data, &loaded.fingerprint));
    }

    #[test]
    fn missing_manifest_names_the_stage_to_run() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        let err = Manifest::load(&run, Stage::Vocab).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ManifestError::Missing { .. }));
        assert!(msg.contains("cargo xtask vocab --run-dir"), "{msg}");
    }

    #[test]
    fn other_schema_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        write_stage(&run, Stage::Data, vec![], b"x");
        let path = run.manifest_path(Stage::Data);
        let mut raw: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        raw["schema_version"] = json!(SCHEMA_VERSION + 1);
        std::fs::write(&path, raw.to_string()).unwrap();
        let err = Manifest::load(&run, Stage::Data).unwrap_err();
        assert!(matches!(err, ManifestError::SchemaMismatch { .. }), "{err}");
        assert!(err.to_string().contains("cargo xtask data"));
    }

    #[test]
    fn changed_output_makes_the_stage_stale() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        let m = write_stage(&run, Stage::Data, vec![], b"hello");
        std::fs::write(run.file(Stage::Data, "out.bin"), b"HELLO").unwrap();
        let err = m.verify_outputs(&run).unwrap_err();
        assert!(matches!(err, ManifestError::Stale { stage: Stage::Data, .. }), "{err}");
        assert!(!Manifest::is_up_to_date(&run, Stage::Data, &m.fingerprint));
        assert!(UpstreamCheck::require(&run, Stage::Data).is_err());
    }

    #[test]
    fn rerun_upstream_makes_downstream_stale() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        write_stage(&run, Stage::Data, vec![], b"v1");
        let data = UpstreamCheck::require(&run, Stage::Data).unwrap();
        write_stage(&run, Stage::Vocab, vec![data.input], b"tok");
        UpstreamCheck::require(&run, Stage::Vocab).unwrap();
        // Re-running data (other content) invalidates vocab.
        write_stage(&run, Stage::Data, vec![], b"v2");
        let err = UpstreamCheck::require(&run, Stage::Vocab).unwrap_err();
        assert!(err.to_string().contains("stage `vocab` is stale"), "{err}");
        assert!(err.to_string().contains("cargo xtask vocab"), "{err}");
    }

    #[test]
    fn begin_removes_the_done_marker() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        write_stage(&run, Stage::Data, vec![], b"x");
        let _writer = StageWriter::begin(&run, Stage::Data, json!({}), vec![]).unwrap();
        // A stage killed now leaves no manifest behind.
        assert!(!run.manifest_path(Stage::Data).exists());
    }

    #[test]
    fn fingerprint_depends_on_config_and_inputs_only() {
        let input = |sha: &str| InputRecord {
            name: "articles".into(),
            stage: None,
            path: "/a".into(),
            sha256: sha.into(),
            bytes: 1,
        };
        let a = Fingerprint::compute(Stage::Data, &json!({"x": 1}), &[input("aa")]);
        let mut moved = input("aa");
        moved.path = "/elsewhere".into();
        assert_eq!(a, Fingerprint::compute(Stage::Data, &json!({"x": 1}), &[moved]));
        assert_ne!(a, Fingerprint::compute(Stage::Data, &json!({"x": 2}), &[input("aa")]));
        assert_ne!(a, Fingerprint::compute(Stage::Data, &json!({"x": 1}), &[input("bb")]));
        assert_ne!(a, Fingerprint::compute(Stage::Vocab, &json!({"x": 1}), &[input("aa")]));
    }
}
