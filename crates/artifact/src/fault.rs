//! Fault injection for the reliability tests: `TP06_FAULT=POINT[@N]` makes the
//! N-th arrival (default 1st) at the named point fail the way the real world
//! would — the process dies on the spot (`crash`), or a write fails (`hit`).
//!
//! The points: `manifest` (a stage's outputs are written, its manifest is
//! not), `checkpoint` (a checkpoint is half-written), `disk-full` (a file
//! write fails with "no space left on device"). Unset, every point is one
//! environment lookup.

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
