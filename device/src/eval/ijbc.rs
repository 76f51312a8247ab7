//! `smoothface eval ijbc`: the shared IJB-B/C evaluation ([`smoothface_shared::ijb`]) with the
//! tract embedder.

use crate::embedder::Embedder;
use anyhow::{ensure, Result};
use rayon::prelude::*;
use smoothface_shared::align::CROP_SIZE;
use smoothface_shared::ijb::features::BoxError;
use smoothface_shared::ijb::{self, EvalOptions, FaceEmbedder, IjbReport, IjbSet};
use std::path::Path;

/// The tract embedder as the evaluation sees it: crops embedded in parallel across the cores,
/// a few per tract call.
struct Tract<'a>(&'a Embedder);

/// Crops per tract call: batched plans are cached per size, and small batches keep every core
/// busy to the end of a chunk.
const BATCH: usize = 8;

impl FaceEmbedder for Tract<'_> {
    fn model_id(&self) -> &str {
        &self.0.model_id
    }

    fn dim(&self) -> usize {
        self.0.dim()
    }

    fn embed(&self, crops: &[&[u8]]) -> Result<Vec<f32>, BoxError> {
        let parts: Vec<Vec<f32>> = crops
            .par_chunks(BATCH)
            .map(|c| self.0.embed_raw(c))
            .collect::<Result<_>>()
            .map_err(|e| -> BoxError { format!("{e:#}").into() })?;
        Ok(parts.concat())
    }
}

/// Evaluates `embedder` on the set at `dir`, with a progress bar over its faces when `progress`.
pub fn run(
    embedder: &Embedder,
    dir: &Path,
    options: &EvalOptions,
    progress: bool,
) -> Result<IjbReport> {
    ensure!(
        embedder.crop_size() == CROP_SIZE,
        "{}: takes {0}x{0} crops; IJB crops are aligned to the {CROP_SIZE}x{CROP_SIZE} ArcFace \
         template",
        embedder.onnx_path.display(),
    );
    let set = IjbSet::open(dir)?;
    let bar = crate::progress::bar(set.faces.len(), progress, "faces");
    let report = ijb::run(&set, &Tract(embedder), options, &|n| bar.inc(n as u64))?;
    bar.finish_and_clear();
    Ok(report)
}
