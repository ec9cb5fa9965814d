//! Runs what the command line asked for.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use burn::tensor::backend::AutodiffBackend;
use tp06_artifact::hub::Hub;
use tp06_artifact::{RunDir, Stage, StageReport};

use crate::backend::{self, WithBackend};
use crate::cli::{Cli, Command, Common, SampleArgs};
use crate::config::{self, PipelineConfig};
use crate::ui;

/// Set by Ctrl-C: long work stops at the next safe point.
pub static STOP: AtomicBool = AtomicBool::new(false);

/// Installs the Ctrl-C handler: the first press asks the work to stop cleanly
/// (training writes a checkpoint), the second one exits at once.
pub fn install_ctrl_c() {
    let _ = ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::SeqCst) {
            eprintln!("\ninterrupted again: exiting without saving");
            std::process::exit(130);
        }
        eprintln!("\ninterrupt: stopping after the current step and saving a checkpoint (Ctrl-C again to abort)");
    });
}

/// Whether `err` is the result of Ctrl-C.
pub fn was_interrupted(err: &anyhow::Error) -> bool {
    matches!(err.downcast_ref::<tp06_train::TrainError>(), Some(tp06_train::TrainError::Interrupted { .. }))
}

/// The train stage, on the chosen backend.
struct TrainStage<'a> {
    run: &'a RunDir,
    config: &'a PipelineConfig,
    force: bool,
    resume: bool,
}

impl WithBackend for TrainStage<'_> {
    type Output = Result<StageReport, tp06_train::TrainError>;
    fn run<B: AutodiffBackend>(self, device: B::Device, name: &'static str) -> Self::Output {
        let ctx = tp06_train::TrainContext {
            progress: &ui::Bars,
            stop: &STOP,
            resume: if self.resume { tp06_train::Resume::Require } else { tp06_train::Resume::Auto },
            force: self.force,
            backend: name,
        };
        tp06_train::run::<B>(self.run, &self.config.train, &device, &ctx)
    }
}

fn hub() -> Hub {
    Hub::from_env().with_progress(true)
}

/// The model stage, on the chosen backend.
struct ModelStage<'a> {
    run: &'a RunDir,
    config: &'a PipelineConfig,
    force: bool,
}

impl WithBackend for ModelStage<'_> {
    type Output = Result<StageReport, tp06_model::ModelError>;
    fn run<B: AutodiffBackend>(self, device: B::Device, _name: &'static str) -> Self::Output {
        tp06_model::run::<B::InnerBackend>(self.run, &self.config.model, &self.config.vocab, &hub(), &device, self.force)
    }
}

/// Runs one stage.
fn run_stage(stage: Stage, config: &PipelineConfig, common: &Common, run: &RunDir, force: bool, resume: bool) -> Result<StageReport> {
    let report = match stage {
        Stage::Data => tp06_data::run(run, &config.data, &hub(), force)?,
        Stage::Vocab => tp06_vocab::run(run, &config.vocab, &config.model.base, &hub(), force)?,
        Stage::Model => backend::dispatch(common.backend.as_deref(), ModelStage { run, config, force })??,
        Stage::Train => backend::dispatch(common.backend.as_deref(), TrainStage { run, config, force, resume })??,
        other => bail!(
            "stage `{other}` is not built yet in this version; the stages that run today end at `train` \
             (use --to train)"
        ),
    };
    Ok(report)
}

/// Greedy generation with any model directory or hub id.
struct Greedy {
    dir: PathBuf,
    prompts: Vec<String>,
    max_new_tokens: Option<usize>,
    max_length: usize,
}

impl WithBackend for Greedy {
    type Output = Result<()>;
    fn run<B: AutodiffBackend>(self, device: B::Device, _name: &'static str) -> Result<()> {
        let config = tp06_model::HfConfig::from_file(&self.dir.join("config.json"))?.resolve()?;
        let file = tp06_model::weight_file(&self.dir)?;
        let (model, _) = tp06_model::load::<B::InnerBackend>(&file, &config, &device)?;
        let tok = tp06_vocab::Tok::from_dir(&self.dir)?;
        let eos = tok.special_id(tok.specials.eos.as_ref());
        for prompt in &self.prompts {
            let ids = tok.encode(prompt)?;
            if ids.is_empty() {
                bail!("the prompt {prompt:?} encodes to no token");
            }
            if ids.len() >= config.n_positions {
                bail!("the prompt is {} tokens, the model's context is {}; shorten it", ids.len(), config.n_positions);
            }
            let new = self.max_new_tokens.unwrap_or_else(|| self.max_length.saturating_sub(ids.len()));
            let out = tp06_model::greedy(&model, &ids, new, eos);
            ui::print(&tok.decode(&out, true)?);
        }
        Ok(())
    }
}

