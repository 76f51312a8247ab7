//! `import`: pretrained ONNX embedders into the trainer's backbones.
//!
//! - MobileFaceNet: the faceplugin model, imported, must give the embeddings tract gives from
//!   the ONNX file, on real aligned faces.
//! - mbf: insightface's w600k_mbf, imported (its final batch norm folded into the fully
//!   connected layer), must give the embeddings onnxruntime gives from the ONNX file on real
//!   aligned faces to 1e-5, and tract's to 1e-4.
//! - IResNet-50: graphs written here in the layout of arcface_torch's export, with seeded random
//!   weights. With its batch norms as separate nodes, the imported parameters must be those
//!   weights name for name, and the network must compute what tract computes from the graph.
//!   With the batch norms folded into the convolutions (what an evaluation-mode export gives),
//!   the imported network must compute what the unfolded one computes.
//! - Graphs that do not fit the backbone fail, naming the node.

use prost::Message;
use smoothface_shared::manifest::{ModelManifest, VerifiedModel};
use smoothface_shared::preprocess::face_tensor;
use smoothface_tests::Rng;
use smoothface_trainer::backbone::onnx::{attribute_float, attribute_int, attribute_ints};
use smoothface_trainer::backbone::{Arch, Options};
use smoothface_trainer::import::{import, load_weights};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use tch::nn;
use tch::{Device, Tensor};
use tract_onnx::pb::tensor_shape_proto::{dimension, Dimension};
use tract_onnx::pb::{
    tensor_proto::DataType, type_proto, AttributeProto, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

mod common;
use common::{crops, max_abs_diff, run_onnxruntime, run_tract, ALIGNED, TOLERANCE};
use tract_onnx::prelude::Framework;

/// The pretrained MobileFaceNet, checked against its manifest.
fn mobilefacenet() -> VerifiedModel {
    ModelManifest::load(&smoothface_tests::models().join("mobilefacenet")).unwrap_or_else(|e| {
        panic!("the pretrained MobileFaceNet is not installed: {e} (run scripts/setup)")
    })
}

/// insightface's w600k_mbf, checked against its manifest.
fn w600k_mbf() -> VerifiedModel {
    ModelManifest::load(&smoothface_tests::models().join("w600k_mbf"))
        .unwrap_or_else(|e| panic!("w600k_mbf is not installed: {e} (run scripts/setup)"))
}

/// The ONNX file of a pretrained model, as its manifest lists it.
fn graph(model: &VerifiedModel, file: &str) -> std::path::PathBuf {
    model.file(file).expect("the manifest lists the graph")
}

/// Largest absolute value.
fn max_abs(a: &[f32]) -> f32 {
    a.iter().fold(0.0, |m, x| m.max(x.abs()))
}

/// A backbone of `arch` loaded from a checkpoint, with its var store.
fn load(
    arch: Arch,
    checkpoint: &Path,
) -> (
    nn::VarStore,
    Box<dyn smoothface_trainer::backbone::Backbone>,
) {
    let mut vs = nn::VarStore::new(Device::Cpu);
    let net = arch.build(&vs.root(), Options::default());
    vs.load(checkpoint)
        .unwrap_or_else(|e| panic!("{}: {e}", checkpoint.display()));
    (vs, net)
}

/// Evaluation-mode embeddings of `input` (`[n, 3, 112, 112]`, flattened).
fn embed(net: &dyn smoothface_trainer::backbone::Backbone, input: &[f32]) -> Vec<f32> {
    let n = input.len() as i64 / (3 * 112 * 112);
    let x = Tensor::from_slice(input).reshape([n, 3, 112, 112]);
    let y = tch::no_grad(|| net.forward_t(&x, false));
    assert_eq!(y.size(), [n, 512], "embedding shape");
    Vec::try_from(y.flatten(0, -1)).expect("float embeddings")
}

fn count_ops(proto: &ModelProto, ops: &[&str]) -> usize {
    let graph = proto.graph.as_ref().expect("graph");
    graph
        .node
        .iter()
        .filter(|n| ops.contains(&n.op_type.as_str()))
        .count()
}

#[test]
fn mobilefacenet_import_reproduces_the_onnx_embeddings_of_real_faces() {
    let model = mobilefacenet();
    let Some(dir) = smoothface_tests::faces(
        "mobilefacenet_import_reproduces_the_onnx_embeddings_of_real_faces",
        ALIGNED,
    ) else {
        return;
    };
    let spec = model.manifest.input.expect("the manifest gives the input");
    let onnx = model
        .file("fr_feature.onnx")
        .expect("the manifest lists the graph");
    let faces = crops(&dir, 8, 2);
    assert_eq!(faces.len(), 16);
    let per = 3 * spec.size * spec.size;
    let mut input = vec![0.0f32; faces.len() * per];
    for (crop, slot) in faces.iter().zip(input.chunks_exact_mut(per)) {
        face_tensor(crop, &spec, slot);
    }
    // The graph ends in Reshape [1, -1]: one face per run.
    let expected: Vec<f32> = input
        .chunks_exact(per)
        .flat_map(|face| run_tract(&onnx, &[1, 3, spec.size, spec.size], face))
        .collect();

    let tmp = tempfile::tempdir().expect("temp dir");
    let checkpoint = tmp.path().join("mobilefacenet.safetensors");
    let imported = import(&onnx, Arch::MobileFaceNet, &checkpoint).expect("import");
    let proto = tract_onnx::onnx()
        .proto_model_for_path(&onnx)
        .expect("ONNX protobuf");
    assert_eq!(imported.layers, count_ops(&proto, &["Conv", "PRelu"]));
    assert_eq!(imported.folded_batch_norms, 0);
    let (_vs, net) = load(Arch::MobileFaceNet, &checkpoint);
    let got = embed(net.as_ref(), &input);

    let diff = max_abs_diff(&got, &expected);
    eprintln!(
        "MobileFaceNet on {} real faces: max |tch - tract| = {diff:.3e}, largest |value| {:.3}",
        faces.len(),
        max_abs(&expected)
    );
    assert!(max_abs(&expected) > 0.1, "the embeddings are all near zero");
    assert!(
        diff <= TOLERANCE,
        "max abs difference {diff:e} > {TOLERANCE:e}"
    );
}

/// Largest difference allowed between the imported mbf (libtorch) and the ONNX file run by
/// onnxruntime, the reference runtime, on embeddings whose largest values are about 4
/// (measured: 6.1e-6 on 16 faces; tract, the device's runtime, 8.8e-6, held to the 1e-4 of every
/// other tract comparison here, since its kernels change with the CPU).
const MBF_TOLERANCE: f32 = 1e-5;

#[test]
fn mbf_import_reproduces_the_onnx_embeddings_of_real_faces() {
    let model = w600k_mbf();
    let Some(dir) = smoothface_tests::faces(
        "mbf_import_reproduces_the_onnx_embeddings_of_real_faces",
        ALIGNED,
    ) else {
        return;
    };
    let spec = model.manifest.input.expect("the manifest gives the input");
    assert_eq!(
        spec,
        smoothface_trainer::backbone::input_spec(Arch::Mbf),
        "the trainer feeds mbf as its manifest says"
    );
    let onnx = graph(&model, "w600k_mbf.onnx");
    let faces = crops(&dir, 8, 2);
    let per = 3 * spec.size * spec.size;
    let mut input = vec![0.0f32; faces.len() * per];
    for (crop, slot) in faces.iter().zip(input.chunks_exact_mut(per)) {
        face_tensor(crop, &spec, slot);
    }

    let tmp = tempfile::tempdir().expect("temp dir");
    let checkpoint = tmp.path().join("mbf.safetensors");
    let imported = import(&onnx, Arch::Mbf, &checkpoint).expect("import");
    let proto = tract_onnx::onnx()
        .proto_model_for_path(&onnx)
        .expect("ONNX protobuf");
    assert_eq!(
        imported.layers,
        count_ops(&proto, &["Conv", "PRelu", "Gemm"])
    );
    assert_eq!(imported.folded_batch_norms, 0);
    assert_eq!(imported.batch_norms_folded_into_linear, 1);
    let (vs, net) = load(Arch::Mbf, &checkpoint);
    assert!(vs.variables().keys().all(|k| k.starts_with("mbf.")));
    let got = embed(net.as_ref(), &input);

    let onnxruntime = run_onnxruntime(&onnx, spec.size, &input);
    // The graph declares a batch of 1 for its output: one face per run.
    let tract: Vec<f32> = input
        .chunks_exact(per)
        .flat_map(|face| run_tract(&onnx, &[1, 3, spec.size, spec.size], face))
        .collect();
    assert!(
        max_abs(&onnxruntime) > 0.1,
        "the embeddings are all near zero"
    );
    for (runtime, expected, tolerance) in [
        ("onnxruntime", &onnxruntime, MBF_TOLERANCE),
        ("tract", &tract, TOLERANCE),
    ] {
        let diff = max_abs_diff(&got, expected);
        eprintln!(
            "mbf on {} real faces: max |tch - {runtime}| = {diff:.3e}, largest |value| {:.3}",
            faces.len(),
            max_abs(expected)
        );
        assert!(
            diff <= tolerance,
            "{runtime}: max abs difference {diff:e} > {tolerance:e}"
        );
    }
}

/// The fold of w600k_mbf's last batch norm into its fully connected layer needs that batch norm
/// to be the layer's only reader; other architectures' graphs fail at their first node.
#[test]
fn mbf_and_mobilefacenet_graphs_are_told_apart() {
    let mbf = tract_onnx::onnx()
        .proto_model_for_path(graph(&w600k_mbf(), "w600k_mbf.onnx"))
        .expect("ONNX protobuf");
    // Its 128-channel stem is not MobileFaceNet's 64.
    let e = import_error(&mbf, Arch::MobileFaceNet);
    for part in [
        "Conv_0",
        "mobilefacenet.conv1",
        "[128, 3, 3, 3]",
        "[64, 3, 3, 3]",
    ] {
        assert!(e.contains(part), "{e:?} does not mention {part}");
    }
    let e = import_error(&mbf, Arch::IResNet50);
    assert!(
        e.contains("Conv_0") && e.contains("iresnet50.conv1"),
        "{e:?}"
    );
    let mobilefacenet = tract_onnx::onnx()
        .proto_model_for_path(graph(&mobilefacenet(), "fr_feature.onnx"))
        .expect("ONNX protobuf");
    let e = import_error(&mobilefacenet, Arch::Mbf);
    for part in ["Conv_0", "mbf.conv1", "[64, 3, 3, 3]", "[128, 3, 3, 3]"] {
        assert!(e.contains(part), "{e:?} does not mention {part}");
    }

    // Another node reading the fully connected layer's output would see the fold.
    let mut proto = mbf.clone();
    let graph = proto.graph.as_mut().expect("graph");
    let gemm = graph
        .node
        .iter()
        .find(|n| n.op_type == "Gemm")
        .expect("a Gemm")
        .output[0]
        .clone();
    graph.node.push(NodeProto {
        name: "Identity_extra".into(),
        op_type: "Identity".into(),
        input: vec![gemm.clone()],
        output: vec!["extra".into()],
        ..Default::default()
    });
    let e = import_error(&proto, Arch::Mbf);
    for part in ["BatchNormalization_97", "mbf.fc", &gemm] {
        assert!(e.contains(part), "{e:?} does not mention {part}");
    }
}

/// `n` seeded random numbers uniform in `(lo, hi]`, the same on every run and platform.
fn uniforms(rng: &mut Rng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n)
        .map(|_| lo + (hi - lo) * rng.uniform() as f32)
        .collect()
}

