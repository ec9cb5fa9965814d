//! Resumable checkpoints: `checkpoints/step-NNNNNNNN/` with the model, the
//! optimiser moments and the loop state. A checkpoint is written in a hidden
//! temporary directory and renamed into place, so one that exists is complete;
//! the last `keep` are kept.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use serde::{Deserialize, Serialize};
use tp06_artifact::Watch;
use tp06_model::{Gpt2, Gpt2Config, names};

use crate::TrainError;
use crate::optim::Moments;

/// Every weight; what a full fine-tune's checkpoint holds (an HF weight file).
const MODEL: &str = "model.safetensors";
/// Under LoRA, what trains (the adapters and `wte`), and not the frozen base:
/// that is the model stage's output, which the run's fingerprint pins
/// (earlier LoRA checkpoints hold both files, and still load).
///
/// Both files key a parameter alike, by [`names::hf_key`]
/// (`transformer.wte.weight`, `transformer.h.0.attn.c_attn.lora.a`); the
/// optimiser's moments are `m.`/`v.` and our name. LoRA checkpoints written
/// before 2026-12-07 key theirs by our names alone, and still load: the
/// reader takes either ([`names::our_name`]).
const ADAPTER: &str = "adapter.safetensors";

/// Bump when the checkpoint layout changes.
pub const CHECKPOINT_VERSION: u32 = 1;

/// The loop state saved beside the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopState {
    /// [`CHECKPOINT_VERSION`].
    pub version: u32,
    /// Fingerprint of the run (config and inputs) this checkpoint belongs to.
    pub fingerprint: String,
    /// Optimiser steps done.
    pub step: u64,
    /// Best validation loss so far and its step.
    pub best: Option<(u64, f64)>,
    /// Seconds of training before this checkpoint.
    pub seconds: f64,
    /// Token positions processed before this checkpoint.
    pub positions: u64,
    /// The train stage's settings the run was made with (what a resume with
    /// other settings is told apart by).
    #[serde(default)]
    pub config: serde_json::Value,
    /// The log record of the last step when the run was stopped during that
    /// step's evaluation: a resumed run evaluates first and writes it then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<crate::metrics::Record>,
}

/// A checkpoint on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// Its directory.
    pub dir: PathBuf,
    /// Its loop state.
    pub state: LoopState,
}

fn io(path: &Path, e: std::io::Error) -> TrainError {
    TrainError::Checkpoint { path: path.to_path_buf(), reason: e.to_string() }
}

/// The complete checkpoints under `root`, oldest first. Leftover temporary
/// directories of an interrupted write are removed.
pub fn list(root: &Path) -> Result<Vec<Checkpoint>, TrainError> {
    let Ok(entries) = std::fs::read_dir(root) else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let dir = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with('.') && name.ends_with(".tmp") {
            let _ = std::fs::remove_dir_all(&dir);
            continue;
        }
        if !name.starts_with("step-") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(dir.join("state.json")) else { continue };
        match serde_json::from_str::<LoopState>(&text) {
            Ok(state) if state.version == CHECKPOINT_VERSION => out.push(Checkpoint { dir, state }),
            _ => tracing::warn!("ignoring checkpoint `{}`: unreadable or from another version", dir.display()),
        }
    }
    out.sort_by_key(|c| c.state.step);
    Ok(out)
}

