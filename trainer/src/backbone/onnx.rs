//! The ONNX protobuf the trainer writes and reads: [`OnnxGraph`], the graph builder each
//! backbone writes its own forward pass with (tch has no ONNX exporter) and that `export` and
//! `quantize` use, its attribute helpers, and [`float_values`], the one reader of float
//! initialisers (`import` takes pretrained weights with it, `quantize` the weights it rounds).
//!
//! The graph is plain ONNX at opset 13: one float32 input `input` of shape `[batch, 3, 112,
//! 112]` whose batch is symbolic (the flattening before a fully connected layer is a `Flatten`,
//! never a `Reshape` to a fixed shape), one output `embedding` of shape `[batch, 512]`. A batch
//! norm right after a convolution or a fully connected layer is folded into its weights; any
//! other stays a `BatchNormalization`. The device's loader rewrites PRelu and stride-2
//! depthwise convolutions into the forms tract runs fastest when it loads any model, so the
//! graph keeps the standard operators every runtime knows.

use super::layers::{BatchNorm, Conv, Linear, PRelu};
use anyhow::{ensure, Context, Result};
use tch::{Kind, Tensor};
use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_proto::{DataLocation, DataType};
use tract_onnx::pb::tensor_shape_proto::{dimension, Dimension};
use tract_onnx::pb::{
    type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};

/// The opset the graph declares.
pub const OPSET: i64 = 13;
/// Name of the graph's input.
pub const INPUT: &str = "input";
/// Name of the graph's output.
pub const OUTPUT: &str = "embedding";
/// Name of the symbolic batch dimension.
const BATCH: &str = "batch";

/// A graph being written, node by node in execution order.
#[derive(Debug)]
pub struct OnnxGraph {
    graph: GraphProto,
}

/// An ONNX attribute holding a list of integers.
pub fn attribute_ints(name: &str, ints: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: ints.to_vec(),
        ..Default::default()
    }
}

/// An ONNX attribute holding one integer.
pub fn attribute_int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}

/// An ONNX attribute holding one float.
pub fn attribute_float(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Float as i32,
        f,
        ..Default::default()
    }
}

/// The values of the float32 initialiser `t`, from `raw_data` (little-endian) when it is set,
/// from `float_data` otherwise (as ONNX stores them), checked against its shape. Errors name
/// the initialiser: a graph from elsewhere may store weights in any type, outside the file, or
/// with fewer values than its shape says.
pub fn float_values(t: &TensorProto) -> Result<Vec<f32>> {
    ensure!(
        t.data_type == DataType::Float as i32,
        "initialiser '{}' is stored as {}; only float32 weights are read",
        t.name,
        DataType::try_from(t.data_type).map_or_else(
            |_| format!("data type {}", t.data_type),
            |d| format!("{d:?}")
        )
    );
    ensure!(
        t.data_location != Some(DataLocation::External as i32),
        "initialiser '{}' is stored outside the .onnx file (external data), which is not read",
        t.name
    );
    let count = t
        .dims
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(usize::try_from(d).ok()?))
        .with_context(|| format!("initialiser '{}' has a bad shape {:?}", t.name, t.dims))?;
    let values: Vec<f32> = if t.raw_data.is_empty() {
        t.float_data.clone()
    } else {
        ensure!(
            t.raw_data.len().is_multiple_of(4),
            "initialiser '{}' has {} bytes of raw data, not a whole number of float32 values",
            t.name,
            t.raw_data.len()
        );
        t.raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    };
    ensure!(
        values.len() == count,
        "initialiser '{}' has shape {:?} ({count} values) but holds {} values",
        t.name,
        t.dims,
        values.len()
    );
    Ok(values)
}

