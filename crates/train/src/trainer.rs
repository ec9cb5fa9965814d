//! The training loop, in the order HF `Trainer` runs it: for each optimiser
//! step, the learning rate; the micro-batches with their gradients accumulated
//! (the loss normalised over all label tokens of the accumulated batch); when
//! only new `wte` rows train, their gradient and moments alone (the pretrained
//! rows' gradient is left out, as HF's zeroing hook makes it zero);
//! clipping of the global norm; the AdamW step; logging, evaluation and
//! checkpoints.
//!
//! Parameters are addressed by their HF names; frozen ones carry no gradient,
//! so the backward pass stops below the lowest trainable tensor.

use std::collections::BTreeMap;
use std::ops::Range;

use burn::module::{AutodiffModule, ModuleMapper, Param};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::s;
use tp06_model::names;
use tp06_model::rng::{GAMMA, mix64};
use tp06_model::{Documents, FreezePlan, Gpt2, Gpt2Ops, Kernels, Layout, NamedParams, Pass, Precision, TrainBackend};

use crate::backprop::{self, Activations};
use crate::config::Config;
use crate::examples::{Example, IGNORE, hf_items_in_batch, label_tokens};
use crate::optim::{AdamW, Moments, clip_coefficient, decays, global_norm};

/// The flattened parameters (or gradients) of a model, by HF name.
pub type Named<B> = BTreeMap<String, Tensor<B, 1>>;

/// `(name, shape, flattened value)` of every parameter, in module order.
pub fn parameters<B: Backend>(model: &Gpt2<B>) -> Vec<(String, Vec<usize>, Tensor<B, 1>)> {
    NamedParams::of(model).params
}

/// Sets each parameter's gradient requirement from the freeze plan, or replaces
/// the values of the parameters named in `updates`.
struct Rebuild<'a, B: AutodiffBackend> {
    path: Vec<String>,
    plan: &'a FreezePlan,
    updates: Option<&'a mut Named<B::InnerBackend>>,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Rebuild<'_, B> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.into());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let name = self.path.join(".");
        let trains = self.plan.trains(&name);
        let (id, tensor, _) = param.consume();
        let dims = tensor.dims();
        let inner = match self.updates.as_mut().and_then(|u| u.remove(&name)) {
            Some(flat) => flat.reshape(dims),
            None => tensor.inner(),
        };
        Param::initialized(id, Tensor::from_inner(inner).set_require_grad(trains))
    }
}

/// Applies the freeze plan: frozen parameters stop requiring gradients.
pub fn apply_freeze<B: AutodiffBackend>(model: Gpt2<B>, plan: &FreezePlan) -> Gpt2<B> {
    model.map(&mut Rebuild::<B> { path: Vec::new(), plan, updates: None })
}

/// A micro-batch as tensors.
pub struct Batch<B: Backend> {
    /// `[b, t]` token ids.
    pub ids: Tensor<B, 2, Int>,
    /// `b·(t−1)` next-token targets (0 where ignored).
    pub targets: Vec<u32>,
    /// `b·(t−1)` weights: 1 where the target counts, else 0.
    pub weights: Vec<f32>,
    /// Its padding keys and, when the examples pack several articles, their documents.
    pub layout: Layout<B>,
    /// Token positions (padding included), for throughput.
    pub positions: usize,
}

impl<B: Backend> Batch<B> {
    /// Stacks `examples` (all of one length).
    pub fn new(examples: &[&Example], device: &B::Device) -> Self {
        let (b, t) = (examples.len(), examples[0].input_ids.len());
        let ids: Vec<i64> = examples.iter().flat_map(|e| e.input_ids.iter().map(|&i| i as i64)).collect();
        let mut targets = Vec::with_capacity(b * (t - 1));
        let mut weights = Vec::with_capacity(b * (t - 1));
        for e in examples {
            for &label in &e.labels[1..] {
                targets.push(if label == IGNORE { 0 } else { label as u32 });
                weights.push(if label == IGNORE { 0.0f32 } else { 1.0 });
            }
        }
        let any_pad = examples.iter().any(|e| e.attention.iter().any(|a| !a));
        let pad = any_pad.then(|| {
            let mask: Vec<bool> = examples.iter().flat_map(|e| e.attention.iter().map(|a| !a)).collect();
            Tensor::from_data(TensorData::new(mask, [b, t]), device)
        });
        // Packed examples keep their articles apart; the others run as one document each.
        let documents = examples.iter().any(|e| e.positions.is_some()).then(|| {
            let positions = examples.iter().flat_map(|e| match &e.positions {
                Some(positions) => positions.clone(),
                None => (0..t as u32).collect(),
            });
            Documents::new(positions.collect(), t)
        });
        let ids = Tensor::from_data(TensorData::new(ids, [b, t]), device);
        Self { ids, targets, weights, layout: Layout { pad, documents }, positions: b * t }
    }
}

