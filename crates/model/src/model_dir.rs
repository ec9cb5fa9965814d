//! A model directory in HF's layout, opened, built and written in one place.
//!
//! Every model the project reads or writes is one: the base (`model.base`, a
//! hub id fetched through the hub cache or a local directory), the model
//! stage's output (the base resized, with a fresh LoRA adapter in
//! `adapter/` under LoRA), the train stage's `export/` and `best/`, and the
//! models given to `sample`, `serve`, `explore` and `bench`. It holds
//! `config.json` (read and resolved here, once), the weights
//! (`model.safetensors`, a sharded checkpoint's index, or PyTorch's
//! `pytorch_model.bin`, read tensor by tensor by [`crate::weights`]), the
//! tokenizer's files, and perhaps a peft adapter ([`crate::lora`]).
//!
//! The model is built by walking [`crate::names::table`], the one table of
//! HF names; a new weight precision or file format adds a reader or a writer
//! beside this type, never a walk of its own.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use tp06_artifact::hub::Hub;
use tp06_artifact::shards::ShardIndex;
use tp06_artifact::{Source, Watch};

use crate::ModelError;
use crate::config::{Gpt2Config, HfConfig};
use crate::gpt2::Gpt2;
use crate::init::{RowInit, ScratchInit, init_from_scratch, resize_wte};
use crate::names;
use crate::precision::Precision;
use crate::weights::{self, LoadReport, Make, SAFETENSORS, WEIGHT_FILES};

/// The model's configuration file.
pub const CONFIG: &str = "config.json";
/// Where a directory keeps the peft adapter that goes on its weights (the
/// model stage's output under LoRA).
pub const ADAPTER_DIR: &str = "adapter";

/// What a caller needs of a model directory fetched from the hub, besides
/// its `config.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// The weights.
    pub weights: bool,
    /// The tokenizer's files.
    pub tokenizer: bool,
}

/// An HF model directory, its `config.json` read.
#[derive(Debug, Clone)]
pub struct ModelDir {
    dir: PathBuf,
    hf: HfConfig,
    config: Gpt2Config,
    adapter: Option<PathBuf>,
}

impl ModelDir {
    /// Opens the local directory `dir`: reads and resolves its
    /// `config.json`, and notes its adapter when `adapter/` holds one. The
    /// weights are read by [`Self::load`].
    pub fn open(dir: &Path) -> Result<Self, ModelError> {
        let hf = HfConfig::from_file(&dir.join(CONFIG))?;
        let config = hf.resolve()?;
        let adapter = dir.join(ADAPTER_DIR);
        let adapter = adapter.join(crate::lora::ADAPTER_CONFIG).is_file().then_some(adapter);
        Ok(Self { dir: dir.to_path_buf(), hf, config, adapter })
    }

