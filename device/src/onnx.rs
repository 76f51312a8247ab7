//! Loading ONNX graphs into tract plans for concrete input shapes, rewritten into the forms tract
//! runs fastest; timing each operator of a plan.

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

/// A parsed ONNX graph, and whether [`plan`] applies the device's layout rewrite to it.
#[derive(Clone)]
pub struct Graph {
    model: InferenceModel,
    channels_last_depthwise: bool,
}

/// Parses `path` once, rewritten into the form tract runs fastest: [`rewritten_proto`] now, and
/// [`channels_last_depthwise`] when [`plan`] optimises it for concrete shapes.
pub fn load_graph(path: &Path) -> Result<Graph> {
    let proto = rewritten_proto(path)?;
    let model = tract_onnx::onnx()
        .model_for_proto_model(&proto)
        .with_context(|| format!("{}: not a model tract can run", path.display()))?;
    Ok(Graph {
        model,
        channels_last_depthwise: true,
    })
}

/// The ONNX model at `path` with the device's ONNX-level rewrites applied ([`rewrite_prelu`],
/// [`rewrite_residual_adds`]):
/// a form other runtimes can run too (the benchmark hands it to onnxruntime). The layout
/// rewrite ([`channels_last_depthwise`]) happens inside tract and has no ONNX form.
pub fn rewritten_proto(path: &Path) -> Result<ModelProto> {
    let mut proto = tract_onnx::onnx()
        .proto_model_for_path(path)
        .with_context(|| format!("{}: not a readable ONNX model", path.display()))?;
    if let Some(graph) = proto.graph.as_mut() {
        rewrite_prelu(graph);
        rewrite_residual_adds(graph);
    }
    Ok(proto)
}

/// Rewrites each `Add(a, Conv(x, W, B))` whose convolution feeds only that Add, and whose
/// weights and bias are float initializers used by it alone, as `Sub(a, Conv(x, -W, -B))`:
/// the same sums exactly (negation is exact), but tract no longer fuses the residual into the
/// convolution's matrix product, where it cost about 2 ns an element (MobileFaceNet's 12
/// residual projections: matrix products 6.7 -> 5.9 ms, plus 0.05 ms of separate
/// subtractions; `smoothface bench --profile`). Returns how many were rewritten.
pub fn rewrite_residual_adds(graph: &mut GraphProto) -> usize {
    // Uses of each value: node inputs, and the graph's outputs (a negated convolution must not
    // be one).
    let mut consumers: HashMap<String, usize> = HashMap::new();
    let inputs = graph.node.iter().flat_map(|n| n.input.iter());
    for name in inputs.chain(graph.output.iter().map(|o| &o.name)) {
        *consumers.entry(name.clone()).or_default() += 1;
    }
    let producer: HashMap<String, usize> = graph
        .node
        .iter()
        .enumerate()
        .flat_map(|(ix, n)| n.output.iter().map(move |o| (o.clone(), ix)))
        .collect();
    let mut rewritten = 0;
    for add in 0..graph.node.len() {
        if graph.node[add].op_type != "Add" || graph.node[add].input.len() != 2 {
            continue;
        }
        let conv_slot = (0..2).find(|&slot| {
            let input = &graph.node[add].input[slot];
            producer.get(input).is_some_and(|&c| {
                let conv = &graph.node[c];
                conv.op_type == "Conv"
                    && conv.input.len() == 3
                    && consumers.get(input) == Some(&1)
                    && conv.input[1..].iter().all(|w| {
                        consumers.get(w) == Some(&1)
                            && graph
                                .initializer
                                .iter()
                                .any(|t| &t.name == w && float_values(t).is_some())
                    })
            })
        });
        let Some(slot) = conv_slot else { continue };
        let conv = producer[&graph.node[add].input[slot]];
        for w in graph.node[conv].input[1..].iter() {
            let t = graph
                .initializer
                .iter_mut()
                .find(|t| t.name == *w)
                .expect("checked");
            let values: Vec<f32> = float_values(t)
                .expect("checked")
                .iter()
                .map(|v| -v)
                .collect();
            t.raw_data.clear();
            t.float_data = values;
        }
        let node = &mut graph.node[add];
        node.op_type = "Sub".into();
        if slot == 0 {
            node.input.swap(0, 1);
        }
        rewritten += 1;
    }
    rewritten
}