/// Sum of the next-token negative log-likelihoods of `batch` (targets with
/// weight 0 excluded) in `pass`, as a one-element tensor.
pub fn nll_sum<B: Gpt2Ops>(model: &Gpt2<B>, batch: &Batch<B>, pass: &mut Pass) -> Tensor<B, 1> {
    let [b, t] = batch.ids.dims();
    let hidden = model.hidden(batch.ids.clone(), &batch.layout, None, pass); // [b, t, c]
    let c = hidden.dims()[2];
    let hidden = hidden.slice(s![.., 0..t - 1, ..]).reshape([b * (t - 1), c]); // [n, c]
    let logits = model.head_2d(hidden, pass); // [n, vocab]
    pass.nll_sum(logits, &batch.targets, &batch.weights)
}

/// What one optimiser step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepResult {
    /// Loss of the accumulated batch, normalised as HF `Trainer` does.
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Token positions processed (padding included).
    pub positions: usize,
}

/// Why a step could not be taken.
#[derive(Debug, Clone, PartialEq)]
pub enum StepError {
    /// The loss is NaN or infinite.
    NonFinite(f64),
    /// No micro-batch had an example: nothing to step on.
    NoExamples,
    /// Asked to stop between two micro-batches; nothing changed.
    Stopped,
}

/// Seed of the dropout masks of one micro-batch: a pure function of the run's
/// seed and the position in training, so a resumed run draws the same masks.
pub fn dropout_seed(seed: u64, step: u64, micro: usize) -> u64 {
    mix64(seed ^ GAMMA.wrapping_mul(step + 1) ^ (micro as u64).rotate_left(32))
}

/// How a trainer steps: everything besides the model, what trains and the device.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainerSettings {
    /// The optimiser.
    pub adamw: AdamW,
    /// Clip threshold of the global gradient norm (0: none).
    pub max_grad_norm: f64,
    /// Seed of the dropout masks.
    pub seed: u64,
    /// The precision of the matrix products in the forward passes
    /// ([`Pass::autocast`]); the weights and the optimiser stay f32.
    pub autocast: Precision,
    /// The operations' implementation in the forward passes ([`Pass::kernels`]).
    pub kernels: Kernels,
    /// Whether the blocks' activations are kept for the backward pass or
    /// recomputed there (activation checkpointing).
    pub activations: Activations,
}

impl TrainerSettings {
    /// The train stage's: its optimiser, clipping, seed and precision, on the
    /// backend's kernels.
    pub fn of(config: &Config) -> Self {
        Self {
            adamw: AdamW {
                beta1: config.adam_beta1,
                beta2: config.adam_beta2,
                epsilon: config.adam_epsilon,
                weight_decay: config.weight_decay,
            },
            max_grad_norm: config.max_grad_norm,
            seed: config.seed,
            autocast: config.precision,
            kernels: Kernels::Backend,
            activations: if config.gradient_checkpointing { Activations::Recomputed } else { Activations::Kept },
        }
    }
}

/// The model, its freeze plan and the optimiser state.
pub struct Trainer<B: AutodiffBackend> {
    /// The model being trained.
    pub model: Gpt2<B>,
    /// What trains.
    pub plan: FreezePlan,
    /// How it steps.
    pub settings: TrainerSettings,
    /// Moments by parameter name.
    pub moments: BTreeMap<String, Moments<B::InnerBackend>>,
    /// Optimiser steps taken.
    pub step: u64,
    device: B::Device,
    /// When only `wte`'s new rows train: their span in the flattened `wte`.
    /// Its gradient and moments cover that span only; the pretrained rows
    /// before it are never touched.
    wte_trained: Option<Range<usize>>,
}

impl<B: TrainBackend> Trainer<B> {
    /// A trainer for `model` (freeze plan applied here).
    pub fn new(model: Gpt2<B>, plan: FreezePlan, settings: TrainerSettings, device: B::Device) -> Self {
        let model = apply_freeze(model, &plan);
        let wte_trained = plan.wte_trainable_from.map(|from| {
            let [rows, cols] = model.wte.weight.dims();
            from.min(rows) * cols..rows * cols
        });
        Self { model, plan, settings, moments: BTreeMap::new(), step: 0, device, wte_trained }
    }

    /// Continues from a checkpoint: its model (freeze plan applied here), its
    /// optimiser moments and its step count.
    pub fn resume(&mut self, model: Gpt2<B>, moments: BTreeMap<String, Moments<B::InnerBackend>>, step: u64) {
        self.model = apply_freeze(model, &self.plan);
        self.moments = moments;
        self.step = step;
    }

