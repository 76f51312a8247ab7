//! Loading ONNX graphs into tract plans for concrete input shapes, rewritten into the forms tract
//! runs fastest; timing each operator of a plan.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;
use tract_onnx::pb::{tensor_proto, type_proto, GraphProto, ModelProto, NodeProto, TensorProto};
use tract_onnx::prelude::*;

use crate::kernels::quantized::{Int8Weights, QuantizedWeights};

/// An optimised, runnable tract plan. Plans are immutable and shared between threads: each `run`
/// makes its own state.
pub type Plan = Arc<TypedRunnableModel>;

/// A parsed ONNX graph, and whether [`plan`] applies the device's layout rewrite and kernels to
/// it.
#[derive(Clone)]
pub struct Graph {
    model: InferenceModel,
    rewrite_plans: bool,
    /// The int8 weights of a quantized graph's convolutions (empty for a float one).
    int8: Arc<Int8Weights>,
}

/// Parses `path` once, rewritten into the form tract runs fastest: [`rewritten_proto`] now, and
/// [`channels_last`] and the device's kernels ([`crate::kernels::fuse`]) when [`plan`] optimises
/// it for concrete shapes.
pub fn load_graph(path: &Path) -> Result<Graph> {
    let proto = rewritten_proto(path)?;
    let int8 = proto.graph.as_ref().map(int8_weights).unwrap_or_default();
    let model = tract_onnx::onnx()
        .model_for_proto_model(&proto)
        .with_context(|| format!("{}: not a model tract can run", path.display()))?;
    Ok(Graph {
        model,
        rewrite_plans: true,
        int8: Arc::new(int8),
    })
}

/// The ONNX model at `path` with the device's ONNX-level rewrite ([`rewrite_prelu`]) applied: a
/// form other runtimes can run too (the benchmark hands it to onnxruntime). The layout rewrite
/// ([`channels_last`]) and the device's kernels happen inside tract and have no ONNX form.
pub fn rewritten_proto(path: &Path) -> Result<ModelProto> {
    let mut proto = tract_onnx::onnx()
        .proto_model_for_path(path)
        .with_context(|| format!("{}: not a readable ONNX model", path.display()))?;
    if let Some(graph) = proto.graph.as_mut() {
        forget_declared_shapes(graph);
        rewrite_prelu(graph);
    }
    Ok(proto)
}

/// Drops the shapes a file declares for its outputs and intermediate values, keeping their
/// types: some exports declare a batch of 1 there though the graph runs any batch
/// (insightface's `w600k_mbf` says `[1, 512]` for its output and `1x128x56x56` inside), and
/// tract takes declared shapes as facts to unify, so a batch of three faces failed to plan.
/// Every shape follows from the input's anyway.
pub fn forget_declared_shapes(graph: &mut GraphProto) {
    graph.value_info.clear();
    for output in &mut graph.output {
        if let Some(type_proto::Value::TensorType(t)) =
            output.r#type.as_mut().and_then(|t| t.value.as_mut())
        {
            t.shape = None;
        }
    }
}

/// Loads a graph exactly as written, planned as tract plans it: for comparisons with the
/// rewritten one.
pub fn load_graph_unmodified(path: &Path) -> Result<Graph> {
    let model = tract_onnx::onnx()
        .model_for_path(path)
        .with_context(|| format!("{}: not a readable ONNX model", path.display()))?;
    Ok(Graph {
        model,
        rewrite_plans: false,
        int8: Arc::default(),
    })
}

/// The int8 weights of `graph`'s `DequantizeLinear` nodes that dequantize an int8 initializer
/// with zero point 0 (one scale, or one per slice of the first axis: a convolution's output
/// channels), as `smoothface-train quantize` writes them.
pub fn int8_weights(graph: &GraphProto) -> Int8Weights {
    let initializers: HashMap<&str, &TensorProto> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let mut weights = Int8Weights::default();
    for node in graph
        .node
        .iter()
        .filter(|n| n.op_type == "DequantizeLinear")
    {
        let tensor = |slot: usize| {
            node.input
                .get(slot)
                .and_then(|name| initializers.get(name.as_str()))
        };
        let (Some(weights_tensor), Some(scales)) = (tensor(0), tensor(1)) else {
            continue;
        };
        let axis = node
            .attribute
            .iter()
            .find(|a| a.name == "axis")
            .map_or(1, |a| a.i);
        let (Some(values), Some(scales)) = (int8_values(weights_tensor), float_values(scales))
        else {
            continue;
        };
        let zero =
            tensor(2).is_none_or(|z| int8_values(z).is_some_and(|v| v.iter().all(|&v| v == 0)));
        let rows = weights_tensor
            .dims
            .first()
            .and_then(|&d| usize::try_from(d).ok())
            .unwrap_or(0);
        let per_row = scales.len() == rows && (axis == 0 || rows == 1);
        if !zero || rows == 0 || !(scales.len() == 1 || per_row) {
            continue;
        }
        let scales = if scales.len() == rows {
            scales
        } else {
            vec![scales[0]; rows]
        };
        weights.insert(QuantizedWeights { values, scales });
    }
    weights
}

