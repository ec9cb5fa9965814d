//! The `tp06` binary end to end: the whole demo pipeline on a short schedule,
//! up-to-date detection, the report. (Bad input: tests/bad_input.rs.)

mod common;

use common::{demo, manifest, sha, stats, text, tp06};
use std::path::Path;

/// A count as the report prints it: groups of three digits, narrow no-break spaces.
fn grouped(n: u64) -> String {
    tp06_artifact::group_digits(n as usize, '\u{202f}')
}

/// The report the pipeline writes: every section present and complete, and
/// its figures those of the stage manifests.
fn check_report(dir: &Path) {
    let html = std::fs::read_to_string(dir.join("report/index.html")).unwrap();
    let md = std::fs::read_to_string(dir.join("report/report.md")).unwrap();
    for i in 1..=7 {
        assert!(html.contains(&format!("<section id=\"s{i}\">")), "section {i}");
    }
    assert!(!html.contains("class=\"missing\""), "a section is incomplete:\n{md}");
    assert!(
        !html.contains("<script") && !html.contains("src=\"http") && !html.contains("href=\"http"),
        "self-contained, offline"
    );
    assert!(html.matches("<svg").count() >= 5, "filter, tokens, freezing, lr and loss figures");
    for svg in ["filter.svg", "tokens-per-name.svg", "freezing.svg", "lr.svg", "loss.svg"] {
        assert!(dir.join("report").join(svg).is_file(), "{svg} beside report.md");
    }
    let cell = |value: String| format!(">{value}</td>");
    let data = stats(dir, "data");
    for key in ["total", "kept", "excluded", "names"] {
        assert!(html.contains(&cell(grouped(data[key].as_u64().unwrap()))), "data {key}");
    }
    assert!(html.contains(&format!("{} / {}", data["train"], data["valid"])));
    let vocab = stats(dir, "vocab");
    for key in ["added", "added_start", "added_space"] {
        assert!(html.contains(&cell(grouped(vocab[key].as_u64().unwrap()))), "vocab {key}");
    }
    let model = stats(dir, "model");
    for key in ["total", "frozen", "trainable"] {
        assert!(html.contains(&cell(grouped(model["params"][key].as_u64().unwrap()))), "params {key}");
    }
    let train = stats(dir, "train");
    for key in ["effective_batch", "steps_per_epoch", "total_steps"] {
        assert!(html.contains(&cell(train[key].to_string())), "train {key}");
    }
    let best = train["best"][0].as_u64().unwrap();
    assert!(html.contains(&format!("(step {best})")), "best step");
    let first_sample = std::fs::read_to_string(dir.join("sample/samples.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(first_sample.lines().next().unwrap()).unwrap();
    let text = first["text"]
        .as_str()
        .unwrap()
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;");
    assert!(html.contains(&text), "the first sample");
    // The demos the pipeline ran for §4 and §7.
    for demo in ["smart_init.json", "sampling.json"] {
        assert!(dir.join("explore").join(demo).is_file(), "{demo}");
    }
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
    for file in [
        "train/metrics.jsonl",
        "train/loss.svg",
        "train/export/model.safetensors",
        "train/export/tokenizer.json",
        "sample/samples.md",
        "sample/samples.jsonl",
    ] {
        assert!(dir.path().join(file).is_file(), "{file}");
    }
    // The model stage's weights (the tiny base from scratch, `wte` resized, the
    // added rows initialised, written as an HF directory) are byte for byte
    // those the code wrote before the model-directory type and the name table
    // (commit 52b3c42): no float kernel is involved, so on any CPU.
    let weights = tp06_artifact::fs::sha256_file(&dir.path().join("model/model.safetensors")).unwrap();
    assert_eq!(weights, "216cbe75f388804d25fa2bb704fc5ec8660b48795ca4a6ad609f712bee46d4b9", "the demo's model stage");
    let metrics = std::fs::read_to_string(dir.path().join("train/metrics.jsonl")).unwrap();
    assert!(metrics.lines().count() >= 3 && metrics.contains("eval_loss"), "{metrics}");
    let samples = std::fs::read_to_string(dir.path().join("sample/samples.md")).unwrap();
    assert!(samples.contains("Pikachu est un Pokémon de type") && samples.contains("**base**"), "{samples}");
    check_report(dir.path());

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

    // f32 is the default precision: naming it changes no fingerprint.
    let same =
        demo(dir.path(), &["--set", "train.lr=1e-3", "--set", "train.precision=f32", "--set", "sample.precision=f32"]);
    let (out, _) = text(&same);
    assert!(same.status.success());
    assert!(out.contains("train: up to date") && out.contains("sample: up to date"), "{out}");

    // Generation with the run's model, from the command line, in f32, bf16 and int8.
    let run_dir = dir.path().display().to_string();
    for precision in ["f32", "bf16", "int8"] {
        let sampled = tp06(&[
            "sample",
            "--preset",
            "demo",
            "--run-dir",
            &run_dir,
            "--prompt",
            "Salamèche est",
            "--greedy",
            "--max-new-tokens",
            "5",
            "--precision",
            precision,
        ]);
        let (out, err) = text(&sampled);
        assert!(sampled.status.success(), "{precision}: {err}");
        assert!(out.starts_with("Salamèche est"), "{precision}: {out}");
    }

    // Mixed-precision training and bf16 generation re-run those stages.
    let bf16 = demo(
        dir.path(),
        &["--set", "train.lr=1e-3", "--set", "train.precision=bf16", "--set", "sample.precision=bf16"],
    );
    let (out, err) = text(&bf16);
    assert!(bf16.status.success(), "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("model: up to date") && out.contains("train: done") && out.contains("sample: done"), "{out}");
    let metrics = tp06_train::metrics::read(&dir.path().join("train/metrics.jsonl")).unwrap();
    assert!(metrics.iter().filter_map(|r| r.loss).all(f64::is_finite) && metrics.iter().any(|r| r.loss.is_some()));
}

#[test]
fn usage_errors_are_clap_s_with_exit_code_2() {
    assert_eq!(tp06(&["pipeline", "--from", "trian"]).status.code(), Some(2));
    assert_eq!(tp06(&["report", "--lang"]).status.code(), Some(2));
    // Commands do not take the flags they would ignore.
    assert_eq!(tp06(&["report", "--force"]).status.code(), Some(2));
    assert_eq!(tp06(&["report", "--set", "train.lr=1"]).status.code(), Some(2));
    assert_eq!(tp06(&["config", "--backend", "flex"]).status.code(), Some(2));
    assert_eq!(tp06(&["explore", "smart-init", "--force"]).status.code(), Some(2));
    // Values checked before any work starts, naming what is allowed.
    for (args, says) in [
        (&["data", "--backend", "bogus"][..], "[possible values: flex, ndarray, cuda]"),
        (&["bench", "--shapes", "mini,bogus"][..], "[possible values: mini, small, base]"),
        (&["bench", "--works", "trian"][..], "[possible values: train, forward, generate]"),
        (&["bench", "--threads", "0"][..], "must be at least 1"),
        (&["bench", "--repeats", "0"][..], "must be at least 1"),
        (
            &["pipeline", "--from", "train", "--to", "data", "--run-dir", "target/never-created"][..],
            "--from train comes after --to data",
        ),
    ] {
        let out = tp06(args);
        let (_, err) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert!(!Path::new("target/never-created").exists());
}

#[test]
fn the_report_shows_the_course_defect_of_frozen_added_rows() {
    // The course freezes `wte` whole, the added names' rows with it.
    let dir = tempfile::tempdir().unwrap();
    let run = demo(dir.path(), &["--set", "model.freeze.wte=all", "--set", "model.freeze.lower_blocks=1"]);
    let (out, err) = text(&run);
    assert!(run.status.success(), "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("report: 7/7 sections complete"), "{out}");
    let md = std::fs::read_to_string(dir.path().join("report/report.md")).unwrap();
    assert!(md.contains("Défaut du cours : les lignes ajoutées sont gelées"), "{md}");
    assert!(md.contains("| distance maximale | 0,0000 |"), "{md}");
    assert!(md.contains("| block 0 | 49\u{202f}984 | 0 | gelé |"), "{md}");

    // In English on demand.
    let run_dir = dir.path().display().to_string();
    let en = tp06(&["report", "--run-dir", &run_dir, "--lang", "en"]);
    assert!(en.status.success());
    let md = std::fs::read_to_string(dir.path().join("report/report.md")).unwrap();
    assert!(md.contains("Course defect: the added rows are frozen"), "{md}");
}

#[test]
fn a_command_without_a_preset_continues_the_run_s_own_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().display().to_string();
    // A run whose training differs from the default preset's (demo: lr 3e-3).
    let first = demo(dir.path(), &["--set", "train.lr=1e-3"]);
    assert!(first.status.success(), "{:?}", text(&first));
    assert!(dir.path().join("config.toml").is_file());

    // `train --run-dir DIR` alone is that run: nothing to redo, and `config` shows it.
    let again = tp06(&["train", "--run-dir", &run_dir]);
    let (out, err) = text(&again);
    assert!(again.status.success() && out.contains("train: up to date"), "{out}{err}");
    assert!(err.contains("the run's own"), "the log says where the configuration came from: {err}");
    let shown = |extra: &[&str]| {
        let mut args = vec!["config", "--run-dir", &run_dir];
        args.extend_from_slice(extra);
        text(&tp06(&args)).0
    };
    let printed = shown(&[]);
    assert!(printed.contains("lr = 0.001\n") && printed.contains("max_steps = 6\n"), "{printed}");

    // --set applies on top of it, and is remembered.
    let changed = tp06(&["train", "--run-dir", &run_dir, "--set", "train.lr=2e-3", "--quiet"]);
    let (out, err) = text(&changed);
    assert!(changed.status.success() && out.contains("train: done"), "{out}{err}");
    assert!(shown(&[]).contains("lr = 0.002\n"));
    // An explicit preset starts from the preset again.
    assert!(shown(&["--preset", "demo"]).contains("lr = 0.003\n"));
    // A run with results but no recorded configuration (made by an older tp06)
    // is not redone with the default preset: the command asks which it was.
    let recorded = dir.path().join("config.toml");
    let kept = std::fs::read(&recorded).unwrap();
    std::fs::remove_file(&recorded).unwrap();
    let unknown = tp06(&["train", "--run-dir", &run_dir]);
    let (_, err) = text(&unknown);
    assert_eq!(unknown.status.code(), Some(1), "{err}");
    assert!(err.contains("no config.toml") && err.contains("name it once with --preset"), "{err}");
    std::fs::write(&recorded, kept).unwrap();

    // A generation flag alone generates with the run's model and the preset's
    // prompts (the stage itself is up to date and would print nothing new).
    let greedy = tp06(&["sample", "--run-dir", &run_dir, "--greedy", "--max-new-tokens", "3"]);
    let (out, err) = text(&greedy);
    assert!(
        greedy.status.success() && out.contains("Pikachu est un Pokémon de type") && !out.contains("up to date"),
        "{out}{err}"
    );

    // Generating with a given model creates no run directory.
    let elsewhere = dir.path().join("absent");
    let export = dir.path().join("train/export").display().to_string();
    let sampled = tp06(&[
        "sample",
        "--model",
        &export,
        "--prompt",
        "Pikachu",
        "--greedy",
        "--max-new-tokens",
        "2",
        "--run-dir",
        &elsewhere.display().to_string(),
    ]);
    assert!(sampled.status.success(), "{:?}", text(&sampled));
    assert!(!elsewhere.exists());
}

#[test]
fn a_relative_path_is_remembered_as_the_file_it_named() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run").display().to_string();
    // From data/demo/, `names.txt` is the demo's names file.
    let demo_dir = common::repo().join("data/demo").canonicalize().unwrap();
    let first = common::command(&["data", "--preset", "demo", "--set", "data.names=names.txt", "--run-dir", &run_dir])
        .current_dir(&demo_dir)
        .output()
        .unwrap();
    assert!(first.status.success(), "{:?}", text(&first));
    // The same run, from another directory: the same file, so nothing to redo.
    let again = common::command(&["data", "--run-dir", &run_dir]).current_dir(dir.path()).output().unwrap();
    let (out, err) = text(&again);
    assert!(again.status.success() && out.contains("data: up to date"), "{out}{err}");
    let recorded = std::fs::read_to_string(dir.path().join("run/config.toml")).unwrap();
    assert!(recorded.contains(&format!("names = \"{}\"", demo_dir.join("names.txt").display())), "{recorded}");
}

/// A rate far too small trains to the model it started from: the loop says so
/// at its first evaluation past a tenth of the run, the stage at its end, the
/// manifest records it and the report shows it in red. A run that learns says
/// nothing of the kind.
#[test]
fn a_run_that_learns_nothing_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = ["--to", "train", "--set", "train.lr=1e-9", "--set", "train.warmup_steps=0"];
    let run = demo(dir.path(), &tiny);
    let (out, err) = text(&run);
    assert!(run.status.success(), "{out}{err}");
    // Six steps, evaluated every three: the loop's warning comes at step 3.
    assert!(err.contains("step 3 of 6: the run learned nothing"), "{err}");
    assert!(out.contains("WARNING: the run learned nothing") && out.contains("1.0e-9"), "{out}");
    let why = stats(dir.path(), "train")["learned_nothing"].as_str().map(String::from);
    assert!(why.as_deref().is_some_and(|w| w.contains("validation loss fell by")), "{why:?}");
    let report = tp06(&["report", "--run-dir", &dir.path().display().to_string(), "--lang", "en"]);
    assert!(report.status.success(), "{:?}", text(&report));
    let md = std::fs::read_to_string(dir.path().join("report/report.md")).unwrap();
    assert!(md.contains("**⚠ This run learned nothing: its validation loss fell by only"), "{md}");
    let html = std::fs::read_to_string(dir.path().join("report/index.html")).unwrap();
    assert!(html.contains("<p class=\"alert\" role=\"alert\">⚠ This run learned nothing"));

    // The demo's own rate, on the same six steps: it learns.
    let learns = tempfile::tempdir().unwrap();
    let run = demo(learns.path(), &["--to", "train", "--set", "train.warmup_steps=0"]);
    let (out, err) = text(&run);
    assert!(run.status.success() && !out.contains("WARNING") && !err.contains("learned nothing"), "{out}{err}");
    assert!(stats(learns.path(), "train")["learned_nothing"].is_null());
}

#[test]
fn lr_find_leaves_the_run_alone_and_train_lr_find_uses_its_suggestion() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().display().to_string();
    let to_model = demo(dir.path(), &["--to", "model"]);
    assert!(to_model.status.success(), "{:?}", text(&to_model));
    let model_manifest = sha(&dir.path().join("model/manifest.json"));

    // The range test: its curve and suggestion, the stages untouched.
    let found = tp06(&["lr-find", "--run-dir", &run_dir]);
    let (out, err) = text(&found);
    assert!(found.status.success() && out.contains("Suggested learning rate"), "{out}{err}");
    let test: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("lr-find/lr_find.json")).unwrap()).unwrap();
    let points = test["points"].as_array().unwrap();
    let rates: Vec<f64> = points.iter().map(|p| p["lr"].as_f64().unwrap()).collect();
    assert!(points.len() >= 10 && rates.windows(2).all(|w| w[1] > w[0]), "an increasing sweep: {rates:?}");
    let suggestion = test["suggestion"].as_f64().unwrap();
    // The rule: where the smoothed loss falls fastest against log(rate),
    // from the valley (recorded beside it) to the smoothed loss's minimum.
    let smoothed: Vec<f64> = points.iter().map(|p| p["smoothed"].as_f64().unwrap()).collect();
    let slope = |i: usize| (smoothed[i + 1] - smoothed[i - 1]) / (rates[i + 1].ln() - rates[i - 1].ln());
    let valley = rates.iter().position(|&r| r == test["others"]["valley"].as_f64().unwrap()).unwrap();
    let minimum = (0..points.len()).min_by(|&a, &b| smoothed[a].total_cmp(&smoothed[b])).unwrap();
    let steepest = (valley.max(1)..=minimum.min(points.len() - 2)).min_by(|&a, &b| slope(a).total_cmp(&slope(b)));
    assert_eq!(suggestion, rates[steepest.unwrap_or(valley)], "valley {valley}, minimum {minimum}");
    let at = rates.iter().position(|&r| r == suggestion).unwrap();
    assert!(at > 0 && at + 1 < points.len() && slope(at) < 0.0, "the loss falls at {suggestion:e}");
    assert!(std::fs::read_to_string(dir.path().join("lr-find/lr_find.svg")).unwrap().contains("<svg"));
    assert!(!dir.path().join("train").exists(), "the train stage is not run");
    assert_eq!(sha(&dir.path().join("model/manifest.json")), model_manifest);

    // train.lr = "find" runs the same test (same settings, same batches) and trains at its suggestion.
    let train = [
        "train",
        "--run-dir",
        &run_dir,
        "--quiet",
        "--set",
        "train.lr=find",
        "--set",
        "train.warmup_steps=0",
        "--set",
        "train.warmup_ratio=0.5",
        "--set",
        "train.logging_every=1",
    ];
    let trained = tp06(&train);
    let (out, err) = text(&trained);
    assert!(trained.status.success() && out.contains("Learning rate:"), "{out}{err}");
    let stats = stats(dir.path(), "train");
    assert_eq!(stats["lr"].as_f64(), Some(suggestion), "the manifest records the rate used");
    assert_eq!(stats["warmup_steps"].as_u64(), Some(3), "half of 6 steps");
    let first = manifest(dir.path(), "train");
    let outputs: Vec<&str> = first["outputs"].as_array().unwrap().iter().map(|o| o["path"].as_str().unwrap()).collect();
    assert!(outputs.contains(&"lr_find.json") && outputs.contains(&"lr_find.svg"), "{outputs:?}");
    let metrics = std::fs::read_to_string(dir.path().join("train/metrics.jsonl")).unwrap();
    let peak = metrics
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["lr"].as_f64())
        .fold(0.0, f64::max);
    assert!((peak - suggestion).abs() <= 1e-12 * suggestion, "the schedule peaks at the suggestion: {peak}");

    // A sweep kept from an earlier rule (its rule renamed, its suggestion
    // moved): a fresh run takes today's rule's suggestion of the same sweep,
    // without sweeping again (a first loss no sweep would give stays).
    let kept = dir.path().join("train/lr_find.json");
    let mut earlier: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&kept).unwrap()).unwrap();
    earlier["rule"] = "steepest fall of the smoothed loss".into();
    earlier["suggestion"] = 1e-7.into();
    earlier["points"][0]["loss"] = 123.0.into();
    std::fs::write(&kept, earlier.to_string()).unwrap();
    let again = tp06(&[&train[..], &["--force"]].concat());
    assert!(again.status.success(), "{:?}", text(&again));
    assert_eq!(common::stats(dir.path(), "train")["lr"].as_f64(), Some(suggestion), "today's rule's rate");
    let now: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&kept).unwrap()).unwrap();
    assert_eq!((now["suggestion"].as_f64(), now["points"][0]["loss"].as_f64()), (Some(suggestion), Some(123.0)));
    assert_eq!(now["rule"], test["rule"]);

    // The report shows the range test beside the course's table, the coverage,
    // and an ablation's figure when the run directory holds one.
    let ablation = r#"{"rows": [{"rung": "course", "bits_per_char": 2.0}, {"rung": "documents apart", "bits_per_char": 1.25}],
        "reference": {"rung": "transformers, course procedure", "bits_per_char": 2.0}}"#;
    std::fs::write(dir.path().join("ablation.json"), ablation).unwrap();
    let report = tp06(&["report", "--run-dir", &run_dir, "--lang", "en"]);
    assert!(report.status.success(), "{:?}", text(&report));
    let md = std::fs::read_to_string(dir.path().join("report/report.md")).unwrap();
    for wanted in
        ["learning rate (course, §6.1)", "(lr_find.svg)", "suggested rate", "corpus coverage", "(ablation.svg)"]
    {
        assert!(md.contains(wanted), "the report has {wanted:?}");
    }
    let bars = std::fs::read_to_string(dir.path().join("report/ablation.svg")).unwrap();
    assert!(bars.contains("documents apart") && bars.contains("transformers, course procedure"), "{bars}");

    // Trained again at a set rate, the stage no longer holds (or lists) a range test of its own.
    let fixed = tp06(&["train", "--run-dir", &run_dir, "--quiet", "--set", "train.lr=1e-3"]);
    assert!(fixed.status.success(), "{:?}", text(&fixed));
    assert!(!dir.path().join("train/lr_find.json").exists() && !dir.path().join("train/lr_find.svg").exists());
    let listed = manifest(dir.path(), "train")["outputs"].to_string();
    assert!(!listed.contains("lr_find"), "{listed}");
}