/// Loads a graph exactly as written, planned as tract plans it: for comparisons with the
/// rewritten one.
pub fn load_graph_unmodified(path: &Path) -> Result<Graph> {
    let model = tract_onnx::onnx()
        .model_for_path(path)
        .with_context(|| format!("{}: not a readable ONNX model", path.display()))?;
    Ok(Graph {
        model,
        channels_last_depthwise: false,
    })
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

/// Optimises a parsed graph for one concrete input shape (tract runs a plan with a symbolic
/// dimension several times slower).
pub fn plan(graph: &Graph, shape: &[usize]) -> Result<Plan> {
    let mut model = graph.model.clone();
    model.set_input_fact(0, InferenceFact::dt_shape(f32::datum_type(), shape))?;
    let mut typed = model.into_typed()?;
    if graph.channels_last_depthwise {
        typed = typed.into_decluttered()?;
        channels_last_depthwise(&mut typed)?;
    }
    typed.into_optimized()?.into_runnable()
}

/// Moves the channel axis of each float depthwise convolution's input last (NCHW to NHWC) and
/// lets tract carry the move through the graph: the 1x1 convolutions on either side, which tract
/// runs as matrix products, absorb it into their operand layout, and the element-wise ops between
/// take permuted constants, so no transpose is added. Tract runs a channels-last depthwise
/// convolution with the channels as its inner loop, contiguous and vectorised at any spatial
/// size or stride; channels-first it vectorises along each output row only, which at 14 or 7
/// pixels a row (and at any stride above 1) leaves it mostly scalar. On MobileFaceNet this took
/// its 17 depthwise convolutions from 3.1 to 2.0 ms (`smoothface bench --profile`). On aarch64,
/// where tract has a NEON kernel for the channels-last case, tract already plans them this way
/// and there is nothing to move.
///
/// The model's inputs and outputs keep their layout: a convolution whose move would reach them
/// (MobileFaceNet's first, fed by the image) stays as it is, and so does any whose move some op
/// between cannot carry. Returns how many convolutions moved.
pub fn channels_last_depthwise(model: &mut TypedModel) -> Result<usize> {
    use tract_onnx::tract_core::ops::change_axes::{AxisChange, AxisOp};
    use tract_onnx::tract_core::ops::cnn::Conv;
    use tract_onnx::tract_core::ops::nn::DataFormat;
    use tract_onnx::tract_core::optim::change_axes::change_axes;
    let mut locked: Vec<OutletId> = model.input_outlets()?.to_vec();
    locked.extend(model.output_outlets()?);
    let mut moved = 0;
    // Each applied move rebuilds the graph (node ids change), so the search starts over, and
    // convolutions that could not move are tried again: one that moved may have freed them.
    'search: loop {
        for id in model.eval_order()? {
            let node = model.node(id);
            let Some(conv) = node.op_as::<Conv>() else {
                continue;
            };
            let spec = &conv.pool_spec;
            let depthwise = conv.q_params.is_none()
                && conv.group > 1
                && conv.group == spec.input_channels
                && spec.input_channels == spec.output_channels;
            let change = match spec.data_format {
                DataFormat::NCHW => AxisOp::Move(1, 3),
                DataFormat::CHW => AxisOp::Move(0, 2),
                DataFormat::NHWC | DataFormat::HWC => continue,
            };
            if !depthwise {
                continue;
            }
            let change = AxisChange {
                outlet: node.inputs[0],
                op: change,
            };
            if let Some((patch, _)) =
                change_axes(model, &change, &locked, &[], &mut Default::default())?
            {
                patch.apply(model)?;
                moved += 1;
                continue 'search;
            }
        }
        return Ok(moved);
    }
}

/// Plans of one graph, one per concrete input shape, built on first use and shared by threads.
/// Tract runs a plan made for concrete shapes several times faster than one with a symbolic
/// dimension, so graphs fed many sizes (MTCNN's pyramid, R- and O-Net batches) keep one plan
/// per size.
pub struct PlanCache {
    graph: Graph,
    plans: Mutex<HashMap<Vec<usize>, Plan>>,
    max_plans: usize,
}

impl PlanCache {
    /// A cache over a parsed graph holding at most `max_plans` plans (then it starts afresh, so
    /// a stream of odd sizes cannot grow memory without bound).
    pub fn new(graph: Graph, max_plans: usize) -> PlanCache {
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
        let plan = plan(&self.graph, shape)?;
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
