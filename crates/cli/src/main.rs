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
/// handing them back to the kernel. With glibc's defaults, every buffer over
/// a threshold (at most 32 MiB) is mapped afresh and unmapped when freed, so
/// each step pays page faults and the kernel's zeroing of the same memory
/// again. On the 124 M shape that was ≈ 10 % of a forward pass; on the 1 B
/// shape every weight-sized tensor (gradients, moments, updates, the MLP's
/// activations) is over the ceiling, and the kernel's side was most of a
/// training step (`sys` 42 s of 62 s; the step 2.5× slower than with this
/// policy, BENCHMARKS.md). So nothing is mapped on its own: every buffer
/// comes from the heap, and the heap's top is not trimmed. Freed buffers are
/// reused by the next step's buffers of the same sizes; the peak resident
/// memory grows a little (+2 % on the 1 B step) and is held until exit.
///
/// One arena for every thread: generation runs on rayon's threads
/// (`kernels::on_pool`), and each thread's own arena would keep its own
/// freed buffers besides the main one's (+10 % of memory at generation).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    // SAFETY: mallopt only sets allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_ARENA_MAX, 1);
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