/// The values of an int8 initializer, stored either as `raw_data` or one per `int32_data`.
fn int8_values(t: &TensorProto) -> Option<Vec<i8>> {
    if t.data_type != tensor_proto::DataType::Int8 as i32 {
        return None;
    }
    if !t.raw_data.is_empty() {
        return Some(t.raw_data.iter().map(|&b| b as i8).collect());
    }
    t.int32_data.iter().map(|&v| i8::try_from(v).ok()).collect()
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
    typed_model(graph, shape)?.into_optimized()?.into_runnable()
}

/// The graph typed for one concrete input shape, with the device's layout rewrite
/// ([`channels_last`]) and kernels ([`crate::kernels::fuse`]) in place when the graph was loaded
/// with them ([`load_graph`]) and the CPU runs the kernels: what [`plan`] hands to tract's
/// optimiser.
pub fn typed_model(graph: &Graph, shape: &[usize]) -> Result<TypedModel> {
    let mut model = graph.model.clone();
    model.set_input_fact(0, InferenceFact::dt_shape(f32::datum_type(), shape))?;
    let mut typed = model.into_typed()?;
    // The layout rewrite is there for the device's kernels: where none runs (x86 without AVX2;
    // aarch64, unless an int8 model meets the dot-product instructions), tract plans the layout
    // its own kernels want.
    let int8_kernels = !graph.int8.is_empty() && crate::kernels::quantized::isa().is_some();
    if graph.rewrite_plans && (crate::kernels::available() || int8_kernels) {
        // Twice: the first move reaches every convolution while the 1x1 ones are still
        // convolutions (declutter makes them matrix products, which absorb a layout instead of
        // passing it on); declutter then pushes the image input's transposition back down
        // through the first two convolutions, channels-first again, and the second move takes
        // them back.
        channels_last(&mut typed)?;
        typed = typed.into_decluttered()?;
        channels_last(&mut typed)?;
        crate::kernels::fuse(&mut typed, &graph.int8)?;
    }
    Ok(typed)
}