/// arcface_torch's IResNet-50 state dict (names, shapes, values) with random weights scaled so
/// that activations stay of order one through the 24 blocks.
#[derive(Default)]
struct StateDict(BTreeMap<String, (Vec<i64>, Vec<f32>)>);

impl StateDict {
    fn iresnet50(rng: &mut Rng) -> StateDict {
        let mut sd = StateDict::default();
        sd.conv(rng, "conv1", 64, 3, 3);
        sd.bn(rng, "bn1", 64, 1.0);
        sd.prelu(rng, "prelu", 64);
        let mut inplanes = 64;
        for (stage, (count, planes)) in [(3, 64), (4, 128), (14, 256), (3, 512)]
            .into_iter()
            .enumerate()
        {
            for i in 0..count {
                let b = format!("layer{}.{i}", stage + 1);
                sd.bn(rng, &format!("{b}.bn1"), inplanes, 1.0);
                sd.conv(rng, &format!("{b}.conv1"), planes, inplanes, 3);
                sd.bn(rng, &format!("{b}.bn2"), planes, 1.0);
                sd.prelu(rng, &format!("{b}.prelu"), planes);
                sd.conv(rng, &format!("{b}.conv2"), planes, planes, 3);
                // Small residual branches, as in a trained network.
                sd.bn(rng, &format!("{b}.bn3"), planes, 0.2);
                if i == 0 {
                    sd.conv(rng, &format!("{b}.downsample.0"), planes, inplanes, 1);
                    sd.bn(rng, &format!("{b}.downsample.1"), planes, 1.0);
                }
                inplanes = planes;
            }
        }
        sd.bn(rng, "bn2", 512, 1.0);
        let fan_in = 512 * 7 * 7;
        let bound = (3.0 / fan_in as f32).sqrt();
        sd.put(
            "fc.weight",
            &[512, fan_in],
            uniforms(rng, 512 * fan_in as usize, -bound, bound),
        );
        sd.put("fc.bias", &[512], uniforms(rng, 512, -0.1, 0.1));
        sd.bn(rng, "features", 512, 1.0);
        // arcface_torch freezes this scale at 1.
        sd.put("features.weight", &[512], vec![1.0; 512]);
        sd
    }

