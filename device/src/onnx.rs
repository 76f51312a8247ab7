//! Loading ONNX graphs into tract plans with fixed or symbolic input shapes.

use anyhow::{Context, Result};
use std::path::Path;
use tract_onnx::prelude::*;

/// An optimised, runnable tract plan. Plans are immutable and shared between threads: each `run`
/// makes its own state.
pub type Plan = Arc<TypedRunnableModel>;

/// Input dimension of a plan: a fixed size or the symbolic batch size.
#[derive(Debug, Clone, Copy)]
pub enum Dim {
    /// A fixed size.
    Fixed(usize),
    /// The batch, left symbolic so one plan runs every batch size.
    Batch,
}

/// Parses `path` once; [`plan`] then optimises it for concrete shapes.
pub fn load_graph(path: &Path) -> Result<InferenceModel> {
    tract_onnx::onnx()
        .model_for_path(path)
        .with_context(|| format!("{}: not a readable ONNX model", path.display()))
}

/// Optimises a parsed graph for one input shape.
pub fn plan(graph: &InferenceModel, shape: &[Dim]) -> Result<Plan> {
    let mut model = graph.clone();
    let batch = model.sym("N");
    let dims: TVec<TDim> = shape
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => TDim::from(*n as i64),
            Dim::Batch => TDim::from(batch.clone()),
        })
        .collect();
    model.set_input_fact(0, InferenceFact::dt_shape(f32::datum_type(), dims))?;
    let plan = model.into_optimized()?.into_runnable()?;
    Ok(plan)
}
