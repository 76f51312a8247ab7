//! Loading ONNX graphs into tract plans with fixed or symbolic input shapes.

use anyhow::{Context, Result};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use tract_onnx::pb::{tensor_proto, GraphProto, NodeProto, TensorProto};
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

/// Parses `path` once, rewritten into the form tract runs fastest (see [`rewrite_prelu`]);
/// [`plan`] then optimises it for concrete shapes.
pub fn load_graph(path: &Path) -> Result<InferenceModel> {
    let onnx = tract_onnx::onnx();
    let mut proto = onnx
        .proto_model_for_path(path)
        .with_context(|| format!("{}: not a readable ONNX model", path.display()))?;
    if let Some(graph) = proto.graph.as_mut() {
        rewrite_prelu(graph);
    }
    onnx.model_for_proto_model(&proto)
        .with_context(|| format!("{}: not a model tract can run", path.display()))
}

/// Loads a graph exactly as written, for comparisons with the rewritten one.
pub fn load_graph_unmodified(path: &Path) -> Result<InferenceModel> {
    tract_onnx::onnx()
        .model_for_path(path)
        .with_context(|| format!("{}: not a readable ONNX model", path.display()))
}

/// Rewrites each `PRelu(x, a)` whose slope `a` is a float initializer as
/// `x + (a - 1) * min(x, 0)`: the same function (for x >= 0 both give x, below both give a*x),
/// but tract runs PRelu on a generic element-wise path, several nanoseconds per element, while
/// Min, Mul and Add are vectorised. Returns how many nodes were rewritten.
pub fn rewrite_prelu(graph: &mut GraphProto) -> usize {
    const ZERO: &str = "smoothface.prelu.zero";
    let slopes: HashMap<String, (Vec<i64>, Vec<f32>)> = graph
        .initializer
        .iter()
        .filter_map(|t| float_values(t).map(|v| (t.name.clone(), (t.dims.clone(), v))))
        .collect();
    let mut rewritten = 0;
    let mut nodes = Vec::with_capacity(graph.node.len());
    for node in std::mem::take(&mut graph.node) {
        let slope = (node.op_type == "PRelu" && node.input.len() == 2 && node.output.len() == 1)
            .then(|| slopes.get(&node.input[1]))
            .flatten();
        let Some((dims, values)) = slope else {
            nodes.push(node);
            continue;
        };
        let (x, out) = (node.input[0].clone(), node.output[0].clone());
        let base = format!("smoothface.prelu.{rewritten}");
        graph.initializer.push(TensorProto {
            name: format!("{base}.a_minus_1"),
            dims: dims.clone(),
            data_type: tensor_proto::DataType::Float as i32,
            float_data: values.iter().map(|a| a - 1.0).collect(),
            ..TensorProto::default()
        });
        let op = |op_type: &str, inputs: [String; 2], output: String| NodeProto {
            op_type: op_type.to_string(),
            name: format!("{base}.{op_type}"),
            input: inputs.to_vec(),
            output: vec![output],
            ..NodeProto::default()
        };
        nodes.push(op("Min", [x.clone(), ZERO.into()], format!("{base}.neg")));
        nodes.push(op(
            "Mul",
            [format!("{base}.neg"), format!("{base}.a_minus_1")],
            format!("{base}.scaled"),
        ));
        nodes.push(op("Add", [x, format!("{base}.scaled")], out));
        rewritten += 1;
    }
    graph.node = nodes;
    if rewritten > 0 {
        graph.initializer.push(TensorProto {
            name: ZERO.into(),
            data_type: tensor_proto::DataType::Float as i32,
            float_data: vec![0.0],
            ..TensorProto::default()
        });
    }
    rewritten
}

/// The values of a float32 initializer, stored either as `float_data` or little-endian `raw_data`.
fn float_values(t: &TensorProto) -> Option<Vec<f32>> {
    if t.data_type != tensor_proto::DataType::Float as i32 {
        return None;
    }
    if !t.float_data.is_empty() {
        return Some(t.float_data.clone());
    }
    (!t.raw_data.is_empty() && t.raw_data.len().is_multiple_of(4)).then(|| {
        t.raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    })
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

/// Plans of one graph, one per concrete input shape, built on first use and shared by threads.
/// Tract runs a plan made for concrete shapes several times faster than one with a symbolic
/// dimension, so graphs fed many sizes (MTCNN's pyramid, R- and O-Net batches) keep one plan
/// per size.
pub struct PlanCache {
    graph: InferenceModel,
    plans: Mutex<HashMap<Vec<usize>, Plan>>,
    max_plans: usize,
}

impl PlanCache {
    /// A cache over a parsed graph holding at most `max_plans` plans (then it starts afresh, so
    /// a stream of odd sizes cannot grow memory without bound).
    pub fn new(graph: InferenceModel, max_plans: usize) -> PlanCache {
        PlanCache {
            graph,
            plans: Mutex::new(HashMap::new()),
            max_plans,
        }
    }

    /// The plan for one input shape.
    pub fn get(&self, shape: &[usize]) -> Result<Plan> {
        if let Some(p) = self.plans.lock().expect("plan cache poisoned").get(shape) {
            return Ok(p.clone());
        }
        // Built outside the lock: other threads keep running their cached plans meanwhile.
        let dims: Vec<Dim> = shape.iter().map(|&d| Dim::Fixed(d)).collect();
        let plan = plan(&self.graph, &dims)?;
        let mut plans = self.plans.lock().expect("plan cache poisoned");
        if plans.len() >= self.max_plans {
            plans.clear();
        }
        plans.insert(shape.to_vec(), plan.clone());
        Ok(plan)
    }
}
