//! GPT-2, exactly as transformers' `GPT2LMHeadModel`.
//!
//! Reads top to bottom: layer norm → `Conv1D` → attention → MLP → block → model.
//! Field names are the HF tensor names, so the module tree *is* the checkpoint's
//! name tree (`h.0.attn.c_attn.weight` …) and loading is a short, explicit copy.
//! `Conv1D` weights are `[in, out]`, as stored by HF: no transposes anywhere.

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::Bool;
use burn::tensor::activation;
use rayon::prelude::*;

use crate::config::{Activation, Gpt2Config};
use crate::fused;

/// Dropout with rate `p`, active only when the backend records gradients (training).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dropout {
    /// Probability of zeroing an element.
    pub p: f64,
}

thread_local! {
    /// The state of the dropout masks drawn on the host (CPU backends): a seed
    /// and a count of the masks drawn since, so that every mask is a pure
    /// function of (seed, its rank since [`seed_dropout`]). One per thread: a
    /// forward pass draws on the thread that runs it, so two trainings in one
    /// process (tests) cannot shift each other's masks.
    static DROPOUT_STREAM: std::cell::Cell<u64> = const { std::cell::Cell::new(0x5eed) };
}

/// Seeds this thread's dropout masks: after this, a forward pass draws the same
/// masks as any other forward pass after the same seed (training seeds every
/// micro-batch).
pub fn seed_dropout(seed: u64) {
    DROPOUT_STREAM.set(splitmix64(seed));
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Whether masks are drawn on the host: on the CPU backends, one counter-based
/// draw per element is several times cheaper than the backend's scalar
/// Bernoulli sampler; elsewhere the masks stay on the device.
fn host_masks<B: Backend>(device: &B::Device) -> bool {
    let name = B::name(device);
    name.contains("flex") || name.contains("ndarray")
}

/// One host-drawn dropout mask: element `i` is kept (and scaled by 1/(1 − p))
/// when the `i`-th draw of its stream falls under 1 − p. A pure function of
/// the index, so a fused kernel can redraw it in its backward pass.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DropoutMask {
    stream: u64,
    threshold: u64,
    keep: f32,
}

impl DropoutMask {
    /// The next mask of this thread's stream (see [`seed_dropout`]).
    pub(crate) fn next(p: f64) -> Self {
        let state = DROPOUT_STREAM.get();
        DROPOUT_STREAM.set(state.wrapping_add(0x9e37_79b9_7f4a_7c15));
        let stream = splitmix64(state);
        Self { stream, threshold: ((1.0 - p) * 4_294_967_296.0) as u64, keep: (1.0 / (1.0 - p)) as f32 }
    }

    /// The factor of element `index`: 1/(1 − p) or 0.
    #[inline]
    pub(crate) fn factor(&self, index: u64) -> f32 {
        if splitmix64(self.stream ^ index) >> 32 < self.threshold { self.keep } else { 0.0 }
    }

    /// `out[j] = x[j] · factor(first + j)`: a run of elements starting at index `first`.
    #[inline]
    pub(crate) fn apply(&self, first: u64, x: &[f32], out: &mut [f32]) {
        for (j, (o, &v)) in out.iter_mut().zip(x).enumerate() {
            *o = v * self.factor(first + j as u64);
        }
    }
}

impl Dropout {
    /// Inverted dropout: each element kept with probability 1 − p and scaled by 1/(1 − p).
    pub(crate) fn forward<B: Backend, const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let device = x.device();
        if self.p == 0.0 || !B::ad_enabled(&device) {
            return x;
        }
        if !host_masks::<B>(&device) {
            return self.on_device(x);
        }
        let mask = DropoutMask::next(self.p);
        let shape = x.shape();
        let factors: Vec<f32> = (0..shape.num_elements() as u64).into_par_iter().map(|i| mask.factor(i)).collect();
        x * Tensor::from_data(TensorData::new(factors, shape), &device)
    }

    /// The same with the mask drawn by the backend's own sampler (GPUs), seeded by `B::seed`.
    fn on_device<B: Backend, const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let keep = x.random_like(burn::tensor::Distribution::Bernoulli(1.0 - self.p));
        x * keep * (1.0 / (1.0 - self.p))
    }
}

