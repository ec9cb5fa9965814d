//! From tokenised articles to training examples and batches.
//!
//! - course (`pad_in_loss = true`): each article cut or padded to `max_length`
//!   with the pad id (`</s>`), `labels = input_ids` — pads included in the loss.
//! - recommended (`pad_in_loss = false`): the same, but a `</s>` closes each
//!   article that fits, and the padding after it is left out of the loss.
//! - `packing = true`: every article followed by `</s>`, concatenated, cut
//!   into full `max_length` blocks (the remainder dropped), as HF `run_clm`
//!   does; the articles of a block attend to each other.
//! - `packing = "documents"`: every token trains. The articles, each closed by
//!   `</s>`, laid end to end in blocks of `max_length`; one that does not fit
//!   goes on in the next block (after `window_overlap` of its tokens again, as
//!   context out of the loss); position ids restart at each article, which
//!   keeps the articles of a block apart; only the last block is padded.

use serde::{Deserialize, Serialize};

/// Label value left out of the loss (as in transformers).
pub const IGNORE: i64 = -100;

/// One training sequence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    /// Token ids, `max_length` long.
    pub input_ids: Vec<u32>,
    /// Targets, `IGNORE` where no loss is taken (shifted inside the loss).
    pub labels: Vec<i64>,
    /// Real tokens (attention mask 1); padding is 0.
    pub attention: Vec<bool>,
    /// When the example packs several articles: each token's position in its
    /// own article (HF's `position_ids`, restarting at 0), which also keeps
    /// the articles' attention apart. `None`: one article, positions `0 ..`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positions: Option<Vec<u32>>,
}

/// How articles share examples (`train.packing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Packing {
    /// One article per example, cut at `max_length` (`false`, the course).
    #[default]
    None,
    /// HF `run_clm`'s blocks, articles attending to each other (`true`).
    Concatenated,
    /// Every token, each article to itself (`"documents"`).
    Documents,
}

impl Serialize for Packing {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Packing::None => serializer.serialize_bool(false),
            Packing::Concatenated => serializer.serialize_bool(true),
            Packing::Documents => serializer.serialize_str("documents"),
        }
    }
}

impl<'de> Deserialize<'de> for Packing {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Spelling {
            Flag(bool),
            Name(String),
        }
        match Spelling::deserialize(deserializer)? {
            Spelling::Flag(false) => Ok(Packing::None),
            Spelling::Flag(true) => Ok(Packing::Concatenated),
            Spelling::Name(name) if name == "documents" => Ok(Packing::Documents),
            Spelling::Name(name) => Err(serde::de::Error::custom(format!(
                "`{name}`: use false (one article per example), true (run_clm blocks) or \"documents\" (every token, articles kept apart)"
            ))),
        }
    }
}

/// How examples are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExampleOptions {
    /// Tokens per example.
    pub max_length: usize,
    /// The padding id (the course: `</s>`).
    pub pad_id: u32,
    /// `</s>`.
    pub eos_id: u32,
    /// Train on the padding too (the course's defect).
    pub pad_in_loss: bool,
    /// How articles share examples.
    pub packing: Packing,
    /// With `Packing::Documents`: tokens of an article repeated as context at
    /// the start of its next block (out of the loss).
    pub window_overlap: usize,
}

/// The examples of a corpus, and how much of it they train on.
#[derive(Debug, Clone, PartialEq)]
pub struct Built {
    /// The examples.
    pub examples: Vec<Example>,
    /// Article tokens that are a next-token target in some example.
    pub trained_tokens: usize,
    /// Article tokens that can be one: all but each article's first.
    pub corpus_tokens: usize,
}

impl Built {
    /// `trained_tokens / corpus_tokens` (1 for an empty corpus).
    pub fn coverage(&self) -> f64 {
        if self.corpus_tokens == 0 { 1.0 } else { self.trained_tokens as f64 / self.corpus_tokens as f64 }
    }
}

