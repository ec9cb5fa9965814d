//! LoRA adapters: the forward pass, peft's initialisation, merging, the
//! settings' checks, and adapter directories written and read back; against
//! peft's own numbers (`fixtures/make_lora_fixtures.py`): the logits of
//! adapters peft wrote, on a base resized for added tokens too.
//!
//! Tolerances: logits within 1e-4 absolute of peft's (as the model's golden
//! tests against transformers); a merged model within 1e-5 of the unmerged
//! one, relative to the logits' scale (their largest magnitude, at least 1:
//! one product `x (W + ΔW)` against `x W + (x Aᵀ) Bᵀ s` rounds differently).

use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::prelude::*;
use safetensors::SafeTensors;
use tp06_model::backend::Cpu;
use tp06_model::lora::{self, Blocks, LoraConfig, Target};
use tp06_model::{Gpt2, HfConfig, NamedParams, Pass};

type B = Cpu;

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures").join(path)
}

/// An HF directory's model (config.json and its weights).
fn load(dir: &Path) -> Gpt2<B> {
    let config = HfConfig::from_file(&dir.join("config.json")).unwrap().resolve().unwrap();
    tp06_model::load::<B>(&tp06_model::weight_file(dir).unwrap(), &config, &Default::default()).unwrap().0
}

fn logits(model: &Gpt2<B>, ids: &[i64], shape: [usize; 2]) -> Vec<f32> {
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids.to_vec(), shape), &Default::default());
    model.forward(ids, &mut Pass::inference()).into_data().convert::<f32>().into_vec().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn every_layer(r: usize) -> LoraConfig {
    LoraConfig { r, alpha: 8.0, dropout: 0.0, targets: Target::ALL.to_vec(), blocks: Blocks::All, rslora: false }
}

/// Every `B` of `model` set to seeded N(0, 0.2²)-like values, so the adapters count.
fn with_random_b(mut model: Gpt2<B>) -> Gpt2<B> {
    let mut state = 1u64;
    for block in &mut model.h {
        for layer in [&mut block.attn.c_attn, &mut block.attn.c_proj, &mut block.mlp.c_fc, &mut block.mlp.c_proj] {
            if let Some(lora) = &mut layer.lora {
                let dims = lora.b.dims();
                let values: Vec<f32> = (0..dims[0] * dims[1])
                    .map(|_| {
                        state = tp06_model::rng::splitmix64(state);
                        ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.7
                    })
                    .collect();
                lora.b = Param::from_tensor(Tensor::from_data(TensorData::new(values, dims), &Default::default()));
            }
        }
    }
    model
}

const IDS: [i64; 10] = [3, 17, 42, 8, 91, 5, 64, 33, 12, 70];

#[test]
fn a_fresh_adapter_changes_nothing_and_a_merged_one_computes_the_same() {
    let base = load(&fixture("model/tiny-sharp"));
    let expected = logits(&base, &IDS, [1, 10]);
    let fresh = lora::attach(base.clone(), &every_layer(4), 7, &Default::default());
    assert!(fresh.has_lora() && !base.has_lora());
    assert_eq!(logits(&fresh, &IDS, [1, 10]), expected, "B = 0: bit for bit the base");

    let trained = with_random_b(fresh);
    let ours = logits(&trained, &IDS, [1, 10]);
    assert!(max_diff(&ours, &expected) > 0.1, "the adapters move the logits");
    let merged = lora::merge(trained.clone());
    assert!(!merged.has_lora());
    let diff = max_diff(&logits(&merged, &IDS, [1, 10]), &ours);
    let scale = ours.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    assert!(diff < 1e-5 * scale, "merged vs unmerged: {diff} (logits up to {scale})");

    // Only the targeted layers of the chosen blocks change when merged.
    let one = LoraConfig { targets: vec![Target::CFc], blocks: Blocks::Range(1, 2), ..every_layer(2) };
    let partly = lora::merge(with_random_b(lora::attach(base.clone(), &one, 7, &Default::default())));
    for ((name, _, before), (_, _, after)) in NamedParams::of(&base).params.iter().zip(NamedParams::of(&partly).params)
    {
        let moved = before.clone().into_data() != after.into_data();
        assert_eq!(moved, name == "h.1.mlp.c_fc.weight", "{name}");
    }
}

