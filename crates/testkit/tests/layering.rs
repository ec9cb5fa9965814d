//! The layering the architecture states: the stages before the model
//! (`tp06-data`, `tp06-vocab`) and the artifact contract never link Burn, so
//! they build fast and cannot grow a dependency on the model's code.

use std::process::Command;

/// The crates `package` links (normal dependencies; all its features when
/// `all_features`), one name a line.
fn dependencies(package: &str, all_features: bool) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut args = vec!["tree", "--package", package, "--edges", "normal", "--prefix", "none", "--format", "{p}"];
    if all_features {
        args.push("--all-features");
    }
    let out = Command::new(cargo).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().expect("cargo runs");
    assert!(out.status.success(), "cargo tree -p {package}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.split_whitespace().next()).map(String::from).collect()
}

#[test]
fn data_vocab_and_artifact_never_link_burn() {
    for package in ["tp06-artifact", "tp06-data", "tp06-vocab"] {
        let deps = dependencies(package, true);
        assert!(deps.iter().any(|d| d == package), "{package}: cargo tree listed {deps:?}");
        let burn: Vec<&String> = deps.iter().filter(|d| d.starts_with("burn") || d.starts_with("cubecl")).collect();
        assert!(burn.is_empty(), "{package} links {burn:?}: the stages before the model must not depend on Burn");
        for stage in ["tp06-model", "tp06-train", "tp06-sample"] {
            assert!(!deps.iter().any(|d| d == stage), "{package} depends on {stage}");
        }
    }
}

#[test]
fn the_model_links_burn() {
    // The check above would pass vacuously if `cargo tree` listed nothing useful.
    // (Default features: `--all-features` would add CUDA's crates, which a
    // fresh machine has not downloaded before the CUDA check.)
    assert!(dependencies("tp06-model", false).iter().any(|d| d == "burn"));
}

/// The model's source, file by file, without its comments.
fn model_sources() -> Vec<(std::path::PathBuf, String)> {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../model/src");
    tp06_testkit::rust_sources(&src)
        .into_iter()
        .map(|(path, text)| {
            let code: Vec<&str> = text.lines().filter(|l| !l.trim_start().starts_with("//")).collect();
            (path, code.join("\n"))
        })
        .collect()
}

/// What a forward pass computes is decided by its arguments (the weights, the
/// inputs, its `Pass`) and by the backend's type through `Gpt2Ops`: nothing in
/// the model reads hidden per-thread state, the environment, or tests the
/// backend's type or name at run time.
#[test]
fn nothing_hidden_decides_what_the_model_computes() {
    let sources = model_sources();
    assert!(sources.iter().any(|(p, _)| p.ends_with("pass.rs")), "the model's sources were found");
    for (path, code) in &sources {
        for pattern in ["thread_local!", "TypeId", "dyn Any", "downcast", "env::var", "B::name("] {
            assert!(!code.contains(pattern), "{}: `{pattern}`", path.display());
        }
    }
}

/// The kernels folder has no file over 500 lines.
#[test]
fn kernel_files_stay_small() {
    for (path, _) in model_sources().iter().filter(|(p, _)| p.components().any(|c| c.as_os_str() == "kernels")) {
        let lines = std::fs::read_to_string(path).expect("a source file").lines().count();
        assert!(lines <= 500, "{}: {lines} lines", path.display());
    }
}
