//! From `--preset`, `--config` and `--set` to one resolved [`PipelineConfig`].
//!
//! A preset is a TOML file with one table per stage. The built-in presets are
//! compiled in (`presets/*.toml`); their relative paths are relative to the
//! repository root. `--config FILE` is a user preset: alone it must be complete,
//! with `--preset` it overlays that preset. `--set section.key=value` then
//! overrides single fields; a key that does not exist is an error that suggests
//! the closest one.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tp06_artifact::Source;

/// Every stage's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// `[data]`: corpus, names, filter, split.
    pub data: tp06_data::Config,
    /// `[vocab]`: how the names are added to the vocabulary.
    pub vocab: tp06_vocab::Config,
    /// `[model]`: base model, the added rows' initialisation, freeze plan.
    pub model: tp06_model::StageConfig,
    /// `[train]`: the fine-tuning hyper-parameters.
    pub train: tp06_train::Config,
    /// `[sample]`: generation settings and prompts.
    pub sample: tp06_sample::Config,
}

/// The preset of a command that names none (on a run without a recorded configuration).
pub const DEFAULT_PRESET: &str = "demo";

/// The built-in presets: name, TOML text.
pub const PRESETS: [(&str, &str); 4] = [
    ("tp06", include_str!("../../../presets/tp06.toml")),
    ("recommended", include_str!("../../../presets/recommended.toml")),
    ("demo", include_str!("../../../presets/demo.toml")),
    ("lora", include_str!("../../../presets/lora.toml")),
];

/// The repository root, for the relative paths of the built-in presets.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap_or_else(|_| PathBuf::from("."))
}

/// Where the configuration comes from.
#[derive(Debug, Clone, Default)]
pub struct ConfigArgs {
    /// A built-in preset name.
    pub preset: Option<String>,
    /// A user preset file.
    pub config: Option<PathBuf>,
    /// `section.key=value` overrides, in order.
    pub set: Vec<String>,
}

impl ConfigArgs {
    /// The name of the configuration, for the default run directory.
    pub fn name(&self) -> String {
        match (&self.preset, &self.config) {
            (None, Some(file)) => {
                file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "custom".into())
            }
            (preset, _) => preset.clone().unwrap_or_else(|| DEFAULT_PRESET.into()),
        }
    }
}

fn toml_to_json(text: &str, origin: &str) -> Result<Value> {
    let table: toml::Table = toml::from_str(text).with_context(|| format!("{origin} is not valid TOML"))?;
    serde_json::to_value(table).with_context(|| format!("{origin} cannot be represented as JSON"))
}

