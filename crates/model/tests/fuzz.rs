//! Property tests of the weight readers written here (the PyTorch zip pickle
//! reader and the safetensors reader): a damaged file — truncated, bytes
//! flipped, bytes inserted, or random — gives tensors or an error naming the
//! file, never a panic or an absurd allocation.

use std::path::Path;

use proptest::prelude::*;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/model").join(name)).unwrap()
}

#[derive(Debug, Clone)]
enum Damage {
    Truncate(usize),
    Flip(Vec<(usize, u8)>),
    Insert(usize, Vec<u8>),
    Random(Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        any::<usize>().prop_map(Damage::Truncate),
        proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8).prop_map(Damage::Flip),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..16)).prop_map(|(at, b)| Damage::Insert(at, b)),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Damage::Random),
    ]
}

fn apply(mut bytes: Vec<u8>, damage: &Damage) -> Vec<u8> {
    match damage {
        Damage::Truncate(n) => bytes.truncate(n % (bytes.len() + 1)),
        Damage::Flip(flips) => {
            for (at, b) in flips {
                let i = at % bytes.len();
                bytes[i] ^= b | 1;
            }
        }
        Damage::Insert(at, extra) => {
            let i = at % (bytes.len() + 1);
            bytes.splice(i..i, extra.iter().copied());
        }
        Damage::Random(b) => bytes = b.clone(),
    }
    bytes
}

fn check(file: &str, original: &[u8], damage: &Damage) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(file);
    std::fs::write(&path, apply(original.to_vec(), damage)).unwrap();
    if let Err(e) = tp06_model::read_tensors(&path) {
        prop_assert!(e.to_string().contains(file), "{e}");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn damaged_pytorch_checkpoints_never_panic(d in damage()) {
        check("pytorch_model.bin", &fixture("tiny-bin/pytorch_model.bin"), &d)?;
    }

    /// A sharded checkpoint's index damaged, its shards whole.
    #[test]
    fn damaged_shard_indexes_never_panic(d in damage()) {
        let dir = tempfile::tempdir().unwrap();
        let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/model/tiny-sharded");
        for entry in std::fs::read_dir(&from).unwrap().flatten() {
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
        }
        let index = dir.path().join("model.safetensors.index.json");
        std::fs::write(&index, apply(std::fs::read(&index).unwrap(), &d)).unwrap();
        if let Err(e) = tp06_model::read_tensors(&index) {
            prop_assert!(e.to_string().contains("model.safetensors.index.json"), "{e}");
        }
    }

    #[test]
    fn damaged_safetensors_never_panic(d in damage()) {
        check("model.safetensors", &fixture("tiny-safetensors/model.safetensors"), &d)?;
    }
}
