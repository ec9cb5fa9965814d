//! Helpers shared by the train crate's integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::backend::Autodiff;
use serde_json::Value;
use tp06_artifact::{NoProgress, Progress, ProgressTask, Watch};
use tp06_model::backend::Cpu;
use tp06_model::{BlockCount, FreezeConfig, FreezePlan, Gpt2, Gpt2Config, HfConfig, WteFreeze};
use tp06_train::examples::Example;
use tp06_train::optim::AdamW;
use tp06_train::trainer::{Trainer, parameters};
use tp06_train::{Config, LearningRate, Loop, LoopState, Packing, train_loop};

pub type B = Autodiff<Cpu>;

pub fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/train").join(case)
}

pub fn load(case: &str, dropout: bool) -> (Gpt2<B>, Gpt2Config) {
    let dir = fixture(case);
    let mut config = HfConfig::from_file(&dir.join("config.json")).unwrap().resolve().unwrap();
    if dropout {
        config.attn_pdrop = 0.1;
        config.embd_pdrop = 0.1;
        config.resid_pdrop = 0.1;
    }
    let (model, _) = tp06_model::load::<B>(&dir.join("model.safetensors"), &config, &Default::default()).unwrap();
    (model, config)
}

pub fn examples(case: &str) -> Vec<Example> {
    let rows: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(fixture(case).join("examples.json")).unwrap()).unwrap();
    rows.iter().map(example_of).collect()
}

/// One example as the fixture scripts write it (`input_ids`, `labels`, `attention_mask`).
pub fn example_of(r: &Value) -> Example {
    let list = |k: &str| r[k].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect::<Vec<_>>();
    Example {
        input_ids: list("input_ids").into_iter().map(|i| i as u32).collect(),
        labels: list("labels"),
        attention: list("attention_mask").into_iter().map(|m| m == 1).collect(),
        positions: None,
    }
}

pub fn config() -> Config {
    Config {
        epochs: 7,
        max_steps: Some(20),
        batch_size: 2,
        grad_accum: 4,
        lr: LearningRate::Fixed(1e-3),
        warmup_steps: 5,
        warmup_ratio: None,
        weight_decay: 0.01,
        adam_beta1: 0.9,
        adam_beta2: 0.999,
        adam_epsilon: 1e-8,
        max_grad_norm: 1.0,
        max_length: 16,
        seed: 42,
        pad_in_loss: true,
        packing: Packing::None,
        window_overlap: 0,
        logging_every: 1,
        eval_every: 0,
        checkpoint_every: 1000,
        keep_checkpoints: 2,
        precision: Default::default(),
        gradient_checkpointing: false,
        gguf: None,
    }
}

pub fn course_plan(config: &Gpt2Config) -> FreezePlan {
    let course = FreezeConfig { wte: WteFreeze::All, wpe: true, lower_blocks: BlockCount::Half, ln_f: false };
    FreezePlan::new(&course, config, config.vocab_size)
}

pub fn nothing_frozen(config: &Gpt2Config) -> FreezePlan {
    let none = FreezeConfig { wte: WteFreeze::None, wpe: false, lower_blocks: BlockCount::Count(0), ln_f: false };
    FreezePlan::new(&none, config, config.vocab_size)
}

pub fn adamw(c: &Config) -> AdamW {
    AdamW { beta1: c.adam_beta1, beta2: c.adam_beta2, epsilon: c.adam_epsilon, weight_decay: c.weight_decay }
}

pub fn values(model: &Gpt2<B>) -> BTreeMap<String, Vec<f32>> {
    parameters(model)
        .into_iter()
        .map(|(name, _, t)| (name, t.into_data().convert::<f32>().into_vec().unwrap()))
        .collect()
}

/// Progress whose task sets `stop` once `at` steps are done: a Ctrl-C right
/// after that step.
struct StopAt {
    at: u64,
    stop: Arc<AtomicBool>,
}

impl Progress for StopAt {
    fn begin(&self, _name: &str, _total: u64) -> Box<dyn ProgressTask> {
        Box::new(StopAt { at: self.at, stop: self.stop.clone() })
    }
}

