//! The HF name tree of GPT-2's parameters: the one table of tensor names in
//! the workspace. Every other file asks it for a name instead of typing one.
//!
//! Our names are the module tree's (`wte.weight`, `h.0.attn.c_attn.weight`,
//! `h.0.attn.c_attn.lora.a`), the keys of `GPT2Model`'s state dict;
//! `GPT2LMHeadModel` files put [`PREFIX`] before them ([`hf_key`]), and peft
//! adapter files put [`PEFT_PREFIX`] ([`peft_key`]). llama.cpp's GGUF files
//! name them as its `gpt2` architecture does ([`Entry::gguf`]:
//! `token_embd.weight`, `blk.0.attn_qkv.weight`).

use crate::config::Gpt2Config;

/// What `GPT2LMHeadModel` puts before a `GPT2Model` parameter's name.
pub const PREFIX: &str = "transformer.";
/// The token embeddings, also the tied LM head: `[vocab, n_embd]`.
pub const WTE: &str = "wte.weight";
/// The position embeddings: `[n_positions, n_embd]`.
pub const WPE: &str = "wpe.weight";
/// The module of [`WTE`].
pub const WTE_MODULE: &str = "wte";
/// The module of [`WPE`].
pub const WPE_MODULE: &str = "wpe";
/// The final norm's module.
pub const LN_F: &str = "ln_f";
/// The final norm's scale.
pub const LN_F_WEIGHT: &str = "ln_f.weight";
/// The final norm's shift.
pub const LN_F_BIAS: &str = "ln_f.bias";
/// The tied LM head, which HF files may hold as a copy of [`WTE`].
pub const LM_HEAD: &str = "lm_head.weight";
/// peft's prefix of a GPT-2 parameter's key in an adapter file.
pub const PEFT_PREFIX: &str = "base_model.model.transformer.";
/// Where peft keeps the trainable tokens' rows of `wte`, after [`PEFT_PREFIX`].
pub const PEFT_TOKENS: &str = "wte.token_adapter.trainable_tokens_delta";

/// A layer of a block, in module order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Layer {
    /// The norm before attention.
    Ln1,
    /// Attention's fused q, k, v projection, `[n_embd, 3·n_embd]`.
    CAttn,
    /// Attention's output projection, `[n_embd, n_embd]`.
    AttnCProj,
    /// The norm before the MLP.
    Ln2,
    /// The MLP's input, `[n_embd, n_inner]`.
    CFc,
    /// The MLP's output, `[n_inner, n_embd]`.
    MlpCProj,
}

impl Layer {
    /// Every layer of a block, in module order.
    pub const ALL: [Layer; 6] = [Layer::Ln1, Layer::CAttn, Layer::AttnCProj, Layer::Ln2, Layer::CFc, Layer::MlpCProj];

    /// Its path in a block (`attn.c_attn`).
    pub fn path(self) -> &'static str {
        match self {
            Layer::Ln1 => "ln_1",
            Layer::CAttn => "attn.c_attn",
            Layer::AttnCProj => "attn.c_proj",
            Layer::Ln2 => "ln_2",
            Layer::CFc => "mlp.c_fc",
            Layer::MlpCProj => "mlp.c_proj",
        }
    }

    /// The shortest end of [`Self::path`] that names it alone among a
    /// block's layers, as peft's `target_modules` and our `[model.lora]
    /// targets` write it (`c_attn`, but `attn.c_proj`).
    pub fn short_name(self) -> &'static str {
        match self {
            Layer::Ln1 => "ln_1",
            Layer::CAttn => "c_attn",
            Layer::AttnCProj => "attn.c_proj",
            Layer::Ln2 => "ln_2",
            Layer::CFc => "c_fc",
            Layer::MlpCProj => "mlp.c_proj",
        }
    }

    /// The layer whose path is `path`.
    pub fn from_path(path: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.path() == path)
    }

    /// Its name in a GGUF block (`blk.N.attn_qkv`), as llama.cpp's
    /// `gguf-py` (`constants.py`) names GPT-2's tensors.
    pub fn gguf_name(self) -> &'static str {
        match self {
            Layer::Ln1 => "attn_norm",
            Layer::CAttn => "attn_qkv",
            Layer::AttnCProj => "attn_output",
            Layer::Ln2 => "ffn_norm",
            Layer::CFc => "ffn_up",
            Layer::MlpCProj => "ffn_down",
        }
    }

    /// Whether it is a LayerNorm (else a `Conv1D`).
    pub fn is_norm(self) -> bool {
        matches!(self, Layer::Ln1 | Layer::Ln2)
    }

    /// `(in, out)` of a `Conv1D`'s weight on a model of width `n_embd` and
    /// MLP width `n_inner`; a norm's `(n_embd, n_embd)`.
    pub fn dims(self, n_embd: usize, n_inner: usize) -> (usize, usize) {
        match self {
            Layer::Ln1 | Layer::Ln2 | Layer::AttnCProj => (n_embd, n_embd),
            Layer::CAttn => (n_embd, 3 * n_embd),
            Layer::CFc => (n_embd, n_inner),
            Layer::MlpCProj => (n_inner, n_embd),
        }
    }
}

