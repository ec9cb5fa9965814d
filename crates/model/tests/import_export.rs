//! Export to an HF directory and back; bad model directories.

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::prelude::*;
use tp06_model::backend::Cpu;
use tp06_model::{Gpt2, HfConfig, ModelError, Pass};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/model").join(name)
}

fn load_dir(dir: &Path) -> Result<Gpt2<Cpu>, ModelError> {
    let config = HfConfig::from_file(&dir.join("config.json"))?.resolve()?;
    let file = tp06_model::weight_file(dir)?;
    tp06_model::load::<Cpu>(&file, &config, &Default::default()).map(|(m, _)| m)
}

fn logits(model: &Gpt2<Cpu>) -> Vec<f32> {
    let ids =
        Tensor::<Cpu, 2, Int>::from_data(TensorData::new(vec![5i64, 17, 42, 9, 3, 77], [2, 3]), &Default::default());
    model.forward(ids, &mut Pass::inference()).into_data().convert::<f32>().into_vec().unwrap()
}

fn copy_dir(from: &Path, to: &Path, skip: &[&str]) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().to_string();
        if !skip.contains(&name.as_str()) {
            std::fs::copy(entry.path(), to.join(name)).unwrap();
        }
    }
}

#[test]
fn export_reloads_identically_here_and_in_transformers() {
    let python =
        tp06_testkit::python_with(&["torch", "transformers", "safetensors"], "reloading the export in transformers");
    for name in ["tiny-bin", "tiny-nonsquare", "tiny-sharp"] {
        let source = fixture(name);
        let model = load_dir(&source).unwrap();
        let out = tempfile::tempdir().unwrap();
        let config = HfConfig::from_file(&source.join("config.json")).unwrap();
        std::fs::write(out.path().join("config.json"), config.to_json_pretty()).unwrap();
        tp06_model::save_safetensors(&model, &out.path().join("model.safetensors")).unwrap();

        let reloaded = load_dir(out.path()).unwrap();
        assert_eq!(logits(&model), logits(&reloaded), "{name}: our own reload is bit-identical");

        if let Some(python) = python {
            let status = Command::new(python)
                .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/check_export.py"))
                .arg(out.path())
                .arg(source.join("golden.safetensors"))
                .output()
                .unwrap();
            assert!(
                status.status.success(),
                "{name}: transformers did not reload the export cleanly:\n{}\n{}",
                String::from_utf8_lossy(&status.stdout),
                String::from_utf8_lossy(&status.stderr)
            );
        }
    }
}

#[test]
fn bad_model_directories_get_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let base = fixture("tiny-bin");
    let case = |name: &str, skip: &[&str]| -> PathBuf {
        let dir = tmp.path().join(name);
        copy_dir(&base, &dir, skip);
        dir
    };
    let message = |dir: &Path| load_dir(dir).err().map(|e| e.to_string()).expect("an error");

    let dir = case("no-config", &["config.json"]);
    let m = message(&dir);
    assert!(m.contains("config.json") && m.contains("cannot read"), "{m}");

    let dir = case("no-weights", &["pytorch_model.bin"]);
    let m = message(&dir);
    assert!(m.contains("has no weights") && m.contains("model.safetensors"), "{m}");

    let dir = case("truncated-bin", &[]);
    let bin = dir.join("pytorch_model.bin");
    let bytes = std::fs::read(&bin).unwrap();
    std::fs::write(&bin, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let m = message(&dir);
    assert!(m.contains("pytorch_model.bin") && (m.contains("truncated") || m.contains("corrupt")), "{m}");

    let dir = case("garbage-bin", &[]);
    std::fs::write(dir.join("pytorch_model.bin"), b"this is not a checkpoint").unwrap();
    let m = message(&dir);
    assert!(m.contains("not a PyTorch zip checkpoint"), "{m}");

    let st_dir = tmp.path().join("truncated-st");
    copy_dir(&fixture("tiny-safetensors"), &st_dir, &[]);
    let st = st_dir.join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    std::fs::write(&st, &bytes[..bytes.len() / 2]).unwrap();
    let m = message(&st_dir);
    assert!(m.contains("model.safetensors") && m.contains("not a valid safetensors file"), "{m}");

    let dir = case("vocab-mismatch", &[]);
    let cfg =
        std::fs::read_to_string(dir.join("config.json")).unwrap().replace("\"vocab_size\": 96", "\"vocab_size\": 97");
    std::fs::write(dir.join("config.json"), cfg).unwrap();
    let m = message(&dir);
    assert!(m.contains("wte.weight") && m.contains("[96, 16]") && m.contains("[97, 16]"), "{m}");

    let dir = case("bad-activation", &[]);
    let cfg = std::fs::read_to_string(dir.join("config.json")).unwrap().replace("\"gelu_new\"", "\"mish\"");
    std::fs::write(dir.join("config.json"), cfg).unwrap();
    let m = message(&dir);
    assert!(m.contains("activation_function") && m.contains("mish") && m.contains("not implemented"), "{m}");

    // A parameter missing from the file is named.
    let dir = tmp.path().join("missing-tensor");
    copy_dir(&fixture("tiny-safetensors"), &dir, &["model.safetensors"]);
    let bytes = std::fs::read(fixture("tiny-safetensors").join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<(String, safetensors::tensor::TensorView)> =
        st.tensors().into_iter().filter(|(k, _)| k != "h.1.mlp.c_fc.bias").collect();
    std::fs::write(dir.join("model.safetensors"), safetensors::tensor::serialize(kept, None).unwrap()).unwrap();
    let m = message(&dir);
    assert!(m.contains("h.1.mlp.c_fc.bias"), "{m}");
}
