//! The train stage, in named steps: its upstream stages → the datasets
//! (tokens, examples, validation) → the trainer, resumed from a checkpoint of
//! this very run or fresh (with the base model's evaluation) → the loop →
//! the export and the manifest.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tp06_artifact::{
    Begin, Interrupted, Resume, RunDir, SettingError, Stage, StageContext, StageReport, StageWriter, UpstreamCheck,
};
use tp06_model::{Gpt2Ops, TrainBackend};
use tp06_vocab::{Tok, VocabInfo};

use crate::TrainError;
use crate::checkpoint::{self, Checkpoint, LoopState};
use crate::config::{Config, LearningRate, Packing};
use crate::examples::{self, Example, ExampleOptions};
use crate::lr_find::{self, RangeTest};
use crate::metrics::{self, Record};
use crate::train_loop::{Evaluation, KeepBest, Loop, Validation, steps_per_epoch, train_loop};
use crate::trainer::{Trainer, TrainerSettings};

/// The train stage's outputs.
pub mod outputs {
    /// Tokenised articles (versioned cache).
    pub const TOKENS: &str = "tokens.json";
    /// One record per logged step.
    pub const METRICS: &str = "metrics.jsonl";
    /// Loss curves.
    pub const PLOT: &str = "loss.svg";
    /// The final model, as an HF directory.
    pub const EXPORT: &str = "export";
    /// The best validation step's model, as an HF directory.
    pub const BEST: &str = "best";
    /// Resumable checkpoints.
    pub const CHECKPOINTS: &str = "checkpoints";
    /// Under LoRA, the trained adapter as a peft adapter directory (`export`
    /// holds it merged into the weights).
    pub const ADAPTER: &str = "adapter";
    /// `export/` as GGUF (`[train] gguf`).
    pub const EXPORT_GGUF: &str = "export.gguf";
    /// `best/` as GGUF (`[train] gguf`).
    pub const BEST_GGUF: &str = "best.gguf";
}

/// The train stage's headline numbers (stored in the manifest's `stats`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainStats {
    /// Training examples (sequences).
    pub train_examples: usize,
    /// Validation examples.
    pub valid_examples: usize,
    /// Sequences per optimiser step.
    pub effective_batch: usize,
    /// Optimiser steps per epoch.
    pub steps_per_epoch: u64,
    /// Optimiser steps in all.
    pub total_steps: u64,
    /// Fraction of token positions that are padding.
    pub padding_fraction: f64,
    /// Article tokens trained as next-token targets / those that can be
    /// (all but each article's first): what `train.packing` keeps of the corpus.
    #[serde(default)]
    pub coverage: Option<f64>,
    /// The peak learning rate used: `train.lr`, or the range test's suggestion.
    #[serde(default)]
    pub lr: Option<f64>,
    /// The warm-up steps used.
    #[serde(default)]
    pub warmup_steps: Option<u64>,
    /// Last logged training loss.
    pub final_loss: Option<f64>,
    /// Validation loss of the model before training.
    pub base_eval_loss: Option<f64>,
    /// Validation loss at the end.
    pub final_eval_loss: Option<f64>,
    /// Validation nats per character before training (comparable across tokenizers).
    pub base_eval_nats_per_char: Option<f64>,
    /// Validation nats per character at the end.
    pub final_eval_nats_per_char: Option<f64>,
    /// Best validation loss and its step.
    pub best: Option<(u64, f64)>,
    /// Mean token positions per second (padding included, as HF counts them).
    pub tokens_per_second: f64,
    /// Seconds spent in the loop (all sessions).
    pub train_seconds: f64,
    /// The step a resumed run started from.
    pub resumed_from: Option<u64>,
    /// Why the run learned nothing, when its loss did not fall ([`crate::learned`]).
    pub learned_nothing: Option<String>,
}

