//! Which parameters train: named groups, the freeze plan, and the parameter
//! report the exploration notebook prints (§5).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::config::Gpt2Config;
use crate::config_stage::{FreezeConfig, WteFreeze};
use crate::names;

/// The parameter names of a model of shape `config`, with their element counts,
/// in module order.
pub fn parameter_names(config: &Gpt2Config) -> Vec<(String, usize)> {
    names::table(config).into_iter().map(|entry| (entry.len(), entry.name)).map(|(n, name)| (name, n)).collect()
}

/// What trains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FreezePlan {
    /// Parameters that do not train at all.
    pub frozen: BTreeSet<String>,
    /// When only some rows of `wte` train: the first trainable row (rows below
    /// it, the pretrained ones, keep their values; their gradient is zeroed).
    pub wte_trainable_from: Option<usize>,
}

impl FreezePlan {
    /// The plan for `freeze` on a model of shape `config` whose first
    /// `base_vocab_size` rows of `wte` are pretrained.
    pub fn new(freeze: &FreezeConfig, config: &Gpt2Config, base_vocab_size: usize) -> Self {
        let lower = freeze.lower_blocks.resolve(config.n_layer);
        let mut frozen = BTreeSet::new();
        let mut wte_trainable_from = None;
        for (name, _) in parameter_names(config) {
            let is_frozen = match name.as_str() {
                names::WTE => match freeze.wte {
                    WteFreeze::All => true,
                    WteFreeze::None => false,
                    WteFreeze::PretrainedRows if base_vocab_size >= config.vocab_size => true,
                    WteFreeze::PretrainedRows => {
                        wte_trainable_from = Some(base_vocab_size);
                        false
                    }
                },
                names::WPE => freeze.wpe,
                names::LN_F_WEIGHT | names::LN_F_BIAS => freeze.ln_f,
                block => names::block_of(block).is_some_and(|i| i < lower),
            };
            if is_frozen {
                frozen.insert(name);
            }
        }
        Self { frozen, wte_trainable_from }
    }

    /// The plan under LoRA: every base weight frozen but the rows of `wte`
    /// this plan trains (the adapters, not listed here, train).
    pub fn under_lora(mut self, config: &Gpt2Config) -> Self {
        for (name, _) in parameter_names(config) {
            if !crate::lora::trains_under_lora(&name) {
                self.frozen.insert(name);
            }
        }
        self
    }

    /// Whether `name` trains (wholly or in part).
    pub fn trains(&self, name: &str) -> bool {
        !self.frozen.contains(name)
    }
}

/// One group of the parameter report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupReport {
    /// Group name.
    pub group: String,
    /// Parameters in the group.
    pub params: usize,
    /// Of which trainable.
    pub trainable: usize,
}

/// Total, frozen and trainable parameters, as the notebook prints them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ParamReport {
    /// Every parameter (the tied head counted once).
    pub total: usize,
    /// Parameters that do not train.
    pub frozen: usize,
    /// Parameters that train.
    pub trainable: usize,
    /// Lower blocks frozen, of `n_layer`.
    pub frozen_blocks: usize,
    /// `n_layer`.
    pub n_layer: usize,
    /// By group, in module order.
    pub groups: Vec<GroupReport>,
}

impl ParamReport {
    /// The report of `plan` on a model of shape `config`.
    pub fn new(config: &Gpt2Config, plan: &FreezePlan) -> Self {
        let mut groups: Vec<GroupReport> = Vec::new();
        let mut report = ParamReport { n_layer: config.n_layer, ..Default::default() };
        for (name, n) in parameter_names(config) {
            let trainable = if plan.frozen.contains(&name) {
                0
            } else if name == names::WTE {
                match plan.wte_trainable_from {
                    Some(from) => config.vocab_size.saturating_sub(from) * config.n_embd,
                    None => n,
                }
            } else {
                n
            };
            report.total += n;
            report.trainable += trainable;
            let group = names::group_of(&name);
            match groups.last_mut() {
                Some(last) if last.group == group => {
                    last.params += n;
                    last.trainable += trainable;
                }
                _ => groups.push(GroupReport { group, params: n, trainable }),
            }
        }
        report.frozen = report.total - report.trainable;
        report.frozen_blocks = groups.iter().filter(|g| g.group.starts_with("block ") && g.trainable == 0).count();
        report.groups = groups;
        report
    }

    /// The report with `n` LoRA adapter parameters, all trainable, as their own group.
    pub fn with_lora(mut self, n: usize) -> Self {
        self.total += n;
        self.trainable += n;
        self.groups.push(GroupReport { group: "LoRA adapters".into(), params: n, trainable: n });
        self
    }

