//! The weight readers on what hub checkpoints hold beyond one plain file:
//! tensors stored as views, sharded checkpoints; and our PyTorch reader beside
//! burn-store's on the committed pickles (why ours is kept: `pickle.rs`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use burn_store::pytorch::PytorchReader;
use tp06_model::backend::Cpu;
use tp06_model::{HfConfig, read_tensor, read_tensors};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/model").join(name)
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

/// `tiny-views` holds tiny-bin's weights, one as a transpose (strides (1,
/// rows)) and one 7 elements into a larger storage: they read as the same
/// numbers, bit for bit.
#[test]
fn tensors_stored_as_views_read_as_their_values() {
    let views = read_tensors(&fixture("tiny-views/pytorch_model.bin")).unwrap();
    let plain = read_tensors(&fixture("tiny-bin/pytorch_model.bin")).unwrap();
    assert_eq!(views.len(), 28 + 1, "28 parameters and the tied lm_head");
    for (name, (shape, values)) in &views {
        let (plain_shape, plain_values) = &plain[name];
        assert_eq!(shape, plain_shape, "{name}");
        assert_eq!(bits(values), bits(plain_values), "{name}");
    }
}

/// A sharded checkpoint reads as one file through its index: every tensor
/// the index maps, from its shard.
#[test]
fn sharded_checkpoints_read_through_their_index() {
    for (dir, index) in
        [("tiny-sharded", "model.safetensors.index.json"), ("tiny-sharded-bin", "pytorch_model.bin.index.json")]
    {
        let dir = fixture(dir);
        assert_eq!(tp06_model::weight_file(&dir).unwrap(), dir.join(index));
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join(index)).unwrap()).unwrap();
        let mapped: BTreeSet<&str> = json["weight_map"].as_object().unwrap().keys().map(String::as_str).collect();
        let tensors = read_tensors(&dir.join(index)).unwrap();
        assert_eq!(tensors.keys().map(String::as_str).collect::<BTreeSet<_>>(), mapped);
        let shards: BTreeSet<&str> =
            json["weight_map"].as_object().unwrap().values().filter_map(|v| v.as_str()).collect();
        assert!(shards.len() > 2, "{shards:?}");
        let config = HfConfig::from_file(&dir.join("config.json")).unwrap().resolve().unwrap();
        let (_, report) = tp06_model::load::<Cpu>(&dir.join(index), &config, &Default::default()).unwrap();
        assert_eq!(report.file, dir.join(index).display().to_string());
        assert_eq!(report.applied, 2 + 12 * config.n_layer + 2);
    }
}

/// A copy of a fixture directory, to damage.
fn copy_of(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture(name)).unwrap().flatten() {
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

/// What goes wrong with a sharded checkpoint is one line naming the index and
/// the shard or field, with what to do.
#[test]
fn a_broken_sharded_checkpoint_names_the_index_and_the_shard() {
    let index = "model.safetensors.index.json";
    let dir = copy_of("tiny-sharded");
    let path = dir.path().join(index);
    std::fs::remove_file(dir.path().join("model-00002-of-00004.safetensors")).unwrap();
    let err = read_tensors(&path).unwrap_err().to_string();
    assert!(
        err.contains(index)
            && err.contains("shard `model-00002-of-00004.safetensors` is missing")
            && err.contains("download"),
        "{err}"
    );

    let dir = copy_of("tiny-sharded");
    let path = dir.path().join(index);
    let text = std::fs::read_to_string(&path).unwrap();
    // wte lives in another shard than the index says.
    let moved = text.replace(
        r#""transformer.wte.weight": "model-00001-of-00004.safetensors""#,
        r#""transformer.wte.weight": "model-00004-of-00004.safetensors""#,
    );
    assert_ne!(moved, text, "the fixture's wte is in the first shard");
    std::fs::write(&path, moved).unwrap();
    let err = read_tensors(&path).unwrap_err().to_string();
    assert!(err.contains("`weight_map.transformer.wte.weight` says `model-00004-of-00004.safetensors`"), "{err}");

    let dir = copy_of("tiny-sharded-bin");
    let shard = dir.path().join("pytorch_model-00003-of-00004.bin");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() / 2]).unwrap();
    let err = read_tensors(&dir.path().join("pytorch_model.bin.index.json")).unwrap_err().to_string();
    assert!(err.contains("pytorch_model-00003-of-00004.bin"), "the damaged shard is named: {err}");
}

