//! Runs what the command line asked for.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use burn::tensor::backend::AutodiffBackend;
use tp06_artifact::hub::Hub;
use tp06_artifact::{Resume, RunDir, Stage, StageContext, StageReport};
use tp06_model::TrainBackend;

use crate::backend::{self, WithBackend};
use crate::cli::{Cli, Command, Common, DemoSetup, Explore, RunLocation, SampleArgs, ServeArgs, Setup};
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
        eprintln!("\ninterrupt: stopping at the next safe point (training saves a checkpoint); Ctrl-C again to abort");
    });
}

/// Whether Ctrl-C or SIGTERM asked the work to stop: an error then is how the
/// stop surfaced (exit 130), whatever stage it came from.
pub fn stop_was_asked() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// One of the stages that compute on a device (model, train, sample), on the chosen backend.
struct OnDevice<'a> {
    stage: Stage,
    ctx: &'a StageContext<'a>,
    config: &'a PipelineConfig,
}

impl WithBackend for OnDevice<'_> {
    type Output = Result<StageReport>;
    fn run<B: TrainBackend>(self, device: B::Device, name: &'static str) -> Self::Output {
        let ctx = self.ctx.on(device, name);
        Ok(match self.stage {
            Stage::Model => tp06_model::run::<B::InnerBackend>(&ctx, &self.config.model)?,
            Stage::Train => tp06_train::run::<B>(&ctx, &self.config.train)?,
            Stage::Sample => tp06_sample::run::<B::InnerBackend>(&ctx, &self.config.sample)?,
            Stage::Data | Stage::Vocab => unreachable!("the data and vocab stages run on no device"),
        })
    }
}

fn hub() -> Hub {
    Hub::from_env().with_progress(true)
}

/// What the stages (and the range test) run with: the run, the hub, the
/// progress bars and the stop flag of this process.
fn context<'a>(run: &'a RunDir, hub: &'a Hub, force: bool, resume: Resume) -> StageContext<'a> {
    StageContext { run, hub, device: (), backend: "", progress: &ui::Bars, stop: &STOP, force, resume }
}

/// Runs one stage.
fn run_stage(
    stage: Stage,
    config: &PipelineConfig,
    common: &Common,
    run: &RunDir,
    force: bool,
    resume: bool,
) -> Result<StageReport> {
    let hub = hub();
    let ctx = context(run, &hub, force, if resume { Resume::Require } else { Resume::Auto });
    ctx.check_stop(stage)?;
    match stage {
        Stage::Data => Ok(tp06_data::run(&ctx, &config.data)?),
        Stage::Vocab => Ok(tp06_vocab::run(&ctx, &config.vocab, &config.model.base)?),
        Stage::Model | Stage::Train | Stage::Sample => {
            backend::dispatch(common.backend.as_deref(), OnDevice { stage, ctx: &ctx, config })?
        }
    }
}

/// A model directory from `--model`, or the run's fine-tuned model.
fn model_dir(model: Option<&str>, run: &RunDir) -> Result<PathBuf> {
    match model {
        Some(spec) => {
            let source: tp06_artifact::Source = spec.parse().map_err(|e| anyhow::anyhow!("--model {spec}: {e}"))?;
            match tp06_model::ModelDir::fetch(&hub(), &source, tp06_sample::NEEDS) {
                Ok(dir) => Ok(dir.path().to_path_buf()),
                Err(tp06_model::ModelError::Hub { source: e }) => {
                    let hint = match e {
                        tp06_artifact::hub::HubError::Unreachable { .. }
                        | tp06_artifact::hub::HubError::NotCached { .. } => {
                            "; download it once with network access, or pass a local model directory: --model DIR"
                        }
                        _ => "",
                    };
                    Err(anyhow::anyhow!("--model {spec}: {e}{hint}"))
                }
                Err(e) => Err(anyhow::Error::new(e).context(format!("--model {spec}"))),
            }
        }
        None => {
            let train = tp06_artifact::UpstreamCheck::require(run, Stage::Train)
                .context("no --model given and the run has no fine-tuned model yet")?;
            Ok(train.manifest.output_path(run, tp06_train::outputs::EXPORT))
        }
    }
}

