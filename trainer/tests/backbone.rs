//! The backbones' training-time behaviour: batch norm in training and frozen modes, which
//! parameters the optimiser sees, and the shape of what comes out.

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
fn mobilefacenet_embeds_a_batch_the_same_in_training_and_evaluation() {
    let vs = nn::VarStore::new(Device::Cpu);
    let net = Arch::MobileFaceNet.build(&vs.root(), Options::default());
    let x = faces(3);
    let eval = tch::no_grad(|| net.forward_t(&x, false));
    assert_eq!(eval.size(), [3, 512]);
    let train = tch::no_grad(|| net.forward_t(&x, true));
    assert_eq!(max_abs_diff(&train, &eval), 0.0);
    // Each face is embedded on its own: the second face alone gives its row of the batch.
    let alone = tch::no_grad(|| net.forward_t(&x.narrow(0, 1, 1), false));
    let row = eval.narrow(0, 1, 1);
    let scale = row.abs().max().double_value(&[]);
    assert!(max_abs_diff(&alone, &row) <= 1e-5 * scale, "scale {scale}");
    assert!(vs
        .variables()
        .keys()
        .all(|k| k.starts_with("mobilefacenet.")));
}
