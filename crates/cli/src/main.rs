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

/// Keeps freed tensor buffers in the process for the next pass instead of
/// handing them back to the kernel. With glibc's defaults, buffers of a few
/// MB are mapped afresh and freed pages returned after every op, so each
/// pass pays page faults and the kernel's zeroing of the same memory again
/// (≈ 10 % of a forward pass in `perf`). Buffers up to 32 MiB (glibc's
/// ceiling) now come from the heap, and the heap's top is not trimmed: the
/// peak resident memory grows a little (≈ 10–15 MB measured on the bench's
/// forward passes) and is held until exit.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    // SAFETY: mallopt only sets allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = cli::Cli::parse();
    cli.check_stage_range();
    ui::init(cli.verbosity());
    commands::install_ctrl_c();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            ui::error(&err);
            if commands::stop_was_asked() { ExitCode::from(130) } else { ExitCode::FAILURE }
        }
    }
}