impl TrainStats {
    /// Readable summary.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "Training: {} examples ({} validation), effective batch {}, {} steps/epoch, {} steps; padding {:.0}% of positions\n",
            self.train_examples,
            self.valid_examples,
            self.effective_batch,
            self.steps_per_epoch,
            self.total_steps,
            100.0 * self.padding_fraction
        );
        if let Some(coverage) = self.coverage {
            out += &format!("Corpus coverage: {:.1}% of the tokens trained\n", 100.0 * coverage);
        }
        if let (Some(lr), Some(warmup)) = (self.lr, self.warmup_steps) {
            out += &format!("Learning rate: {lr:.2e} after {warmup} warm-up steps\n");
        }
        if let Some(loss) = self.final_loss {
            out += &format!("Final training loss: {loss:.4}\n");
        }
        if let (Some(before), Some(after)) = (self.base_eval_loss, self.final_eval_loss) {
            out += &format!(
                "Validation loss: {before:.4} → {after:.4} (perplexity {:.1} → {:.1})\n",
                before.exp(),
                after.exp()
            );
        }
        if let Some((step, loss)) = self.best {
            out += &format!("Best validation loss {loss:.4} at step {step}\n");
        }
        out += &format!("Throughput: {:.0} tokens/s over {:.1} s\n", self.tokens_per_second, self.train_seconds);
        if let Some(why) = &self.learned_nothing {
            out += &format!("WARNING: {why}\n");
        }
        out
    }
}

#[derive(Serialize, Deserialize)]
struct TokenCache {
    version: u32,
    key: String,
    train: Vec<Vec<u32>>,
    valid: Vec<Vec<u32>>,
}

const TOKEN_CACHE_VERSION: u32 = 1;

fn tokenize(tok: &Tok, articles: &[tp06_data::Article]) -> Result<Vec<Vec<u32>>, TrainError> {
    articles.iter().map(|a| tok.encode(&a.content).map_err(TrainError::from)).collect()
}

/// The train stage's upstream stages, checked.
struct Upstreams {
    data: UpstreamCheck,
    vocab: UpstreamCheck,
    model: UpstreamCheck,
}

impl Upstreams {
    fn require(run: &RunDir) -> Result<Self, TrainError> {
        Ok(Self {
            data: UpstreamCheck::require(run, Stage::Data)?,
            vocab: UpstreamCheck::require(run, Stage::Vocab)?,
            model: UpstreamCheck::require(run, Stage::Model)?,
        })
    }
}

/// What the loop trains on and is evaluated on.
struct Datasets {
    train: Vec<Example>,
    /// Of the training corpus, the share of tokens that train.
    coverage: f64,
    validation: Validation,
}

/// Tokenises the articles (or reuses the first of `cached` that holds this
/// very data and tokenizer, else writes them to `cache_path`) and builds the examples: the training ones as configured, the
/// validation ones always without padding in the loss and without packing,
/// so that their loss compares across presets.
fn prepare_datasets(
    run: &RunDir,
    upstream: &Upstreams,
    config: &Config,
    n_positions: usize,
    cached: &[&Path],
    cache_path: &Path,
) -> Result<Datasets, TrainError> {
    if config.max_length > n_positions {
        return Err(SettingError::new(
            "train.max_length",
            format!(
                "{} is longer than the model's context (n_positions = {}); use at most {}",
                config.max_length, n_positions, n_positions
            ),
        )
        .into());
    }
    let (data, vocab) = (&upstream.data, &upstream.vocab);
    let tok = Tok::from_dir(&run.stage_dir(Stage::Vocab))?;
    let info = VocabInfo::read(&vocab.manifest.output_path(run, tp06_vocab::outputs::VOCAB_INFO))?;
    let cache_key = format!("{}/{}", data.input.sha256, vocab.input.sha256);
    let cached: Option<TokenCache> = cached.iter().find_map(|path| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str::<TokenCache>(&t).ok())
            .filter(|c| c.version == TOKEN_CACHE_VERSION && c.key == cache_key)
    });
    let cache = match cached {
        Some(cache) => cache,
        None => {
            let read = |file| tp06_data::read_articles_artifact(&data.manifest.output_path(run, file));
            let has_valid = data.manifest.outputs.iter().any(|o| o.path == tp06_data::outputs::VALID);
            let valid = if has_valid { read(tp06_data::outputs::VALID)? } else { Vec::new() };
            let cache = TokenCache {
                version: TOKEN_CACHE_VERSION,
                key: cache_key,
                train: tokenize(&tok, &read(tp06_data::outputs::TRAIN)?)?,
                valid: tokenize(&tok, &valid)?,
            };
            tp06_artifact::fs::write_json_atomic(cache_path, &cache)?;
            cache
        }
    };

    let options = ExampleOptions {
        max_length: config.max_length,
        pad_id: info.pad_id,
        eos_id: info.eos_id.unwrap_or(info.pad_id),
        pad_in_loss: config.pad_in_loss,
        packing: config.packing,
        window_overlap: config.window_overlap,
    };
    let built = examples::build(&cache.train, options);
    if built.examples.is_empty() {
        return Err(TrainError::NoExamples);
    }
    let eval_options = ExampleOptions { pad_in_loss: false, packing: Packing::None, ..options };
    let valid: Vec<Example> = examples::build(&cache.valid, eval_options)
        .examples
        .into_iter()
        .map(|mut e| {
            if let Some(first_pad) = e.attention.iter().position(|a| !a) {
                e.labels[first_pad] = examples::IGNORE; // no </s> target in validation
            }
            e
        })
        .collect();
    let chars = valid
        .iter()
        .map(|e| {
            let real: Vec<u32> =
                e.input_ids.iter().zip(&e.attention).filter(|(_, a)| **a).map(|(t, _)| *t).skip(1).collect();
            tok.decode(&real, true).map(|s| s.chars().count()).unwrap_or(0)
        })
        .sum();
    let coverage = built.coverage();
    Ok(Datasets { train: built.examples, coverage, validation: Validation { examples: valid, chars } })
}