/// In a model with depthwise convolutions (MobileFaceNet's kind) or whose convolutions the
/// device's dense kernel runs ([`crate::kernels::direct`], MTCNN's), moves the channel axis of every
/// float convolution's input last (NCHW to NHWC) and lets tract carry the moves through the
/// graph: once decluttered, every 1x1 convolution is then a channels-last matrix product
/// (`HWI,OI->HWO`) and every depthwise convolution reads and writes channels-last, the two forms
/// the device's kernels run ([`crate::kernels`]); the element-wise ops between take permuted
/// constants. The model's inputs and outputs keep their layout: each 4-D input is transposed once
/// (a 112x112 face: 0.04 ms) for the convolutions after it, and MTCNN's transposition of its
/// channels-last input cancels with it. Other models (IResNet, with padded and strided dense
/// convolutions) are left as they are: tract's channels-first convolutions are the form its own
/// kernels are tuned for.
///
/// Returns how many moves were applied (tract carries one move as far as it can, often through
/// the whole network).
pub fn channels_last(model: &mut TypedModel) -> Result<usize> {
    use crate::kernels::{depthwise, direct};
    use tract_onnx::tract_core::ops::change_axes::{AxisChange, AxisOp};
    use tract_onnx::tract_core::ops::nn::DataFormat;
    use tract_onnx::tract_core::optim::change_axes::change_axes;
    let convs: Vec<_> = model.nodes().iter().filter_map(float_conv).collect();
    let mobile = convs.iter().any(|c| depthwise::is_depthwise(c));
    let direct = !convs.is_empty() && convs.iter().all(|c| direct::runs_unpadded(c));
    if !mobile && !direct {
        return Ok(0);
    }
    if direct {
        max_pools_channels_last(model)?;
    }
    let mut locked: Vec<OutletId> = model.input_outlets()?.to_vec();
    locked.extend(model.output_outlets()?);
    // A transposition and its inverse after each image input, and in a MobileFaceNet before each
    // reshape of an image (w600k_mbf flattens its last 64x7x7 feature map into a fully connected layer, in
    // channels-first order): the moves reach the pair and stop there, leaving one transposition
    // (at the input, 0.04 ms; before the reshape, 3,136 floats), and tract's declutter drops the
    // pair where none did. Without the pair before the reshape no move could reach it, so no
    // convolution of such a network went channels-last.
    let images: Vec<OutletId> = model.input_outlets()?.to_vec();
    let reshaped: Vec<OutletId> = model
        .nodes()
        .iter()
        .filter(|n| mobile && matches!(n.op_as::<AxisOp>(), Some(AxisOp::Reshape(..))))
        .map(|n| n.inputs[0])
        .collect();
    for outlet in images.into_iter().chain(reshaped) {
        if model.outlet_fact(outlet)?.rank() != 4 {
            continue;
        }
        let consumers = model.outlet_successors(outlet).to_vec();
        let name = &model.node(outlet.node).name;
        let (nhwc, nchw) = (format!("{name}.nhwc"), format!("{name}.nchw"));
        let to_nhwc = model.wire_node(nhwc, AxisOp::Move(1, 3), &[outlet])?[0];
        let back = model.wire_node(nchw, AxisOp::Move(3, 1), &[to_nhwc])?[0];
        for inlet in consumers {
            model.add_edge(back, inlet)?;
        }
    }
    let mut moved = 0;
    // Each applied move rebuilds the graph (node ids change), so the search starts over, and
    // convolutions that could not move are tried again: one that moved may have freed them.
    'search: loop {
        for id in model.eval_order()? {
            let node = model.node(id);
            let Some(conv) = float_conv(node) else {
                continue;
            };
            let change = match conv.pool_spec.data_format {
                DataFormat::NCHW => AxisOp::Move(1, 3),
                DataFormat::CHW => AxisOp::Move(0, 2),
                DataFormat::NHWC | DataFormat::HWC => continue,
            };
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

/// Wraps each channels-first max-pool in a move of its channels last and back, and pools
/// channels-last between them. Tract cannot carry a move of axes through a max-pool, so MTCNN's
/// convolutions, a max-pool after each of the first ones, would otherwise stay channels-first;
/// with the pair in place the moves [`channels_last`] makes reach the pool and cancel there.
fn max_pools_channels_last(model: &mut TypedModel) -> TractResult<()> {
    use tract_onnx::tract_core::ops::change_axes::AxisOp;
    use tract_onnx::tract_core::ops::cnn::MaxPool;
    use tract_onnx::tract_core::ops::nn::DataFormat;
    let pools: Vec<usize> = model
        .nodes()
        .iter()
        .filter(|n| {
            n.op_as::<MaxPool>().is_some_and(|p| {
                p.pool_spec.data_format == DataFormat::NCHW && p.with_index_outputs.is_none()
            })
        })
        .map(|n| n.id)
        .collect();
    for id in pools {
        let node = model.node(id);
        let mut pool = node.op_as::<MaxPool>().expect("a max-pool").clone();
        pool.pool_spec.data_format = DataFormat::NHWC;
        let name = node.name.clone();
        let mut patch = TypedModelPatch::new("max-pool channels last");
        let x = patch.tap_model(model, node.inputs[0])?;
        let x = patch.wire_node(format!("{name}.nhwc"), AxisOp::Move(1, 3), &[x])?[0];
        let y = patch.wire_node(&name, pool, &[x])?[0];
        let y = patch.wire_node(format!("{name}.nchw"), AxisOp::Move(3, 1), &[y])?[0];
        patch.shunt_outside(model, OutletId::new(id, 0), y)?;
        patch.apply(model)?;
    }
    Ok(())
}

/// The float (not quantized) convolution `node` runs, if any.
fn float_conv(node: &TypedNode) -> Option<&tract_onnx::tract_core::ops::cnn::Conv> {
    use tract_onnx::tract_core::ops::cnn::Conv;
    node.op_as::<Conv>().filter(|c| c.q_params.is_none())
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
