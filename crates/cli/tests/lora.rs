//! The `lora` preset end to end (on the demo's corpus and tokenizer, a model
//! from scratch, a short schedule), and its adapters with Hugging Face
//! `peft` (`clients/peft_adapter.py`): peft loads the adapter we trained and
//! gives our logits; `tp06 sample --adapter` generates with an adapter peft
//! wrote as peft does. Tolerance: logits within 1e-4 (as every golden test).

mod common;

use std::path::Path;

use burn::prelude::*;
use common::*;
use serde_json::{Value, json};
use tp06_model::backend::Cpu;
use tp06_model::{HfConfig, Pass, lora};

fn script() -> String {
    repo().join("crates/cli/tests/clients/peft_adapter.py").display().to_string()
}

fn run_script(python: &str, args: &[&str]) -> Value {
    let out = std::process::Command::new(python).arg(script()).args(args).output().unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn flat(v: &Value) -> Vec<f32> {
    match v {
        Value::Array(items) => items.iter().flat_map(flat).collect(),
        v => vec![v.as_f64().unwrap() as f32],
    }
}

/// The logits of `ids` of the run's base, and of the base with its trained
/// adapter, as the tests here load it.
fn our_logits(run: &Path, ids: &[i64]) -> (Vec<f32>, Vec<f32>) {
    let dir = run.join("model");
    let config = HfConfig::from_file(&dir.join("config.json")).unwrap().resolve().unwrap();
    let device = Default::default();
    let (base, _) = tp06_model::load::<Cpu>(&dir.join("model.safetensors"), &config, &device).unwrap();
    let (model, _) = lora::load_adapter(base.clone(), &run.join("train/adapter"), &device).unwrap();
    let logits = |model: &tp06_model::Gpt2<Cpu>| -> Vec<f32> {
        let ids = Tensor::<Cpu, 2, Int>::from_data(TensorData::new(ids.to_vec(), [1, ids.len()]), &device);
        model.forward(ids, &mut Pass::inference()).into_data().convert::<f32>().into_vec().unwrap()
    };
    (logits(&base), logits(&model))
}

#[test]
fn the_lora_preset_trains_adapters_that_peft_loads_with_our_logits() {
    let dir = tempfile::tempdir().unwrap();
    lora_run(dir.path());
    let run = dir.path();
    for file in ["adapter_config.json", "adapter_model.safetensors", "tokenizer.json"] {
        assert!(run.join("train/adapter").join(file).exists(), "train/adapter/{file}");
        assert!(run.join("model/adapter").join(file).exists(), "model/adapter/{file}");
    }
    let manifest = manifest(run, "train");
    let outputs: Vec<&str> =
        manifest["outputs"].as_array().unwrap().iter().map(|o| o["path"].as_str().unwrap()).collect();
    assert!(outputs.contains(&"adapter/adapter_model.safetensors"), "{outputs:?}");
    let model_stats = stats(run, "model");
    assert_eq!(model_stats["lora"]["r"], 4);
    let lora_group = model_stats["params"]["groups"].as_array().unwrap().iter().find(|g| g["group"] == "LoRA adapters");
    assert!(lora_group.is_some_and(|g| g["trainable"].as_u64() > Some(0)), "{model_stats}");

    // The report says what the adapters are and weigh.
    let report = tp06(&["report", "--run-dir", &run.display().to_string(), "--lang", "en"]);
    assert!(report.status.success(), "{:?}", text(&report));
    let md = std::fs::read_to_string(run.join("report/report.md")).unwrap();
    let adapter_mb = std::fs::metadata(run.join("train/adapter/adapter_model.safetensors")).unwrap().len() as f64 / 1e6;
    let paragraph = md.lines().find(|l| l.starts_with("LoRA: r = 4, α = 8")).unwrap_or_else(|| panic!("{md}"));
    assert!(paragraph.contains("c_attn, attn.c_proj, c_fc, mlp.c_proj (every block)"), "{paragraph}");
    assert!(paragraph.contains(&format!("train/adapter/: {adapter_mb:.2} MB")), "{paragraph}");
    let params = &model_stats["params"];
    let (trainable, total) = (params["trainable"].as_u64().unwrap(), params["total"].as_u64().unwrap());
    let share = format!("({:.1} % of the model)", 100.0 * trainable as f64 / total as f64);
    assert!(paragraph.contains(&share), "{share} in {paragraph}");

    // The export is the merged model: its logits are the adapter's on the base.
    let tok = tp06_vocab::Tok::from_dir(&run.join("model")).unwrap();
    let mut ids: Vec<i64> = tok.encode("Pikachu est un Pokémon de type").unwrap().into_iter().map(i64::from).collect();
    // One of the added names, whose row trained with the adapter.
    ids.push(tok.vocab_size() as i64 - 1);
    let (base, ours) = our_logits(run, &ids);
    let moved = base.iter().zip(&ours).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(moved > 1e-2, "the trained adapter moves the logits: {moved}");
    let export = tp06_sample::Generator::<Cpu>::load(&run.join("train/export"), &Default::default()).unwrap();
    let t = Tensor::<Cpu, 2, Int>::from_data(TensorData::new(ids.clone(), [1, ids.len()]), &Default::default());
    let merged: Vec<f32> =
        export.model.forward(t, &mut Pass::inference()).into_data().convert::<f32>().into_vec().unwrap();
    let diff = ours.iter().zip(&merged).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(diff < 1e-4, "export vs adapter: {diff}");

    let Some(python) = tp06_testkit::python_with(&["torch", "transformers", "peft"], "the peft adapter test") else {
        return;
    };
    let path = |p: &str| run.join(p).display().to_string();
    let info: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("vocab/vocab_info.json")).unwrap()).unwrap();
    let base_rows = info["base_vocab_size"].as_u64().unwrap().to_string();
    let ids_json = json!([ids]).to_string();
    let seen = run_script(
        python,
        &["check", &path("model"), &path("train/adapter"), &path("train/export"), &ids_json, &base_rows],
    );
    assert_eq!(seen["warnings"], json!([]), "peft loads our adapter without a warning");
    for (what, theirs) in [("peft", flat(&seen["peft"])), ("transformers on the export", flat(&seen["export"]))] {
        assert_eq!(theirs.len(), ours.len());
        let diff = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(diff < 1e-4, "{what}: max |Δlogit| = {diff}");
    }
}

