//! The command-line grammar.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use tp06_artifact::Stage;

use crate::config::ConfigArgs;

/// The backends `--backend` can name (which of them this build has: `tp06_model::backend::compiled`).
pub const BACKENDS: [&str; 3] = ["flex", "ndarray", "cuda"];

/// A count of at least one.
fn positive(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// Fine-tune a French GPT-2 on Pokémon articles — the course "TP 06" in Rust.
#[derive(Debug, Parser)]
#[command(name = "tp06", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Print less (only warnings, errors and results).
    #[arg(short, long, global = true, display_order = 900)]
    pub quiet: bool,
    /// Print more (debug logs).
    #[arg(short, long, global = true, display_order = 901)]
    pub verbose: bool,
}

impl Cli {
    /// Exits as clap does on a usage error (code 2, nothing written) when
    /// `pipeline --from` comes after `--to`.
    pub fn check_stage_range(&self) {
        if let Command::Pipeline { from: Some(from), to: Some(to), .. } = &self.command
            && from > to
        {
            use clap::CommandFactory;
            Cli::command()
                .error(clap::error::ErrorKind::ArgumentConflict, format!("--from {from} comes after --to {to}"))
                .exit();
        }
    }

    /// The log level asked for.
    pub fn verbosity(&self) -> crate::ui::Verbosity {
        match (self.quiet, self.verbose) {
            (true, _) => crate::ui::Verbosity::Quiet,
            (false, true) => crate::ui::Verbosity::Verbose,
            (false, false) => crate::ui::Verbosity::Normal,
        }
    }
}

/// Where the configuration and the run directory come from.
#[derive(Debug, Clone, Args)]
pub struct Setup {
    /// A built-in preset: tp06 (the course), recommended (its defects fixed) or demo (offline, tiny)
    /// [default: the run directory's own configuration when it has one, else demo].
    #[arg(long, value_name = "NAME")]
    pub preset: Option<String>,
    /// A preset file of your own (overlaid on --preset when both are given).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Override one field, e.g. --set data.articles=PATH --set train.epochs=2 (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub set: Vec<String>,
    /// The run directory [default: data/runs/<preset>, under the current directory].
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
}

impl Setup {
    /// The configuration sources.
    pub fn config_args(&self) -> ConfigArgs {
        ConfigArgs { preset: self.preset.clone(), config: self.config.clone(), set: self.set.clone() }
    }

    /// The run directory, explicit or `data/runs/<preset>`.
    pub fn run_dir(&self) -> PathBuf {
        run_dir_or_default(&self.run_dir, &self.config_args())
    }
}

fn run_dir_or_default(run_dir: &Option<PathBuf>, args: &ConfigArgs) -> PathBuf {
    run_dir.clone().unwrap_or_else(|| PathBuf::from("data/runs").join(args.name()))
}

/// [`Setup`], and how the stages run.
#[derive(Debug, Clone, Args)]
pub struct Common {
    #[command(flatten)]
    pub setup: Setup,
    /// Run the stage(s) even when up to date.
    #[arg(long)]
    pub force: bool,
    /// Compute backend: flex (CPU), ndarray (CPU), cuda [default: cuda when compiled in, else flex].
    #[arg(long, value_name = "NAME", value_parser = clap::builder::PossibleValuesParser::new(BACKENDS))]
    pub backend: Option<String>,
}

/// [`Setup`] and the backend, for the notebook's demos (they write only
/// their JSON, whatever is up to date).
#[derive(Debug, Clone, Args)]
pub struct DemoSetup {
    #[command(flatten)]
    pub setup: Setup,
    /// Compute backend: flex (CPU), ndarray (CPU), cuda [default: cuda when compiled in, else flex].
    #[arg(long, value_name = "NAME", value_parser = clap::builder::PossibleValuesParser::new(BACKENDS))]
    pub backend: Option<String>,
}

/// A run directory, for the commands that only read one.
#[derive(Debug, Clone, Args)]
pub struct RunLocation {
    /// The preset whose default run directory to read (data/runs/<preset>) [default: demo].
    #[arg(long, value_name = "NAME")]
    pub preset: Option<String>,
    /// The run directory [default: data/runs/<preset>, under the current directory].
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
}

