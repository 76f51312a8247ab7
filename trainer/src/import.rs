//! `smoothface-train import`: a checkpoint from a pretrained ONNX embedder.
//!
//! The weights are matched by graph structure, not by name (exporters name initialisers
//! `onnx::Conv_519` or `519` as readily as `layer1.0.conv1.weight`): the graph's nodes are walked
//! in order, and each Conv, BatchNormalization, PRelu and Gemm node fills the next layer of the
//! backbone ([`Backbone::layers`]). Every shape and every convolution hyper-parameter is checked;
//! a disagreement fails naming the node and the layer. Any other node that takes float weights
//! fails too, so that no weight is silently left behind.
//!
//! A batch norm right after a convolution may have been folded into it by the exporter (PyTorch
//! does so when exporting in evaluation mode): the node is a Conv with a bias where the backbone
//! has a convolution without one and a batch norm. That batch norm is then imported as the
//! identity plus the convolution's bias (mean 0, variance 1 - eps, scale 1), which computes the
//! same in evaluation mode; fine-tune such a model with frozen batch norm
//! ([`crate::backbone::Options::frozen_batch_norm`]), since batch statistics would undo the fold.
//!
//! The other way round, a BatchNormalization node right after a Gemm where the backbone has a
//! fully connected layer and no batch norm is folded into that layer at import (w600k_mbf's
//! final BatchNorm1d: see [`crate::backbone::Variant::MBF`]). In evaluation mode a batch norm
//! is an affine map per feature, so the fold computes the same; and every other batch norm of
//! such a graph was already folded by its exporter, so the network can no longer be trained
//! with batch statistics as it was: a real batch norm kept at the end would only make training
//! differ from evaluation (or need freezing) and carry running statistics that fine-tuning
//! would overwrite.

use crate::backbone::layers::{BatchNorm, Conv, Layer, Linear, PRelu};
use crate::backbone::onnx::float_values;
use crate::backbone::{Arch, Backbone, Options};
use crate::checkpoint;
use anyhow::{anyhow, bail, ensure, Context, Result};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;
use tch::{nn, Device, Tensor};
use tract_onnx::pb::{
    tensor_proto, AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto,
};
use tract_onnx::prelude::Framework;

/// What an import did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Imported {
    /// Backbone layers filled from the graph.
    pub layers: usize,
    /// Batch norms the graph had folded into convolutions, imported as identity plus bias.
    pub folded_batch_norms: usize,
    /// Batch norms the graph keeps after a fully connected layer, folded into that layer here.
    pub batch_norms_folded_into_linear: usize,
}

/// Reads the ONNX model at `onnx`, loads its weights into a fresh `arch` backbone and saves them
/// as a safetensors checkpoint at `out` (its name must end in `.safetensors`). The checkpoint is
/// written under a temporary name and renamed, so `out` is either complete or untouched.
pub fn import(onnx: &Path, arch: Arch, out: &Path) -> Result<Imported> {
    ensure!(
        out.extension().is_some_and(|e| e == "safetensors"),
        "{}: the checkpoint's name must end in .safetensors",
        out.display()
    );
    let proto = tract_onnx::onnx()
        .proto_model_for_path(onnx)
        .map_err(|e| anyhow!("{}: not a readable ONNX model: {e:#}", onnx.display()))?;
    let vs = nn::VarStore::new(Device::Cpu);
    let backbone = arch.build(&vs.root(), Options::default());
    let imported = load_weights(&proto, backbone.as_ref())
        .with_context(|| format!("{}: cannot import it as {arch}", onnx.display()))?;
    checkpoint::write(&checkpoint::variables(&vs, ""), out)?;
    Ok(imported)
}

