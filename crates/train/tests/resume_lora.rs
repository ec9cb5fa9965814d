//! Resuming an interrupted LoRA run ends with bit-identical adapters, added
//! rows and moments, as a full fine-tune does (`resume.rs`): their dropout
//! masks repeat. The checkpoint holds what trains (the adapters and `wte`),
//! not the frozen base. In its own test binary, as `resume.rs`, for the dropout.

mod common;

use common::*;
use tp06_model::lora;
use tp06_model::names;
use tp06_train::trainer::{Trainer, TrainerSettings};
use tp06_train::{Config, metrics};

#[test]
fn an_interrupted_lora_run_resumes_to_identical_weights() {
    let c = Config { checkpoint_every: 3, max_steps: Some(6), ..config() };
    // New rows that train (pretrained-rows) and adapters with dropout on every layer.
    let (model, plan, train, grown) = lora_run();
    let gpt = &grown;
    let settings = TrainerSettings { max_grad_norm: 1.0, ..TrainerSettings::of(&c) };
    let mut straight = Trainer::new(model.clone(), plan.clone(), settings.clone(), Default::default());
    let dir_a = tempfile::tempdir().unwrap();
    run_loop(&mut straight, &train, &c, dir_a.path(), 6, false, &mut new_state()).unwrap();

    let dir_b = tempfile::tempdir().unwrap();
    let mut first = Trainer::new(model.clone(), plan.clone(), settings.clone(), Default::default());
    let err = run_loop(&mut first, &train, &c, dir_b.path(), 6, true, &mut new_state()).unwrap_err();
    assert!(matches!(err, tp06_train::TrainError::Interrupted { step: 1, .. }), "{err}");
    let last = tp06_train::checkpoint::list(&dir_b.path().join("checkpoints")).unwrap().pop().unwrap();
    assert!(last.dir.join("adapter.safetensors").exists(), "the adapters are checkpointed");
    assert!(!last.dir.join("model.safetensors").exists(), "the frozen base is not copied");
    let held = tp06_model::read_tensors(&last.dir.join("adapter.safetensors")).unwrap();
    assert_eq!(held.len(), 2 * 4 * gpt.n_layer + 1, "every adapter and wte");
    assert!(held.keys().all(|k| k.starts_with(names::PREFIX)), "under HF's keys, as a full checkpoint's");
    assert!(held.contains_key(&names::hf_key(names::WTE)));
    // A fresh trainer, as a new process would make it: its adapters are the fresh ones.
    let mut resumed = Trainer::new(model.clone(), plan.clone(), settings, Default::default());
    let (restored, moments) =
        tp06_train::checkpoint::load::<B>(&last, &grown, &resumed.model, &Default::default()).unwrap();
    assert_eq!(values(&restored), values(&first.model), "the checkpoint is the model as it was");
    // A checkpoint of the earlier layout (the whole base, the adapters beside it) still loads.
    let earlier = tempfile::tempdir().unwrap();
    tp06_model::save_safetensors(&first.model, &earlier.path().join("model.safetensors")).unwrap();
    tp06_model::write_tensors::<B>(
        &earlier.path().join("adapter.safetensors"),
        first.model.lora_params(),
        tp06_artifact::Watch::none(),
    )
    .unwrap();
    std::fs::copy(last.dir.join("optimizer.safetensors"), earlier.path().join("optimizer.safetensors")).unwrap();
    let earlier_checkpoint = tp06_train::checkpoint::Checkpoint { dir: earlier.path().to_path_buf(), ..last.clone() };
    let (restored_earlier, _) =
        tp06_train::checkpoint::load::<B>(&earlier_checkpoint, &grown, &resumed.model, &Default::default()).unwrap();
    assert_eq!(values(&restored_earlier), values(&first.model), "the earlier layout is the model as it was");
    assert!(moments.keys().any(|k| lora::is_lora(k)) && moments.contains_key("wte.weight"));
    assert!(moments.keys().all(|k| lora::is_lora(k) || k == "wte.weight"), "no moments for the frozen base");
    resumed.resume(restored, moments, last.state.step);
    let mut state = last.state.clone();
    metrics::truncate_after(&dir_b.path().join("metrics.jsonl"), 1).unwrap();
    run_loop(&mut resumed, &train, &c, dir_b.path(), 6, false, &mut state).unwrap();

    let (a, b) = (values(&straight.model), values(&resumed.model));
    assert_eq!(a, b, "bit-identical after resume");
    assert!(a.keys().filter(|k| lora::is_lora(k)).count() == 2 * 4 * gpt.n_layer, "every adapter is compared");
    let initial = values(&model);
    assert!(a.iter().filter(|(k, _)| lora::is_lora(k)).all(|(k, v)| *v != initial[k]), "every adapter trained");
    let metrics_of = |dir: &std::path::Path| {
        metrics::read(&dir.join("metrics.jsonl")).unwrap().iter().map(|r| (r.step, r.loss)).collect::<Vec<_>>()
    };
    assert_eq!(metrics_of(dir_a.path()), metrics_of(dir_b.path()));
}