/// A float32 tensor value `name` of shape `[batch, rest...]`.
fn batch_value(name: &str, rest: &[i64]) -> ValueInfoProto {
    let mut dim = vec![Dimension {
        value: Some(dimension::Value::DimParam(BATCH.into())),
        ..Default::default()
    }];
    dim.extend(rest.iter().map(|&d| Dimension {
        value: Some(dimension::Value::DimValue(d)),
        ..Default::default()
    }));
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The per-channel `(scale, shift)` of a batch norm in evaluation mode, in float64:
/// `bn(x) = scale * x + shift`.
fn batch_norm_affine(bn: &BatchNorm) -> (Tensor, Tensor) {
    let f = |t: &Tensor| t.detach().to_device(tch::Device::Cpu).to_kind(Kind::Double);
    let scale = f(&bn.weight) / (f(&bn.running_var) + BatchNorm::EPS).sqrt();
    let shift = f(&bn.bias) - f(&bn.running_mean) * &scale;
    (scale, shift)
}

/// A layer's weight (`[out, ...]`) and bias (zero when it has none) in float64, with the batch
/// norm `bn` that follows the layer folded in: `bn(W x + b) = (scale W) x + (scale b + shift)`.
fn folded(weight: &Tensor, bias: Option<&Tensor>, bn: Option<&BatchNorm>) -> (Tensor, Tensor) {
    let weight = weight.detach().to_kind(Kind::Double);
    let out = weight.size()[0];
    let bias = match bias {
        Some(b) => b.detach().to_kind(Kind::Double),
        None => Tensor::zeros([out], (Kind::Double, weight.device())),
    };
    let Some(bn) = bn else {
        return (weight, bias);
    };
    let (scale, shift) = batch_norm_affine(bn);
    let (scale, shift) = (
        scale.to_device(weight.device()),
        shift.to_device(weight.device()),
    );
    let mut per_row = vec![-1i64];
    per_row.resize(weight.dim(), 1);
    (
        weight * scale.view(per_row.as_slice()),
        bias * &scale + shift,
    )
}

impl OnnxGraph {
    /// An empty graph whose input is `[batch, channels, size, size]`.
    pub fn new(channels: i64, size: i64) -> Self {
        OnnxGraph {
            graph: GraphProto {
                name: "smoothface".into(),
                input: vec![batch_value(INPUT, &[channels, size, size])],
                ..Default::default()
            },
        }
    }

    /// Adds a node; returns the name of its output.
    fn node(&mut self, op: &str, input: Vec<String>, attribute: Vec<AttributeProto>) -> String {
        let output = format!("{}_{}", op.to_lowercase(), self.graph.node.len());
        self.graph.node.push(NodeProto {
            name: output.clone(),
            op_type: op.into(),
            input,
            output: vec![output.clone()],
            attribute,
            ..Default::default()
        });
        output
    }

    /// Adds a float32 initializer with `t`'s values (any float kind) and shape `dims`.
    fn initializer(&mut self, name: &str, t: &Tensor, dims: &[i64]) -> String {
        let values = Vec::<f32>::try_from(
            t.detach()
                .to_device(tch::Device::Cpu)
                .to_kind(Kind::Float)
                .contiguous()
                .flatten(0, -1),
        )
        .expect("a float tensor");
        assert_eq!(values.len() as i64, dims.iter().product::<i64>(), "{name}");
        self.graph.initializer.push(TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: DataType::Float as i32,
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name.into()
    }

    /// `conv(x)`, with the batch norm `bn` that follows it folded into its filters and bias.
    pub fn conv(&mut self, x: String, conv: &Conv, bn: Option<&BatchNorm>) -> String {
        let s = conv.spec;
        let (weight, bias) = folded(&conv.weight, conv.bias.as_ref(), bn);
        let dims = weight.size();
        let w = self.initializer(&format!("{}.weight", conv.name), &weight, &dims);
        let b = self.initializer(&format!("{}.bias", conv.name), &bias, &[s.out_channels]);
        self.node(
            "Conv",
            vec![x, w, b],
            vec![
                attribute_ints("kernel_shape", &[s.kernel, s.kernel]),
                attribute_ints("strides", &[s.stride, s.stride]),
                attribute_ints("pads", &[s.padding; 4]),
                attribute_ints("dilations", &[1, 1]),
                attribute_int("group", s.groups),
            ],
        )
    }

    /// `prelu(x)` over `[batch, C, H, W]` (slopes shaped `[C, 1, 1]` to broadcast).
    pub fn prelu(&mut self, x: String, prelu: &PRelu) -> String {
        let c = prelu.slope.size()[0];
        let slope = self.initializer(&format!("{}.weight", prelu.name), &prelu.slope, &[c, 1, 1]);
        self.node("PRelu", vec![x, slope], vec![])
    }

    /// A batch norm (evaluation mode) that no convolution precedes.
    pub fn batch_norm(&mut self, x: String, bn: &BatchNorm) -> String {
        let c = bn.weight.size()[0];
        let inputs = [
            ("weight", &bn.weight),
            ("bias", &bn.bias),
            ("running_mean", &bn.running_mean),
            ("running_var", &bn.running_var),
        ]
        .map(|(what, t)| self.initializer(&format!("{}.{what}", bn.name), t, &[c]));
        self.node(
            "BatchNormalization",
            [vec![x], inputs.to_vec()].concat(),
            vec![attribute_float("epsilon", BatchNorm::EPS as f32)],
        )
    }

    /// `a + b`.
    pub fn add(&mut self, a: String, b: String) -> String {
        self.node("Add", vec![a, b], vec![])
    }

    /// `[batch, ...]` to `[batch, product of the rest]`, whatever the batch.
    pub fn flatten(&mut self, x: String) -> String {
        self.node("Flatten", vec![x], vec![attribute_int("axis", 1)])
    }

    /// `x W^T + b` on `[batch, in]`, with the batch norm `bn` that follows it folded in.
    pub fn linear(&mut self, x: String, linear: &Linear, bn: Option<&BatchNorm>) -> String {
        let (weight, bias) = folded(&linear.weight, Some(&linear.bias), bn);
        let dims = weight.size();
        let w = self.initializer(&format!("{}.weight", linear.name), &weight, &dims);
        let b = self.initializer(&format!("{}.bias", linear.name), &bias, &[dims[0]]);
        self.node("Gemm", vec![x, w, b], vec![attribute_int("transB", 1)])
    }

    /// The model, its output renamed [`OUTPUT`] with shape `[batch, dim]`.
    pub fn finish(mut self, output: &str, dim: i64) -> ModelProto {
        let last = self
            .graph
            .node
            .iter_mut()
            .find(|n| n.output.first().is_some_and(|o| o == output))
            .expect("the output is a node's");
        last.output = vec![OUTPUT.into()];
        self.graph.output = vec![batch_value(OUTPUT, &[dim])];
        ModelProto {
            ir_version: 7,
            producer_name: "smoothface-train".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            graph: Some(self.graph),
            ..Default::default()
        }
    }
}
