//! What the workspace's tests share: the Python reference (torch,
//! transformers, tokenizers, safetensors) that the interoperability checks run.
//!
//! A check that needs the reference calls [`python_with`]. Where the modules
//! import, it gets the interpreter. Where they do not:
//! - under CI (`CI` set to anything but `false`/`0`, as CI services set it),
//!   the test fails, naming the missing modules and the install command: an
//!   interoperability check that silently does not run is a check CI never made;
//! - elsewhere it is skipped with a `SKIPPED:` line written straight to the
//!   process's standard error, past the test harness's capture, so that
//!   `cargo test` shows it beside the test's `ok`.

use std::io::Write;
use std::process::Command;

/// The pinned reference packages, installed by `.ci/run`.
pub const REQUIREMENTS: &str = "fixtures/requirements.txt";

/// Whether this is a CI run, where a missing reference is an error.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// `python3` when it imports every module of `modules`; otherwise `None`
/// after reporting the skip — or a panic under CI (see the crate's doc).
/// `check` says what does not run without them.
pub fn python_with(modules: &[&str], check: &str) -> Option<&'static str> {
    match find(modules) {
        Ok(python) => Some(python),
        Err(why) => {
            let message = format!("{check} needs {why}; install them with `pip install -r {REQUIREMENTS}`");
            if in_ci() {
                panic!("{message} (CI is set: a reference check may not be skipped)");
            }
            skip(&message);
            None
        }
    }
}

/// `python3` when it imports every module of `modules`, else why not.
pub fn find(modules: &[&str]) -> Result<&'static str, String> {
    let python = "python3";
    let import = format!("import {}", modules.join(", "));
    let why = match Command::new(python).args(["-c", &import]).output() {
        Ok(out) if out.status.success() => return Ok(python),
        Ok(out) => String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("import failed").to_string(),
        Err(e) => e.to_string(),
    };
    Err(format!("{python} with {} ({why})", modules.join(", ")))
}

/// Writes `SKIPPED: message` to the real standard error: the test harness
/// captures `eprintln!`, not writes to the stream itself.
pub fn skip(message: &str) {
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED: {message}");
}

/// Writes `NOTE: message` to the real standard output, past the harness's
/// capture: for a test that passes but checked less than its name says.
pub fn note(message: &str) {
    let _ = writeln!(std::io::stdout().lock(), "NOTE: {message}");
}

/// The `.rs` files under `dir` (recursively, in name order), with their text:
/// what the structure tests read.
pub fn rust_sources(dir: &std::path::Path) -> Vec<(std::path::PathBuf, String)> {
    fn walk(dir: &std::path::Path, out: &mut Vec<(std::path::PathBuf, String)>) {
        let mut entries: Vec<_> =
            std::fs::read_dir(dir).expect("a source folder").flatten().map(|e| e.path()).collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push((path.clone(), std::fs::read_to_string(&path).expect("a source file")));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out
}

/// `n` deterministic values spread evenly over ±`scale` (an xorshift stream
/// from `seed`): the kernels' tests' inputs, the same on every machine.
pub fn uniform(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_module_that_cannot_exist_is_missing_and_named() {
        let why = find(&["json", "no_such_module_tp06"]).unwrap_err();
        assert!(why.contains("no_such_module_tp06") && why.contains("json"), "{why}");
    }
}