    /// The device.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// One optimiser step over `micro_batches` at learning rate `lr`.
    pub fn step(&mut self, micro_batches: &[Vec<&Example>], lr: f64) -> Result<StepResult, StepError> {
        self.step_unless(micro_batches, lr, &std::sync::atomic::AtomicBool::new(false))
    }

    /// The same, given up between two micro-batches when `stop` is set
    /// ([`StepError::Stopped`]): the model, the moments and the step count are
    /// then as before the step.
    pub fn step_unless(
        &mut self,
        micro_batches: &[Vec<&Example>],
        lr: f64,
        stop: &std::sync::atomic::AtomicBool,
    ) -> Result<StepResult, StepError> {
        let all: Vec<&Example> = micro_batches.iter().flatten().copied().collect();
        if all.is_empty() {
            return Err(StepError::NoExamples);
        }
        let items = hf_items_in_batch(&all).max(1) as f64;
        let trainable: Vec<(String, Tensor<B, 1>)> = parameters(&self.model)
            .into_iter()
            .filter(|(name, _, _)| self.plan.trains(name))
            .map(|(name, _, t)| (name, t))
            .collect();
        let mut grads: Named<B::InnerBackend> = BTreeMap::new();
        let mut positions = 0usize;
        // The micro-batches' losses stay on the device until the last one: on a
        // GPU, one read per optimiser step instead of a wait per micro-batch.
        let mut losses = Vec::with_capacity(micro_batches.len());
        for (micro, examples) in micro_batches.iter().enumerate().filter(|(_, examples)| !examples.is_empty()) {
            tp06_artifact::fault::interrupt("micro-batch");
            if stop.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(StepError::Stopped);
            }
            let seed = dropout_seed(self.settings.seed, self.step, micro);
            B::seed(&self.device, seed);
            let pass = Pass::training(seed)
                .with_kernels(self.settings.kernels)
                .with_autocast(self.settings.autocast)
                .with_wte_trained_from(self.plan.wte_trainable_from);
            let batch = Batch::<B>::new(examples, &self.device);
            positions += batch.positions;
            let activations = self.settings.activations;
            losses.push(backprop::micro_batch(
                &self.model,
                &self.plan,
                &batch,
                items,
                pass,
                seed,
                activations,
                &mut grads,
            ));
        }
        let losses = Tensor::cat(losses, 0).into_data().convert::<f64>();
        let loss: f64 = losses.as_slice::<f64>().expect("f64 after convert").iter().sum();
        if !loss.is_finite() {
            return Err(StepError::NonFinite(loss));
        }
        if let Some(span) = &self.wte_trained
            && let Some(g) = grads.remove(names::WTE)
        {
            grads.insert(names::WTE.into(), g.slice(s![span.start..span.end]));
        }
        let grad_norm = global_norm(&grads.values().cloned().collect::<Vec<_>>());
        let max_norm = self.settings.max_grad_norm;
        let coef = if max_norm > 0.0 { clip_coefficient(grad_norm, max_norm) } else { 1.0 };

        self.step += 1;
        let mut updates: Named<B::InnerBackend> = BTreeMap::new();
        for (name, value) in trainable {
            let Some(grad) = grads.remove(&name) else { continue };
            let full = value.inner();
            // Only the new rows of `wte` step; the pretrained ones keep their exact values.
            let span = self.wte_trained.clone().filter(|_| name == names::WTE);
            let old = match &span {
                Some(span) => full.clone().slice(s![span.start..span.end]),
                None => full.clone(),
            };
            // Taken out of the map, so that nothing else holds them and they are updated in place.
            let mut moments =
                self.moments.remove(&name).unwrap_or_else(|| Moments { m: old.zeros_like(), v: old.zeros_like() });
            if let Some(span) = &span
                && moments.m.dims()[0] != span.len()
            {
                // A checkpoint written when the moments covered every row
                // (zero outside the span, which never had a gradient).
                moments.m = moments.m.slice(s![span.start..span.end]);
                moments.v = moments.v.slice(s![span.start..span.end]);
            }
            // `coef` is 1 when clipping is off or the norm is under the threshold: no product then.
            let (new, moments) = self.settings.adamw.step(old, grad, coef, moments, self.step, lr, decays(&name));
            self.moments.insert(name.clone(), moments);
            let new = match span {
                Some(span) => full.slice_assign(s![span.start..span.end], new),
                None => new,
            };
            updates.insert(name, new);
        }
        let model = self.model.clone();
        self.model = model.map(&mut Rebuild::<B> { path: Vec::new(), plan: &self.plan, updates: Some(&mut updates) });
        Ok(StepResult { loss, grad_norm, positions })
    }

    /// Mean next-token loss over `examples` (token-weighted) and the summed NLL,
    /// without dropout; batches of `batch_size`.
    pub fn evaluate(&self, examples: &[Example], batch_size: usize) -> (f64, f64, usize) {
        self.evaluate_unless(examples, batch_size, tp06_artifact::Watch::none()).expect("never stopped")
    }

    /// The same, its batches shown by `watch`, stopped between two of them
    /// when `watch` says so: `None` then.
    pub fn evaluate_unless(
        &self,
        examples: &[Example],
        batch_size: usize,
        watch: tp06_artifact::Watch<'_>,
    ) -> Option<(f64, f64, usize)> {
        let pass = Pass::inference().with_kernels(self.settings.kernels).with_autocast(self.settings.autocast);
        evaluate(&self.model.valid(), examples, batch_size, &self.device, &pass, watch)
    }
}

