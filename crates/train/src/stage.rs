//! The train stage: data → examples → the loop → export.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::prelude::*;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use tp06_artifact::{Begin, Progress, RunDir, Stage, StageReport, StageWriter, UpstreamCheck};
use tp06_model::TrainBackend;
use tp06_vocab::{Tok, VocabInfo};

use crate::TrainError;
use crate::checkpoint::{self, LoopState};
use crate::config::Config;
use crate::examples::{self, Example, ExampleOptions};
use crate::metrics::{self, Record};
use crate::optim::{AdamW, linear_schedule};
use crate::trainer::{StepError, Trainer};

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
}

/// Whether to continue from a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Continue from the last checkpoint of this run when there is one.
    Auto,
    /// Continue from the last checkpoint of this run; fail when there is none.
    Require,
}

/// What the caller provides besides the configuration.
pub struct TrainContext<'a> {
    /// Progress bars.
    pub progress: &'a dyn Progress,
    /// Set (by Ctrl-C) to stop after the current step with a checkpoint.
    pub stop: &'a AtomicBool,
    /// Checkpoint policy.
    pub resume: Resume,
    /// Start over even when up to date, deleting checkpoints.
    pub force: bool,
    /// The backend's name, for the manifest.
    pub backend: &'a str,
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

/// A seeded permutation per epoch (HF shuffles every epoch with a seeded sampler).
fn epoch_order(n: usize, seed: u64, epoch: u64, shuffle: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if shuffle {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ (epoch + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
        order.shuffle(&mut rng);
    }
    order
}

/// Steps per epoch as HF counts them: `ceil(ceil(n / batch) / accumulation)`.
pub fn steps_per_epoch(examples: usize, batch_size: usize, grad_accum: usize) -> u64 {
    (examples.div_ceil(batch_size).div_ceil(grad_accum)) as u64
}

/// The micro-batches of optimiser step `step_in_epoch` of an epoch in `order`.
fn micro_batches<'a>(
    examples: &'a [Example],
    order: &[usize],
    step_in_epoch: u64,
    batch: usize,
    accum: usize,
) -> Vec<Vec<&'a Example>> {
    let micro_count = order.len().div_ceil(batch);
    let first = step_in_epoch as usize * accum;
    (first..(first + accum).min(micro_count))
        .map(|m| order[m * batch..((m + 1) * batch).min(order.len())].iter().map(|&i| &examples[i]).collect())
        .collect()
}

/// The settings of the loop proper (the stage derives them from [`Config`]).
#[derive(Debug, Clone)]
pub struct LoopOptions {
    /// Shuffle each epoch (off only for parity tests with a fixed order).
    pub shuffle: bool,
}