/// `nn.LayerNorm` over the last dimension (biased variance, like torch).
#[derive(Module, Debug)]
pub struct LayerNorm<B: Backend> {
    /// Scale, `[n_embd]`.
    pub weight: Param<Tensor<B, 1>>,
    /// Shift, `[n_embd]`.
    pub bias: Param<Tensor<B, 1>>,
    /// Added to the variance.
    pub eps: f64,
}

impl<B: Backend> LayerNorm<B> {
    /// `[.., n_embd] → [.., n_embd]`
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        fused::layer_norm(x, self.weight.val(), self.bias.val(), self.eps)
    }
}

/// HF's `Conv1D`: a linear layer whose weight is stored `[in, out]`.
#[derive(Module, Debug)]
pub struct Conv1D<B: Backend> {
    /// `[in, out]`.
    pub weight: Param<Tensor<B, 2>>,
    /// `[out]`.
    pub bias: Param<Tensor<B, 1>>,
}

impl<B: Backend> Conv1D<B> {
    /// `[b, t, in] → [b, t, out]`, as one `[b·t, in]` product: the weight's
    /// gradient is then one matrix product over all positions, not one per
    /// sequence summed afterwards.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, t, i] = x.dims();
        let y = fused::linear(x.reshape([b * t, i]), self.weight.val(), self.bias.val());
        let out = y.dims()[1];
        y.reshape([b, t, out])
    }
}

/// `nn.Embedding`: one row per id.
#[derive(Module, Debug)]
pub struct Embedding<B: Backend> {
    /// `[rows, n_embd]`.
    pub weight: Param<Tensor<B, 2>>,
}

/// Keys and values of the positions already seen, per block, for generation.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    layers: Vec<Option<(Tensor<B, 4>, Tensor<B, 4>)>>,
    len: usize,
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

/// Causal self-attention with the three projections fused in `c_attn`.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// `[n_embd, 3·n_embd]`: q, k, v in that order along the output axis.
    pub c_attn: Conv1D<B>,
    /// `[n_embd, n_embd]`.
    pub c_proj: Conv1D<B>,
    /// Number of heads.
    pub n_head: usize,
    /// Divide scores by sqrt(head_dim).
    pub scale: bool,
    /// Dropout on the attention probabilities.
    pub attn_dropout: Dropout,
    /// Dropout on the output.
    pub resid_dropout: Dropout,
}

impl<B: Backend> Attention<B> {
    /// `x: [b, t, c]`, `pad: [b, past + t]` (true = padding key) → `[b, t, c]`.
    /// With a cache, `x` holds only the new positions and the cache grows by `t`.
    fn forward(
        &self,
        x: Tensor<B, 3>,
        pad: Option<Tensor<B, 2, Bool>>,
        cache: Option<&mut Option<(Tensor<B, 4>, Tensor<B, 4>)>>,
    ) -> Tensor<B, 3> {
        let [_, t, c] = x.dims();
        let (h, hd) = (self.n_head, c / self.n_head);
        let divisor = if self.scale { (hd as f32).sqrt() } else { 1.0 };
        let qkv = self.c_attn.forward(x); // [b, t, 3c]
        let Some(slot) = cache else {
            // Training and whole-sequence passes: the keys are the queries' positions.
            let y = fused::causal_attention(qkv, h, pad, divisor, self.attn_dropout); // [b, t, c]
            return self.resid_dropout.forward(self.c_proj.forward(y));
        };
        let [q, mut k, mut v] = fused::composed::split_heads(qkv, h); // [b, h, t, hd] each
        if let Some((past_k, past_v)) = slot.take() {
            k = Tensor::cat(vec![past_k, k], 2); // [b, h, past + t, hd]
            v = Tensor::cat(vec![past_v, v], 2);
        }
        *slot = Some((k.clone(), v.clone()));
        let past = k.dims()[2] - t;
        let scores = q.matmul(k.swap_dims(2, 3)); // [b, h, t, past + t]
        let probs = fused::attention_probs(scores, past, pad, divisor, self.attn_dropout);
        let y = fused::composed::merge_heads(probs.matmul(v)); // [b, t, c]
        self.resid_dropout.forward(self.c_proj.forward(y))
    }
}

