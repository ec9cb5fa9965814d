//! `[model.lora]`: where the adapters go and their shape.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tp06_artifact::SettingError;

use crate::names::Layer;

/// A `Conv1D` layer of a block that can carry an adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// `attn.c_attn`: q, k, v (peft's default for GPT-2).
    CAttn,
    /// `attn.c_proj`: the attention's output.
    AttnCProj,
    /// `mlp.c_fc`: the MLP's input.
    CFc,
    /// `mlp.c_proj`: the MLP's output.
    MlpCProj,
}

impl Target {
    /// Every target, in module order.
    pub const ALL: [Target; 4] = [Target::CAttn, Target::AttnCProj, Target::CFc, Target::MlpCProj];

    /// The layer it is.
    pub fn layer(self) -> Layer {
        match self {
            Target::CAttn => Layer::CAttn,
            Target::AttnCProj => Layer::AttnCProj,
            Target::CFc => Layer::CFc,
            Target::MlpCProj => Layer::MlpCProj,
        }
    }

    /// The target that is `layer`, if it is a `Conv1D`.
    pub fn of(layer: Layer) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.layer() == layer)
    }

    /// As written in `[model.lora] targets` and peft's `target_modules`.
    pub fn name(self) -> &'static str {
        self.layer().short_name()
    }
}

impl Serialize for Target {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        let known = Self::ALL.map(Target::name);
        Self::ALL.into_iter().find(|t| t.name() == name).ok_or_else(|| {
            serde::de::Error::custom(format!("unknown LoRA target `{name}`; use any of {}", known.join(", ")))
        })
    }
}

/// Which blocks carry adapters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Blocks {
    /// Every block.
    #[default]
    All,
    /// Blocks `from..to` (`[from, to]` in a preset: from included, to excluded).
    Range(usize, usize),
}

impl Blocks {
    /// The block indices of a model of `n_layer` blocks.
    pub fn resolve(self, n_layer: usize) -> std::ops::Range<usize> {
        match self {
            Blocks::All => 0..n_layer,
            Blocks::Range(from, to) => from..to.min(n_layer),
        }
    }
}

impl Serialize for Blocks {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Blocks::All => s.serialize_str("all"),
            Blocks::Range(from, to) => [*from, *to].serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Blocks {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Range(Vec<usize>),
        }
        match Raw::deserialize(d)? {
            Raw::Text(t) if t == "all" => Ok(Blocks::All),
            Raw::Range(r) if r.len() == 2 => Ok(Blocks::Range(r[0], r[1])),
            _ => Err(serde::de::Error::custom("blocks are \"all\" or [from, to] (from included, to excluded)")),
        }
    }
}

fn default_targets() -> Vec<Target> {
    vec![Target::CAttn]
}

/// `[model.lora]`: the adapters' shape and where they go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraConfig {
    /// The rank `r` of `A [r, in]` and `B [out, r]`.
    pub r: usize,
    /// `α`: the update is scaled by `α / r` (`α / √r` with `rslora`).
    pub alpha: f64,
    /// Dropout on the adapter's input (peft's `lora_dropout`).
    #[serde(default)]
    pub dropout: f64,
    /// The layers of each block that carry one: any of `c_attn`,
    /// `attn.c_proj`, `c_fc`, `mlp.c_proj` (peft's default for GPT-2: `c_attn`).
    #[serde(default = "default_targets")]
    pub targets: Vec<Target>,
    /// `"all"`, or `[from, to]`: the blocks from `from` to `to` − 1.
    #[serde(default)]
    pub blocks: Blocks,
    /// Rank-stabilised scaling `α / √r` (peft's `use_rslora`).
    #[serde(default)]
    pub rslora: bool,
}

impl LoraConfig {
    /// The factor of the adapter's product.
    pub fn scaling(&self) -> f64 {
        scaling(self.alpha, self.r, self.rslora)
    }

    /// Checks the values serde cannot, for a model of `n_layer` blocks
    /// (`usize::MAX` before the model is known: the block range is then
    /// checked for order only).
    pub fn validate(&self, n_layer: usize) -> Result<(), SettingError> {
        if self.r == 0 {
            return Err(SettingError::new("model.lora.r", "0; the rank must be at least 1 (8 or 16 are usual)"));
        }
        if !(self.alpha > 0.0 && self.alpha.is_finite()) {
            return Err(SettingError::new("model.lora.alpha", format!("{} must be a finite value > 0", self.alpha)));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(SettingError::new("model.lora.dropout", format!("{} must be in [0, 1)", self.dropout)));
        }
        if self.targets.is_empty() {
            let example = Target::CAttn.name();
            return Err(SettingError::new(
                "model.lora.targets",
                format!("empty; name at least one layer, e.g. [\"{example}\"]"),
            ));
        }
        let mut seen = self.targets.clone();
        seen.sort();
        seen.dedup();
        if seen.len() != self.targets.len() {
            return Err(SettingError::new("model.lora.targets", "a layer is named twice"));
        }
        if let Blocks::Range(from, to) = self.blocks
            && !(from < to && to <= n_layer)
        {
            let problem = match n_layer {
                usize::MAX => format!("[{from}, {to}] is empty; use [from, to] with from < to, or \"all\""),
                _ => format!(
                    "[{from}, {to}] is not a range of the model's {n_layer} blocks; \
                     use [from, to] with 0 ≤ from < to ≤ {n_layer}, or \"all\""
                ),
            };
            return Err(SettingError::new("model.lora.blocks", problem));
        }
        Ok(())
    }

    /// The number of adapter parameters on a model of `n_embd` and `n_inner`
    /// with `n_layer` blocks.
    pub fn num_params(&self, n_layer: usize, n_embd: usize, n_inner: usize) -> usize {
        let per_block: usize = self
            .targets
            .iter()
            .map(|t| {
                let (i, o) = t.layer().dims(n_embd, n_inner);
                self.r * (i + o)
            })
            .sum();
        per_block * self.blocks.resolve(n_layer).len()
    }
}

/// `α / r`, or `α / √r` with rsLoRA.
pub(crate) fn scaling(alpha: f64, r: usize, rslora: bool) -> f64 {
    if rslora { alpha / (r as f64).sqrt() } else { alpha / r as f64 }
}

/// Whether parameter `name` may change under LoRA: the adapters and `wte`
/// (its added rows); the rest of the base is frozen
/// ([`crate::FreezePlan::under_lora`]).
pub fn trains_under_lora(name: &str) -> bool {
    crate::names::is_lora(name) || name == crate::names::WTE
}
