//! How the names tokenise (exploration notebook §3), before and after.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::extend::{AddedName, Form};
use crate::tokenizer::Tok;
use crate::{VocabError, VocabInfo};

/// One name's tokens in the base tokenizer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NameStat {
    /// The name.
    pub name: String,
    /// Byte-level pieces at text start.
    pub start: Vec<String>,
    /// Byte-level pieces after a space.
    pub space: Vec<String>,
}

/// The vocab stage's headline numbers (stored in the manifest's `stats`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VocabStats {
    /// Distinct names.
    pub names: usize,
    /// Names that are one token at text start (the course's check).
    pub single_start: usize,
    /// Names split at text start.
    pub split_start: usize,
    /// Names that are one token after a space.
    pub single_space: usize,
    /// Names split after a space.
    pub split_space: usize,
    /// Number of names by token count at text start.
    pub start_histogram: BTreeMap<usize, usize>,
    /// Number of names by token count after a space.
    pub space_histogram: BTreeMap<usize, usize>,
    /// The most split names (text start), most pieces first.
    pub most_split: Vec<NameStat>,
    /// The notebook's examples.
    pub examples: Vec<NameStat>,
    /// Tokens added.
    pub added: usize,
    /// Tokens added for the text-start form.
    pub added_start: usize,
    /// Tokens added for the after-a-space form.
    pub added_space: usize,
    /// Vocabulary size before.
    pub base_vocab_size: usize,
    /// Vocabulary size after.
    pub vocab_size: usize,
    /// Other words whose tokens changed.
    pub collateral_words: usize,
    /// Mean tokens per training article, base tokenizer.
    pub tokens_per_article_before: f64,
    /// Mean tokens per training article, extended tokenizer.
    pub tokens_per_article_after: f64,
}

/// The notebook's example names (exploration §3).
const EXAMPLES: [&str; 6] = ["Pikachu", "Dracaufeu", "Bulbizarre", "Salamèche", "Mewtwo", "Rondoudou"];

/// The first of `words` that is one token at text start, with its id.
pub fn reference_word(tok: &Tok, words: &[String]) -> Result<Option<(String, u32)>, VocabError> {
    for word in words {
        if let [id] = tok.encode(word)?.as_slice() {
            return Ok(Some((word.clone(), *id)));
        }
    }
    Ok(None)
}

impl VocabStats {
    /// The statistics of one extension.
    pub fn compute(
        base: &Tok,
        extended: &Tok,
        names: &[String],
        added: &[AddedName],
        texts: &[&str],
        collateral_words: usize,
        info: &VocabInfo,
    ) -> Result<Self, VocabError> {
        let mut seen = std::collections::HashSet::new();
        let mut per_name = Vec::new();
        for name in names.iter().filter(|n| seen.insert(n.as_str())) {
            per_name.push(NameStat {
                name: name.clone(),
                start: base.encode_pieces(name)?.1,
                space: base.encode_pieces(&format!(" {name}"))?.1,
            });
        }
        let mut stats = Self { names: per_name.len(), ..Default::default() };
        for stat in &per_name {
            *stats.start_histogram.entry(stat.start.len()).or_default() += 1;
            *stats.space_histogram.entry(stat.space.len()).or_default() += 1;
        }
        stats.single_start = per_name.iter().filter(|s| s.start.len() == 1).count();
        stats.split_start = stats.names - stats.single_start;
        stats.single_space = per_name.iter().filter(|s| s.space.len() == 1).count();
        stats.split_space = stats.names - stats.single_space;
        let mut most = per_name.clone();
        most.sort_by(|a, b| b.start.len().cmp(&a.start.len()).then(a.name.cmp(&b.name)));
        stats.most_split = most.into_iter().take(15).collect();
        stats.examples = EXAMPLES
            .iter()
            .map(|name| -> Result<NameStat, VocabError> {
                Ok(NameStat {
                    name: name.to_string(),
                    start: base.encode_pieces(name)?.1,
                    space: base.encode_pieces(&format!(" {name}"))?.1,
                })
            })
            .collect::<Result<_, _>>()?;
        stats.added = added.len();
        stats.added_start = added.iter().filter(|a| a.form == Form::Start).count();
        stats.added_space = added.iter().filter(|a| a.form == Form::Space).count();
        stats.base_vocab_size = info.base_vocab_size;
        stats.vocab_size = info.vocab_size;
        stats.collateral_words = collateral_words;
        if !texts.is_empty() {
            let count = |tok: &Tok| -> Result<f64, VocabError> {
                let mut total = 0usize;
                for text in texts {
                    total += tok.encode(text)?.len();
                }
                Ok(total as f64 / texts.len() as f64)
            };
            stats.tokens_per_article_before = count(base)?;
            stats.tokens_per_article_after = count(extended)?;
        }
        Ok(stats)
    }

    /// The notebook's tables.
    pub fn summary(&self) -> String {
        let line = "═".repeat(60);
        let mut out = format!("{line}\nHow the tokenizer splits the Pokémon names\n{line}\n");
        for e in &self.examples {
            let status = if e.start.len() == 1 { "1 token".to_string() } else { format!("{} tokens", e.start.len()) };
            out += &format!("  {:<11} → {:?} ({status}); after a space: {:?}\n", e.name, e.start, e.space);
        }
        out += &format!(
            "\nNames: {}\n  one token at text start : {:>5}   split: {:>5}\n  one token after a space : {:>5}   split: {:>5}\n",
            self.names, self.single_start, self.split_start, self.single_space, self.split_space
        );
        out += "\nMost split (text start):\n";
        for s in self.most_split.iter().take(8) {
            out += &format!("  {:<16} {} tokens {:?}\n", s.name, s.start.len(), s.start);
        }
        out += &format!(
            "\nAdded tokens: {} ({} at text start, {} after a space); vocabulary {} → {}\n",
            self.added, self.added_start, self.added_space, self.base_vocab_size, self.vocab_size
        );
        out += &format!(
            "Tokens per training article: {:.1} → {:.1}; other words whose tokens changed: {}\n",
            self.tokens_per_article_before, self.tokens_per_article_after, self.collateral_words
        );
        out
    }
}