/// Copies the weights of `proto`'s graph into `backbone`'s layers, node by node in graph order.
pub fn load_weights(proto: &ModelProto, backbone: &dyn Backbone) -> Result<Imported> {
    let graph = proto
        .graph
        .as_ref()
        .ok_or_else(|| anyhow!("the model has no graph"))?;
    let weights = Weights::new(graph);
    // Outputs read by a BatchNormalization: a Conv feeding one was not folded into it.
    let normalised: HashSet<&str> = graph
        .node
        .iter()
        .filter(|n| n.op_type == "BatchNormalization")
        .filter_map(|n| n.input.first().map(String::as_str))
        .collect();
    let all = backbone.layers();
    let mut layers = all.iter().copied().peekable();
    let too_many = |node: &At| {
        anyhow!(
            "{node}: the graph has more layers than the backbone's {}",
            all.len()
        )
    };
    let mut folded_batch_norms = 0;
    let mut batch_norms_folded_into_linear = 0;
    // The fully connected layer the previous node filled, and that node's output.
    let mut after_linear: Option<(&Linear, &str)> = None;
    for (index, proto) in graph.node.iter().enumerate() {
        let node = At { proto, index };
        let op = proto.op_type.as_str();
        if !["Conv", "BatchNormalization", "PRelu", "Gemm"].contains(&op) {
            if let Some(w) = proto.input.iter().find_map(|i| weights.float(i)) {
                bail!(
                    "{node}: takes the weights '{}', but no layer of the backbone corresponds \
                     to a {op} node",
                    w.name
                );
            }
            after_linear = None;
            continue;
        }
        let previous = after_linear.take();
        if op == "BatchNormalization" && !matches!(layers.peek(), Some(Layer::BatchNorm(_))) {
            if let Some((linear, output)) = previous {
                fold_batch_norm_into_linear(&node, graph, &weights, linear, output)?;
                batch_norms_folded_into_linear += 1;
                continue;
            }
        }
        let layer = layers.next().ok_or_else(|| too_many(&node))?;
        match (op, layer) {
            ("Conv", Layer::Conv(conv)) => {
                let Some(bias) = import_conv(&node, &weights, conv)? else {
                    continue;
                };
                // A bias the backbone's convolution lacks: the batch norm after it, folded.
                ensure!(
                    !proto.output.iter().any(|o| normalised.contains(o.as_str())),
                    "{node}: has a bias and feeds a BatchNormalization, but {} has no bias",
                    conv.name
                );
                let Layer::BatchNorm(bn) = layers.next().ok_or_else(|| too_many(&node))? else {
                    bail!(
                        "{node}: has a bias, but {} has none and is not followed by a batch \
                         norm the bias could come from",
                        conv.name
                    );
                };
                bias.fold_into(&node, bn)?;
                folded_batch_norms += 1;
            }
            ("BatchNormalization", Layer::BatchNorm(bn)) => import_batch_norm(&node, &weights, bn)?,
            ("PRelu", Layer::PRelu(prelu)) => import_prelu(&node, &weights, prelu)?,
            ("Gemm", Layer::Linear(linear)) => {
                import_gemm(&node, &weights, linear)?;
                after_linear = proto.output.first().map(|o| (linear, o.as_str()));
            }
            _ => return Err(node.kind_mismatch(layer)),
        }
    }
    if let Some(layer) = layers.next() {
        bail!(
            "the graph ends before {} ({}) and the layers after it: it has fewer layers than \
             the backbone's {}",
            layer.name(),
            layer.kind(),
            all.len()
        );
    }
    Ok(Imported {
        layers: all.len(),
        folded_batch_norms,
        batch_norms_folded_into_linear,
    })
}