#[test]
fn sample_generates_with_an_adapter_peft_wrote_as_peft_does() {
    let Some(python) = tp06_testkit::python_with(&["torch", "transformers", "peft"], "the peft adapter test") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path();
    // A base with a tokenizer: the demo's model stage output.
    let out = demo(run, &["--to", "model"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let base = run.join("model").display().to_string();
    let adapter = run.join("peft").display().to_string();
    let tok = tp06_vocab::Tok::from_dir(&run.join("model")).unwrap();
    let prompt = "Pikachu est un";
    let ids = tok.encode(prompt).unwrap();
    let made = run_script(python, &["make", &base, &adapter, &json!(ids).to_string(), "12"]);
    let greedy: Vec<u32> = made["greedy"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    assert!(greedy.len() > ids.len(), "peft generated");
    let expected = tok.decode(&greedy, true).unwrap();

    let run_dir = run.display().to_string();
    let sample = |extra: &[&str]| {
        let mut args =
            vec!["sample", "--run-dir", &run_dir, "--quiet", "--prompt", prompt, "--greedy", "--max-new-tokens", "12"];
        args.extend(extra);
        let out = tp06(&args);
        assert!(out.status.success(), "{:?}", text(&out));
        text(&out).0.trim_end().to_string()
    };
    let with_adapter = sample(&["--model", &base, "--adapter", &adapter]);
    assert_eq!(with_adapter, expected.trim_end(), "greedy with peft's adapter is peft's greedy");
    // peft's own merge, saved by transformers, generates the same.
    let merged = format!("{adapter}-merged");
    assert_eq!(sample(&["--model", &merged]), with_adapter);
    // Without --model, the base the adapter names.
    assert_eq!(sample(&["--adapter", &adapter]), with_adapter);
    // The base alone does not (the adapter counts).
    assert_ne!(sample(&["--model", &base]), with_adapter);
}