/// Runs the train stage into `run`.
pub fn run<B: TrainBackend>(
    run: &RunDir,
    config: &Config,
    device: &B::Device,
    ctx: &TrainContext,
) -> Result<StageReport, TrainError> {
    config.validate().map_err(TrainError::Config)?;
    let data = UpstreamCheck::require(run, Stage::Data)?;
    let vocab = UpstreamCheck::require(run, Stage::Vocab)?;
    let model_stage = UpstreamCheck::require(run, Stage::Model)?;
    let inputs = vec![data.input.clone(), vocab.input.clone(), model_stage.input.clone()];
    let config_json = serde_json::to_value(config).expect("the train config serialises");
    let writer = match StageWriter::begin_unless_up_to_date(run, Stage::Train, config_json, inputs, ctx.force)? {
        Begin::UpToDate(manifest) => {
            let stats: TrainStats = serde_json::from_value(manifest.stats.clone()).unwrap_or_default();
            return Ok(StageReport { summary: stats.summary(), manifest, up_to_date: true });
        }
        Begin::Run(writer) => writer,
    };
    let fingerprint = writer.fingerprint().0.clone();
    let checkpoints = writer.path(outputs::CHECKPOINTS);
    if ctx.force {
        let _ = std::fs::remove_dir_all(&checkpoints);
    }
    let resume_from = checkpoint::list(&checkpoints)?.into_iter().rfind(|c| c.state.fingerprint == fingerprint);
    if ctx.resume == Resume::Require && resume_from.is_none() {
        return Err(TrainError::NothingToResume { dir: checkpoints });
    }

    // Tokenise (or reuse the cache of this very data and tokenizer).
    let vocab_dir = run.stage_dir(Stage::Vocab);
    let tok = Tok::from_dir(&vocab_dir)?;
    let info = VocabInfo::read(&vocab.manifest.output_path(run, tp06_vocab::outputs::VOCAB_INFO))?;
    let cache_key = format!("{}/{}", data.input.sha256, vocab.input.sha256);
    let cache_path = writer.path(outputs::TOKENS);
    let cached: Option<TokenCache> = std::fs::read_to_string(&cache_path)
        .ok()
        .and_then(|t| serde_json::from_str::<TokenCache>(&t).ok())
        .filter(|c| c.version == TOKEN_CACHE_VERSION && c.key == cache_key);
    let valid_articles = match data.manifest.outputs.iter().any(|o| o.path == tp06_data::outputs::VALID) {
        true => tp06_data::read_articles_artifact(&data.manifest.output_path(run, tp06_data::outputs::VALID))?,
        false => Vec::new(),
    };
    let cache = match cached {
        Some(cache) => cache,
        None => {
            let train_articles =
                tp06_data::read_articles_artifact(&data.manifest.output_path(run, tp06_data::outputs::TRAIN))?;
            let cache = TokenCache {
                version: TOKEN_CACHE_VERSION,
                key: cache_key,
                train: tokenize(&tok, &train_articles)?,
                valid: tokenize(&tok, &valid_articles)?,
            };
            tp06_artifact::fs::write_json_atomic(&cache_path, &cache)?;
            cache
        }
    };

    let (model, model_config, plan) = tp06_model::load_stage_model::<B>(&run.stage_dir(Stage::Model), device)?;
    if config.max_length > model_config.n_positions {
        return Err(TrainError::Config(format!(
            "train.max_length: {} is longer than the model's context (n_positions = {}); use at most {}",
            config.max_length, model_config.n_positions, model_config.n_positions
        )));
    }
    let eos = info.eos_id.unwrap_or(info.pad_id);
    let options = ExampleOptions {
        max_length: config.max_length,
        pad_id: info.pad_id,
        eos_id: eos,
        pad_in_loss: config.pad_in_loss,
        packing: config.packing,
    };
    let train = examples::build(&cache.train, options);
    if train.is_empty() {
        return Err(TrainError::Config(
            "no training example: the articles are empty or shorter than one block (train.packing)".into(),
        ));
    }
    // Validation always leaves padding out and adds nothing, so that its loss
    // compares across presets.
    let eval_options = ExampleOptions { pad_in_loss: false, packing: false, ..options };
    let valid: Vec<Example> = examples::build(&cache.valid, eval_options)
        .into_iter()
        .map(|mut e| {
            if let Some(first_pad) = e.attention.iter().position(|a| !a) {
                e.labels[first_pad] = examples::IGNORE; // no </s> target in validation
            }
            e
        })
        .collect();
    let valid_chars: usize = valid
        .iter()
        .map(|e| {
            let real: Vec<u32> =
                e.input_ids.iter().zip(&e.attention).filter(|(_, a)| **a).map(|(t, _)| *t).skip(1).collect();
            tok.decode(&real, true).map(|s| s.chars().count()).unwrap_or(0)
        })
        .sum();

    let adamw = AdamW {
        beta1: config.adam_beta1,
        beta2: config.adam_beta2,
        epsilon: config.adam_epsilon,
        weight_decay: config.weight_decay,
    };
    let mut trainer = Trainer::<B>::new(model, plan, adamw, config.max_grad_norm, config.seed, device.clone());
    trainer.autocast = config.precision;
    let metrics_path = writer.path(outputs::METRICS);
    let mut state = LoopState {
        version: checkpoint::CHECKPOINT_VERSION,
        fingerprint: fingerprint.clone(),
        step: 0,
        best: None,
        seconds: 0.0,
        positions: 0,
    };
    let mut stats = TrainStats {
        train_examples: train.len(),
        valid_examples: valid.len(),
        effective_batch: config.batch_size * config.grad_accum,
        padding_fraction: train.iter().map(|e| e.attention.iter().filter(|a| !**a).count()).sum::<usize>() as f64
            / (train.len() * config.max_length) as f64,
        ..Default::default()
    };
    match &resume_from {
        Some(ckpt) => {
            tracing::info!("resuming from `{}` (step {})", ckpt.dir.display(), ckpt.state.step);
            let (model, moments) = checkpoint::load::<B>(ckpt, &model_config, device)?;
            trainer.model = crate::trainer::apply_freeze(model, &trainer.plan);
            trainer.moments = moments;
            trainer.step = ckpt.state.step;
            state = ckpt.state.clone();
            stats.resumed_from = Some(ckpt.state.step);
            metrics::truncate_after(&metrics_path, ckpt.state.step)?;
        }
        None => {
            tp06_artifact::fs::remove_file_if_exists(&metrics_path)?;
            let _ = std::fs::remove_dir_all(writer.path(outputs::BEST));
        }
    }
    let eval = |trainer: &Trainer<B>| -> Option<(f64, f64)> {
        (!valid.is_empty()).then(|| {
            let (loss, total, _) = trainer.evaluate(&valid, config.batch_size);
            (loss, total / valid_chars.max(1) as f64)
        })
    };
    if resume_from.is_none()
        && let Some((loss, per_char)) = eval(&trainer)
    {
        metrics::append(
            &metrics_path,
            &Record {
                step: 0,
                epoch: 0.0,
                eval_loss: Some(loss),
                eval_perplexity: Some(loss.exp()),
                ..Default::default()
            },
        )?;
        state.best = Some((0, loss));
        stats.base_eval_loss = Some(loss);
        stats.base_eval_nats_per_char = Some(per_char);
    }
    if let Some(before) = metrics::read(&metrics_path)?.iter().find(|r| r.step == 0).and_then(|r| r.eval_loss) {
        stats.base_eval_loss = Some(before);
    }

    let spe = steps_per_epoch(train.len(), config.batch_size, config.grad_accum);
    let total = config.max_steps.unwrap_or(config.epochs as u64 * spe);
    stats.steps_per_epoch = spe;
    stats.total_steps = total;
    let loop_options = LoopOptions { shuffle: true };
    let result = train_loop(
        &mut trainer,
        &train,
        config,
        &loop_options,
        total,
        spe,
        &mut state,
        &metrics_path,
        &checkpoints,
        ctx,
        &mut |trainer, state| {
            let Some((loss, per_char)) = eval(trainer) else { return Ok(None) };
            if state.best.is_none_or(|(_, best)| loss < best) {
                state.best = Some((trainer.step, loss));
                export(&trainer.model, &writer.path(outputs::BEST), run)?;
            }
            Ok(Some((loss, per_char)))
        },
    );
    let final_eval = result.map_err(|e| match e {
        TrainError::Interrupted { step, path, .. } => TrainError::Interrupted {
            step,
            path,
            resume: Some(format!("{} --resume", Stage::Train.rerun_hint(run.root()))),
        },
        other => other,
    })?;

    export(&trainer.model, &writer.path(outputs::EXPORT), run)?;
    let records = metrics::read(&metrics_path)?;
    metrics::plot_loss(&records, &writer.path(outputs::PLOT), "TP 06 — loss")?;
    stats.final_loss = records.iter().rev().find_map(|r| r.loss);
    stats.final_eval_loss = final_eval.map(|e| e.0).or_else(|| records.iter().rev().find_map(|r| r.eval_loss));
    stats.final_eval_nats_per_char = final_eval.map(|e| e.1);
    stats.best = state.best.filter(|_| !valid.is_empty());
    stats.train_seconds = state.seconds;
    stats.tokens_per_second = state.positions as f64 / state.seconds.max(1e-9);

    let mut files = vec![outputs::TOKENS.to_string(), outputs::METRICS.to_string()];
    if writer.path(outputs::PLOT).exists() {
        files.push(outputs::PLOT.to_string());
    }
    for dir in [outputs::EXPORT, outputs::BEST] {
        if let Ok(entries) = std::fs::read_dir(writer.path(dir)) {
            let mut names: Vec<String> =
                entries.flatten().map(|e| format!("{dir}/{}", e.file_name().to_string_lossy())).collect();
            names.sort();
            files.extend(names);
        }
    }
    let environment = serde_json::json!({
        "backend": ctx.backend,
        "seed": config.seed,
        "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    });
    let manifest = writer.finish(&files, environment, serde_json::to_value(&stats).expect("stats serialise"))?;
    Ok(StageReport { summary: stats.summary(), manifest, up_to_date: false })
}

/// Writes `model` as an HF directory: weights, config and tokenizer files.
fn export<B: Backend>(model: &tp06_model::Gpt2<B>, dir: &Path, run: &RunDir) -> Result<(), TrainError> {
    tp06_artifact::fs::create_dir_all(dir)?;
    tp06_model::save_safetensors(model, &dir.join(tp06_model::outputs::WEIGHTS))?;
    for (stage, file) in [
        (Stage::Model, tp06_model::outputs::CONFIG),
        (Stage::Vocab, tp06_vocab::outputs::TOKENIZER),
        (Stage::Vocab, tp06_vocab::outputs::TOKENIZER_CONFIG),
        (Stage::Vocab, tp06_vocab::outputs::SPECIAL_TOKENS_MAP),
    ] {
        let from = run.file(stage, file);
        let bytes =
            std::fs::read(&from).map_err(|e| TrainError::Checkpoint { path: from.clone(), reason: e.to_string() })?;
        tp06_artifact::fs::write_atomic(&dir.join(file), &bytes)?;
    }
    Ok(())
}

type EvalFn<'a, B> = dyn FnMut(&Trainer<B>, &mut LoopState) -> Result<Option<(f64, f64)>, TrainError> + 'a;

/// The loop: from `state.step` to `total`. Returns the last evaluation.
#[allow(clippy::too_many_arguments)]
pub fn train_loop<B: TrainBackend>(
    trainer: &mut Trainer<B>,
    train: &[Example],
    config: &Config,
    options: &LoopOptions,
    total: u64,
    steps_per_epoch: u64,
    state: &mut LoopState,
    metrics_path: &Path,
    checkpoints: &Path,
    ctx: &TrainContext,
    evaluate: &mut EvalFn<'_, B>,
) -> Result<Option<(f64, f64)>, TrainError> {
    let mut task = ctx.progress.begin("train", total);
    task.set_position(trainer.step);
    let (mut window_loss, mut window_steps, mut window_positions) = (0.0f64, 0u64, 0usize);
    let mut window_start = Instant::now();
    let mut last_eval = None;
    let mut order_epoch = u64::MAX;
    let mut order = Vec::new();
    while trainer.step < total {
        let step = trainer.step;
        let epoch = step / steps_per_epoch;
        if epoch != order_epoch {
            order = epoch_order(train.len(), config.seed, epoch, options.shuffle);
            order_epoch = epoch;
        }
        let batches = micro_batches(train, &order, step % steps_per_epoch, config.batch_size, config.grad_accum);
        let lr = linear_schedule(config.lr, step, config.warmup_steps, total);
        let started = Instant::now();
        let result = match trainer.step(&batches, lr) {
            Ok(result) => result,
            Err(StepError::NonFinite(loss)) => {
                let last = checkpoint::list(checkpoints)?.into_iter().next_back();
                let checkpoint = match last {
                    Some(c) => format!("the last good checkpoint is `{}` (step {})", c.dir.display(), c.state.step),
                    None => "no checkpoint had been written yet".into(),
                };
                return Err(TrainError::NonFinite { step: step + 1, loss, lr, checkpoint });
            }
            Err(StepError::NoExamples) => {
                return Err(TrainError::Config(format!(
                    "step {}: no training example to step on; check the data stage's output",
                    step + 1
                )));
            }
        };
        state.step = trainer.step;
        state.seconds += started.elapsed().as_secs_f64();
        state.positions += result.positions as u64;
        window_loss += result.loss;
        window_steps += 1;
        window_positions += result.positions;
        let done = trainer.step;
        let epoch_f = done as f64 / steps_per_epoch as f64;
        let last = done == total;
        if done.is_multiple_of(config.logging_every) || last {
            let seconds = window_start.elapsed().as_secs_f64().max(1e-9);
            let tokens_per_second = window_positions as f64 / seconds;
            let mut record = Record {
                step: done,
                epoch: epoch_f,
                loss: Some(window_loss / window_steps as f64),
                lr: Some(lr),
                grad_norm: Some(result.grad_norm),
                tokens_per_second: Some(tokens_per_second),
                ..Default::default()
            };
            if ((config.eval_every > 0 && done.is_multiple_of(config.eval_every)) || last)
                && let Some((loss, per_char)) = evaluate(trainer, state)?
            {
                record.eval_loss = Some(loss);
                record.eval_perplexity = Some(loss.exp());
                last_eval = Some((loss, per_char));
            }
            metrics::append(metrics_path, &record)?;
            task.set_message(format!(
                "epoch {epoch_f:.2} loss {:.4} lr {lr:.2e} {tokens_per_second:.0} tok/s",
                window_loss / window_steps as f64
            ));
            (window_loss, window_steps, window_positions) = (0.0, 0, 0);
            window_start = Instant::now();
        } else if config.eval_every > 0
            && done.is_multiple_of(config.eval_every)
            && let Some((loss, per_char)) = evaluate(trainer, state)?
        {
            metrics::append(
                metrics_path,
                &Record {
                    step: done,
                    epoch: epoch_f,
                    eval_loss: Some(loss),
                    eval_perplexity: Some(loss.exp()),
                    ..Default::default()
                },
            )?;
            last_eval = Some((loss, per_char));
        }
        task.set_position(done);
        let interrupted = ctx.stop.load(Ordering::SeqCst);
        if (done.is_multiple_of(config.checkpoint_every) || interrupted) && !last {
            let path = checkpoint::save(checkpoints, &trainer.model, &trainer.moments, state, config.keep_checkpoints)?;
            if interrupted {
                task.finish();
                // (The stage, which knows the run directory, adds the command.)
                return Err(TrainError::Interrupted { step: done, path, resume: None });
            }
        }
    }
    task.finish();
    Ok(last_eval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_step_counting() {
        // The course with ~1,200 articles: 600 micro-batches → 75 steps per epoch.
        assert_eq!(steps_per_epoch(1200, 2, 8), 75);
        // 923 articles: 462 micro-batches (the last of 1) → 58 steps, the last of 6.
        assert_eq!(steps_per_epoch(923, 2, 8), 58);
        let examples: Vec<Example> =
            (0..923).map(|i| Example { input_ids: vec![i], labels: vec![i as i64], attention: vec![true] }).collect();
        let order: Vec<usize> = (0..923).collect();
        let last = micro_batches(&examples, &order, 57, 2, 8);
        assert_eq!(last.len(), 6);
        assert_eq!(last[5].len(), 1);
        assert_eq!(last[5][0].input_ids, [922]);
        let first = micro_batches(&examples, &order, 0, 2, 8);
        assert_eq!(first.len(), 8);
        assert_eq!(first[1].iter().map(|e| e.input_ids[0]).collect::<Vec<_>>(), [2, 3]);
    }

    #[test]
    fn epoch_orders_are_seeded_permutations() {
        let a = epoch_order(50, 42, 0, true);
        assert_eq!(a, epoch_order(50, 42, 0, true));
        assert_ne!(a, epoch_order(50, 42, 1, true), "each epoch is shuffled anew");
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_eq!(epoch_order(5, 42, 0, false), [0, 1, 2, 3, 4]);
    }
}
