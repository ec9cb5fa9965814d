//! GGUF export: the file's layout against bytes worked out by hand from
//! ggml's format, and every tensor and key read back by ggml's own reader
//! (the `gguf` package) and compared with the HF model it came from
//! (`fixtures/check_gguf.py`).

mod common;

use std::path::Path;
use std::process::Command;

use tp06_model::backend::Cpu;
use tp06_model::gguf::format::{self, TensorInfo, TensorType, Value};
use tp06_model::gguf::{About, GgufFormat};
use tp06_model::{Gpt2Config, HfConfig, ModelDir, ScratchInit};

/// A minimal file, byte for byte: one key, two tensors, the second starting
/// at the next multiple of 32 after the first's 12 bytes.
#[test]
fn the_layout_is_ggml_s_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    let metadata = [("a".to_string(), Value::U32(7))];
    let tensors = [
        TensorInfo { name: "x".into(), dims: vec![3], ty: TensorType::F32 },
        TensorInfo { name: "y".into(), dims: vec![2, 1], ty: TensorType::F16 },
    ];
    let data = [vec![1u8; 12], vec![2u8; 4]];
    format::write(&path, &metadata, &tensors, |i| Ok(data[i].clone())).unwrap();
    let bytes = std::fs::read(&path).unwrap();

    let mut want: Vec<u8> = b"GGUF".to_vec();
    let u32s = |v: u32| v.to_le_bytes().to_vec();
    let u64s = |v: u64| v.to_le_bytes().to_vec();
    let string = |s: &str| [u64s(s.len() as u64), s.as_bytes().to_vec()].concat();
    want.extend(u32s(3)); // version
    want.extend(u64s(2)); // tensors
    want.extend(u64s(2)); // keys: ours and general.alignment
    want.extend([string("a"), u32s(4), u32s(7)].concat()); // GGUF_TYPE_UINT32 = 4
    want.extend([string("general.alignment"), u32s(4), u32s(32)].concat());
    want.extend([string("x"), u32s(1), u64s(3), u32s(0), u64s(0)].concat()); // F32 = 0, offset 0
    want.extend([string("y"), u32s(2), u64s(2), u64s(1), u32s(1), u64s(32)].concat()); // F16 = 1, offset 32
    want.resize(want.len().div_ceil(32) * 32, 0);
    want.extend([vec![1u8; 12], vec![0u8; 20], vec![2u8; 4], vec![0u8; 28]].concat());
    assert_eq!(bytes, want);
}

/// Data of the wrong size, and a Q8_0 tensor whose rows are not a multiple
/// of 32, are refused with the tensor's name; nothing is left at the path.
#[test]
fn bad_tensors_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    let t = |ty| [TensorInfo { name: "blk.0.ffn_up.weight".into(), dims: vec![24, 2], ty }];
    let err = format::write(&path, &[], &t(TensorType::Q8_0), |_| Ok(vec![])).unwrap_err().to_string();
    assert!(err.contains("blk.0.ffn_up.weight") && err.contains("multiple of 32"), "{err}");
    let err = format::write(&path, &[], &t(TensorType::F32), |_| Ok(vec![0; 8])).unwrap_err().to_string();
    assert!(err.contains("blk.0.ffn_up.weight") && err.contains("8 bytes"), "{err}");
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "nothing half-written left behind");
}

/// A model of width 64 (every matrix can be Q8_0), in memory.
fn wide_config() -> Gpt2Config {
    common::tiny_config(96, 32, 64)
}

