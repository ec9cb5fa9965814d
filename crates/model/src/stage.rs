//! The model stage: load the base model, resize `wte` to the new vocabulary,
//! initialise the added rows, plan freezing, and save the result as an HF
//! directory (`RUN_DIR/model/`: `config.json`, `model.safetensors`, the
//! tokenizer files, `freeze.json`).

use std::path::{Path, PathBuf};

use burn::prelude::*;
use serde::{Deserialize, Serialize};
use tp06_artifact::hub::Hub;
use tp06_artifact::{
    Begin, InputRecord, Interrupted, SettingError, Stage, StageContext, StageReport, StageWriter, UpstreamCheck, Watch,
};
use tp06_vocab::VocabInfo;

use crate::config_stage::InitStrategy;

use crate::ModelError;
use crate::config::Gpt2Config;
use crate::config_stage::StageConfig;
use crate::freeze::{FreezePlan, ParamReport};
use crate::gpt2::Gpt2;
use crate::init::{RowInit, resize_wte};
use crate::model_dir::{ModelDir, Needs};
use crate::weights::LoadReport;

/// The model stage's outputs.
pub mod outputs {
    /// The configuration, with the new vocabulary size.
    pub const CONFIG: &str = "config.json";
    /// The initialised weights.
    pub const WEIGHTS: &str = "model.safetensors";
    /// The freeze plan ([`crate::FreezePlan`]).
    pub const FREEZE: &str = "freeze.json";
    /// Under LoRA, the fresh adapter as a peft adapter directory ([`crate::lora`]).
    pub const ADAPTER: &str = crate::model_dir::ADAPTER_DIR;
}

/// The model stage's headline numbers (stored in the manifest's `stats`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelStats {
    /// Where the weights came from (a file, or "from scratch").
    pub weights: String,
    /// What the import applied and ignored.
    pub load: Option<LoadReport>,
    /// Layers, heads, width, context, vocabulary.
    pub shape: Option<Gpt2Config>,
    /// Rows of `wte` before and after.
    pub vocab_before: usize,
    /// Rows after.
    pub vocab_after: usize,
    /// The init strategy of the added rows.
    pub init: String,
    /// The reference word, for the `reference` strategy.
    pub reference: Option<(String, u32)>,
    /// Total, frozen, trainable parameters.
    pub params: ParamReport,
    /// The first trainable row of `wte` when only the added rows train.
    pub wte_trainable_from: Option<usize>,
    /// The adapters, under LoRA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<crate::lora::LoraConfig>,
}

impl ModelStats {
    /// Readable summary.
    pub fn summary(&self) -> String {
        let mut out = format!("Base weights: {}\n", self.weights);
        if let Some(shape) = &self.shape {
            out += &format!(
                "GPT-2: {} layers, {} heads, n_embd {}, n_positions {}\n",
                shape.n_layer, shape.n_head, shape.n_embd, shape.n_positions
            );
        }
        out += &format!("Vocabulary: {} → {} rows, new rows: {}", self.vocab_before, self.vocab_after, self.init);
        if let Some((word, id)) = &self.reference {
            out += &format!(" (reference {word:?}, id {id})");
        }
        out += "\n";
        out += &self.params.summary();
        out
    }
}

/// The base model `config.base` names, fetched (with its weights unless it
/// is initialised from scratch, and its tokenizer when `tokenizer`) and
/// opened: the one place the model crate fetches the base.
pub fn fetch_base(hub: &Hub, config: &StageConfig, tokenizer: bool) -> Result<ModelDir, ModelError> {
    ModelDir::fetch(hub, &config.base, Needs { weights: !config.from_scratch, tokenizer })
}