/// Every floating-point tensor of a PyTorch file, as burn-store reads it.
fn burn_store(path: &Path) -> Vec<(String, Vec<f32>)> {
    let reader = PytorchReader::new(path).unwrap();
    let mut out: Vec<(String, Vec<f32>)> = reader
        .tensors()
        .iter()
        .filter(|(_, s)| s.dtype.is_float())
        .map(|(name, s)| (name.clone(), s.to_data().unwrap().convert::<f32>().into_vec::<f32>().unwrap()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// burn-store 0.21's `PytorchReader` beside ours. On plain checkpoints the
/// two read the same bits. It reads a transposed view as if it were
/// row-major (the strides are dropped) and a storage cut short as zeros
/// without an error, where ours reads the view's values and refuses the
/// truncated file: the reasons `pickle.rs` stays. When this test fails,
/// burn-store has caught up and the project can read through it.
#[test]
fn burn_store_reads_plain_pickles_alike_but_not_views_or_a_short_storage() {
    let mut plain = vec![fixture("tiny-bin/pytorch_model.bin")];
    for shard in 1..=4 {
        plain.push(fixture(&format!("tiny-sharded-bin/pytorch_model-0000{shard}-of-00004.bin")));
    }
    for path in &plain {
        let ours = read_tensors(path).unwrap();
        let theirs = burn_store(path);
        assert_eq!(theirs.len(), ours.len(), "{}", path.display());
        for (name, values) in &theirs {
            assert_eq!(bits(values), bits(&ours[name].1), "{name} of {}", path.display());
        }
    }

    let views = fixture("tiny-views/pytorch_model.bin");
    let ours = read_tensors(&views).unwrap();
    let differ: Vec<String> = burn_store(&views)
        .into_iter()
        .filter(|(name, values)| bits(values) != bits(&ours[name].1))
        .map(|(name, _)| name)
        .collect();
    assert_eq!(differ, ["transformer.h.0.attn.c_attn.weight"], "the transpose differs, the offset slice does not");

    // tiny-bin with wpe's storage cut to half its bytes.
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("pytorch_model.bin");
    let wpe_storage = truncate_storage_of(&fixture("tiny-bin/pytorch_model.bin"), &short, "transformer.wpe.weight");
    let err = read_tensor(&short, &["transformer.wpe.weight"]).unwrap_err().to_string();
    assert!(err.contains("reaches past the end of its storage") && err.contains(&wpe_storage), "{err}");
    let (_, theirs) =
        burn_store(&short).into_iter().find(|(name, _)| name == "transformer.wpe.weight").expect("burn-store reads it");
    let (_, _, full) = read_tensor(&fixture("tiny-bin/pytorch_model.bin"), &["transformer.wpe.weight"]).unwrap();
    assert_eq!(theirs.len(), full.len());
    assert!(theirs[full.len() / 2..].iter().all(|v| *v == 0.0), "the missing half reads as zeros");
    assert_eq!(bits(&theirs[..full.len() / 2]), bits(&full[..full.len() / 2]));
}

/// Copies the torch zip `from` to `to` with the storage of `tensor` cut to
/// half its bytes; returns that storage's name in the archive.
fn truncate_storage_of(from: &Path, to: &Path, tensor: &str) -> String {
    use std::io::{Read, Write};
    let (_, shape, _) = read_tensor(from, &[tensor]).unwrap();
    let bytes = shape.iter().product::<usize>() * 4;
    let mut archive = zip::ZipArchive::new(std::fs::File::open(from).unwrap()).unwrap();
    let mut out = zip::ZipWriter::new(std::fs::File::create(to).unwrap());
    let stored = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let mut cut = None;
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).unwrap();
        let name = entry.name().to_string();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        // The tensor's storage is the one of exactly its size (wpe's is not shared).
        if cut.is_none() && name.contains("/data/") && data.len() == bytes {
            data.truncate(bytes / 2);
            cut = Some(name.clone());
        }
        out.start_file(name, stored).unwrap();
        out.write_all(&data).unwrap();
    }
    out.finish().unwrap();
    cut.expect("a storage of the tensor's size")
}