/// `model` evaluated on the run's validation split as the train stage
/// evaluates (the examples of `config`, without padding in the loss and
/// without packing; the train stage's tokens when it cached them, which it
/// leaves as they are): the held-out loss that QUALITY.md reports, for a
/// model in any precision.
pub fn held_out<B: Gpt2Ops>(
    run: &RunDir,
    config: &Config,
    model: &tp06_model::Gpt2<B>,
    device: &B::Device,
    watch: tp06_artifact::Watch<'_>,
) -> Result<Evaluation, TrainError> {
    let upstream = Upstreams::require(run)?;
    // A stage's directory is its own: tokens made here go beside the stages.
    let (stage_cache, own) = (run.file(Stage::Train, outputs::TOKENS), run.root().join(HELD_OUT_TOKENS));
    let data = prepare_datasets(run, &upstream, config, model.n_positions(), &[&stage_cache, &own], &own)?;
    if data.validation.examples.is_empty() {
        return Err(SettingError::new("data.valid_fraction", "0: the run holds out no article to evaluate on").into());
    }
    let pass = tp06_model::Pass::inference();
    let (loss, total, _) =
        crate::trainer::evaluate(model, &data.validation.examples, config.batch_size, device, &pass, watch)
            .ok_or_else(|| TrainError::from(tp06_artifact::Interrupted::of(Stage::Train, run)))?;
    Ok(Evaluation { loss, nats_per_char: total / data.validation.chars.max(1) as f64 })
}

/// The tokens [`held_out`] caches when the train stage's do not fit, in the run's root.
pub const HELD_OUT_TOKENS: &str = ".held-out-tokens.json";

/// The checkpoint to resume from: the last one of this very run (same
/// settings, same inputs). When there is none but others, `--resume` is
/// refused with what differs from the latest; without it, training starts over.
fn checkpoint_to_resume(
    checkpoints: &Path,
    fingerprint: &str,
    config: &Value,
    resume: Resume,
) -> Result<Option<Checkpoint>, TrainError> {
    let all = checkpoint::list(checkpoints)?;
    let Some(latest) = all.last() else {
        return match resume {
            Resume::Require => Err(TrainError::NothingToResume { dir: checkpoints.to_path_buf() }),
            Resume::Auto => Ok(None),
        };
    };
    if let Some(ours) = all.iter().rfind(|c| c.state.fingerprint == fingerprint) {
        return Ok(Some(ours.clone()));
    }
    let differences = config_differences(&latest.state.config, config);
    match resume {
        Resume::Require => Err(TrainError::ResumeMismatch {
            dir: latest.dir.clone(),
            step: latest.state.step,
            differences: if differences.is_empty() {
                "the same train settings, but an upstream stage's output changed".into()
            } else {
                differences.join(", ")
            },
        }),
        Resume::Auto => {
            tracing::warn!(
                "not resuming from `{}`: it was made with other settings or inputs; training starts over",
                latest.dir.display()
            );
            Ok(None)
        }
    }
}