/// Folds the BatchNormalization `node`, which must read `output` of the Gemm just imported into
/// `linear` and be its only reader (no other node, not a graph output), into `linear`:
/// `bn(W x + b) = (s W) x + (s b + shift)` with `s = scale / sqrt(var + epsilon)` and
/// `shift = bias - mean s` per output feature, computed in float64 and rounded once.
fn fold_batch_norm_into_linear(
    node: &At,
    graph: &GraphProto,
    weights: &Weights,
    linear: &Linear,
    output: &str,
) -> Result<()> {
    ensure!(
        node.proto.input.first().is_some_and(|i| i == output),
        "{node}: the backbone has no batch norm here, and the node does not normalise the output \
         of {} (which could take it in)",
        linear.name
    );
    let readers = graph
        .node
        .iter()
        .filter(|n| n.input.iter().any(|i| i == output))
        .count()
        + graph.output.iter().filter(|o| o.name == output).count();
    ensure!(
        readers == 1,
        "{node}: folding it into {} would change '{output}', which {} other nodes or graph \
         outputs read",
        linear.name,
        readers - 1
    );
    let features = linear.bias.size();
    let mut params = Vec::new();
    for (i, role) in ["scale", "bias", "mean", "var"].into_iter().enumerate() {
        let w = weights.required(node, i + 1, role)?;
        w.check_shape(node, &features, &linear.name)?;
        params.push(w.values()?.to_kind(tch::Kind::Double));
    }
    let [gamma, beta, mean, var] = <[Tensor; 4]>::try_from(params).expect("four parameters");
    let epsilon = f64::from(node.float("epsilon", 1e-5));
    let s = gamma / (var + epsilon).sqrt();
    let shift = beta - mean * &s;
    let double = |t: &Tensor| t.detach().to_kind(tch::Kind::Double);
    let weight = double(&linear.weight) * s.unsqueeze(1);
    let bias = double(&linear.bias) * &s + shift;
    write(&linear.weight, &weight.to_kind(tch::Kind::Float))?;
    write(&linear.bias, &bias.to_kind(tch::Kind::Float))
}

/// Checks a Conv node's hyper-parameters against `conv` and copies its filters and bias.
/// Returns the node's bias when `conv` has none: the bias of a batch norm folded into the node.
fn import_conv<'a>(node: &At, weights: &Weights<'a>, conv: &Conv) -> Result<Option<Weight<'a>>> {
    let s = &conv.spec;
    let expect = |name: &str, got: Vec<i64>, want: Vec<i64>| {
        ensure!(
            got == want,
            "{node}: {name} {got:?}, but {} has {name} {want:?}",
            conv.name
        );
        Ok(())
    };
    expect("strides", node.ints("strides", &[1, 1]), vec![s.stride; 2])?;
    expect("pads", node.ints("pads", &[0; 4]), vec![s.padding; 4])?;
    expect("dilations", node.ints("dilations", &[1, 1]), vec![1, 1])?;
    expect("group", vec![node.int("group", 1)], vec![s.groups])?;
    let auto_pad = node.attribute("auto_pad").map(|a| a.s.as_slice());
    ensure!(
        matches!(auto_pad, None | Some(b"") | Some(b"NOTSET")),
        "{node}: auto_pad {:?} is not imported, only explicit pads",
        String::from_utf8_lossy(auto_pad.unwrap_or_default())
    );
    weights
        .required(node, 1, "weight")?
        .copy_to(node, &conv.weight, &conv.name)?;
    match (weights.optional(node, 2, "bias")?, &conv.bias) {
        (Some(bias), Some(ours)) => bias.copy_to(node, ours, &conv.name)?,
        (None, Some(_)) => bail!("{node}: has no bias, but {} has one", conv.name),
        (bias, None) => return Ok(bias),
    }
    Ok(None)
}

/// Copies a PRelu node's slopes into `prelu`.
fn import_prelu(node: &At, weights: &Weights, prelu: &PRelu) -> Result<()> {
    let slope = weights.required(node, 1, "slope")?;
    let c = prelu.slope.size()[0];
    // ONNX broadcasts from the last axis: a per-channel slope of an NCHW tensor must be
    // [C, 1, 1] (or [1, C, 1, 1]); a bare [C] would scale the columns.
    ensure!(
        slope.dims == [c, 1, 1] || slope.dims == [1, c, 1, 1],
        "{node}: slope '{}' has shape {:?}, but {} needs one slope per channel, [{c}, 1, 1]",
        slope.name,
        slope.dims,
        prelu.name
    );
    write(&prelu.slope, &slope.values()?.reshape([c]))
}

