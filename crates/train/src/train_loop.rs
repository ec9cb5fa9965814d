//! The training loop, top to bottom in HF `Trainer`'s order: for each
//! optimiser step, its learning rate; its micro-batches (gradient
//! accumulation), clipping and the AdamW step ([`Trainer::step`]); the log
//! record; the evaluation, and the export of the best model so far; the
//! checkpoint, and the stop on Ctrl-C.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use tp06_artifact::Watch;
use tp06_model::TrainBackend;

use crate::TrainError;
use crate::checkpoint::{self, LoopState};
use crate::config::Config;
use crate::examples::Example;
use crate::metrics::{self, Record};
use crate::optim::linear_schedule;
use crate::trainer::{StepError, Trainer};

/// The held-out examples and the characters they hold (for the loss per
/// character, which compares across tokenizers).
#[derive(Debug, Clone)]
pub struct Validation {
    /// The examples.
    pub examples: Vec<Example>,
    /// Characters of their text, after the first token of each.
    pub chars: usize,
}

/// One evaluation on the validation examples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    /// Mean next-token loss, token-weighted.
    pub loss: f64,
    /// Summed loss over the characters of the text.
    pub nats_per_char: f64,
}

impl Validation {
    /// Evaluates the trainer's model, without dropout, in batches of
    /// `batch_size` shown by `watch`; `None` when it says stop between two batches.
    pub fn evaluate<B: TrainBackend>(
        &self,
        trainer: &Trainer<B>,
        batch_size: usize,
        watch: Watch<'_>,
    ) -> Option<Evaluation> {
        let (loss, total, _) = trainer.evaluate_unless(&self.examples, batch_size, watch)?;
        Some(Evaluation { loss, nats_per_char: total / self.chars.max(1) as f64 })
    }
}

/// Where the best evaluated model goes: an HF directory of its weights and
/// the `files` copied beside them (config.json, the tokenizer's).
pub struct KeepBest<'a> {
    /// The directory (the stage's `best/`).
    pub dir: &'a Path,
    /// The files copied beside the weights.
    pub files: &'a [PathBuf],
}

/// Everything the loop runs on besides the trainer and its state.
pub struct Loop<'a> {
    /// The train stage's settings (batch, accumulation, schedule, cadences).
    pub config: &'a Config,
    /// The peak learning rate: `train.lr`, or the range test's suggestion.
    pub lr: f64,
    /// The training examples.
    pub train: &'a [Example],
    /// The validation loss before training, when there is one: the loop warns
    /// when the evaluations show that the run learns nothing ([`crate::learned`]).
    pub base_eval_loss: Option<f64>,
    /// Shuffle each epoch (off only for parity tests with a fixed order).
    pub shuffle: bool,
    /// Optimiser steps in all.
    pub total_steps: u64,
    /// Optimiser steps per epoch.
    pub steps_per_epoch: u64,
    /// Evaluated every `config.eval_every` steps and at the end; none: no evaluation.
    pub validation: Option<&'a Validation>,
    /// Where the best evaluated model goes; none: kept nowhere.
    pub keep_best: Option<KeepBest<'a>>,
    /// Where the log records go (`metrics.jsonl`).
    pub metrics: &'a Path,
    /// Where the checkpoints go.
    pub checkpoints: &'a Path,
    /// Where progress goes, and the flag (Ctrl-C, SIGTERM) on which the loop
    /// stops with a checkpoint: after the current step, or between two
    /// micro-batches or validation batches.
    pub watch: Watch<'a>,
}