/// The base model a peft adapter directory names (`base_model_name_or_path`):
/// a local directory, or a hub id.
fn adapter_base(adapter: &Path, run: &RunDir) -> Result<PathBuf> {
    let base = tp06_model::lora::read_adapter_info(adapter)?.base;
    anyhow::ensure!(
        !base.is_empty(),
        "--adapter `{}`: its adapter_config.json names no base_model_name_or_path; pass the base with --model",
        adapter.display()
    );
    let spec = if Path::new(&base).is_dir() { base } else { format!("hf:{base}") };
    model_dir(Some(&spec), run)
}

/// Generation for people: prompts from the command line, a file or stdin.
struct AdHoc {
    dir: PathBuf,
    /// A peft LoRA adapter directory to put on `dir`.
    adapter: Option<PathBuf>,
    prompts: Vec<String>,
    interactive: bool,
    settings: tp06_sample::AdHoc,
}

impl WithBackend for AdHoc {
    type Output = Result<()>;
    fn run<B: TrainBackend>(self, device: B::Device, _name: &'static str) -> Result<()> {
        let s = &self.settings;
        type G<B> = tp06_sample::Generator<<B as AutodiffBackend>::InnerBackend>;
        let generator = match &self.adapter {
            Some(adapter) => G::<B>::load_with_adapter(&self.dir, adapter, s.precision, &device)?,
            None => G::<B>::load_in(&self.dir, s.precision, &device, tp06_artifact::Watch::none())?,
        };
        let answer = |prompt: &str| -> Result<()> {
            // Ctrl-C or SIGTERM: stop before the next generation (nothing is written but the terminal).
            tp06_artifact::fault::interrupt("generation");
            if STOP.load(Ordering::SeqCst) {
                anyhow::bail!("interrupted: generation stopped before {prompt:?}");
            }
            let outs = generator.complete_unless(prompt, &s.processing, s.length, s.samples, s.seed, &STOP)?;
            let Some(outs) = outs else { anyhow::bail!("interrupted: generation of {prompt:?} stopped") };
            for (text, _) in outs {
                ui::print(&text);
                if s.samples > 1 {
                    ui::print("---");
                }
            }
            Ok(())
        };
        for prompt in &self.prompts {
            answer(prompt)?;
        }
        if self.interactive {
            use std::io::BufRead;
            eprintln!("one prompt per line; an empty line or Ctrl-D ends");
            for line in std::io::stdin().lock().lines() {
                let line = line.context("cannot read standard input")?;
                if line.trim().is_empty() {
                    break;
                }
                if let Err(e) = answer(&line) {
                    if STOP.load(Ordering::SeqCst) {
                        return Err(e);
                    }
                    ui::error(&e);
                }
            }
        }
        Ok(())
    }
}

fn sample_command(common: &Common, args: &SampleArgs) -> Result<()> {
    if !args.ad_hoc() {
        return single(Stage::Sample, common, false);
    }
    let (config, run) = configure(&common.setup, false)?;
    let sample = &config.sample;
    let mut prompts = args.prompt.clone();
    if let Some(file) = &args.prompts_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read --prompts-file `{}`", file.display()))?;
        prompts.extend(text.lines().filter(|l| !l.trim().is_empty()).map(String::from));
    }
    if prompts.is_empty() && !args.interactive {
        prompts = sample.prompts.iter().map(|p| p.text.clone()).collect();
    }
    let overrides = tp06_sample::Overrides {
        greedy: args.greedy,
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        repetition_penalty: args.repetition_penalty,
        max_length: args.max_length,
        max_new_tokens: args.max_new_tokens,
        num_samples: args.num_samples,
        seed: args.seed,
        precision: args.precision,
    };
    let settings = overrides.apply(sample, &|key| format!("--{}", key.replace('_', "-")))?;
    let dir = match (&args.model, &args.adapter) {
        (None, Some(adapter)) => adapter_base(adapter, &run)?,
        (model, _) => model_dir(model.as_deref(), &run)?,
    };
    let work = AdHoc { dir, adapter: args.adapter.clone(), prompts, interactive: args.interactive, settings };
    backend::dispatch(common.backend.as_deref(), work)?
}

/// The exploration demos.
struct ExploreWork {
    demo: ExploreDemo,
    out: PathBuf,
    /// Print the demo's tables (not when the pipeline runs it for the report).
    show: bool,
}

enum ExploreDemo {
    SmartInit {
        base: Box<tp06_model::StageConfig>,
        model: Option<PathBuf>,
        name: String,
        references: Vec<String>,
        seed: u64,
    },
    Sampling {
        dir: PathBuf,
        prompt: String,
        precision: tp06_model::Precision,
    },
}

