//! `smoothface-train export`: a checkpoint into a model folder the device runs, `model.onnx`
//! beside the `manifest.json` that says how to feed it and where it came from.
//!
//! The graph is written from the backbone's own layers ([`crate::backbone::onnx::OnnxGraph`]);
//! before the folder is published, tract runs the graph on random faces and its output is
//! compared with the checkpoint's in libtorch, so a folder that exists is a faithful copy.

pub mod quantize;
mod tract_graph;

use tract_graph::TractGraph;

use crate::backbone::onnx::{OnnxGraph, INPUT, OPSET};
use crate::backbone::{input_spec, EMBEDDING_SIZE};
use crate::checkpoint;
use anyhow::{bail, ensure, Context, Result};
use prost::Message;
use serde::Serialize;
use smoothface_shared::manifest::{
    sha256_file, ModelFile, ModelKind, ModelManifest, MANIFEST_FILE,
};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// Name of the graph in an exported model folder.
pub const MODEL_FILE: &str = "model.onnx";

/// Largest difference allowed between the checkpoint (libtorch) and the exported graph (tract)
/// on the export's own check, relative to the largest output (or absolute below 1).
pub const TOLERANCE: f32 = 1e-4;

/// What an export did.
#[derive(Debug, Clone, Serialize)]
pub struct Exported {
    /// The model folder.
    pub dir: PathBuf,
    /// The backbone's architecture, read from the checkpoint's variable names.
    pub arch: String,
    /// sha256 of `model.onnx`.
    pub onnx_sha256: String,
    /// Largest difference between libtorch and tract over the check's random faces.
    pub max_abs_diff: f32,
}

/// The training configuration saved beside a checkpoint written by `fit`, as JSON, if any.
fn training_config(checkpoint: &Path) -> Result<Option<serde_json::Value>> {
    let path = checkpoint.with_file_name("config.toml");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let value: toml::Value = toml::from_str(&text)
                .with_context(|| format!("{}: not a TOML configuration", path.display()))?;
            Ok(Some(serde_json::to_value(value)?))
        }
        Err(_) => Ok(None),
    }
}

/// Exports the backbone in `checkpoint` to a new model folder `out` named `name` (by default
/// the architecture and the start of the checkpoint's hash).
pub fn export(checkpoint: &Path, out: &Path, name: Option<&str>) -> Result<Exported> {
    ensure_new_folder(out)?;
    let checkpoint::LoadedBackbone {
        backbone,
        arch,
        vars: _vars,
    } = checkpoint::load_backbone(checkpoint)?;

    let spec = input_spec(arch);
    let size = spec.size as i64;
    let mut graph = OnnxGraph::new(3, size);
    let embedding = backbone.to_onnx(&mut graph, INPUT.into());
    let proto = graph.finish(&embedding, EMBEDDING_SIZE);

    publish_folder(out, |tmp| {
        let onnx = tmp.join(MODEL_FILE);
        std::fs::write(&onnx, proto.encode_to_vec())
            .with_context(|| format!("{}: cannot write", onnx.display()))?;
        let (max_abs_diff, max_abs) = check(backbone.as_ref(), &onnx, size)?;
        ensure!(
            max_abs_diff <= TOLERANCE * max_abs.max(1.0),
            "the exported graph differs from the checkpoint by {max_abs_diff} (more than \
             {TOLERANCE}): an exporter bug, please report it"
        );
        let onnx_sha256 = sha256_file(&onnx)?;
        let checkpoint_sha256 = sha256_file(checkpoint)?;
        let default_name = format!("{}-{}", arch.name(), &checkpoint_sha256[..12]);
        let manifest = ModelManifest {
            name: name.map_or(default_name, str::to_owned),
            kind: ModelKind::Embedder,
            description: Some(format!(
                "{arch} exported by smoothface-train from a checkpoint; raw embeddings, the \
                 device L2-normalises them"
            )),
            license: None,
            source: None,
            origin: Some(serde_json::json!({
                "checkpoint": checkpoint,
                "checkpoint_sha256": checkpoint_sha256,
                "arch": arch.name(),
                "training_config": training_config(checkpoint)?,
                "exporter": format!("smoothface-train {}", env!("CARGO_PKG_VERSION")),
                "opset": OPSET,
            })),
            files: vec![ModelFile {
                file: MODEL_FILE.into(),
                sha256: onnx_sha256.clone(),
                archive_path: None,
            }],
            input: Some(spec),
            embedding_size: Some(EMBEDDING_SIZE as usize),
            max_batch: None,
            normalized_output: false,
            // Training moves the similarity scale: a fine-tuned model is calibrated anew
            // (`smoothface eval calibrate --write`), never given its parent's values.
            thresholds: None,
            group_min_score: None,
        };
        let path = tmp.join(MANIFEST_FILE);
        std::fs::write(&path, serde_json::to_string_pretty(&manifest)? + "\n")
            .with_context(|| format!("{}: cannot write", path.display()))?;
        Ok(Exported {
            dir: out.to_path_buf(),
            arch: arch.name().into(),
            onnx_sha256,
            max_abs_diff,
        })
    })
}

/// Fails, saying what to do, when `out` exists: a model folder is never overwritten. Commands
/// call it before their work as well as [`publish_folder`] before writing.
pub(crate) fn ensure_new_folder(out: &Path) -> Result<()> {
    ensure!(
        !out.exists(),
        "{}: already exists; choose another --out (a model folder is never overwritten)",
        out.display()
    );
    Ok(())
}

/// Makes the new model folder `out` with `fill`, which writes its files into a temporary folder
/// beside `out` (same file system) that is then renamed: the folder appears whole or not at
/// all. `out` must not exist: a model folder is never overwritten.
pub(crate) fn publish_folder<T>(out: &Path, fill: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    ensure_new_folder(out)?;
    let tmp = out.with_file_name(format!(
        ".{}.{}.tmp",
        out.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let result = std::fs::create_dir_all(&tmp)
        .with_context(|| format!("{}: cannot create", tmp.display()))
        .and_then(|()| fill(&tmp))
        .and_then(|value| {
            std::fs::rename(&tmp, out)
                .with_context(|| format!("cannot rename {} to {}", tmp.display(), out.display()))?;
            Ok(value)
        });
    if result.is_err() {
        // Best effort: the error that matters is the one being returned.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// Runs the graph at `onnx` in tract and the backbone in libtorch on the same 3 random faces;
/// returns the largest difference and the largest libtorch output.
fn check(backbone: &dyn crate::backbone::Backbone, onnx: &Path, size: i64) -> Result<(f32, f32)> {
    let batch = 3;
    let input = Tensor::rand([batch, 3, size, size], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let expected = tch::no_grad(|| backbone.forward_t(&input, false));
    let values = Vec::<f32>::try_from(input.flatten(0, -1))?;
    let shape = [batch as usize, 3, size as usize, size as usize];
    let got = TractGraph::load(onnx, shape, &[])?
        .run(&values)?
        .swap_remove(0);
    let expected = Vec::<f32>::try_from(expected.flatten(0, -1))?;
    if got.len() != expected.len() {
        bail!(
            "{}: tract gives {} numbers, the checkpoint {}",
            onnx.display(),
            got.len(),
            expected.len()
        );
    }
    let max_abs = expected.iter().map(|v| v.abs()).fold(0.0, f32::max);
    let max_diff = got
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    Ok((max_diff, max_abs))
}
