//! `tp06 export --format gguf` on a demo run: every tensor and key read back
//! by ggml's own reader (the `gguf` package), and the file run by llama.cpp
//! (llama-cpp-python, built by `fixtures/install_llama_cpp.sh`): our
//! tokenization of the course's prompts and of every name, our decoding,
//! our greedy text (f32 and f16 against our f32, q8_0 against our int8), and
//! in f32 transformers' logits. The same for the lora preset's run, whose
//! export has its adapters merged.

mod common;

use std::path::Path;
use std::process::Command;

use common::{demo, lora_run, repo, text, tp06};

/// Our greedy continuation of `prompt`, `new` tokens, in `precision`.
fn greedy(run: &Path, prompt: &str, new: usize, precision: &str) -> String {
    let run = run.display().to_string();
    let new = new.to_string();
    let args = ["sample", "--run-dir", &run, "--prompt", prompt, "--greedy", "--max-new-tokens", &new];
    let out = tp06(&[&args[..], &["--precision", precision, "--quiet"]].concat());
    assert!(out.status.success(), "{:?}", text(&out));
    text(&out).0.trim_end_matches('\n').to_string()
}

#[test]
fn a_demo_run_exports_to_gguf_that_llama_cpp_runs_as_we_do() {
    let dir = tempfile::tempdir().unwrap();
    let out = demo(dir.path(), &[]);
    assert!(out.status.success(), "{:?}", text(&out));
    check_run(dir.path());
}

/// The lora preset's run: its export (the adapters merged) goes to GGUF like
/// any model, and llama.cpp runs it as we run the run's model; its adapter
/// goes to llama.cpp's LoRA GGUF, which llama.cpp runs on the base's GGUF as
/// we run the merged model.
#[test]
fn a_lora_run_exports_its_merged_model_and_its_adapter_to_gguf() {
    let dir = tempfile::tempdir().unwrap();
    lora_run(dir.path());
    check_run(dir.path());
    check_adapter(dir.path());
}

/// A run without LoRA has no adapter to export: a one-line error that says
/// what to do, and no file.
#[test]
fn export_adapter_on_a_run_without_lora_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = demo(dir.path(), &[]);
    assert!(out.status.success(), "{:?}", text(&out));
    let run = dir.path().display().to_string();
    let out = tp06(&["export", "--run-dir", &run, "--format", "gguf", "--adapter"]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("has no LoRA adapter") && stderr.contains("without --adapter"), "{stderr}");
    assert!(!dir.path().join("gguf").exists(), "nothing written");
}

/// `export --adapter` on a LoRA run: the adapter and its base read back by
/// the `gguf` package against the peft adapter and the merged export, and
/// run by llama.cpp (`--lora`) with our tokens, our greedy text and
/// transformers' logits of the merged model, which the base alone misses.
fn check_adapter(run: &Path) {
    let run_arg = run.display().to_string();
    let out = tp06(&["export", "--run-dir", &run_arg, "--format", "gguf", "--adapter"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let (adapter, base) = (run.join("gguf/adapter.gguf"), run.join("gguf/adapter-base-f32.gguf"));
    assert!(stdout.contains(&format!("--lora {}", adapter.display())), "{stdout}");
    if let Some(python) = tp06_testkit::python_with(&["gguf", "numpy", "safetensors"], "the GGUF read-back") {
        let check = Command::new(python)
            .arg(repo().join("fixtures/check_gguf_adapter.py"))
            .args([&adapter, &base, &run.join("train/adapter"), &run.join("train/export")])
            .output()
            .unwrap();
        let (o, e) = text(&check);
        eprintln!("{}", o.lines().last().unwrap_or(""));
        assert!(check.status.success(), "{o}\n{e}");
    }
    let Some(python) = tp06_testkit::python_with(
        &["llama_cpp", "tokenizers", "torch", "transformers"],
        "the llama.cpp check (bash fixtures/install_llama_cpp.sh)",
    ) else {
        return;
    };
    let prompts: Vec<serde_json::Value> = ["Pikachu est un Pokémon de type", "Dracaufeu est un Pokémon de type"]
        .iter()
        .map(|p| serde_json::json!({"prompt": p, "greedy": greedy(run, p, 24, "f32"), "new_tokens": 24}))
        .collect();
    let case = serde_json::json!({
        "gguf": base,
        "lora": adapter,
        "tokenizer": run.join("vocab/tokenizer.json"),
        "prompts": prompts,
        "names": added_names(run),
        "hf_model": run.join("train/export"),
        "logit_tolerance": 5e-3,
    });
    let case_file = run.join("case-adapter.json");
    std::fs::write(&case_file, case.to_string()).unwrap();
    let check = Command::new(python).arg(repo().join("fixtures/check_llama_cpp.py")).arg(&case_file).output().unwrap();
    let (o, e) = text(&check);
    eprintln!("adapter: {}", o.lines().last().unwrap_or(""));
    assert!(check.status.success(), "adapter: {o}\n{e}");
}

/// The run's added names, each once, sorted.
fn added_names(run: &Path) -> Vec<String> {
    let added: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("vocab/added_names.json")).unwrap()).unwrap();
    let mut names: Vec<String> =
        added.as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap().to_string()).collect();
    names.sort();
    names.dedup();
    names
}