impl WithBackend for ExploreWork {
    type Output = Result<()>;
    fn run<B: TrainBackend>(self, device: B::Device, _name: &'static str) -> Result<()> {
        type I<B> = <B as AutodiffBackend>::InnerBackend;
        tp06_artifact::fs::create_dir_all(&self.out)?;
        match self.demo {
            ExploreDemo::SmartInit { base, model, name, references, seed } => {
                let watch = tp06_artifact::Watch { progress: &ui::Bars, stop: &STOP };
                let (model, tok) = match model {
                    Some(dir) => {
                        let g = tp06_sample::Generator::<I<B>>::load_watched(&dir, &device, watch)?;
                        (g.model, g.tok)
                    }
                    None => tp06_sample::explore::base_model::<I<B>>(&hub(), &base, &device, watch)?,
                };
                let demo = tp06_sample::explore::smart_init(model, &tok, &name, &references, seed, watch)?;
                if self.show {
                    ui::print(&demo.summary());
                }
                tp06_artifact::fs::write_json_atomic(&self.out.join(tp06_sample::explore::SMART_INIT_FILE), &demo)?;
            }
            ExploreDemo::Sampling { dir, prompt, precision } => {
                let none = tp06_artifact::Watch::none();
                let g = tp06_sample::Generator::<I<B>>::load_in(&dir, precision, &device, none)?;
                let demo = tp06_sample::explore::sampling(&g.model, &g.tok, &prompt)?;
                if self.show {
                    ui::print(&demo.summary());
                }
                tp06_artifact::fs::write_json_atomic(&self.out.join(tp06_sample::explore::SAMPLING_FILE), &demo)?;
            }
        }
        Ok(())
    }
}

fn explore_command(demo: Explore) -> Result<()> {
    let (common, work_demo) = match demo {
        Explore::SmartInit { common, model, name, reference } => {
            let (config, _) = configure(&common.setup, false)?;
            let model = match model {
                Some(spec) => Some(model_dir(Some(&spec), &RunDir::new(common.setup.run_dir()))?),
                None => None,
            };
            let references = match reference {
                Some(word) => vec![word],
                None => tp06_sample::explore::reference_candidates(&config.model.reference_words),
            };
            let demo = ExploreDemo::SmartInit {
                base: Box::new(config.model.clone()),
                model,
                name: name.unwrap_or_else(|| tp06_sample::explore::NOTEBOOK_NAME.into()),
                references,
                seed: config.sample.seed,
            };
            (common, demo)
        }
        Explore::Sampling { common, model, prompt, precision } => {
            let (config, run) = configure(&common.setup, false)?;
            let dir = match model {
                Some(spec) => model_dir(Some(&spec), &run)?,
                None => match model_dir(None, &run) {
                    Ok(dir) => dir,
                    Err(_) if !config.model.from_scratch => model_dir(Some(&config.model.base.to_string()), &run)?,
                    Err(e) => return Err(e.context("run the pipeline first (cargo xtask pipeline) or pass --model")),
                },
            };
            let prompt = prompt.unwrap_or_else(|| tp06_sample::explore::NOTEBOOK_PROMPT.into());
            let precision = precision.unwrap_or(config.sample.precision);
            (common, ExploreDemo::Sampling { dir, prompt, precision })
        }
    };
    let out = tp06_report::explore_dir(&RunDir::new(common.setup.run_dir()));
    backend::dispatch(common.backend.as_deref(), ExploreWork { demo: work_demo, out, show: true })?
}

