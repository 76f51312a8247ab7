//! IResNet-50 as insightface's arcface_torch builds it (`backbones/iresnet.py`, layers
//! `[3, 4, 14, 3]`), with the same variable names as its PyTorch state dict, so that a checkpoint
//! lines up with arcface_torch's weights name for name.

use super::layers::{BatchNorm, Conv, ConvSpec, Layer, Linear, PRelu};
use super::{Backbone, Options};
use crate::backbone::onnx::OnnxGraph;
use tch::nn::{self, Module, ModuleT};
use tch::Tensor;

/// Blocks per stage.
const LAYERS: [usize; 4] = [3, 4, 14, 3];
/// Output channels per stage.
const PLANES: [i64; 4] = [64, 128, 256, 512];
/// Embedding size.
const FEATURES: i64 = 512;
/// Side of the last feature map for a 112x112 input (four stride-2 stages).
const FINAL_SIDE: i64 = 7;
/// arcface_torch initialises every convolution from N(0, 0.1).
const CONV_INIT: nn::Init = nn::Init::Randn {
    mean: 0.0,
    stdev: 0.1,
};

/// Pre-activation residual block: BN, conv 3x3, BN, PReLU, conv 3x3 (carrying the stride), BN,
/// plus the input (through conv 1x1 + BN where the shape changes).
#[derive(Debug)]
struct IBasicBlock {
    bn1: BatchNorm,
    conv1: Conv,
    bn2: BatchNorm,
    prelu: PRelu,
    conv2: Conv,
    bn3: BatchNorm,
    downsample: Option<(Conv, BatchNorm)>,
}

impl IBasicBlock {
    fn new(p: nn::Path, inplanes: i64, planes: i64, stride: i64) -> IBasicBlock {
        let downsample = (stride != 1 || inplanes != planes).then(|| {
            let d = &p / "downsample";
            (
                Conv::new(
                    &d / 0,
                    ConvSpec::dense(inplanes, planes, 1, stride).without_bias(),
                    CONV_INIT,
                ),
                BatchNorm::new(&d / 1, planes, true),
            )
        });
        IBasicBlock {
            bn1: BatchNorm::new(&p / "bn1", inplanes, true),
            conv1: Conv::new(
                &p / "conv1",
                ConvSpec::dense(inplanes, planes, 3, 1).without_bias(),
                CONV_INIT,
            ),
            bn2: BatchNorm::new(&p / "bn2", planes, true),
            prelu: PRelu::new(&p / "prelu", planes),
            conv2: Conv::new(
                &p / "conv2",
                ConvSpec::dense(planes, planes, 3, stride).without_bias(),
                CONV_INIT,
            ),
            bn3: BatchNorm::new(&p / "bn3", planes, true),
            downsample,
        }
    }

    /// `bn_train`: whether the batch norms normalise with the batch's statistics.
    fn forward(&self, xs: &Tensor, bn_train: bool) -> Tensor {
        let out = self.bn1.forward_t(xs, bn_train);
        let out = self.bn2.forward_t(&self.conv1.forward(&out), bn_train);
        let out = self.conv2.forward(&self.prelu.forward(&out));
        let out = self.bn3.forward_t(&out, bn_train);
        let identity = match &self.downsample {
            Some((conv, bn)) => bn.forward_t(&conv.forward(xs), bn_train),
            None => xs.shallow_clone(),
        };
        out + identity
    }

    fn to_onnx(&self, g: &mut OnnxGraph, x: String) -> String {
        let y = g.batch_norm(x.clone(), &self.bn1);
        let y = g.conv(y, &self.conv1, Some(&self.bn2));
        let y = g.prelu(y, &self.prelu);
        let y = g.conv(y, &self.conv2, Some(&self.bn3));
        let identity = match &self.downsample {
            Some((conv, bn)) => g.conv(x, conv, Some(bn)),
            None => x,
        };
        g.add(y, identity)
    }

