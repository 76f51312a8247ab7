//! The device's rewrites change how tract runs the pretrained models, never what they compute.

use smoothface_device::{kernels, onnx};
use std::path::{Path, PathBuf};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::cnn::Conv;

fn model(path: &str) -> PathBuf {
    smoothface_tests::models().join(path)
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

/// How many nodes of `model` run the op `name`.
fn count_ops(model: &TypedModel, name: &str) -> usize {
    model
        .nodes()
        .iter()
        .filter(|n| n.op().name() == name)
        .count()
}

#[test]
fn rewritten_embedder_and_detector_compute_what_the_originals_do() {
    assert!(max_abs_diff(&model("mobilefacenet/fr_feature.onnx"), &[1, 3, 112, 112]) < 1e-5);
    // A batch of three: the depthwise kernels take the images one after another. (This model's
    // final Reshape folds the batch into one row, in both plans alike; our exports keep it.)
    assert!(max_abs_diff(&model("mobilefacenet/fr_feature.onnx"), &[3, 3, 112, 112]) < 1e-5);
    assert!(max_abs_diff(&model("mtcnn/pnet.onnx"), &[1, 40, 30, 3]) < 1e-5);
    assert!(max_abs_diff(&model("mtcnn/rnet.onnx"), &[3, 24, 24, 3]) < 1e-5);
    assert!(max_abs_diff(&model("mtcnn/onet.onnx"), &[2, 48, 48, 3]) < 1e-5);
}

#[test]
fn a_graph_that_declares_a_batch_of_one_runs_any_batch() {
    // insightface's w600k_mbf declares its output (and inner values) with a batch of 1.
    let path = model("w600k_mbf/w600k_mbf.onnx");
    assert!(max_abs_diff(&path, &[1, 3, 112, 112]) < 1e-4);
    let graph = onnx::load_graph(&path).unwrap();
    let batch = input(&[3, 3, 112, 112]);
    let three = onnx::plan(&graph, &[3, 3, 112, 112])
        .unwrap()
        .run(tvec!(batch.clone().into()))
        .unwrap();
    let three = three[0].to_plain_array_view::<f32>().unwrap().to_owned();
    assert_eq!(three.shape(), [3, 512]);
    let one = onnx::plan(&graph, &[1, 3, 112, 112]).unwrap();
    let images = batch.to_plain_array_view::<f32>().unwrap().to_owned();
    for i in 0..3 {
        let image = images
            .slice(tract_ndarray::s![i..i + 1, .., .., ..])
            .to_owned();
        let alone = one.run(tvec!(Tensor::from(image).into())).unwrap();
        let alone = alone[0].to_plain_array_view::<f32>().unwrap().to_owned();
        let diff = alone
            .iter()
            .zip(three.slice(tract_ndarray::s![i, ..]))
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(diff < 1e-4, "image {i}: {diff}");
    }
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
fn every_convolution_of_the_embedder_runs_channels_last_in_the_device_s_kernels() {
    if !kernels::available() {
        eprintln!("skipped: no AVX2/FMA here, so tract plans the layout for its own kernels");
        return;
    }
    let path = model("mobilefacenet/fr_feature.onnx");
    let typed = onnx::typed_model(&onnx::load_graph(&path).unwrap(), &[1, 3, 112, 112]).unwrap();
    let count = |name: &str| count_ops(&typed, name);
    let convs: Vec<&Conv> = typed
        .nodes()
        .iter()
        .filter_map(|n| n.op_as::<Conv>())
        .collect();
    // Of the 18 convolutions tract keeps as convolutions (the 1x1 ones, and the final linear
    // layer, are matrix products after declutter), the kernels take the 17 depthwise and the
    // first (3x3, stride 2, padded, 3 -> 64) the dense kernel: none is left to tract.
    assert_eq!(count("SmoothfaceDepthwise"), 17);
    assert_eq!(count("SmoothfacePointwise"), 32);
    assert_eq!(count("SmoothfaceConv"), 1);
    assert!(
        convs.is_empty(),
        "{} convolutions left to tract",
        convs.len()
    );
    // All 33 PRelus went into the depthwise kernels: the one after each expansion (and after the
    // first convolution) on its input, the one after each depthwise on its output.
    assert_eq!(count("Min"), 0, "a PRelu is left outside the kernels");
    assert_eq!(count("EinSum"), 0, "a 1x1 convolution is left to tract");
    // The model's input keeps its layout: the move stops at a transposition after it.
    assert_eq!(
        typed.input_fact(0).unwrap().shape.to_tvec(),
        tvec!(1.into(), 3.into(), 112.into(), 112.into())
    );
    assert_eq!(count("MoveAxis"), 1);
}

/// MTCNN's networks run channels-last from their input on: every convolution with its PRelu in
/// the device's dense kernel (P-Net's two 1x1 heads in the 1x1 one), every max-pool
/// channels-last in tract, the softmax in the device's, and no transposition left but the pair
/// after the input.
#[test]
fn every_convolution_of_the_detector_runs_channels_last_in_the_device_s_kernels() {
    if !kernels::available() {
        eprintln!("skipped: no AVX2/FMA here, so tract plans the layout for its own kernels");
        return;
    }
    use tract_onnx::tract_core::ops::cnn::MaxPool;
    // (network, input, dense convolutions, 1x1 ones, max-pools)
    for (net, shape, dense, pointwise, pools) in [
        ("pnet", [1, 40, 30, 3], 3, 2, 1),
        ("rnet", [3, 24, 24, 3], 3, 0, 2),
        ("onet", [2, 48, 48, 3], 4, 0, 3),
    ] {
        let path = model(&format!("mtcnn/{net}.onnx"));
        let typed = onnx::typed_model(&onnx::load_graph(&path).unwrap(), &shape).unwrap();
        let count = |name: &str| count_ops(&typed, name);
        assert_eq!(count("SmoothfaceConv"), dense, "{net}");
        assert_eq!(count("SmoothfacePointwise"), pointwise, "{net}");
        assert_eq!(count("SmoothfaceSoftmax"), 1, "{net}");
        assert!(
            typed.nodes().iter().all(|n| n.op_as::<Conv>().is_none()),
            "{net}"
        );
        let max_pools: Vec<&MaxPool> = typed
            .nodes()
            .iter()
            .filter_map(|n| n.op_as::<MaxPool>())
            .collect();
        assert_eq!(max_pools.len(), pools, "{net}");
        assert!(
            max_pools
                .iter()
                .all(|p| p.pool_spec.data_format.c_is_last()),
            "{net}"
        );
        // The convolutions' PRelus are inside the kernel; the dense layer's stays in tract.
        let dense_prelus = usize::from(net != "pnet");
        assert_eq!(
            count("Min"),
            dense_prelus,
            "{net}: a convolution's PRelu is left outside"
        );
        assert!(
            count("MoveAxis") <= 2,
            "{net}: {} transpositions",
            count("MoveAxis")
        );
    }
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

/// On real photos (the first 60 of `lfw-devtrain`, and the same photos at 500x400, where the
/// pyramid is deeper and more candidates reach R- and O-Net), the detector as the device runs it
/// finds the faces the unmodified networks find: the same number, boxes and landmarks within a
/// hundredth of a pixel, scores within 1e-5.
#[test]
fn the_rewritten_detector_finds_what_the_unmodified_networks_find() {
    use smoothface_device::mtcnn::{Mtcnn, MtcnnConfig};
    use smoothface_shared::manifest::ModelManifest;
    let test = "the_rewritten_detector_finds_what_the_unmodified_networks_find";
    let Some(lfw) = smoothface_tests::faces(test, "lfw-devtrain") else {
        return;
    };
    let manifest = ModelManifest::load(&model("mtcnn")).unwrap();
    let ours = Mtcnn::load(&manifest, MtcnnConfig::default()).unwrap();
    let unmodified = Mtcnn::load_as_written(&manifest, MtcnnConfig::default()).unwrap();
    let photos: Vec<PathBuf> = walkdir::WalkDir::new(&lfw)
        .sort_by_file_name()
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    let (mut faces, mut worst_px, mut worst_score) = (0, 0f32, 0f32);
    for path in photos.iter().take(60) {
        let img = image::open(path).unwrap().to_rgb8();
        let large = image::imageops::resize(&img, 500, 400, image::imageops::FilterType::Triangle);
        for img in [img, large] {
            let (a, b) = (ours.detect(&img).unwrap(), unmodified.detect(&img).unwrap());
            assert_eq!(a.len(), b.len(), "{}: {a:?} vs {b:?}", path.display());
            for (a, b) in a.iter().zip(&b) {
                let points = a.bbox.iter().zip(&b.bbox).chain(
                    a.landmarks
                        .iter()
                        .flatten()
                        .zip(b.landmarks.iter().flatten()),
                );
                worst_px = points.fold(worst_px, |w, (x, y)| w.max((x - y).abs()));
                worst_score = worst_score.max((a.score - b.score).abs());
            }
            faces += a.len();
        }
    }
    assert!(faces >= 100, "only {faces} faces in 120 photos");
    assert!(worst_px < 0.01, "a box or landmark moved by {worst_px} px");
    assert!(worst_score < 1e-5, "a score moved by {worst_score}");
}

/// insightface's w600k_mbf flattens its last feature map (64x7x7) into a fully connected layer:
/// its convolutions go channels-last too (the move stops at the flatten, which tract then folds
/// into the fully connected layer's weights), so every 1x1 convolution runs in the device's
/// kernel. Without the pair of moves before the flatten no move got past it, and all but one of
/// them ran as tract's matrix products (`smoothface bench --profile`). Its first convolution
/// (3x3, stride 2, padded) runs in the dense kernel, and its second, grouped by two channels, in
/// the depthwise one: no convolution is left to tract's im2col.
#[test]
fn every_convolution_of_w600k_mbf_runs_in_the_device_s_kernels() {
    if !kernels::available() {
        eprintln!("skipped: no AVX2/FMA here, so tract plans the layout for its own kernels");
        return;
    }
    let path = model("w600k_mbf/w600k_mbf.onnx");
    let proto = tract_onnx::onnx().proto_model_for_path(&path).unwrap();
    let convs: Vec<_> = proto
        .graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .filter(|n| n.op_type == "Conv")
        .collect();
    let kernel = |n: &&tract_onnx::pb::NodeProto| -> Vec<i64> {
        n.attribute
            .iter()
            .find(|a| a.name == "kernel_shape")
            .map_or(vec![], |a| a.ints.clone())
    };
    let one_by_one = convs.iter().filter(|n| kernel(n) == [1, 1]).count();
    assert!(
        one_by_one > 30,
        "w600k_mbf has {one_by_one} 1x1 convolutions"
    );
    let grouped =
        |n: &&&tract_onnx::pb::NodeProto| n.attribute.iter().any(|a| a.name == "group" && a.i > 1);
    let (depthwise, dense) = (
        convs.iter().filter(|n| grouped(n)).count(),
        convs
            .iter()
            .filter(|n| !grouped(n) && kernel(n) != [1, 1])
            .count(),
    );
    assert_eq!(
        (depthwise, dense),
        (16, 1),
        "w600k_mbf's other convolutions"
    );
    let typed = onnx::typed_model(&onnx::load_graph(&path).unwrap(), &[1, 3, 112, 112]).unwrap();
    let count = |name: &str| count_ops(&typed, name);
    assert_eq!(count("SmoothfacePointwise"), one_by_one);
    assert_eq!(count("SmoothfaceDepthwise"), depthwise);
    assert_eq!(count("SmoothfaceConv"), dense);
    assert!(typed.nodes().iter().all(|n| n.op_as::<Conv>().is_none()));
    // The PRelus after the first two convolutions went into the kernels; the two left are after
    // 1x1 convolutions at 7x7 (the last feature maps), fused by tract into one pass each.
    assert_eq!(count("Min"), 2, "a PRelu is left outside the kernels");
    // The one matrix product left to tract is the fully connected layer, the flatten in it.
    assert_eq!(count("EinSum"), 1);
    // The model's input keeps its layout: one transposition after it, none before the flatten.
    assert_eq!(count("MoveAxis"), 1);
}