/// The notebook's two demos for the report, with their default settings: the
/// smart-init demo on the base model and the sampling demo on the fine-tuned
/// one. Run when the pipeline changed something or a demo is missing; a demo
/// that fails is reported and left out of the report, it does not fail the run.
fn report_demos(common: &Common, config: &PipelineConfig, run: &RunDir, refresh: bool) {
    let out = tp06_report::explore_dir(run);
    let references = tp06_sample::explore::reference_candidates(&config.model.reference_words);
    let demos = [
        (
            tp06_sample::explore::SMART_INIT_FILE,
            ExploreDemo::SmartInit {
                base: Box::new(config.model.clone()),
                model: None,
                name: tp06_sample::explore::NOTEBOOK_NAME.into(),
                references,
                seed: config.sample.seed,
            },
        ),
        (
            tp06_sample::explore::SAMPLING_FILE,
            ExploreDemo::Sampling {
                dir: run.stage_dir(Stage::Train).join(tp06_train::outputs::EXPORT),
                prompt: tp06_sample::explore::NOTEBOOK_PROMPT.into(),
                precision: config.sample.precision,
            },
        ),
    ];
    for (file, demo) in demos {
        if (!refresh && out.join(file).is_file()) || STOP.load(Ordering::SeqCst) {
            continue;
        }
        let work = ExploreWork { demo, out: out.clone(), show: false };
        match backend::dispatch(common.backend.as_deref(), work).and_then(|r| r) {
            // Stopped: the pipeline says so and how to write the report.
            Err(_) if STOP.load(Ordering::SeqCst) => return,
            Err(e) => tracing::warn!("explore demo {file} not written: {e:#}"),
            Ok(()) => {}
        }
    }
}

fn report_command(location: &RunLocation, lang: &str) -> Result<()> {
    let lang: tp06_report::Lang = lang.parse().map_err(anyhow::Error::msg)?;
    let written = tp06_report::write(&RunDir::new(location.run_dir()), lang)?;
    show_report(&written);
    Ok(())
}

fn show_report(written: &tp06_report::Written) {
    for (section, why) in &written.missing {
        ui::print(&format!("report: {section}: {why}"));
    }
    ui::print(&format!("report: {}/7 sections complete → {}", written.complete, written.html.display()));
}

fn show(stage: Stage, run: &RunDir, report: &StageReport) {
    if report.up_to_date {
        ui::print(&format!("{stage}: up to date (use --force to run it again)"));
    } else {
        ui::print(&report.summary);
        ui::print(&format!("{stage}: done in {:.1} s → {}", report.manifest.seconds, run.stage_dir(stage).display()));
    }
}

/// The configuration of a command on the run directory (see
/// [`config::resolve_for_run`]), and the run directory. Where it came from
/// when not named is logged (`announce`: at info, as where stages run; else
/// at debug, for generation and the demos).
fn configure(setup: &Setup, announce: bool) -> Result<(PipelineConfig, RunDir)> {
    let run = RunDir::new(setup.run_dir());
    let args = setup.config_args();
    let (config, recorded) = config::resolve_for_run(&args, run.root())?;
    let note = match recorded {
        Some(file) => {
            Some(format!("configuration: the run's own `{}` (--preset or --config to replace it)", file.display()))
        }
        None if args.preset.is_none() && args.config.is_none() => {
            Some(format!("configuration: the default preset, {} (--preset to choose another)", config::DEFAULT_PRESET))
        }
        None => None,
    };
    if let Some(note) = note {
        if announce {
            tracing::info!("{note}");
        } else {
            tracing::debug!("{note}");
        }
    }
    Ok((config, run))
}

/// [`configure`], for running stages: creates the run directory and records
/// the configuration in it.
fn setup(common: &Common) -> Result<(PipelineConfig, RunDir)> {
    let (config, run) = configure(&common.setup, true)?;
    tp06_artifact::fs::create_dir_all(run.root())
        .with_context(|| format!("the run directory `{}` cannot be created", run.root().display()))?;
    config::record(&config, run.root())?;
    Ok((config, run))
}