/// Recursively overlays `top` on `base` (tables merge, everything else replaces).
fn overlay(base: &mut Value, top: Value) {
    match (base, top) {
        (Value::Object(base), Value::Object(top)) => {
            for (key, value) in top {
                match base.get_mut(&key) {
                    Some(existing) => overlay(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, top) => *base = top,
    }
}

/// Makes the relative local paths of a built-in preset relative to the repository root.
fn anchor_preset_paths(value: &mut Value, root: &Path) {
    for (section, key) in [("data", "articles"), ("data", "names"), ("model", "base")] {
        let Some(Value::String(spec)) = value.get_mut(section).and_then(|s| s.get_mut(key)) else { continue };
        if let Ok(Source::Local(path)) = spec.parse::<Source>()
            && path.is_relative()
        {
            *spec = root.join(path).display().to_string();
        }
    }
}

fn deserialize(value: Value, origin: &str) -> Result<PipelineConfig> {
    serde_json::from_value(value).map_err(|e| anyhow!("{origin}: {}", with_suggestion(&e.to_string())))
}

/// Appends "did you mean" to serde's "unknown field `x`, expected one of …".
fn with_suggestion(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else { return message.to_string() };
    let Some((unknown, expected)) = rest.split_once('`') else { return message.to_string() };
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    match closest(unknown, candidates.iter().copied()) {
        Some(best) => format!("{message}; did you mean `{best}`?"),
        None => message.to_string(),
    }
}

fn closest<'a>(wanted: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (strsim::damerau_levenshtein(wanted, c), c))
        .filter(|(d, c)| *d <= (c.len().max(wanted.len()) / 2).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Every dotted key path of a JSON object (leaves and tables).
fn key_paths(value: &Value, prefix: &str, out: &mut Vec<String>) {
    if let Value::Object(map) = value {
        for (key, child) in map {
            let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
            out.push(path.clone());
            key_paths(child, &path, out);
        }
    }
}

/// Parses the value of `--set key=VALUE`: a TOML value when it is one (number,
/// boolean, quoted string, array), `none`/`null` for an absent optional value,
/// anything else as a plain string (paths, hub ids).
pub fn parse_set_value(raw: &str) -> Value {
    if matches!(raw, "none" | "null") {
        return Value::Null;
    }
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut table) => table.remove("v").and_then(|v| serde_json::to_value(v).ok()).unwrap_or(Value::Null),
        Err(_) => Value::String(raw.to_string()),
    }
}

/// Settings written out only when they differ from their default, so that
/// adding them changed no stage's fingerprint: named here so that `--set`
/// knows them. (section, key, default)
fn quiet_defaults() -> [(&'static str, &'static str, Value); 6] {
    [
        ("train", "precision", Value::from("f32")),
        ("train", "gguf", Value::Null),
        ("train", "gradient_checkpointing", Value::from(false)),
        ("train", "warmup_ratio", Value::Null),
        ("train", "window_overlap", Value::from(0)),
        ("sample", "precision", Value::from("f32")),
    ]
}

/// Applies one `--set section.key=value` to the resolved configuration.
fn apply_set(config: &mut Value, assignment: &str) -> Result<()> {
    let Some((key, raw)) = assignment.split_once('=') else {
        bail!("--set {assignment}: expected section.key=value, e.g. --set train.epochs=2");
    };
    for (section, name, default) in quiet_defaults() {
        if let Some(Value::Object(table)) = config.get_mut(section) {
            table.entry(name).or_insert(default);
        }
    }
    let key = key.trim();
    let mut paths = Vec::new();
    key_paths(config, "", &mut paths);
    let mut target = &mut *config;
    for part in key.split('.') {
        target = match target.get_mut(part) {
            Some(child) => child,
            None => {
                let hint = closest(key, paths.iter().map(String::as_str))
                    .map(|best| format!("; did you mean `{best}`?"))
                    .unwrap_or_else(|| "; keys look like data.articles or train.epochs".into());
                bail!("--set {assignment}: unknown key `{key}`{hint}");
            }
        };
    }
    if target.is_object() {
        bail!("--set {assignment}: `{key}` is a table; set one of its keys, e.g. {key}.<name>=…");
    }
    *target = parse_set_value(raw.trim());
    Ok(())
}

/// The file in a run directory that holds the configuration its stages last
/// ran with.
pub const RUN_CONFIG: &str = "config.toml";

/// Resolves the configuration of a command on `run_dir`: without `--preset`
/// and `--config`, the run's own [`RUN_CONFIG`] when it has one (so that
/// `cargo xtask train --run-dir R` continues the run R was, not the default
/// preset), then `--set`; otherwise as [`resolve`]. Also says which it used.
pub fn resolve_for_run(args: &ConfigArgs, run_dir: &Path) -> Result<(PipelineConfig, Option<PathBuf>)> {
    let recorded = run_dir.join(RUN_CONFIG);
    if args.preset.is_some() || args.config.is_some() {
        return Ok((resolve(args)?, None));
    }
    if !recorded.is_file() {
        // A run made before runs recorded their configuration: the default
        // preset would silently redo it with other settings.
        let run = tp06_artifact::RunDir::new(run_dir);
        if let Some(stage) = tp06_artifact::Stage::ALL.into_iter().find(|s| run.manifest_path(*s).is_file()) {
            bail!(
                "`{}` holds results (the {stage} stage's) but no {RUN_CONFIG}, so which configuration made them is not known here; \
                 name it once with --preset or --config (and the --set it ran with): later commands on the run remember it",
                run_dir.display()
            );
        }
        return Ok((resolve(args)?, None));
    }
    let text = std::fs::read_to_string(&recorded)
        .with_context(|| format!("cannot read the run's configuration `{}`", recorded.display()))?;
    let origin = format!(
        "the run's configuration `{}` (pass --preset or --config, with the --set the run needs, to replace it, or edit the file)",
        recorded.display()
    );
    let value = serde_json::to_value(deserialize(toml_to_json(&text, &origin)?, &origin)?)?;
    Ok((overrides(value, args)?, Some(recorded)))
}

/// Writes the configuration the stages of `run_dir` run with, for the next
/// command on it ([`resolve_for_run`]).
pub fn record(config: &PipelineConfig, run_dir: &Path) -> Result<()> {
    let text = format!(
        "# The configuration this run's stages last ran with (tp06 writes it). A command on\n\
         # this run directory without --preset or --config starts from it.\n{}",
        toml::to_string_pretty(config).context("cannot write the configuration as TOML")?
    );
    let path = run_dir.join(RUN_CONFIG);
    tp06_artifact::fs::write_atomic(&path, text.as_bytes())
        .with_context(|| format!("cannot write `{}`", path.display()))
}

/// Resolves the configuration: preset, then user file, then overrides, then
/// every stage's own validation.
pub fn resolve(args: &ConfigArgs) -> Result<PipelineConfig> {
    let mut value = match (&args.preset, &args.config) {
        (None, Some(_)) => Value::Object(Default::default()),
        (preset, _) => {
            let name = preset.as_deref().unwrap_or(DEFAULT_PRESET);
            let text = PRESETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t).ok_or_else(|| {
                let names: Vec<_> = PRESETS.iter().map(|(n, _)| *n).collect();
                anyhow!("unknown preset `{name}`; the presets are {} (or --config FILE)", names.join(", "))
            })?;
            let mut value = toml_to_json(text, &format!("preset `{name}`"))?;
            anchor_preset_paths(&mut value, &repo_root());
            // Round-trip through the types so that every key, absent options
            // included (as null), can be overridden with --set.
            serde_json::to_value(deserialize(value, &format!("preset `{name}`"))?)?
        }
    };
    if let Some(file) = &args.config {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("cannot read config file `{}`", file.display()))?;
        let origin = format!("config file `{}`", file.display());
        overlay(&mut value, toml_to_json(&text, &origin)?);
        value = serde_json::to_value(deserialize(value, &origin)?)?;
    }
    overrides(value, args)
}