/// Runs the model stage into `run` on `device`.
pub fn run<B: Backend>(ctx: &StageContext<B::Device>, config: &StageConfig) -> Result<StageReport, ModelError> {
    let (run, hub, device, force) = (ctx.run, ctx.hub, &ctx.device, ctx.force);
    config.validate()?;
    let vocab_stage = UpstreamCheck::require(run, Stage::Vocab)?;
    let base_dir = fetch_base(hub, config, config.init == InitStrategy::Reference)?;
    let config_path = base_dir.config_path();
    let mut inputs = vec![
        vocab_stage.input.clone(),
        InputRecord::file("base_config", &config_path).map_err(|e| ModelError::Io {
            path: config_path.clone(),
            action: "cannot read the model config",
            source: e.source,
        })?,
    ];
    // The weight file; a sharded checkpoint's index, then each of its shards.
    let weight_files = if config.from_scratch { Vec::new() } else { base_dir.weight_files()? };
    for (i, file) in weight_files.iter().enumerate() {
        let shard = file.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let name = if i == 0 { "base_weights".to_string() } else { format!("base_weights/{shard}") };
        inputs.push(InputRecord::file(&name, file)?);
    }
    let config_json = serde_json::to_value(config).expect("the model config serialises");
    let writer = match StageWriter::begin_unless_up_to_date(run, Stage::Model, config_json, inputs, force)? {
        Begin::UpToDate(manifest) => {
            let stats: ModelStats = serde_json::from_value(manifest.stats.clone()).unwrap_or_default();
            return Ok(StageReport { summary: stats.summary(), manifest, up_to_date: true });
        }
        Begin::Run(writer) => writer,
    };

    let (hf, base) = (base_dir.hf_config(), base_dir.config().clone());
    if let crate::BlockCount::Count(n) = config.freeze.lower_blocks
        && n > base.n_layer
    {
        let layers = base.n_layer;
        let problem = format!("{n}, but the model has {layers} blocks; use 0 to {layers}, or \"half\"");
        return Err(SettingError::new("model.freeze.lower_blocks", problem).into());
    }
    if let Some(lora) = &config.lora {
        lora.validate(base.n_layer)?;
    }
    let info = VocabInfo::read(&vocab_stage.manifest.output_path(run, tp06_vocab::outputs::VOCAB_INFO))?;
    let added = tp06_vocab::read_added(&vocab_stage.manifest.output_path(run, tp06_vocab::outputs::ADDED_TOKENS))?;
    if info.base_vocab_size > base.vocab_size {
        return Err(ModelError::TokenizerMismatch {
            tokens: info.base_vocab_size,
            rows: base.vocab_size,
            config: config_path.clone(),
        });
    }

    ctx.check_stop(Stage::Model)?;
    let stopped = |e| match e {
        ModelError::Stopped { .. } => ModelError::Interrupted(Interrupted::of(Stage::Model, run)),
        other => other,
    };
    let (model, load): (Gpt2<B>, Option<LoadReport>) = match config.from_scratch {
        false => {
            let (model, report) = base_dir.load::<B>(device, ctx.watch()).map_err(stopped)?;
            (model, Some(report))
        }
        true => (base_dir.scratch::<B>(config.seed, device), None),
    };

    // Resize `wte` as transformers' `resize_token_embeddings(len(tokenizer))` does,
    // then initialise the added rows.
    let reference = match config.init {
        InitStrategy::Reference if !added.is_empty() => Some(reference_word(&base_dir, config)?),
        _ => None,
    };
    let by_id: std::collections::HashMap<u32, &tp06_vocab::AddedName> = added.iter().map(|a| (a.id, a)).collect();
    let model = resize_wte(model, info.vocab_size, config.seed, |row| match (config.init, by_id.get(&(row as u32))) {
        (InitStrategy::Reference, _) => {
            RowInit::Reference { id: reference.as_ref().map_or(0, |(_, id)| *id), noise_std: config.noise_std }
        }
        (InitStrategy::SubwordMean, Some(added)) => RowInit::SubwordMean(added.pieces.clone()),
        (InitStrategy::Random, _) => RowInit::Random { std: base.initializer_range },
        (InitStrategy::Mean | InitStrategy::SubwordMean, _) => RowInit::Mean,
    });
    let shape = Gpt2Config { vocab_size: info.vocab_size, ..base.clone() };

    let mut plan = FreezePlan::new(&config.freeze, &shape, info.base_vocab_size);
    let mut params = ParamReport::new(&shape, &plan);
    if let Some(lora) = &config.lora {
        plan = plan.under_lora(&shape);
        params = ParamReport::new(&shape, &plan).with_lora(lora.num_params(shape.n_layer, shape.n_embd, shape.n_inner));
    }

    let mut hf_out = hf.with_vocab_size(info.vocab_size);
    for (key, id) in [("bos_token_id", info.bos_id), ("eos_token_id", info.eos_id), ("pad_token_id", Some(info.pad_id))]
    {
        if let Some(id) = id {
            hf_out = hf_out.with(key, id.into());
        }
    }
    tp06_artifact::fs::write_atomic(&writer.path(outputs::CONFIG), hf_out.to_json_pretty().as_bytes())?;
    ctx.check_stop(Stage::Model)?;
    tp06_artifact::fs::write_json_atomic(&writer.path(outputs::FREEZE), &plan)?;
    let tokenizer: Vec<PathBuf> =
        tp06_vocab::outputs::HF_FILES.iter().map(|file| vocab_stage.manifest.output_path(run, file)).collect();
    let mut files = ModelDir::write(&model, &writer.dir(), &tokenizer, ctx.watch()).map_err(stopped)?; // weights, then the tokenizer's
    files.insert(0, outputs::CONFIG.to_string());
    files.insert(2, outputs::FREEZE.to_string());
    // An earlier run's adapter would be read as this one's.
    let _ = std::fs::remove_dir_all(writer.path(outputs::ADAPTER));
    if let Some(lora) = &config.lora {
        // The fresh adapter, beside the base weights it goes on.
        let model = crate::lora::attach(model, lora, config.seed, device);
        let rows = plan.wte_trainable_from.map_or(0..0, |from| from..info.vocab_size);
        let dir = writer.path(outputs::ADAPTER);
        let written = crate::lora::write_adapter(&model, lora, &peft_base_name(&config.base), rows, &dir, &tokenizer)?;
        files.extend(written.into_iter().map(|name| format!("{}/{name}", outputs::ADAPTER)));
    }

    let init = match config.init {
        InitStrategy::Reference => format!("reference + N(0, {}²)", config.noise_std),
        InitStrategy::Mean => "mean of the pretrained rows".into(),
        InitStrategy::SubwordMean => "mean of the name's former pieces".into(),
        InitStrategy::Random => format!("N(0, {}²)", base.initializer_range),
    };
    let stats = ModelStats {
        weights: weight_files
            .first()
            .map_or_else(|| format!("from scratch (seed {})", config.seed), |f| f.display().to_string()),
        load,
        shape: Some(shape),
        vocab_before: base.vocab_size,
        vocab_after: info.vocab_size,
        init,
        reference,
        params,
        wte_trainable_from: plan.wte_trainable_from,
        lora: config.lora.clone(),
    };
    let environment = serde_json::json!({ "base_dir": base_dir.path().display().to_string(), "seed": config.seed, "backend": ctx.backend });
    let manifest = writer.finish(&files, environment, serde_json::to_value(&stats).expect("stats serialise"))?;
    Ok(StageReport { summary: stats.summary(), manifest, up_to_date: false })
}

