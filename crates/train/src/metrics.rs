//! `metrics.jsonl` (one record per logged step) and the loss-curve plot.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::chart::{PALETTE, Series, line_chart};

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Optimiser steps done.
    pub step: u64,
    /// Epochs done (fractional).
    pub epoch: f64,
    /// Mean training loss since the previous record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// Learning rate of the last step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// Global gradient norm of the last step, before clipping.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grad_norm: Option<f64>,
    /// Token positions (padding included) per second since the previous record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_second: Option<f64>,
    /// Validation loss (mean over label tokens).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_loss: Option<f64>,
    /// `exp(eval_loss)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_perplexity: Option<f64>,
}

impl Record {
    /// The record of an evaluation alone, at `step`.
    pub fn evaluation(step: u64, epoch: f64, eval_loss: f64) -> Self {
        Self { step, epoch, eval_loss: Some(eval_loss), eval_perplexity: Some(eval_loss.exp()), ..Default::default() }
    }
}

/// Reads `metrics.jsonl` (missing file: no records).
pub fn read(path: &Path) -> Result<Vec<Record>, TrainError> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(Vec::new()) };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| TrainError::Checkpoint {
                path: path.to_path_buf(),
                reason: format!("line {}: {e}", i + 1),
            })
        })
        .collect()
}

/// Keeps the records up to `step` (a resumed run continues from there).
pub fn truncate_after(path: &Path, step: u64) -> Result<(), TrainError> {
    let kept: Vec<Record> = read(path)?.into_iter().filter(|r| r.step <= step).collect();
    let mut text = String::new();
    for record in &kept {
        text += &serde_json::to_string(record).expect("a record serialises");
        text.push('\n');
    }
    tp06_artifact::fs::write_atomic(path, text.as_bytes())?;
    Ok(())
}

/// Appends one record.
pub fn append(path: &Path, record: &Record) -> Result<(), TrainError> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| TrainError::Checkpoint { path: path.to_path_buf(), reason: e.to_string() })?;
    writeln!(file, "{}", serde_json::to_string(record).expect("a record serialises"))
        .map_err(|e| TrainError::Checkpoint { path: path.to_path_buf(), reason: e.to_string() })
}

/// Draws the training and validation loss against the step, as an SVG
/// (nothing when no record has a loss).
pub fn plot_loss(records: &[Record], path: &Path, title: &str) -> Result<(), TrainError> {
    let train: Vec<(f64, f64)> = records.iter().filter_map(|r| r.loss.map(|l| (r.step as f64, l))).collect();
    let valid: Vec<(f64, f64)> = records.iter().filter_map(|r| r.eval_loss.map(|l| (r.step as f64, l))).collect();
    let mut series = vec![
        Series { label: "train", points: train, color: PALETTE[0], markers: false },
        Series { label: "validation", points: valid, color: PALETTE[1], markers: true },
    ];
    series.retain(|s| !s.points.is_empty());
    if series.is_empty() {
        return Ok(());
    }
    let svg = line_chart(title, "step", "loss", &series, None)?;
    tp06_artifact::fs::write_atomic(path, svg.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(step: u64, loss: Option<f64>, eval_loss: Option<f64>) -> Record {
        Record { step, loss, eval_loss, ..Default::default() }
    }

    #[test]
    fn the_loss_plot_draws_the_curves_it_has_and_nothing_without_a_loss() {
        let dir = tempfile::tempdir().unwrap();
        let both = dir.path().join("both.svg");
        plot_loss(
            &[record(1, Some(3.0), None), record(2, Some(2.5), Some(2.7)), record(4, Some(2.0), Some(2.4))],
            &both,
            "loss",
        )
        .unwrap();
        let svg = std::fs::read_to_string(&both).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("\ntrain\n") && svg.contains("\nvalidation\n"), "{svg}");

        let train_only = dir.path().join("train.svg");
        plot_loss(&[record(1, Some(3.0), None), record(2, Some(2.5), None)], &train_only, "loss").unwrap();
        let svg = std::fs::read_to_string(&train_only).unwrap();
        assert!(svg.contains("\ntrain\n") && !svg.contains("\nvalidation\n"), "{svg}");

        let none = dir.path().join("none.svg");
        plot_loss(&[record(1, None, None)], &none, "loss").unwrap();
        assert!(!none.exists());
    }
}