/// Writes a checkpoint and prunes the oldest beyond `keep`.
pub fn save<B>(
    root: &Path,
    model: &Gpt2<B>,
    moments: &BTreeMap<String, Moments<B::InnerBackend>>,
    state: &LoopState,
    keep: usize,
) -> Result<PathBuf, TrainError>
where
    B: burn::tensor::backend::AutodiffBackend,
{
    let name = format!("step-{:08}", state.step);
    let tmp = root.join(format!(".{name}.tmp"));
    let dir = root.join(&name);
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    if model.has_lora() {
        let trained = model.params_trained_under_lora().into_iter();
        let tensors = trained.map(|(name, shape, t)| (names::hf_key(&name), shape, t)).collect();
        tp06_model::write_tensors::<B>(&tmp.join(ADAPTER), tensors, Watch::none())?;
    } else {
        tp06_model::save_safetensors(model, &tmp.join(MODEL))?;
    }
    tp06_artifact::fault::crash("checkpoint");
    let mut tensors = Vec::new();
    for (param, m) in moments {
        let n = m.m.dims()[0];
        tensors.push((format!("m.{param}"), vec![n], m.m.clone()));
        tensors.push((format!("v.{param}"), vec![n], m.v.clone()));
    }
    tp06_model::write_tensors::<B::InnerBackend>(&tmp.join("optimizer.safetensors"), tensors, Watch::none())?;
    tp06_artifact::fs::write_json_atomic(&tmp.join("state.json"), state)?;
    discard(&dir);
    std::fs::rename(&tmp, &dir).map_err(|e| io(&dir, e))?;
    let all = list(root)?;
    for old in all.iter().take(all.len().saturating_sub(keep)) {
        discard(&old.dir);
    }
    Ok(dir)
}

/// Removes a checkpoint directory so that no kill can leave it half-deleted
/// under its own name: it is first renamed to a hidden `.…tmp` name (one
/// atomic step), which [`list`] sweeps away if the removal is interrupted.
fn discard(dir: &Path) {
    if !dir.exists() {
        return;
    }
    let name = dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let doomed = dir.with_file_name(format!(".{name}.old.tmp"));
    let _ = std::fs::remove_dir_all(&doomed);
    if std::fs::rename(dir, &doomed).is_ok() {
        let _ = std::fs::remove_dir_all(&doomed);
    }
}

/// A model and its optimiser's moments by parameter name, as a checkpoint holds them.
pub type Restored<B> =
    (Gpt2<B>, BTreeMap<String, Moments<<B as burn::tensor::backend::AutodiffBackend>::InnerBackend>>);

/// Reads a checkpoint's model and moments; the model has the adapters of
/// `like` (the model being trained, fresh from the model stage), with the
/// checkpoint's values, and under LoRA `like`'s frozen base.
pub fn load<B: burn::tensor::backend::AutodiffBackend>(
    checkpoint: &Checkpoint,
    config: &Gpt2Config,
    like: &Gpt2<B>,
    device: &B::Device,
) -> Result<Restored<B>, TrainError> {
    let full = checkpoint.dir.join(MODEL);
    let model = if like.has_lora() {
        let path = checkpoint.dir.join(ADAPTER);
        let tensors = tp06_model::read_tensors(&path)?;
        let tensors = tensors.into_iter().map(|(key, value)| (names::our_name(&key).to_string(), value)).collect();
        let checkpoint_error = |reason| TrainError::Checkpoint { path: path.clone(), reason };
        if full.is_file() {
            let (model, _) = tp06_model::load::<B>(&full, config, device)?;
            tp06_model::lora::with_adapter_values(model, like, &tensors, device).map_err(checkpoint_error)?
        } else {
            tp06_model::lora::with_trained_values(like, &tensors, device).map_err(checkpoint_error)?
        }
    } else {
        tp06_model::load::<B>(&full, config, device)?.0
    };
    let tensors = tp06_model::read_tensors(&checkpoint.dir.join("optimizer.safetensors"))?;
    let mut moments: BTreeMap<String, Moments<B::InnerBackend>> = BTreeMap::new();
    let tensor = |values: &Vec<f32>| {
        Tensor::<B::InnerBackend, 1>::from_data(TensorData::new(values.clone(), [values.len()]), device)
    };
    for (key, (_, values)) in &tensors {
        if let Some(param) = key.strip_prefix("m.") {
            let v = tensors.get(&format!("v.{param}")).ok_or_else(|| TrainError::Checkpoint {
                path: checkpoint.dir.clone(),
                reason: format!("optimizer.safetensors has m.{param} but no v.{param}"),
            })?;
            moments.insert(param.to_string(), Moments { m: tensor(values), v: tensor(&v.1) });
        }
    }
    Ok((model, moments))
}
