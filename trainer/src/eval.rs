//! `smoothface-train eval ijbc`: the shared IJB-B/C evaluation ([`smoothface_shared::ijb`])
//! with a checkpoint's backbone in libtorch, batched on the GPU when there is one, so a
//! checkpoint is judged without exporting it (and gives the numbers its export gives on the
//! device).

use crate::backbone::{input_spec, Backbone};
use crate::checkpoint;
use crate::data::crops_to_tensor;
use anyhow::{anyhow, Result};
use indicatif::{ProgressBar, ProgressStyle};
use smoothface_shared::ijb::features::BoxError;
use smoothface_shared::ijb::{self, EvalOptions, FaceEmbedder, IjbReport, IjbSet};
use smoothface_shared::manifest::{sha256_file, InputSpec};
use std::path::Path;
use std::sync::Mutex;
use tch::{nn, Device, Kind};

/// A checkpoint's backbone in evaluation mode.
pub struct TorchEmbedder {
    /// libtorch runs one forward pass at a time; the evaluation calls from one thread anyway.
    backbone: Mutex<Box<dyn Backbone>>,
    /// Keeps the weights alive.
    _vars: nn::VarStore,
    spec: InputSpec,
    device: Device,
    batch: usize,
    /// sha256 of the checkpoint file.
    id: String,
    dim: usize,
}

impl TorchEmbedder {
    /// Loads the backbone of `checkpoint` onto `device`, to embed `batch` crops a pass.
    pub fn load(checkpoint: &Path, device: Device, batch: usize) -> Result<TorchEmbedder> {
        let checkpoint::LoadedBackbone {
            mut vars,
            backbone,
            arch,
        } = checkpoint::load_backbone(checkpoint)?;
        vars.set_device(device);
        Ok(TorchEmbedder {
            backbone: Mutex::new(backbone),
            _vars: vars,
            spec: input_spec(arch),
            device,
            batch: batch.max(1),
            id: sha256_file(checkpoint)?,
            dim: crate::backbone::EMBEDDING_SIZE as usize,
        })
    }
}

impl FaceEmbedder for TorchEmbedder {
    fn model_id(&self) -> &str {
        &self.id
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn embed(&self, crops: &[&[u8]]) -> Result<Vec<f32>, BoxError> {
        let backbone = self
            .backbone
            .lock()
            .map_err(|_| -> BoxError { "the backbone's lock is poisoned".into() })?;
        let mut out = Vec::with_capacity(crops.len() * self.dim);
        tch::no_grad(|| -> Result<(), BoxError> {
            for chunk in crops.chunks(self.batch) {
                let input = crops_to_tensor(chunk, &self.spec).to_device(self.device);
                let features = backbone
                    .forward_t(&input, false)
                    .to_kind(Kind::Float)
                    .to_device(Device::Cpu)
                    .contiguous();
                out.extend(Vec::<f32>::try_from(features.flatten(0, -1))?);
            }
            Ok(())
        })?;
        Ok(out)
    }
}

/// Evaluates `model` on the set at `dir`, with a progress bar over its faces when `progress`.
pub fn ijbc(
    model: &TorchEmbedder,
    dir: &Path,
    options: &EvalOptions,
    progress: bool,
) -> Result<IjbReport> {
    let set = IjbSet::open(dir)?;
    let bar = if progress {
        let bar = ProgressBar::new(set.faces.len() as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {bar:40} {pos}/{len} faces  {per_sec}  eta {eta}",
            )
            .map_err(|e| anyhow!(e))?,
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let report = ijb::run(&set, model, options, &|n| bar.inc(n as u64))?;
    bar.finish_and_clear();
    Ok(report)
}
