//! `tp06`: the pipeline's command line. Parse, resolve, run, report; the logic
//! lives in the stage crates.

mod backend;
mod bench;
mod cli;
mod commands;
mod config;
mod ui;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    ui::init(cli.verbosity());
    commands::install_ctrl_c();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            ui::error(&err);
            if commands::was_interrupted(&err) { ExitCode::from(130) } else { ExitCode::FAILURE }
        }
    }
}
