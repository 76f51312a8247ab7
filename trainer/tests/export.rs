//! `export`: checkpoints into model folders. The exported graph, run by tract (an independent
//! runtime), must give the checkpoint's libtorch embeddings on 100 real aligned faces to 1e-4,
//! for the pretrained MobileFaceNet and mbf (w600k_mbf) and for an IResNet-50 whose batch norms
//! hold real statistics (so that folding them into the convolutions is exercised); all 100
//! faces go through the graph as one batch, which only a truly symbolic batch dimension allows.
//! `quantize` (both formats) must keep the embeddings of real faces close to the float ones.

mod common;

use common::{crops, max_abs_diff, run_tract, ALIGNED, TOLERANCE};
use smoothface_shared::manifest::{ModelManifest, VerifiedModel};
use smoothface_shared::preprocess::face_tensor;
use smoothface_trainer::backbone::{input_spec, Arch, Backbone, Options};
use smoothface_trainer::checkpoint;
use smoothface_trainer::export::quantize::{quantize, Format, QuantizeOptions};
use smoothface_trainer::export::{export, MODEL_FILE};
use std::path::Path;
use std::process::Command;
use tch::{nn, Device, Tensor};

/// Floor of the mean cosine between float and int8 (QDQ) mbf embeddings of 32 real faces after
/// calibrating on them (measured: 0.9865, lowest 0.9796; MobileFaceNet's is about 0.99).
const MBF_INT8_FLOOR: f64 = 0.98;

/// 100 real faces (10 people x 10), preprocessed for `arch`, flattened `[100, 3, 112, 112]`.
fn faces(dir: &Path, arch: Arch) -> Vec<f32> {
    let spec = input_spec(arch);
    let per = 3 * spec.size * spec.size;
    let crops = crops(dir, 10, 10);
    assert_eq!(crops.len(), 100);
    let mut input = vec![0f32; crops.len() * per];
    for (crop, out) in crops.iter().zip(input.chunks_exact_mut(per)) {
        face_tensor(crop, &spec, out);
    }
    input
}

/// The pretrained MobileFaceNet's graph, under `models/`.
const MOBILEFACENET: &str = "mobilefacenet/fr_feature.onnx";
/// w600k_mbf's graph, under `models/`.
const W600K_MBF: &str = "w600k_mbf/w600k_mbf.onnx";

/// The pretrained model `onnx` (under `models/`) imported as `arch` into a checkpoint in `dir`.
fn pretrained_checkpoint(dir: &Path, arch: Arch, onnx: &str) -> std::path::PathBuf {
    let ckpt = dir.join(format!("{arch}.safetensors"));
    let onnx = smoothface_tests::models().join(onnx);
    smoothface_trainer::import::import(&onnx, arch, &ckpt).unwrap();
    ckpt
}

fn embed(net: &dyn Backbone, input: &[f32]) -> Vec<f32> {
    let n = input.len() as i64 / (3 * 112 * 112);
    let x = Tensor::from_slice(input).reshape([n, 3, 112, 112]);
    let y = tch::no_grad(|| net.forward_t(&x, false));
    Vec::try_from(y.flatten(0, -1)).unwrap()
}

/// Exports `checkpoint` and checks the folder against the checkpoint on the faces.
fn check_parity(arch: Arch, checkpoint: &Path, net: &dyn Backbone, faces_dir: &Path) -> f32 {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("model");
    let exported = export(checkpoint, &dir, None).unwrap();
    assert_eq!(exported.arch, arch.name());
    let model: VerifiedModel = ModelManifest::load(&dir).unwrap();
    assert_eq!(model.manifest.input, Some(input_spec(arch)));
    assert_eq!(model.manifest.embedding_size, Some(512));
    assert_eq!(model.manifest.max_batch, None, "any batch");
    let origin = model.manifest.origin.as_ref().unwrap();
    assert_eq!(
        origin["checkpoint_sha256"].as_str().unwrap(),
        smoothface_shared::manifest::sha256_file(checkpoint).unwrap()
    );

    let input = faces(faces_dir, arch);
    let got = run_tract(&dir.join(MODEL_FILE), &[100, 3, 112, 112], &input);
    let expected = embed(net, &input);
    let diff = max_abs_diff(&got, &expected);
    let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(
        diff <= TOLERANCE,
        "{arch}: tract vs libtorch differ by {diff} (largest output {scale})"
    );
    diff
}