fn sample_command(common: &Common, args: &SampleArgs) -> Result<()> {
    let config = config::resolve(&common.config_args())?;
    let Some(model) = &args.model else {
        bail!("sampling from a run directory comes with the sample stage; use --model DIR_OR_HUB_ID for now");
    };
    if !args.greedy && args.temperature != Some(0.0) {
        bail!("only --greedy decoding is available in this version");
    }
    let source: tp06_artifact::Source = model.parse()?;
    let mut wanted: Vec<&[&str]> = vec![&["config.json"], &[tp06_model::SAFETENSORS, tp06_model::PYTORCH_BIN]];
    wanted.extend_from_slice(tp06_vocab::TOKENIZER_FILES);
    let dir = tp06_artifact::hub::model_dir(&hub(), &source, &wanted)
        .map_err(|e| anyhow::anyhow!("--model {model}: {e}"))?;
    let mut prompts = args.prompt.clone();
    if let Some(file) = &args.prompts_file {
        let text = std::fs::read_to_string(file).with_context(|| format!("cannot read --prompts-file `{}`", file.display()))?;
        prompts.extend(text.lines().filter(|l| !l.trim().is_empty()).map(String::from));
    }
    if prompts.is_empty() {
        prompts = config.sample.prompts.iter().map(|p| p.text.clone()).collect();
    }
    let work = Greedy {
        dir,
        prompts,
        max_new_tokens: args.max_new_tokens.or(config.sample.max_new_tokens),
        max_length: args.max_length.unwrap_or(config.sample.max_length),
    };
    backend::dispatch(common.backend.as_deref(), work)?
}

fn show(stage: Stage, run: &RunDir, report: &StageReport) {
    if report.up_to_date {
        ui::print(&format!("{stage}: up to date (use --force to run it again)"));
    } else {
        ui::print(&report.summary);
        ui::print(&format!(
            "{stage}: done in {:.1} s → {}",
            report.manifest.seconds,
            run.stage_dir(stage).display()
        ));
    }
}

fn setup(common: &Common) -> Result<(PipelineConfig, RunDir)> {
    let config = config::resolve(&common.config_args())?;
    let run = RunDir::new(common.run_dir());
    tp06_artifact::fs::create_dir_all(run.root())
        .with_context(|| format!("the run directory `{}` cannot be created", run.root().display()))?;
    Ok((config, run))
}

/// Dispatches a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Pipeline { common, from, to } => {
            let (config, run) = setup(&common)?;
            let from = from.unwrap_or(Stage::Data);
            let to = to.unwrap_or(Stage::Sample);
            if from > to {
                bail!("--from {from} comes after --to {to}");
            }
            for stage in Stage::ALL.into_iter().filter(|s| (from..=to).contains(s)) {
                let report = run_stage(stage, &config, &common, &run, common.force, false)?;
                show(stage, &run, &report);
            }
            Ok(())
        }
        Command::Data { common } => single(Stage::Data, &common, false),
        Command::Vocab { common } => single(Stage::Vocab, &common, false),
        Command::Model { common } => single(Stage::Model, &common, false),
        Command::Train { common, resume } => single(Stage::Train, &common, resume),
        Command::Sample { common, args } => sample_command(&common, &args),
        Command::Config { common } => {
            let config = config::resolve(&common.config_args())?;
            ui::print(&toml::to_string_pretty(&config).context("cannot print the configuration")?);
            Ok(())
        }
    }
}

fn single(stage: Stage, common: &Common, resume: bool) -> Result<()> {
    let (config, run) = setup(common)?;
    let report = run_stage(stage, &config, common, &run, common.force, resume)?;
    show(stage, &run, &report);
    Ok(())
}