/// A layer's two parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// `weight`: a norm's scale or a `Conv1D`'s `[in, out]` matrix.
    Weight,
    /// `bias`.
    Bias,
}

impl Part {
    fn suffix(self) -> &'static str {
        match self {
            Part::Weight => "weight",
            Part::Bias => "bias",
        }
    }
}

/// The module path of block `i` (`h.3`).
pub fn block(i: usize) -> String {
    format!("h.{i}")
}

/// The module path of `layer` of block `i` (`h.3.attn.c_attn`).
pub fn layer(i: usize, layer: Layer) -> String {
    format!("h.{i}.{}", layer.path())
}

/// The name of `part` of `layer` of block `i` (`h.3.attn.c_attn.weight`).
pub fn param(i: usize, layer: Layer, part: Part) -> String {
    format!("h.{i}.{}.{}", layer.path(), part.suffix())
}

/// The block a parameter's name belongs to (`h.3.…` → 3).
pub fn block_of(name: &str) -> Option<usize> {
    name.strip_prefix("h.")?.split('.').next()?.parse().ok()
}

/// The key `GPT2LMHeadModel` files hold for our name (`transformer.wte.weight`).
pub fn hf_key(name: &str) -> String {
    format!("{PREFIX}{name}")
}

/// Our name of an HF file's key, with or without [`PREFIX`].
pub fn our_name(key: &str) -> &str {
    key.strip_prefix(PREFIX).unwrap_or(key)
}

/// The keys an HF file may hold our parameter `name` under, the usual first.
pub fn hf_keys(name: &str) -> [String; 2] {
    [hf_key(name), name.to_string()]
}

/// Which factor of a LoRA adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Factor {
    /// `A [r, in]`: peft's `lora_A`.
    A,
    /// `B [out, r]`: peft's `lora_B`.
    B,
}

impl Factor {
    fn ours(self) -> &'static str {
        match self {
            Factor::A => "a",
            Factor::B => "b",
        }
    }

    fn peft(self) -> &'static str {
        match self {
            Factor::A => "lora_A",
            Factor::B => "lora_B",
        }
    }
}

/// What every adapter parameter's name holds (`h.0.attn.c_attn.lora.a`).
const LORA: &str = ".lora.";

/// Our name of `factor` of the adapter on `layer` of block `i`
/// (`h.0.attn.c_attn.lora.a`).
pub fn lora(i: usize, layer: Layer, factor: Factor) -> String {
    format!("h.{i}.{}{LORA}{}", layer.path(), factor.ours())
}

/// Whether `name` is an adapter's parameter.
pub fn is_lora(name: &str) -> bool {
    name.contains(LORA)
}

/// The block, layer and factor of our adapter parameter `name`.
pub fn parse_lora(name: &str) -> Option<(usize, Layer, Factor)> {
    let (path, factor) = name.rsplit_once(LORA)?;
    let factor = [Factor::A, Factor::B].into_iter().find(|f| f.ours() == factor)?;
    let (block, layer) = path.strip_prefix("h.")?.split_once('.')?;
    Some((block.parse().ok()?, Layer::from_path(layer)?, factor))
}

/// peft's key of `factor` of the adapter on `layer` of block `i`
/// (`base_model.model.transformer.h.0.attn.c_attn.lora_A.weight`).
pub fn peft_key(i: usize, layer: Layer, factor: Factor) -> String {
    format!("{PEFT_PREFIX}h.{i}.{}.{}.weight", layer.path(), factor.peft())
}

/// The block, layer and factor of a peft key (the inverse of [`peft_key`]).
pub fn parse_peft_key(key: &str) -> Option<(usize, Layer, Factor)> {
    let rest = key.strip_prefix(PEFT_PREFIX)?.strip_suffix(".weight")?;
    let (path, factor) = rest.rsplit_once('.')?;
    let factor = [Factor::A, Factor::B].into_iter().find(|f| f.peft() == factor)?;
    let (block, layer) = path.strip_prefix("h.")?.split_once('.')?;
    Some((block.parse().ok()?, Layer::from_path(layer)?, factor))
}

/// The name of the random stream of `wte`'s new row `r` (its noise, or its
/// random values).
pub fn row_stream(r: usize) -> String {
    format!("wte.row.{r}")
}

/// What a parameter is, for its initialisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `wte` or `wpe`.
    Embedding,
    /// A LayerNorm's scale.
    NormWeight,
    /// A LayerNorm's shift or a `Conv1D`'s bias.
    Bias,
    /// A `Conv1D`'s weight; `residual` for the projections into the residual
    /// stream (`c_proj`), which GPT-2 initialises smaller.
    Weight {
        /// Whether it is a `c_proj`.
        residual: bool,
    },
}

