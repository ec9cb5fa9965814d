//! `ModelDir`: a directory written from a model opens as the same model, an
//! adapter in `adapter/` comes with it (and its tokenizer), a base grows for
//! an adapter's added rows only when the adapter carries them, and the one
//! resize of `wte` keeps the first rows.

use std::path::{Path, PathBuf};

use tp06_artifact::Watch;
use tp06_model::backend::Cpu;
use tp06_model::lora::{self, Blocks, LoraConfig, Target};
use tp06_model::names::{self, Factor, Layer};
use tp06_model::{Gpt2, ModelDir, NamedParams, RowInit};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/model").join(name)
}

fn values(model: &Gpt2<Cpu>) -> Vec<(String, Vec<f32>)> {
    NamedParams::of(model).params.into_iter().map(|(name, _, t)| (name, NamedParams::<Cpu>::values(&t))).collect()
}

fn open_and_load(dir: &Path) -> (ModelDir, Gpt2<Cpu>) {
    let model_dir = ModelDir::open(dir).unwrap();
    let (model, _) = model_dir.load::<Cpu>(&Default::default(), Watch::none()).unwrap();
    (model_dir, model)
}

/// A pickle checkpoint written back as an HF directory (its `config.json`
/// copied) opens as the same model, every parameter bit for bit, and as
/// the same shape; its weights are safetensors under HF's keys.
#[test]
fn a_written_directory_opens_as_the_model_it_was_written_from() {
    let (source, model) = open_and_load(&fixture("tiny-bin"));
    assert!(source.weight_file().unwrap().ends_with(tp06_model::PYTORCH_BIN));
    let out = tempfile::tempdir().unwrap();
    let written = ModelDir::write(&model, out.path(), &[source.config_path()], Watch::none()).unwrap();
    assert_eq!(written, [tp06_model::SAFETENSORS, tp06_model::CONFIG]);
    let (again, reloaded) = open_and_load(out.path());
    assert_eq!(again.config(), source.config());
    assert_eq!(values(&reloaded), values(&model));
    let keys = tp06_model::read_tensors(&again.weight_file().unwrap()).unwrap();
    assert!(keys.contains_key(&names::hf_key(names::WTE)), "{:?}", keys.keys());
    assert_eq!((again.adapter(), again.tokenizer_dir()), (None, out.path()), "no adapter: the tokenizer beside");
}

/// A sharded checkpoint's files are its index then each shard, as a
/// manifest records them.
#[test]
fn a_sharded_checkpoint_lists_its_index_then_its_shards() {
    let dir = fixture("tiny-sharded");
    let files = ModelDir::open(&dir).unwrap().weight_files().unwrap();
    assert_eq!(files[0], dir.join(tp06_model::SAFETENSORS_INDEX));
    let shards: Vec<String> = files[1..].iter().map(|f| f.file_name().unwrap().to_string_lossy().into()).collect();
    assert_eq!(shards, (1..=4).map(|i| format!("model-0000{i}-of-00004.safetensors")).collect::<Vec<_>>());
}

/// A directory whose `adapter/` holds a peft adapter (the model stage's
/// output under LoRA) loads with that adapter on its weights, and reads
/// its tokenizer from beside the adapter when the adapter carries one.
#[test]
fn an_adapter_in_the_directory_comes_with_the_model() {
    let (source, base) = open_and_load(&fixture("tiny-sharp"));
    let config = LoraConfig {
        r: 2,
        alpha: 4.0,
        dropout: 0.0,
        targets: Target::ALL.to_vec(),
        blocks: Blocks::Range(1, 2),
        rslora: false,
    };
    let mut with = lora::attach(base.clone(), &config, 7, &Default::default());
    // A non-zero B, so that the adapter changes the model.
    let b = &mut with.h[1].conv_mut(Layer::CFc).unwrap().lora.as_mut().unwrap().b;
    *b = burn::module::Param::from_tensor(b.val().ones_like() * 0.5);
    let out = tempfile::tempdir().unwrap();
    std::fs::copy(source.config_path(), out.path().join(tp06_model::CONFIG)).unwrap();
    tp06_model::save_safetensors(&base, &out.path().join(tp06_model::SAFETENSORS)).unwrap();
    let adapter = out.path().join(tp06_model::ADAPTER_DIR);
    lora::write_adapter(&with, &config, "base", 0..0, &adapter, &[]).unwrap();

    let (dir, loaded) = open_and_load(out.path());
    assert_eq!(dir.adapter(), Some(adapter.as_path()));
    assert!(loaded.has_lora());
    let (ours, theirs) = (values(&loaded), values(&with));
    assert_eq!(ours, theirs, "the base's weights and the adapter's factors");
    assert!(ours.iter().any(|(name, _)| *name == names::lora(1, Layer::CFc, Factor::B)));
    assert_eq!(dir.tokenizer_dir(), out.path());
    std::fs::write(adapter.join("tokenizer.json"), "{}").unwrap();
    assert_eq!(ModelDir::open(out.path()).unwrap().tokenizer_dir(), adapter);
}

/// A base grows for an adapter's added rows, as transformers'
/// `resize_token_embeddings` before peft loads it, only when the adapter
/// carries every added row as a trainable token; the pretrained rows stay.
#[test]
fn a_base_grows_only_for_the_rows_its_adapter_carries() {
    let base_dir = fixture("../lora/base");
    let peft = fixture("../lora/peft-tokens"); // 4 trainable tokens: rows 96..100
    let base = ModelDir::open(&base_dir).unwrap();
    let rows = base.config().vocab_size;
    let grown = base.load_with_adapter::<Cpu>(&peft, rows + 4, &Default::default()).unwrap();
    assert_eq!(grown.vocab_size(), rows + 4);
    let (_, plain) = open_and_load(&base_dir);
    let first =
        |m: &Gpt2<Cpu>| m.wte.weight.val().slice(burn::tensor::s![0..rows, ..]).into_data().into_vec::<f32>().unwrap();
    assert_eq!(first(&grown), first(&plain), "the pretrained rows are kept");
    let err = base.load_with_adapter::<Cpu>(&peft, rows + 5, &Default::default()).unwrap_err().to_string();
    assert!(err.contains("adapter_config.json") && err.contains(&format!("row {}", rows + 4)), "{err}");
}

/// `resize_wte` keeps the first rows, initialises the added ones as asked
/// (a reference row plus nothing, here) and drops rows when shrinking.
#[test]
fn the_one_resize_keeps_the_first_rows() {
    let (_, model) = open_and_load(&fixture("tiny-safetensors"));
    let [rows, width] = model.wte.weight.dims();
    let wte = |m: &Gpt2<Cpu>| m.wte.weight.val().into_data().into_vec::<f32>().unwrap();
    let before = wte(&model);
    let grown = tp06_model::resize_wte(model.clone(), rows + 2, 0, |_| RowInit::Reference { id: 3, noise_std: 0.0 });
    let after = wte(&grown);
    assert_eq!(&after[..rows * width], &before[..], "the first rows");
    for added in [rows, rows + 1] {
        assert_eq!(&after[added * width..(added + 1) * width], &before[3 * width..4 * width], "row {added} = row 3");
    }
    let shrunk = tp06_model::resize_wte(model, rows - 1, 0, |_| RowInit::Mean);
    assert_eq!(wte(&shrunk), before[..(rows - 1) * width]);
}