/// Runs the loop from `state.step` to `run.total_steps`; returns the last evaluation.
pub fn train_loop<B: TrainBackend>(
    trainer: &mut Trainer<B>,
    state: &mut LoopState,
    run: &Loop<'_>,
) -> Result<Option<Evaluation>, TrainError> {
    let (config, total, per_epoch) = (run.config, run.total_steps, run.steps_per_epoch);
    let mut task = run.watch.begin("train", total);
    task.set_position(trainer.step);
    let mut window = Window::start();
    let mut last_eval = None;
    let mut order = EpochOrder { epoch: None, order: Vec::new() };
    let mut warned = false;

    // A run stopped during an evaluation does that evaluation first.
    if let Some(mut record) = state.pending.take() {
        if let Some(validation) = run.validation {
            let Some(eval) = evaluate_and_keep_best(trainer, state, run, validation)? else {
                state.pending = Some(record);
                return Err(stop_here(trainer, state, run, &mut *task));
            };
            (record.eval_loss, record.eval_perplexity) = (Some(eval.loss), Some(eval.loss.exp()));
            last_eval = Some(eval);
        }
        metrics::append(run.metrics, &record)?;
    }

    while trainer.step < total {
        let step = trainer.step;

        // The learning rate of this step.
        let lr = linear_schedule(run.lr, step, config.warmup(total), total);

        // Its micro-batches in this epoch's order; their gradients accumulated,
        // clipped, and the AdamW step.
        let order = order.of(step / per_epoch, run.train.len(), config.seed, run.shuffle);
        let batches = micro_batches(run.train, order, step % per_epoch, config.batch_size, config.grad_accum);
        let started = Instant::now();
        let result = match trainer.step_unless(&batches, lr, run.watch.stop) {
            Ok(result) => result,
            // Stopped between two micro-batches: the state before the step is kept.
            Err(StepError::Stopped) => return Err(stop_here(trainer, state, run, &mut *task)),
            Err(StepError::NoExamples) => return Err(TrainError::EmptyStep { step: step + 1 }),
            Err(StepError::NonFinite(loss)) => return Err(non_finite(loss, step, lr, run.checkpoints)),
        };
        let done = trainer.step;
        state.step = done;
        state.seconds += started.elapsed().as_secs_f64();
        state.positions += result.positions as u64;
        window.add(result.loss, result.positions);
        let epoch = done as f64 / per_epoch as f64;
        let last = done == total;

        // The log record (the window's throughput, before the evaluation's time).
        let logged = done.is_multiple_of(config.logging_every) || last;
        let tokens_per_second = window.tokens_per_second();
        let mut record = logged.then(|| Record {
            step: done,
            epoch,
            loss: Some(window.mean_loss()),
            lr: Some(lr),
            grad_norm: Some(result.grad_norm),
            tokens_per_second: Some(tokens_per_second),
            ..Default::default()
        });

        // The evaluation, and the best model so far.
        let due = (config.eval_every > 0 && done.is_multiple_of(config.eval_every)) || last;
        if let Some(validation) = run.validation.filter(|_| due) {
            let Some(eval) = evaluate_and_keep_best(trainer, state, run, validation)? else {
                // Stopped during the evaluation: the step is kept, and its
                // record waits in the checkpoint for the resumed run's evaluation.
                state.pending = Some(record.unwrap_or_else(|| Record { step: done, epoch, ..Default::default() }));
                return Err(stop_here(trainer, state, run, &mut *task));
            };
            match &mut record {
                Some(record) => (record.eval_loss, record.eval_perplexity) = (Some(eval.loss), Some(eval.loss.exp())),
                None => record = Some(Record::evaluation(done, epoch, eval.loss)),
            }
            last_eval = Some(eval);
            // Said at once, past a tenth of the run, so that the rest need not be waited for.
            if let (Some(before), Some((_, best))) = (run.base_eval_loss, state.best)
                && !warned
                && !last
                && done * 10 >= total
                && let Some(why) = crate::learned::by_validation(before, best, run.lr)
            {
                tracing::warn!("step {done} of {total}: {why} (Ctrl-C stops it with a checkpoint)");
                warned = true;
            }
        }
        if let Some(record) = &record {
            metrics::append(run.metrics, record)?;
        }
        if logged {
            task.set_message(format!(
                "epoch {epoch:.2} loss {:.4} lr {lr:.2e} {tokens_per_second:.0} tok/s",
                window.mean_loss()
            ));
            window = Window::start();
        }
        task.set_position(done);

        // The stop on Ctrl-C (after a checkpoint), and the checkpoint.
        if run.watch.stopped() && !last {
            return Err(stop_here(trainer, state, run, &mut *task));
        }
        if done.is_multiple_of(config.checkpoint_every) && !last {
            checkpoint::save(run.checkpoints, &trainer.model, &trainer.moments, state, config.keep_checkpoints)?;
        }
    }
    task.finish();
    Ok(last_eval)
}

