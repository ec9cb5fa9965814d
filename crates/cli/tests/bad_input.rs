//! The bad-input table (ARCHITECTURE.md, "Bad input"): every case fails with
//! one line that names the file or field and gives a way out, exit code 1, no
//! panic, and nothing half-done taken as done.
//!
//! Each case runs on a copy of a complete earlier run (unless it is about a
//! missing upstream stage), so that a stage which took its earlier manifest as
//! done for the new, bad input would show: it would exit 0. Afterwards the
//! failed stage's manifest is gone, or is the earlier run's, untouched, with
//! its outputs intact (a setting refused before the stage began). Ad-hoc
//! generation (`sample --model`) uses no run directory: it runs in an empty
//! working directory, which must stay empty.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::{command, demo, text};

/// Inputs made once per test binary: a finished demo run (its parquet files and
/// its exported model are the good inputs the bad ones are made from).
struct World {
    root: PathBuf,
}

impl World {
    fn path(&self, name: &str) -> String {
        self.root.join(name).display().to_string()
    }

    fn export(&self) -> PathBuf {
        self.root.join("run/train/export")
    }

    /// A copy of the exported model with `edit` applied.
    fn model_copy(&self, name: &str, edit: impl FnOnce(&Path)) -> String {
        self.copy(&self.export(), name, edit)
    }

    /// A copy of the demo base tokenizer with `edit` applied.
    fn base_copy(&self, name: &str, edit: impl FnOnce(&Path)) -> String {
        self.copy(&common::repo().join("data/demo/base"), name, edit)
    }

    /// A copy of the flat directory `from`, named `name`, with `edit` applied.
    fn copy(&self, from: &Path, name: &str, edit: impl FnOnce(&Path)) -> String {
        let dir = self.root.join(name);
        common::copy_tree(from, &dir);
        edit(&dir);
        dir.display().to_string()
    }
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bad-input-world");
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let out = demo(&root.join("run"), &["--set", "train.max_steps=2"]);
        assert!(out.status.success(), "{:?}", text(&out));
        let w = |name: &str, bytes: &[u8]| std::fs::write(root.join(name), bytes).unwrap();
        let parquet = std::fs::read(root.join("run/data/train.parquet")).unwrap();
        w("truncated.parquet", &parquet[..parquet.len() / 2]);
        w("corrupt.parquet", b"this is not parquet");
        w("bad.jsonl", b"{\"title\":\"A\",\"content\":\"x\"}\n{\"title\": broken\n");
        w("non-utf8.jsonl", b"{\"title\":\"A\",\"content\":\"\xff\xfe\"}\n");
        w("empty.jsonl", b"");
        w("wrong-columns.csv", b"name,text\nPikachu,abc\n");
        w("corrupt.csv", b"title,content\n\"unterminated,abc\n");
        w("table.xlsx", b"x");
        w("empty.txt", b"");
        w("non-utf8.txt", b"Pika\xffchu\n");
        w("unrelated.txt", b"Zzzz\nYyyy\n");
        World { root }
    })
}

struct Case {
    what: &'static str,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    says: Vec<&'static str>,
    /// The stage that fails.
    stage: &'static str,
    /// Starts from an empty run directory (the case is about a missing upstream).
    fresh: bool,
}

fn case(what: &'static str, args: &[&str], says: &[&'static str], stage: &'static str) -> Case {
    Case {
        what,
        args: args.iter().map(|s| s.to_string()).collect(),
        env: Vec::new(),
        says: says.to_vec(),
        stage,
        fresh: false,
    }
}