/// Dispatches a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Pipeline { common, from, to } => {
            // (`--from` after `--to` was refused as a usage error: `Cli::check_stage_range`.)
            let from = from.unwrap_or(Stage::Data);
            let to = to.unwrap_or(Stage::Sample);
            let (config, run) = setup(&common)?;
            let mut changed = false;
            for stage in Stage::ALL.into_iter().filter(|s| (from..=to).contains(s)) {
                let report = run_stage(stage, &config, &common, &run, common.force, false)?;
                changed |= !report.up_to_date;
                show(stage, &run, &report);
            }
            if to == Stage::Sample {
                let not_reported = || {
                    anyhow::anyhow!(
                        "interrupted: every stage is done; the report was not written (`cargo xtask report --run-dir {}` writes it)",
                        run.root().display()
                    )
                };
                if STOP.load(Ordering::SeqCst) {
                    return Err(not_reported());
                }
                report_demos(&common, &config, &run, changed);
                if STOP.load(Ordering::SeqCst) {
                    return Err(not_reported());
                }
                show_report(&tp06_report::write(&run, tp06_report::Lang::Fr)?);
            }
            Ok(())
        }
        Command::Data { common } => single(Stage::Data, &common, false),
        Command::Vocab { common } => single(Stage::Vocab, &common, false),
        Command::Model { common } => single(Stage::Model, &common, false),
        Command::Train { common, resume } => single(Stage::Train, &common, resume),
        Command::LrFind { common } => lr_find_command(&common),
        Command::HeldOut { common, model, precision } => held_out_command(&common, model.as_deref(), precision),
        Command::Export { common, model, format: _, precision, out, adapter: None } => {
            export_command(&common, model.as_deref(), precision, out.as_deref())
        }
        Command::Export { common, model, format: _, precision, out, adapter: Some(adapter) } => {
            export_adapter_command(&common, model.as_deref(), adapter.as_deref(), precision, out.as_deref())
        }
        Command::Sample { common, args } => sample_command(&common, &args),
        Command::Explore { demo } => explore_command(demo),
        Command::Report { location, lang } => report_command(&location, &lang),
        Command::Bench { peer, shapes, works, repeats, steps, threads, json, precision, .. } if peer == "llama.cpp" => {
            anyhow::ensure!(
                works.iter().all(|w| w == "generate"),
                "--peer llama.cpp measures generation only: add --works generate"
            );
            let options = tp06_bench::llama_cpp::PeerOptions {
                shapes,
                precision,
                repeats,
                steps,
                threads,
                json,
                script: config::repo_root().join("bench/peer_llama_cpp.py"),
                exe: std::env::current_exe().context("cannot find the tp06 executable")?,
            };
            ui::print(&tp06_bench::llama_cpp::bench(&options)?);
            Ok(())
        }
        Command::Bench {
            shapes,
            works,
            repeats,
            steps,
            threads,
            json,
            backend,
            precision,
            freeze,
            kernels,
            size,
            ..
        } => {
            let options = tp06_bench::BenchOptions {
                shapes,
                works,
                repeats,
                steps,
                threads,
                json,
                backend: backend::resolve(backend.as_deref())?,
                script: config::repo_root().join("bench/bench.py"),
                exe: std::env::current_exe().context("cannot find the tp06 executable")?,
                precision,
                freeze,
                kernels,
            };
            ui::print(&crate::bench::bench(&options, size)?);
            Ok(())
        }
        Command::BenchOne { work, shape, steps, threads, backend, precision, freeze, kernels, size } => {
            let one = tp06_bench::One { work, shape, steps, threads, precision, freeze, kernels };
            let measure = crate::bench::Measure { one, workload: crate::bench::workload(freeze, size)? };
            let measurement = backend::dispatch(backend.as_deref(), measure)??;
            ui::print(&serde_json::to_string(&measurement)?);
            Ok(())
        }
        Command::Serve { setup, args } => serve_command(&setup, &args),
        Command::Config { setup } => {
            let (config, _) = configure(&setup, false)?;
            ui::print(&toml::to_string_pretty(&config).context("cannot print the configuration")?);
            Ok(())
        }
    }
}

/// The range test on the chosen backend.
struct LrFind<'a> {
    ctx: &'a StageContext<'a>,
    config: &'a tp06_train::Config,
}

impl WithBackend for LrFind<'_> {
    type Output = Result<tp06_train::lr_find::RangeTest>;
    fn run<B: TrainBackend>(self, device: B::Device, name: &'static str) -> Self::Output {
        Ok(tp06_train::find_lr::<B>(&self.ctx.on(device, name), self.config)?)
    }
}

/// The held-out evaluation of a model in a precision, on the chosen backend.
struct HeldOut<'a> {
    run: &'a RunDir,
    config: &'a tp06_train::Config,
    dir: PathBuf,
    precision: tp06_model::Precision,
}

impl WithBackend for HeldOut<'_> {
    type Output = Result<tp06_train::Evaluation>;
    fn run<B: TrainBackend>(self, device: B::Device, _name: &'static str) -> Self::Output {
        let watch = tp06_artifact::Watch { progress: &ui::Bars, stop: &STOP };
        let g = tp06_sample::Generator::<B::InnerBackend>::load_in(&self.dir, self.precision, &device, watch)?;
        Ok(tp06_train::held_out(self.run, self.config, &g.model, &device, watch)?)
    }
}