    /// `source` (a hub id, fetched into the hub cache with what `needs`
    /// asks, or a local directory), opened. Every model the project reads
    /// from the hub comes through here.
    pub fn fetch(hub: &Hub, source: &Source, needs: Needs) -> Result<Self, ModelError> {
        let mut wanted: Vec<&[&str]> = vec![&[CONFIG]];
        if needs.weights {
            wanted.push(WEIGHT_FILES);
        }
        if needs.tokenizer {
            wanted.extend_from_slice(tp06_vocab::TOKENIZER_FILES);
        }
        let dir = tp06_artifact::hub::model_dir(hub, source, &wanted).map_err(|source| ModelError::Hub { source })?;
        Self::open(&dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Its `config.json`.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join(CONFIG)
    }

    /// `config.json` as written, for a directory written from it.
    pub fn hf_config(&self) -> &HfConfig {
        &self.hf
    }

    /// The shape `config.json` resolves to.
    pub fn config(&self) -> &Gpt2Config {
        &self.config
    }

    /// Where the tokenizer's files are: beside its adapter when that carries
    /// them, else in the directory itself ([`Self::tokenizer_dir_with`]).
    pub fn tokenizer_dir(&self) -> &Path {
        self.tokenizer_dir_with(self.adapter.as_deref())
    }

    /// Where the tokenizer's files are with the peft adapter `adapter` on
    /// the directory: beside the adapter when it carries them (peft saves
    /// the tokenizer an adapter with added tokens was trained with), else in
    /// the directory itself.
    pub fn tokenizer_dir_with<'a>(&'a self, adapter: Option<&'a Path>) -> &'a Path {
        match adapter {
            Some(adapter) if adapter.join(tp06_vocab::outputs::TOKENIZER).is_file() => adapter,
            _ => &self.dir,
        }
    }

    /// The peft adapter directory in it, if any.
    pub fn adapter(&self) -> Option<&Path> {
        self.adapter.as_deref()
    }

    /// The weight file: `model.safetensors`, else a sharded checkpoint's
    /// index, else `pytorch_model.bin` ([`weights::weight_file`]).
    pub fn weight_file(&self) -> Result<PathBuf, ModelError> {
        weights::weight_file(&self.dir)
    }

    /// The files the weights are read from, for a manifest's inputs: the
    /// weight file, and a sharded checkpoint's shards after its index.
    pub fn weight_files(&self) -> Result<Vec<PathBuf>, ModelError> {
        let file = self.weight_file()?;
        let mut files = vec![file.clone()];
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if ShardIndex::is_index(name) {
            let index = ShardIndex::read(&file).map_err(|reason| ModelError::Weights { path: file.clone(), reason })?;
            files.extend(index.files().into_iter().map(|shard| self.dir.join(shard)));
        }
        Ok(files)
    }

    /// The model: its weights read (shown by `watch`, stopped between two
    /// tensors when that says so), with its adapter when it has one.
    pub fn load<B: Backend>(&self, device: &B::Device, watch: Watch<'_>) -> Result<(Gpt2<B>, LoadReport), ModelError> {
        self.load_in(Precision::F32, device, watch)
    }

    /// [`Self::load`] with the weights in `precision`, each stored so as it
    /// is read (with an adapter: read in f32, merged, then converted).
    pub fn load_in<B: Backend>(
        &self,
        precision: Precision,
        device: &B::Device,
        watch: Watch<'_>,
    ) -> Result<(Gpt2<B>, LoadReport), ModelError> {
        let direct = if self.adapter.is_some() { Precision::F32 } else { precision };
        let (mut model, report) = weights::load_in::<B>(&self.weight_file()?, &self.config, direct, device, watch)?;
        if let Some(adapter) = &self.adapter {
            model = crate::lora::load_adapter(model, adapter, device)?.0.with_precision(precision);
        }
        Ok((model, report))
    }

    /// A model of its shape initialised from scratch as HF does, seeded by `seed`.
    pub fn scratch<B: Backend>(&self, seed: u64, device: &B::Device) -> Gpt2<B> {
        init_from_scratch::<B>(&self.config, ScratchInit { seed }, device)
    }

    /// The model with the peft adapter `adapter` on it (ours, or one peft
    /// wrote), not merged: `wte` grown to `vocab_size` rows first, as
    /// transformers' `resize_token_embeddings` before peft loads an adapter
    /// trained with added tokens; every added row must be among the
    /// adapter's trainable tokens, which fill them.
    pub fn load_with_adapter<B: Backend>(
        &self,
        adapter: &Path,
        vocab_size: usize,
        device: &B::Device,
    ) -> Result<Gpt2<B>, ModelError> {
        let (model, _) = weights::load::<B>(&self.weight_file()?, &self.config, device)?;
        let info = crate::lora::read_adapter_info(adapter)?;
        let rows = model.vocab_size();
        if let Some(row) = (rows..vocab_size).find(|r| !info.token_rows.contains(r)) {
            let reason = format!(
                "its tokenizer has {vocab_size} tokens, the base model {rows} rows, and the adapter does not carry row {row} \
                 (trainable_token_indices): it was not trained with these added tokens"
            );
            return Err(ModelError::Adapter { path: adapter.join(crate::lora::ADAPTER_CONFIG), reason });
        }
        let model = match vocab_size > rows {
            true => resize_wte(model, vocab_size, 0, |_| RowInit::Zero),
            false => model,
        };
        Ok(crate::lora::load_adapter(model, adapter, device)?.0)
    }

    /// Writes `model` as an HF model directory `dir`: its weights as
    /// `model.safetensors` (its adapters, if any, merged into them: what
    /// plain transformers loads), and the `files` (`config.json`, the
    /// tokenizer's) copied beside them under their own names, its tensors
    /// shown and stopped by `watch` (see [`weights::write_tensors`]).
    /// Returns the names written, weights first.
    pub fn write<B: Backend>(
        model: &Gpt2<B>,
        dir: &Path,
        files: &[PathBuf],
        watch: Watch<'_>,
    ) -> Result<Vec<String>, ModelError> {
        if model.precision() == Precision::Int8 {
            let reason =
                "the model is in int8, which HF directories do not hold; write the f32 model (int8 is made at load)";
            return Err(ModelError::Weights { path: dir.join(SAFETENSORS), reason: reason.into() });
        }
        tp06_artifact::fs::create_dir_all(dir)?;
        // A layer with an adapter is written merged, `W + ΔW` made when its
        // turn comes: one merged weight at a time beside the model, not all.
        let adapters = model.adapted_weights();
        let tensors = weights::hf_tensors(model)
            .into_iter()
            .map(|(key, shape, tensor)| -> (String, Vec<usize>, Make<'_, B>) {
                match adapters.get(names::our_name(&key)) {
                    Some(&(weight, lora)) => {
                        let n = tensor.dims()[0];
                        (key, shape, Box::new(move || (weight.val() + lora.delta()).reshape([n])))
                    }
                    None => (key, shape, Box::new(move || tensor.clone())),
                }
            })
            .collect();
        weights::write_made(&dir.join(SAFETENSORS), tensors, watch)?;
        let mut names = vec![SAFETENSORS.to_string()];
        for from in files {
            let name = from.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            tp06_artifact::fs::copy_atomic(from, &dir.join(&name))?;
            names.push(name);
        }
        Ok(names)
    }
}