/// One parameter of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Our name (`h.0.attn.c_attn.weight`).
    pub name: String,
    /// llama.cpp's name in a GGUF file (`blk.0.attn_qkv.weight`).
    pub gguf: String,
    /// Its shape (`Conv1D` weights `[in, out]`, as HF stores them).
    pub shape: Vec<usize>,
    /// What it is.
    pub kind: Kind,
}

impl Entry {
    /// The number of values.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether it holds no value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Every parameter of a GPT-2 of shape `config`, in module order (the order
/// Burn visits [`crate::Gpt2`] and [`crate::gpt2::assemble`] builds it).
pub fn table(config: &Gpt2Config) -> Vec<Entry> {
    let (c, f) = (config.n_embd, config.n_inner);
    let entry = |name: String, gguf: String, shape: Vec<usize>, kind| Entry { name, gguf, shape, kind };
    let mut out = vec![
        entry(WTE.into(), "token_embd.weight".into(), vec![config.vocab_size, c], Kind::Embedding),
        entry(WPE.into(), "position_embd.weight".into(), vec![config.n_positions, c], Kind::Embedding),
    ];
    for i in 0..config.n_layer {
        for layer in Layer::ALL {
            let (inputs, outputs) = layer.dims(c, f);
            let (weight, kind) = match layer.is_norm() {
                true => (vec![c], Kind::NormWeight),
                false => {
                    let residual = matches!(layer, Layer::AttnCProj | Layer::MlpCProj);
                    (vec![inputs, outputs], Kind::Weight { residual })
                }
            };
            let gguf = |part: Part| format!("blk.{i}.{}.{}", layer.gguf_name(), part.suffix());
            out.push(entry(param(i, layer, Part::Weight), gguf(Part::Weight), weight, kind));
            out.push(entry(param(i, layer, Part::Bias), gguf(Part::Bias), vec![outputs], Kind::Bias));
        }
    }
    out.push(entry(LN_F_WEIGHT.into(), "output_norm.weight".into(), vec![c], Kind::NormWeight));
    out.push(entry(LN_F_BIAS.into(), "output_norm.bias".into(), vec![c], Kind::Bias));
    out
}

/// The group a parameter belongs to: `embeddings`, `positions`, `block N`, `final norm`.
pub fn group_of(name: &str) -> String {
    match (name, block_of(name)) {
        (WTE, _) => "embeddings (wte, tied LM head)".into(),
        (WPE, _) => "positions (wpe)".into(),
        (_, Some(i)) => format!("block {i}"),
        _ => "final norm (ln_f)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name and key parses back to what made it.
    #[test]
    fn names_and_keys_parse_back() {
        for layer in Layer::ALL {
            assert_eq!(Layer::from_path(layer.path()), Some(layer));
            assert!(layer.path().ends_with(layer.short_name()));
            for factor in [Factor::A, Factor::B] {
                assert_eq!(parse_lora(&lora(7, layer, factor)), Some((7, layer, factor)));
                assert_eq!(parse_peft_key(&peft_key(7, layer, factor)), Some((7, layer, factor)));
                assert!(is_lora(&lora(7, layer, factor)) && !is_lora(&param(7, layer, Part::Weight)));
            }
            assert_eq!(block_of(&param(12, layer, Part::Bias)), Some(12));
        }
        assert_eq!(our_name(&hf_key(WTE)), WTE);
        assert_eq!(our_name(WTE), WTE);
        assert_eq!(block_of(WTE), None);
        // peft's spelling, by hand.
        let key = peft_key(0, Layer::CAttn, Factor::A);
        assert_eq!(key, "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight");
    }

    /// The table's sizes add up to transformers' count for
    /// `asi/gpt-fr-cased-base` (1,016,841,728), a non-square MLP's shapes
    /// by hand.
    #[test]
    fn the_table_counts_as_transformers_does() {
        let base = crate::HfConfig::from_json_str(
            r#"{"model_type":"gpt2","n_embd":1792,"n_head":14,"n_layer":24,"n_positions":1024,"vocab_size":50000}"#,
            "base",
        )
        .unwrap()
        .resolve()
        .unwrap();
        assert_eq!(table(&base).iter().map(Entry::len).sum::<usize>(), 1_016_841_728);
        let tiny = crate::HfConfig::from_json_str(
            r#"{"model_type":"gpt2","n_embd":8,"n_head":2,"n_layer":1,"n_positions":16,"vocab_size":40,"n_inner":20}"#,
            "tiny",
        )
        .unwrap()
        .resolve()
        .unwrap();
        let shapes: Vec<Vec<usize>> = table(&tiny).into_iter().map(|e| e.shape).collect();
        let expected: Vec<Vec<usize>> = vec![
            vec![40, 8],
            vec![16, 8],
            vec![8],
            vec![8],
            vec![8, 24],
            vec![24],
            vec![8, 8],
            vec![8],
            vec![8],
            vec![8],
            vec![8, 20],
            vec![20],
            vec![20, 8],
            vec![8],
            vec![8],
            vec![8],
        ];
        assert_eq!(shapes, expected);
    }
}