    fn put(&mut self, name: &str, dims: &[i64], values: Vec<f32>) {
        assert_eq!(values.len() as i64, dims.iter().product::<i64>(), "{name}");
        self.0.insert(name.to_string(), (dims.to_vec(), values));
    }

    fn get(&self, name: &str) -> &(Vec<i64>, Vec<f32>) {
        self.0.get(name).unwrap_or_else(|| panic!("no {name}"))
    }

    /// Filters of variance 1/fan_in: unit-variance inputs give unit-variance outputs.
    fn conv(&mut self, rng: &mut Rng, name: &str, out: i64, inp: i64, k: i64) {
        let bound = (3.0 / (inp * k * k) as f32).sqrt();
        let n = (out * inp * k * k) as usize;
        self.put(
            &format!("{name}.weight"),
            &[out, inp, k, k],
            uniforms(rng, n, -bound, bound),
        );
    }

    fn bn(&mut self, rng: &mut Rng, name: &str, c: i64, scale: f32) {
        let n = c as usize;
        let weight = uniforms(rng, n, 0.8 * scale, 1.2 * scale);
        self.put(&format!("{name}.weight"), &[c], weight);
        self.put(&format!("{name}.bias"), &[c], uniforms(rng, n, -0.1, 0.1));
        self.put(
            &format!("{name}.running_mean"),
            &[c],
            uniforms(rng, n, -0.1, 0.1),
        );
        self.put(
            &format!("{name}.running_var"),
            &[c],
            uniforms(rng, n, 0.5, 1.5),
        );
    }