/// Copies a Gemm node (`alpha = beta = 1`, B transposed or not) into `linear`.
fn import_gemm(node: &At, weights: &Weights, linear: &Linear) -> Result<()> {
    for name in ["alpha", "beta"] {
        let got = node.float(name, 1.0);
        ensure!(got == 1.0, "{node}: {name} is {got}, only 1 is imported");
    }
    ensure!(
        node.int("transA", 0) == 0,
        "{node}: transA is set, only untransposed inputs are imported"
    );
    let w = weights.required(node, 1, "weight")?;
    if node.int("transB", 0) == 1 {
        w.copy_to(node, &linear.weight, &linear.name)?;
    } else {
        // B is [in, out]: transposed, it is torch's [out, in].
        let size = linear.weight.size();
        w.check_shape(node, &[size[1], size[0]], &linear.name)?;
        write(&linear.weight, &w.values()?.transpose(0, 1))?;
    }
    weights
        .optional(node, 2, "bias")?
        .ok_or_else(|| anyhow!("{node}: has no bias, but {} has one", linear.name))?
        .copy_to(node, &linear.bias, &linear.name)
}

/// Copies a BatchNormalization node's scale, shift and statistics into `bn`.
fn import_batch_norm(node: &At, weights: &Weights, bn: &BatchNorm) -> Result<()> {
    let roles = ["scale", "bias", "mean", "var"];
    let targets = [&bn.weight, &bn.bias, &bn.running_mean, &bn.running_var];
    for (i, (role, target)) in roles.iter().zip(targets).enumerate() {
        let w = weights.required(node, i + 1, role)?;
        w.check_shape(node, &target.size(), &bn.name)?;
        let mut values = w.values()?;
        if *role == "var" {
            // The variance only ever appears as var + eps: a graph with another epsilon keeps
            // the same function with the difference moved into the variance.
            let delta = f64::from(node.float("epsilon", 1e-5)) - f64::from(BatchNorm::EPS as f32);
            if delta != 0.0 {
                values += delta;
            }
        }
        write(target, &values)?;
    }
    Ok(())
}

/// Overwrites a parameter's values (of the same shape), outside autograd.
fn write(target: &Tensor, values: &Tensor) -> Result<()> {
    tch::no_grad(|| target.shallow_clone().f_copy_(values))?;
    Ok(())
}

/// A node of the graph, for reading its attributes and naming it in errors.
struct At<'a> {
    proto: &'a NodeProto,
    index: usize,
}

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (op, index) = (&self.proto.op_type, self.index);
        if self.proto.name.is_empty() {
            write!(f, "node #{index} ({op})")
        } else {
            write!(f, "node '{}' (#{index}, {op})", self.proto.name)
        }
    }
}

impl At<'_> {
    fn attribute(&self, name: &str) -> Option<&AttributeProto> {
        self.proto.attribute.iter().find(|a| a.name == name)
    }

    fn int(&self, name: &str, default: i64) -> i64 {
        self.attribute(name).map_or(default, |a| a.i)
    }

    fn float(&self, name: &str, default: f32) -> f32 {
        self.attribute(name).map_or(default, |a| a.f)
    }

    fn ints(&self, name: &str, default: &[i64]) -> Vec<i64> {
        self.attribute(name)
            .map_or_else(|| default.to_vec(), |a| a.ints.clone())
    }

    fn kind_mismatch(&self, layer: Layer<'_>) -> anyhow::Error {
        anyhow!(
            "{self}: the backbone has a {} here ({}): the graph is not this architecture",
            layer.kind(),
            layer.name()
        )
    }
}

/// The graph's initialisers by name.
struct Weights<'a>(HashMap<&'a str, &'a TensorProto>);

/// One initialiser, as a node's input.
struct Weight<'a> {
    name: &'a str,
    dims: &'a [i64],
    proto: &'a TensorProto,
}

