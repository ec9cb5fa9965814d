//! The keys and values of the positions already seen, for generation: per
//! block, buffers with room for more positions, written in place at each
//! step ([`Gpt2Ops::write_positions`]) and read as views of their filled
//! positions.

use burn::prelude::*;

use crate::kernels::{CachedRow, Gpt2Ops};

/// One block's cached keys and values, if any.
pub(crate) type Slot<B> = Option<Positions<B>>;

/// Positions gained by a [`Positions`] buffer each time it is full: a step
/// writes its keys and values in place, and the cache is copied once every
/// this many positions instead of at every step.
const CACHE_GROWTH: usize = 64;

/// Keys and values `[b, h, capacity, hd]` each, of which the first `len`
/// positions are filled.
#[derive(Debug, Clone)]
pub(crate) struct Positions<B: Backend> {
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    len: usize,
}

impl<B: Gpt2Ops> Positions<B> {
    /// `k` and `v` `[b, h, t, hd]` added after the positions of `slot`:
    /// all its keys and values `[b, h, len + t, hd]` (views of its buffers).
    pub(crate) fn append(slot: &mut Slot<B>, k: Tensor<B, 4>, v: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 4>) {
        Self::push(slot, k, v).filled()
    }

    /// `k` and `v` `[b, h, t, hd]` written after the positions of `slot`.
    pub(crate) fn push(slot: &mut Slot<B>, k: Tensor<B, 4>, v: Tensor<B, 4>) -> &Self {
        let t = k.dims()[2];
        let needed = slot.as_ref().map_or(0, |p| p.len) + t;
        let mut positions = match slot.take() {
            Some(p) if p.k.dims()[2] >= needed => p,
            old => {
                let [b, h, _, hd] = k.dims();
                let capacity = needed.next_multiple_of(CACHE_GROWTH);
                let zeros = || Tensor::<B, 4>::zeros([b, h, capacity, hd], &k.device());
                let mut grown = Self { k: zeros(), v: zeros(), len: 0 };
                if let Some(old) = old {
                    let (past_k, past_v) = old.filled();
                    (grown.k, grown.v) =
                        (B::write_positions(grown.k, past_k, 0), B::write_positions(grown.v, past_v, 0));
                    grown.len = old.len;
                }
                grown
            }
        };
        positions.k = B::write_positions(positions.k, k, positions.len);
        positions.v = B::write_positions(positions.v, v, positions.len);
        positions.len = needed;
        slot.insert(positions)
    }

    /// The buffers and their filled positions, as a decoding step's attention reads them.
    pub(crate) fn row(&self) -> CachedRow<B> {
        CachedRow { keys: self.k.clone(), values: self.v.clone(), len: self.len }
    }

    /// The filled positions' keys and values.
    fn filled(&self) -> (Tensor<B, 4>, Tensor<B, 4>) {
        (self.k.clone().slice(s![.., .., 0..self.len]), self.v.clone().slice(s![.., .., 0..self.len]))
    }
}

/// Keys and values of the positions already seen, per block, for generation.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    pub(crate) layers: Vec<Slot<B>>,
    pub(crate) len: usize,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for a model of `n_layer` blocks.
    pub fn new(n_layer: usize) -> Self {
        Self { layers: vec![None; n_layer], len: 0 }
    }

    /// Number of positions cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}