/// Exports the pretrained model `onnx` imported as `arch` and checks the folder on real faces.
fn check_pretrained(test: &str, arch: Arch, onnx: &str) {
    let Some(faces_dir) = smoothface_tests::faces(test, ALIGNED) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ckpt = pretrained_checkpoint(dir.path(), arch, onnx);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = arch.build(&vs.root(), Options::default());
    checkpoint::load_into(&vs, arch.name(), &checkpoint::read(&ckpt).unwrap(), &ckpt).unwrap();
    let diff = check_parity(arch, &ckpt, net.as_ref(), &faces_dir);
    eprintln!("{arch}: max abs difference {diff}");
}

#[test]
fn exported_mobilefacenet_gives_the_checkpoints_embeddings_on_real_faces() {
    check_pretrained(
        "exported_mobilefacenet_gives_the_checkpoints_embeddings_on_real_faces",
        Arch::MobileFaceNet,
        MOBILEFACENET,
    );
}

#[test]
fn exported_mbf_gives_the_checkpoints_embeddings_on_real_faces() {
    check_pretrained(
        "exported_mbf_gives_the_checkpoints_embeddings_on_real_faces",
        Arch::Mbf,
        W600K_MBF,
    );
}

#[test]
fn exported_iresnet50_folds_its_batch_norms_exactly() {
    let Some(faces_dir) =
        smoothface_tests::faces("exported_iresnet50_folds_its_batch_norms_exactly", ALIGNED)
    else {
        return;
    };
    tch::manual_seed(7);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = Arch::IResNet50.build(&vs.root(), Options::default());
    // Weights of a trained network's scale: convolutions at He initialisation (variance-
    // preserving, unlike arcface_torch's N(0, 0.1), which relies on batch statistics), and batch
    // norms with statistics, scales and shifts away from the identity, so that folding them
    // changes every convolution. (With statistics gathered by training-mode passes over faces
    // on arcface_torch's random weights, tract and libtorch differed by 3e-4 to 4e-4, varying
    // run to run: we think because such a residual stream carries large means over small
    // deviations, which amplifies float32 rounding in both runtimes.)
    tch::no_grad(|| {
        for (name, mut var) in vs.variables() {
            let uniform = |lo: f64, hi: f64| Tensor::rand_like(&var) * (hi - lo) + lo;
            let value = if var.dim() == 4 {
                let s = var.size();
                let fan_in = (s[1] * s[2] * s[3]) as f64;
                Tensor::randn_like(&var) * (2.0 / fan_in).sqrt()
            } else if ["bn", "features", "downsample.1"]
                .iter()
                .any(|b| name.contains(b))
            {
                match name.rsplit('.').next().unwrap() {
                    // A residual branch adds a fraction of the stream, as in a trained network;
                    // at full scale the stream's variance would double in each of 24 blocks.
                    "weight" if name.ends_with("bn3.weight") => uniform(0.1, 0.3),
                    "weight" => uniform(0.75, 1.25),
                    "bias" | "running_mean" => uniform(-0.1, 0.1),
                    "running_var" => uniform(0.5, 1.5),
                    _ => continue,
                }
            } else {
                continue;
            };
            var.copy_(&value);
        }
    });
    // The last batch norm's statistics set to those of its input on the faces, as training
    // leaves them, so that the embedding has a trained network's scale (about 1) and a
    // difference of 1e-4 means what it means for a real model.
    let input = faces(&faces_dir, Arch::IResNet50);
    let vars = vs.variables();
    let var = |n: &str| vars[&format!("iresnet50.features.{n}")].shallow_clone();
    tch::no_grad(|| {
        let x = Tensor::from_slice(&input).reshape([100, 3, 112, 112]);
        let out = net.forward_t(&x, false);
        let z = (out - var("bias")) * (var("running_var") + 1e-5).sqrt() / var("weight")
            + var("running_mean");
        var("running_mean").copy_(&z.mean_dim(0, false, tch::Kind::Float));
        var("running_var").copy_(&z.var_dim(0, false, false));
    });
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("iresnet50.safetensors");
    checkpoint::write(&checkpoint::variables(&vs, ""), &ckpt).unwrap();
    let diff = check_parity(Arch::IResNet50, &ckpt, net.as_ref(), &faces_dir);
    eprintln!("iresnet50: max abs difference {diff}");
}

