//! The training loop against HF `Trainer` (`fixtures/make_train_fixtures.py`),
//! and the loop's invariants: accumulation, freezing.
//!
//! Tolerances: per-step loss within 1e-5 relative, gradient norm within 1e-4
//! relative, learning rate within 1e-12, trained weights within 2e-5 absolute.
//!
//! The `clipped` case is the one where clipping and weight decay show: its
//! gradient norms are all above its `max_grad_norm`, and HF's own runs
//! without the decay (without the clipping) end with every tensor at least
//! 8.7e-5 (8.8e-4) away, 4× (44×) the weight tolerance, at most 2.6e-3
//! (1.6e-2): `fixtures/make_train_fixtures.py` prints it.

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;
use tp06_model::{BlockCount, FreezeConfig, FreezePlan, HfConfig, Kernels, WteFreeze, lora};
use tp06_train::examples::Example;
use tp06_train::metrics;
use tp06_train::trainer::{Trainer, TrainerSettings};

#[test]
fn twenty_steps_equal_hf_trainer() {
    for case in ["course", "masked", "full", "clipped"] {
        let golden: Value =
            serde_json::from_str(&std::fs::read_to_string(fixture(case).join("golden.json")).unwrap()).unwrap();
        let (model, gpt) = load(case, false);
        let initial = values(&model);
        let c = config_of(&golden["args"]);
        let plan = if matches!(case, "full" | "clipped") { nothing_frozen(&gpt) } else { course_plan(&gpt) };
        let mut trainer = Trainer::new(model, plan.clone(), TrainerSettings::of(&c), Default::default());
        let dir = tempfile::tempdir().unwrap();
        run_loop(&mut trainer, &examples(case), &c, dir.path(), 20, false, &mut new_state()).unwrap();

        let records = metrics::read(&dir.path().join("metrics.jsonl")).unwrap();
        assert_eq!(records.len(), 20);
        let expect =
            |key: &str| golden[key].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect::<Vec<_>>();
        for (i, (record, (loss, (norm, lr)))) in records
            .iter()
            .zip(expect("losses").into_iter().zip(expect("grad_norms").into_iter().zip(expect("learning_rates"))))
            .enumerate()
        {
            let ours = record.loss.unwrap();
            assert!(((ours - loss) / loss).abs() < 1e-5, "{case} step {}: loss {ours} vs HF {loss}", i + 1);
            let ours = record.grad_norm.unwrap();
            assert!(((ours - norm) / norm).abs() < 1e-4, "{case} step {}: grad norm {ours} vs HF {norm}", i + 1);
            assert!((record.lr.unwrap() - lr).abs() < 1e-12, "{case} step {}: lr", i + 1);
        }
        if case == "clipped" {
            assert!(expect("grad_norms").iter().all(|&n| n > c.max_grad_norm), "{case}: every step is clipped");
        }

        let bytes = std::fs::read(fixture(case).join("final.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        for (name, ours) in values(&trainer.model) {
            let hf: Vec<f32> = st
                .tensor(&name)
                .unwrap()
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            let diff = ours.iter().zip(&hf).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(diff < 2e-5, "{case} {name}: max |Δ| = {diff}");
            if plan.frozen.contains(&name) {
                assert_eq!(ours, initial[&name], "{case}: frozen {name} is bit-identical");
            } else {
                assert_ne!(ours, initial[&name], "{case}: trainable {name} moved");
            }
        }
    }
}

/// The loop's configuration for a fixture's training arguments (HF's names).
fn config_of(args: &Value) -> tp06_train::Config {
    let arg = |key: &str| args[key].as_f64().unwrap_or_else(|| panic!("golden.json: args.{key}"));
    tp06_train::Config {
        lr: tp06_train::LearningRate::Fixed(arg("learning_rate")),
        warmup_steps: arg("warmup_steps") as u64,
        weight_decay: arg("weight_decay"),
        max_grad_norm: arg("max_grad_norm"),
        ..config()
    }
}

/// Evaluation's summed NLL over the first optimiser step's examples, divided
/// as HF divides the step's loss, is HF's loss of that step (before any
/// update); its mean is that sum over the label tokens.
#[test]
fn evaluation_sums_what_hf_trainer_sums() {
    let golden: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("masked").join("golden.json")).unwrap()).unwrap();
    let (model, gpt) = load("masked", false);
    let c = config();
    let trainer = Trainer::new(model, course_plan(&gpt), TrainerSettings::of(&c), Default::default());
    let first: Vec<Example> = examples("masked").into_iter().take(c.batch_size * c.grad_accum).collect();
    let refs: Vec<&Example> = first.iter().collect();
    let (mean, total, tokens) = trainer.evaluate(&first, 3);
    // Counted in examples.json: 102 labels other than -100 after position 0, 110 in all.
    assert_eq!(tokens, 102);
    assert_eq!(tp06_train::examples::hf_items_in_batch(&refs), 110);
    assert!(tokens > 0 && (mean - total / tokens as f64).abs() < 1e-12, "{mean} vs {total} / {tokens}");
    let hf = golden["losses"][0].as_f64().unwrap();
    let ours = total / tp06_train::examples::hf_items_in_batch(&refs) as f64;
    assert!(((ours - hf) / hf).abs() < 1e-5, "{ours} vs HF {hf}");
}

