//! The tokenizer as llama.cpp's GGUF files hold a GPT-2 one
//! (`tokenizer.ggml.*`): the tokens in id order with a type each, the merges
//! in rank order, the special tokens' ids, and the pre-tokenizer's name,
//! `gpt-2` (llama.cpp's GPT-2 regex, which is ours).
//!
//! llama.cpp's BPE reaches a vocabulary entry only through the merges. The
//! recommended vocabulary adds the names as entries that no merge builds,
//! reached by looking a whole pre-token up first (`ignore_merges`). Those
//! entries are written as llama.cpp's user-defined tokens, with their text
//! decoded (` Salamèche`): llama.cpp cuts the text at them before its BPE, so
//! a name stays one token, and it prints their text as it is. So are the
//! entries whose text holds such a name (` Salamèche`, already a GPT-2 token,
//! holds the added `Salamèche`), which llama.cpp would otherwise split.
//!
//! The one difference left: llama.cpp cuts at a name anywhere, also inside a
//! longer word that our tokenizer keeps whole (`Aquali` in `Aqualis`). Such a
//! text tokenizes differently there; texts without one tokenize the same.

use std::collections::HashMap;

use serde_json::Value;

use crate::VocabError;
use crate::tokenizer::Tok;

/// A token's type (llama.cpp's `llama_token_type`, gguf's `TokenType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum TokenType {
    /// A BPE vocabulary entry.
    Normal = 1,
    /// A special token (`<s>`, `</s>`): matched only when asked to parse them.
    Control = 3,
    /// A token cut out of the text before BPE, its text as it is.
    UserDefined = 4,
    /// A row of the embedding past the tokenizer's vocabulary.
    Unused = 5,
}

/// The `tokenizer.ggml.*` metadata of a GGUF file.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufVocab {
    /// Every token's text, in id order.
    pub tokens: Vec<String>,
    /// Every token's type, in id order.
    pub types: Vec<TokenType>,
    /// The merges in rank order, each `left right`.
    pub merges: Vec<String>,
    /// `tokenizer.ggml.bos_token_id`, and so on.
    pub bos: Option<u32>,
    /// End of sequence.
    pub eos: Option<u32>,
    /// Unknown.
    pub unk: Option<u32>,
    /// Padding.
    pub pad: Option<u32>,
}

/// llama.cpp's name of GPT-2's pre-tokenizer (`tokenizer.ggml.pre`).
pub const PRE: &str = "gpt-2";

/// `tok` as llama.cpp's metadata for a model of `rows` embedding rows
/// (rows past the vocabulary become unused `[PAD{id}]` tokens).
pub fn gguf_vocab(tok: &Tok, rows: usize) -> Result<GgufVocab, VocabError> {
    let bad = |reason: &str| VocabError::Tokenizer { path: tok.origin.clone(), reason: reason.to_string() };
    let json: Value = serde_json::from_str(&tok.to_json()?).map_err(|e| bad(&e.to_string()))?;
    let model = &json["model"];
    if model["type"] != "BPE" {
        return Err(bad("not a BPE tokenizer: a GGUF file of the gpt2 architecture needs GPT-2's byte-level BPE"));
    }
    let vocab: HashMap<String, u32> =
        serde_json::from_value(model["vocab"].clone()).map_err(|e| bad(&format!("the vocabulary ({e})")))?;
    let merges: Vec<(String, String)> = model["merges"]
        .as_array()
        .ok_or_else(|| bad("the BPE model has no merges"))?
        .iter()
        .map(|m| match m {
            Value::String(s) => s.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())),
            Value::Array(pair) => match &pair[..] {
                [Value::String(a), Value::String(b)] => Some((a.clone(), b.clone())),
                _ => None,
            },
            _ => None,
        })
        .collect::<Option<_>>()
        .ok_or_else(|| bad("a merge is neither `a b` nor [a, b]"))?;
    let ignore_merges = model["ignore_merges"].as_bool().unwrap_or(false);
    let specials: HashMap<u32, String> = json["added_tokens"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| Some((t["id"].as_u64()? as u32, t["content"].as_str()?.to_string())))
        .collect();
    let size = tok.vocab_size().max(rows);
    let mut tokens: Vec<String> = (0..size).map(|id| format!("[PAD{id}]")).collect();
    let mut types = vec![TokenType::Unused; size];
    let byte_of: HashMap<char, u8> = (0..=255u8).map(|b| (crate::extend::byte_char(b), b)).collect();
    let ranks: HashMap<(&str, &str), usize> =
        merges.iter().enumerate().map(|(rank, (a, b))| ((a.as_str(), b.as_str()), rank)).collect();
    // Entries the merges do not reach, cut out before BPE with their text.
    let cut: HashMap<u32, String> = vocab
        .iter()
        .filter(|(text, _)| ignore_merges && !reached_by_merges(text, &ranks))
        .filter_map(|(text, &id)| Some((id, decoded(text, &byte_of)?)))
        .collect();
    // llama.cpp cuts at them anywhere, longest first: an entry whose text
    // holds one (` Salamèche` holds `Salamèche`) is cut out too, or the
    // shorter one would split it.
    let texts: Vec<&str> = cut.values().map(String::as_str).collect();
    for (text, &id) in &vocab {
        let (token, kind) = match cut.get(&id) {
            Some(raw) => (raw.clone(), TokenType::UserDefined),
            None => match decoded(text, &byte_of)
                .filter(|raw| texts.iter().any(|t| raw.len() > t.len() && raw.contains(t)))
            {
                Some(raw) => (raw, TokenType::UserDefined),
                None => (text.clone(), TokenType::Normal),
            },
        };
        if let Some(slot) = tokens.get_mut(id as usize) {
            (*slot, types[id as usize]) = (token, kind);
        }
    }
    for (&id, content) in &specials {
        if let Some(slot) = tokens.get_mut(id as usize) {
            (*slot, types[id as usize]) = (content.clone(), TokenType::Control);
        }
    }
    let id = |token: &Option<String>| token.as_deref().and_then(|t| tok.token_to_id(t));
    Ok(GgufVocab {
        tokens,
        types,
        merges: merges.iter().map(|(a, b)| format!("{a} {b}")).collect(),
        bos: id(&tok.specials.bos),
        eos: id(&tok.specials.eos),
        unk: id(&tok.specials.unk),
        pad: id(&tok.specials.pad),
    })
}

/// Whether byte-level BPE with `ranks` turns the characters of `token`
/// into `token` itself: each step merges the adjacent pair of lowest rank.
fn reached_by_merges(token: &str, ranks: &HashMap<(&str, &str), usize>) -> bool {
    let mut pieces: Vec<String> = token.chars().map(String::from).collect();
    while pieces.len() > 1 {
        let best = (0..pieces.len() - 1)
            .filter_map(|i| ranks.get(&(pieces[i].as_str(), pieces[i + 1].as_str())).map(|r| (*r, i)))
            .min();
        let Some((_, i)) = best else { return false };
        let merged = format!("{}{}", pieces[i], pieces[i + 1]);
        pieces.splice(i..i + 2, [merged]);
    }
    pieces.len() == 1
}

/// The text of a byte-level token (`ĠSalamÃ¨che` → ` Salamèche`), if its
/// bytes are UTF-8; `byte_of` inverts GPT-2's byte → character map.
fn decoded(token: &str, byte_of: &HashMap<char, u8>) -> Option<String> {
    let bytes: Option<Vec<u8>> = token.chars().map(|c| byte_of.get(&c).copied()).collect();
    String::from_utf8(bytes?).ok()
}
