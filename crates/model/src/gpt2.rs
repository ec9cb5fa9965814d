//! GPT-2, exactly as transformers' `GPT2LMHeadModel`.
//!
//! Reads top to bottom: layer norm → `Conv1D` → attention → MLP → block → model.
//! Field names are the HF tensor names, so the module tree *is* the checkpoint's
//! name tree (`h.0.attn.c_attn.weight` …) and loading is a short, explicit copy.
//! `Conv1D` weights are `[in, out]`, as stored by HF: no transposes anywhere.
//!
//! Every `forward` takes the [`Pass`] it runs in: kernels, autocast, `wte`'s
//! trained rows and dropout are its settings, nothing else decides them.

use std::collections::BTreeMap;
use std::sync::Arc;

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::{FloatDType, activation};

pub use crate::cache::KvCache;
use crate::cache::{Positions, Slot};
use crate::config::{Activation, Gpt2Config};
use crate::kernels::{self, Dropout, Gpt2Ops, composed};
use crate::layout::{Documents, Layout};
use crate::names::{self, Entry, Layer, Part};
use crate::pass::Pass;
use crate::precision::Precision;
use crate::q8::Q8Matrix;

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

impl<B: Gpt2Ops> LayerNorm<B> {
    /// `[.., n_embd] → [.., n_embd]`
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>, pass: &Pass) -> Tensor<B, D> {
        pass.layer_norm(x, self.weight.val(), self.bias.val(), self.eps)
    }
}

/// HF's `Conv1D`: a linear layer whose weight is stored `[in, out]`.
#[derive(Module, Debug)]
pub struct Conv1D<B: Backend> {
    /// `[in, out]`.
    pub weight: Param<Tensor<B, 2>>,
    /// `[out]`.
    pub bias: Param<Tensor<B, 1>>,
    /// A LoRA adapter beside the weight, if any.
    pub lora: Option<Lora<B>>,
    /// The weight in Q8_0 for int8 inference, `[out, in]` (each output's
    /// weights a row of blocks, as GGUF stores it); `weight` is then an
    /// empty placeholder ([`crate::Precision::Int8`]).
    pub q8: Option<Arc<Q8Matrix>>,
}

impl<B: Gpt2Ops> Conv1D<B> {
    /// `[b, t, in] → [b, t, out]`, as one `[b·t, in]` product: the weight's
    /// gradient is then one matrix product over all positions, not one per
    /// sequence summed afterwards. With an adapter, peft's
    /// `x W + b + (dropout(x) Aᵀ) Bᵀ · s`.
    pub fn forward(&self, x: Tensor<B, 3>, pass: &mut Pass) -> Tensor<B, 3> {
        let [b, t, i] = x.dims();
        let x = x.reshape([b * t, i]); // [b·t, in]
        let mut y = match &self.q8 {
            Some(q8) => kernels::q8::linear(x.clone(), q8, Some(self.bias.val())), // [b·t, out]
            None => pass.linear(x.clone(), self.weight.val(), self.bias.val()),    // [b·t, out]
        };
        if let Some(lora) = &self.lora {
            y = y + pass.lora(x, lora.a.val(), lora.b.val(), lora.scaling, lora.dropout);
        }
        let out = y.dims()[1];
        y.reshape([b, t, out])
    }
}

/// One layer's LoRA adapter (see [`crate::lora`]).
#[derive(Module, Debug)]
pub struct Lora<B: Backend> {
    /// `[r, in]`: peft's `lora_A.weight`.
    pub a: Param<Tensor<B, 2>>,
    /// `[out, r]`: peft's `lora_B.weight`.
    pub b: Param<Tensor<B, 2>>,
    /// The product's factor, `α / r` or `α / √r`.
    pub scaling: f64,
    /// Dropout on the adapter's input.
    pub dropout: Dropout,
}

impl<B: Backend> Lora<B> {
    /// `ΔW = Aᵀ Bᵀ · s`, `[in, out]` as the `Conv1D` weight it adds to.
    pub fn delta(&self) -> Tensor<B, 2> {
        self.a.val().transpose().matmul(self.b.val().transpose()) * self.scaling
    }
}

/// `nn.Embedding`: one row per id.
#[derive(Module, Debug)]
pub struct Embedding<B: Backend> {
    /// `[rows, n_embd]`.
    pub weight: Param<Tensor<B, 2>>,
    /// The table in Q8_0 for int8 inference (`wte`, also the tied head);
    /// `weight` is then an empty placeholder.
    pub q8: Option<Arc<Q8Matrix>>,
}