    /// The notebook's printout.
    pub fn summary(&self) -> String {
        let pct = |n: usize| if self.total == 0 { 0.0 } else { 100.0 * n as f64 / self.total as f64 };
        let mut out = format!("Parameters: {}\n", thousands(self.total));
        out += &format!("With {}/{} blocks frozen:\n", self.frozen_blocks, self.n_layer);
        out += &format!("  frozen    : {:>13} ({:.0}%)\n", thousands(self.frozen), pct(self.frozen));
        out += &format!("  trainable : {:>13} ({:.0}%)\n", thousands(self.trainable), pct(self.trainable));
        for g in &self.groups {
            let state = match (g.trainable, g.params) {
                (0, _) => "frozen".to_string(),
                (t, p) if t == p => "trains".to_string(),
                (t, _) => format!("{} train", thousands(t)),
            };
            out += &format!("    {:<30} {:>13}  {state}\n", g.group, thousands(g.params));
        }
        out
    }
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: usize) -> String {
    tp06_artifact::group_digits(n, ',')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config_stage::BlockCount;
    use crate::names::{Layer, Part, param};

    fn gpt_fr_cased_base() -> Gpt2Config {
        // asi/gpt-fr-cased-base: 24 layers, 14 heads, n_embd 1792, vocab 50,000.
        crate::HfConfig::from_json_str(
            r#"{"model_type":"gpt2","n_embd":1792,"n_head":14,"n_layer":24,"n_positions":1024,"vocab_size":50000}"#,
            "base",
        )
        .unwrap()
        .resolve()
        .unwrap()
    }

    /// The names listed from the shape alone are the model's own tree, in
    /// its order and with its sizes (a non-square MLP, so that c_fc and
    /// c_proj cannot be swapped unseen).
    #[test]
    fn the_names_from_the_shape_are_the_module_tree() {
        let config = crate::HfConfig::from_json_str(
            r#"{"model_type":"gpt2","n_embd":8,"n_head":2,"n_layer":3,"n_positions":16,"vocab_size":40,"n_inner":24}"#,
            "tiny",
        )
        .unwrap()
        .resolve()
        .unwrap();
        let model = crate::init_from_scratch::<crate::backend::Cpu>(
            &config,
            crate::ScratchInit { seed: 1 },
            &Default::default(),
        );
        let tree: Vec<(String, usize)> = crate::NamedParams::of(&model)
            .params
            .into_iter()
            .map(|(name, shape, _)| (name, shape.iter().product()))
            .collect();
        assert_eq!(parameter_names(&config), tree);
    }

    #[test]
    fn course_plan_freezes_embeddings_and_lower_half() {
        let config = gpt_fr_cased_base();
        let course = FreezeConfig { wte: WteFreeze::All, wpe: true, lower_blocks: BlockCount::Half, ln_f: false };
        let plan = FreezePlan::new(&course, &config, 50000);
        assert!(plan.frozen.contains(names::WTE) && plan.frozen.contains(names::WPE));
        assert!(plan.frozen.contains(&param(11, Layer::MlpCProj, Part::Bias)));
        assert!(!plan.frozen.contains(&param(12, Layer::Ln1, Part::Weight)));
        assert!(!plan.frozen.contains(names::LN_F_WEIGHT));
        let report = ParamReport::new(&config, &plan);
        // The notebook's numbers for asi/gpt-fr-cased-base: ~1.017 B parameters.
        assert_eq!(report.total, config.num_params());
        assert_eq!(report.total, 1_016_841_728, "the count transformers reports for this shape");
        let block = 12 * 1792 * 1792 + 13 * 1792;
        assert_eq!(report.trainable, 12 * block + 2 * 1792);
        assert_eq!(report.frozen_blocks, 12);
        assert_eq!(report.groups.len(), 2 + 24 + 1);
    }

    #[test]
    fn pretrained_rows_plan_trains_only_the_new_rows() {
        let mut config = gpt_fr_cased_base();
        config.vocab_size = 50100;
        let fix =
            FreezeConfig { wte: WteFreeze::PretrainedRows, wpe: true, lower_blocks: BlockCount::Count(3), ln_f: true };
        let plan = FreezePlan::new(&fix, &config, 50000);
        assert_eq!(plan.wte_trainable_from, Some(50000));
        assert!(plan.trains(names::WTE) && plan.frozen.contains(names::LN_F_BIAS));
        assert!(plan.frozen.contains(&param(2, Layer::Ln1, Part::Bias)));
        let report = ParamReport::new(&config, &plan);
        let wte = &report.groups[0];
        assert_eq!((wte.params, wte.trainable), (50100 * 1792, 100 * 1792));
        // Nothing new: the whole table is frozen.
        let plan = FreezePlan::new(&fix, &gpt_fr_cased_base(), 50000);
        assert!(plan.frozen.contains(names::WTE) && plan.wte_trainable_from.is_none());
    }
}