#[test]
fn the_export_command_refuses_to_overwrite_and_names_bad_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_smoothface-train"))
            .arg("export")
            .args(args)
            .output()
            .unwrap()
    };
    let existing = dir.path().join("existing");
    std::fs::create_dir(&existing).unwrap();
    let bogus = dir.path().join("bogus.safetensors");
    std::fs::write(&bogus, b"not a checkpoint").unwrap();
    let out = run(&[
        bogus.to_str().unwrap(),
        "--out",
        dir.path().join("m").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus.safetensors"));
    assert!(!dir.path().join("m").exists(), "nothing left behind");
    // A real checkpoint cut short: the file and the cause are named.
    let cut = dir.path().join("cut.safetensors");
    checkpoint::write(
        &[("w".into(), Tensor::zeros([64], tch::kind::FLOAT_CPU))],
        &cut,
    )
    .unwrap();
    let bytes = std::fs::read(&cut).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap();
    let out = run(&[
        cut.to_str().unwrap(),
        "--out",
        dir.path().join("m").to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cut.safetensors") && stderr.contains("truncated"),
        "{stderr}"
    );
    let empty = dir.path().join("empty.safetensors");
    checkpoint::write(&[("other".into(), Tensor::from_slice(&[1f32]))], &empty).unwrap();
    let out = run(&[
        empty.to_str().unwrap(),
        "--out",
        dir.path().join("m").to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no backbone"));
    let out = run(&[empty.to_str().unwrap(), "--out", existing.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
}

#[test]
fn quantized_models_embed_real_faces_like_the_float_one() {
    let Some(faces_dir) = smoothface_tests::faces(
        "quantized_models_embed_real_faces_like_the_float_one",
        ALIGNED,
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ckpt = pretrained_checkpoint(dir.path(), Arch::MobileFaceNet, MOBILEFACENET);
    let float = dir.path().join("float");
    export(&ckpt, &float, None).unwrap();
    // The floors are below the measured values (mean cosine on 64 LFW faces after 256
    // calibration faces: QDQ 0.993, QLinear 0.984) by the spread a smaller, different sample of
    // faces gives.
    for (format, floor) in [(Format::Qdq, 0.985), (Format::QLinear, 0.97)] {
        let out = dir.path().join(format!("{format:?}"));
        let options = QuantizeOptions {
            format,
            first_float: false,
            last_float: false,
        };
        let report = quantize(&float, &faces_dir, None, &out, 32, &options).unwrap();
        assert_eq!((report.check_faces, report.int8_convolutions), (32, 50));
        assert!(report.int8_bytes * 3 < report.float_bytes, "{report:?}");
        assert!(report.mean_cosine > floor, "{format:?}: {report:?}");
        let model = ModelManifest::load(&out).unwrap();
        assert_eq!(model.manifest.input, Some(input_spec(Arch::MobileFaceNet)));
        assert_eq!(
            model.manifest.origin.as_ref().unwrap()["quantized_from"]["name"],
            ModelManifest::load(&float).unwrap().manifest.name
        );
    }
    // A quantized model is not quantized again.
    let again = quantize(
        &dir.path().join("Qdq"),
        &faces_dir,
        None,
        &dir.path().join("twice"),
        32,
        &QuantizeOptions {
            format: Format::Qdq,
            first_float: false,
            last_float: false,
        },
    );
    assert!(again.unwrap_err().to_string().contains("already quantized"));
}

#[test]
fn quantized_mbf_embeds_real_faces_like_the_float_one() {
    let Some(faces_dir) = smoothface_tests::faces(
        "quantized_mbf_embeds_real_faces_like_the_float_one",
        ALIGNED,
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ckpt = pretrained_checkpoint(dir.path(), Arch::Mbf, W600K_MBF);
    let float = dir.path().join("float");
    export(&ckpt, &float, None).unwrap();
    let out = dir.path().join("int8");
    let options = QuantizeOptions {
        format: Format::Qdq,
        first_float: false,
        last_float: false,
    };
    let report = quantize(&float, &faces_dir, None, &out, 32, &options).unwrap();
    eprintln!("mbf int8: {report:?}");
    // Every convolution is int8; the fully connected layer (6.4 of the 13.6 MB) stays float.
    assert_eq!((report.check_faces, report.int8_convolutions), (32, 49));
    assert_eq!(report.float_convolutions, 0);
    assert!(report.int8_bytes * 3 < report.float_bytes * 2, "{report:?}");
    assert!(report.mean_cosine > MBF_INT8_FLOOR, "{report:?}");
    let model = ModelManifest::load(&out).unwrap();
    assert_eq!(model.manifest.input, Some(input_spec(Arch::Mbf)));
}
