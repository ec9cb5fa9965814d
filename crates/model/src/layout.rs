//! What each position of a batch attends to besides the causal order: HF's
//! `attention_mask` (padding) and, when several documents share a sequence,
//! its `position_ids` restarting at each document, as transformers'
//! `DataCollatorWithFlattening` gives them.

use burn::prelude::*;
use burn::tensor::Bool;

/// Several documents packed in each sequence of a batch `[b, t]`: every
/// position's index in its own document (0 where a document starts). A query
/// sees only the keys of its document (block-diagonal causal attention) and
/// takes the position embedding of its index in it, so that a packed block
/// computes what its documents computed one by one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Documents {
    positions: Vec<u32>,
    t: usize,
}

impl Documents {
    /// From the position ids of a batch, row after row, `t` per row.
    ///
    /// # Panics
    /// When a row does not start a document, or a position neither starts
    /// one (0) nor follows its predecessor (+1): the ids of no packing.
    pub fn new(positions: Vec<u32>, t: usize) -> Self {
        assert!(t > 0 && positions.len().is_multiple_of(t), "{} position ids in rows of {t}", positions.len());
        for row in positions.chunks(t) {
            assert_eq!(row[0], 0, "a row starts a document");
            for pair in row.windows(2) {
                assert!(pair[1] == 0 || pair[1] == pair[0] + 1, "position ids restart at 0 or count on: {pair:?}");
            }
        }
        Self { positions, t }
    }

    /// The first key that query `i` of row `row` sees: where its document starts.
    pub fn first_key(&self, row: usize, i: usize) -> usize {
        i - self.positions[row * self.t + i] as usize
    }

    /// `[b, t, t]`, true where key `j` lies in an earlier document than query
    /// `i` (later keys are hidden by the causal order anyway).
    pub fn earlier_documents<B: Backend>(&self, device: &B::Device) -> Tensor<B, 3, Bool> {
        let (t, b) = (self.t, self.positions.len() / self.t);
        let hidden: Vec<bool> = (0..b)
            .flat_map(|row| (0..t).flat_map(move |i| (0..t).map(move |j| (row, i, j))))
            .map(|(row, i, j)| j < self.first_key(row, i))
            .collect();
        Tensor::from_data(TensorData::new(hidden, [b, t, t]), device)
    }

    /// The position ids as a tensor `[b, t]`.
    pub fn tensor<B: Backend>(&self, device: &B::Device) -> Tensor<B, 2, Int> {
        let ids: Vec<i64> = self.positions.iter().map(|&p| p as i64).collect();
        Tensor::from_data(TensorData::new(ids, [self.positions.len() / self.t, self.t]), device)
    }
}

/// What the queries of a batch see besides the causal order.
#[derive(Debug, Clone)]
pub struct Layout<B: Backend> {
    /// `[b, past + t]`, true at padding keys: no query sees them.
    pub pad: Option<Tensor<B, 2, Bool>>,
    /// The documents packed in each row, when rows hold several.
    pub documents: Option<Documents>,
}

impl<B: Backend> Layout<B> {
    /// One document per row, no padding.
    pub fn plain() -> Self {
        Self { pad: None, documents: None }
    }

    /// One document per row, `pad` hiding its padding keys.
    pub fn padded(pad: Option<Tensor<B, 2, Bool>>) -> Self {
        Self { pad, documents: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_query_starts_at_its_documents_first_key() {
        let docs = Documents::new(vec![0, 1, 2, 0, 1, 0, 0, 1, 2, 3, 4, 5], 6);
        let firsts: Vec<usize> =
            (0..2).flat_map(|r| (0..6).map(move |i| (r, i))).map(|(r, i)| docs.first_key(r, i)).collect();
        assert_eq!(firsts, [0, 0, 0, 3, 3, 5, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    #[should_panic(expected = "restart at 0 or count on")]
    fn ids_of_no_packing_are_refused() {
        Documents::new(vec![0, 1, 3], 3);
    }
}
