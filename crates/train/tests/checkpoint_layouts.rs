//! Checkpoints written before the one key scheme still load and resume: a
//! full fine-tune's (`model.safetensors` under HF's keys) and a LoRA run's
//! (`adapter.safetensors` under our names alone), both written at commit
//! 52b3c42 after the first step of the runs of `resume.rs` and
//! `resume_lora.rs` and committed in `fixtures/train/checkpoints/`
//! (`fixtures/make_checkpoint_fixtures.sh`). Each loads as its files hold
//! it, reads back the same once written by today's writer, and resumes to
//! the same weights from either. One test, in its own binary, for the
//! dropout (see `resume.rs`).

mod common;

use std::collections::BTreeMap;

use common::*;
use tp06_model::names;
use tp06_train::checkpoint::{self, Checkpoint, Restored};
use tp06_train::trainer::{Trainer, TrainerSettings};
use tp06_train::{Config, LoopState};

fn committed(layout: &str) -> Checkpoint {
    let dir = fixture("checkpoints").join(layout);
    let state: LoopState = serde_json::from_str(&std::fs::read_to_string(dir.join("state.json")).unwrap()).unwrap();
    Checkpoint { dir, state }
}

fn moment_values(moments: &BTreeMap<String, tp06_train::optim::Moments<tp06_model::backend::Cpu>>) -> Vec<Vec<f32>> {
    let flat = |t: &burn::tensor::Tensor<tp06_model::backend::Cpu, 1>| t.clone().into_data().into_vec::<f32>().unwrap();
    moments.values().flat_map(|m| [flat(&m.m), flat(&m.v)]).collect()
}

/// `restored` resumed to `total` steps by a fresh trainer: its weights.
fn resumed(
    restored: Restored<B>,
    new: impl Fn() -> Trainer<B>,
    train: &[tp06_train::examples::Example],
    c: &Config,
    state: &LoopState,
    total: u64,
) -> BTreeMap<String, Vec<f32>> {
    let (model, moments) = restored;
    let mut trainer = new();
    trainer.resume(model, moments, state.step);
    let dir = tempfile::tempdir().unwrap();
    run_loop(&mut trainer, train, c, dir.path(), total, false, &mut state.clone()).unwrap();
    values(&trainer.model)
}

/// The checkpoint of `old` loaded for `like`, checked against its files,
/// written again by today's writer and loaded back: both resume alike.
fn check(
    old: &Checkpoint,
    gpt: &tp06_model::Gpt2Config,
    like: &tp06_model::Gpt2<B>,
    new: impl Fn() -> Trainer<B>,
    train: &[tp06_train::examples::Example],
    c: &Config,
    total: u64,
) {
    let device = Default::default();
    let (model, moments) = checkpoint::load::<B>(old, gpt, like, &device).unwrap();
    // Each value is the one its file holds, whatever key it is under.
    let weights = ["model.safetensors", "adapter.safetensors"].map(|f| old.dir.join(f));
    let file = weights.iter().find(|p| p.is_file()).unwrap();
    let held: BTreeMap<String, Vec<f32>> = tp06_model::read_tensors(file)
        .unwrap()
        .into_iter()
        .map(|(key, (_, v))| (names::our_name(&key).to_string(), v))
        .collect();
    let loaded = values(&model);
    assert!(held.len() > 8, "{}: {} tensors", file.display(), held.len());
    for (name, v) in &held {
        assert_eq!(&loaded[name], v, "{name} of {}", file.display());
    }
    let optimizer = tp06_model::read_tensors(&old.dir.join("optimizer.safetensors")).unwrap();
    assert_eq!(optimizer.len(), 2 * moments.len(), "every moment read");
    for (name, m) in &moments {
        let flat = m.m.clone().into_data().into_vec::<f32>().unwrap();
        assert_eq!(flat, optimizer[&format!("m.{name}")].1, "m.{name}");
    }

    // Written again by today's writer (one key scheme), it reads back the same.
    let root = tempfile::tempdir().unwrap();
    let again = checkpoint::save(root.path(), &model, &moments, &old.state, 1).unwrap();
    let again = Checkpoint { dir: again, state: old.state.clone() };
    let rewritten = checkpoint::load::<B>(&again, gpt, like, &device).unwrap();
    assert_eq!(values(&rewritten.0), loaded, "the same weights after a write and a read");
    assert_eq!(moment_values(&rewritten.1), moment_values(&moments), "the same moments");

    // And both resume to bit-identical weights.
    let from_old = resumed((model, moments), &new, train, c, &old.state, total);
    let from_new = resumed(rewritten, &new, train, c, &old.state, total);
    assert_eq!(from_old, from_new, "{}: resumed alike from either layout", old.dir.display());
    assert_ne!(from_old, loaded, "the resumed run trained");
}

#[test]
fn checkpoints_of_the_earlier_key_schemes_load_and_resume_alike() {
    // A full fine-tune, as `resume.rs` runs it.
    let c = Config { checkpoint_every: 3, max_steps: Some(7), ..config() };
    let train = examples("masked");
    let (model, gpt) = load("masked", true);
    let settings = TrainerSettings { max_grad_norm: 1.0, ..TrainerSettings::of(&c) };
    let new = || Trainer::new(model.clone(), course_plan(&gpt), settings.clone(), Default::default());
    let full = committed("full");
    assert_eq!(full.state.step, 1);
    check(&full, &gpt, &model, new, &train, &c, 7);

    // A LoRA run, as `resume_lora.rs` runs it.
    let c = Config { checkpoint_every: 3, max_steps: Some(6), ..config() };
    let (model, plan, train, grown) = lora_run();
    let settings = TrainerSettings { max_grad_norm: 1.0, ..TrainerSettings::of(&c) };
    let new = || Trainer::new(model.clone(), plan.clone(), settings.clone(), Default::default());
    let old = committed("lora");
    let keys = tp06_model::read_tensors(&old.dir.join("adapter.safetensors")).unwrap();
    assert!(keys.contains_key(names::WTE), "the earlier scheme: our names alone");
    check(&old, &grown, &model, new, &train, &c, 6);
}
