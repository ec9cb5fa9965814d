//! Adding the Pokémon names to the vocabulary.
//!
//! - `course`: exactly the course — every name that encodes to more than one
//!   token at text start becomes a plain added token with default options. Its
//!   known defects stay: the name after a space still splits (`Ġ` + name), the
//!   token also matches inside longer words (`Abo` in `Abonnement`), and
//!   transformers decodes accented added tokens wrongly.
//! - `recommended`: every split form of a name — at text start and after a
//!   space — becomes a real byte-level BPE vocabulary entry (`SalamÃ¨che`,
//!   `ĠSalamÃ¨che`). The BPE model looks whole pre-tokens up in the vocabulary
//!   first (`ignore_merges`), so a name is one token exactly when it stands as a
//!   word, never inside a longer one, and decodes exactly through the byte-level
//!   decoder. Names that GPT-2's pre-tokenizer cuts into several pieces
//!   (`M. Mime`, `Ho-Oh`, `Type:0`, `Nidoran♀`) are kept whole by a `Split`
//!   pre-tokenizer placed before the byte-level one; everything else is
//!   pre-tokenized exactly as before.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};

use crate::VocabError;
use crate::tokenizer::Tok;

/// Where a name stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Form {
    /// At text start: `Salamèche est…`.
    Start,
    /// After a space, the form that dominates running text: `… de Salamèche`.
    Space,
}

impl Form {
    /// The text of `name` in this form.
    pub fn text(self, name: &str) -> String {
        match self {
            Form::Start => name.to_string(),
            Form::Space => format!(" {name}"),
        }
    }
}

/// One token added for a name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddedName {
    /// The new id (a new embedding row).
    pub id: u32,
    /// The text the token stands for (`Salamèche` or ` Salamèche`).
    pub text: String,
    /// The name.
    pub name: String,
    /// Start or space form.
    pub form: Form,
    /// The ids the base tokenizer split this text into.
    pub pieces: Vec<u32>,
}

/// GPT-2's byte → printable character map (`bytes_to_unicode`).
pub fn byte_level(text: &str) -> String {
    text.bytes().map(byte_char).collect()
}

/// GPT-2's printable character for the byte `b`.
pub fn byte_char(b: u8) -> char {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
    if printable(b) {
        return char::from(b);
    }
    // The other bytes map, in order, to U+0100 and up.
    let rank = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(0x100 + rank).expect("a valid code point")
}

/// How many pre-tokens `text` is cut into by `tok`'s pre-tokenizer.
pub fn pre_tokens(tok: &Tok, text: &str) -> Result<Vec<String>, VocabError> {
    let mut pts = PreTokenizedString::from(text);
    if let Some(pre) = tok.inner().get_pre_tokenizer() {
        pre.pre_tokenize(&mut pts)
            .map_err(|e| VocabError::Tokenizer { path: tok.origin.clone(), reason: e.to_string() })?;
    }
    Ok(pts
        .get_splits(OffsetReferential::Original, OffsetType::Byte)
        .into_iter()
        .map(|(s, _, _)| s.to_string())
        .collect())
}

fn unique(names: &[String]) -> Vec<&String> {
    let mut seen = HashSet::new();
    names.iter().filter(|n| !n.is_empty() && seen.insert(n.as_str())).collect()
}

fn rebuild(base: &Tok, json: &Value) -> Result<Tok, VocabError> {
    Tok::from_json_str(&json.to_string(), &base.origin, base.specials.clone())
}

/// The course: plain added tokens for the names split at text start.
pub fn course(base: &Tok, names: &[String]) -> Result<(Tok, Vec<AddedName>), VocabError> {
    let mut json: Value = serde_json::from_str(&base.to_json()?).expect("the tokenizer serialises to JSON");
    let mut next = base.vocab_size() as u32;
    let mut added = Vec::new();
    let entries = json["added_tokens"].as_array_mut().expect("tokenizer.json has added_tokens");
    let existing: HashSet<String> = entries.iter().filter_map(|t| t["content"].as_str().map(String::from)).collect();
    for name in unique(names) {
        let pieces = base.encode(name)?;
        if pieces.len() <= 1 || existing.contains(name.as_str()) {
            continue;
        }
        // transformers' `add_tokens(str)`: AddedToken(normalized=True, special=False),
        // no single_word, no lstrip/rstrip.
        entries.push(json!({"id": next, "content": name, "single_word": false, "lstrip": false, "rstrip": false, "normalized": true, "special": false}));
        added.push(AddedName { id: next, text: name.clone(), name: name.clone(), form: Form::Start, pieces });
        next += 1;
    }
    Ok((rebuild(base, &json)?, added))
}

/// Escapes regex metacharacters (valid for Rust's regex and Oniguruma alike).
fn escape(text: &str) -> String {
    text.chars().map(|c| if c.is_ascii_punctuation() { format!("\\{c}") } else { c.to_string() }).collect()
}

/// GPT-2's pre-tokenization pattern, as in the byte-level pre-tokenizer.
const GPT2_PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// The pre-tokenizer that keeps `names` whole (at text start or after one space,
/// not inside a longer word) and otherwise splits like GPT-2's.
fn name_isolating_pre_tokenizer(names: &[&String]) -> Value {
    let mut sorted: Vec<&String> = names.to_vec();
    sorted.sort_by_key(|n| std::cmp::Reverse(n.chars().count())); // longest first
    let alternatives = sorted.iter().map(|n| escape(n)).collect::<Vec<_>>().join("|");
    let pattern =
        format!(r"(?: (?:{alternatives})|(?<![\p{{L}}\p{{N}}])(?:{alternatives}))(?![\p{{L}}\p{{N}}])|{GPT2_PATTERN}");
    json!({
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
        ]
    })
}