/// The position-wise feed-forward network.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// `[n_embd, n_inner]`.
    pub c_fc: Conv1D<B>,
    /// `[n_inner, n_embd]`.
    pub c_proj: Conv1D<B>,
    /// The activation between the two.
    pub activation: Activation,
    /// Dropout on the output.
    pub dropout: Dropout,
}

impl<B: Backend> Mlp<B> {
    /// `[b, t, c] → [b, t, c]`
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = self.c_fc.forward(x); // [b, t, n_inner]
        let x = match self.activation {
            Activation::GeluTanh => fused::gelu_new(x),
            Activation::Gelu => activation::gelu(x),
            Activation::Relu => activation::relu(x),
            Activation::Silu => activation::silu(x),
        };
        self.dropout.forward(self.c_proj.forward(x))
    }
}

/// One transformer block (pre-LayerNorm).
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    /// Norm before attention.
    pub ln_1: LayerNorm<B>,
    /// Self-attention.
    pub attn: Attention<B>,
    /// Norm before the MLP.
    pub ln_2: LayerNorm<B>,
    /// Feed-forward.
    pub mlp: Mlp<B>,
}

impl<B: Backend> Block<B> {
    /// `[b, t, c] → [b, t, c]`
    fn forward(
        &self,
        x: Tensor<B, 3>,
        pad: Option<Tensor<B, 2, Bool>>,
        cache: Option<&mut Option<(Tensor<B, 4>, Tensor<B, 4>)>>,
    ) -> Tensor<B, 3> {
        let x = x.clone() + self.attn.forward(self.ln_1.forward(x), pad, cache);
        x.clone() + self.mlp.forward(self.ln_2.forward(x))
    }
}

/// GPT-2 with its language-model head tied to `wte`.
#[derive(Module, Debug)]
pub struct Gpt2<B: Backend> {
    /// Token embeddings `[vocab, n_embd]`, also the LM head.
    pub wte: Embedding<B>,
    /// Position embeddings `[n_positions, n_embd]`.
    pub wpe: Embedding<B>,
    /// The blocks.
    pub h: Vec<Block<B>>,
    /// Final norm.
    pub ln_f: LayerNorm<B>,
    /// Dropout after the embeddings.
    pub drop: Dropout,
}

impl<B: Backend> Gpt2<B> {
    /// Number of token rows (the vocabulary size).
    pub fn vocab_size(&self) -> usize {
        self.wte.weight.dims()[0]
    }

    /// Context length.
    pub fn n_positions(&self) -> usize {
        self.wpe.weight.dims()[0]
    }

    /// Hidden states after `ln_f`: `ids [b, t]` → `[b, t, c]`.
    ///
    /// `pad` (`[b, past + t]`, true = padding) hides padding keys, like HF's
    /// `attention_mask`; positions count from the cache's length.
    pub fn hidden(
        &self,
        ids: Tensor<B, 2, Int>,
        pad: Option<Tensor<B, 2, Bool>>,
        mut cache: Option<&mut KvCache<B>>,
    ) -> Tensor<B, 3> {
        let [_, t] = ids.dims();
        let device = ids.device();
        let past = cache.as_ref().map_or(0, |c| c.len);
        let positions = Tensor::<B, 1, Int>::arange(past as i64..(past + t) as i64, &device);
        let tok = burn::tensor::module::embedding(self.wte.weight.val(), ids); // [b, t, c]
        let pos = self.wpe.weight.val().select(0, positions).unsqueeze::<3>(); // [1, t, c]
        let mut x = self.drop.forward(tok + pos);
        for (i, block) in self.h.iter().enumerate() {
            let slot = cache.as_mut().map(|c| &mut c.layers[i]);
            x = block.forward(x, pad.clone(), slot);
        }
        if let Some(cache) = cache {
            cache.len += t;
        }
        self.ln_f.forward(x)
    }

