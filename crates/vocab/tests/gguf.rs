//! The tokenizer as GGUF metadata (`tp06_vocab::gguf`), on a tokenizer small
//! enough to work out by hand: which entries llama.cpp must cut out before
//! its BPE (those the merges do not reach under `ignore_merges`, and those
//! whose text holds one), and which stay BPE tokens.

use std::path::Path;

use tp06_vocab::gguf::{TokenType, gguf_vocab};
use tp06_vocab::{Specials, Tok};

/// `abc` is an entry no merge builds (as the recommended vocabulary adds
/// names); `Ġabc` is built by the merges but holds `abc`.
fn tokenizer(ignore_merges: bool) -> Tok {
    let json = format!(
        r#"{{"version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [{{"id": 0, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}}],
        "normalizer": null,
        "pre_tokenizer": {{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}},
        "post_processor": null,
        "decoder": {{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true}},
        "model": {{"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": {ignore_merges},
            "vocab": {{"<s>": 0, "a": 1, "b": 2, "c": 3, "Ġ": 4, "ab": 5, "Ġab": 6, "Ġabc": 7, "abc": 8, "Ã": 9, "©": 10, "Ã©": 11}},
            "merges": ["a b", "Ġ ab", "Ġab c", "Ã ©"]}}}}"#
    );
    let specials = Specials { bos: Some("<s>".into()), ..Default::default() };
    Tok::from_json_str(&json, Path::new("tokenizer.json"), specials).unwrap()
}

#[test]
fn unreachable_entries_and_their_holders_are_cut_out_the_rest_stay_bpe() {
    let v = gguf_vocab(&tokenizer(true), 14).unwrap();
    use TokenType::*;
    let want = [
        ("<s>", Control),
        ("a", Normal),
        ("b", Normal),
        ("c", Normal),
        ("Ġ", Normal),
        ("ab", Normal),
        ("Ġab", Normal),
        (" abc", UserDefined), // reached by the merges, but holds `abc`
        ("abc", UserDefined),  // no merge builds it
        ("Ã", Normal),
        ("©", Normal),
        ("Ã©", Normal), // byte-level text kept for BPE tokens (`é`)
        ("[PAD12]", Unused),
        ("[PAD13]", Unused),
    ];
    let got: Vec<(&str, TokenType)> = v.tokens.iter().map(String::as_str).zip(v.types.iter().copied()).collect();
    assert_eq!(got, want);
    assert_eq!(v.merges, ["a b", "Ġ ab", "Ġab c", "Ã ©"]);
    assert_eq!((v.bos, v.eos), (Some(0), None));
}

#[test]
fn without_ignore_merges_every_entry_stays_a_bpe_token() {
    let v = gguf_vocab(&tokenizer(false), 12).unwrap();
    assert_eq!(v.tokens[8], "abc");
    assert!(v.types[1..].iter().all(|t| *t == TokenType::Normal), "{:?}", v.types);
}
