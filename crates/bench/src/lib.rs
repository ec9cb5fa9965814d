//! The benchmark: our training, forward pass and generation beside
//! PyTorch/transformers doing the same work (`bench/bench.py`), alternating
//! the runs (A B A B …) and reporting medians and ratios. Every measurement
//! runs in its own process (`tp06 bench-one`) so that its peak resident
//! memory is its own.
//!
//! The work is the stages' own: the train stage's trainer built from a
//! preset's `[train]` and `[model.freeze]` ([`Workload`]), the sample stage's
//! decoding loop; both sides get the loop's values from the same preset.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use burn::prelude::*;
use burn::tensor::s;
use serde::{Deserialize, Serialize};
use tp06_model::{FreezeConfig, FreezePlan, Gpt2Config, HfConfig, Precision};
use tp06_model::{Gpt2Ops, Kernels, Pass, TrainBackend};

pub mod llama_cpp;

/// Everything that can go wrong in a benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A shape that is not one of the benchmark's.
    #[error(
        "unknown shape `{0}`; the shapes are mini (gpt2-fr-mini), small (gpt-fr-cased-small) and base (gpt-fr-cased-base)"
    )]
    UnknownShape(String),
    /// A work that is not one of the benchmark's.
    #[error("unknown work `{0}`; use train, forward or generate")]
    UnknownWork(String),
    /// int8 asked for training.
    #[error("--precision int8 is for inference: measure it with --works forward,generate (training keeps f32 weights)")]
    Int8Training,
    /// Composed kernels asked for generation.
    #[error("--kernels {0} measures train and forward; add --works train,forward")]
    KernelsForGeneration(Kernels),
    /// The PyTorch side's script is not where it belongs.
    #[error("`{0}` is missing; run `cargo xtask bench` from a checkout of this repository")]
    NoScript(PathBuf),
    /// python3 with torch and transformers is missing.
    #[error(
        "the PyTorch side needs python3 with torch and transformers: pip install torch transformers (no number is reported without it)"
    )]
    NoPython,
    /// A measurement's process failed or printed no result.
    #[error("{what}: {reason}")]
    Child { what: String, reason: String },
    /// The shape's configuration.
    #[error(transparent)]
    Model(#[from] tp06_model::ModelError),
    /// Writing the results.
    #[error(transparent)]
    Fs(#[from] tp06_artifact::fs::FsError),
}

/// The shapes measured, random weights built in memory: gpt2-fr-mini's,
/// gpt-fr-cased-small's (124 M parameters) and gpt-fr-cased-base's, the
/// course's model (24 blocks of 1792, 14 heads of 128, vocabulary 50,000 as
/// on the hub: 1.02 B parameters).
pub fn shape(name: &str) -> Result<Gpt2Config, BenchError> {
    let json = match name {
        "mini" => r#"{"model_type":"gpt2","n_layer":4,"n_head":4,"n_embd":256,"n_positions":512,"vocab_size":8000}"#,
        "small" => {
            r#"{"model_type":"gpt2","n_layer":12,"n_head":12,"n_embd":768,"n_positions":1024,"vocab_size":50000}"#
        }
        "base" => {
            r#"{"model_type":"gpt2","n_layer":24,"n_head":14,"n_embd":1792,"n_positions":1024,"vocab_size":50000}"#
        }
        other => return Err(BenchError::UnknownShape(other.into())),
    };
    Ok(HfConfig::from_json_str(json, name)?.resolve()?)
}

/// The shapes too large for the full protocol on a few CPU cores: one
/// course step of `base` is 16 × 256 tokens through 1 B parameters
/// (minutes on 2 threads).
fn is_large(shape: &str) -> bool {
    shape == "base"
}

/// The measured steps of `work` on `shape` when `asked` are asked: at most
/// one on a large shape (both sides), where its training warms up with one
/// micro-batch instead of a whole step ([`warm_up_micro_batches`]).
pub fn measured_steps(shape: &str, asked: usize) -> usize {
    if is_large(shape) { asked.min(1) } else { asked }
}

/// The micro-batches of the training work's warm-up step on `shape`: all of
/// a step's (`accumulation`), or one on a large shape — it allocates what a
/// step allocates (gradients, moments), and its optimiser step runs once.
pub fn warm_up_micro_batches(shape: &str, accumulation: usize) -> usize {
    if is_large(shape) { 1 } else { accumulation }
}

/// What trains in the `train` work: the freeze of a preset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Freeze {
    /// The `tp06` preset's (the course's): `wte` (and the tied head), `wpe`
    /// and the lower half of the blocks frozen; the backward pass stops at
    /// the first trained block.
    Course,
    /// The `recommended` preset's: the same, but the last [`NEW_ROWS`] rows
    /// of `wte` (the added names) train, so the activations' gradients run
    /// down to the embeddings and the tied head has a weight gradient.
    Recommended,
    /// The `lora` preset's: the base frozen, its LoRA adapters (every block)
    /// and the last [`NEW_ROWS`] rows of `wte` train (PyTorch: peft's
    /// `get_peft_model` with the same `LoraConfig` and trainable tokens).
    Lora,
}