    fn prelu(&mut self, rng: &mut Rng, name: &str, c: i64) {
        self.put(
            &format!("{name}.weight"),
            &[c],
            uniforms(rng, c as usize, 0.1, 0.4),
        );
    }
}

/// How the written graph stores its batch norms and weights.
#[derive(Clone, Copy, PartialEq)]
enum Layout {
    /// Every batch norm a BatchNormalization node (epsilon 1e-5), weights as `raw_data`, the fully
    /// connected layer a Gemm with transB = 1 (torch's `[out, in]`).
    Separate,
    /// Batch norms after convolutions folded into them (weights scaled, a bias added), the others
    /// BatchNormalization nodes with epsilon 2e-5 and their variance lowered to match; weights
    /// as `float_data`; the fully connected layer a Gemm with transB = 0 (`[in, out]`).
    Folded,
}

/// Writes the ONNX graph of an IResNet-50 with the weights of `sd`, in the node order of
/// arcface_torch's forward pass (as `torch.onnx.export` writes it), for a batch of `batch`.
struct Writer<'a> {
    sd: &'a StateDict,
    layout: Layout,
    graph: GraphProto,
}

fn value_info(name: &str, dims: &[i64]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|&d| Dimension {
            value: Some(dimension::Value::DimValue(d)),
            ..Default::default()
        })
        .collect();
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