    /// Logits over the vocabulary: `[b, t, c] → [b, t, vocab]` through the tied head.
    pub fn head(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, t, c] = hidden.dims();
        self.head_2d(hidden.reshape([b * t, c])).reshape([b, t, self.vocab_size()])
    }

    /// Logits of flattened positions: `[n, c] → [n, vocab]` (never a copy of
    /// the vocabulary-sized matrix, which would dominate decoding).
    pub fn head_2d(&self, hidden: Tensor<B, 2>) -> Tensor<B, 2> {
        fused::tied_head(hidden, self.wte.weight.val())
    }

    /// `ids [b, t]` → logits `[b, t, vocab]` (no cache, no padding).
    pub fn forward(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.head(self.hidden(ids, None, None))
    }

    /// `ids [b, t]` (new positions only) → logits `[b, t, vocab]`, growing `cache`.
    pub fn forward_cached(&self, ids: Tensor<B, 2, Int>, cache: &mut KvCache<B>) -> Tensor<B, 3> {
        self.head(self.hidden(ids, None, Some(cache)))
    }
}

/// Builds the module tree around given tensors (used by import and init).
pub(crate) fn assemble<B: Backend>(
    config: &Gpt2Config,
    mut tensor1: impl FnMut(&str, [usize; 1]) -> Tensor<B, 1>,
    mut tensor2: impl FnMut(&str, [usize; 2]) -> Tensor<B, 2>,
) -> Gpt2<B> {
    let (c, f) = (config.n_embd, config.n_inner);
    let mut norm = |prefix: &str| LayerNorm {
        weight: Param::from_tensor(tensor1(&format!("{prefix}.weight"), [c])),
        bias: Param::from_tensor(tensor1(&format!("{prefix}.bias"), [c])),
        eps: config.layer_norm_epsilon,
    };
    let ln_f = norm("ln_f");
    let norms: Vec<(LayerNorm<B>, LayerNorm<B>)> =
        (0..config.n_layer).map(|i| (norm(&format!("h.{i}.ln_1")), norm(&format!("h.{i}.ln_2")))).collect();
    let mut conv = |prefix: &str, i: usize, o: usize| Conv1D {
        weight: Param::from_tensor(tensor2(&format!("{prefix}.weight"), [i, o])),
        bias: Param::from_tensor(tensor1(&format!("{prefix}.bias"), [o])),
    };
    let mut blocks = Vec::with_capacity(config.n_layer);
    for (i, (ln_1, ln_2)) in norms.into_iter().enumerate() {
        let p = format!("h.{i}");
        blocks.push(Block {
            ln_1,
            attn: Attention {
                c_attn: conv(&format!("{p}.attn.c_attn"), c, 3 * c),
                c_proj: conv(&format!("{p}.attn.c_proj"), c, c),
                n_head: config.n_head,
                scale: config.scale_attn_weights,
                attn_dropout: Dropout { p: config.attn_pdrop },
                resid_dropout: Dropout { p: config.resid_pdrop },
            },
            ln_2,
            mlp: Mlp {
                c_fc: conv(&format!("{p}.mlp.c_fc"), c, f),
                c_proj: conv(&format!("{p}.mlp.c_proj"), f, c),
                activation: config.activation,
                dropout: Dropout { p: config.resid_pdrop },
            },
        });
    }
    Gpt2 {
        wte: Embedding { weight: Param::from_tensor(tensor2("wte.weight", [config.vocab_size, c])) },
        wpe: Embedding { weight: Param::from_tensor(tensor2("wpe.weight", [config.n_positions, c])) },
        h: blocks,
        ln_f,
        drop: Dropout { p: config.embd_pdrop },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Cpu, CpuAutodiff};

    fn dropped(seed: u64, p: f64) -> Vec<f32> {
        let device = Default::default();
        seed_dropout(seed);
        let x = Tensor::<CpuAutodiff, 2>::ones([1000, 1000], &device);
        Dropout { p }.forward(x).into_data().convert::<f32>().into_vec().unwrap()
    }

    /// splitmix64 (Steele, Lea & Flood 2014) from state 0: its published first three outputs.
    #[test]
    fn splitmix64_gives_the_published_sequence() {
        let gamma = 0x9e37_79b9_7f4a_7c15u64;
        assert_eq!(splitmix64(0), 0xe220_a839_7b1d_cdaf);
        assert_eq!(splitmix64(gamma), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(splitmix64(gamma.wrapping_mul(2)), 0x06c4_5d18_8009_454f);
    }

    /// The backend-drawn masks (the path GPUs take) keep 1 − p of the elements,
    /// scaled by 1/(1 − p); run here on the CPU backend's own sampler.
    #[test]
    fn device_drawn_dropout_keeps_1_minus_p_scaled() {
        let device = Default::default();
        Cpu::seed(&device, 5);
        let x = Tensor::<Cpu, 2>::ones([1000, 1000], &device);
        let out: Vec<f32> = Dropout { p: 0.2 }.on_device(x).into_data().convert::<f32>().into_vec().unwrap();
        let zeros = out.iter().filter(|&&v| v == 0.0).count() as f64 / out.len() as f64;
        // 10⁶ Bernoulli(0.2) draws: within 5 standard deviations (0.002).
        assert!((zeros - 0.2).abs() < 0.002, "{zeros}");
        assert!(out.iter().all(|&v| v == 0.0 || (v - 1.25).abs() < 1e-6), "kept values are 1/(1 − p)");
    }

    /// The masks are independent Bernoulli draws, not just the right share of
    /// zeros: neighbouring elements, and the same element under two seeds,
    /// are kept together a quarter of the time at p = 0.5 (a badly
    /// broken hash correlates them).
    #[test]
    fn dropout_masks_are_independent_draws() {
        let kept = |seed| dropped(seed, 0.5).into_iter().map(|v| v != 0.0).collect::<Vec<bool>>();
        let (a, b) = (kept(11), kept(12));
        let n = a.len() as f64;
        let share = |count: usize, of: f64| count as f64 / of;
        // 10⁶ draws, 5 standard deviations: 0.0025 for a share near 0.5, 0.0022 near 0.25,
        // 0.0028 for overlapping neighbour pairs (adjacent pairs covary: variance 5/16 per pair).
        assert!((share(a.iter().filter(|&&k| k).count(), n) - 0.5).abs() < 0.0025);
        let neighbours = a.windows(2).filter(|w| w[0] && w[1]).count();
        assert!(
            (share(neighbours, n - 1.0) - 0.25).abs() < 0.0022,
            "neighbours kept together: {}",
            share(neighbours, n - 1.0)
        );
        let both = a.iter().zip(&b).filter(|(x, y)| **x && **y).count();
        assert!((share(both, n) - 0.25).abs() < 0.0022, "kept under both seeds: {}", share(both, n));
        let rows = (0..1000).filter(|&r| a[r * 1000] && a[r * 1000 + 1]).count();
        assert!(rows > 150 && rows < 350, "row starts: {rows}");
    }

    #[test]
    fn dropout_keeps_1_minus_p_scaled_repeats_under_a_seed_and_is_off_without_gradients() {
        let a = dropped(7, 0.1);
        let zeros = a.iter().filter(|&&v| v == 0.0).count() as f64 / a.len() as f64;
        // 10⁶ Bernoulli(0.1) draws: the share of zeros is within 5 standard deviations (0.0015).
        assert!((zeros - 0.1).abs() < 0.0015, "{zeros}");
        assert!(a.iter().all(|&v| v == 0.0 || v == (1.0 / 0.9) as f32));
        assert_eq!(a, dropped(7, 0.1), "same seed, same mask");
        assert_ne!(a, dropped(8, 0.1), "another seed, another mask");
        let heavy = dropped(7, 0.5);
        let zeros = heavy.iter().filter(|&&v| v == 0.0).count() as f64 / heavy.len() as f64;
        assert!((zeros - 0.5).abs() < 0.0025, "{zeros}");
        // Inference: identity.
        let x = Tensor::<Cpu, 1>::ones([10], &Default::default());
        assert_eq!(
            Dropout { p: 0.5 }.forward(x).into_data().convert::<f32>().into_vec::<f32>().unwrap(),
            vec![1.0; 10]
        );
    }
}
