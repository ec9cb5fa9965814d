//! Runs what the command line asked for.

use anyhow::{Context, Result, bail};
use tp06_artifact::hub::Hub;
use tp06_artifact::{RunDir, Stage, StageReport};

use crate::cli::{Cli, Command, Common};
use crate::config::{self, PipelineConfig};
use crate::ui;

/// Whether `err` is the result of Ctrl-C.
pub fn was_interrupted(_err: &anyhow::Error) -> bool {
    false
}

fn hub() -> Hub {
    Hub::from_env().with_progress(true)
}

/// Runs one stage.
fn run_stage(stage: Stage, config: &PipelineConfig, run: &RunDir, force: bool) -> Result<StageReport> {
    let report = match stage {
        Stage::Data => tp06_data::run(run, &config.data, &hub(), force)?,
        other => bail!(
            "stage `{other}` is not built yet in this version; the stages that run today end at `data` \
             (use --to data)"
        ),
    };
    Ok(report)
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
                let report = run_stage(stage, &config, &run, common.force)?;
                show(stage, &run, &report);
            }
            Ok(())
        }
        Command::Data { common } => single(Stage::Data, &common),
        Command::Vocab { common } => single(Stage::Vocab, &common),
        Command::Model { common } => single(Stage::Model, &common),
        Command::Train { common, .. } => single(Stage::Train, &common),
        Command::Sample { common } => single(Stage::Sample, &common),
        Command::Config { common } => {
            let config = config::resolve(&common.config_args())?;
            ui::print(&toml::to_string_pretty(&config).context("cannot print the configuration")?);
            Ok(())
        }
    }
}

fn single(stage: Stage, common: &Common) -> Result<()> {
    let (config, run) = setup(common)?;
    let report = run_stage(stage, &config, &run, common.force)?;
    show(stage, &run, &report);
    Ok(())
}