/// Builds the examples of tokenised `articles`.
pub fn build(articles: &[Vec<u32>], options: ExampleOptions) -> Built {
    let corpus_tokens = articles.iter().map(|a| a.len().saturating_sub(1)).sum();
    let (examples, trained_tokens) = match options.packing {
        Packing::None => one_per_example(articles, options),
        Packing::Concatenated => concatenated(articles, options),
        Packing::Documents => documents(articles, options),
    };
    Built { examples, trained_tokens, corpus_tokens }
}

/// One article per example, cut or padded; the article tokens trained.
fn one_per_example(articles: &[Vec<u32>], options: ExampleOptions) -> (Vec<Example>, usize) {
    let n = options.max_length;
    let examples: Vec<Example> = articles
        .iter()
        .filter(|a| !a.is_empty())
        .map(|article| {
            let mut ids: Vec<u32> = article.iter().copied().take(n).collect();
            let mut labels: Vec<i64> = ids.iter().map(|&t| t as i64).collect();
            if !options.pad_in_loss && ids.len() < n {
                ids.push(options.eos_id); // the article ends here: learn to stop
                labels.push(options.eos_id as i64);
            }
            let real = ids.len();
            ids.resize(n, options.pad_id);
            labels.resize(n, if options.pad_in_loss { options.pad_id as i64 } else { IGNORE });
            let attention = (0..n).map(|i| i < real).collect();
            Example { input_ids: ids, labels, attention, positions: None }
        })
        .collect();
    let trained = articles.iter().map(|a| a.len().min(n).saturating_sub(1)).sum();
    (examples, trained)
}

/// HF `run_clm`: the articles and their `</s>` as one stream cut into full
/// blocks, the remainder dropped.
fn concatenated(articles: &[Vec<u32>], options: ExampleOptions) -> (Vec<Example>, usize) {
    let n = options.max_length;
    // Each stream token, and whether it is an article token after its article's first.
    let stream: Vec<(u32, bool)> = articles
        .iter()
        .flat_map(|a| a.iter().enumerate().map(|(i, &t)| (t, i > 0)).chain([(options.eos_id, false)]))
        .collect();
    let blocks = stream.chunks_exact(n);
    // A block's first token is no target: nothing before it in the block.
    let trained = blocks.clone().map(|block| block[1..].iter().filter(|(_, counts)| *counts).count()).sum();
    let examples = blocks
        .map(|block| Example {
            input_ids: block.iter().map(|(t, _)| *t).collect(),
            labels: block.iter().map(|(t, _)| *t as i64).collect(),
            attention: vec![true; n],
            positions: None,
        })
        .collect();
    (examples, trained)
}

/// Every token, each article to itself: see the module's documentation.
fn documents(articles: &[Vec<u32>], options: ExampleOptions) -> (Vec<Example>, usize) {
    let n = options.max_length;
    let overlap = options.window_overlap.min(n.saturating_sub(2));
    let empty = || Example { input_ids: vec![], labels: vec![], attention: vec![], positions: Some(vec![]) };
    let mut examples = Vec::new();
    let mut block = empty();
    let mut trained = 0;
    for article in articles.iter().filter(|a| !a.is_empty()) {
        let tokens: Vec<u32> = article.iter().copied().chain([options.eos_id]).collect();
        // The article's next token to place.
        let mut next = 0;
        while next < tokens.len() {
            if block.input_ids.len() == n {
                examples.push(std::mem::replace(&mut block, empty()));
            }
            // A part that goes on from an earlier block repeats some context first.
            let context = if next == 0 { 0 } else { overlap.min(next) };
            let room = n - block.input_ids.len();
            if next > 0 && room <= context {
                // No room for anything new after the context: pad this block out.
                pad_out(&mut block, n, options.pad_id);
                continue;
            }
            let start = next - context;
            let end = (start + room).min(tokens.len());
            let positions = block.positions.as_mut().expect("a packed block has positions");
            for (i, &token) in tokens[start..end].iter().enumerate() {
                let index = start + i;
                // The context and a part's first token are no targets: the
                // token before it in the block belongs to another document.
                let target = i > 0 && index >= next;
                block.input_ids.push(token);
                block.labels.push(if target { token as i64 } else { IGNORE });
                block.attention.push(true);
                positions.push(i as u32);
                trained += usize::from(target && index < article.len());
            }
            next = end;
        }
    }
    if !block.input_ids.is_empty() {
        pad_out(&mut block, n, options.pad_id);
        examples.push(block);
    }
    (examples, trained)
}