/// The rows of `wte` that train under [`Freeze::Recommended`]: about what the
/// recommended vocabulary stage adds for the 1,025 Pokémon names.
pub const NEW_ROWS: usize = 1000;

impl Freeze {
    /// The name on the command line and in the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Freeze::Course => "course",
            Freeze::Recommended => "recommended",
            Freeze::Lora => "lora",
        }
    }

    /// The preset whose `[model.freeze]` (and `[model.lora]`) it is.
    pub fn preset(self) -> &'static str {
        match self {
            Freeze::Course => "tp06",
            Freeze::Recommended => "recommended",
            Freeze::Lora => "lora",
        }
    }
}

/// The work's settings, read from presets: the loop's (batch, accumulation,
/// length, optimiser, clipping, schedule, seed, precision) from `tp06`'s
/// `[train]`, what trains from the `[model.freeze]` of [`Freeze::preset`];
/// the forward work runs one training step's micro-batches.
#[derive(Debug, Clone)]
pub struct Workload {
    /// The train stage's settings.
    pub train: tp06_train::Config,
    /// The freeze.
    pub freeze: FreezeConfig,
    /// Which preset's freeze it is.
    pub which: Freeze,
    /// The preset's adapters, if any.
    pub lora: Option<tp06_model::lora::LoraConfig>,
}

impl Workload {
    /// The freeze plan on `config`, whose last [`NEW_ROWS`] rows stand for
    /// the added names (under LoRA, the base frozen but those rows).
    pub fn plan(&self, config: &Gpt2Config) -> FreezePlan {
        let plan = FreezePlan::new(&self.freeze, config, config.vocab_size - NEW_ROWS);
        if self.lora.is_some() { plan.under_lora(config) } else { plan }
    }

    /// The micro-batches' size as `tp06 bench-one` takes it.
    fn size_args(&self) -> Vec<String> {
        let t = &self.train;
        let mut args: Vec<String> =
            [("--batch-size", t.batch_size), ("--grad-accum", t.grad_accum), ("--max-length", t.max_length)]
                .into_iter()
                .flat_map(|(flag, value)| [flag.to_string(), value.to_string()])
                .collect();
        args.extend(t.gradient_checkpointing.then(|| "--gradient-checkpointing".to_string()));
        args
    }

    /// The loop's values as `bench/bench.py` takes them.
    fn script_args(&self) -> Vec<String> {
        let t = &self.train;
        [
            ("--batch-size", t.batch_size.to_string()),
            ("--grad-accum", t.grad_accum.to_string()),
            ("--max-length", t.max_length.to_string()),
            ("--lr", t.lr.fixed().unwrap_or(5e-5).to_string()),
            ("--warmup-steps", t.warmup_steps.to_string()),
            ("--weight-decay", t.weight_decay.to_string()),
            ("--adam-beta1", t.adam_beta1.to_string()),
            ("--adam-beta2", t.adam_beta2.to_string()),
            ("--adam-epsilon", t.adam_epsilon.to_string()),
            ("--max-grad-norm", t.max_grad_norm.to_string()),
        ]
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_string(), value])
        .chain(t.gradient_checkpointing.then(|| "--gradient-checkpointing".to_string()))
        .chain(self.lora.iter().flat_map(|l| {
            let targets: Vec<&str> = l.targets.iter().map(|t| t.name()).collect();
            [
                "--lora-r".to_string(),
                l.r.to_string(),
                "--lora-alpha".into(),
                l.alpha.to_string(),
                "--lora-dropout".into(),
                l.dropout.to_string(),
                "--lora-targets".into(),
                targets.join(","),
            ]
        }))
        .collect()
    }
}