/// peft's `kaiming_uniform_(A, a=√5)`: U(±1/√in) on `A [r, in]`; B = 0; the
/// scaling α/r, or α/√r with rsLoRA; seeded.
#[test]
fn the_initialisation_is_peft_s() {
    let base = load(&fixture("model/tiny-sharp"));
    let config = every_layer(8);
    let model = lora::attach(base.clone(), &config, 7, &Default::default());
    let again = lora::attach(base.clone(), &config, 7, &Default::default());
    let other = lora::attach(base.clone(), &config, 8, &Default::default());
    let c_fc = model.h[1].mlp.c_fc.lora.as_ref().unwrap();
    let c_proj = model.h[1].mlp.c_proj.lora.as_ref().unwrap();
    for (lora, inputs) in
        [(c_fc, model.h[1].mlp.c_fc.weight.dims()[0]), (c_proj, model.h[1].mlp.c_proj.weight.dims()[0])]
    {
        let a: Vec<f32> = lora.a.val().into_data().into_vec().unwrap();
        let bound = 1.0 / (inputs as f32).sqrt();
        assert_eq!(lora.a.dims(), [8, inputs]);
        assert!(a.iter().all(|v| v.abs() <= bound), "within ±1/√in");
        let mean = a.iter().sum::<f32>() / a.len() as f32;
        let var = a.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / a.len() as f32;
        // U(±b): variance b²/3; its estimate from n values has a relative std of ~√(0.8/n).
        let n = a.len() as f32;
        assert!((var / (bound * bound / 3.0) - 1.0).abs() < 5.0 * (0.8 / n).sqrt(), "variance {var}");
        assert!(mean.abs() < 5.0 * bound / (3.0 * n).sqrt(), "mean {mean}");
        assert!(lora.b.val().into_data().into_vec::<f32>().unwrap().iter().all(|&v| v == 0.0));
        assert_eq!(lora.scaling, 1.0, "α/r = 8/8");
    }
    let values = |m: &Gpt2<B>| lora_values(m);
    assert_eq!(values(&model), values(&again), "the same seed, the same adapters");
    assert_ne!(values(&model), values(&other), "another seed, others");
    assert_ne!(
        model.h[0].attn.c_attn.lora.as_ref().unwrap().a.val().into_data(),
        model.h[1].attn.c_attn.lora.as_ref().unwrap().a.val().into_data(),
        "each layer draws its own"
    );
    let rs = LoraConfig { rslora: true, alpha: 16.0, r: 4, ..config };
    assert_eq!(rs.scaling(), 8.0, "α/√r");
}

fn lora_values(model: &Gpt2<B>) -> Vec<(String, Vec<f32>)> {
    model
        .lora_params()
        .into_iter()
        .map(|(name, _, t)| (name, t.into_data().convert::<f32>().into_vec().unwrap()))
        .collect()
}

