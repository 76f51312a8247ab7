//! The backbones' training-time behaviour: batch norm in training and frozen modes, which
//! parameters the optimiser sees, and the shapes of what is inside and what comes out.

use smoothface_trainer::backbone::{Arch, Options};
use tch::nn;
use tch::{Device, Kind, Tensor};

/// A batch of random face tensors, the same on every run.
fn faces(n: i64) -> Tensor {
    tch::manual_seed(11);
    Tensor::rand([n, 3, 112, 112], (Kind::Float, Device::Cpu)) * 2.0 - 1.0
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn iresnet50_batch_norm_learns_batch_statistics_unless_frozen() {
    let x = faces(4);
    for frozen in [false, true] {
        let vs = nn::VarStore::new(Device::Cpu);
        let options = Options {
            frozen_batch_norm: frozen,
            ..Options::default()
        };
        let net = Arch::IResNet50.build(&vs.root(), options);
        let mean = vs.variables()["iresnet50.layer1.0.bn1.running_mean"].copy();
        let eval = tch::no_grad(|| net.forward_t(&x, false));
        let train = tch::no_grad(|| net.forward_t(&x, true));
        let moved = max_abs_diff(
            &vs.variables()["iresnet50.layer1.0.bn1.running_mean"],
            &mean,
        );
        let differs = max_abs_diff(&train, &eval);
        if frozen {
            assert_eq!(moved, 0.0, "frozen batch norm updated its running mean");
            assert_eq!(differs, 0.0, "frozen batch norm used batch statistics");
        } else {
            assert!(moved > 0.0, "training did not update the running mean");
            assert!(
                differs > 1e-3,
                "training mode computed what evaluation does"
            );
        }
    }
}

#[test]
fn iresnet50_keeps_the_feature_scale_and_statistics_out_of_the_optimiser() {
    let vs = nn::VarStore::new(Device::Cpu);
    let _net = Arch::IResNet50.build(&vs.root(), Options::default());
    let variables = vs.variables();
    let trained = |name: &str| variables[&format!("iresnet50.{name}")].requires_grad();
    assert!(!trained("features.weight"), "arcface_torch fixes it at 1");
    assert!(trained("features.bias"));
    assert!(trained("bn2.weight"));
    assert!(!trained("bn2.running_mean") && !trained("bn2.running_var"));
    assert!(trained("layer4.2.conv2.weight") && trained("layer4.2.prelu.weight"));
    let buffers = variables.keys().filter(|k| k.contains(".running_")).count();
    assert_eq!(
        vs.trainable_variables().len(),
        variables.len() - buffers - 1
    );
}

#[test]
fn mobilefacenets_embed_a_batch_the_same_in_training_and_evaluation() {
    for arch in [Arch::MobileFaceNet, Arch::Mbf] {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = arch.build(&vs.root(), Options::default());
        let x = faces(3);
        let eval = tch::no_grad(|| net.forward_t(&x, false));
        assert_eq!(eval.size(), [3, 512]);
        let train = tch::no_grad(|| net.forward_t(&x, true));
        assert_eq!(max_abs_diff(&train, &eval), 0.0, "{arch}");
        // Each face is embedded on its own: the second face alone gives its row of the batch.
        let alone = tch::no_grad(|| net.forward_t(&x.narrow(0, 1, 1), false));
        let row = eval.narrow(0, 1, 1);
        let scale = row.abs().max().double_value(&[]);
        assert!(
            max_abs_diff(&alone, &row) <= 1e-5 * scale,
            "{arch}: scale {scale}"
        );
        let prefix = format!("{arch}.");
        assert!(vs.variables().keys().all(|k| k.starts_with(&prefix)));
        // No batch norm, nothing frozen: every variable trains.
        assert_eq!(
            vs.trainable_variables().len(),
            vs.variables().len(),
            "{arch}"
        );
    }
}

/// mbf has arcface_torch's widths: a 128-channel stem whose second convolution takes channels in
/// pairs (64 groups), and the flattened head's 3,136 inputs to the fully connected layer.
#[test]
fn mbf_has_the_widths_of_w600k_mbf() {
    let vs = nn::VarStore::new(Device::Cpu);
    let _net = Arch::Mbf.build(&vs.root(), Options::default());
    let variables = vs.variables();
    let shape = |name: &str| variables[&format!("mbf.{name}")].size();
    assert_eq!(shape("conv1.conv.weight"), [128, 3, 3, 3]);
    assert_eq!(shape("conv2_dw.conv.weight"), [128, 2, 3, 3]);
    assert_eq!(shape("conv_23.expand.conv.weight"), [128, 128, 1, 1]);
    assert_eq!(shape("conv_45.expand.conv.weight"), [512, 256, 1, 1]);
    assert_eq!(shape("conv_5.1.project.weight"), [256, 256, 1, 1]);
    assert_eq!(shape("conv_6_sep.conv.weight"), [512, 256, 1, 1]);
    assert_eq!(shape("reduce.conv.weight"), [64, 512, 1, 1]);
    assert_eq!(shape("fc.weight"), [512, 3136]);
    assert_eq!(shape("fc.bias"), [512]);
}
