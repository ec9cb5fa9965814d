//! The backward pass block by block ([`tp06_train::backprop`]) against one
//! `backward()` over the whole pass: the same loss and the same gradient
//! bits for every freeze plan (LoRA too), dropout on, with the blocks' activations kept
//! or recomputed (activation checkpointing); and whole trainings with and
//! without checkpointing end with the same weights.

mod common;

use std::collections::BTreeMap;

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use common::*;
use tp06_model::{BlockCount, FreezeConfig, FreezePlan, Gpt2, Gpt2Config, Kernels, Pass, WteFreeze};
use tp06_train::TrainerSettings;
use tp06_train::backprop::{Activations, micro_batch};
use tp06_train::examples::Example;
use tp06_train::trainer::{Batch, Named, Trainer, apply_freeze, nll_sum};

/// Every parameter's gradient, by HF name, flattened.
struct AllGrads<'a> {
    path: Vec<String>,
    gradients: &'a <B as AutodiffBackend>::Gradients,
    out: BTreeMap<String, Vec<f32>>,
}

impl ModuleVisitor<B> for AllGrads<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.into());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = param.val().grad(self.gradients) {
            self.out.insert(self.path.join("."), g.into_data().convert::<f32>().into_vec().unwrap());
        }
    }
}

fn flat(sums: Named<<B as AutodiffBackend>::InnerBackend>) -> BTreeMap<String, Vec<f32>> {
    sums.into_iter().map(|(name, g)| (name, g.into_data().convert::<f32>().into_vec().unwrap())).collect()
}

fn pass(kernels: Kernels, plan: &FreezePlan) -> Pass {
    Pass::training(7).with_kernels(kernels).with_wte_trained_from(plan.wte_trainable_from)
}

/// One `backward()` over the whole pass: the loss and every trained parameter's gradient.
fn whole_graph(
    model: &Gpt2<B>,
    plan: &FreezePlan,
    batch: &Batch<B>,
    kernels: Kernels,
) -> (f32, BTreeMap<String, Vec<f32>>) {
    let loss = nll_sum(model, batch, &mut pass(kernels, plan)) / 3.0;
    let gradients = loss.backward();
    let mut grads = AllGrads { path: Vec::new(), gradients: &gradients, out: BTreeMap::new() };
    model.visit(&mut grads);
    (loss.into_scalar(), grads.out)
}

fn segmented(
    model: &Gpt2<B>,
    plan: &FreezePlan,
    batch: &Batch<B>,
    kernels: Kernels,
    activations: Activations,
) -> (f32, BTreeMap<String, Vec<f32>>) {
    let mut sums = Named::new();
    let loss = micro_batch(model, plan, batch, 3.0, pass(kernels, plan), 7, activations, &mut sums);
    (loss.into_scalar(), flat(sums))
}

fn plans(config: &Gpt2Config) -> Vec<(&'static str, FreezePlan)> {
    let rows = FreezeConfig { wte: WteFreeze::PretrainedRows, wpe: true, lower_blocks: BlockCount::Half, ln_f: false };
    let top =
        FreezeConfig { wte: WteFreeze::All, wpe: true, lower_blocks: BlockCount::Count(config.n_layer), ln_f: false };
    vec![
        ("course", course_plan(config)),
        ("nothing frozen", nothing_frozen(config)),
        ("new wte rows", FreezePlan::new(&rows, config, config.vocab_size - 5)),
        ("ln_f only", FreezePlan::new(&top, config, config.vocab_size)),
    ]
}

/// The same loss and the same gradient bits as one `backward()` over the
/// whole pass, for each freeze plan, on both kernel routes, activations kept
/// or recomputed; dropout on, padding in the batch.
#[test]
fn block_by_block_equals_one_backward_bit_for_bit() {
    let (model, config) = load("masked", true);
    let train = examples("masked");
    let refs: Vec<&Example> = train[..2].iter().collect();
    assert!(refs.iter().any(|e| e.attention.iter().any(|a| !a)), "the batch has padding");
    let batch = Batch::<B>::new(&refs, &Default::default());
    for (what, plan) in plans(&config) {
        agrees(what, &apply_freeze(model.clone(), &plan), &plan, &batch);
    }
    // LoRA: peft's trained adapter (A and B non-zero) on c_attn and c_fc, with
    // the adapters' own dropout, the base frozen but the last rows of wte.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/lora/train-plain/final");
    let (mut adapted, _) = tp06_model::lora::load_adapter(model, &dir, &Default::default()).unwrap();
    for block in &mut adapted.h {
        for lora in [&mut block.attn.c_attn.lora, &mut block.mlp.c_fc.lora].into_iter().flatten() {
            lora.dropout = tp06_model::Dropout { p: 0.1 };
        }
    }
    let rows = FreezeConfig { wte: WteFreeze::PretrainedRows, wpe: true, lower_blocks: BlockCount::Half, ln_f: false };
    let plan = FreezePlan::new(&rows, &config, config.vocab_size - 5).under_lora(&config);
    agrees("lora", &apply_freeze(adapted, &plan), &plan, &batch);
}

