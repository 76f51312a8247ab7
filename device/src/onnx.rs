//! Loading ONNX graphs into tract plans with fixed or symbolic input shapes.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;
use tract_onnx::pb::{tensor_proto, type_proto, GraphProto, ModelProto, NodeProto, TensorProto};
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

/// Parses `path` once, rewritten into the form tract runs fastest (see [`rewritten_proto`]);
/// [`plan`] then optimises it for concrete shapes.
pub fn load_graph(path: &Path) -> Result<InferenceModel> {
    let proto = rewritten_proto(path)?;
    tract_onnx::onnx()
        .model_for_proto_model(&proto)
        .with_context(|| format!("{}: not a model tract can run", path.display()))
}

/// The ONNX model at `path` with the rewrites applied ([`rewrite_strided_depthwise`], then
/// [`rewrite_prelu`]): what the device runs, in a form other runtimes can run too (the
/// benchmark hands it to onnxruntime).
pub fn rewritten_proto(path: &Path) -> Result<ModelProto> {
    let mut proto = tract_onnx::onnx()
        .proto_model_for_path(path)
        .with_context(|| format!("{}: not a readable ONNX model", path.display()))?;
    rewrite_strided_depthwise(&mut proto);
    if let Some(graph) = proto.graph.as_mut() {
        rewrite_prelu(graph);
    }
    Ok(proto)
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
    let input_rank = graph_input_rank(graph);
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
            dims: slope_dims(dims, input_rank),
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

/// The rank of the graph's first true input (ONNX below opset 9 also lists initializers as
/// inputs), when its shape is declared.
fn graph_input_rank(graph: &GraphProto) -> Option<usize> {
    let initializers: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let input = graph
        .input
        .iter()
        .find(|i| !initializers.contains(i.name.as_str()))?;
    let type_proto::Value::TensorType(t) = input.r#type.as_ref()?.value.as_ref()?;
    Some(t.shape.as_ref()?.dim.len())
}

/// The shape of the rewritten slope. A channels-first slope `[C, 1, 1]` of a model with a
/// rank-4 input broadcasts against `[N, C, H, W]`: written as `[1, C, 1, 1]` it means the same,
/// but tract then keeps the constant with natural strides, which its element-wise fast path
/// requires; broadcast from rank 3, the constant ran a generic path four times slower (2.3 ns
/// against 0.5 ns an element on MobileFaceNet's 64x56x56 activations). Other slopes are kept:
/// a `[C]` slope may act on `[N, C]` activations after a Flatten.
fn slope_dims(dims: &[i64], input_rank: Option<usize>) -> Vec<i64> {
    if dims.len() == 3 && input_rank == Some(4) {
        [&[1], dims].concat()
    } else {
        dims.to_vec()
    }
}

/// Ops whose meaning is the same in every opset from 9 to 13: a graph made only of these may
/// have its opset raised to 13 so that the rewrites can use `Slice` with steps.
const OPSET_STABLE_OPS: &[&str] = &[
    "Conv",
    "Add",
    "Mul",
    "Min",
    "Max",
    "PRelu",
    "Relu",
    "Reshape",
    "Flatten",
    "MatMul",
    "Transpose",
];

/// The opset whose `Slice` takes steps.
const SLICE_WITH_STEPS_OPSET: i64 = 13;

/// Rewrites each stride-2 depthwise convolution as the same convolution at stride 1 followed by
/// a `Slice` keeping every second row and column. Output `o` of a stride-2 convolution reads the
/// window starting at `2o - pad`, which is output `2o` of the stride-1 one, and the sizes agree
/// (`floor((H+p-k)/2)+1` both ways). Tract vectorises depthwise convolution on x86 only at
/// stride 1; four times the arithmetic in vector code beats the scalar stride-2 path.
/// Graphs below opset 10 are raised to 13 when all their ops mean the same there; otherwise they
/// are left as they are. Returns how many convolutions were rewritten.
pub fn rewrite_strided_depthwise(proto: &mut ModelProto) -> usize {
    let Some(graph) = proto.graph.as_mut() else {
        return 0;
    };
    let attr = |n: &NodeProto, name: &str| n.attribute.iter().find(|a| a.name == name).cloned();
    let is_target = |n: &NodeProto| {
        n.op_type == "Conv"
            && attr(n, "group").is_some_and(|g| g.i > 1)
            && attr(n, "strides").is_some_and(|s| s.ints == [2, 2])
            && attr(n, "dilations").is_none_or(|d| d.ints.iter().all(|&x| x == 1))
            && attr(n, "auto_pad").is_none_or(|a| a.s.is_empty() || a.s == b"NOTSET")
    };
    if !graph.node.iter().any(is_target) {
        return 0;
    }
    let default_opset = proto
        .opset_import
        .iter_mut()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx");
    match default_opset {
        Some(o) if o.version >= 10 => {}
        Some(o)
            if graph
                .node
                .iter()
                .all(|n| OPSET_STABLE_OPS.contains(&n.op_type.as_str())) =>
        {
            o.version = SLICE_WITH_STEPS_OPSET;
        }
        _ => return 0,
    }
    let int64s = |name: &str, values: &[i64]| TensorProto {
        name: name.into(),
        dims: vec![values.len() as i64],
        data_type: tensor_proto::DataType::Int64 as i32,
        int64_data: values.to_vec(),
        ..TensorProto::default()
    };
    const STARTS: &str = "smoothface.s2.starts";
    const ENDS: &str = "smoothface.s2.ends";
    const AXES: &str = "smoothface.s2.axes";
    const STEPS: &str = "smoothface.s2.steps";
    let mut rewritten = 0;
    let mut nodes = Vec::with_capacity(graph.node.len());
    for mut node in std::mem::take(&mut graph.node) {
        if !is_target(&node) {
            nodes.push(node);
            continue;
        }
        for a in node.attribute.iter_mut().filter(|a| a.name == "strides") {
            a.ints = vec![1, 1];
        }
        let out = std::mem::replace(
            &mut node.output[0],
            format!("smoothface.s2.{rewritten}.dense"),
        );
        let slice = NodeProto {
            op_type: "Slice".into(),
            name: format!("smoothface.s2.{rewritten}.slice"),
            input: vec![
                node.output[0].clone(),
                STARTS.into(),
                ENDS.into(),
                AXES.into(),
                STEPS.into(),
            ],
            output: vec![out],
            ..NodeProto::default()
        };
        nodes.push(node);
        nodes.push(slice);
        rewritten += 1;
    }
    graph.node = nodes;
    graph.initializer.extend([
        int64s(STARTS, &[0, 0]),
        int64s(ENDS, &[i64::MAX, i64::MAX]),
        int64s(AXES, &[2, 3]),
        int64s(STEPS, &[2, 2]),
    ]);
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

/// Time spent in one kind of operator over a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpTime {
    /// The operator as the runtime names it (tract after optimisation: `OptMatMul`,
    /// `DepthWiseConv`, ...; onnxruntime: the ONNX op type).
    pub op: String,
    /// Milliseconds: over the operator's nodes, the sum of each node's fastest run.
    pub ms: f64,
    /// How many nodes of the plan run this operator.
    pub nodes: usize,
}

/// Runs `plan` `runs` times on `input`, timing every node, and returns the time per operator,
/// most expensive first. Each node counts its fastest run, so a slow spell of a shared machine
/// does not land on whichever node was running.
pub fn profile(plan: &Plan, input: &Tensor, runs: usize) -> Result<Vec<OpTime>> {
    use tract_onnx::tract_core::plan::{eval, SimpleState};
    let mut fastest: HashMap<usize, f64> = HashMap::new();
    for _ in 0..runs.max(1) {
        let mut state = SimpleState::new(plan)?;
        state.run_plan_with_eval(
            tvec!(input.clone().into()),
            |session, op_state, node, inputs| {
                let start = std::time::Instant::now();
                let out = eval(session, op_state, node, inputs);
                let ms = start.elapsed().as_secs_f64() * 1e3;
                let best = fastest.entry(node.id).or_insert(f64::INFINITY);
                *best = best.min(ms);
                out
            },
        )?;
    }
    let model = plan.model();
    let mut ops: HashMap<String, OpTime> = HashMap::new();
    for (id, ms) in fastest {
        let op = model.node(id).op().name().to_string();
        let entry = ops.entry(op.clone()).or_insert(OpTime {
            op,
            ms: 0.0,
            nodes: 0,
        });
        entry.ms += ms;
        entry.nodes += 1;
    }
    let mut ops: Vec<OpTime> = ops.into_values().collect();
    ops.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    Ok(ops)
}
