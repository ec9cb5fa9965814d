//! The GPT-2 byte-level BPE tokenizer, loaded as transformers loads it.
//!
//! From `tokenizer.json` when present; otherwise — as on the asi hub repos —
//! from `vocab.json` + `merges.txt` + `special_tokens_map.json`, built the way
//! transformers builds a GPT-2 tokenizer: byte-level BPE, no prefix space, the
//! ByteLevel pre-tokenizer and decoder, nothing added at BOS, specials registered
//! at their vocabulary ids.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde_json::Value;
use tokenizers::Tokenizer;

use crate::VocabError;

/// The HF tokenizer files of a model directory.
pub mod files {
    /// The self-describing tokenizer.
    pub const TOKENIZER_JSON: &str = "tokenizer.json";
    /// BPE vocabulary (hub layout of asi/gpt-fr-cased-*).
    pub const VOCAB_JSON: &str = "vocab.json";
    /// BPE merges.
    pub const MERGES_TXT: &str = "merges.txt";
    /// Names of the special tokens.
    pub const SPECIAL_TOKENS_MAP: &str = "special_tokens_map.json";
    /// Tokenizer class and options for transformers.
    pub const TOKENIZER_CONFIG: &str = "tokenizer_config.json";
}

/// The special tokens of a GPT-2 tokenizer, by role.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Specials {
    /// `<s>`.
    pub bos: Option<String>,
    /// `</s>`.
    pub eos: Option<String>,
    /// `<unk>`.
    pub unk: Option<String>,
    /// `<pad>`.
    pub pad: Option<String>,
    /// `<mask>`.
    pub mask: Option<String>,
}

impl Specials {
    fn from_map(value: &Value) -> Self {
        let get = |key: &str| -> Option<String> {
            match value.get(key)? {
                Value::String(s) => Some(s.clone()),
                Value::Object(o) => o.get("content").and_then(Value::as_str).map(String::from),
                _ => None,
            }
        };
        Self {
            bos: get("bos_token"),
            eos: get("eos_token"),
            unk: get("unk_token"),
            pad: get("pad_token"),
            mask: get("mask_token"),
        }
    }

    /// Every special token, in the order bos, pad, eos, unk, mask.
    pub fn all(&self) -> Vec<&str> {
        [&self.bos, &self.pad, &self.eos, &self.unk, &self.mask].into_iter().flatten().map(String::as_str).collect()
    }
}

/// A loaded tokenizer with exact decoding.
#[derive(Clone)]
pub struct Tok {
    inner: Tokenizer,
    /// Where it was read from.
    pub origin: PathBuf,
    /// The special tokens by role.
    pub specials: Specials,
}

impl std::fmt::Debug for Tok {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tok").field("origin", &self.origin).field("vocab", &self.vocab_size()).finish()
    }
}

fn bad(path: &Path, reason: impl std::fmt::Display) -> VocabError {
    VocabError::Tokenizer { path: path.to_path_buf(), reason: reason.to_string() }
}

/// The tokenizer files of `dir` that exist (for input hashing).
pub fn tokenizer_files(dir: &Path) -> Vec<PathBuf> {
    [files::TOKENIZER_JSON, files::VOCAB_JSON, files::MERGES_TXT, files::SPECIAL_TOKENS_MAP, files::TOKENIZER_CONFIG]
        .iter()
        .map(|f| dir.join(f))
        .filter(|p| p.is_file())
        .collect()
}

fn read_json(path: &Path) -> Result<Value, VocabError> {
    let text = std::fs::read_to_string(path).map_err(|e| bad(path, format!("cannot read ({e})")))?;
    serde_json::from_str(&text).map_err(|e| bad(path, format!("not valid JSON ({e})")))
}