/// `model` under `plan` gives the same loss and gradient bits block by
/// block as in one backward, on both kernel routes, activations kept or recomputed.
fn agrees(what: &str, model: &Gpt2<B>, plan: &FreezePlan, batch: &Batch<B>) {
    for kernels in [Kernels::Backend, Kernels::Composed] {
        let (loss, expected) = whole_graph(model, plan, batch, kernels);
        let trained: Vec<&String> = expected.keys().collect();
        assert!(!trained.is_empty(), "{what}: something trains");
        for activations in [Activations::Kept, Activations::Recomputed] {
            let (got_loss, got) = segmented(model, plan, batch, kernels, activations);
            let case = format!("{what}, {kernels}, {activations:?}");
            assert_eq!(got_loss.to_bits(), loss.to_bits(), "{case}: loss");
            assert_eq!(got.keys().collect::<Vec<_>>(), trained, "{case}: the same parameters have a gradient");
            for (name, g) in &expected {
                assert!(g.iter().any(|v| *v != 0.0), "{case}: {name}'s gradient is not all zero");
                let same = got[name].iter().zip(g).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{case}: {name} differs");
            }
        }
    }
}

/// Gradients add up across micro-batches into the same sums, and a plan
/// under which nothing trains gives the loss and no gradient.
#[test]
fn micro_batches_accumulate_and_a_frozen_model_has_no_gradient() {
    let (model, config) = load("masked", true);
    let train = examples("masked");
    let plan = nothing_frozen(&config);
    let model = apply_freeze(model, &plan);
    let (a, b): (Vec<&Example>, Vec<&Example>) = (train[..2].iter().collect(), train[2..4].iter().collect());
    let device = Default::default();
    let mut sums = Named::new();
    for refs in [&a, &b] {
        let batch = Batch::<B>::new(refs, &device);
        micro_batch(&model, &plan, &batch, 3.0, pass(Kernels::Backend, &plan), 7, Activations::Kept, &mut sums);
    }
    let mut expected: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    for refs in [&a, &b] {
        let batch = Batch::<B>::new(refs, &device);
        let (_, grads) = whole_graph(&model, &plan, &batch, Kernels::Backend);
        for (name, g) in grads {
            let sum = expected.entry(name).or_insert_with(|| vec![0.0; g.len()]);
            sum.iter_mut().zip(&g).for_each(|(s, v)| *s += v);
        }
    }
    let got = flat(sums);
    assert_eq!(got.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>());
    for (name, g) in &expected {
        // The first micro-batch's gradient is the sum's start (0 + g = g), so the bits agree.
        let same = got[name].iter().zip(g).all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "{name}");
    }

    let all =
        FreezeConfig { wte: WteFreeze::All, wpe: true, lower_blocks: BlockCount::Count(config.n_layer), ln_f: true };
    let frozen = FreezePlan::new(&all, &config, config.vocab_size);
    let model = apply_freeze(model, &frozen);
    let batch = Batch::<B>::new(&a, &device);
    let loss: f32 = (nll_sum(&model, &batch, &mut pass(Kernels::Backend, &frozen)) / 3.0).into_scalar();
    let mut sums = Named::new();
    let got =
        micro_batch(&model, &frozen, &batch, 3.0, pass(Kernels::Backend, &frozen), 7, Activations::Kept, &mut sums);
    assert_eq!(got.into_scalar().to_bits(), loss.to_bits());
    assert!(sums.is_empty());
}

/// Whole trainings (clipping, AdamW, accumulation over 4 micro-batches,
/// dropout) with activation checkpointing end with the same weights, bit for
/// bit, as without, for the course's plan and the new-rows plan.
#[test]
fn checkpointing_changes_no_bit_of_a_training() {
    let c = config();
    let (model, gpt) = load("masked", true);
    let train = examples("masked");
    let micro: Vec<Vec<&Example>> = train.chunks(2).take(4).map(|c| c.iter().collect()).collect();
    let (grown, rows_plan, rows_train, _) = grown_with_new_rows();
    let rows_micro: Vec<Vec<&Example>> = rows_train.chunks(2).take(4).map(|c| c.iter().collect()).collect();
    for (what, model, plan, micro) in
        [("course", model, course_plan(&gpt), &micro), ("new wte rows", grown, rows_plan, &rows_micro)]
    {
        let model = &model;
        let run = |checkpointing: bool| {
            let settings = TrainerSettings {
                max_grad_norm: 1.0,
                seed: 42,
                activations: if checkpointing { Activations::Recomputed } else { Activations::Kept },
                ..TrainerSettings::of(&c)
            };
            let mut trainer = Trainer::<B>::new(model.clone(), plan.clone(), settings, Default::default());
            let results: Vec<_> = (0..3).map(|_| trainer.step(micro, 1e-3).unwrap()).collect();
            (results, values(&trainer.model))
        };
        let (kept, kept_weights) = run(false);
        let (recomputed, recomputed_weights) = run(true);
        assert_eq!(kept, recomputed, "{what}: losses and gradient norms");
        let before = values(model);
        let moved = kept_weights.iter().filter(|(name, w)| before[*name] != **w).count();
        assert!(kept[0].grad_norm > 0.0 && moved > 0, "{what}: it trains");
        assert_eq!(kept_weights, recomputed_weights, "{what}: weights");
    }
}
