//! Fault injection for the reliability tests: `TP06_FAULT=POINT[@N]` makes the
//! N-th arrival (default 1st) at the named point fail the way the real world
//! would — the process dies on the spot (`crash`), or a write fails (`hit`).
//!
//! The points: `manifest` (a stage's outputs are written, its manifest is
//! not), `checkpoint` (a checkpoint is half-written), `disk-full` (a file
//! write fails with "no space left on device"); and where long work may be
//! stopped (`interrupt`: the process is sent SIGTERM there, as a user would):
//! `generation` (before each generation of the sample stage, of `tp06 sample
//! --prompt` or of the smart-initialisation demo), `token` (before each token
//! of a generation), `eval-batch` (before each validation batch),
//! `micro-batch` (before each micro-batch of a training step), `tensor`
//! (before each tensor a weight file is read or written with). Unset, every
//! point is one environment lookup.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The variable naming the fault to inject.
pub const VAR: &str = "TP06_FAULT";

static ARRIVALS: AtomicUsize = AtomicUsize::new(0);

fn parse(spec: &str) -> (&str, usize) {
    match spec.split_once('@') {
        Some((point, n)) => (point, n.parse().unwrap_or(1)),
        None => (spec, 1),
    }
}

/// Whether the fault configured in [`VAR`] fires at this arrival at `point`.
pub fn hit(point: &str) -> bool {
    let Ok(spec) = std::env::var(VAR) else { return false };
    let (wanted, n) = parse(&spec);
    wanted == point && ARRIVALS.fetch_add(1, Ordering::SeqCst) + 1 == n
}

/// Kills the process, without unwinding or cleaning up, when the fault fires.
pub fn crash(point: &str) {
    if hit(point) {
        eprintln!("{VAR}: crashing at `{point}`");
        std::process::abort();
    }
}

/// Sends this process SIGTERM when the fault fires, and waits for its handler
/// to have run (the stop flag is set by the time this returns).
pub fn interrupt(point: &str) {
    if hit(point) {
        eprintln!("{VAR}: SIGTERM at `{point}`");
        // SAFETY: a signal to this very process, which has a handler for it.
        #[cfg(unix)]
        unsafe {
            libc::kill(libc::getpid(), libc::SIGTERM);
        }
        // The handler runs on a thread of its own: give it the time to set the flag.
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn specs_name_a_point_and_an_arrival() {
        assert_eq!(parse("checkpoint@3"), ("checkpoint", 3));
        assert_eq!(parse("manifest"), ("manifest", 1));
        assert_eq!(parse("disk-full@x"), ("disk-full", 1));
    }
}
