//! The `tp06` binary end to end: the whole demo pipeline on a short schedule,
//! up-to-date detection, and bad input (message, exit code, no manifest).

use std::path::Path;
use std::process::{Command, Output};

fn tp06(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tp06")).args(args).env("HF_HUB_OFFLINE", "1").output().unwrap()
}

fn text(output: &Output) -> (String, String) {
    (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// The demo on a short schedule, in `dir`.
fn demo(dir: &Path, extra: &[&str]) -> Output {
    let run_dir = dir.display().to_string();
    let mut args = vec![
        "pipeline", "--preset", "demo", "--run-dir", &run_dir, "--quiet",
        "--set", "train.max_steps=6", "--set", "train.eval_every=3", "--set", "train.checkpoint_every=4",
        "--set", "sample.max_length=24",
    ];
    args.extend_from_slice(extra);
    tp06(&args)
}

#[test]
fn the_demo_pipeline_runs_end_to_end_and_then_is_up_to_date() {
    let dir = tempfile::tempdir().unwrap();
    let first = demo(dir.path(), &[]);
    let (out, err) = text(&first);
    assert!(first.status.success(), "stdout:\n{out}\nstderr:\n{err}");
    for stage in ["data", "vocab", "model", "train", "sample"] {
        assert!(dir.path().join(stage).join("manifest.json").is_file(), "{stage} has a manifest");
        assert!(out.contains(&format!("{stage}: done")), "{out}");
    }
    for file in ["train/metrics.jsonl", "train/loss.svg", "train/export/model.safetensors", "train/export/tokenizer.json", "sample/samples.md", "sample/samples.jsonl"] {
        assert!(dir.path().join(file).is_file(), "{file}");
    }
    let metrics = std::fs::read_to_string(dir.path().join("train/metrics.jsonl")).unwrap();
    assert!(metrics.lines().count() >= 3 && metrics.contains("eval_loss"), "{metrics}");
    let samples = std::fs::read_to_string(dir.path().join("sample/samples.md")).unwrap();
    assert!(samples.contains("Pikachu est un Pokémon de type") && samples.contains("**base**"), "{samples}");

    let again = demo(dir.path(), &[]);
    let (out, _) = text(&again);
    assert!(again.status.success());
    for stage in ["data", "vocab", "model", "train", "sample"] {
        assert!(out.contains(&format!("{stage}: up to date")), "{out}");
    }

    // A changed training setting re-runs train and what follows, not what precedes.
    let changed = demo(dir.path(), &["--set", "train.lr=1e-3"]);
    let (out, _) = text(&changed);
    assert!(changed.status.success());
    assert!(out.contains("model: up to date") && out.contains("train: done") && out.contains("sample: done"), "{out}");

    // Generation with the run's model, from the command line.
    let run_dir = dir.path().display().to_string();
    let sampled = tp06(&["sample", "--preset", "demo", "--run-dir", &run_dir, "--prompt", "Salamèche est", "--greedy", "--max-new-tokens", "5"]);
    let (out, err) = text(&sampled);
    assert!(sampled.status.success(), "{err}");
    assert!(out.starts_with("Salamèche est"), "{out}");
}

#[test]
fn bad_input_fails_with_one_clear_line_and_no_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().display().to_string();
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (vec!["data", "--preset", "demo", "--set", "data.articles=/nonexistent/articles.parquet"], vec!["data.articles", "nonexistent", "--set data.articles=PATH"]),
        (vec!["data", "--preset", "demo", "--set", "train.epoch=2"], vec!["unknown key `train.epoch`", "did you mean `train.epochs`"]),
        (vec!["data", "--preset", "demo", "--set", "train.lr=0"], vec!["train.lr"]),
        (vec!["data", "--preset", "nope"], vec!["unknown preset `nope`"]),
        (vec!["vocab", "--preset", "demo"], vec!["stage `data` has not run", "cargo xtask data"]),
        (vec!["train", "--preset", "demo"], vec!["stage `data` has not run"]),
        (vec!["sample", "--preset", "demo", "--model", "/nonexistent/model", "--prompt", "x"], vec!["config.json"]),
        (vec!["model", "--preset", "demo", "--backend", "tpu"], vec!["backend `tpu` is not compiled"]),
    ];
    for (args, fragments) in cases {
        let mut full = args.clone();
        full.extend(["--run-dir", &run_dir]);
        let output = tp06(&full);
        let (_, err) = text(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {err}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{args:?}: one line: {err}");
        assert!(lines[0].starts_with("error: "), "{err}");
        for fragment in fragments {
            assert!(err.contains(fragment), "{args:?}: `{fragment}` not in {err}");
        }
        assert!(!dir.path().join("data/manifest.json").exists());
    }
    // Usage errors are clap's (exit code 2).
    assert_eq!(tp06(&["pipeline", "--from", "trian"]).status.code(), Some(2));
}
