//! `cargo xtask`: builds the `tp06` binary with optimisations and runs it.
//!
//! ```text
//! cargo xtask [--features LIST] [--debug] COMMAND [ARGS…]
//! ```
//!
//! COMMAND and ARGS go to `tp06` unchanged (`cargo xtask pipeline --preset demo`,
//! `cargo xtask train --help`, …). `--features` picks the backends compiled in
//! (`cuda`, `ndarray`; the CPU backend `flex` is always there) and `--debug` uses
//! the dev profile (faster to build, slower to train). This crate has no
//! dependencies so that it stays cheap to compile.

use std::env;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

const USAGE: &str = "\
usage: cargo xtask [--features LIST] [--debug] COMMAND [ARGS...]

Builds the `tp06` binary (release profile) and runs COMMAND with it:
  pipeline   run every stage (cargo xtask pipeline --preset demo)
  data, vocab, model, train, sample   run one stage
  lr-find    learning-rate range test of the train settings
  serve      the fine-tuned model: a playground page and an OpenAI-compatible API
  explore, report, bench, config      see `cargo xtask COMMAND --help`

xtask options (before COMMAND):
  --features LIST   extra backends: cuda, ndarray (comma-separated)
  --debug           build with the dev profile instead of release
";

fn main() -> ExitCode {
    let mut args = env::args().skip(1).peekable();
    let mut features: Vec<String> = Vec::new();
    let mut release = true;
    while let Some(arg) = args.peek().cloned() {
        match arg.as_str() {
            "--features" => {
                args.next();
                match args.next() {
                    Some(list) => {
                        features.extend(list.split(',').map(str::trim).filter(|f| !f.is_empty()).map(String::from))
                    }
                    None => return usage_error("--features needs a list, e.g. --features cuda"),
                }
            }
            a if a.starts_with("--features=") => {
                features.extend(
                    a["--features=".len()..].split(',').map(str::trim).filter(|f| !f.is_empty()).map(String::from),
                );
                args.next();
            }
            "--debug" => {
                release = false;
                args.next();
            }
            "-h" | "--help" | "help" => {
                print!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ => break,
        }
    }
    let rest: Vec<String> = args.collect();
    if rest.is_empty() {
        return usage_error("missing COMMAND");
    }
    if let Some(message) = features.iter().find_map(|f| feature_error(f)) {
        return usage_error(&message);
    }

    // `cargo run` sets it at run time; the compile-time value would point at
    // another checkout when two share a target directory.
    let root = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()))
        .join("..");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(&cargo);
    build.current_dir(&root).args(["build", "--package", "tp06-cli", "--bin", "tp06"]);
    // `cargo run` gave this process the variables of the xtask package; a build
    // script that watches one of them (ring's watches CARGO_MANIFEST_DIR) would
    // rebuild half the tree whenever the binary was last built without xtask.
    for (name, _) in env::vars_os() {
        if is_package_variable(&name.to_string_lossy()) {
            build.env_remove(&name);
        }
    }
    if release {
        build.arg("--release");
    }
    if !features.is_empty() {
        build.args(["--features", &features.join(",")]);
    }
    if features.iter().any(|f| f == "cuda") && env::var_os("CUDARC_CUDA_VERSION").is_none() {
        // CUDA is loaded at run time; this only picks the bindings' API level.
        build.env("CUDARC_CUDA_VERSION", "13000");
    }
    match build.status() {
        Ok(status) if status.success() => {}
        Ok(status) => return ExitCode::from(status.code().unwrap_or(1).clamp(1, 255) as u8),
        Err(e) => {
            eprintln!("xtask: cannot run `{cargo}`: {e}");
            return ExitCode::FAILURE;
        }
    }

    let target = env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let binary = target.join(if release { "release" } else { "debug" }).join("tp06");
    let mut run = Command::new(&binary);
    run.args(&rest);
    exec(run, &binary)
}

/// Why `feature` is not one `--features` takes, if it is not.
fn feature_error(feature: &str) -> Option<String> {
    match feature {
        "cuda" | "ndarray" => None,
        "flex" => Some("`flex`, the CPU backend, is always built; the extra backends are cuda and ndarray".into()),
        other => Some(format!("unknown feature `{other}`; the extra backends are cuda and ndarray")),
    }
}

/// The variables `cargo run` sets for the package it runs (not the user's
/// cargo configuration such as `CARGO_TARGET_DIR` or `CARGO_HOME`).
fn is_package_variable(name: &str) -> bool {
    matches!(
        name,
        "CARGO_MANIFEST_DIR"
            | "CARGO_MANIFEST_PATH"
            | "CARGO_CRATE_NAME"
            | "CARGO_BIN_NAME"
            | "CARGO_PRIMARY_PACKAGE"
            | "CARGO_RUSTC_CURRENT_DIR"
    ) || name.starts_with("CARGO_PKG_")
}

/// Replaces this process with `command` where the OS allows it, so that Ctrl-C
/// reaches `tp06` alone and the shell waits for it to finish saving.
#[cfg(unix)]
fn exec(mut command: Command, binary: &std::path::Path) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let err = command.exec();
    eprintln!("xtask: cannot run `{}`: {err}", binary.display());
    ExitCode::FAILURE
}

#[cfg(not(unix))]
fn exec(mut command: Command, binary: &std::path::Path) -> ExitCode {
    match command.status() {
        Ok(status) => ExitCode::from(status.code().unwrap_or(1).clamp(0, 255) as u8),
        Err(err) => {
            eprintln!("xtask: cannot run `{}`: {err}", binary.display());
            ExitCode::FAILURE
        }
    }
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("xtask: {message}\n\n{USAGE}");
    ExitCode::from(2)
}

#[cfg(test)]
mod tests {
    use super::{feature_error, is_package_variable};

    #[test]
    fn features_are_the_extra_backends_only() {
        assert_eq!(feature_error("cuda"), None);
        assert_eq!(feature_error("ndarray"), None);
        assert!(feature_error("flex").unwrap().contains("always built"));
        assert!(feature_error("bogus").unwrap().contains("cuda and ndarray"));
    }

    #[test]
    fn strips_the_run_package_variables_and_keeps_the_users_configuration() {
        for name in [
            "CARGO_MANIFEST_DIR",
            "CARGO_MANIFEST_PATH",
            "CARGO_PKG_NAME",
            "CARGO_PKG_VERSION_MAJOR",
            "CARGO_CRATE_NAME",
            "CARGO_BIN_NAME",
        ] {
            assert!(is_package_variable(name), "{name} comes from `cargo run`");
        }
        for name in [
            "CARGO",
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "CARGO_INCREMENTAL",
            "CARGO_TERM_COLOR",
            "CARGO_BUILD_JOBS",
            "RUSTFLAGS",
            "PATH",
        ] {
            assert!(!is_package_variable(name), "{name} is the user's configuration");
        }
    }
}
