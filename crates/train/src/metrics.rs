//! `metrics.jsonl` (one record per logged step) and the loss-curve plot.

use std::io::Write;
use std::path::Path;

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::TrainError;

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

/// Draws the training and validation loss against the step, as an SVG.
pub fn plot_loss(records: &[Record], path: &Path, title: &str) -> Result<(), TrainError> {
    let train: Vec<(f64, f64)> = records.iter().filter_map(|r| r.loss.map(|l| (r.step as f64, l))).collect();
    let valid: Vec<(f64, f64)> = records.iter().filter_map(|r| r.eval_loss.map(|l| (r.step as f64, l))).collect();
    let points: Vec<&(f64, f64)> = train.iter().chain(&valid).collect();
    if points.is_empty() {
        return Ok(());
    }
    let max_step = points.iter().map(|p| p.0).fold(1.0, f64::max);
    let (lo, hi) = points.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
    let pad = ((hi - lo) * 0.05).max(1e-3);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 480)).into_drawing_area();
        let draw = |e: &dyn std::fmt::Display| TrainError::Plot(e.to_string());
        root.fill(&WHITE).map_err(|e| draw(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..max_step, (lo - pad)..(hi + pad))
            .map_err(|e| draw(&e))?;
        chart.configure_mesh().x_desc("step").y_desc("loss").draw().map_err(|e| draw(&e))?;
        chart
            .draw_series(LineSeries::new(train.iter().copied(), BLUE.stroke_width(2)))
            .map_err(|e| draw(&e))?
            .label("train")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
        if !valid.is_empty() {
            chart
                .draw_series(LineSeries::new(valid.iter().copied(), RED.stroke_width(2)))
                .map_err(|e| draw(&e))?
                .label("validation")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
            chart.draw_series(valid.iter().map(|&p| Circle::new(p, 3, RED.filled()))).map_err(|e| draw(&e))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| draw(&e))?;
        root.present().map_err(|e| draw(&e))?;
    }
    tp06_artifact::fs::write_atomic(path, svg.as_bytes())?;
    Ok(())
}