/// The recommended extension (see the module docs).
pub fn recommended(base: &Tok, names: &[String]) -> Result<(Tok, Vec<AddedName>), VocabError> {
    let mut json: Value = serde_json::from_str(&base.to_json()?).expect("the tokenizer serialises to JSON");
    if json["model"]["type"] != "BPE" {
        return Err(VocabError::Tokenizer { path: base.origin.clone(), reason: "not a BPE tokenizer".into() });
    }
    let names = unique(names);
    let mut next = base.vocab_size() as u32;
    let mut added = Vec::new();
    let mut multi_piece: Vec<&String> = Vec::new();
    {
        let vocab = json["model"]["vocab"].as_object_mut().expect("a BPE model has a vocab");
        for &name in &names {
            if pre_tokens(base, name)?.len() > 1 || pre_tokens(base, &format!(" {name}"))?.len() > 1 {
                multi_piece.push(name);
            }
            for form in [Form::Start, Form::Space] {
                let text = form.text(name);
                let pieces = base.encode(&text)?;
                if pieces.len() <= 1 {
                    continue;
                }
                let word = byte_level(&text);
                let id = match vocab.get(&word).and_then(Value::as_u64) {
                    Some(existing) => existing as u32, // in the vocabulary but not reached by the merges
                    None => {
                        vocab.insert(word, Value::from(next));
                        next += 1;
                        next - 1
                    }
                };
                added.push(AddedName { id, text, name: name.clone(), form, pieces });
            }
        }
    }
    json["model"]["ignore_merges"] = Value::Bool(true);
    if !multi_piece.is_empty() {
        json["pre_tokenizer"] = name_isolating_pre_tokenizer(&multi_piece);
    }
    // Added tokens (the specials) must not collide with the new vocabulary ids.
    let clash = json["added_tokens"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|t| t["id"].as_u64().is_some_and(|id| id >= base.vocab_size() as u64));
    if clash {
        return Err(VocabError::Tokenizer {
            path: base.origin.clone(),
            reason: "the base tokenizer already has added tokens beyond its vocabulary; start from the base model's own tokenizer".into(),
        });
    }
    let tok = rebuild(base, &json)?;
    Ok((tok, added))
}

/// Checks that every name is one token at text start and after a space in the
/// two course sentences, and that both decode exactly. Returns the failures.
pub fn round_trip_failures(tok: &Tok, names: &[String]) -> Result<Vec<String>, VocabError> {
    let mut failures = Vec::new();
    for name in unique(names) {
        for sentence in [format!("{name} est un Pokémon."), format!("Le Pokémon {name}, rare.")] {
            let ids = tok.encode(&sentence)?;
            let decoded = tok.decode(&ids, false)?;
            if decoded != sentence {
                failures.push(format!("{sentence:?} decodes as {decoded:?}"));
            }
        }
        for form in [Form::Start, Form::Space] {
            let text = form.text(name);
            let ids = tok.encode(&text)?;
            if ids.len() != 1 {
                failures.push(format!("{text:?} is {} tokens", ids.len()));
            }
        }
    }
    Ok(failures)
}

/// Distinct pre-tokens of `texts` (the base tokenizer's words, names excluded)
/// whose tokens differ between `base` and `extended`: what the extension changed
/// besides the names. Each pre-token is compared on its own text.
pub fn collateral(
    base: &Tok,
    extended: &Tok,
    texts: &[&str],
    names: &[String],
) -> Result<BTreeMap<String, usize>, VocabError> {
    let names: HashSet<&str> = names.iter().map(String::as_str).collect();
    let mut words: BTreeMap<String, usize> = BTreeMap::new();
    for text in texts {
        let mut pts = PreTokenizedString::from(*text);
        if let Some(pre) = base.inner().get_pre_tokenizer() {
            pre.pre_tokenize(&mut pts)
                .map_err(|e| VocabError::Tokenizer { path: base.origin.clone(), reason: e.to_string() })?;
        }
        for (_, (start, end), _) in pts.get_splits(OffsetReferential::Original, OffsetType::Byte) {
            let word = &text[start..end];
            if !names.contains(word.strip_prefix(' ').unwrap_or(word)) {
                *words.entry(word.to_string()).or_default() += 1;
            }
        }
    }
    let mut changed = BTreeMap::new();
    for (word, count) in words {
        if base.encode(&word)? != extended.encode(&word)? {
            changed.insert(word, count);
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_matches_gpt2_table() {
        assert_eq!(byte_level(" Salamèche"), "ĠSalamÃ¨che");
        assert_eq!(byte_level("Évoli"), "Ãīvoli");
        assert_eq!(byte_level("\n"), "Ċ");
        assert_eq!(byte_level("M. Mime"), "M.ĠMime");
        // All 256 bytes map to distinct characters.
        let all: HashSet<char> = (0..=255u8).map(byte_char).collect();
        assert_eq!(all.len(), 256);
    }

    #[test]
    fn escape_keeps_letters_and_symbols() {
        assert_eq!(escape("M. Mime"), "M\\. Mime");
        assert_eq!(escape("Type:0"), "Type\\:0");
        assert_eq!(escape("Nidoran♀"), "Nidoran♀");
        assert_eq!(escape("Ho-Oh"), "Ho\\-Oh");
    }
}