impl Tok {
    /// Loads the tokenizer of a model directory (see the module docs).
    pub fn from_dir(dir: &Path) -> Result<Self, VocabError> {
        let specials_path = dir.join(files::SPECIAL_TOKENS_MAP);
        let specials =
            if specials_path.is_file() { Specials::from_map(&read_json(&specials_path)?) } else { Specials::default() };
        let json = dir.join(files::TOKENIZER_JSON);
        if json.is_file() {
            let text = std::fs::read_to_string(&json).map_err(|e| bad(&json, format!("cannot read ({e})")))?;
            return Self::from_json_str(&text, &json, specials);
        }
        let (vocab, merges) = (dir.join(files::VOCAB_JSON), dir.join(files::MERGES_TXT));
        if !vocab.is_file() || !merges.is_file() {
            return Err(VocabError::NoTokenizer { dir: dir.to_path_buf() });
        }
        if specials.all().is_empty() {
            return Err(bad(
                &specials_path,
                "missing or names no special token; a GPT-2 repo needs special_tokens_map.json with bos/eos tokens",
            ));
        }
        let vocab_map: HashMap<String, u32> = serde_json::from_value(read_json(&vocab)?)
            .map_err(|e| bad(&vocab, format!("not a token → id map ({e})")))?;
        let merges_text = std::fs::read_to_string(&merges).map_err(|e| bad(&merges, format!("cannot read ({e})")))?;
        let mut merge_pairs = Vec::new();
        for (i, line) in merges_text.lines().enumerate() {
            if line.starts_with("#version") || line.is_empty() {
                continue;
            }
            let parts: Vec<&str> = line.split(' ').collect();
            let [a, b] = parts.as_slice() else {
                return Err(bad(&merges, format!("line {} is not a pair of tokens: {line:?}", i + 1)));
            };
            for piece in [a, b] {
                if !vocab_map.contains_key(*piece) {
                    return Err(bad(
                        &merges,
                        format!("line {}: `{piece}` is not in vocab.json; the files do not belong together", i + 1),
                    ));
                }
            }
            merge_pairs.push(serde_json::json!([a, b]));
        }
        // The JSON transformers' GPT2Tokenizer builds (see module docs).
        let mut ordered: Vec<(&String, &u32)> = vocab_map.iter().collect();
        ordered.sort_by_key(|(_, id)| **id);
        let vocab_json: serde_json::Map<String, Value> =
            ordered.into_iter().map(|(t, id)| (t.clone(), Value::from(*id))).collect();
        let added: Vec<Value> = specials
            .all()
            .into_iter()
            .filter_map(|s| vocab_map.get(s).map(|id| (s, *id)))
            .map(|(s, id)| serde_json::json!({"id": id, "content": s, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
            .collect();
        let tokenizer = serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
            "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {
                "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": vocab_json, "merges": merge_pairs,
            }
        });
        Self::from_json_str(&tokenizer.to_string(), &vocab, specials)
    }

    /// Parses `tokenizer.json` text.
    pub fn from_json_str(text: &str, origin: &Path, specials: Specials) -> Result<Self, VocabError> {
        let inner = Tokenizer::from_str(text).map_err(|e| bad(origin, format!("not a valid tokenizer ({e})")))?;
        let mut tok = Self { inner, origin: origin.to_path_buf(), specials };
        if tok.specials.all().is_empty() {
            // tokenizer.json alone: take the specials from its added tokens.
            let added = tok.inner.get_added_tokens_decoder();
            let find = |name: &str| added.values().find(|t| t.special && t.content == name).map(|t| t.content.clone());
            tok.specials = Specials {
                bos: find("<s>"),
                eos: find("</s>"),
                unk: find("<unk>"),
                pad: find("<pad>"),
                mask: find("<mask>"),
            };
        }
        Ok(tok)
    }

    /// The underlying HF tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// The tokenizer as `tokenizer.json` text.
    pub fn to_json(&self) -> Result<String, VocabError> {
        self.inner.to_string(true).map_err(|e| bad(&self.origin, e))
    }

    /// Vocabulary size, added tokens included (the embedding rows it needs).
    pub fn vocab_size(&self) -> usize {
        let max_id = self.inner.get_vocab(true).values().copied().max().map_or(0, |m| m as usize + 1);
        max_id.max(self.inner.get_vocab_size(true))
    }

    /// The id of a token string (byte-level form), or of an added/special token.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The byte-level string of an id.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The id of a special token role (`eos`, …), if the tokenizer has it.
    pub fn special_id(&self, token: Option<&String>) -> Option<u32> {
        token.and_then(|t| self.token_to_id(t))
    }

    /// Ids of `text`, without special tokens (nothing is added at BOS anyway).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, VocabError> {
        Ok(self.inner.encode(text, false).map_err(|e| bad(&self.origin, e))?.get_ids().to_vec())
    }

    /// Ids and their byte-level strings.
    pub fn encode_pieces(&self, text: &str) -> Result<(Vec<u32>, Vec<String>), VocabError> {
        let encoding = self.inner.encode(text, false).map_err(|e| bad(&self.origin, e))?;
        Ok((encoding.get_ids().to_vec(), encoding.get_tokens().to_vec()))
    }

    /// Text of `ids`, exact even for added tokens with accents: added tokens are
    /// emitted verbatim and only the runs of ordinary ids go through the
    /// byte-level decoder (transformers' own decode turns `Salamèche` into
    /// `Salam�che` there).
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, VocabError> {
        let added = self.inner.get_added_tokens_decoder();
        let mut out = String::new();
        let mut run: Vec<u32> = Vec::new();
        let flush = |run: &mut Vec<u32>, out: &mut String| -> Result<(), VocabError> {
            if !run.is_empty() {
                out.push_str(&self.inner.decode(run, skip_special).map_err(|e| bad(&self.origin, e))?);
                run.clear();
            }
            Ok(())
        };
        for &id in ids {
            match added.get(&id) {
                Some(token) => {
                    flush(&mut run, &mut out)?;
                    if !(skip_special && token.special) {
                        out.push_str(&token.content);
                    }
                }
                None => run.push(id),
            }
        }
        flush(&mut run, &mut out)?;
        Ok(out)
    }
}