/// One measurement, as both sides print it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measurement {
    /// `tp06` or `pytorch`.
    pub side: String,
    /// `train` or `generate`.
    pub work: String,
    /// `mini` or `small`.
    pub shape: String,
    /// Threads used.
    pub threads: usize,
    /// Tokens processed (train: positions; generate: new tokens).
    pub tokens: usize,
    /// Seconds measured.
    pub seconds: f64,
    /// `tokens / seconds`.
    pub tokens_per_second: f64,
    /// Peak resident memory of the process.
    pub peak_rss_mb: Option<f64>,
    /// `f32` or `bf16` (absent in results written before bf16 existed: f32).
    #[serde(default)]
    pub dtype: Option<String>,
    /// Peak memory the GPU's allocator reserved, when the work ran on one
    /// (PyTorch's `max_memory_reserved`; ours: [`device_reserved_mb`]).
    #[serde(default)]
    pub device_peak_mb: Option<f64>,
    /// What trained (`train` only; absent before the option existed: course).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze: Option<Freeze>,
}

fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse::<f64>().ok().map(|kb| kb / 1024.0)
}

/// One measurement in this process.
pub struct One {
    /// `train` or `generate`.
    pub work: String,
    /// The shape's name.
    pub shape: String,
    /// Measured repetitions (after one warm-up).
    pub steps: usize,
    /// Threads (reported; set through `RAYON_NUM_THREADS` by the parent).
    pub threads: usize,
    /// bf16: the products' weights and the head in bf16 for forward and
    /// generate, the products under autocast for train.
    pub precision: Precision,
    /// What trains (`train` only).
    pub freeze: Freeze,
    /// Our operations' implementation (`train` and `forward`).
    pub kernels: Kernels,
}

/// Runs `one` in this process on `device` (training on `B`, inference on
/// its inner backend) with the training work's settings from `workload`.
pub fn measure<B: TrainBackend>(one: One, workload: &Workload, device: B::Device) -> Result<Measurement, BenchError> {
    // Training keeps GPT-2's dropout (0.1 at the three places), as the
    // course and the PyTorch side do; inference has none.
    let config = shape(&one.shape)?;
    let precision = one.precision;
    let warm_up = warm_up_micro_batches(&one.shape, workload.train.grad_accum);
    let (tokens, seconds) = match one.work.as_str() {
        "train" => train::<B>(&config, workload, precision, one.kernels, (warm_up, one.steps), &device),
        "forward" => {
            let config = config.clone().without_dropout();
            forward::<B::InnerBackend>(&config, workload, precision, one.kernels, one.steps, &device)
        }
        "generate" if one.kernels != Kernels::Backend => return Err(BenchError::KernelsForGeneration(one.kernels)),
        "generate" => generate::<B::InnerBackend>(&config.without_dropout(), precision, one.steps, &device),
        other => return Err(BenchError::UnknownWork(other.into())),
    };
    Ok(Measurement {
        side: "tp06".into(),
        freeze: (one.work == "train").then_some(one.freeze),
        work: one.work,
        shape: one.shape,
        threads: one.threads,
        tokens,
        seconds,
        tokens_per_second: tokens as f64 / seconds,
        peak_rss_mb: peak_rss_mb(),
        dtype: Some(precision.name().into()),
        device_peak_mb: device_reserved_mb(&device),
    })
}

/// Our side's GPU memory after the work: what cubecl's pools have reserved on
/// the device. They keep their pages, so this is their high-water mark, the
/// counterpart of PyTorch's `torch.cuda.max_memory_reserved`. `None` off CUDA,
/// or when the runtime cannot say.
fn device_reserved_mb<D: 'static>(device: &D) -> Option<f64> {
    #[cfg(feature = "cuda")]
    {
        use cubecl::Runtime;
        let device = (device as &dyn std::any::Any).downcast_ref::<cubecl::cuda::CudaDevice>()?;
        // A failure here must not cost the measurement: no figure instead.
        let usage = std::panic::catch_unwind(|| cubecl::cuda::CudaRuntime::client(device).memory_usage().ok())
            .ok()
            .flatten()?;
        Some(usage.bytes_reserved as f64 / f64::from(1 << 20))
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = device;
        None
    }
}