/// Evaluates the trainer's model and, when it is the best so far, records it
/// and writes it to `best/`; `None` when stopped during the evaluation.
fn evaluate_and_keep_best<B: TrainBackend>(
    trainer: &Trainer<B>,
    state: &mut LoopState,
    run: &Loop<'_>,
    validation: &Validation,
) -> Result<Option<Evaluation>, TrainError> {
    let Some(eval) = validation.evaluate(trainer, run.config.batch_size, run.watch) else { return Ok(None) };
    if state.best.is_none_or(|(_, best)| eval.loss < best) {
        state.best = Some((trainer.step, eval.loss));
        if let Some(best) = &run.keep_best {
            tp06_model::ModelDir::write(&trainer.model, best.dir, best.files, run.watch.unstoppable())?;
        }
    }
    Ok(Some(eval))
}

/// Stops the loop after a checkpoint of the trainer and `state`: the error
/// that says where it is (or why it could not be written).
fn stop_here<B: TrainBackend>(
    trainer: &Trainer<B>,
    state: &LoopState,
    run: &Loop<'_>,
    task: &mut dyn tp06_artifact::ProgressTask,
) -> TrainError {
    task.finish();
    match checkpoint::save(run.checkpoints, &trainer.model, &trainer.moments, state, run.config.keep_checkpoints) {
        // (The stage, which knows the run directory, adds the command.)
        Ok(path) => TrainError::Interrupted { step: trainer.step, path, resume: None },
        Err(e) => e,
    }
}

/// The error of a step whose loss was not finite, with the last good checkpoint.
fn non_finite(loss: f64, step: u64, lr: f64, checkpoints: &Path) -> TrainError {
    let last = checkpoint::list(checkpoints).ok().and_then(|all| all.into_iter().next_back());
    let checkpoint = match last {
        Some(c) => format!("the last good checkpoint is `{}` (step {})", c.dir.display(), c.state.step),
        None => "no checkpoint had been written yet".into(),
    };
    TrainError::NonFinite { step: step + 1, loss, lr, checkpoint }
}

/// The steps since the last log record: their mean loss and throughput.
struct Window {
    loss: f64,
    steps: u64,
    positions: usize,
    start: Instant,
}

impl Window {
    fn start() -> Self {
        Self { loss: 0.0, steps: 0, positions: 0, start: Instant::now() }
    }

    fn add(&mut self, loss: f64, positions: usize) {
        self.loss += loss;
        self.steps += 1;
        self.positions += positions;
    }

    fn mean_loss(&self) -> f64 {
        self.loss / self.steps as f64
    }

    fn tokens_per_second(&self) -> f64 {
        self.positions as f64 / self.start.elapsed().as_secs_f64().max(1e-9)
    }
}

/// The example order of the current epoch, drawn once per epoch.
struct EpochOrder {
    epoch: Option<u64>,
    order: Vec<usize>,
}

impl EpochOrder {
    fn of(&mut self, epoch: u64, n: usize, seed: u64, shuffle: bool) -> &[usize] {
        if self.epoch != Some(epoch) {
            self.order = epoch_order(n, seed, epoch, shuffle);
            self.epoch = Some(epoch);
        }
        &self.order
    }
}

/// A seeded permutation per epoch (HF shuffles every epoch with a seeded sampler).
pub(crate) fn epoch_order(n: usize, seed: u64, epoch: u64, shuffle: bool) -> Vec<usize> {
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
pub(crate) fn micro_batches<'a>(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_step_counting() {
        // The course with ~1,200 articles: 600 micro-batches → 75 steps per epoch.
        assert_eq!(steps_per_epoch(1200, 2, 8), 75);
        // 923 articles: 462 micro-batches (the last of 1) → 58 steps, the last of 6.
        assert_eq!(steps_per_epoch(923, 2, 8), 58);
        let examples: Vec<Example> = (0..923)
            .map(|i| Example { input_ids: vec![i], labels: vec![i as i64], attention: vec![true], positions: None })
            .collect();
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