/// `(mean loss, total NLL, label tokens)` of `model` on `examples`, in `pass`
/// (an inference pass: no dropout), its batches shown by `watch` as the task
/// `validate`; `None` when `watch` says stop between two batches.
pub fn evaluate<B: Gpt2Ops>(
    model: &Gpt2<B>,
    examples: &[Example],
    batch_size: usize,
    device: &B::Device,
    pass: &Pass,
    watch: tp06_artifact::Watch<'_>,
) -> Option<(f64, f64, usize)> {
    let (mut total, mut tokens) = (0.0f64, 0usize);
    let chunks = examples.chunks(batch_size.max(1));
    let mut task = watch.begin("validate", chunks.len() as u64);
    for (done, chunk) in chunks.enumerate() {
        if watch.stops_at("eval-batch") {
            task.finish();
            return None;
        }
        let refs: Vec<&Example> = chunk.iter().collect();
        tokens += label_tokens(&refs);
        let batch = Batch::<B>::new(&refs, device);
        total += nll_sum(model, &batch, &mut pass.clone()).into_scalar().elem::<f64>();
        task.set_position(done as u64 + 1);
    }
    task.finish();
    Some((total / tokens.max(1) as f64, total, tokens))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropout_seeds_differ_by_position_and_repeat() {
        assert_eq!(dropout_seed(42, 3, 1), dropout_seed(42, 3, 1));
        assert_ne!(dropout_seed(42, 3, 1), dropout_seed(42, 3, 2));
        assert_ne!(dropout_seed(42, 3, 1), dropout_seed(42, 4, 1));
        assert_ne!(dropout_seed(42, 3, 1), dropout_seed(43, 3, 1));
    }

    /// The mix is splitmix64's finaliser (Steele, Lea & Flood 2014): seed 0 at
    /// step 0, micro-batch 0 mixes the golden gamma, whose value is splitmix64's
    /// published first output from state 0; mixing 0 gives 0.
    #[test]
    fn dropout_seed_mixes_as_splitmix64() {
        assert_eq!(dropout_seed(0, 0, 0), 0xe220_a839_7b1d_cdaf);
        assert_eq!(dropout_seed(0x9e37_79b9_7f4a_7c15, 0, 0), 0);
        // Step 1 mixes 2γ: splitmix64's second output.
        assert_eq!(dropout_seed(0, 1, 0), 0x6e78_9e6a_a1b9_65f4);
    }

    /// The seeds of neighbouring micro-batches look independent: all distinct,
    /// half their bits set on average, and a step or a micro-batch further
    /// flips half the bits (a weakened mix gives correlated masks).
    #[test]
    fn dropout_seeds_are_balanced_and_avalanche() {
        let seeds: Vec<Vec<u64>> =
            (0..64u64).map(|step| (0..16).map(|micro| dropout_seed(42, step, micro)).collect()).collect();
        let all: std::collections::BTreeSet<u64> = seeds.iter().flatten().copied().collect();
        assert_eq!(all.len(), 64 * 16, "all distinct");
        let mean = |bits: &[u32]| bits.iter().map(|&b| b as f64).sum::<f64>() / bits.len() as f64;
        let ones: Vec<u32> = seeds.iter().flatten().map(|s| s.count_ones()).collect();
        let by_step: Vec<u32> = (1..64)
            .flat_map(|t| (0..16).map(move |m| (t, m)))
            .map(|(t, m)| (seeds[t][m] ^ seeds[t - 1][m]).count_ones())
            .collect();
        let by_micro: Vec<u32> = (0..64)
            .flat_map(|t| (1..16).map(move |m| (t, m)))
            .map(|(t, m)| (seeds[t][m] ^ seeds[t][m - 1]).count_ones())
            .collect();
        // 1,024 (1,008, 960) draws of a Binomial(64, 1/2), std 4: 0.6 from 32 is 4.7–4.8 standard errors of a mean.
        for (what, bits) in
            [("bits set", ones), ("bits flipped by a step", by_step), ("bits flipped by a micro-batch", by_micro)]
        {
            assert!((mean(&bits) - 32.0).abs() < 0.6, "{what}: mean {}", mean(&bits));
        }
    }
}