/// `train.KEY: OLD → NEW` for every setting that differs between two train configurations.
fn config_differences(old: &Value, new: &Value) -> Vec<String> {
    let (Some(old), Some(new)) = (old.as_object(), new.as_object()) else {
        return vec!["the checkpoint does not record its settings (an older version wrote it)".into()];
    };
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    let show = |v: Option<&Value>| v.map_or("(unset)".to_string(), Value::to_string);
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .map(|k| format!("train.{k}: {} → {}", show(old.get(k)), show(new.get(k))))
        .collect()
}

/// Runs the train stage into `run`.
pub fn run<B: TrainBackend>(ctx: &StageContext<B::Device>, config: &Config) -> Result<StageReport, TrainError> {
    let (run, device) = (ctx.run, &ctx.device);
    config.validate()?;
    let upstream = Upstreams::require(run)?;
    let inputs = vec![upstream.data.input.clone(), upstream.vocab.input.clone(), upstream.model.input.clone()];
    let config_json = serde_json::to_value(config).expect("the train config serialises");
    let writer = match StageWriter::begin_unless_up_to_date(run, Stage::Train, config_json.clone(), inputs, ctx.force)?
    {
        Begin::UpToDate(manifest) => {
            let stats: TrainStats = serde_json::from_value(manifest.stats.clone()).unwrap_or_default();
            return Ok(StageReport { summary: stats.summary(), manifest, up_to_date: true });
        }
        Begin::Run(writer) => writer,
    };
    let fingerprint = writer.fingerprint().0.clone();
    let (checkpoints, metrics_path) = (writer.path(outputs::CHECKPOINTS), writer.path(outputs::METRICS));
    if ctx.force {
        let _ = std::fs::remove_dir_all(&checkpoints);
    }
    let resume_from = checkpoint_to_resume(&checkpoints, &fingerprint, &config_json, ctx.resume)?;

    // The datasets.
    let (model, model_config, plan) = tp06_model::load_stage_model::<B>(&run.stage_dir(Stage::Model), device)?;
    let data = prepare_datasets(
        run,
        &upstream,
        config,
        model_config.n_positions,
        &[&writer.path(outputs::TOKENS)],
        &writer.path(outputs::TOKENS),
    )?;
    ctx.check_stop(Stage::Train)?;
    let (train, validation) = (&data.train, (!data.validation.examples.is_empty()).then_some(&data.validation));
    let per_epoch = steps_per_epoch(train.len(), config.batch_size, config.grad_accum);
    let total_steps = config.max_steps.unwrap_or(config.epochs as u64 * per_epoch);
    let mut stats = TrainStats {
        train_examples: train.len(),
        valid_examples: data.validation.examples.len(),
        effective_batch: config.batch_size * config.grad_accum,
        steps_per_epoch: per_epoch,
        total_steps,
        padding_fraction: train.iter().map(|e| e.attention.iter().filter(|a| !**a).count()).sum::<usize>() as f64
            / (train.len() * config.max_length) as f64,
        coverage: Some(data.coverage),
        warmup_steps: Some(config.warmup(total_steps)),
        ..Default::default()
    };

    // The peak learning rate: set, or the range test's (run once per fingerprint).
    let lr = match config.lr {
        LearningRate::Fixed(lr) => {
            // A range test of an earlier run of this stage is not this run's output.
            for file in [lr_find::outputs::JSON, lr_find::outputs::PLOT] {
                tp06_artifact::fs::remove_file_if_exists(&writer.path(file))?;
            }
            lr
        }
        LearningRate::Find => {
            let dir = writer.path("");
            let done = RangeTest::read(&writer.path(lr_find::outputs::JSON)).filter(|t| t.fingerprint == fingerprint);
            let test = match done {
                // A sweep suggested by an earlier rule: a run resuming keeps
                // the rate it trained at; a fresh one takes this rule's.
                Some(test) if test.rule != lr_find::RULE && resume_from.is_none() => {
                    let test = RangeTest::of(test.points, test.fingerprint)?;
                    test.write(&dir)?;
                    test
                }
                Some(test) => test,
                None => {
                    let found =
                        lr_find::run_test(&model, &plan, train, config, device, fingerprint.clone(), ctx.watch())?;
                    let test = found.ok_or_else(|| Interrupted::of(Stage::Train, run))?;
                    test.write(&dir)?;
                    test
                }
            };
            tracing::info!("range test: learning rate {:.2e} ({})", test.suggestion, test.rule);
            if let Some(warning) = test.warning() {
                tracing::warn!("{warning}");
            }
            test.suggestion
        }
    };
    stats.lr = Some(lr);

    // The trainer: resumed from this run's checkpoint, or fresh and evaluated once.
    let mut trainer = Trainer::new(model, plan, TrainerSettings::of(config), device.clone());
    let mut state = LoopState {
        version: checkpoint::CHECKPOINT_VERSION,
        fingerprint,
        step: 0,
        best: None,
        seconds: 0.0,
        positions: 0,
        config: config_json,
        pending: None,
    };
    match &resume_from {
        Some(ckpt) => {
            tracing::info!("resuming from `{}` (step {})", ckpt.dir.display(), ckpt.state.step);
            let (model, moments) = checkpoint::load::<B>(ckpt, &model_config, &trainer.model, device)?;
            trainer.resume(model, moments, ckpt.state.step);
            state = ckpt.state.clone();
            stats.resumed_from = Some(ckpt.state.step);
            metrics::truncate_after(&metrics_path, ckpt.state.step)?;
        }
        None => {
            tp06_artifact::fs::remove_file_if_exists(&metrics_path)?;
            let _ = std::fs::remove_dir_all(writer.path(outputs::BEST));
            if let Some(validation) = validation {
                let stopped = || Interrupted::of(Stage::Train, run);
                let eval = validation.evaluate(&trainer, config.batch_size, ctx.watch()).ok_or_else(stopped)?;
                metrics::append(&metrics_path, &Record::evaluation(0, 0.0, eval.loss))?;
                state.best = Some((0, eval.loss));
                stats.base_eval_nats_per_char = Some(eval.nats_per_char);
            }
        }
    }
    stats.base_eval_loss = metrics::read(&metrics_path)?.iter().find(|r| r.step == 0).and_then(|r| r.eval_loss);

    // The loop.
    let hf_files = hf_files(run);
    let best_dir = writer.path(outputs::BEST);
    let the_loop = Loop {
        config,
        lr,
        train,
        base_eval_loss: stats.base_eval_loss,
        shuffle: true,
        total_steps,
        steps_per_epoch: per_epoch,
        validation,
        keep_best: Some(KeepBest { dir: &best_dir, files: &hf_files }),
        metrics: &metrics_path,
        checkpoints: &checkpoints,
        watch: ctx.watch(),
    };
    let final_eval = train_loop(&mut trainer, &mut state, &the_loop).map_err(|e| match e {
        TrainError::Interrupted { step, path, .. } => TrainError::Interrupted {
            step,
            path,
            resume: Some(format!("{} --resume", Stage::Train.rerun_hint(run.root()))),
        },
        other => other,
    })?;

    // The export and the manifest.
    // Once training is done its export is written whole: no checkpoint holds the last step.
    tp06_model::ModelDir::write(&trainer.model, &writer.path(outputs::EXPORT), &hf_files, ctx.watch().unstoppable())?;
    if trainer.model.has_lora() {
        let fresh = run.file(Stage::Model, tp06_model::outputs::ADAPTER);
        tp06_model::lora::write_adapter_like(&trainer.model, &fresh, &writer.path(outputs::ADAPTER), &hf_files[1..])?;
    } else {
        let _ = std::fs::remove_dir_all(writer.path(outputs::ADAPTER)); // an earlier run's
    }
    for (dir, file) in [(outputs::EXPORT, outputs::EXPORT_GGUF), (outputs::BEST, outputs::BEST_GGUF)] {
        let (dir, path) = (writer.path(dir), writer.path(file));
        match config.gguf {
            Some(format) if dir.is_dir() => {
                let about = tp06_model::gguf::About {
                    name: format!("tp06 {file}"),
                    source: Some(dir.display().to_string()),
                    base: None,
                };
                tp06_model::gguf::write_dir(&dir, &about, format, &path, ctx.watch().unstoppable())?;
            }
            _ => {
                let _ = std::fs::remove_file(&path); // an earlier run's
            }
        }
    }
    let records = metrics::read(&metrics_path)?;
    metrics::plot_loss(&records, &writer.path(outputs::PLOT), "TP 06 — loss")?;
    finish_stats(&mut stats, &records, final_eval, &state, validation.is_some());
    let files = output_files(&writer);
    let environment = serde_json::json!({
        "backend": ctx.backend,
        "seed": config.seed,
        "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    });
    let manifest = writer.finish(&files, environment, serde_json::to_value(&stats).expect("stats serialise"))?;
    Ok(StageReport { summary: stats.summary(), manifest, up_to_date: false })
}

/// Where `tp06 lr-find` writes, in the run directory: beside the stages, not in one.
pub const LR_FIND_DIR: &str = "lr-find";

/// The learning-rate range test of the train stage's settings (`tp06
/// lr-find`): from the model stage's output, on the train stage's batches,
/// written to `RUN_DIR/lr-find/` (`lr_find.json`, `lr_find.svg`, the token
/// cache); the stages' outputs are left as they are.
pub fn find_lr<B: TrainBackend>(ctx: &StageContext<B::Device>, config: &Config) -> Result<RangeTest, TrainError> {
    let (run, device) = (ctx.run, &ctx.device);
    config.validate()?;
    let upstream = Upstreams::require(run)?;
    let inputs = [upstream.data.input.clone(), upstream.vocab.input.clone(), upstream.model.input.clone()];
    let config_json = serde_json::to_value(config).expect("the train config serialises");
    let fingerprint = tp06_artifact::Fingerprint::compute(Stage::Train, &config_json, &inputs).0;
    let dir = run.root().join(LR_FIND_DIR);
    tp06_artifact::fs::create_dir_all(&dir)?;
    let (model, model_config, plan) = tp06_model::load_stage_model::<B>(&run.stage_dir(Stage::Model), device)?;
    let data = prepare_datasets(
        run,
        &upstream,
        config,
        model_config.n_positions,
        &[&dir.join(outputs::TOKENS)],
        &dir.join(outputs::TOKENS),
    )?;
    let stopped =
        || TrainError::RangeTestStopped { rerun: format!("cargo xtask lr-find --run-dir {}", run.root().display()) };
    let test = lr_find::run_test(&model, &plan, &data.train, config, device, fingerprint, ctx.watch())?;
    let test = test.ok_or_else(stopped)?;
    test.write(&dir)?;
    if let Some(warning) = test.warning() {
        tracing::warn!("{warning}");
    }
    Ok(test)
}

/// What an exported HF directory holds beside the weights: the model stage's
/// `config.json` and the vocab stage's tokenizer files.
fn hf_files(run: &RunDir) -> Vec<PathBuf> {
    let mut files = vec![run.file(Stage::Model, tp06_model::outputs::CONFIG)];
    files.extend(tp06_vocab::outputs::HF_FILES.iter().map(|file| run.file(Stage::Vocab, file)));
    files
}

/// The end-of-run figures.
fn finish_stats(
    stats: &mut TrainStats,
    records: &[Record],
    final_eval: Option<Evaluation>,
    state: &LoopState,
    validated: bool,
) {
    stats.final_loss = records.iter().rev().find_map(|r| r.loss);
    stats.final_eval_loss = final_eval.map(|e| e.loss).or_else(|| records.iter().rev().find_map(|r| r.eval_loss));
    stats.final_eval_nats_per_char = final_eval.map(|e| e.nats_per_char);
    stats.best = state.best.filter(|_| validated);
    stats.train_seconds = state.seconds;
    stats.tokens_per_second = state.positions as f64 / state.seconds.max(1e-9);
    let lr = stats.lr.unwrap_or(f64::NAN);
    stats.learned_nothing = match (stats.base_eval_loss, stats.best) {
        (Some(before), Some((_, best))) => crate::learned::by_validation(before, best, lr),
        _ => crate::learned::by_training(&records.iter().filter_map(|r| r.loss).collect::<Vec<_>>(), lr),
    };
    if let Some(why) = &stats.learned_nothing {
        tracing::warn!("{why}");
    }
}

/// The stage's outputs, as the manifest lists them.
fn output_files(writer: &StageWriter) -> Vec<String> {
    let mut files = vec![outputs::TOKENS.to_string(), outputs::METRICS.to_string()];
    for file in
        [outputs::PLOT, lr_find::outputs::JSON, lr_find::outputs::PLOT, outputs::EXPORT_GGUF, outputs::BEST_GGUF]
    {
        if writer.path(file).exists() {
            files.push(file.to_string());
        }
    }
    for dir in [outputs::EXPORT, outputs::BEST, outputs::ADAPTER] {
        if let Ok(entries) = std::fs::read_dir(writer.path(dir)) {
            let mut names: Vec<String> =
                entries.flatten().map(|e| format!("{dir}/{}", e.file_name().to_string_lossy())).collect();
            names.sort();
            files.extend(names);
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A checkpoint directory holding only its loop state (what `list` reads).
    fn fake_checkpoint(root: &Path, step: u64, fingerprint: &str, config: Value) {
        let dir = root.join(format!("step-{step:08}"));
        std::fs::create_dir_all(&dir).unwrap();
        let state = LoopState {
            version: checkpoint::CHECKPOINT_VERSION,
            fingerprint: fingerprint.into(),
            step,
            best: None,
            seconds: 0.0,
            positions: 0,
            config,
            pending: None,
        };
        std::fs::write(dir.join("state.json"), serde_json::to_string(&state).unwrap()).unwrap();
    }

    #[test]
    fn a_resume_takes_this_runs_last_checkpoint_and_refuses_another_runs_with_what_differs() {
        let root = tempfile::tempdir().unwrap();
        let ours = serde_json::json!({ "lr": 5e-5, "epochs": 2 });
        let other = serde_json::json!({ "lr": 3e-3, "epochs": 2 });
        // Nothing yet.
        assert!(checkpoint_to_resume(root.path(), "a", &ours, Resume::Auto).unwrap().is_none());
        let err = checkpoint_to_resume(root.path(), "a", &ours, Resume::Require).unwrap_err();
        assert!(matches!(err, TrainError::NothingToResume { .. }), "{err}");
        // This run's checkpoints, and a later one made with another learning rate.
        fake_checkpoint(root.path(), 2, "a", ours.clone());
        fake_checkpoint(root.path(), 4, "a", ours.clone());
        fake_checkpoint(root.path(), 6, "b", other.clone());
        let found = checkpoint_to_resume(root.path(), "a", &ours, Resume::Require).unwrap().unwrap();
        assert_eq!(found.state.step, 4, "the last checkpoint of this very run");
        // A run with the third checkpoint's settings changed back: refused under --resume, with the difference.
        let err = checkpoint_to_resume(root.path(), "c", &ours, Resume::Require).unwrap_err().to_string();
        assert!(err.contains("step-00000006") && err.contains("train.lr: 0.003 → 0.00005"), "{err}");
        assert!(err.contains("drop --resume"), "{err}");
        assert!(checkpoint_to_resume(root.path(), "c", &ours, Resume::Auto).unwrap().is_none(), "starts over");
        // Same settings, other inputs.
        let err = checkpoint_to_resume(root.path(), "c", &other, Resume::Require).unwrap_err().to_string();
        assert!(err.contains("upstream stage's output changed"), "{err}");
    }

    #[test]
    fn config_differences_name_each_changed_added_or_removed_key() {
        let old = serde_json::json!({ "lr": 1.0, "seed": 42, "gone": true });
        let new = serde_json::json!({ "lr": 2.0, "seed": 42, "new": "x" });
        assert_eq!(
            config_differences(&old, &new),
            ["train.gone: true → (unset)", "train.lr: 1.0 → 2.0", "train.new: (unset) → \"x\""]
        );
        assert!(config_differences(&Value::Null, &new)[0].contains("does not record"));
    }
}