/// Each export format of a fixture whose widths are not multiples of 32
/// (its matrices fall back to f16 under q8_0) and of a 64-wide model, read
/// back by the `gguf` package against the source safetensors.
#[test]
fn the_gguf_package_reads_every_tensor_back() {
    let Some(python) = tp06_testkit::python_with(&["gguf", "numpy", "safetensors"], "the GGUF read-back") else {
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = tempfile::tempdir().unwrap();
    let device = Default::default();
    // The fixture as loaded, and a scratch model saved as an HF directory.
    let nonsquare = root.join("fixtures/model/tiny-nonsquare");
    let wide = dir.path().join("wide");
    std::fs::create_dir_all(&wide).unwrap();
    let config = wide_config();
    std::fs::write(wide.join("config.json"), HfConfig::from_gpt2(&config).to_json_pretty()).unwrap();
    let model = tp06_model::init_from_scratch::<Cpu>(&config, ScratchInit { seed: 3 }, &device);
    tp06_model::save_safetensors(&model, &wide.join("model.safetensors")).unwrap();
    for source in [nonsquare, wide] {
        let model_dir = ModelDir::open(&source).unwrap();
        // Compared with a safetensors file beside a config.json.
        let reference = dir.path().join(format!("{}-ref", source.file_name().unwrap().to_string_lossy()));
        std::fs::create_dir_all(&reference).unwrap();
        std::fs::copy(source.join("config.json"), reference.join("config.json")).unwrap();
        let (model, _) = model_dir.load::<Cpu>(&device, tp06_artifact::Watch::none()).unwrap();
        tp06_model::save_safetensors(&model, &reference.join("model.safetensors")).unwrap();
        for format in [GgufFormat::F32, GgufFormat::F16, GgufFormat::Q8_0] {
            let out = dir.path().join(format!("{}-{format}.gguf", source.file_name().unwrap().to_string_lossy()));
            let about = About { name: "tiny".into(), ..Default::default() };
            tp06_model::gguf::write(model.clone(), model_dir.config(), &about, None, format, &out).unwrap();
            let run = Command::new(python)
                .arg(root.join("fixtures/check_gguf.py"))
                .arg(&out)
                .arg(reference.join("model.safetensors"))
                .arg(format.name())
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&run.stdout);
            eprintln!("{}", text.trim());
            assert!(run.status.success(), "{}: {}\n{}", out.display(), text, String::from_utf8_lossy(&run.stderr));
        }
    }
}

/// The LoRA adapter file: a model without adapters is refused with a hint,
/// and llama.cpp's `α / r` is peft's scaling, rsLoRA's `α / √r` included
/// (read back by the `gguf` package).
#[test]
fn the_adapter_file_carries_peft_s_scaling() {
    use tp06_model::lora::{Blocks, LoraConfig, Target};
    let dir = tempfile::tempdir().unwrap();
    let device = Default::default();
    let model = tp06_model::init_from_scratch::<Cpu>(&wide_config(), ScratchInit { seed: 3 }, &device);
    let about = About { name: "tiny".into(), ..Default::default() };
    let path = dir.path().join("adapter.gguf");
    let err = tp06_model::gguf::adapter::write(&model, &about, &path).unwrap_err().to_string();
    assert!(err.contains("no LoRA adapter") && err.contains("without --adapter"), "{err}");
    assert!(!path.exists());
    let config =
        LoraConfig { r: 4, alpha: 8.0, dropout: 0.0, targets: vec![Target::CAttn], blocks: Blocks::All, rslora: true };
    let adapted = tp06_model::lora::attach(model, &config, 7, &device);
    let written = tp06_model::gguf::adapter::write(&adapted, &about, &path).unwrap();
    // rsLoRA: s = 8 / √4 = 4, written as α = s · r = 16 for llama.cpp's α / r.
    assert_eq!((written.pairs, written.r, written.alpha), (2, 4, 16.0));
    let Some(python) = tp06_testkit::python_with(&["gguf"], "the GGUF read-back") else { return };
    let read = "import sys; from gguf import GGUFReader; r = GGUFReader(sys.argv[1]); \
                print(r.fields['adapter.lora.alpha'].contents(), sorted(t.name for t in r.tensors))";
    let out = Command::new(python).args(["-c", read]).arg(&path).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.trim(),
        "16.0 ['blk.0.attn_qkv.weight.lora_a', 'blk.0.attn_qkv.weight.lora_b', \
         'blk.1.attn_qkv.weight.lora_a', 'blk.1.attn_qkv.weight.lora_b']",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