fn held_out_command(common: &Common, model: Option<&str>, precision: tp06_model::Precision) -> Result<()> {
    let (config, run) = setup(common)?;
    let dir = model_dir(model, &run)?;
    let started = std::time::Instant::now();
    let job = HeldOut { run: &run, config: &config.train, dir: dir.clone(), precision };
    let eval = backend::dispatch(common.backend.as_deref(), job)??;
    ui::print(&format!(
        "held-out: {:.5} nats/token, {:.5} bits/char ({precision}, {}, {:.1} s)",
        eval.loss,
        eval.nats_per_char / std::f64::consts::LN_2,
        dir.display(),
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

fn export_command(
    common: &Common,
    model: Option<&str>,
    format: tp06_model::gguf::GgufFormat,
    out: Option<&Path>,
) -> Result<()> {
    let (config, run) = setup(common)?;
    let dir = model_dir(model, &run)?;
    let path = out.map_or_else(|| run.root().join("gguf").join(format!("model-{format}.gguf")), Path::to_path_buf);
    let started = std::time::Instant::now();
    let about = tp06_model::gguf::About {
        name: match model {
            Some(spec) => spec.to_string(),
            None => format!("tp06 {}", run.root().file_name().map_or_else(String::new, |n| n.to_string_lossy().into())),
        },
        source: Some(dir.display().to_string()),
        base: model.is_none().then(|| config.model.base.to_string()),
    };
    let watch = tp06_artifact::Watch { progress: &ui::Bars, stop: &STOP };
    let tokens = tp06_model::gguf::write_dir(&dir, &about, format, &path, watch)?;
    let size = std::fs::metadata(&path).map_or(0, |m| m.len());
    ui::print(&format!(
        "gguf: {} ({format}, {:.1} MB, {} tokens, {:.1} s); run it with llama.cpp: llama-cli -m {}",
        path.display(),
        size as f64 / 1e6,
        tokens,
        started.elapsed().as_secs_f64(),
        path.display()
    ));
    Ok(())
}

/// `export --adapter`: the adapter's GGUF and its base's beside it.
fn export_adapter_command(
    common: &Common,
    model: Option<&str>,
    adapter: Option<&Path>,
    format: tp06_model::gguf::GgufFormat,
    out: Option<&Path>,
) -> Result<()> {
    let (config, run) = setup(common)?;
    let adapter = match adapter {
        Some(dir) => dir.to_path_buf(),
        None => {
            let train = tp06_artifact::UpstreamCheck::require(&run, Stage::Train)
                .context("no --adapter DIR given and the run has no fine-tuned model yet")?;
            let dir = train.manifest.output_path(&run, tp06_train::outputs::ADAPTER);
            if !dir.join(tp06_model::lora::ADAPTER_CONFIG).is_file() {
                anyhow::bail!(
                    "{}: the run has no LoRA adapter (its preset trains the model itself); \
                     export its model without --adapter, or use --preset lora",
                    dir.display()
                );
            }
            dir
        }
    };
    let base = match model {
        Some(_) => model_dir(model, &run)?,
        None => {
            tp06_artifact::UpstreamCheck::require(&run, Stage::Model).context("the run has no model stage yet")?;
            run.stage_dir(Stage::Model)
        }
    };
    let adapter_path = out.map_or_else(|| run.root().join("gguf").join("adapter.gguf"), Path::to_path_buf);
    let stem = adapter_path.file_stem().map_or_else(|| "adapter".into(), |s| s.to_string_lossy().into_owned());
    let base_path = adapter_path.with_file_name(format!("{stem}-base-{format}.gguf"));
    let started = std::time::Instant::now();
    let about = tp06_model::gguf::About {
        name: format!("tp06 {}", adapter.display()),
        source: Some(adapter.display().to_string()),
        base: Some(model.map_or_else(|| config.model.base.to_string(), str::to_string)),
    };
    let watch = tp06_artifact::Watch { progress: &ui::Bars, stop: &STOP };
    let written =
        tp06_model::gguf::adapter::write_dir(&base, &adapter, &about, format, &base_path, &adapter_path, watch)?;
    ui::print(&format!(
        "gguf: {} (LoRA, {} layers, r = {}, alpha = {}) on {} ({format}, {:.1} s); \
         run them with llama.cpp: llama-cli -m {} --lora {}",
        adapter_path.display(),
        written.pairs,
        written.r,
        written.alpha,
        base_path.display(),
        started.elapsed().as_secs_f64(),
        base_path.display(),
        adapter_path.display()
    ));
    Ok(())
}

fn lr_find_command(common: &Common) -> Result<()> {
    let (config, run) = setup(common)?;
    let hub = hub();
    let ctx = context(&run, &hub, common.force, Resume::Auto);
    let test = backend::dispatch(common.backend.as_deref(), LrFind { ctx: &ctx, config: &config.train })??;
    let dir = run.root().join(tp06_train::LR_FIND_DIR);
    let last = test.points.last().map_or(0.0, |p| p.lr);
    ui::print(&format!(
        "Range test: {} steps from {:.0e} to {last:.1e}\nSuggested learning rate: {:.2e} — {}",
        test.points.len(),
        tp06_train::lr_find::START_LR,
        test.suggestion,
        test.rule
    ));
    for (rule, lr) in &test.others {
        ui::print(&format!("  ({rule}: {lr:.2e})"));
    }
    ui::print(&format!(
        "lr-find: done → {} (use it: --set train.lr={:.1e}, or train.lr = \"find\")",
        dir.display(),
        test.suggestion
    ));
    Ok(())
}

fn single(stage: Stage, common: &Common, resume: bool) -> Result<()> {
    let (config, run) = setup(common)?;
    let report = run_stage(stage, &config, common, &run, common.force, resume)?;
    show(stage, &run, &report);
    Ok(())
}

/// The server, on the chosen backend.
struct ServeWork {
    models: Vec<tp06_serve::ModelSpec>,
    options: tp06_serve::Options,
}

impl WithBackend for ServeWork {
    type Output = Result<()>;
    fn run<B: TrainBackend>(self, device: B::Device, name: &'static str) -> Result<()> {
        type I<B> = <B as AutodiffBackend>::InnerBackend;
        let ids: Vec<String> = self.models.iter().map(|m| format!("{} ({})", m.id, m.dir.display())).collect();
        tracing::info!("loading {} on {name}", ids.join(" and "));
        tp06_serve::serve::<I<B>>(self.models, device, self.options, &STOP, |url| {
            ui::print(&format!(
                "serving {} at {url} — the playground; the API at {url}v1 (Ctrl-C to stop)",
                ids.join(" and ")
            ));
        })?;
        ui::print("serve: stopped");
        Ok(())
    }
}

fn serve_command(setup: &DemoSetup, args: &ServeArgs) -> Result<()> {
    let (config, run) = configure(&setup.setup, false)?;
    let dir = match (&args.model, &args.adapter) {
        (Some(spec), _) => model_dir(Some(spec), &run)?,
        (None, Some(adapter)) => adapter_base(adapter, &run)?,
        (None, None) => {
            model_dir(None, &run).context("run the pipeline first (cargo xtask pipeline), or pass --model")?
        }
    };
    let adapter = args.adapter.clone();
    // With an adapter, the base to compare with is the model it goes on, without it.
    let adapter_on = adapter.is_some().then(|| dir.clone());
    let precision = args.precision.unwrap_or(config.sample.precision);
    let mut models = vec![tp06_serve::ModelSpec { id: "tp06".into(), dir, adapter, role: "fine-tuned", precision }];
    let base = match args.base.as_deref() {
        Some("none") => None,
        Some(spec) => Some(model_dir(Some(spec), &run)?),
        None if adapter_on.is_some() => adapter_on,
        None if args.model.is_none() && !config.model.from_scratch => {
            match model_dir(Some(&config.model.base.to_string()), &run) {
                Ok(dir) => Some(dir),
                Err(e) => {
                    tracing::warn!("the run's base model is left out: {e:#}");
                    None
                }
            }
        }
        None => None,
    };
    if let Some(dir) = base {
        models.push(tp06_serve::ModelSpec { id: "tp06-base".into(), dir, adapter: None, role: "base", precision });
    }
    let options = tp06_serve::Options {
        addr: args.addr,
        api_key: args.api_key.clone().filter(|k| !k.is_empty()),
        queue: args.queue,
        limits: tp06_serve::Limits { max_batch: args.max_batch, kv_budget: args.kv_budget_mb << 20 },
        lang: args.lang.clone(),
        prompts: config.sample.prompts.iter().map(|p| p.text.clone()).collect(),
        max_body: args.max_body,
    };
    backend::dispatch(setup.backend.as_deref(), ServeWork { models, options })?
}