/// Applies `--set` to a resolved configuration, then every stage's checks.
fn overrides(mut value: Value, args: &ConfigArgs) -> Result<PipelineConfig> {
    for assignment in &args.set {
        apply_set(&mut value, assignment)?;
        // Checked one by one so that a value of the wrong type names its key.
        deserialize(value.clone(), &format!("--set {assignment}"))?;
    }
    let mut config = deserialize(value, "--set")?;
    absolute_sources(&mut config)?;
    validate(&config)?;
    Ok(config)
}

/// Makes the local sources' paths absolute (a relative one is relative to the
/// current directory), so that the configuration, recorded in the run
/// directory, names the same files whichever directory the next command on
/// that run starts from.
fn absolute_sources(config: &mut PipelineConfig) -> Result<()> {
    for (key, source) in [
        ("data.articles", &mut config.data.articles),
        ("data.names", &mut config.data.names),
        ("model.base", &mut config.model.base),
    ] {
        if let Source::Local(path) = source
            && path.is_relative()
        {
            *path = std::path::absolute(&*path)
                .with_context(|| format!("{key}: cannot make `{}` absolute", path.display()))?;
        }
    }
    Ok(())
}

/// Every stage's value checks.
pub fn validate(config: &PipelineConfig) -> Result<()> {
    config.data.validate().map_err(|e| anyhow!("{e}"))?;
    config.model.validate().map_err(|e| anyhow!("{e}"))?;
    config.train.validate().map_err(|e| anyhow!("{e}"))?;
    config.sample.validate().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(preset: &str, set: &[&str]) -> ConfigArgs {
        ConfigArgs { preset: Some(preset.into()), config: None, set: set.iter().map(|s| s.to_string()).collect() }
    }

    #[test]
    fn every_builtin_preset_resolves() {
        for (name, _) in PRESETS {
            resolve(&args(name, &[])).unwrap_or_else(|e| panic!("preset {name}: {e:#}"));
        }
    }

    #[test]
    fn tp06_preset_has_the_course_values() {
        let c = resolve(&args("tp06", &[])).unwrap();
        assert_eq!(c.data.articles.to_string(), "hf:chris-lmd/pokepedia-fr");
        assert_eq!(c.data.names.to_string(), "hf:chris-lmd/pokemon-names-fr");
        assert_eq!(c.model.base.to_string(), "hf:asi/gpt-fr-cased-base");
        assert_eq!((c.train.batch_size, c.train.grad_accum, c.train.epochs), (2, 8, 10));
        assert_eq!((c.train.lr.fixed(), c.train.warmup_steps, c.train.max_length), (Some(5e-5), 100, 256));
        assert_eq!((c.train.weight_decay, c.train.max_grad_norm, c.train.seed), (0.01, 1.0, 42));
        assert!(c.train.pad_in_loss && c.train.packing == tp06_train::Packing::None);
        assert_eq!((c.train.checkpoint_every, c.train.keep_checkpoints, c.train.logging_every), (500, 2, 10));
        assert_eq!(c.data.valid_fraction, 0.0);
        assert_eq!(c.model.init, tp06_model::InitStrategy::Reference);
        assert_eq!(c.model.reference_words, ["Pokémon", "Pokemon", "animal"]);
        assert_eq!(c.model.noise_std, 0.01);
        assert_eq!(c.model.freeze.wte, tp06_model::WteFreeze::All);
        assert_eq!(c.model.freeze.lower_blocks, tp06_model::BlockCount::Half);
        assert_eq!(
            (c.sample.max_length, c.sample.top_k, c.sample.top_p, c.sample.repetition_penalty),
            (150, 50, 0.9, 1.2)
        );
        let prompts: Vec<_> = c.sample.prompts.iter().map(|p| (p.text.as_str(), p.temperature)).collect();
        assert_eq!(prompts[0], ("Pikachu est un Pokémon de type", Some(0.5)));
        assert_eq!(prompts[3], ("Flamador est un Pokémon légendaire de type Feu et Dragon. Ce", Some(0.7)));
    }

    #[test]
    fn set_overrides_typed_values_and_paths() {
        let c = resolve(&args(
            "recommended",
            &[
                "data.articles=../shared/data/pokedex-fr/articles.parquet",
                "model.base=hf:asi/gpt-fr-cased-small@main",
                "train.epochs=2",
                "train.lr=1e-4",
                "train.max_steps=30",
                "train.packing=true",
                "model.freeze.lower_blocks=3",
                "sample.max_new_tokens=none",
            ],
        ))
        .unwrap();
        // A relative path is taken from the current directory, and kept absolute.
        assert_eq!(
            c.data.articles,
            Source::Local(std::env::current_dir().unwrap().join("../shared/data/pokedex-fr/articles.parquet"))
        );
        assert_eq!(c.model.base.to_string(), "hf:asi/gpt-fr-cased-small@main");
        assert_eq!((c.train.epochs, c.train.lr.fixed(), c.train.max_steps), (2, Some(1e-4), Some(30)));
        assert_eq!(c.train.packing, tp06_train::Packing::Concatenated);
        assert_eq!(c.model.freeze.lower_blocks, tp06_model::BlockCount::Count(3));
        assert_eq!(c.sample.max_new_tokens, None);
    }

    #[test]
    fn unknown_keys_suggest_the_closest() {
        let err = resolve(&args("tp06", &["train.epoch=2"])).unwrap_err().to_string();
        assert!(err.contains("unknown key `train.epoch`") && err.contains("`train.epochs`"), "{err}");
        let err = resolve(&args("tp06", &["trian.lr=1"])).unwrap_err().to_string();
        assert!(err.contains("`train.lr`"), "{err}");
        let err = resolve(&args("tp06", &["train.lr"])).unwrap_err().to_string();
        assert!(err.contains("section.key=value"), "{err}");
        let err = resolve(&args("tp06", &["train=1"])).unwrap_err().to_string();
        assert!(err.contains("is a table"), "{err}");
    }

    #[test]
    fn bad_values_are_refused_with_the_field() {
        for (set, fragment) in [
            ("train.lr=0", "train.lr"),
            ("train.lr=-1e-5", "train.lr"),
            ("train.batch_size=0", "train.batch_size"),
            ("train.grad_accum=0", "train.grad_accum"),
            ("sample.top_p=0", "sample.top_p"),
            ("sample.top_p=1.5", "sample.top_p"),
            ("sample.temperature=-0.1", "sample.temperature"),
            ("data.valid_fraction=0.9", "data.valid_fraction"),
            ("train.epochs=deux", "invalid"),
            ("data.filter=fuzzy", "unknown variant `fuzzy`"),
            ("model.base=hf:nope", "hf:OWNER/NAME"),
        ] {
            let err = resolve(&args("tp06", &[set])).unwrap_err().to_string();
            assert!(err.contains(fragment), "{set}: {err}");
        }
    }

    #[test]
    fn config_files_overlay_or_stand_alone() {
        let dir = tempfile::tempdir().unwrap();
        let partial = dir.path().join("mine.toml");
        std::fs::write(&partial, "[train]\nepochs = 3\n").unwrap();
        let c =
            resolve(&ConfigArgs { preset: Some("tp06".into()), config: Some(partial.clone()), set: vec![] }).unwrap();
        assert_eq!(c.train.epochs, 3);
        assert_eq!(c.train.batch_size, 2, "the rest comes from the preset");
        // Alone, a partial file is incomplete.
        let err = resolve(&ConfigArgs { preset: None, config: Some(partial), set: vec![] }).unwrap_err();
        assert!(err.to_string().contains("missing field"), "{err}");
        // An unknown key in a file is named with a suggestion.
        let typo = dir.path().join("typo.toml");
        std::fs::write(&typo, "[train]\nepoch = 3\n").unwrap();
        let err = resolve(&ConfigArgs { preset: Some("tp06".into()), config: Some(typo), set: vec![] }).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("typo.toml") && msg.contains("unknown field `epoch`") && msg.contains("did you mean `epochs`"),
            "{msg}"
        );
        // A complete user preset stands alone and names the run directory.
        let full = dir.path().join("full.toml");
        std::fs::write(&full, PRESETS[0].1).unwrap();
        let a = ConfigArgs { preset: None, config: Some(full), set: vec![] };
        resolve(&a).unwrap();
        assert_eq!(a.name(), "full");
    }

    #[test]
    fn unknown_preset_lists_the_presets() {
        let err = resolve(&args("fast", &[])).unwrap_err().to_string();
        assert!(err.contains("tp06, recommended, demo"), "{err}");
    }

    #[test]
    fn builtin_relative_paths_are_anchored_at_the_repo() {
        let c = resolve(&args("demo", &[])).unwrap();
        let Source::Local(path) = &c.data.articles else { panic!("demo reads a local file") };
        assert!(path.is_absolute() && path.ends_with("data/demo/articles.jsonl"), "{}", path.display());
    }

    #[test]
    fn precision_is_settable_though_absent_from_the_presets() {
        let c = resolve(&args("demo", &["train.precision=bf16", "sample.precision=bf16"])).unwrap();
        assert_eq!((c.train.precision, c.sample.precision), (tp06_model::Precision::Bf16, tp06_model::Precision::Bf16));
        assert_eq!(resolve(&args("demo", &[])).unwrap().train.precision, tp06_model::Precision::F32);
        let err = resolve(&args("demo", &["train.precision=fp16"])).unwrap_err().to_string();
        assert!(err.contains("train.precision") && err.contains("`fp16`") && err.contains("`bf16`"), "{err}");
        let err = resolve(&args("demo", &["sample.precision=int4"])).unwrap_err().to_string();
        assert!(err.contains("sample.precision") && err.contains("`int4`") && err.contains("`int8`"), "{err}");
        assert_eq!(
            resolve(&args("demo", &["sample.precision=int8"])).unwrap().sample.precision,
            tp06_model::Precision::Int8
        );
        // int8 is for generation: training refuses it, naming the settings that take it.
        let err = resolve(&args("demo", &["train.precision=int8"])).unwrap_err().to_string();
        assert!(err.contains("train.precision") && err.contains("sample.precision"), "{err}");
    }

    #[test]
    fn the_rate_can_be_left_to_a_range_test_and_packing_keep_articles_apart() {
        let c =
            resolve(&args("tp06", &["train.lr=find", "train.packing=documents", "train.window_overlap=16"])).unwrap();
        assert_eq!(c.train.lr, tp06_train::LearningRate::Find);
        assert_eq!((c.train.packing, c.train.window_overlap), (tp06_train::Packing::Documents, 16));
        let err = resolve(&args("tp06", &["train.lr=fast"])).unwrap_err().to_string();
        assert!(err.contains("train.lr") && err.contains("`fast`") && err.contains("\"find\""), "{err}");
        let err = resolve(&args("tp06", &["train.packing=blocks"])).unwrap_err().to_string();
        assert!(err.contains("train.packing") && err.contains("\"documents\""), "{err}");
        // The course warms up for 100 steps: a ratio as well is one too many.
        let err = resolve(&args("tp06", &["train.warmup_ratio=0.1"])).unwrap_err().to_string();
        assert!(err.contains("train.warmup_ratio") && err.contains("warmup_steps = 0"), "{err}");
        let c = resolve(&args("tp06", &["train.warmup_ratio=0.1", "train.warmup_steps=0"])).unwrap();
        assert_eq!(c.train.warmup(750), 75);
        let c = resolve(&args("tp06", &["train.gradient_checkpointing=true"])).unwrap();
        assert!(c.train.gradient_checkpointing, "settings written only when set are known to --set");
    }

    #[test]
    fn set_values_parse_like_toml() {
        assert_eq!(parse_set_value("2"), Value::from(2));
        assert_eq!(parse_set_value("5e-5"), Value::from(5e-5));
        assert_eq!(parse_set_value("true"), Value::from(true));
        assert_eq!(parse_set_value("\"quoted\""), Value::from("quoted"));
        assert_eq!(parse_set_value("../shared/x.parquet"), Value::from("../shared/x.parquet"));
        assert_eq!(parse_set_value("hf:a/b"), Value::from("hf:a/b"));
        assert_eq!(parse_set_value("none"), Value::Null);
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(500))]

            /// Any `--set` is applied or refused with a message; never a panic.
            #[test]
            fn any_set_is_applied_or_refused(assignment in any::<String>()) {
                if let Err(e) = resolve(&args("demo", &[&assignment])) {
                    prop_assert!(!e.to_string().is_empty());
                }
            }

            /// Keys that exist with values of any shape: applied or refused naming the key.
            #[test]
            fn known_keys_with_any_value(
                key in prop_oneof![Just("train.epochs"), Just("train.lr"), Just("sample.top_p"), Just("data.articles"), Just("model.freeze.lower_blocks"), Just("train.max_steps")],
                value in prop_oneof![any::<String>(), any::<i64>().prop_map(|v| v.to_string()), any::<f64>().prop_map(|v| v.to_string()), Just("none".to_string()), Just("[1, 2]".to_string())],
            ) {
                let set = format!("{key}={value}");
                if let Err(e) = resolve(&args("demo", &[&set])) {
                    prop_assert!(e.to_string().contains(key), "{e}");
                }
            }

            /// Typed values land where they were aimed, exactly.
            #[test]
            fn typed_values_round_trip(epochs in 1u32..1000, lr in 1e-9f64..1.0, top_p in 0.001f64..=1.0) {
                let config = resolve(&args("demo", &[&format!("train.epochs={epochs}"), &format!("train.lr={lr:e}"), &format!("sample.top_p={top_p}")])).unwrap();
                prop_assert_eq!(config.train.epochs, epochs);
                prop_assert_eq!(config.train.lr.fixed(), Some(lr));
                prop_assert_eq!(config.sample.top_p, top_p);
            }
        }
    }
}