#[test]
fn documents_packing_trains_every_token_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let truncated = demo(dir.path(), &["--to", "train", "--set", "train.max_length=32"]);
    assert!(truncated.status.success(), "{:?}", text(&truncated));
    let cut = stats(dir.path(), "train")["coverage"].as_f64().unwrap();
    let packed =
        demo(dir.path(), &["--to", "train", "--set", "train.max_length=32", "--set", "train.packing=documents"]);
    let (out, err) = text(&packed);
    assert!(packed.status.success(), "{out}{err}");
    let stats = stats(dir.path(), "train");
    let every = stats["coverage"].as_f64().unwrap();
    // Cut at 32 tokens the demo's articles lose most of their text; packed,
    // only the first token of a part that starts a block is no target.
    assert!(cut < 0.9 && every > 0.95, "coverage cut {cut}, packed {every}");
    assert!(stats["padding_fraction"].as_f64().unwrap() < 0.02, "only the last block is padded");
}

/// A base model stored sharded (an index and its shards, as larger hub
/// models are) goes through the model stage as the same weights in one file
/// do, and the stage's fingerprint covers every shard.
#[test]
fn a_sharded_base_model_loads_as_one_file_and_each_shard_counts() {
    use burn::prelude::{Tensor, TensorData};
    use tp06_model::backend::Cpu;
    let dir = tempfile::tempdir().unwrap();
    let (whole, sharded, base) = (dir.path().join("whole"), dir.path().join("sharded"), dir.path().join("base"));
    let run = demo(&whole, &["--to", "model"]);
    assert!(run.status.success(), "{:?}", text(&run));
    // The model stage's output, an HF directory, as a base model in two shards.
    std::fs::create_dir_all(&base).unwrap();
    for file in ["config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"] {
        std::fs::copy(whole.join("model").join(file), base.join(file)).unwrap();
    }
    let tensors = tp06_model::read_tensors(&whole.join("model/model.safetensors")).unwrap();
    let names: Vec<&String> = tensors.keys().collect();
    let write_shard = |shard: &str, part: &[&String], bump: f32| {
        let part = part
            .iter()
            .map(|name| {
                let (shape, values) = &tensors[*name];
                let values: Vec<f32> = values.iter().map(|v| v + bump).collect();
                let n = values.len();
                (
                    name.to_string(),
                    shape.clone(),
                    Tensor::<Cpu, 1>::from_data(TensorData::new(values, [n]), &Default::default()),
                )
            })
            .collect();
        tp06_model::write_tensors::<Cpu>(&base.join(shard), part, tp06_artifact::Watch::none()).unwrap();
    };
    let halves: Vec<&[&String]> = names.chunks(names.len().div_ceil(2)).collect();
    let shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"];
    let mut weight_map = serde_json::Map::new();
    for (shard, part) in shards.iter().zip(&halves) {
        write_shard(shard, part, 0.0);
        weight_map.extend(part.iter().map(|name| (name.to_string(), serde_json::json!(shard))));
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(base.join("model.safetensors.index.json"), index.to_string()).unwrap();

    let from_base =
        ["--to", "model", "--set", &format!("model.base={}", base.display()), "--set", "model.from_scratch=false"];
    let run = demo(&sharded, &from_base);
    assert!(run.status.success(), "{:?}", text(&run));
    let weights = |run: &Path| sha(&run.join("model/model.safetensors"));
    assert_eq!(weights(&sharded), weights(&whole), "the same weights as from one file");
    let inputs: Vec<String> = manifest(&sharded, "model")["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect();
    for shard in shards {
        assert!(inputs.contains(&format!("base_weights/{shard}")), "{inputs:?}");
    }
    let again = demo(&sharded, &from_base);
    assert!(
        text(&again).0.contains("model: up to date") || text(&again).1.contains("model: up to date"),
        "{:?}",
        text(&again)
    );

    // Generation reads it too, token for token as the one file.
    let greedy = |model: &Path| {
        let model = model.display().to_string();
        let out = tp06(&[
            "sample",
            "--quiet",
            "--model",
            &model,
            "--prompt",
            "Pikachu est",
            "--greedy",
            "--max-new-tokens",
            "12",
        ]);
        let (out, err) = text(&out);
        assert!(out.contains("Pikachu est"), "{out}{err}");
        out
    };
    assert_eq!(greedy(&base), greedy(&whole.join("model")));

    // The second shard changes: the stage runs again and reads it.
    write_shard(shards[1], halves[1], 1.0);
    let run = demo(&sharded, &from_base);
    let (out, err) = text(&run);
    assert!(run.status.success() && !format!("{out}{err}").contains("model: up to date"), "{out}{err}");
    assert_ne!(weights(&sharded), weights(&whole));
}