#[test]
fn bad_settings_are_one_line_errors_naming_the_key() {
    let ok = every_layer(4);
    assert!(ok.validate(2).is_ok());
    let cases = [
        (LoraConfig { r: 0, ..ok.clone() }, "model.lora.r"),
        (LoraConfig { alpha: 0.0, ..ok.clone() }, "model.lora.alpha"),
        (LoraConfig { alpha: f64::NAN, ..ok.clone() }, "model.lora.alpha"),
        (LoraConfig { dropout: 1.0, ..ok.clone() }, "model.lora.dropout"),
        (LoraConfig { targets: vec![], ..ok.clone() }, "model.lora.targets"),
        (LoraConfig { targets: vec![Target::CAttn, Target::CAttn], ..ok.clone() }, "model.lora.targets"),
        (LoraConfig { blocks: Blocks::Range(1, 3), ..ok.clone() }, "model.lora.blocks"),
        (LoraConfig { blocks: Blocks::Range(1, 1), ..ok.clone() }, "model.lora.blocks"),
    ];
    for (config, key) in cases {
        let e = config.validate(2).unwrap_err().to_string();
        assert!(e.contains(key) && !e.contains('\n'), "{key}: {e}");
    }
    let unknown: Result<LoraConfig, _> = serde_json::from_str(r#"{"r": 4, "alpha": 8, "targets": ["q_proj"]}"#);
    let e = unknown.unwrap_err().to_string();
    assert!(e.contains("q_proj") && e.contains("c_attn, attn.c_proj, c_fc, mlp.c_proj"), "{e}");
    let defaults: LoraConfig = serde_json::from_str(r#"{"r": 4, "alpha": 8}"#).unwrap();
    assert_eq!((defaults.targets, defaults.blocks, defaults.dropout), (vec![Target::CAttn], Blocks::All, 0.0));
    let range: LoraConfig = serde_json::from_str(r#"{"r": 4, "alpha": 8, "blocks": [1, 2]}"#).unwrap();
    assert_eq!(range.blocks, Blocks::Range(1, 2));
}

/// An adapter written as a peft directory reads back to the same values:
/// its layers, its scaling, and the rows of `wte` it carries.
#[test]
fn an_adapter_directory_reads_back_whole() {
    let base = load(&fixture("model/tiny-sharp"));
    let rows = base.vocab_size();
    let config = LoraConfig { rslora: true, blocks: Blocks::Range(1, 2), dropout: 0.1, ..every_layer(4) };
    let mut trained = with_random_b(lora::attach(base.clone(), &config, 3, &Default::default()));
    // Pretend its last 3 rows are added names that trained.
    let n_embd = trained.wte.weight.dims()[1];
    let wte = trained.wte.weight.val();
    let new = Tensor::<B, 2>::ones([3, n_embd], &Default::default());
    trained.wte.weight = Param::from_tensor(wte.slice_assign([rows - 3..rows, 0..n_embd], new));
    let dir = tempfile::tempdir().unwrap();
    let written = lora::write_adapter(&trained, &config, "some/base", rows - 3..rows, dir.path(), &[]).unwrap();
    assert_eq!(written, ["adapter_config.json", "adapter_model.safetensors"]);

    let (read, info) = lora::load_adapter(base.clone(), dir.path(), &Default::default()).unwrap();
    assert_eq!(lora_values(&read), lora_values(&trained));
    assert_eq!(
        (info.base.as_str(), info.r, info.alpha, info.rslora, info.dropout, info.token_rows.clone()),
        ("some/base", 4, 8.0, true, 0.1, (rows - 3..rows).collect())
    );
    let layer = read.h[1].attn.c_attn.lora.as_ref().unwrap();
    assert_eq!((layer.scaling, layer.dropout.p), (4.0, 0.1));
    assert!(read.h[0].attn.c_attn.lora.is_none(), "block 0 has none");
    assert_eq!(read.wte.weight.val().into_data(), trained.wte.weight.val().into_data());
    assert_eq!(logits(&read, &IDS, [1, 10]), logits(&trained, &IDS, [1, 10]));

    // Its configuration is peft's LoraConfig.
    let text = std::fs::read_to_string(dir.path().join("adapter_config.json")).unwrap();
    let peft: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(peft["peft_type"], "LORA");
    assert_eq!(peft["layers_to_transform"], serde_json::json!([1]));
    assert_eq!(peft["target_modules"], serde_json::json!(["c_attn", "attn.c_proj", "c_fc", "mlp.c_proj"]));
    assert_eq!(peft["fan_in_fan_out"], true);

    // A base without the adapter's rows is refused, naming the fix.
    let config = HfConfig::from_file(&fixture("model/tiny-sharp/config.json")).unwrap().resolve().unwrap();
    let small = tp06_model::init_from_scratch::<B>(
        &tp06_model::Gpt2Config { vocab_size: rows - 5, ..config },
        tp06_model::ScratchInit { seed: 1 },
        &Default::default(),
    );
    let e = lora::load_adapter(small, dir.path(), &Default::default()).unwrap_err().to_string();
    assert!(e.contains("resize the base") && e.contains("adapter_model.safetensors"), "{e}");
}

#[test]
fn damaged_adapter_directories_are_named_errors() {
    let base = load(&fixture("model/tiny-sharp"));
    let trained = with_random_b(lora::attach(base.clone(), &every_layer(4), 3, &Default::default()));
    let write = || {
        let dir = tempfile::tempdir().unwrap();
        lora::write_adapter(&trained, &every_layer(4), "b", 0..0, dir.path(), &[]).unwrap();
        dir
    };
    let config = |dir: &Path, edit: &dyn Fn(&mut serde_json::Value)| {
        let path = dir.join("adapter_config.json");
        let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        edit(&mut v);
        std::fs::write(&path, v.to_string()).unwrap();
    };
    type Edit<'a> = &'a dyn Fn(&mut serde_json::Value);
    let cases: [(Edit, &str); 4] = [
        (&|v| v["r"] = 8.into(), "another model"),
        (&|v| v["use_dora"] = true.into(), "use_dora"),
        (&|v| v["peft_type"] = "IA3".into(), "only LoRA"),
        (&|v| v["rank_pattern"] = serde_json::json!({"c_attn": 2}), "rank_pattern"),
    ];
    for (edit, expected) in cases {
        let dir = write();
        config(dir.path(), edit);
        let e = lora::load_adapter(base.clone(), dir.path(), &Default::default()).unwrap_err().to_string();
        assert!(e.contains(expected) && e.contains(dir.path().to_str().unwrap()), "{expected}: {e}");
    }
    let empty = tempfile::tempdir().unwrap();
    let e = lora::load_adapter(base.clone(), empty.path(), &Default::default()).unwrap_err().to_string();
    assert!(e.contains("adapter_config.json") && e.contains("peft adapter directory"), "{e}");
}

/// The adapters peft wrote, loaded here, give peft's logits, unmerged and
/// merged; on a base resized for 4 added tokens too, whose rows the adapter
/// carries as trainable tokens.
#[test]
fn adapters_peft_wrote_give_peft_s_logits() {
    for (case, vocab) in [("peft-plain", 96), ("peft-tokens", 100)] {
        let dir = fixture(&format!("lora/{case}"));
        let bytes = std::fs::read(dir.join("golden.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let ids: Vec<i64> = st
            .tensor("input_ids")
            .unwrap()
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let f32s = |name: &str| -> Vec<f32> {
            st.tensor(name).unwrap().data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
        };
        let base = tp06_model::ModelDir::open(&fixture("lora/base")).unwrap();
        let model = base.load_with_adapter::<B>(&dir, vocab, &Default::default()).unwrap();
        let ours = logits(&model, &ids, [2, ids.len() / 2]);
        let diff = max_diff(&ours, &f32s("logits"));
        assert!(diff < 1e-4, "{case}: max |Δ| against peft = {diff}");
        let merged = logits(&lora::merge(model), &ids, [2, ids.len() / 2]);
        let diff = max_diff(&merged, &f32s("merged_logits"));
        assert!(diff < 1e-4, "{case}: merged, max |Δ| against peft's merge_and_unload = {diff}");
    }
}

/// An HF directory written from a model with adapters holds the merged
/// weights (each made as it is written): the tensors of the merged model's
/// own directory, bit for bit, and no adapter tensor.
#[test]
fn an_hf_directory_holds_the_merged_weights() {
    let base = load(&fixture("model/tiny-sharp"));
    let config = LoraConfig { blocks: Blocks::Range(1, 2), ..every_layer(4) };
    let trained = with_random_b(lora::attach(base, &config, 3, &Default::default()));
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    tp06_model::ModelDir::write(&trained, a.path(), &[], tp06_artifact::Watch::none()).unwrap();
    tp06_model::ModelDir::write(&lora::merge(trained), b.path(), &[], tp06_artifact::Watch::none()).unwrap();
    let read = |dir: &Path| tp06_model::read_tensors(&dir.join("model.safetensors")).unwrap();
    let (ours, merged) = (read(a.path()), read(b.path()));
    assert_eq!(ours, merged);
    assert!(ours.keys().all(|k| !k.contains("lora")), "{:?}", ours.keys());
}