fn check(cases: Vec<Case>) {
    let earlier = world().root.join("run");
    for c in cases {
        let run = tempfile::tempdir().unwrap();
        let ad_hoc = c.args[0] == "sample" && c.args.iter().any(|a| a == "--model");
        if !c.fresh && !ad_hoc {
            common::copy_tree(&earlier, run.path());
        }
        let mut args: Vec<String> = c.args.clone();
        if !ad_hoc {
            args.extend(["--run-dir".to_string(), run.path().display().to_string()]);
        }
        let mut cmd = command(&args.iter().map(String::as_str).collect::<Vec<_>>());
        // Ad-hoc generation runs in the empty directory (its default run directory would be under it).
        cmd.current_dir(run.path());
        for (k, v) in &c.env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let (_, err) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{}: exit code; stderr: {err}", c.what);
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{}: one line, got: {err}", c.what);
        assert!(lines[0].starts_with("error: "), "{}: {err}", c.what);
        assert!(!err.contains("panicked"), "{}: {err}", c.what);
        for fragment in &c.says {
            assert!(err.contains(fragment), "{}: `{fragment}` not in: {err}", c.what);
        }
        if ad_hoc {
            let left: Vec<_> = std::fs::read_dir(run.path()).unwrap().flatten().map(|e| e.file_name()).collect();
            assert!(left.is_empty(), "{}: ad-hoc generation wrote {left:?}", c.what);
            continue;
        }
        let manifest = run.path().join(c.stage).join("manifest.json");
        if manifest.exists() {
            assert!(!c.fresh, "{}: a manifest for {} in a run that had none", c.what, c.stage);
            let before = std::fs::read(earlier.join(c.stage).join("manifest.json")).unwrap();
            assert_eq!(
                std::fs::read(&manifest).unwrap(),
                before,
                "{}: {}'s manifest is the earlier run's, untouched",
                c.what,
                c.stage
            );
        }
        common::assert_manifests_hold(run.path(), c.what);
    }
}

#[test]
fn bad_corpus_files_name_the_file_and_the_setting() {
    let w = world();
    let set = |key: &str, file: &str| format!("{key}={}", w.path(file));
    let data = |what, key: &str, file: &str, says: &[&'static str]| -> Case {
        let mut c = case(what, &["data", "--preset", "demo", "--set"], says, "data");
        c.args.push(set(key, file));
        c
    };
    check(vec![
        data(
            "missing parquet",
            "data.articles",
            "missing.parquet",
            &["data.articles", "missing.parquet", "No such file or directory", "--set data.articles=PATH"],
        ),
        data(
            "truncated parquet",
            "data.articles",
            "truncated.parquet",
            &["data.articles", "truncated.parquet", "complete, uncorrupted"],
        ),
        data(
            "corrupt parquet",
            "data.articles",
            "corrupt.parquet",
            &["data.articles", "corrupt.parquet", "complete, uncorrupted"],
        ),
        data(
            "wrong columns (parquet)",
            "data.articles",
            "run/data/names.parquet",
            &["has no column `title`", "columns: name"],
        ),
        data(
            "wrong columns (csv)",
            "data.articles",
            "wrong-columns.csv",
            &["wrong-columns.csv", "has no column `title`", "columns: name, text"],
        ),
        data("corrupt csv", "data.articles", "corrupt.csv", &["data.articles", "corrupt.csv"]),
        data("bad JSON line", "data.articles", "bad.jsonl", &["bad.jsonl", "line 2", "not valid JSON"]),
        data("non-UTF-8 jsonl", "data.articles", "non-utf8.jsonl", &["non-utf8.jsonl", "line 1", "not valid UTF-8"]),
        data("empty corpus", "data.articles", "empty.jsonl", &["empty.jsonl", "holds no articles"]),
        data("unsupported format", "data.articles", "table.xlsx", &["table.xlsx", "not a supported table", ".parquet"]),
        data("empty names", "data.names", "empty.txt", &["data.names", "empty.txt", "holds no names"]),
        data("non-UTF-8 names", "data.names", "non-utf8.txt", &["data.names", "non-utf8.txt", "not valid UTF-8"]),
        data(
            "nothing kept",
            "data.names",
            "unrelated.txt",
            &["no article was kept", "is data.names the right file", "Zzzz"],
        ),
    ]);
}