impl Writer<'_> {
    fn model(sd: &StateDict, layout: Layout, batch: i64) -> ModelProto {
        let mut w = Writer {
            sd,
            layout,
            graph: GraphProto {
                name: "main_graph".into(),
                input: vec![value_info("input.1", &[batch, 3, 112, 112])],
                ..Default::default()
            },
        };
        let mut x = w.conv_bn("input.1".into(), "conv1", "bn1", 1);
        x = w.prelu(x, "prelu");
        for (stage, count) in [3, 4, 14, 3].into_iter().enumerate() {
            for i in 0..count {
                let b = format!("layer{}.{i}", stage + 1);
                let stride = if i == 0 { 2 } else { 1 };
                let y = w.bn(x.clone(), &format!("{b}.bn1"));
                let y = w.conv_bn(y, &format!("{b}.conv1"), &format!("{b}.bn2"), 1);
                let y = w.prelu(y, &format!("{b}.prelu"));
                let y = w.conv_bn(y, &format!("{b}.conv2"), &format!("{b}.bn3"), stride);
                let identity = if i == 0 {
                    let ds = format!("{b}.downsample");
                    w.conv_bn(x, &format!("{ds}.0"), &format!("{ds}.1"), stride)
                } else {
                    x
                };
                x = w.node("Add", vec![y, identity], vec![]);
            }
        }
        x = w.bn(x, "bn2");
        x = w.node("Flatten", vec![x], vec![attribute_int("axis", 1)]);
        x = w.gemm(x, "fc");
        x = w.bn(x, "features");
        w.graph.output = vec![value_info(&x, &[batch, 512])];
        ModelProto {
            ir_version: 6,
            producer_name: "smoothface-test".into(),
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: 11,
            }],
            graph: Some(w.graph),
            ..Default::default()
        }
    }

    /// Adds a node named like torch's exporter names them (`Conv_12`); returns its output.
    fn node(&mut self, op: &str, input: Vec<String>, attribute: Vec<AttributeProto>) -> String {
        let index = self.graph.node.len();
        let output = format!("{index}");
        self.graph.node.push(NodeProto {
            name: format!("{op}_{index}"),
            op_type: op.into(),
            input,
            output: vec![output.clone()],
            attribute,
            ..Default::default()
        });
        output
    }

    /// Adds an initialiser; returns its name.
    fn init(&mut self, name: &str, dims: &[i64], values: &[f32]) -> String {
        let mut t = TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: DataType::Float as i32,
            ..Default::default()
        };
        match self.layout {
            Layout::Separate => t.raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            Layout::Folded => t.float_data = values.to_vec(),
        }
        self.graph.initializer.push(t);
        name.into()
    }

    /// Initialiser from the state dict under its own name.
    fn param(&mut self, name: &str) -> String {
        let (dims, values) = self.sd.get(name);
        self.init(name, dims, values)
    }

    /// Convolution `conv` followed by batch norm `bn`: two nodes, or one Conv with the batch norm
    /// folded in.
    fn conv_bn(&mut self, x: String, conv: &str, bn: &str, stride: i64) -> String {
        let sd = self.sd;
        let (dims, weight) = sd.get(&format!("{conv}.weight"));
        let k = dims[2];
        let attrs = vec![
            attribute_ints("dilations", &[1, 1]),
            attribute_int("group", 1),
            attribute_ints("kernel_shape", &[k, k]),
            attribute_ints("pads", &[k / 2; 4]),
            attribute_ints("strides", &[stride, stride]),
        ];
        if self.layout == Layout::Separate {
            let w = self.param(&format!("{conv}.weight"));
            let y = self.node("Conv", vec![x, w], attrs);
            return self.bn(y, bn);
        }
        // y = gamma (conv(x) - mean) / sqrt(var + eps) + beta = conv'(x) + b, with the filters of
        // output o scaled by s[o] = gamma[o] / sqrt(var[o] + eps) and b = beta - mean s.
        let field = |f: &str| &sd.get(&format!("{bn}.{f}")).1;
        let (gamma, beta, mean, var) = (
            field("weight"),
            field("bias"),
            field("running_mean"),
            field("running_var"),
        );
        let s: Vec<f64> = gamma
            .iter()
            .zip(var)
            .map(|(&g, &v)| f64::from(g) / (f64::from(v) + 1e-5).sqrt())
            .collect();
        let per = weight.len() / s.len();
        let folded: Vec<f32> = weight
            .iter()
            .enumerate()
            .map(|(i, &w)| (f64::from(w) * s[i / per]) as f32)
            .collect();
        let bias: Vec<f32> = (0..s.len())
            .map(|o| (f64::from(beta[o]) - f64::from(mean[o]) * s[o]) as f32)
            .collect();
        let index = self.graph.node.len();
        let c = s.len() as i64;
        let w = self.init(&format!("onnx::Conv_{index}_w"), dims, &folded);
        let b = self.init(&format!("onnx::Conv_{index}_b"), &[c], &bias);
        self.node("Conv", vec![x, w, b], attrs)
    }

    fn bn(&mut self, x: String, name: &str) -> String {
        let mut inputs = vec![x];
        let epsilon = match self.layout {
            Layout::Separate => {
                for f in ["weight", "bias", "running_mean", "running_var"] {
                    inputs.push(self.param(&format!("{name}.{f}")));
                }
                1e-5
            }
            Layout::Folded => {
                for f in ["weight", "bias", "running_mean"] {
                    inputs.push(self.param(&format!("{name}.{f}")));
                }
                // var + 2e-5 here is var + 1e-5 in the state dict: the same function.
                let (dims, var) = self.sd.get(&format!("{name}.running_var"));
                let lowered: Vec<f32> = var.iter().map(|v| v - 1e-5).collect();
                inputs.push(self.init(&format!("{name}.running_var"), dims, &lowered));
                2e-5
            }
        };
        self.node(
            "BatchNormalization",
            inputs,
            vec![
                attribute_float("epsilon", epsilon),
                attribute_float("momentum", 0.9),
            ],
        )
    }

    /// PRelu with its slopes as `[C, 1, 1]`, as torch exports `nn.PReLU`.
    fn prelu(&mut self, x: String, name: &str) -> String {
        let (dims, values) = self.sd.get(&format!("{name}.weight"));
        let slope = self.init(&format!("{name}.weight"), &[dims[0], 1, 1], values);
        self.node("PRelu", vec![x, slope], vec![])
    }

    fn gemm(&mut self, x: String, name: &str) -> String {
        let (dims, w) = self.sd.get(&format!("{name}.weight"));
        let (out, inp) = (dims[0] as usize, dims[1] as usize);
        let (w, trans_b) = match self.layout {
            Layout::Separate => (self.param(&format!("{name}.weight")), 1),
            Layout::Folded => {
                let transposed: Vec<f32> = (0..inp * out)
                    .map(|i| w[(i % out) * inp + i / out])
                    .collect();
                (
                    self.init(
                        &format!("{name}.weight"),
                        &[inp as i64, out as i64],
                        &transposed,
                    ),
                    0,
                )
            }
        };
        let b = self.param(&format!("{name}.bias"));
        self.node(
            "Gemm",
            vec![x, w, b],
            vec![
                attribute_float("alpha", 1.0),
                attribute_float("beta", 1.0),
                attribute_int("transB", trans_b),
            ],
        )
    }
}