impl ProgressTask for StopAt {
    fn set_position(&mut self, position: u64) {
        if position >= self.at {
            self.stop.store(true, Ordering::SeqCst);
        }
    }
    fn set_message(&mut self, _message: String) {}
    fn finish(&mut self) {}
}

/// Runs the loop to `total` steps in `dir` (`stop`: stopped as by Ctrl-C
/// after its first step).
pub fn run_loop(
    trainer: &mut Trainer<B>,
    train: &[Example],
    c: &Config,
    dir: &Path,
    total: u64,
    stop: bool,
    state: &mut LoopState,
) -> Result<(), tp06_train::TrainError> {
    let flag = Arc::new(AtomicBool::new(false));
    let progress: Box<dyn Progress> = match stop {
        true => Box::new(StopAt { at: trainer.step + 1, stop: flag.clone() }),
        false => Box::new(NoProgress),
    };
    let the_loop = Loop {
        config: c,
        lr: c.lr.fixed().expect("a set rate"),
        train,
        shuffle: false,
        total_steps: total,
        steps_per_epoch: tp06_train::steps_per_epoch(train.len(), c.batch_size, c.grad_accum),
        base_eval_loss: None,
        validation: None,
        keep_best: None,
        metrics: &dir.join("metrics.jsonl"),
        checkpoints: &dir.join("checkpoints"),
        watch: Watch { progress: &*progress, stop: &flag },
    };
    train_loop(trainer, state, &the_loop).map(|_| ())
}

pub fn new_state() -> LoopState {
    LoopState {
        version: tp06_train::CHECKPOINT_VERSION,
        fingerprint: "test".into(),
        step: 0,
        best: None,
        seconds: 0.0,
        positions: 0,
        config: serde_json::Value::Null,
        pending: None,
    }
}

/// The "masked" fixture's model with 4 new `wte` rows (ids 96..99, as the
/// vocab stage would add), the plan that trains only those rows, and examples
/// that use them.
pub fn grown_with_new_rows() -> (Gpt2<B>, FreezePlan, Vec<Example>, Gpt2Config) {
    let (model, gpt) = load("masked", false);
    let model = tp06_model::resize_wte(model, gpt.vocab_size + 4, 1, |_| tp06_model::RowInit::Mean);
    let grown_config = Gpt2Config { vocab_size: gpt.vocab_size + 4, ..gpt.clone() };
    let fix = FreezeConfig { wte: WteFreeze::PretrainedRows, wpe: true, lower_blocks: BlockCount::Half, ln_f: false };
    let plan = FreezePlan::new(&fix, &grown_config, gpt.vocab_size);
    let mut train = examples("masked");
    for (i, e) in train.iter_mut().enumerate() {
        e.input_ids[1] = 96 + (i % 4) as u32;
        e.labels[1] = e.input_ids[1] as i64;
        e.input_ids[2] = 96 + ((i + 1) % 4) as u32;
        e.labels[2] = e.input_ids[2] as i64;
    }
    (model, plan, train, gpt)
}

/// The LoRA run of `resume_lora.rs`: [`grown_with_new_rows`] with an
/// adapter on every layer (r 4, α 8, dropout 0.1, seeded 5), its plan under
/// LoRA, its examples and the grown shape.
pub fn lora_run() -> (Gpt2<B>, FreezePlan, Vec<Example>, Gpt2Config) {
    use tp06_model::lora::{self, Blocks, LoraConfig, Target};
    let (model, plan, train, gpt) = grown_with_new_rows();
    let grown = Gpt2Config { vocab_size: gpt.vocab_size + 4, ..gpt };
    let adapters = LoraConfig {
        r: 4,
        alpha: 8.0,
        dropout: 0.1,
        targets: Target::ALL.to_vec(),
        blocks: Blocks::All,
        rslora: false,
    };
    let model = lora::attach(model, &adapters, 5, &Default::default());
    let plan = plan.under_lora(&grown);
    (model, plan, train, grown)
}