impl RunLocation {
    /// The run directory, explicit or `data/runs/<preset>`.
    pub fn run_dir(&self) -> PathBuf {
        run_dir_or_default(&self.run_dir, &ConfigArgs { preset: self.preset.clone(), ..Default::default() })
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every stage in order, skipping those already up to date.
    Pipeline {
        #[command(flatten)]
        common: Common,
        /// First stage to run: data, vocab, model, train or sample [default: data].
        #[arg(long, value_name = "STAGE")]
        from: Option<Stage>,
        /// Last stage to run: data, vocab, model, train or sample [default: sample;
        /// the report is written when the pipeline reaches sample].
        #[arg(long, value_name = "STAGE")]
        to: Option<Stage>,
    },
    /// Read the corpus and the names, keep the Pokémon articles, split.
    Data {
        #[command(flatten)]
        common: Common,
    },
    /// Build the tokenizer and add the names to its vocabulary.
    Vocab {
        #[command(flatten)]
        common: Common,
    },
    /// Load the base model, resize and initialise the embeddings, plan freezing.
    Model {
        #[command(flatten)]
        common: Common,
    },
    /// Fine-tune the model.
    Train {
        #[command(flatten)]
        common: Common,
        /// Continue from the last complete checkpoint.
        #[arg(long)]
        resume: bool,
    },
    /// Learning-rate range test of the train settings: a short sweep of rates
    /// from the model stage's output (nothing of the run changes), written to
    /// RUN_DIR/lr-find/ (lr_find.json, lr_find.svg) with the suggested rate.
    LrFind {
        #[command(flatten)]
        common: Common,
    },
    /// Held-out loss of the run's fine-tuned model (or --model) on the run's
    /// validation split, as the train stage evaluates it, in any precision:
    /// what a precision costs in bits per character.
    HeldOut {
        #[command(flatten)]
        common: Common,
        /// A model directory or hub id instead of the run's fine-tuned model.
        #[arg(long, value_name = "DIR_OR_HUB_ID")]
        model: Option<String>,
        /// The weights' format: f32, bf16 or int8.
        #[arg(long, default_value = "f32")]
        precision: tp06_model::Precision,
    },
    /// Write the run's fine-tuned model (or --model) as one GGUF file, its
    /// tokenizer included, for llama.cpp and the tools built on it (ollama,
    /// LM Studio).
    Export {
        #[command(flatten)]
        common: Common,
        /// A model directory or hub id instead of the run's fine-tuned model.
        #[arg(long, value_name = "DIR_OR_HUB_ID")]
        model: Option<String>,
        /// The file format.
        #[arg(long, default_value = "gguf", value_parser = ["gguf"])]
        format: String,
        /// The matrices' format: f32, f16 or q8_0 (the norms, biases and
        /// position embeddings stay f32).
        #[arg(long, default_value = "f32")]
        precision: tp06_model::gguf::GgufFormat,
        /// The file to write [default: RUN_DIR/gguf/model-PRECISION.gguf,
        /// with --adapter RUN_DIR/gguf/adapter.gguf].
        #[arg(long, value_name = "FILE")]
        out: Option<std::path::PathBuf>,
        /// Write a LoRA run's adapter (or the peft adapter directory DIR) as
        /// llama.cpp's LoRA GGUF (f32), and beside it (`-base-PRECISION`) the
        /// model it goes on: the run's base (or --model) resized to the
        /// adapter's tokenizer, the added rows the adapter's trained ones.
        /// Run them with `llama-cli -m BASE --lora ADAPTER`.
        #[arg(long, value_name = "DIR", num_args = 0..=1)]
        adapter: Option<Option<std::path::PathBuf>>,
    },
    /// Generate text with the run's fine-tuned model, or any model with --model.
    Sample {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: SampleArgs,
    },
    /// The exploration notebook's demos on real models.
    Explore {
        #[command(subcommand)]
        demo: Explore,
    },
    /// Write the exploration report of a run: RUN_DIR/report/index.html and report.md.
    Report {
        #[command(flatten)]
        location: RunLocation,
        /// Language of the report: fr (as the course) or en.
        #[arg(long, default_value = "fr")]
        lang: String,
    },
    /// Serve the run's fine-tuned model: a generation playground page and an
    /// OpenAI-compatible API (POST /v1/completions), until Ctrl-C.
    Serve {
        #[command(flatten)]
        setup: DemoSetup,
        #[command(flatten)]
        args: ServeArgs,
    },
    /// Training and generation speed and memory beside PyTorch/transformers
    /// (needs python3 with torch and transformers).
    Bench {
        /// Shapes: mini (gpt2-fr-mini), small (gpt-fr-cased-small), base
        /// (gpt-fr-cased-base, the course's 1 B model: one measured step per
        /// run, ~16 GB of memory per side for training).
        #[arg(long, value_delimiter = ',', default_value = "mini,small", value_parser = clap::builder::PossibleValuesParser::new(["mini", "small", "base"]))]
        shapes: Vec<String>,
        /// Work: train, forward (inference to the logits), generate.
        #[arg(long, value_delimiter = ',', default_value = "train,forward,generate", value_parser = clap::builder::PossibleValuesParser::new(["train", "forward", "generate"]))]
        works: Vec<String>,
        /// Alternating runs per side (medians are reported).
        #[arg(long, default_value_t = 3, value_parser = positive)]
        repeats: usize,
        /// Measured optimiser steps (train) or generations (generate) per run.
        #[arg(long, default_value_t = 2, value_parser = positive)]
        steps: usize,
        /// CPU threads for both sides.
        #[arg(long, default_value_t = 2, value_parser = positive)]
        threads: usize,
        /// Where to write the results.
        #[arg(long, default_value = "data/bench/latest.json")]
        json: PathBuf,
        /// Backend of our side; with cuda, PyTorch runs on the GPU too.
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(BACKENDS))]
        backend: Option<String>,
        /// f32, or bf16 on both sides (forward and generate: bf16 weights;
        /// train: f32 weights, bf16 products, as torch.autocast), or int8
        /// (forward and generate: our Q8_0 weights beside PyTorch's f32, bf16
        /// and dynamic int8, all three in the same run; the ratio is to f32).
        #[arg(long, default_value = "f32")]
        precision: tp06_model::Precision,
        /// What trains in the train work: course (the tp06 preset's freeze:
        /// the lower half, `wte` and `wpe` frozen) or recommended (the
        /// recommended preset's: the same, plus 1,000 new `wte` rows that
        /// train) or lora (the lora preset's: the base frozen, its LoRA
        /// adapters and the 1,000 rows train; PyTorch: peft). The loop's
        /// other values are the tp06 preset's [train].
        #[arg(long, default_value = "course", value_parser = freeze)]
        freeze: tp06_bench::Freeze,
        /// Our side's operations: backend (its fused CPU kernels) or composed
        /// (Burn's composed ops, the kernels' reference: what they bring);
        /// train and forward.
        #[arg(long, default_value = "backend")]
        kernels: tp06_model::Kernels,
        /// The other side: pytorch (bench/bench.py), or llama.cpp (generate
        /// only: the same model written as GGUF and decoded by llama.cpp,
        /// our f32/int8/bf16 against its F32/Q8_0/F16; bench/peer_llama_cpp.py).
        #[arg(long, default_value = "pytorch", value_parser = ["pytorch", "llama.cpp"])]
        peer: String,
        #[command(flatten)]
        size: LoopSize,
    },
    /// One measurement of `bench`, in its own process.
    #[command(hide = true)]
    BenchOne {
        work: String,
        #[arg(long)]
        shape: String,
        #[arg(long)]
        steps: usize,
        #[arg(long, value_parser = positive)]
        threads: usize,
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(BACKENDS))]
        backend: Option<String>,
        #[arg(long, default_value = "f32")]
        precision: tp06_model::Precision,
        #[arg(long, default_value = "course", value_parser = freeze)]
        freeze: tp06_bench::Freeze,
        #[arg(long, default_value = "backend")]
        kernels: tp06_model::Kernels,
        #[command(flatten)]
        size: LoopSize,
    },
    /// Print the resolved configuration as TOML.
    Config {
        #[command(flatten)]
        setup: Setup,
    },
}