/// `max_grad_norm = 0` turns clipping off, as in HF (`max_grad_norm > 0` clips).
#[test]
fn max_grad_norm_zero_means_no_clipping() {
    let (model, gpt) = load("full", false);
    let c = config();
    let micro: Vec<Vec<Example>> = examples("full").chunks(2).take(4).map(|c| c.to_vec()).collect();
    let micro: Vec<Vec<&Example>> = micro.iter().map(|m| m.iter().collect()).collect();
    let mut off = Trainer::new(
        model.clone(),
        nothing_frozen(&gpt),
        TrainerSettings { max_grad_norm: 0.0, ..TrainerSettings::of(&c) },
        Default::default(),
    );
    let mut huge = Trainer::new(
        model,
        nothing_frozen(&gpt),
        TrainerSettings { max_grad_norm: 1e9, ..TrainerSettings::of(&c) },
        Default::default(),
    );
    assert_eq!(off.step(&micro, 1e-2).unwrap(), huge.step(&micro, 1e-2).unwrap());
    assert_eq!(values(&off.model), values(&huge.model));
}

#[test]
fn accumulating_2x8_equals_one_batch_of_16() {
    let (model, gpt) = load("masked", false);
    let c = config();
    let all = examples("masked");
    let sixteen: Vec<&Example> = all.iter().take(16).collect();
    let mut accumulated = Trainer::new(
        model.clone(),
        course_plan(&gpt),
        TrainerSettings { max_grad_norm: 1.0, seed: 42, ..TrainerSettings::of(&c) },
        Default::default(),
    );
    let mut whole = Trainer::new(
        model,
        course_plan(&gpt),
        TrainerSettings { max_grad_norm: 1.0, seed: 42, ..TrainerSettings::of(&c) },
        Default::default(),
    );
    let micro: Vec<Vec<&Example>> = sixteen.chunks(2).map(|c| c.to_vec()).collect();
    let a = accumulated.step(&micro, 1e-3).unwrap();
    let b = whole.step(std::slice::from_ref(&sixteen), 1e-3).unwrap();
    assert_eq!((a.positions, b.positions), (16 * 16, 16 * 16), "16 examples of 16 positions, padding included");
    assert!((a.loss - b.loss).abs() < 1e-6, "{} vs {}", a.loss, b.loss);
    assert!((a.grad_norm - b.grad_norm).abs() < 1e-6 * b.grad_norm.max(1.0));
    for ((name, x), (_, y)) in values(&accumulated.model).into_iter().zip(values(&whole.model)) {
        let diff = x.iter().zip(&y).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(diff < 1e-6, "{name}: {diff}");
    }
}

#[test]
fn pretrained_rows_stay_and_new_rows_learn() {
    let (model, plan, train, gpt) = grown_with_new_rows();
    let before = values(&model)["wte.weight"].clone();
    let c = config();
    let mut trainer = Trainer::new(model, plan, TrainerSettings::of(&c), Default::default());
    let dir = tempfile::tempdir().unwrap();
    run_loop(&mut trainer, &train, &c, dir.path(), 6, false, &mut new_state()).unwrap();
    let after = values(&trainer.model)["wte.weight"].clone();
    let n = gpt.vocab_size * gpt.n_embd;
    assert_eq!(&after[..n], &before[..n], "pretrained rows are bit-identical (no update, no decay)");
    for row in 0..4 {
        let at = n + row * gpt.n_embd;
        assert_ne!(&after[at..at + gpt.n_embd], &before[at..at + gpt.n_embd], "new row {row} learned");
    }
}

/// With only the new rows of `wte` training, the tied head's backward skips the
/// pretrained rows (`Pass::wte_trained_from`); a step must equal the step of
/// the composed ops, which compute the whole gradient and mask it.
#[test]
fn new_rows_only_head_gradient_equals_the_masked_full_gradient() {
    let (model, plan, train, _) = grown_with_new_rows();
    let c = config();
    let micro: Vec<Vec<&Example>> = train.iter().take(8).collect::<Vec<_>>().chunks(2).map(|c| c.to_vec()).collect();
    let mut limited = Trainer::new(model.clone(), plan.clone(), TrainerSettings::of(&c), Default::default());
    let mut full = Trainer::new(model, plan, TrainerSettings::of(&c), Default::default());
    full.settings.kernels = Kernels::Composed;
    for step in 1..=3 {
        let a = limited.step(&micro, 1e-3).unwrap();
        let b = full.step(&micro, 1e-3).unwrap();
        assert!(((a.loss - b.loss) / b.loss).abs() < 1e-5, "step {step}: loss {} vs {}", a.loss, b.loss);
        assert!(
            ((a.grad_norm - b.grad_norm) / b.grad_norm).abs() < 1e-4,
            "step {step}: grad norm {} vs {}",
            a.grad_norm,
            b.grad_norm
        );
    }
    let (a, b) = (values(&limited.model), values(&full.model));
    for (name, x) in &a {
        let diff = x.iter().zip(&b[name]).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
        assert!(diff < 2e-5, "{name}: max |Δ| = {diff}");
    }
}