impl<B: Backend> Embedding<B> {
    /// Rows of the table.
    pub fn rows(&self) -> usize {
        self.q8.as_ref().map_or_else(|| self.weight.dims()[0], |q8| q8.rows())
    }

    /// The rows of `ids [b, t]`: `[b, t, n_embd]`, f32 (a bf16 table's
    /// rows widened, exactly).
    pub fn lookup(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        match &self.q8 {
            Some(q8) => kernels::q8::embedding(q8, ids),
            None => burn::tensor::module::embedding(self.weight.val(), ids).cast(FloatDType::F32),
        }
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

impl<B: Gpt2Ops> Attention<B> {
    /// `x: [b, t, c]` → `[b, t, c]`, each query seeing what `layout` lets it.
    /// With a cache, `x` holds only the new positions, each slot grows by `t`
    /// and `layout` has no packed documents. The cache is one slot for every
    /// row, or one slot per row (rows at their own positions, no padding).
    fn forward(
        &self,
        x: Tensor<B, 3>,
        layout: &Layout<B>,
        cache: Option<&mut [&mut Slot<B>]>,
        pass: &mut Pass,
    ) -> Tensor<B, 3> {
        let c = x.dims()[2];
        let (h, hd) = (self.n_head, c / self.n_head);
        let divisor = if self.scale { (hd as f32).sqrt() } else { 1.0 };
        let qkv = self.c_attn.forward(x, pass); // [b, t, 3c]
        let y = match cache {
            // Training and whole-sequence passes: the keys are the queries' positions.
            None => {
                let (pad, documents) = (layout.pad.clone(), layout.documents.as_ref());
                pass.causal_attention(qkv, h, pad, documents, divisor, self.attn_dropout) // [b, t, c]
            }
            // A decoding step: one new position per row, each row its own slot.
            Some(slots)
                if qkv.dims()[..2] == [slots.len(), 1]
                    && layout.pad.is_none()
                    && layout.documents.is_none()
                    && !pass.drops(self.attn_dropout) =>
            {
                let n = slots.len();
                let qkv = qkv.reshape([n, 3 * c]);
                let part = |i: usize| qkv.clone().slice(s![.., i * c..(i + 1) * c]);
                let (keys, values) = (part(1).reshape([n, h, 1, hd]), part(2).reshape([n, h, 1, hd]));
                let rows = slots.iter_mut().enumerate().map(|(i, slot)| {
                    let (k, v) = (keys.clone().slice(s![i..i + 1]), values.clone().slice(s![i..i + 1]));
                    Positions::push(slot, k, v).row()
                });
                let rows = rows.collect();
                pass.cached_attention(part(0), rows, h, divisor).reshape([n, 1, c])
            }
            Some([slot]) => {
                assert!(layout.documents.is_none(), "a cached pass runs one document per row");
                self.attend_cached(qkv, layout.pad.clone(), slot, pass)
            }
            Some(slots) => {
                assert!(layout.pad.is_none() && layout.documents.is_none(), "rows with their own slots are plain");
                assert_eq!(slots.len(), qkv.dims()[0], "one slot per row");
                let rows = slots.iter_mut().enumerate();
                let rows = rows.map(|(i, slot)| self.attend_cached(qkv.clone().slice(s![i..i + 1]), None, slot, pass));
                Tensor::cat(rows.collect(), 0)
            }
        };
        let y = self.c_proj.forward(y, pass);
        pass.dropout(self.resid_dropout, y)
    }

    /// The attention of the new positions' fused `qkv [b, t, 3c]` over the
    /// cached keys and values and their own, `pad` hiding padding keys:
    /// `[b, t, c]`, before `c_proj`; the cache `slot` grows by `t`.
    fn attend_cached(
        &self,
        qkv: Tensor<B, 3>,
        pad: Option<Tensor<B, 2, Bool>>,
        slot: &mut Slot<B>,
        pass: &mut Pass,
    ) -> Tensor<B, 3> {
        let [_, t, three_c] = qkv.dims();
        let (h, hd) = (self.n_head, three_c / 3 / self.n_head);
        let divisor = if self.scale { (hd as f32).sqrt() } else { 1.0 };
        let [q, k, v] = composed::split_heads(qkv, h); // [b, h, t, hd] each
        let (k, v) = Positions::append(slot, k, v); // [b, h, past + t, hd]
        let past = k.dims()[2] - t;
        let scores = q.matmul(k.swap_dims(2, 3)); // [b, h, t, past + t]
        let probs = pass.attention_probs(scores, past, pad, divisor, self.attn_dropout);
        composed::merge_heads(probs.matmul(v)) // [b, t, c]
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

impl<B: Gpt2Ops> Mlp<B> {
    /// `[b, t, c] → [b, t, c]`
    fn forward(&self, x: Tensor<B, 3>, pass: &mut Pass) -> Tensor<B, 3> {
        let x = self.c_fc.forward(x, pass); // [b, t, n_inner]
        let x = match self.activation {
            Activation::GeluTanh => pass.gelu_new(x),
            Activation::Gelu => activation::gelu(x),
            Activation::Relu => activation::relu(x),
            Activation::Silu => activation::silu(x),
        };
        let x = self.c_proj.forward(x, pass); // [b, t, c]
        pass.dropout(self.dropout, x)
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
    /// Whether a layer of the block carries an adapter.
    pub fn has_lora(&self) -> bool {
        [&self.attn.c_attn, &self.attn.c_proj, &self.mlp.c_fc, &self.mlp.c_proj].iter().any(|l| l.lora.is_some())
    }

    /// The `Conv1D` that is `layer`; `None` for a norm.
    pub fn conv(&self, layer: Layer) -> Option<&Conv1D<B>> {
        match layer {
            Layer::CAttn => Some(&self.attn.c_attn),
            Layer::AttnCProj => Some(&self.attn.c_proj),
            Layer::CFc => Some(&self.mlp.c_fc),
            Layer::MlpCProj => Some(&self.mlp.c_proj),
            Layer::Ln1 | Layer::Ln2 => None,
        }
    }

    /// [`Self::conv`], mutable.
    pub fn conv_mut(&mut self, layer: Layer) -> Option<&mut Conv1D<B>> {
        match layer {
            Layer::CAttn => Some(&mut self.attn.c_attn),
            Layer::AttnCProj => Some(&mut self.attn.c_proj),
            Layer::CFc => Some(&mut self.mlp.c_fc),
            Layer::MlpCProj => Some(&mut self.mlp.c_proj),
            Layer::Ln1 | Layer::Ln2 => None,
        }
    }
}

impl<B: Gpt2Ops> Block<B> {
    /// `x [b, t, c] → [b, t, c]`, a whole sequence (no cache) laid out as `layout`.
    pub fn forward(&self, x: Tensor<B, 3>, layout: &Layout<B>, pass: &mut Pass) -> Tensor<B, 3> {
        self.forward_cached(x, layout, None, pass)
    }

    /// `[b, t, c] → [b, t, c]`, growing the block's cache when given one
    /// (one slot for every row, or one per row: [`Attention`]'s `forward`).
    pub(crate) fn forward_cached(
        &self,
        x: Tensor<B, 3>,
        layout: &Layout<B>,
        cache: Option<&mut [&mut Slot<B>]>,
        pass: &mut Pass,
    ) -> Tensor<B, 3> {
        let a = self.attn.forward(self.ln_1.forward(x.clone(), pass), layout, cache, pass);
        let x = x + a;
        let m = self.mlp.forward(self.ln_2.forward(x.clone(), pass), pass);
        x + m
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
        self.wte.rows()
    }

    /// Context length.
    pub fn n_positions(&self) -> usize {
        self.wpe.weight.dims()[0]
    }

    /// Whether any layer carries an adapter.
    pub fn has_lora(&self) -> bool {
        self.h.iter().any(|b| b.has_lora())
    }

    /// The `Conv1D` weights that carry an adapter, by name
    /// (`h.0.attn.c_attn.weight`), with it.
    pub fn adapted_weights(&self) -> BTreeMap<String, (&Param<Tensor<B, 2>>, &Lora<B>)> {
        let mut out = BTreeMap::new();
        for (i, block) in self.h.iter().enumerate() {
            for layer in Layer::ALL {
                if let Some(conv) = block.conv(layer)
                    && let Some(lora) = &conv.lora
                {
                    out.insert(names::param(i, layer, Part::Weight), (&conv.weight, lora));
                }
            }
        }
        out
    }
}

impl<B: Gpt2Ops> Gpt2<B> {
    /// Hidden states after `ln_f`: `ids [b, t]` → `[b, t, c]`.
    ///
    /// `layout` says what each query sees: its padding (`[b, past + t]`, true
    /// = padding) hides keys like HF's `attention_mask`, its documents restart
    /// the positions like HF's `position_ids` and keep each document to
    /// itself; without documents, positions count from the cache's length.
    pub fn hidden(
        &self,
        ids: Tensor<B, 2, Int>,
        layout: &Layout<B>,
        mut cache: Option<&mut KvCache<B>>,
        pass: &mut Pass,
    ) -> Tensor<B, 3> {
        let [_, t] = ids.dims();
        let past = cache.as_ref().map_or(0, |c| c.len);
        let mut x = self.embed(ids, past, layout.documents.as_ref(), pass);
        for (i, block) in self.h.iter().enumerate() {
            let mut slot = cache.as_mut().map(|c| [&mut c.layers[i]]);
            x = block.forward_cached(x, layout, slot.as_mut().map(|s| &mut s[..]), pass);
        }
        if let Some(cache) = cache {
            cache.len += t;
        }
        self.ln_f.forward(x, pass)
    }

    /// The blocks' input: token plus position embeddings of `ids [b, t]`,
    /// after dropout → `[b, t, c]`. The positions are `past .. past + t`, or
    /// each token's index in its document when `documents` are packed.
    pub fn embed(
        &self,
        ids: Tensor<B, 2, Int>,
        past: usize,
        documents: Option<&Documents>,
        pass: &mut Pass,
    ) -> Tensor<B, 3> {
        let (device, [_, t]) = (ids.device(), ids.dims());
        let pos = match documents {
            Some(documents) => burn::tensor::module::embedding(self.wpe.weight.val(), documents.tensor(&device)), // [b, t, c]
            None => {
                let positions = Tensor::<B, 1, Int>::arange(past as i64..(past + t) as i64, &device);
                self.wpe.weight.val().select(0, positions).unsqueeze::<3>() // [1, t, c]
            }
        };
        let tok = self.wte.lookup(ids); // [b, t, c]
        pass.dropout(self.drop, tok + pos)
    }

    /// Logits over the vocabulary: `[b, t, c] → [b, t, vocab]` through the tied head.
    pub fn head(&self, hidden: Tensor<B, 3>, pass: &Pass) -> Tensor<B, 3> {
        let [b, t, c] = hidden.dims();
        self.head_2d(hidden.reshape([b * t, c]), pass).reshape([b, t, self.vocab_size()])
    }

    /// Logits of flattened positions: `[n, c] → [n, vocab]` (never a copy of
    /// the vocabulary-sized matrix, which would dominate decoding).
    pub fn head_2d(&self, hidden: Tensor<B, 2>, pass: &Pass) -> Tensor<B, 2> {
        match &self.wte.q8 {
            Some(q8) => kernels::q8::linear(hidden, q8, None),
            None => pass.tied_head(hidden, self.wte.weight.val()),
        }
    }

    /// `ids [b, t]` → logits `[b, t, vocab]` (no cache, no padding).
    pub fn forward(&self, ids: Tensor<B, 2, Int>, pass: &mut Pass) -> Tensor<B, 3> {
        let hidden = self.hidden(ids, &Layout::plain(), None, pass);
        self.head(hidden, pass)
    }

    /// `ids [b, t]` laid out as `layout` (padding, packed documents) →
    /// logits `[b, t, vocab]` (no cache).
    pub fn forward_with(&self, ids: Tensor<B, 2, Int>, layout: &Layout<B>, pass: &mut Pass) -> Tensor<B, 3> {
        let hidden = self.hidden(ids, layout, None, pass);
        self.head(hidden, pass)
    }

    /// `ids [b, t]` (new positions only) → logits `[b, t, vocab]`, growing `cache`.
    pub fn forward_cached(&self, ids: Tensor<B, 2, Int>, cache: &mut KvCache<B>, pass: &mut Pass) -> Tensor<B, 3> {
        let hidden = self.hidden(ids, &Layout::plain(), Some(cache), pass);
        self.head(hidden, pass)
    }
}

/// An int8 matrix: the empty placeholder that stands for its f32 tensor, and its blocks.
pub(crate) type Quantized<B> = (Param<Tensor<B, 2>>, Option<Arc<Q8Matrix>>);

/// The row-major values of a `Conv1D` weight `[in, out]` in Q8_0 (each
/// output's weights a row, `[out, in]`), beside an empty placeholder.
pub(crate) fn quantized_conv<B: Backend>(values: &[f32], [i, o]: [usize; 2], device: &B::Device) -> Quantized<B> {
    let q8 = Q8Matrix::quantize_transposed(values, i, o);
    (Param::from_tensor(Tensor::zeros([0, 0], device)), Some(Arc::new(q8)))
}

/// The row-major values of a table `[rows, c]` (`wte`) in Q8_0, beside an
/// empty placeholder.
pub(crate) fn quantized_table<B: Backend>(values: &[f32], [rows, c]: [usize; 2], device: &B::Device) -> Quantized<B> {
    (Param::from_tensor(Tensor::zeros([0, 0], device)), Some(Arc::new(Q8Matrix::quantize(values, rows, c))))
}

/// Builds the module tree of shape `config` by walking [`names::table`] in
/// its order, `values` giving each parameter's values (flattened, row-major)
/// when its turn comes (used by import and init), each stored in
/// `precision` as soon as it is made: a model is never whole in f32 on the
/// way to bf16 or int8 (the `Conv1D` weights and `wte` in bf16 or Q8_0, the
/// rest f32).
pub(crate) fn assemble<B: Backend>(
    config: &Gpt2Config,
    mut values: impl FnMut(&Entry) -> Vec<f32>,
    precision: Precision,
    device: &B::Device,
) -> Gpt2<B> {
    let mut entries = names::table(config).into_iter();
    let mut next = || {
        let entry = entries.next().expect("the table lists every parameter");
        let values = values(&entry);
        (entry, values)
    };
    let p1 = |(entry, values): (Entry, Vec<f32>)| {
        Param::from_tensor(Tensor::<B, 1>::from_data(TensorData::new(values, entry.shape), device))
    };
    // A matrix: its tensor, or under int8 a placeholder and its Q8_0 blocks;
    // under bf16 the `Conv1D` weights and `wte` in bf16.
    let p2 = |(entry, values): (Entry, Vec<f32>)| {
        let [rows, cols] = [entry.shape[0], entry.shape[1]];
        let compact = matches!(entry.kind, names::Kind::Weight { .. }) || entry.name == names::WTE;
        match precision {
            Precision::Int8 if compact && entry.name == names::WTE => quantized_table(&values, [rows, cols], device),
            Precision::Int8 if compact => quantized_conv(&values, [rows, cols], device),
            Precision::Bf16 if compact => {
                // Rounded on the host: no f32 tensor of the matrix on the way.
                let low: Vec<half::bf16> = values.iter().map(|v| half::bf16::from_f32(*v)).collect();
                drop(values);
                let data = TensorData::new(low, [rows, cols]);
                (Param::from_tensor(Tensor::from_data(data, (device, burn::tensor::DType::BF16))), None)
            }
            _ => (Param::from_tensor(Tensor::from_data(TensorData::new(values, [rows, cols]), device)), None),
        }
    };
    let conv =
        |(weight, q8): (Param<Tensor<B, 2>>, Option<Arc<Q8Matrix>>), bias| Conv1D { weight, bias, lora: None, q8 };
    let embedding = |(weight, q8)| Embedding { weight, q8 };
    // Each in the table's order: wte, wpe, the blocks, ln_f.
    let wte = embedding(p2(next()));
    let wpe = embedding(p2(next()));
    let eps = config.layer_norm_epsilon;
    let blocks = (0..config.n_layer)
        .map(|_| {
            let ln_1 = LayerNorm { weight: p1(next()), bias: p1(next()), eps };
            let c_attn = conv(p2(next()), p1(next()));
            let c_proj = conv(p2(next()), p1(next()));
            let ln_2 = LayerNorm { weight: p1(next()), bias: p1(next()), eps };
            let c_fc = conv(p2(next()), p1(next()));
            let mlp_c_proj = conv(p2(next()), p1(next()));
            Block {
                ln_1,
                attn: Attention {
                    c_attn,
                    c_proj,
                    n_head: config.n_head,
                    scale: config.scale_attn_weights,
                    attn_dropout: Dropout { p: config.attn_pdrop },
                    resid_dropout: Dropout { p: config.resid_pdrop },
                },
                ln_2,
                mlp: Mlp {
                    c_fc,
                    c_proj: mlp_c_proj,
                    activation: config.activation,
                    dropout: Dropout { p: config.resid_pdrop },
                },
            }
        })
        .collect();
    let ln_f = LayerNorm { weight: p1(next()), bias: p1(next()), eps };
    Gpt2 { wte, wpe, h: blocks, ln_f, drop: Dropout { p: config.embd_pdrop } }
}
