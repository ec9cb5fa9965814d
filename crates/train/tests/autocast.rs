//! Mixed-precision training (`train.precision = "bf16"`) against the same
//! training in f32: the products in bf16 only perturb the numbers by bf16's
//! rounding (unit roundoff 2⁻⁹ ≈ 0.2 %), the weights and the optimiser stay f32.
//!
//! Tolerances: per-step loss within 1 % relative of f32's and gradient norm
//! within 5 %; after three steps, the bf16 run's weights are on average closer
//! to the f32 run's than a quarter of how far the steps moved them.

mod common;

use burn::tensor::DType;
use common::*;
use tp06_model::Precision;
use tp06_train::examples::Example;
use tp06_train::trainer::{StepResult, Trainer, TrainerSettings};

fn mean_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs() as f64).sum::<f64>() / a.len() as f64
}

#[test]
fn bf16_products_train_like_f32_with_f32_weights() {
    let (model, gpt) = load("full", false);
    let initial = values(&model);
    let c = config();
    let train = examples("full");
    let micro: Vec<Vec<&Example>> = train.iter().take(8).collect::<Vec<_>>().chunks(2).map(|c| c.to_vec()).collect();
    let run = |precision: Precision| -> (Vec<StepResult>, Trainer<B>) {
        let mut trainer =
            Trainer::new(model.clone(), nothing_frozen(&gpt), TrainerSettings::of(&c), Default::default());
        trainer.settings.autocast = precision;
        let steps = (0..3).map(|_| trainer.step(&micro, 1e-3).unwrap()).collect();
        (steps, trainer)
    };
    let (f32_steps, f32_trainer) = run(Precision::F32);
    let (bf16_steps, bf16_trainer) = run(Precision::Bf16);

    for (i, (a, b)) in f32_steps.iter().zip(&bf16_steps).enumerate() {
        let loss = (b.loss - a.loss).abs() / a.loss;
        assert!(loss < 1e-2, "step {}: bf16 loss {} vs f32 {}", i + 1, b.loss, a.loss);
        let norm = (b.grad_norm - a.grad_norm).abs() / a.grad_norm;
        assert!(norm < 5e-2, "step {}: bf16 grad norm {} vs f32 {}", i + 1, b.grad_norm, a.grad_norm);
    }
    assert_ne!(f32_steps[0].loss, bf16_steps[0].loss, "the products ran in bf16");

    assert!(
        tp06_train::trainer::parameters(&bf16_trainer.model).iter().all(|(_, _, t)| t.dtype() == DType::F32),
        "weights stay f32"
    );
    let (ours, reference) = (values(&bf16_trainer.model), values(&f32_trainer.model));
    for (name, start) in &initial {
        let moved = mean_abs_diff(&reference[name], start);
        let apart = mean_abs_diff(&ours[name], &reference[name]);
        assert!(moved > 0.0, "{name} trained");
        assert!(apart < 0.25 * moved, "{name}: bf16 vs f32 weights {apart:e} apart, the steps moved them {moved:e}");
    }

    // Evaluation runs under the same precision.
    let (f32_eval, _, _) = f32_trainer.evaluate(&train, 2);
    let (bf16_eval, _, _) = {
        let mut t = Trainer::new(
            f32_trainer.model.clone(),
            nothing_frozen(&gpt),
            TrainerSettings { max_grad_norm: 1.0, seed: 42, ..TrainerSettings::of(&c) },
            Default::default(),
        );
        t.settings.autocast = Precision::Bf16;
        t.evaluate(&train, 2)
    };
    assert!((bf16_eval - f32_eval).abs() / f32_eval < 1e-2, "eval {bf16_eval} vs {f32_eval}");
    assert_ne!(bf16_eval, f32_eval);
}