#[test]
fn a_step_without_examples_is_an_error_and_empty_micro_batches_are_skipped() {
    let (model, gpt) = load("masked", false);
    let c = config();
    let all = examples("masked");
    let mut trainer = Trainer::new(
        model.clone(),
        course_plan(&gpt),
        TrainerSettings { max_grad_norm: 1.0, seed: 42, ..TrainerSettings::of(&c) },
        Default::default(),
    );
    assert_eq!(trainer.step(&[], 1e-3).unwrap_err(), tp06_train::trainer::StepError::NoExamples);
    assert_eq!(trainer.step(&[vec![], vec![]], 1e-3).unwrap_err(), tp06_train::trainer::StepError::NoExamples);
    let with_gap = trainer.step(&[vec![&all[0], &all[1]], vec![], vec![&all[2], &all[3]]], 1e-3).unwrap();
    let mut plain = Trainer::new(
        model,
        course_plan(&gpt),
        TrainerSettings { max_grad_norm: 1.0, seed: 42, ..TrainerSettings::of(&c) },
        Default::default(),
    );
    let without = plain.step(&[vec![&all[0], &all[1]], vec![&all[2], &all[3]]], 1e-3).unwrap();
    assert_eq!(with_gap, without);
}

/// LoRA against peft under HF `Trainer` (`fixtures/make_lora_fixtures.py`):
/// from the same initial adapter (peft's own, saved before training), 20
/// steps with the `masked` case's data and settings give HF's per-step loss
/// and gradient norm, and the adapter peft saved after them; in
/// `train-tokens` the added rows 96..99 of `wte` train too (peft's trainable
/// tokens) and end as peft's. The base weights stay bit-identical.
/// Tolerances as `twenty_steps_equal_hf_trainer`.
#[test]
fn lora_twenty_steps_equal_peft() {
    for case in ["train-plain", "train-tokens"] {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/lora").join(case);
        let golden: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap()).unwrap();
        let gpt = HfConfig::from_file(&dir.join("config.json")).unwrap().resolve().unwrap();
        let (base, _) = tp06_model::load::<B>(&dir.join("model.safetensors"), &gpt, &Default::default()).unwrap();
        let (model, info) = lora::load_adapter(base, &dir.join("initial"), &Default::default()).unwrap();
        let initial = values(&model);
        let tokens = !info.token_rows.is_empty();
        let freeze = FreezeConfig {
            wte: if tokens { WteFreeze::PretrainedRows } else { WteFreeze::All },
            wpe: true,
            lower_blocks: BlockCount::Count(0),
            ln_f: true,
        };
        let plan = FreezePlan::new(&freeze, &gpt, 96).under_lora(&gpt);
        let c = config_of(&golden["args"]);
        let mut trainer = Trainer::new(model, plan, TrainerSettings::of(&c), Default::default());
        let out = tempfile::tempdir().unwrap();
        let rows: Vec<Value> =
            serde_json::from_str(&std::fs::read_to_string(dir.join("examples.json")).unwrap()).unwrap();
        let train: Vec<Example> = rows.iter().map(example_of).collect();
        run_loop(&mut trainer, &train, &c, out.path(), 20, false, &mut new_state()).unwrap();

        let records = metrics::read(&out.path().join("metrics.jsonl")).unwrap();
        let expect =
            |key: &str| golden[key].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect::<Vec<_>>();
        for (i, (record, (loss, norm))) in
            records.iter().zip(expect("losses").into_iter().zip(expect("grad_norms"))).enumerate()
        {
            let ours = record.loss.unwrap();
            assert!(((ours - loss) / loss).abs() < 1e-5, "{case} step {}: loss {ours} vs peft {loss}", i + 1);
            let ours = record.grad_norm.unwrap();
            assert!(((ours - norm) / norm).abs() < 1e-4, "{case} step {}: grad norm {ours} vs peft {norm}", i + 1);
        }
        assert_eq!(records.len(), 20);

        // The adapter peft saved after training, read by the same reader.
        let (expected, _) = lora::load_adapter(trainer.model.clone(), &dir.join("final"), &Default::default()).unwrap();
        let (ours, theirs) = (values(&trainer.model), values(&expected));
        for (name, value) in &ours {
            let diff = value.iter().zip(&theirs[name]).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(diff < 2e-5, "{case} {name}: max |Δ| against peft = {diff}");
            if lora::is_lora(name) {
                assert_ne!(value, &initial[name], "{case}: {name} trained");
            } else if name != "wte.weight" {
                assert_eq!(value, &initial[name], "{case}: the base's {name} is bit-identical");
            }
        }
        let n = 96 * gpt.n_embd;
        let wte = (&ours["wte.weight"], &initial["wte.weight"]);
        assert_eq!(wte.0[..n], wte.1[..n], "{case}: the pretrained rows are bit-identical");
        assert_eq!(wte.0[n..] != wte.1[n..], tokens, "{case}: the added rows train when peft trains them");
    }
}