/// The state dict every IResNet-50 test uses, and a random input batch of 2.
fn iresnet50_weights_and_input() -> (StateDict, Vec<f32>) {
    let mut rng = Rng::new(50);
    let sd = StateDict::iresnet50(&mut rng);
    let input = uniforms(&mut rng, 2 * 3 * 112 * 112, -1.0, 1.0);
    (sd, input)
}

fn write_onnx(proto: &ModelProto, path: &Path) {
    std::fs::write(path, proto.encode_to_vec())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

#[test]
fn iresnet50_import_takes_every_weight_and_runs_like_tract() {
    let (sd, input) = iresnet50_weights_and_input();
    let proto = Writer::model(&sd, Layout::Separate, 2);
    let tmp = tempfile::tempdir().expect("temp dir");
    let onnx = tmp.path().join("r50.onnx");
    write_onnx(&proto, &onnx);
    let checkpoint = tmp.path().join("r50.safetensors");
    let imported = import(&onnx, Arch::IResNet50, &checkpoint).expect("import");
    assert_eq!(
        imported.layers,
        count_ops(&proto, &["Conv", "BatchNormalization", "PRelu", "Gemm"])
    );
    assert_eq!(imported.folded_batch_norms, 0);

    // Every variable of the checkpoint is the state dict's tensor of the same name, and nothing
    // else is there.
    let (vs, net) = load(Arch::IResNet50, &checkpoint);
    let variables = vs.variables();
    let ours: BTreeSet<&str> = variables
        .keys()
        .map(|k| k.strip_prefix("iresnet50.").expect("the arch prefix"))
        .collect();
    let theirs: BTreeSet<&str> = sd.0.keys().map(String::as_str).collect();
    assert_eq!(ours, theirs);
    for (name, (_, values)) in &sd.0 {
        let t = &variables[&format!("iresnet50.{name}")];
        let got = Vec::<f32>::try_from(t.flatten(0, -1)).expect("floats");
        assert!(got == *values, "{name} differs from the ONNX initialiser");
    }

    let got = embed(net.as_ref(), &input);
    let expected = run_tract(&onnx, &[2, 3, 112, 112], &input);
    let diff = max_abs_diff(&got, &expected);
    eprintln!(
        "IResNet-50, separate batch norms: max |tch - tract| = {diff:.3e}, largest |value| {:.3}",
        max_abs(&expected)
    );
    assert!(max_abs(&expected) > 0.1, "the embeddings are all near zero");
    assert!(
        diff <= TOLERANCE,
        "max abs difference {diff:e} > {TOLERANCE:e}"
    );
}

#[test]
fn iresnet50_import_of_folded_batch_norms_computes_the_same() {
    let (sd, input) = iresnet50_weights_and_input();
    let tmp = tempfile::tempdir().expect("temp dir");
    let onnx = tmp.path().join("r50-folded.onnx");
    write_onnx(&Writer::model(&sd, Layout::Folded, 2), &onnx);
    let checkpoint = tmp.path().join("r50-folded.safetensors");
    let imported = import(&onnx, Arch::IResNet50, &checkpoint).expect("import");
    // The stem, two per block (24 blocks) and one per stage's downsampling path.
    assert_eq!(imported.folded_batch_norms, 1 + 2 * 24 + 4);
    let (_vs, folded) = load(Arch::IResNet50, &checkpoint);

    let vs = nn::VarStore::new(Device::Cpu);
    let separate = Arch::IResNet50.build(&vs.root(), Options::default());
    load_weights(&Writer::model(&sd, Layout::Separate, 2), separate.as_ref()).expect("import");

    let expected = embed(separate.as_ref(), &input);
    let got = embed(folded.as_ref(), &input);
    let diff = max_abs_diff(&got, &expected);
    eprintln!(
        "IResNet-50, folded vs separate batch norms: max abs difference {diff:.3e}, largest |value| {:.3}",
        max_abs(&expected)
    );
    assert!(
        diff <= TOLERANCE,
        "max abs difference {diff:e} > {TOLERANCE:e}"
    );
}

/// The import error for `proto` as `arch`, with its causes.
fn import_error(proto: &ModelProto, arch: Arch) -> String {
    let vs = nn::VarStore::new(Device::Cpu);
    let net = arch.build(&vs.root(), Options::default());
    match load_weights(proto, net.as_ref()) {
        Ok(_) => panic!("the import succeeded"),
        Err(e) => {
            eprintln!("{arch}: {e:#}");
            format!("{e:#}")
        }
    }
}

/// The node reading initialiser `name`.
fn reader_of<'a>(proto: &'a mut ModelProto, name: &str) -> &'a mut NodeProto {
    let graph = proto.graph.as_mut().expect("graph");
    graph
        .node
        .iter_mut()
        .find(|n| n.input.iter().any(|i| i == name))
        .unwrap_or_else(|| panic!("no node reads {name}"))
}