fn random_ids(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut x = seed.wrapping_mul(tp06_model::rng::GAMMA) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            5 + (x % (vocab as u64 - 5)) as u32
        })
        .collect()
}

/// The train stage's steps on random tokens: (positions, seconds) over
/// `steps` optimiser steps after one warm-up step of `warm_up`
/// micro-batches. The trainer is the stage's own, built from the workload's
/// `[train]`; the micro-batches are its batch size × accumulation of
/// full-length sequences, at the learning rate its schedule gives the first
/// steps.
fn train<B: TrainBackend>(
    config: &Gpt2Config,
    workload: &Workload,
    precision: Precision,
    kernels: Kernels,
    (warm_up, steps): (usize, usize),
    device: &B::Device,
) -> (usize, f64) {
    use tp06_train::examples::Example;
    let t = &workload.train;
    let mut model = tp06_model::init_from_scratch::<B>(config, tp06_model::ScratchInit { seed: 1 }, device);
    if let Some(lora) = &workload.lora {
        model = tp06_model::lora::attach(model, lora, 1, device);
    }
    let settings = tp06_train::TrainerSettings { autocast: precision, kernels, ..tp06_train::TrainerSettings::of(t) };
    let mut trainer = tp06_train::Trainer::new(model, workload.plan(config), settings, device.clone());
    let (batch, accumulation, length) = (t.batch_size, t.grad_accum, t.max_length);
    let mut seed = 0;
    let mut step = |trainer: &mut tp06_train::trainer::Trainer<B>, accumulation: usize| {
        let examples: Vec<Example> = (0..batch * accumulation)
            .map(|_| {
                seed += 1;
                let ids = random_ids(length, config.vocab_size, seed);
                Example {
                    labels: ids.iter().map(|&i| i as i64).collect(),
                    attention: vec![true; length],
                    input_ids: ids,
                    positions: None,
                }
            })
            .collect();
        let micro: Vec<Vec<&Example>> = examples.chunks(batch).map(|c| c.iter().collect()).collect();
        let peak = t.lr.fixed().unwrap_or(5e-5);
        let lr = tp06_train::optim::linear_schedule(peak, trainer.step, t.warmup_steps, 1000);
        trainer.step(&micro, lr).expect("a finite loss on random tokens");
    };
    step(&mut trainer, warm_up);
    let start = Instant::now();
    for _ in 0..steps {
        step(&mut trainer, accumulation);
    }
    (steps * batch * accumulation * length, start.elapsed().as_secs_f64())
}

/// Inference forward passes to the logits, per step the micro-batches of one
/// training step of the workload (the course: 8 batches of 2 × 256 tokens):
/// (positions, seconds).
fn forward<B: Gpt2Ops>(
    config: &Gpt2Config,
    workload: &Workload,
    precision: Precision,
    kernels: Kernels,
    steps: usize,
    device: &B::Device,
) -> (usize, f64) {
    let model = tp06_model::init_from_scratch::<B>(config, tp06_model::ScratchInit { seed: 1 }, device)
        .with_precision(precision);
    let t = &workload.train;
    let (batch, micro, length) = (t.batch_size, t.grad_accum, t.max_length);
    let batches: Vec<Tensor<B, 2, Int>> = (0..micro)
        .map(|i| {
            let ids: Vec<i64> =
                random_ids(batch * length, config.vocab_size, 10 + i as u64).into_iter().map(i64::from).collect();
            Tensor::from_data(TensorData::new(ids, [batch, length]), device)
        })
        .collect();
    let pass = |ids: &Tensor<B, 2, Int>| {
        let logits = model.forward(ids.clone(), &mut Pass::inference().with_kernels(kernels));
        let _ = logits.slice(s![0..1, 0..1, 0..1]).into_data(); // wait for the result
    };
    pass(&batches[0]);
    let start = Instant::now();
    for _ in 0..steps {
        batches.iter().for_each(pass);
    }
    (steps * micro * batch * length, start.elapsed().as_secs_f64())
}

