//! The sampler's greedy decoding (the one decoding loop, through the KV cache)
//! equals transformers' `generate(do_sample=False)` on the committed model
//! fixtures: the ids `fixtures/model/make_model_fixtures.py` recorded.

use std::path::{Path, PathBuf};

use tp06_model::backend::Cpu;
use tp06_model::{HfConfig, load, weight_file};
use tp06_sample::{Length, Processing, generate};

const FIXTURES: [&str; 4] = ["tiny-bin", "tiny-safetensors", "tiny-nonsquare", "tiny-sharp"];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/model").join(name)
}

/// An i64 tensor of the golden file.
fn ids(dir: &Path, name: &str) -> Vec<u32> {
    let bytes = std::fs::read(dir.join("golden.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let data = st.tensor(name).unwrap().data().to_vec();
    data.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32).collect()
}

#[test]
fn greedy_decoding_equals_transformers_generate() {
    for name in FIXTURES {
        let dir = fixture(name);
        let config = HfConfig::from_file(&dir.join("config.json")).unwrap().resolve().unwrap();
        let (model, _) = load::<Cpu>(&weight_file(&dir).unwrap(), &config, &Default::default()).unwrap();
        let (prompt, expected) = (ids(&dir, "prompt"), ids(&dir, "greedy"));
        let new_tokens = expected.len() - prompt.len();
        let out = generate(&model, &prompt, &Processing::GREEDY, Length::New(new_tokens), None, 1, 0);
        assert_eq!(out[0].ids, expected, "{name}");
        assert_eq!(out[0].new_tokens, new_tokens, "{name}");
    }
}
