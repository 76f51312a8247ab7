//! What a run records after each epoch: one JSON object per line in `metrics.jsonl`.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use smoothface_shared::atomic::write_atomically;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// The record of one epoch. Epoch 0 is the model before training (no loss, no speed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epochs completed.
    pub epoch: usize,
    /// Optimiser steps completed.
    pub step: usize,
    /// Mean training loss over the epoch's batches.
    pub train_loss: Option<f64>,
    /// Training images per second over the epoch (forward, backward, update and data).
    pub images_per_second: Option<f64>,
    /// Validation mean average precision.
    pub val_map: f64,
    /// Validation Recall@K, by K.
    pub val_recall: BTreeMap<usize, f64>,
    /// Validation queries (faces with another face of the same person).
    pub val_queries: usize,
    /// Seconds since the run (or its resumption) started.
    pub elapsed_seconds: f64,
    /// Steps of the epoch that the float16 loss scaler skipped for an overflowing gradient.
    #[serde(default)]
    pub skipped_steps: usize,
}

/// Reads the records of `path` (none when it does not exist); a line that is not a record is an
/// error naming the file and the line.
pub fn read_all(path: &Path) -> Result<Vec<EpochRecord>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("{}: cannot read", path.display())),
    };
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            serde_json::from_str(line)
                .with_context(|| format!("{}:{}: not an epoch record", path.display(), n + 1))
        })
        .collect()
}

/// Writes `records` to `path`, one per line, atomically: a killed run leaves the old file or the
/// whole new one.
pub fn write_all(records: &[EpochRecord], path: &Path) -> Result<()> {
    let mut text = String::new();
    for record in records {
        text += &serde_json::to_string(record)?;
        text.push('\n');
    }
    write_atomically(path, |file| file.write_all(text.as_bytes()))
        .with_context(|| format!("{}: cannot write", path.display()))
}