/// Fills the rest of a packed block with padding (out of the loss, its own
/// document so that the position ids stay valid).
fn pad_out(block: &mut Example, n: usize, pad_id: u32) {
    let positions = block.positions.as_mut().expect("a packed block has positions");
    for i in 0..n - block.input_ids.len() {
        block.input_ids.push(pad_id);
        block.labels.push(IGNORE);
        block.attention.push(false);
        positions.push(i as u32);
    }
}

/// The positions that are next-token targets in a batch: labels shifted by one
/// (position 0 is never a target), `IGNORE` excluded.
pub fn label_tokens(examples: &[&Example]) -> usize {
    examples.iter().map(|e| e.labels[1..].iter().filter(|&&l| l != IGNORE).count()).sum()
}

/// HF `Trainer`'s `num_items_in_batch` for GPT-2, the divisor of the training
/// loss: every label that is not `IGNORE`, position 0 included (transformers
/// counts before the shift for models whose loss type it does not resolve, as
/// `GPT2LMHeadModel`). The logged loss is therefore HF's, slightly below the mean
/// over targets (by one position per sequence); validation uses the exact mean.
pub fn hf_items_in_batch(examples: &[&Example]) -> usize {
    examples.iter().map(|e| e.labels.iter().filter(|&&l| l != IGNORE).count()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(pad_in_loss: bool, packing: Packing) -> ExampleOptions {
        ExampleOptions { max_length: 5, pad_id: 2, eos_id: 2, pad_in_loss, packing, window_overlap: 0 }
    }

    #[test]
    fn course_pads_and_trains_on_pads() {
        let built = build(&[vec![10, 11, 12], vec![20, 21, 22, 23, 24, 25, 26]], options(true, Packing::None));
        let ex = &built.examples;
        assert_eq!(ex[0].input_ids, [10, 11, 12, 2, 2]);
        assert_eq!(ex[0].labels, [10, 11, 12, 2, 2], "labels = input_ids, pads included");
        assert_eq!(ex[0].attention, [true, true, true, false, false]);
        assert_eq!(ex[1].input_ids, [20, 21, 22, 23, 24], "cut at max_length");
        assert_eq!(label_tokens(&[&ex[0], &ex[1]]), 4 + 4);
        assert_eq!(hf_items_in_batch(&[&ex[0], &ex[1]]), 5 + 5, "HF counts position 0 too");
        assert_eq!((built.trained_tokens, built.corpus_tokens), (2 + 4, 2 + 6), "the cut tail never trains");
    }

    #[test]
    fn recommended_closes_with_eos_and_masks_padding() {
        let ex = build(&[vec![10, 11], vec![20, 21, 22, 23, 24, 25]], options(false, Packing::None)).examples;
        assert_eq!(ex[0].input_ids, [10, 11, 2, 2, 2]);
        assert_eq!(ex[0].labels, [10, 11, 2, IGNORE, IGNORE]);
        assert_eq!(ex[0].attention, [true, true, true, false, false]);
        assert_eq!(ex[1].labels, [20, 21, 22, 23, 24], "a cut article has no </s>");
        assert_eq!(label_tokens(&[&ex[0]]), 2, "targets 11 and </s>");
    }

    #[test]
    fn packing_fills_blocks_without_padding() {
        let built = build(&[vec![1, 1, 1], vec![3, 3], vec![4, 4, 4, 4]], options(false, Packing::Concatenated));
        let ex = &built.examples;
        // stream: 1 1 1 2 3 3 2 4 4 4 4 2 → two blocks of 5, remainder dropped.
        assert_eq!(ex.len(), 2);
        assert_eq!(ex[0].input_ids, [1, 1, 1, 2, 3]);
        assert_eq!(ex[1].input_ids, [3, 2, 4, 4, 4]);
        assert!(ex.iter().all(|e| e.attention.iter().all(|&a| a)));
        assert_eq!(ex[1].labels, [3, 2, 4, 4, 4]);
        // Targets: block 0's 1 1 (not its first), block 1's 4 4 4 (not 3, 2, or the first 4 of its article).
        assert_eq!((built.trained_tokens, built.corpus_tokens), (2 + 2, 2 + 1 + 3));
    }

    #[test]
    fn documents_train_every_token_each_article_to_itself() {
        let articles = [vec![10, 11, 12], vec![20, 21], vec![30, 31, 32, 33, 34, 35, 36]];
        let built = build(&articles, options(false, Packing::Documents));
        let ex = &built.examples;
        // Stream: 10 11 12 </s> | 20 21 </s> | 30 31 … 36 </s>, in blocks of five.
        assert_eq!(ex.len(), 3, "no padding: 15 tokens, three blocks");
        assert_eq!(ex[0].input_ids, [10, 11, 12, 2, 20]);
        assert_eq!(ex[0].labels, [IGNORE, 11, 12, 2, IGNORE], "a document's first token is no target");
        assert_eq!(ex[0].positions.as_deref(), Some(&[0, 1, 2, 3, 0][..]));
        assert_eq!(ex[1].input_ids, [21, 2, 30, 31, 32], "20 21 goes on in the next block");
        assert_eq!(ex[1].labels, [IGNORE, 2, IGNORE, 31, 32], "21 starts a block: no token before it");
        assert_eq!(ex[1].positions.as_deref(), Some(&[0, 1, 0, 1, 2][..]));
        assert_eq!(ex[2].input_ids, [33, 34, 35, 36, 2]);
        assert_eq!(ex[2].labels, [IGNORE, 34, 35, 36, 2]);
        assert!(ex.iter().all(|e| e.attention.iter().all(|&a| a)));
        // 11 12 · (20 first, 21 cut) · 31 32 34 35 36 (30 first, 33 cut).
        assert_eq!((built.trained_tokens, built.corpus_tokens), (2 + 5, 2 + 1 + 6));
    }

    #[test]
    fn an_overlap_repeats_context_out_of_the_loss_and_then_every_token_trains() {
        let articles = [vec![30, 31, 32, 33, 34, 35, 36, 37]];
        let built = build(&articles, ExampleOptions { window_overlap: 2, ..options(false, Packing::Documents) });
        let ex = &built.examples;
        assert_eq!(ex[0].input_ids, [30, 31, 32, 33, 34]);
        assert_eq!(ex[1].input_ids, [33, 34, 35, 36, 37], "two tokens of context");
        assert_eq!(ex[1].labels, [IGNORE, IGNORE, 35, 36, 37]);
        assert_eq!(ex[2].input_ids, [36, 37, 2, 2, 2], "the </s> after its context, then padding");
        assert_eq!(ex[2].labels, [IGNORE, IGNORE, 2, IGNORE, IGNORE]);
        assert_eq!(ex[2].attention, [true, true, true, false, false]);
        assert_eq!(built.coverage(), 1.0);
    }

    #[test]
    fn packing_reads_false_true_or_documents_and_writes_them_back() {
        for (text, packing) in
            [("false", Packing::None), ("true", Packing::Concatenated), ("\"documents\"", Packing::Documents)]
        {
            assert_eq!(serde_json::from_str::<Packing>(text).unwrap(), packing);
            assert_eq!(serde_json::to_string(&packing).unwrap(), text);
        }
        let err = serde_json::from_str::<Packing>("\"blocks\"").unwrap_err().to_string();
        assert!(err.contains("`blocks`") && err.contains("\"documents\""), "{err}");
    }
}