    /// In the order arcface_torch's forward pass (and so its ONNX export) runs them.
    fn layers(&self) -> Vec<Layer<'_>> {
        let mut layers = vec![
            Layer::BatchNorm(&self.bn1),
            Layer::Conv(&self.conv1),
            Layer::BatchNorm(&self.bn2),
            Layer::PRelu(&self.prelu),
            Layer::Conv(&self.conv2),
            Layer::BatchNorm(&self.bn3),
        ];
        if let Some((conv, bn)) = &self.downsample {
            layers.extend([Layer::Conv(conv), Layer::BatchNorm(bn)]);
        }
        layers
    }
}

/// IResNet-50: `[N, 3, 112, 112]` faces (RGB, `(pixel - 127.5) / 127.5` for arcface_torch's
/// models) to `[N, 512]` raw embeddings.
#[derive(Debug)]
pub struct IResNet50 {
    conv1: Conv,
    bn1: BatchNorm,
    prelu: PRelu,
    blocks: Vec<IBasicBlock>,
    bn2: BatchNorm,
    fc: Linear,
    features: BatchNorm,
    options: Options,
}

impl IResNet50 {
    /// A freshly initialised network with its variables under `p`, initialised as arcface_torch
    /// does (convolutions from N(0, 0.1), batch norms at scale 1 and shift 0).
    pub fn new(p: &nn::Path, options: Options) -> IResNet50 {
        let mut blocks = Vec::new();
        let mut inplanes = 64;
        for (stage, (&count, &planes)) in LAYERS.iter().zip(&PLANES).enumerate() {
            let q = p / format!("layer{}", stage + 1);
            for i in 0..count {
                let stride = if i == 0 { 2 } else { 1 };
                blocks.push(IBasicBlock::new(&q / i, inplanes, planes, stride));
                inplanes = planes;
            }
        }
        let last = PLANES[3];
        IResNet50 {
            conv1: Conv::new(
                p / "conv1",
                ConvSpec::dense(3, 64, 3, 1).without_bias(),
                CONV_INIT,
            ),
            bn1: BatchNorm::new(p / "bn1", 64, true),
            prelu: PRelu::new(p / "prelu", 64),
            blocks,
            bn2: BatchNorm::new(p / "bn2", last, true),
            fc: Linear::new(p / "fc", last * FINAL_SIDE * FINAL_SIDE, FEATURES),
            // arcface_torch fixes this scale at 1 (`features.weight.requires_grad = False`).
            features: BatchNorm::new(p / "features", FEATURES, false),
            options,
        }
    }
}

impl nn::ModuleT for IResNet50 {
    /// `train` enables dropout, and batch statistics in the batch norms unless the options
    /// freeze them.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let bn_train = train && !self.options.frozen_batch_norm;
        let mut x = self.bn1.forward_t(&self.conv1.forward(xs), bn_train);
        x = self.prelu.forward(&x);
        for block in &self.blocks {
            x = block.forward(&x, bn_train);
        }
        let x = self
            .bn2
            .forward_t(&x, bn_train)
            .flatten(1, -1)
            .dropout(self.options.dropout, train);
        self.features.forward_t(&self.fc.forward(&x), bn_train)
    }
}

impl Backbone for IResNet50 {
    fn layers(&self) -> Vec<Layer<'_>> {
        let mut layers = vec![
            Layer::Conv(&self.conv1),
            Layer::BatchNorm(&self.bn1),
            Layer::PRelu(&self.prelu),
        ];
        layers.extend(self.blocks.iter().flat_map(IBasicBlock::layers));
        layers.extend([
            Layer::BatchNorm(&self.bn2),
            Layer::Linear(&self.fc),
            Layer::BatchNorm(&self.features),
        ]);
        layers
    }

    /// Dropout is the identity in evaluation mode and is not written.
    fn to_onnx(&self, g: &mut OnnxGraph, x: String) -> String {
        let x = g.conv(x, &self.conv1, Some(&self.bn1));
        let mut x = g.prelu(x, &self.prelu);
        for block in &self.blocks {
            x = block.to_onnx(g, x);
        }
        let x = g.batch_norm(x, &self.bn2);
        let x = g.flatten(x);
        g.linear(x, &self.fc, Some(&self.features))
    }
}