/// What `serve` serves and where.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// A model directory in hub layout or a hub id `hf:OWNER/NAME[@REV]` instead of the run's fine-tuned model.
    #[arg(long, value_name = "DIR_OR_HUB_ID")]
    pub model: Option<String>,
    /// A peft LoRA adapter directory to put on --model as `tp06` (without
    /// --model, on the base the adapter names).
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,
    /// A second model to compare with (as `tp06-base`) [default: with
    /// --adapter, the model it goes on without it; else the run's base model,
    /// when the run has a pretrained one and no --model is given; `none`: no second model].
    #[arg(long, value_name = "DIR_OR_HUB_ID")]
    pub base: Option<String>,
    /// Where to listen (port 0: any free port); other addresses than loopback need --api-key.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: std::net::SocketAddr,
    /// The key clients send as `Authorization: Bearer KEY` to /v1/ [env: TP06_API_KEY].
    #[arg(long, value_name = "KEY", env = "TP06_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Requests that may wait while one generates; more are answered 503 with Retry-After.
    #[arg(long, default_value_t = 16, value_parser = positive)]
    pub queue: usize,
    /// The most completions decoded together, one token each per step: the
    /// weights are read once a step for all of them. More rows raise the
    /// throughput until the products stop being bound by reading the
    /// weights (BENCHMARKS.md); a request with more completions runs alone.
    #[arg(long, default_value_t = 8, value_parser = positive)]
    pub max_batch: usize,
    /// The memory the admitted requests' keys and values may reach, in MB
    /// (each completion counted at its prompt plus its new tokens); a
    /// request that would pass it waits for others to finish.
    #[arg(long, default_value_t = 4096, value_parser = positive)]
    pub kv_budget_mb: usize,
    /// Language of the playground page: fr (as the course) or en.
    #[arg(long, default_value = "fr", value_parser = clap::builder::PossibleValuesParser::new(["fr", "en"]))]
    pub lang: String,
    /// The largest request body, in bytes.
    #[arg(long, default_value_t = 1 << 20, value_parser = positive)]
    pub max_body: usize,
    /// The weights' format: f32, bf16, or int8 (Q8_0 blocks, converted at
    /// load) [default: the configuration's `sample.precision`, f32].
    #[arg(long)]
    pub precision: Option<tp06_model::Precision>,
}