/// Greedy decoding through the KV cache: (new tokens, seconds).
fn generate<B: Gpt2Ops>(config: &Gpt2Config, precision: Precision, steps: usize, device: &B::Device) -> (usize, f64) {
    // Made in its precision tensor by tensor, as a model loads (never whole in f32).
    let model = tp06_model::init_from_scratch_in::<B>(config, tp06_model::ScratchInit { seed: 1 }, precision, device);
    let prompt = random_ids(16, config.vocab_size, 3);
    let greedy = tp06_sample::Processing::GREEDY;
    tp06_sample::generate(&model, &prompt, &greedy, tp06_sample::Length::New(8), None, 1, 0);
    let start = Instant::now();
    for _ in 0..steps {
        let out = tp06_sample::generate(&model, &prompt, &greedy, tp06_sample::Length::New(128), None, 1, 0);
        assert_eq!(out[0].new_tokens, 128);
    }
    (steps * 128, start.elapsed().as_secs_f64())
}

/// Where `bench/bench.py` is.
/// Runs one measurement's process and reads the JSON line it prints last.
fn run_child(mut command: Command, what: &str) -> Result<Measurement, BenchError> {
    let failed = |reason: String| BenchError::Child { what: what.into(), reason };
    let output = command.output().map_err(|e| failed(format!("cannot start: {e}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(failed(format!("failed: {}", stderr.lines().last().unwrap_or("no message"))));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().rev().find(|l| l.starts_with('{')).ok_or_else(|| failed("printed no result".into()))?;
    serde_json::from_str(line).map_err(|e| failed(format!("printed an unreadable result ({e}): {line}")))
}

/// The options of `tp06 bench`.
pub struct BenchOptions {
    /// Shapes to measure.
    pub shapes: Vec<String>,
    /// Works to measure.
    pub works: Vec<String>,
    /// Alternations per (work, shape).
    pub repeats: usize,
    /// Measured steps per run.
    pub steps: usize,
    /// Threads for both sides.
    pub threads: usize,
    /// Where to write the JSON.
    pub json: PathBuf,
    /// The backend for our side, resolved (`cuda`: PyTorch runs on the GPU too).
    pub backend: String,
    /// `bench/bench.py`, the PyTorch side.
    pub script: PathBuf,
    /// This program, which measures our side (`bench-one`).
    pub exe: PathBuf,
    /// f32, or bf16 on both sides.
    pub precision: Precision,
    /// What trains in the `train` work.
    pub freeze: Freeze,
    /// Our operations' implementation.
    pub kernels: Kernels,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Runs the comparison, writes the JSON and returns the table.
pub fn bench(options: &BenchOptions, workload: &Workload) -> Result<String, BenchError> {
    if options.kernels != Kernels::Backend && options.works.iter().any(|w| w == "generate") {
        return Err(BenchError::KernelsForGeneration(options.kernels));
    }
    if options.precision == Precision::Int8 && options.works.iter().any(|w| w == "train") {
        return Err(BenchError::Int8Training);
    }
    let python_ok =
        Command::new("python3").args(["-c", "import torch, transformers"]).output().is_ok_and(|o| o.status.success());
    if !options.script.is_file() {
        return Err(BenchError::NoScript(options.script.clone()));
    }
    if !python_ok {
        return Err(BenchError::NoPython);
    }
    if let Some(parent) = options.json.parent() {
        tp06_artifact::fs::create_dir_all(parent)?;
    }
    // Both sides on the same kind of device: PyTorch on the GPU when ours runs on CUDA.
    let backend = &options.backend;
    let device = if backend == "cuda" { "cuda" } else { "cpu" };
    let dtype = options.precision.name();
    let mut rows = Vec::new();
    let mut all = Vec::new();
    for work in &options.works {
        for shape in &options.shapes {
            let mut ours = Vec::new();
            // Inference in a compact format is compared with each of PyTorch's
            // CPU formats, in the same run: f32 (the ratio), bf16 and int8.
            let compact = work != "train" && device == "cpu" && options.precision != Precision::F32;
            let pytorch_dtypes: Vec<&str> = if compact { vec!["f32", "bf16", "int8"] } else { vec![dtype] };
            let mut by_dtype: Vec<Vec<Measurement>> = vec![Vec::new(); pytorch_dtypes.len()];
            let steps = measured_steps(shape, options.steps).to_string();
            for i in 1..=options.repeats {
                tracing::info!("bench: {work} {shape}, run {i}/{}: tp06 then PyTorch", options.repeats);
                let threads = options.threads.to_string();
                // The work and its size, alike on both sides.
                let same = [work.as_str(), "--shape", shape, "--steps", &steps, "--threads", &threads];
                let mut a = Command::new(&options.exe);
                a.arg("bench-one").args(same);
                a.args(["--precision", dtype, "--freeze", options.freeze.name(), "--kernels", options.kernels.name()]);
                a.args(["--backend", backend]).args(workload.size_args());
                a.env("RAYON_NUM_THREADS", options.threads.to_string());
                ours.push(run_child(a, &format!("tp06 bench-one {work} {shape}"))?);
                for (theirs_dtype, measured) in pytorch_dtypes.iter().zip(by_dtype.iter_mut()) {
                    let mut b = Command::new("python3");
                    b.arg(&options.script)
                        .args(same)
                        .args(["--device", device, "--dtype", theirs_dtype, "--freeze", options.freeze.name()])
                        .args(workload.script_args())
                        .env("OMP_NUM_THREADS", options.threads.to_string());
                    measured.push(run_child(b, &format!("bench/bench.py {work} {shape} {theirs_dtype}"))?);
                }
            }
            // The ratios' reference: PyTorch in the first format (f32, or the one asked).
            let theirs = &by_dtype[0];
            let speed = |m: &[Measurement]| median(m.iter().map(|x| x.tokens_per_second).collect());
            let rss = |m: &[Measurement]| median(m.iter().filter_map(|x| x.peak_rss_mb).collect());
            let gpu = |m: &[Measurement]| median(m.iter().filter_map(|x| x.device_peak_mb).collect());
            // The memory compared: the GPU allocator's on a GPU, the process's on the CPU.
            let memory = |m: &[Measurement]| if device == "cuda" { gpu(m) } else { rss(m) };
            let freeze = (work == "train").then_some(options.freeze.name());
            let checkpointing = (work == "train").then_some(workload.train.gradient_checkpointing);
            let pytorch: serde_json::Map<String, serde_json::Value> = pytorch_dtypes
                .iter()
                .zip(&by_dtype)
                .map(|(d, m)| {
                    (d.to_string(), serde_json::json!({"tokens_per_second": speed(m), "peak_rss_mb": rss(m)}))
                })
                .collect();
            let best = by_dtype.iter().map(|m| speed(m)).fold(f64::NAN, f64::max);
            rows.push(serde_json::json!({
                "work": work, "shape": shape, "threads": options.threads, "device": device, "dtype": dtype, "freeze": freeze,
                "gradient_checkpointing": checkpointing,
                "tp06_tokens_per_second": speed(&ours), "pytorch_tokens_per_second": speed(theirs),
                "pytorch_dtype": pytorch_dtypes[0], "pytorch": pytorch,
                "speed_ratio": speed(&ours) / speed(theirs), "ratio_to_pytorch_best": speed(&ours) / best,
                "tp06_peak_rss_mb": rss(&ours), "pytorch_peak_rss_mb": rss(theirs),
                "tp06_device_peak_mb": gpu(&ours), "pytorch_device_peak_mb": gpu(theirs),
                "memory_ratio": memory(&ours) / memory(theirs),
            }));
            all.extend(ours);
            all.extend(by_dtype.into_iter().flatten());
            // Written after every row: a bench stopped half-way keeps the rows it finished.
            let report =
                serde_json::json!({ "repeats": options.repeats, "steps": options.steps, "rows": rows, "runs": all });
            tp06_artifact::fs::write_json_atomic(&options.json, &report)?;
        }
    }
    let mut table = format!(
        "{:<9} {:<6} {:>14} {:>14} {:>7}   {:>10} {:>10} {:>7}\n",
        "work", "shape", "tp06 tok/s", "PyTorch tok/s", "ratio", "tp06 MB", "PyTorch MB", "ratio"
    );
    if rows.iter().any(|r| r["pytorch_dtype"] != r["dtype"]) {
        table += "(inference in a compact format: PyTorch's columns and ratios are its f32 run's)\n";
    }
    let memory_keys = if device == "cuda" {
        ["tp06_device_peak_mb", "pytorch_device_peak_mb"]
    } else {
        ["tp06_peak_rss_mb", "pytorch_peak_rss_mb"]
    };
    for r in &rows {
        let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
        // A figure a side could not read prints as a dash, not as NaN.
        let cell = |v: f64, precision: usize, suffix: &str| {
            if v.is_finite() { format!("{v:.precision$}{suffix}") } else { "—".into() }
        };
        table += &format!(
            "{:<9} {:<6} {:>14} {:>14} {:>7}   {:>10} {:>10} {:>7}\n",
            r["work"].as_str().unwrap_or(""),
            r["shape"].as_str().unwrap_or(""),
            cell(f("tp06_tokens_per_second"), 1, ""),
            cell(f("pytorch_tokens_per_second"), 1, ""),
            cell(f("speed_ratio"), 2, "×"),
            cell(f(memory_keys[0]), 0, ""),
            cell(f(memory_keys[1]), 0, ""),
            cell(f("memory_ratio"), 2, "×"),
        );
        if let Some(pytorch) = r["pytorch"].as_object().filter(|p| p.len() > 1) {
            let each: Vec<String> = pytorch
                .iter()
                .map(|(d, m)| format!("{d} {}", cell(m["tokens_per_second"].as_f64().unwrap_or(f64::NAN), 1, "")))
                .collect();
            table += &format!(
                "{:<16} PyTorch {} tok/s; tp06 {} is {} PyTorch's best\n",
                "",
                each.join(", "),
                r["dtype"].as_str().unwrap_or(""),
                cell(f("ratio_to_pytorch_best"), 2, "×")
            );
        }
    }
    let place = match device {
        "cuda" => "on the GPU (memory: the allocator's peak; not read on our side yet)".to_string(),
        _ => format!("{} thread(s) on CPU", options.threads),
    };
    let t = &workload.train;
    let what_trains = if options.works.iter().any(|w| w == "train") {
        let checkpointing = if t.gradient_checkpointing { " and activation checkpointing" } else { "" };
        format!(", training with the {} freeze{checkpointing}", options.freeze.name())
    } else {
        String::new()
    };
    let what_trains = format!(
        "{what_trains}, micro-batches of {} × {} tokens, {} per step",
        t.batch_size, t.max_length, t.grad_accum
    );
    table += &format!(
        "medians of {} alternating runs each, {dtype} {place}{what_trains}; JSON in {}",
        options.repeats,
        options.json.display()
    );
    if let Some(large) = options.shapes.iter().find(|s| is_large(s)) {
        table += &format!(
            "\n{large}: {} measured step(s) per run (asked: {}); training warms up with one micro-batch, not a whole step; both sides alike",
            measured_steps(large, options.steps),
            options.steps
        );
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The base shape is gpt-fr-cased-base's: by hand, wte 50,000 × 1792,
    /// wpe 1024 × 1792, per block 4 · 1792 (two norms) + 1792 · 5376 + 5376
    /// (c_attn) + 1792² + 1792 (c_proj) + 1792 · 7168 + 7168 (c_fc) + 7168 ·
    /// 1792 + 1792 (mlp.c_proj) = 38,558,464, ln_f 2 · 1792.
    #[test]
    fn the_base_shape_is_the_course_models() {
        let base = shape("base").unwrap();
        assert_eq!((base.n_layer, base.n_embd / base.n_head, base.vocab_size), (24, 128, 50_000));
        let total: usize = tp06_model::parameter_names(&base).iter().map(|(_, n)| n).sum();
        assert_eq!(total, 50_000 * 1792 + 1024 * 1792 + 24 * 38_558_464 + 2 * 1792);
        assert_eq!(total, 1_016_841_728);
    }

    /// Only the large shape is cut short, and its warm-up alone is one micro-batch.
    #[test]
    fn the_large_shape_measures_one_step_after_one_micro_batch() {
        assert_eq!((measured_steps("base", 3), warm_up_micro_batches("base", 8)), (1, 1));
        assert_eq!((measured_steps("small", 3), warm_up_micro_batches("small", 8)), (3, 8));
        assert!(shape("huge").unwrap_err().to_string().contains("base (gpt-fr-cased-base)"));
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(Vec::new()).is_nan());
    }
}
