//! Face embedding in tract: aligned 112x112 crops in, L2-normalised vectors out.

use crate::onnx::{self, PlanCache};
use anyhow::{bail, Context, Result};
use smoothface_shared::embedding::l2_normalize;
use smoothface_shared::manifest::{InputSpec, Layout, ModelKind, Thresholds, VerifiedModel};
use smoothface_shared::preprocess::face_tensor;
use tract_onnx::prelude::*;

/// An embedding model ready to run.
pub struct Embedder {
    plans: PlanCache,
    /// How crops become input tensors.
    pub spec: InputSpec,
    /// The ONNX file, for peers that run the same graph (the benchmark).
    pub onnx_path: std::path::PathBuf,
    dim: usize,
    max_batch: usize,
    /// The model's identity (sha256 of its ONNX file): embeddings are stored under it.
    pub model_id: String,
    /// The manifest's name.
    pub name: String,
    /// Whether the model is an int8 quantization of another (`smoothface-train quantize`
    /// records `quantized_from` in its origin): runtimes then legitimately round differently.
    pub quantized: bool,
    /// The similarity thresholds of this model: its manifest's, else [`Thresholds::FALLBACK`].
    pub thresholds: Thresholds,
    /// Whether [`Embedder::thresholds`] come from the manifest (false: the fallback, which
    /// commands warn about).
    pub calibrated: bool,
}

/// Batch sizes whose plans are kept (the indexer embeds the faces of one photo at a time, so
/// a few small sizes cover nearly every call).
const MAX_PLANS: usize = 8;

/// The input shape of `n` faces.
fn input_shape(spec: &InputSpec, n: usize) -> [usize; 4] {
    match spec.layout {
        Layout::Nchw => [n, 3, spec.size, spec.size],
        Layout::Nhwc => [n, spec.size, spec.size, 3],
    }
}

impl Embedder {
    /// Loads the embedder of a verified model folder. Graphs whose manifest declares
    /// `max_batch: 1` (a hard-coded batch, like the pretrained MobileFaceNet's final
    /// `Reshape [1,-1]`) run one face per call; others run up to 64 at once.
    pub fn load(model: &VerifiedModel) -> Result<Embedder> {
        Embedder::load_graph(model, onnx::load_graph)
    }

    /// Loads the embedder with its graph exactly as written, without the device's rewrites
    /// (see [`onnx::load_graph`]): for the benchmark, which times both.
    pub fn load_as_written(model: &VerifiedModel) -> Result<Embedder> {
        Embedder::load_graph(model, onnx::load_graph_unmodified)
    }

    fn load_graph(
        model: &VerifiedModel,
        parse: fn(&std::path::Path) -> Result<onnx::Graph>,
    ) -> Result<Embedder> {
        let m = &model.manifest;
        if m.kind != ModelKind::Embedder {
            bail!(
                "{}: is not an embedder (kind {:?}); pass an embedder folder to --model",
                model.dir.display(),
                m.kind
            );
        }
        let (spec, dim) = (
            m.input.expect("checked by the manifest loader"),
            m.embedding_size.expect("checked"),
        );
        let path = model.dir.join(&m.files[0].file);
        let graph = parse(&path)?;
        let max_batch = m.max_batch.unwrap_or(usize::MAX).max(1);
        // One plan per batch size, each for its concrete shape: tract ran a plan with a
        // symbolic batch five times slower (98.5 ms a face against 19.7 ms, MobileFaceNet
        // exported by the trainer). Planning batch 1 now makes a bad model fail at load.
        let plans = PlanCache::new(graph, MAX_PLANS);
        plans
            .get(&input_shape(&spec, 1))
            .with_context(|| format!("{}: cannot plan the embedder", path.display()))?;
        Ok(Embedder {
            plans,
            spec,
            onnx_path: path,
            dim,
            max_batch,
            model_id: model.id.clone(),
            name: m.name.clone(),
            quantized: m
                .origin
                .as_ref()
                .is_some_and(|o| o.get("quantized_from").is_some()),
            thresholds: m.thresholds.clone().unwrap_or(Thresholds::FALLBACK),
            calibrated: m.thresholds.is_some(),
        })
    }

    /// Embedding size.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// A warning for a model without calibrated thresholds, naming what it gets instead and how
    /// to calibrate it; `None` for a calibrated model.
    pub fn uncalibrated_warning(&self) -> Option<String> {
        (!self.calibrated).then(|| {
            let t = &self.thresholds;
            format!(
                "model {} has no calibrated thresholds in its manifest: using conservative ones \
                 (link {}, identify {}, track {} / {}), which keep people apart rather than merge \
                 them; calibrate it with `smoothface --model {} eval calibrate --write`",
                self.name,
                t.link,
                t.identify,
                t.track,
                t.track_strong,
                self.onnx_path.parent().unwrap_or(&self.onnx_path).display()
            )
        })
    }

    /// Side of the crop the model expects.
    pub fn crop_size(&self) -> usize {
        self.spec.size
    }

    /// Embeds aligned RGB crops (`size * size * 3` bytes each) into unit vectors, row-major.
    pub fn embed(&self, crops: &[&[u8]]) -> Result<Vec<f32>> {
        let mut v = self.embed_raw(crops)?;
        v.chunks_exact_mut(self.dim).for_each(|row| {
            l2_normalize(row);
        });
        Ok(v)
    }

    /// The model's outputs for aligned RGB crops as they are, not normalised: their norm is
    /// a quality signal that IJB-style template pooling weighs faces by.
    pub fn embed_raw(&self, crops: &[&[u8]]) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(crops.len() * self.dim);
        for chunk in crops.chunks(self.max_batch.min(64)) {
            out.extend(self.embed_batch(chunk)?);
        }
        Ok(out)
    }

    /// Time per tract operator of embedding one crop, over `runs` runs (see [`onnx::profile`]).
    pub fn profile(&self, crop: &[u8], runs: usize) -> Result<Vec<onnx::OpTime>> {
        let input = self.input_tensor(&[crop])?;
        onnx::profile(&self.plans.get(input.shape())?, &input, runs)
    }

    /// The input tensor of aligned crops, as [`Embedder::embed`] feeds the graph.
    pub fn input_tensor(&self, crops: &[&[u8]]) -> Result<Tensor> {
        let per = 3 * self.spec.size * self.spec.size;
        let mut data = vec![0.0f32; crops.len() * per];
        for (crop, slot) in crops.iter().zip(data.chunks_exact_mut(per)) {
            face_tensor(crop, &self.spec, slot);
        }
        Tensor::from_shape(&input_shape(&self.spec, crops.len()), &data)
    }

    fn embed_batch(&self, crops: &[&[u8]]) -> Result<Vec<f32>> {
        let n = crops.len();
        let input = self.input_tensor(crops)?;
        let out = self.plans.get(input.shape())?.run(tvec!(input.into()))?;
        // Never trust a graph's batch handling: the output must be exactly [n, dim].
        if out[0].shape() != [n, self.dim] {
            bail!(
                "embedder returned shape {:?} for {n} faces, expected [{n}, {}]",
                out[0].shape(),
                self.dim
            );
        }
        let v = out[0].try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
        // A diverged model gives NaN or infinite outputs: they must never enter a gallery or a
        // metric, where they would rank as nonsense.
        if let Err(e) = smoothface_shared::metrics::check_finite(&v) {
            bail!(
                "{}: the embedder's output is unusable: {e}",
                self.onnx_path.display()
            );
        }
        Ok(v)
    }
}
