//! From tokenised articles to training examples and batches.
//!
//! - course (`pad_in_loss = true`): each article cut or padded to `max_length`
//!   with the pad id (`</s>`), `labels = input_ids` — pads included in the loss.
//! - recommended (`pad_in_loss = false`): the same, but a `</s>` closes each
//!   article that fits, and the padding after it is left out of the loss.
//! - packing: every article followed by `</s>`, concatenated, cut into full
//!   `max_length` blocks (the remainder dropped), as HF `run_clm` does.

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
    /// Pack articles into full blocks.
    pub packing: bool,
}

/// Builds the examples of tokenised `articles`.
pub fn build(articles: &[Vec<u32>], options: ExampleOptions) -> Vec<Example> {
    let n = options.max_length;
    if options.packing {
        let stream: Vec<u32> = articles.iter().flat_map(|a| a.iter().copied().chain([options.eos_id])).collect();
        return stream
            .chunks_exact(n)
            .map(|block| Example {
                input_ids: block.to_vec(),
                labels: block.iter().map(|&t| t as i64).collect(),
                attention: vec![true; n],
            })
            .collect();
    }
    articles
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
            Example { input_ids: ids, labels, attention }
        })
        .collect()
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

    fn options(pad_in_loss: bool, packing: bool) -> ExampleOptions {
        ExampleOptions { max_length: 5, pad_id: 2, eos_id: 2, pad_in_loss, packing }
    }

    #[test]
    fn course_pads_and_trains_on_pads() {
        let ex = build(&[vec![10, 11, 12], vec![20, 21, 22, 23, 24, 25, 26]], options(true, false));
        assert_eq!(ex[0].input_ids, [10, 11, 12, 2, 2]);
        assert_eq!(ex[0].labels, [10, 11, 12, 2, 2], "labels = input_ids, pads included");
        assert_eq!(ex[0].attention, [true, true, true, false, false]);
        assert_eq!(ex[1].input_ids, [20, 21, 22, 23, 24], "cut at max_length");
        assert_eq!(label_tokens(&[&ex[0], &ex[1]]), 4 + 4);
        assert_eq!(hf_items_in_batch(&[&ex[0], &ex[1]]), 5 + 5, "HF counts position 0 too");
    }

    #[test]
    fn recommended_closes_with_eos_and_masks_padding() {
        let ex = build(&[vec![10, 11], vec![20, 21, 22, 23, 24, 25]], options(false, false));
        assert_eq!(ex[0].input_ids, [10, 11, 2, 2, 2]);
        assert_eq!(ex[0].labels, [10, 11, 2, IGNORE, IGNORE]);
        assert_eq!(ex[0].attention, [true, true, true, false, false]);
        assert_eq!(ex[1].labels, [20, 21, 22, 23, 24], "a cut article has no </s>");
        assert_eq!(label_tokens(&[&ex[0]]), 2, "targets 11 and </s>");
    }

    #[test]
    fn packing_fills_blocks_without_padding() {
        let ex = build(&[vec![1, 1, 1], vec![3, 3], vec![4, 4, 4, 4]], options(false, true));
        // stream: 1 1 1 2 3 3 2 4 4 4 4 2 → two blocks of 5, remainder dropped.
        assert_eq!(ex.len(), 2);
        assert_eq!(ex[0].input_ids, [1, 1, 1, 2, 3]);
        assert_eq!(ex[1].input_ids, [3, 2, 4, 4, 4]);
        assert!(ex.iter().all(|e| e.attention.iter().all(|&a| a)));
        assert_eq!(ex[1].labels, [3, 2, 4, 4, 4]);
    }
}
