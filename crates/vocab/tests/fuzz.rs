//! Property tests of the tokenizer loader written here (vocab.json +
//! merges.txt as transformers reads them): damaged files give a tokenizer or
//! an error naming the file, never a panic.

use std::path::Path;

use proptest::prelude::*;
use tp06_vocab::Tok;

fn base() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/demo/base")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn damaged_merges_never_panic(cut in any::<usize>(), junk in "[a-zé#Ġ \\n]{0,30}", at in any::<usize>()) {
        let dir = tempfile::tempdir().unwrap();
        for f in ["vocab.json", "merges.txt", "special_tokens_map.json", "config.json"] {
            std::fs::copy(base().join(f), dir.path().join(f)).unwrap();
        }
        let merges = std::fs::read_to_string(base().join("merges.txt")).unwrap();
        let lines: Vec<&str> = merges.lines().collect();
        let keep = cut % (lines.len() + 1);
        let mut text = lines[..keep].join("\n");
        let at = text.char_indices().map(|(i, _)| i).nth(at % (text.chars().count() + 1)).unwrap_or(text.len());
        text.insert_str(at, &junk);
        std::fs::write(dir.path().join("merges.txt"), text).unwrap();
        match Tok::from_dir(dir.path()) {
            Ok(tok) => { let _ = tok.encode("Pikachu est un Pokémon"); }
            Err(e) => prop_assert!(e.to_string().contains("merges.txt") || e.to_string().contains("vocab.json"), "{e}"),
        }
    }

    #[test]
    fn damaged_vocab_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
        let dir = tempfile::tempdir().unwrap();
        for f in ["merges.txt", "special_tokens_map.json"] {
            std::fs::copy(base().join(f), dir.path().join(f)).unwrap();
        }
        std::fs::write(dir.path().join("vocab.json"), &bytes).unwrap();
        if let Err(e) = Tok::from_dir(dir.path()) {
            prop_assert!(e.to_string().contains("vocab.json") || e.to_string().contains("merges.txt"), "{e}");
        }
    }
}