impl<'a> Weights<'a> {
    fn new(graph: &'a GraphProto) -> Weights<'a> {
        Weights(
            graph
                .initializer
                .iter()
                .map(|t| (t.name.as_str(), t))
                .collect(),
        )
    }

    /// The initialiser `name` when it holds floating-point numbers (any width): the kind of
    /// input that is a weight, as opposed to shapes and indices.
    fn float(&self, name: &str) -> Option<&'a TensorProto> {
        use tensor_proto::DataType as D;
        self.0.get(name).copied().filter(|t| {
            [D::Float, D::Double, D::Float16, D::Bfloat16]
                .iter()
                .any(|&d| t.data_type == d as i32)
        })
    }

    /// Input `i` of `node` (its `role`, for messages), which must be an initialiser.
    fn required(&self, node: &At, i: usize, role: &str) -> Result<Weight<'a>> {
        self.optional(node, i, role)?
            .ok_or_else(|| anyhow!("{node}: has no {role} (input {i})"))
    }

    /// Input `i` of `node` when the node has it; an error when it is there but computed by the
    /// graph rather than stored.
    fn optional(&self, node: &At, i: usize, role: &str) -> Result<Option<Weight<'a>>> {
        let Some(name) = node.proto.input.get(i).filter(|n| !n.is_empty()) else {
            return Ok(None);
        };
        let proto = self.0.get(name.as_str()).ok_or_else(|| {
            anyhow!("{node}: its {role} '{name}' is computed in the graph, not stored as an initialiser")
        })?;
        Ok(Some(Weight {
            name: &proto.name,
            dims: &proto.dims,
            proto,
        }))
    }
}

impl Weight<'_> {
    fn check_shape(&self, node: &At, want: &[i64], layer: &str) -> Result<()> {
        ensure!(
            self.dims == want,
            "{node}: '{}' has shape {:?} in the ONNX model, but {layer} expects {want:?}",
            self.name,
            self.dims
        );
        Ok(())
    }

    /// The values as a float32 tensor of the initialiser's shape.
    fn values(&self) -> Result<Tensor> {
        let values = float_values(self.proto)?;
        Ok(Tensor::from_slice(&values).f_reshape(self.dims)?)
    }

    /// Copies the values into `target` after checking the shape.
    fn copy_to(&self, node: &At, target: &Tensor, layer: &str) -> Result<()> {
        self.check_shape(node, &target.size(), layer)?;
        write(target, &self.values()?)
    }

    /// Makes `bn` the identity plus this bias: the form a batch norm takes once folded into
    /// the convolution before it.
    fn fold_into(&self, node: &At, bn: &BatchNorm) -> Result<()> {
        self.check_shape(node, &bn.bias.size(), &bn.name)?;
        write(&bn.weight, &bn.weight.ones_like())?;
        write(&bn.bias, &self.values()?)?;
        write(&bn.running_mean, &bn.running_mean.zeros_like())?;
        write(
            &bn.running_var,
            &bn.running_var.full_like(1.0 - BatchNorm::EPS),
        )
    }
}

/// What several crates' tests start from.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// The pretrained MobileFaceNet (`models/mobilefacenet/fr_feature.onnx`), imported into a
    /// checkpoint in `dir` and loaded into a fresh var store on the CPU.
    pub fn pretrained_mobilefacenet(dir: &Path) -> (nn::VarStore, Box<dyn Backbone>) {
        let ckpt = dir.join("mobilefacenet.safetensors");
        let onnx = smoothface_tests::models().join("mobilefacenet/fr_feature.onnx");
        import(&onnx, Arch::MobileFaceNet, &ckpt).unwrap();
        let vs = nn::VarStore::new(Device::Cpu);
        let net = Arch::MobileFaceNet.build(&vs.root(), Options::default());
        let tensors = checkpoint::read(&ckpt).unwrap();
        checkpoint::load_into(&vs, "mobilefacenet", &tensors, &ckpt).unwrap();
        (vs, net)
    }
}