#[test]
fn bad_settings_name_the_key_and_the_allowed_range() {
    // A backend tp06 knows but this build left out (none when built with all of them).
    let compiled = tp06_model::backend::compiled();
    let uncompiled = ["ndarray", "cuda"].into_iter().find(|b| !compiled.contains(b));
    let on_data =
        |what, set: &str, says: &[&'static str]| case(what, &["data", "--preset", "demo", "--set", set], says, "data");
    let on_lora =
        |what, set: &str, says: &[&'static str]| case(what, &["data", "--preset", "lora", "--set", set], says, "data");
    let demo_base = format!("model.base={}", common::repo().join("data/demo/base").display());
    let mut cases = vec![
        on_data("unknown key", "train.epoch=2", &["unknown key `train.epoch`", "did you mean `train.epochs`"]),
        on_data("lr 0", "train.lr=0", &["train.lr", "must be > 0"]),
        on_data("lr < 0", "train.lr=-1", &["train.lr", "must be > 0"]),
        on_data("batch 0", "train.batch_size=0", &["train.batch_size", "at least 1"]),
        on_data("accumulation 0", "train.grad_accum=0", &["train.grad_accum", "at least 1"]),
        on_data("checkpoint_every 0", "train.checkpoint_every=0", &["train.checkpoint_every", "at least 1"]),
        on_data("top_p 0", "sample.top_p=0", &["sample.top_p", "(0, 1]"]),
        on_data("top_p > 1", "sample.top_p=1.5", &["sample.top_p", "(0, 1]"]),
        on_data("temperature < 0", "sample.temperature=-1", &["sample.temperature", "≥ 0"]),
        on_data("wrong type", "train.epochs=many", &["train.epochs"]),
        on_data("init noise < 0", "model.noise_std=-1", &["model.noise_std: -1", "≥ 0"]),
        on_lora("LoRA rank 0", "model.lora.r=0", &["model.lora.r: 0", "at least 1"]),
        on_lora("LoRA alpha 0", "model.lora.alpha=0", &["model.lora.alpha: 0", "> 0"]),
        on_lora("LoRA dropout 1", "model.lora.dropout=1", &["model.lora.dropout: 1", "[0, 1)"]),
        on_lora(
            "unknown LoRA target",
            "model.lora.targets=[\"q_proj\"]",
            &["model.lora.targets", "unknown LoRA target `q_proj`", "c_attn, attn.c_proj, c_fc, mlp.c_proj"],
        ),
        on_lora("empty LoRA blocks", "model.lora.blocks=[3, 3]", &["model.lora.blocks: [3, 3] is empty"]),
        on_lora("wte none under LoRA", "model.freeze.wte=\"none\"", &["model.freeze.wte", "LoRA", "pretrained-rows"]),
        case(
            "LoRA blocks outside the model",
            &[
                "model",
                "--preset",
                "lora",
                "--set",
                &demo_base,
                "--set",
                "model.from_scratch=true",
                "--set",
                "model.lora.blocks=[1, 9]",
            ],
            &["model.lora.blocks: [1, 9]", "the model's 2 blocks", "0 ≤ from < to ≤ 2"],
            "model",
        ),
        case(
            "--top-p 0",
            &["sample", "--prompt", "Pikachu", "--top-p", "0"],
            &["--top-p: 0 must be in (0, 1]"],
            "sample",
        ),
        case(
            "--num-samples 0",
            &["sample", "--prompt", "Pikachu", "--num-samples", "0"],
            &["--num-samples: 0"],
            "sample",
        ),
        case(
            "no reference word",
            &["data", "--preset", "demo", "--set", "model.init=\"reference\"", "--set", "model.reference_words=[]"],
            &["model.reference_words: empty"],
            "data",
        ),
        case("unknown preset", &["data", "--preset", "nope"], &["unknown preset `nope`"], "data"),
        case(
            "more frozen blocks than the model has",
            &["pipeline", "--preset", "demo", "--set", "model.freeze.lower_blocks=99"],
            &["model.freeze.lower_blocks: 99", "has 2 blocks", "use 0 to 2"],
            "model",
        ),
        case(
            "no single-token reference word",
            &[
                "pipeline",
                "--preset",
                "demo",
                "--set",
                "model.init=\"reference\"",
                "--set",
                "model.reference_words=[\"Pikachu\"]",
            ],
            &[
                "model.init: \"reference\" but none of model.reference_words (Pikachu) is a single token",
                "subword-mean",
            ],
            "model",
        ),
        case(
            "max_length > context",
            &["pipeline", "--preset", "demo", "--set", "train.max_length=1000"],
            &["train.max_length", "n_positions = 256"],
            "train",
        ),
        Case {
            fresh: true,
            ..case("upstream missing", &["model", "--preset", "demo"], &["has not run", "cargo xtask"], "model")
        },
        Case {
            fresh: true,
            ..case(
                "no upstream at all",
                &["train", "--preset", "demo"],
                &["stage `data` has not run", "cargo xtask data"],
                "train",
            )
        },
    ];
    if let Some(backend) = uncompiled {
        cases.push(case(
            "backend not compiled",
            &["model", "--preset", "demo", "--backend", backend],
            &["is not compiled", "cargo xtask --features"],
            "model",
        ));
    }
    check(cases);
}

#[test]
fn bad_model_and_tokenizer_files_name_the_file() {
    let w = world();
    let json = |dir: &Path, file: &str, edit: &dyn Fn(&mut serde_json::Value)| {
        let path = dir.join(file);
        let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        edit(&mut v);
        std::fs::write(path, serde_json::to_string(&v).unwrap()).unwrap();
    };
    let truncate = |dir: &Path| {
        let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
        std::fs::write(dir.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    };
    let models: Vec<(&'static str, String, Vec<&'static str>)> = vec![
        ("missing config.json", w.model_copy("m-no-config", |d| std::fs::remove_file(d.join("config.json")).unwrap()), vec!["config.json", "No such file"]),
        ("corrupt config.json", w.model_copy("m-bad-config", |d| std::fs::write(d.join("config.json"), "{ nope").unwrap()), vec!["config.json", "not valid JSON"]),
        ("unsupported config", w.model_copy("m-mish", |d| json(d, "config.json", &|v| v["activation_function"] = "mish".into())), vec!["config.json", "\"mish\" is not implemented", "supported:"]),
        ("truncated safetensors", w.model_copy("m-truncated", truncate), vec!["model.safetensors", "truncated or corrupt"]),
        ("corrupt safetensors", w.model_copy("m-corrupt", |d| std::fs::write(d.join("model.safetensors"), "garbage").unwrap()), vec!["model.safetensors", "truncated or corrupt"]),
        (
            "corrupt pytorch_model.bin",
            w.model_copy("m-bin", |d| {
                std::fs::remove_file(d.join("model.safetensors")).unwrap();
                std::fs::write(d.join("pytorch_model.bin"), "garbage").unwrap();
            }),
            vec!["pytorch_model.bin", "not a PyTorch zip checkpoint", "truncated or corrupt"],
        ),
        ("no weights", w.model_copy("m-no-weights", |d| std::fs::remove_file(d.join("model.safetensors")).unwrap()), vec!["no weights", "model.safetensors", "pytorch_model.bin"]),
        ("weights of another shape", w.model_copy("m-shape", |d| json(d, "config.json", &|v| v["n_embd"] = 32.into())), vec!["has shape", "config.json"]),
        ("corrupt tokenizer.json", w.model_copy("m-bad-tok", |d| std::fs::write(d.join("tokenizer.json"), "{ nope").unwrap()), vec!["tokenizer.json", "not a valid tokenizer"]),
        (
            "tokenizer larger than the model",
            w.model_copy("m-big-tok", |d| {
                json(d, "tokenizer.json", &|v| {
                    let added = v["added_tokens"].as_array_mut().unwrap();
                    let next = added.iter().map(|a| a["id"].as_u64().unwrap()).max().unwrap() + 1;
                    added.push(serde_json::json!({"id": next, "content": "Zzzzq", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": false}));
                })
            }),
            vec!["has 1140 tokens but the model only 1139", "do not belong together"],
        ),
    ];
    let mut cases: Vec<Case> = models
        .into_iter()
        .map(|(what, dir, says)| {
            let mut c = case(what, &["sample", "--model"], &says, "sample");
            c.args.extend([dir, "--prompt".into(), "Pikachu est".into()]);
            c
        })
        .collect();
    let long = "Pikachu est un Pokémon de type Feu. ".repeat(60);
    let mut c = case(
        "prompt longer than the context",
        &["sample", "--model"],
        &["tokens but the model's context is 256", "shorten it"],
        "sample",
    );
    c.args.extend([w.export().display().to_string(), "--prompt".into(), long]);
    cases.push(c);
    for (what, file, content, says) in [
        (
            "merges.txt of another vocabulary",
            "merges.txt",
            "#version: 0.2\nzz qq\n",
            vec!["merges.txt", "line 2", "do not belong together"],
        ),
        ("corrupt vocab.json", "vocab.json", "{ broken", vec!["vocab.json", "not valid JSON"]),
    ] {
        let dir = w.base_copy(&format!("base-{file}"), |d| std::fs::write(d.join(file), content).unwrap());
        let mut c = case(what, &["vocab", "--preset", "demo", "--set"], &says, "vocab");
        c.args.push(format!("model.base={dir}"));
        cases.push(c);
    }
    let empty = w.root.join("empty-model");
    std::fs::create_dir_all(&empty).unwrap();
    let mut c = case(
        "no tokenizer at all",
        &["vocab", "--preset", "demo", "--set"],
        &["has no tokenizer", "vocab.json + merges.txt"],
        "vocab",
    );
    c.args.push(format!("model.base={}", empty.display()));
    cases.push(c);
    let mut c = case(
        "no such model directory",
        &["vocab", "--preset", "demo", "--set"],
        &["model.base", "nonexistent` does not exist", "model directory in hub layout"],
        "vocab",
    );
    c.args.push(format!("model.base={}", w.path("nonexistent")));
    cases.push(c);
    let mut c = case(
        "model.base is a file",
        &["vocab", "--preset", "demo", "--set"],
        &["model.base", "empty.txt` is a file, not a directory", "hub layout"],
        "vocab",
    );
    c.args.push(format!("model.base={}", w.path("empty.txt")));
    cases.push(c);
    let mut c = case(
        "no such --model",
        &["sample", "--model"],
        &["--model", "nonexistent` does not exist", "hub layout"],
        "sample",
    );
    c.args.extend([w.path("nonexistent"), "--prompt".into(), "Pikachu".into()]);
    cases.push(c);
    check(cases);
}

#[test]
fn an_unreachable_hub_fails_without_a_cache_and_is_not_needed_with_one() {
    let w = world();
    // The hub cache layout: the snapshot of revision abc123, and `main` pointing at it.
    let cache = w.root.join("hf");
    w.model_copy("hf/hub/models--asi--cached/snapshots/abc123", |_| {});
    std::fs::create_dir_all(cache.join("hub/models--asi--cached/refs")).unwrap();
    std::fs::write(cache.join("hub/models--asi--cached/refs/main"), "abc123").unwrap();
    let hf_home = cache.display().to_string();
    let unreachable = |offline: bool| -> Vec<(&'static str, String)> {
        let mut env = vec![("HF_HOME", hf_home.clone()), ("HF_ENDPOINT", "http://127.0.0.1:9".to_string())];
        env.push(("HF_HUB_OFFLINE", if offline { "1" } else { "0" }.to_string()));
        env
    };
    let mut cases = Vec::new();
    for (offline, says) in
        [(false, vec!["unreachable", "--model DIR"]), (true, vec!["HF_HUB_OFFLINE", "not in the cache", "--model DIR"])]
    {
        let mut c =
            case("model not cached", &["sample", "--model", "hf:asi/absent", "--prompt", "Pikachu"], &says, "sample");
        c.env = unreachable(offline);
        cases.push(c);
        let mut c = case(
            "corpus not cached",
            &["data", "--preset", "demo", "--set", "data.articles=hf:chris-lmd/pokepedia-fr"],
            &["data.articles", "--set data.articles=PATH"],
            "data",
        );
        c.env = unreachable(offline);
        cases.push(c);
    }
    check(cases);
    // With the model in the cache, neither a dead hub nor offline mode stops generation.
    for offline in [false, true] {
        let mut cmd = command(&[
            "sample",
            "--model",
            "hf:asi/cached",
            "--prompt",
            "Pikachu est",
            "--greedy",
            "--max-new-tokens",
            "3",
        ]);
        for (k, v) in unreachable(offline) {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "offline={offline}: {:?}", text(&out));
        assert!(text(&out).0.starts_with("Pikachu est"));
    }
}

#[test]
fn a_nan_in_training_stops_with_the_step_and_keeps_no_manifest() {
    let run = tempfile::tempdir().unwrap();
    let out = demo(run.path(), &["--set", "train.lr=1e9", "--set", "train.warmup_steps=0"]);
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("became NaN at step") && err.contains("lower train.lr"), "{err}");
    assert!(!run.path().join("train/manifest.json").exists());
}