#[test]
fn mismatches_name_the_node_and_both_sides() {
    let (sd, _) = iresnet50_weights_and_input();
    let separate = Writer::model(&sd, Layout::Separate, 2);

    // A 1x1 kernel where the backbone has 3x3.
    let mut proto = separate.clone();
    let name = "layer3.2.conv2.weight";
    let t = proto
        .graph
        .as_mut()
        .expect("graph")
        .initializer
        .iter_mut()
        .find(|t| t.name == name)
        .expect("initialiser");
    t.dims = vec![256, 256, 1, 1];
    t.raw_data.truncate(256 * 256 * 4);
    let node = reader_of(&mut proto, name).name.clone();
    let e = import_error(&proto, Arch::IResNet50);
    for part in [
        node.as_str(),
        name,
        "[256, 256, 1, 1]",
        "[256, 256, 3, 3]",
        "layer3.2.conv2",
    ] {
        assert!(e.contains(part), "{e:?} does not mention {part}");
    }

    // A stride the backbone does not have.
    let mut proto = separate.clone();
    let conv = reader_of(&mut proto, "layer2.0.conv2.weight");
    conv.attribute
        .iter_mut()
        .filter(|a| a.name == "strides")
        .for_each(|a| a.ints = vec![1, 1]);
    let node = conv.name.clone();
    let e = import_error(&proto, Arch::IResNet50);
    for part in [
        node.as_str(),
        "strides",
        "[1, 1]",
        "[2, 2]",
        "layer2.0.conv2",
    ] {
        assert!(e.contains(part), "{e:?} does not mention {part}");
    }

    // A bare [C] PReLU slope (ONNX would broadcast it over the columns, not the channels).
    let mut proto = separate.clone();
    let name = "layer1.1.prelu.weight";
    let t = proto
        .graph
        .as_mut()
        .expect("graph")
        .initializer
        .iter_mut()
        .find(|t| t.name == name)
        .expect("initialiser");
    t.dims = vec![64];
    let node = reader_of(&mut proto, name).name.clone();
    let e = import_error(&proto, Arch::IResNet50);
    for part in [node.as_str(), "[64]", "[64, 1, 1]", "layer1.1.prelu"] {
        assert!(e.contains(part), "{e:?} does not mention {part}");
    }

    // Another architecture: the first node already disagrees (MobileFaceNet's stem has stride 2).
    let e = import_error(&separate, Arch::MobileFaceNet);
    assert!(
        e.contains("Conv_0") && e.contains("mobilefacenet.conv1"),
        "{e:?}"
    );
}