/// Exports `run` in each format and checks each file (see the module docs).
fn check_run(run: &Path) {
    let run_arg = run.display().to_string();
    let names = added_names(run);
    let export = run.join("train/export");
    let gguf_check = tp06_testkit::python_with(&["gguf", "numpy", "safetensors"], "the GGUF read-back");
    let llama = tp06_testkit::python_with(
        &["llama_cpp", "tokenizers", "torch", "transformers"],
        "the llama.cpp check (bash fixtures/install_llama_cpp.sh)",
    );
    for (format, ours) in [("f32", "f32"), ("f16", "f32"), ("q8_0", "int8")] {
        let out = tp06(&["export", "--run-dir", &run_arg, "--format", "gguf", "--precision", format]);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stdout}\n{stderr}");
        let file = run.join("gguf").join(format!("model-{format}.gguf"));
        assert!(stdout.contains(&file.display().to_string()), "{stdout}");
        if let Some(python) = gguf_check {
            let check = Command::new(python)
                .arg(repo().join("fixtures/check_gguf.py"))
                .arg(&file)
                .arg(export.join("model.safetensors"))
                .arg(format)
                .output()
                .unwrap();
            let (o, e) = text(&check);
            assert!(check.status.success(), "{format}: {o}\n{e}");
        }
        let Some(python) = llama else { continue };
        // The course's prompts without a name inside a longer word (Aqualis
        // holds Aquali: the documented difference, checked on its own).
        let prompts: Vec<serde_json::Value> = ["Pikachu est un Pokémon de type", "Dracaufeu est un Pokémon de type"]
            .iter()
            .map(|p| serde_json::json!({"prompt": p, "greedy": greedy(run, p, 24, ours), "new_tokens": 24}))
            .collect();
        let case = serde_json::json!({
            "gguf": file,
            "tokenizer": run.join("vocab/tokenizer.json"),
            "prompts": prompts,
            "names": names,
            "cut_inside": [{"word": "Aqualis", "name": "Aquali"}],
            "hf_model": (format == "f32").then_some(&export),
            // ggml's GELU reads an f16 table: its logits move by ~1e-3.
            "logit_tolerance": 5e-3,
        });
        let case_file = run.join(format!("case-{format}.json"));
        std::fs::write(&case_file, case.to_string()).unwrap();
        let check =
            Command::new(python).arg(repo().join("fixtures/check_llama_cpp.py")).arg(&case_file).output().unwrap();
        let (o, e) = text(&check);
        eprintln!("{format}: {}", o.lines().last().unwrap_or(""));
        assert!(check.status.success(), "{format}: {o}\n{e}");
    }
}

/// `[train] gguf`: the train stage writes `export.gguf` and `best.gguf`
/// beside `export/` and `best/`, lists them in its manifest, and the `gguf`
/// package reads them back as those models; a run without the setting
/// removes them.
#[test]
fn the_train_setting_writes_export_and_best_as_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path();
    let out = demo(run, &["--set", "train.gguf=q8_0"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let manifest = common::manifest(run, "train");
    let outputs: Vec<&str> =
        manifest["outputs"].as_array().unwrap().iter().map(|o| o["path"].as_str().unwrap()).collect();
    for (file, dir) in [("export.gguf", "export"), ("best.gguf", "best")] {
        assert!(outputs.contains(&file), "{file} in {outputs:?}");
        if let Some(python) = tp06_testkit::python_with(&["gguf", "numpy", "safetensors"], "the GGUF read-back") {
            let check = Command::new(python)
                .arg(repo().join("fixtures/check_gguf.py"))
                .arg(run.join("train").join(file))
                .arg(run.join("train").join(dir).join("model.safetensors"))
                .arg("q8_0")
                .output()
                .unwrap();
            let (o, e) = text(&check);
            assert!(check.status.success(), "{file}: {o}\n{e}");
        }
    }
    let out = demo(run, &[]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(
        !run.join("train/export.gguf").exists() && !run.join("train/best.gguf").exists(),
        "removed without the setting"
    );
}