/// The base model `config.base` names, as the model stage starts from it:
/// its weights read, or initialised from scratch (`model.from_scratch`,
/// seeded with `model.seed`), with its tokenizer's files. Its tensors are
/// shown by `watch` and it stops between two of them when that says so.
/// Returns the model and its directory.
pub fn load_base<B: Backend>(
    hub: &Hub,
    config: &StageConfig,
    device: &B::Device,
    watch: Watch<'_>,
) -> Result<(Gpt2<B>, ModelDir), ModelError> {
    let dir = fetch_base(hub, config, true)?;
    let model = match config.from_scratch {
        true => dir.scratch::<B>(config.seed, device),
        false => dir.load::<B>(device, watch)?.0,
    };
    Ok((model, dir))
}

/// The reference word of the `reference` init and its id: the first of
/// `model.reference_words` that the base model's tokenizer encodes to a single
/// token at text start (the course looks before adding the names).
fn reference_word(base: &ModelDir, config: &StageConfig) -> Result<(String, u32), ModelError> {
    let tok = tp06_vocab::Tok::from_dir(base.tokenizer_dir())?;
    tp06_vocab::reference_word(&tok, &config.reference_words)?.ok_or_else(|| {
        let words = config.reference_words.join(", ");
        let problem = format!(
            "\"reference\" but none of model.reference_words ({words}) is a single token; \
             change model.reference_words or use model.init = \"subword-mean\""
        );
        SettingError::new("model.init", problem).into()
    })
}

/// What peft records as an adapter's base model: the hub id, or the local path.
pub fn peft_base_name(base: &tp06_artifact::Source) -> String {
    match base {
        tp06_artifact::Source::Hub { repo, .. } => repo.clone(),
        tp06_artifact::Source::Local(path) => path.display().to_string(),
    }
}

/// Loads the model stage's output (`RUN_DIR/model/`) and its freeze plan;
/// under LoRA, with its fresh adapters.
pub fn load_stage_model<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(Gpt2<B>, Gpt2Config, FreezePlan), ModelError> {
    let model_dir = ModelDir::open(dir)?;
    let (model, _) = model_dir.load::<B>(device, Watch::none())?;
    let path = dir.join(outputs::FREEZE);
    let text = std::fs::read_to_string(&path).map_err(|e| ModelError::Io {
        path: path.clone(),
        action: "cannot read",
        source: e,
    })?;
    let plan =
        serde_json::from_str(&text).map_err(|e| ModelError::Artifact { path: path.clone(), reason: e.to_string() })?;
    Ok((model, model_dir.config().clone(), plan))
}
