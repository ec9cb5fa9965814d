//! Helpers shared by the binary's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The `tp06` binary with the hub switched off.
pub fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tp06"));
    cmd.args(args).env("HF_HUB_OFFLINE", "1").env_remove("TP06_FAULT");
    cmd
}

/// Runs `tp06 ARGS` to completion.
pub fn tp06(args: &[&str]) -> Output {
    command(args).output().unwrap()
}

/// Standard output and error as text.
pub fn text(output: &Output) -> (String, String) {
    (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// The demo pipeline on a short schedule, in `dir`.
pub fn demo_args(dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "pipeline",
        "--preset",
        "demo",
        "--run-dir",
        &dir.display().to_string(),
        "--quiet",
        "--set",
        "train.max_steps=6",
        "--set",
        "train.eval_every=3",
        "--set",
        "train.checkpoint_every=4",
        "--set",
        "sample.max_length=24",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Runs the demo pipeline in `dir`.
pub fn demo(dir: &Path, extra: &[&str]) -> Output {
    let args = demo_args(dir, extra);
    tp06(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Spawns the demo pipeline in `dir`, output discarded, with extra environment.
pub fn spawn_demo(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> std::process::Child {
    let args = demo_args(dir, extra);
    let mut cmd = command(&args.iter().map(String::as_str).collect::<Vec<_>>());
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A stage manifest's `stats`.
pub fn stats(dir: &Path, stage: &str) -> serde_json::Value {
    manifest(dir, stage)["stats"].clone()
}

/// A stage manifest.
pub fn manifest(dir: &Path, stage: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join(stage).join("manifest.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// SHA-256 of a file.
pub fn sha(path: &Path) -> String {
    tp06_artifact::fs::sha256_file(path).unwrap()
}

/// Every stage with a manifest in the run `dir` still has the outputs it
/// records (a manifest never stands over half-written work); `context` names
/// the case for the failure message.
pub fn assert_manifests_hold(dir: &Path, context: &str) {
    let run = tp06_artifact::RunDir::new(dir);
    for stage in tp06_artifact::Stage::ALL {
        if run.manifest_path(stage).exists() {
            let m = tp06_artifact::Manifest::load(&run, stage).unwrap();
            m.verify_outputs(&run)
                .unwrap_or_else(|e| panic!("{context}: {stage}: manifest present but outputs not intact: {e}"));
        }
    }
}

/// Copies the directory tree `from` into `to`.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The `lora` preset's arguments on the demo's inputs, to the end of
/// training on a short schedule, in `dir`, with `extra` settings.
pub fn lora_args(dir: &Path, extra: &[&str]) -> Vec<String> {
    let repo = repo();
    let data = |f: &str| repo.join("data/demo").join(f).display().to_string();
    let sets = [
        format!("data.articles={}", data("articles.jsonl")),
        format!("data.names={}", data("names.txt")),
        format!("model.base={}", data("base")),
        "model.from_scratch=true".into(),
        "model.lora.r=4".into(),
        "model.lora.alpha=8".into(),
        "train.lr=3e-3".into(),
        "train.max_steps=6".into(),
        "train.eval_every=3".into(),
        "train.checkpoint_every=4".into(),
        "train.max_length=64".into(),
    ];
    let mut args: Vec<String> =
        ["pipeline", "--preset", "lora", "--run-dir", &dir.display().to_string(), "--quiet", "--to", "train"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    for set in sets.iter().map(String::as_str).chain(extra.iter().copied()) {
        args.extend(["--set".to_string(), set.to_string()]);
    }
    args
}

/// The `lora` preset on the demo's inputs, to the end of training.
pub fn lora_run(dir: &Path) {
    let args = lora_args(dir, &[]);
    let out = tp06(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "{:?}", text(&out));
}