/// The bench's micro-batches, when not the course's (the `tp06` preset's
/// 2 × 256 tokens, accumulation 8): for a quick look or a small machine;
/// and whether training recomputes the blocks' activations.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct LoopSize {
    /// Sequences per micro-batch [default: the course's, 2].
    #[arg(long, value_parser = positive)]
    pub batch_size: Option<usize>,
    /// Micro-batches per optimiser step (forward: per step) [default: the course's, 8].
    #[arg(long, value_parser = positive)]
    pub grad_accum: Option<usize>,
    /// Tokens per sequence [default: the course's, 256].
    #[arg(long, value_parser = positive)]
    pub max_length: Option<usize>,
    /// Train with activation checkpointing per block on both sides (ours:
    /// `train.gradient_checkpointing`; PyTorch: transformers'
    /// `gradient_checkpointing_enable()`).
    #[arg(long)]
    pub gradient_checkpointing: bool,
}

/// `course`, `recommended` or `lora`.
fn freeze(value: &str) -> Result<tp06_bench::Freeze, String> {
    match value {
        "course" => Ok(tp06_bench::Freeze::Course),
        "recommended" => Ok(tp06_bench::Freeze::Recommended),
        "lora" => Ok(tp06_bench::Freeze::Lora),
        other => Err(format!("`{other}`: use course, recommended or lora")),
    }
}

