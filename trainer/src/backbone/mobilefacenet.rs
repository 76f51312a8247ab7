//! MobileFaceNet exactly as the pretrained embedder `models/mobilefacenet/fr_feature.onnx` is
//! built: its batch norms are folded into the convolutions, so every convolution has a bias and
//! there is no batch norm, and the output is the raw 512-d embedding (no L2 normalisation: the
//! loss and the device do that).

use super::layers::{Conv, ConvSpec, Layer, PRelu};
use super::Backbone;
use crate::onnx_graph::OnnxGraph;
use tch::nn::{self, Module};
use tch::Tensor;

/// Initial filters: torch's default for convolutions (the model is meant to be imported, then
/// fine-tuned; there is no batch norm to rescue a poor start).
const INIT: nn::Init = nn::init::DEFAULT_KAIMING_UNIFORM;

/// A convolution followed by a per-channel PReLU.
#[derive(Debug)]
struct ConvPRelu {
    conv: Conv,
    prelu: PRelu,
}

impl ConvPRelu {
    fn new(p: nn::Path, spec: ConvSpec) -> ConvPRelu {
        ConvPRelu {
            conv: Conv::new(&p / "conv", spec, INIT),
            prelu: PRelu::new(&p / "prelu", spec.out_channels),
        }
    }

    fn forward(&self, xs: &Tensor) -> Tensor {
        self.prelu.forward(&self.conv.forward(xs))
    }

    fn layers(&self) -> [Layer<'_>; 2] {
        [Layer::Conv(&self.conv), Layer::PRelu(&self.prelu)]
    }

    fn to_onnx(&self, g: &mut OnnxGraph, x: String) -> String {
        let x = g.conv(x, &self.conv, None);
        g.prelu(x, &self.prelu)
    }
}

/// Inverted residual bottleneck: 1x1 expansion + PReLU, 3x3 depthwise + PReLU, linear 1x1
/// projection; the input is added back when the shape allows it.
#[derive(Debug)]
struct Bottleneck {
    expand: ConvPRelu,
    depthwise: ConvPRelu,
    project: Conv,
    residual: bool,
}

/// The bottleneck stages between the stem and the head, in the ONNX graph's order: name, number
/// of blocks, channels in, expanded and out, and the first block's stride. Blocks after the first
/// take the stage's output channels in and keep the size; a block adds its input back when it
/// keeps both shape and size.
const STAGES: [(&str, usize, i64, i64, i64, i64); 6] = [
    ("conv_23", 1, 64, 128, 64, 2),
    ("conv_3", 4, 64, 128, 64, 1),
    ("conv_34", 1, 64, 256, 128, 2),
    ("conv_4", 6, 128, 256, 128, 1),
    ("conv_45", 1, 128, 512, 128, 2),
    ("conv_5", 2, 128, 256, 128, 1),
];

impl Bottleneck {
    fn new(p: nn::Path, input: i64, expanded: i64, output: i64, stride: i64) -> Bottleneck {
        Bottleneck {
            expand: ConvPRelu::new(&p / "expand", ConvSpec::dense(input, expanded, 1, 1)),
            depthwise: ConvPRelu::new(&p / "dw", ConvSpec::depthwise(expanded, 3, stride)),
            project: Conv::new(
                &p / "project",
                ConvSpec::dense(expanded, output, 1, 1),
                INIT,
            ),
            residual: input == output && stride == 1,
        }
    }

    fn forward(&self, xs: &Tensor) -> Tensor {
        let ys = self
            .project
            .forward(&self.depthwise.forward(&self.expand.forward(xs)));
        if self.residual {
            ys + xs
        } else {
            ys
        }
    }

    fn to_onnx(&self, g: &mut OnnxGraph, x: String) -> String {
        let y = self.expand.to_onnx(g, x.clone());
        let y = self.depthwise.to_onnx(g, y);
        let y = g.conv(y, &self.project, None);
        if self.residual {
            g.add(y, x)
        } else {
            y
        }
    }

    fn layers(&self) -> impl Iterator<Item = Layer<'_>> {
        self.expand
            .layers()
            .into_iter()
            .chain(self.depthwise.layers())
            .chain([Layer::Conv(&self.project)])
    }
}

/// MobileFaceNet: `[N, 3, 112, 112]` faces (RGB, `(pixel - 127) / 128`, as the model's manifest
/// says) to `[N, 512]` raw embeddings.
#[derive(Debug)]
pub struct MobileFaceNet {
    conv1: ConvPRelu,
    conv2_dw: ConvPRelu,
    blocks: Vec<Bottleneck>,
    conv_6_sep: ConvPRelu,
    conv_6_dw: Conv,
    embedding: Conv,
}

impl MobileFaceNet {
    /// A freshly initialised network with its variables under `p`.
    pub fn new(p: &nn::Path) -> MobileFaceNet {
        let mut blocks = Vec::new();
        for &(name, count, input, expanded, output, stride) in &STAGES {
            for i in 0..count {
                // Single-block stages are named like the layer they are, not like a list.
                let q = if count == 1 { p / name } else { p / name / i };
                let (input, stride) = if i == 0 { (input, stride) } else { (output, 1) };
                blocks.push(Bottleneck::new(q, input, expanded, output, stride));
            }
        }
        MobileFaceNet {
            conv1: ConvPRelu::new(p / "conv1", ConvSpec::dense(3, 64, 3, 2)),
            conv2_dw: ConvPRelu::new(p / "conv2_dw", ConvSpec::depthwise(64, 3, 1)),
            blocks,
            conv_6_sep: ConvPRelu::new(p / "conv_6_sep", ConvSpec::dense(128, 512, 1, 1)),
            // A linear 7x7 depthwise convolution over the whole 7x7 map: global depthwise
            // pooling with learnt weights.
            conv_6_dw: Conv::new(
                p / "conv_6_dw",
                ConvSpec::depthwise(512, 7, 1).unpadded(),
                INIT,
            ),
            embedding: Conv::new(p / "embedding", ConvSpec::dense(512, 512, 1, 1), INIT),
        }
    }
}

impl nn::ModuleT for MobileFaceNet {
    /// The network has neither batch norm nor dropout: training and evaluation compute the same.
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
        let mut x = self.conv2_dw.forward(&self.conv1.forward(xs));
        for block in &self.blocks {
            x = block.forward(&x);
        }
        let x = self.conv_6_dw.forward(&self.conv_6_sep.forward(&x));
        self.embedding.forward(&x).flatten(1, -1)
    }
}

impl Backbone for MobileFaceNet {
    fn layers(&self) -> Vec<Layer<'_>> {
        let mut layers: Vec<Layer<'_>> = self.conv1.layers().into();
        layers.extend(self.conv2_dw.layers());
        layers.extend(self.blocks.iter().flat_map(Bottleneck::layers));
        layers.extend(self.conv_6_sep.layers());
        layers.push(Layer::Conv(&self.conv_6_dw));
        layers.push(Layer::Conv(&self.embedding));
        layers
    }

    fn to_onnx(&self, g: &mut OnnxGraph, x: String) -> String {
        let x = self.conv1.to_onnx(g, x);
        let mut x = self.conv2_dw.to_onnx(g, x);
        for block in &self.blocks {
            x = block.to_onnx(g, x);
        }
        let x = self.conv_6_sep.to_onnx(g, x);
        let x = g.conv(x, &self.conv_6_dw, None);
        let x = g.conv(x, &self.embedding, None);
        g.flatten(x)
    }
}
