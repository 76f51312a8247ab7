//! The device's rewrites change how tract runs the pretrained models, never what they compute.

use smoothface_device::onnx;
use std::path::{Path, PathBuf};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::cnn::Conv;
use tract_onnx::tract_core::ops::nn::DataFormat;

fn model(path: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models")
        .join(path);
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup (scripts/test does)",
        p.display()
    );
    p
}

/// Deterministic pseudo-random input in [-1, 1].
fn input(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let data: Vec<f32> = (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect();
    Tensor::from_shape(shape, &data).unwrap()
}

fn max_abs_diff(path: &Path, shape: &[usize]) -> f32 {
    let rewritten = onnx::plan(&onnx::load_graph(path).unwrap(), shape).unwrap();
    let original = onnx::plan(&onnx::load_graph_unmodified(path).unwrap(), shape).unwrap();
    let x = input(shape);
    let (a, b) = (
        rewritten.run(tvec!(x.clone().into())).unwrap(),
        original.run(tvec!(x.into())).unwrap(),
    );
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(&b)
        .flat_map(|(a, b)| {
            let (a, b) = (
                a.to_plain_array_view::<f32>().unwrap().to_owned(),
                b.to_plain_array_view::<f32>().unwrap().to_owned(),
            );
            assert_eq!(a.shape(), b.shape());
            a.iter()
                .zip(b.iter())
                .map(|(x, y)| (x - y).abs())
                .collect::<Vec<_>>()
        })
        .fold(0.0, f32::max)
}

#[test]
fn rewritten_embedder_and_detector_compute_what_the_originals_do() {
    assert!(max_abs_diff(&model("mobilefacenet/fr_feature.onnx"), &[1, 3, 112, 112]) < 1e-5);
    assert!(max_abs_diff(&model("mtcnn/pnet.onnx"), &[1, 40, 30, 3]) < 1e-5);
    assert!(max_abs_diff(&model("mtcnn/rnet.onnx"), &[3, 24, 24, 3]) < 1e-5);
    assert!(max_abs_diff(&model("mtcnn/onet.onnx"), &[2, 48, 48, 3]) < 1e-5);
}

#[test]
fn every_prelu_of_the_embedder_is_rewritten() {
    let path = model("mobilefacenet/fr_feature.onnx");
    let mut proto = tract_onnx::onnx().proto_model_for_path(&path).unwrap();
    let graph = proto.graph.as_mut().unwrap();
    let prelus = graph.node.iter().filter(|n| n.op_type == "PRelu").count();
    assert_eq!(prelus, 33, "the pretrained MobileFaceNet has 33 PRelu");
    assert_eq!(onnx::rewrite_prelu(graph), 33);
    assert!(graph.node.iter().all(|n| n.op_type != "PRelu"));
}

#[test]
fn every_depthwise_convolution_of_the_embedder_but_the_first_runs_channels_last() {
    let path = model("mobilefacenet/fr_feature.onnx");
    // After the PRelu rewrite: tract's own PRelu ops cannot carry the move.
    let proto = onnx::rewritten_proto(&path).unwrap();
    let mut graph = tract_onnx::onnx().model_for_proto_model(&proto).unwrap();
    graph
        .set_input_fact(
            0,
            InferenceFact::dt_shape(f32::datum_type(), tvec!(1, 3, 112, 112)),
        )
        .unwrap();
    let mut typed = graph.into_typed().unwrap().into_decluttered().unwrap();
    // On x86 tract plans them channels-first and the rewrite moves 16; on aarch64 (NEON has a
    // channels-inner kernel) tract already plans them channels-last and it moves none.
    onnx::channels_last_depthwise(&mut typed).unwrap();
    let layouts: Vec<DataFormat> = typed
        .nodes()
        .iter()
        .filter_map(|n| n.op_as::<Conv>())
        .filter(|c| c.group > 1)
        .map(|c| c.pool_spec.data_format)
        .collect();
    // 17 depthwise convolutions; the first (Conv_2) would move the image input's layout too.
    assert_eq!(layouts.len(), 17);
    assert_eq!(layouts[0], DataFormat::NCHW);
    assert!(layouts[1..].iter().all(|f| f.c_is_last()), "{layouts:?}");
    assert_eq!(
        typed.input_fact(0).unwrap().shape.to_tvec(),
        tvec!(1.into(), 3.into(), 112.into(), 112.into())
    );
    // Nothing left to move.
    assert_eq!(onnx::channels_last_depthwise(&mut typed).unwrap(), 0);
}

#[test]
fn the_embedder_s_rewritten_slopes_are_shaped_like_its_activations() {
    let path = model("mobilefacenet/fr_feature.onnx");
    let proto = onnx::rewritten_proto(&path).unwrap();
    let graph = proto.graph.as_ref().unwrap();
    let slopes: Vec<_> = graph
        .initializer
        .iter()
        .filter(|t| t.name.ends_with(".a_minus_1"))
        .collect();
    assert_eq!(slopes.len(), 33);
    for t in slopes {
        // [1, C, 1, 1], not the original [C, 1, 1]: see `slope_dims` for why.
        assert_eq!(t.dims.len(), 4, "{}: {:?}", t.name, t.dims);
        assert_eq!((t.dims[0], t.dims[2], t.dims[3]), (1, 1, 1), "{}", t.name);
    }
}

#[test]
fn the_embedder_s_residual_additions_are_rewritten_as_subtractions() {
    let path = model("mobilefacenet/fr_feature.onnx");
    let mut proto = tract_onnx::onnx().proto_model_for_path(&path).unwrap();
    let graph = proto.graph.as_mut().unwrap();
    // 4 + 6 + 2 bottlenecks with a residual connection.
    assert_eq!(graph.node.iter().filter(|n| n.op_type == "Add").count(), 12);
    assert_eq!(onnx::rewrite_residual_adds(graph), 12);
    assert!(graph.node.iter().all(|n| n.op_type != "Add"));
    assert_eq!(graph.node.iter().filter(|n| n.op_type == "Sub").count(), 12);
    // Once only: the negated convolutions now feed a Sub.
    assert_eq!(onnx::rewrite_residual_adds(graph), 0);
}

#[test]
fn a_convolution_that_is_also_a_graph_output_is_never_negated() {
    use tract_onnx::pb::{tensor_proto, GraphProto, NodeProto, TensorProto, ValueInfoProto};
    let tensor = |name: &str, values: &[f32]| TensorProto {
        name: name.into(),
        dims: vec![values.len() as i64],
        data_type: tensor_proto::DataType::Float as i32,
        float_data: values.to_vec(),
        ..TensorProto::default()
    };
    let node = |op: &str, input: &[&str], output: &str| NodeProto {
        op_type: op.into(),
        input: input.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        ..NodeProto::default()
    };
    let graph = |outputs: &[&str]| GraphProto {
        node: vec![
            node("Conv", &["x", "w", "b"], "c"),
            node("Add", &["x", "c"], "y"),
        ],
        initializer: vec![tensor("w", &[2.0]), tensor("b", &[1.0])],
        output: outputs
            .iter()
            .map(|o| ValueInfoProto {
                name: o.to_string(),
                ..ValueInfoProto::default()
            })
            .collect(),
        ..GraphProto::default()
    };
    let mut both = graph(&["y", "c"]);
    assert_eq!(onnx::rewrite_residual_adds(&mut both), 0);
    assert_eq!(both.initializer[0].float_data, [2.0]);
    let mut only_sum = graph(&["y"]);
    assert_eq!(onnx::rewrite_residual_adds(&mut only_sum), 1);
    assert_eq!(only_sum.node[1].op_type, "Sub");
    assert_eq!(only_sum.node[1].input, ["x", "c"]);
    assert_eq!(only_sum.initializer[0].float_data, [-2.0]);
    assert_eq!(only_sum.initializer[1].float_data, [-1.0]);
}