/// What to generate and how (each flag overrides the `[sample]` settings).
/// With none of them, `sample` is the pipeline's sample stage; with any, it
/// generates and prints, writing nothing.
#[derive(Debug, Clone, Default, Args)]
pub struct SampleArgs {
    /// A model directory in hub layout or a hub id `hf:OWNER/NAME[@REV]` instead of the run's model.
    #[arg(long, value_name = "DIR_OR_HUB_ID")]
    pub model: Option<String>,
    /// A peft LoRA adapter directory (ours, `RUN_DIR/train/adapter`, or one
    /// peft wrote) to put on --model; without --model, on the base the adapter names.
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,
    /// A prompt (repeatable); default: the preset's prompts.
    #[arg(long, value_name = "TEXT")]
    pub prompt: Vec<String>,
    /// A file with one prompt per line.
    #[arg(long, value_name = "FILE")]
    pub prompts_file: Option<PathBuf>,
    /// Decode greedily, as transformers' greedy `generate` (no sampling, and no
    /// repetition penalty unless --repetition-penalty is given).
    #[arg(long)]
    pub greedy: bool,
    /// Softmax temperature (0 means greedy).
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Keep the k most likely tokens (0 disables).
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Keep the smallest set of tokens reaching probability p.
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Penalise tokens already in the text (1 disables).
    #[arg(long)]
    pub repetition_penalty: Option<f64>,
    /// Maximum length in tokens, prompt included.
    #[arg(long)]
    pub max_length: Option<usize>,
    /// Maximum number of new tokens (instead of --max-length).
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    /// Sampler seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Samples per prompt.
    #[arg(long)]
    pub num_samples: Option<usize>,
    /// Read prompts from standard input, one per line, and answer each.
    #[arg(long)]
    pub interactive: bool,
    /// The weights' format: f32; bf16 or int8 (Q8_0 blocks) for the products and the head.
    #[arg(long)]
    pub precision: Option<tp06_model::Precision>,
}

impl SampleArgs {
    /// Whether any flag asks for generation outside the sample stage.
    pub fn ad_hoc(&self) -> bool {
        let Self {
            model,
            adapter,
            prompt,
            prompts_file,
            greedy,
            temperature,
            top_k,
            top_p,
            repetition_penalty,
            max_length,
            max_new_tokens,
            seed,
            num_samples,
            interactive,
            precision,
        } = self;
        model.is_some()
            || adapter.is_some()
            || !prompt.is_empty()
            || prompts_file.is_some()
            || *greedy
            || temperature.is_some()
            || top_k.is_some()
            || top_p.is_some()
            || repetition_penalty.is_some()
            || max_length.is_some()
            || max_new_tokens.is_some()
            || seed.is_some()
            || num_samples.is_some()
            || *interactive
            || precision.is_some()
    }
}

#[derive(Debug, Subcommand)]
pub enum Explore {
    /// Add one name (`Pikachu`), initialised to exactly the embedding of a
    /// reference word (`animal`), and compare the next-token distributions
    /// (notebook §4; --name and --reference change both).
    SmartInit {
        #[command(flatten)]
        common: DemoSetup,
        /// The model [default: model.base of the configuration].
        #[arg(long, value_name = "DIR_OR_HUB_ID")]
        model: Option<String>,
        /// The name to add [default: the notebook's, `Pikachu`].
        #[arg(long)]
        name: Option<String>,
        /// The reference word whose embedding the name gets [default: `animal`,
        /// else the first of model.reference_words that is a single token].
        #[arg(long)]
        reference: Option<String>,
    },
    /// A real next-token distribution under several temperatures, and what
    /// top-k and top-p keep (notebook §6.2).
    Sampling {
        #[command(flatten)]
        common: DemoSetup,
        /// The model [default: the run's fine-tuned model, else model.base].
        #[arg(long, value_name = "DIR_OR_HUB_ID")]
        model: Option<String>,
        /// The prompt [default: the notebook's, "Pikachu est un Pokémon de type"].
        #[arg(long)]
        prompt: Option<String>,
        /// The weights' format: f32, bf16 or int8 [default: `sample.precision`].
        #[arg(long)]
        precision: Option<tp06_model::Precision>,
    },
}