#[test]
fn the_checkpoint_must_be_safetensors() {
    let onnx = mobilefacenet()
        .file("fr_feature.onnx")
        .expect("the manifest lists the graph");
    let tmp = tempfile::tempdir().expect("temp dir");
    let e = import(&onnx, Arch::MobileFaceNet, &tmp.path().join("model.pt"))
        .expect_err("a .pt checkpoint");
    assert!(e.to_string().contains(".safetensors"), "{e}");
}

#[test]
fn the_import_command_writes_a_checkpoint_and_reports_it() {
    let onnx = mobilefacenet()
        .file("fr_feature.onnx")
        .expect("the manifest lists the graph");
    let tmp = tempfile::tempdir().expect("temp dir");
    let run = |arch: &str, out: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_smoothface-train"))
            .arg("import")
            .arg(&onnx)
            .args(["--arch", arch, "--out"])
            .arg(out)
            .output()
            .expect("run smoothface-train")
    };

    let checkpoint = tmp.path().join("mobilefacenet.safetensors");
    let ok = run("mobilefacenet", &checkpoint);
    let stderr = String::from_utf8_lossy(&ok.stderr);
    assert!(ok.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&ok.stdout).expect("JSON report");
    let proto = tract_onnx::onnx()
        .proto_model_for_path(&onnx)
        .expect("ONNX protobuf");
    assert_eq!(report["arch"], "mobilefacenet");
    assert_eq!(
        report["checkpoint"],
        checkpoint.to_str().expect("UTF-8 path")
    );
    assert_eq!(report["layers"], count_ops(&proto, &["Conv", "PRelu"]));
    assert_eq!(report["folded_batch_norms"], 0);
    assert_eq!(report["batch_norms_folded_into_linear"], 0);
    load(Arch::MobileFaceNet, &checkpoint);

    let wrong = tmp.path().join("wrong.safetensors");
    let failed = run("iresnet50", &wrong);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(failed.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("fr_feature.onnx") && stderr.contains("Conv_0"),
        "{stderr}"
    );
    // Nothing written for the failed import, not even a temporary file.
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("temp dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(left, ["mobilefacenet.safetensors"]);

    // w600k_mbf as mbf: its last batch norm is reported folded into the linear layer.
    let onnx = graph(&w600k_mbf(), "w600k_mbf.onnx");
    let checkpoint = tmp.path().join("mbf.safetensors");
    let ok = std::process::Command::new(env!("CARGO_BIN_EXE_smoothface-train"))
        .arg("import")
        .arg(&onnx)
        .args(["--arch", "mbf", "--out"])
        .arg(&checkpoint)
        .output()
        .expect("run smoothface-train");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&ok.stdout).expect("JSON report");
    assert_eq!(report["arch"], "mbf");
    assert_eq!(report["layers"], 49 + 34 + 1, "Conv, PRelu and Gemm nodes");
    assert_eq!(report["folded_batch_norms"], 0);
    assert_eq!(report["batch_norms_folded_into_linear"], 1);
    load(Arch::Mbf, &checkpoint);
}
