//! An ONNX file run by tract, the device's runtime: the export's self-check, the quantizer's
//! calibration and its float-versus-int8 comparison all run graphs this way.

use anyhow::{anyhow, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tract_onnx::prelude::{
    tvec, DatumType, Framework, InferenceFact, InferenceModelExt, IntoRunnable, Tensor,
    TypedRunnableModel,
};

/// A graph planned for float32 inputs of one shape.
pub struct TractGraph {
    plan: Arc<TypedRunnableModel>,
    onnx: PathBuf,
    shape: [usize; 4],
}

impl TractGraph {
    /// Plans `onnx` for inputs of `shape`, returning the tensors named `outputs` (the graph's
    /// own outputs when empty).
    pub fn load(onnx: &Path, shape: [usize; 4], outputs: &[String]) -> Result<Self> {
        let mut model = tract_onnx::onnx()
            .model_for_path(onnx)
            .map_err(|e| anyhow!("{}: not a readable ONNX model: {e:#}", onnx.display()))?
            .with_input_fact(0, InferenceFact::dt_shape(DatumType::F32, shape))
            .map_err(|e| anyhow!("{}: {e:#}", onnx.display()))?;
        if !outputs.is_empty() {
            model = model
                .with_outputs_by_name(outputs)
                .map_err(|e| anyhow!("{}: {e:#}", onnx.display()))?;
        }
        let plan = model
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(|e| anyhow!("{}: tract cannot run it: {e:#}", onnx.display()))?;
        Ok(TractGraph {
            plan,
            onnx: onnx.to_path_buf(),
            shape,
        })
    }

    /// Runs one input (`shape`'s worth of values, row-major) and returns each output's values.
    pub fn run(&self, input: &[f32]) -> Result<Vec<Vec<f32>>> {
        let x = Tensor::from_shape(&self.shape, input)?;
        let outputs = self
            .plan
            .run(tvec!(x.into()))
            .map_err(|e| anyhow!("{}: tract failed running it: {e:#}", self.onnx.display()))?;
        outputs
            .iter()
            .map(|out| {
                out.try_as_plain_ram()
                    .and_then(|t| t.as_slice::<f32>().map(<[f32]>::to_vec))
                    .map_err(|e| anyhow!("{}: unexpected output: {e:#}", self.onnx.display()))
            })
            .collect()
    }
}
