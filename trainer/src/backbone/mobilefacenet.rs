//! MobileFaceNet exactly as the pretrained embedders that use it are built: their batch norms
//! are folded into the convolutions (and, for w600k_mbf, into the fully connected layer), so
//! every convolution has a bias and there is no batch norm, and the output is the raw 512-d
//! embedding (no L2 normalisation: the loss and the device do that).
//!
//! One network in several shapes, described by a [`Variant`] as insightface arcface_torch's one
//! `mobilefacenet.py` describes its MobileFaceNets by `scale` and `blocks`:
//!
//! - [`Variant::MOBILEFACENET`]: `models/mobilefacenet/fr_feature.onnx`, the MobileFaceNet of
//!   the paper: a 64-channel stem and the global depthwise convolution head.
//! - [`Variant::MBF`]: insightface's `models/w600k_mbf/w600k_mbf.onnx`, arcface_torch's `mbf`
//!   body (`get_mbf`: scale 2, a 128-channel stem, blocks 1-4-6-2). Its head is not
//!   arcface_torch's global depthwise convolution, whatever `get_mbf` builds today: the graph
//!   reduces the 512 channels to 64 with a 1x1 convolution + PReLU, flattens the 64x7x7 map and
//!   ends in a fully connected layer (`fc`, with a bias) and a batch norm (`features`, its scale
//!   fixed at 1), as arcface_torch's IResNets end.

use super::layers::{Conv, ConvSpec, Layer, Linear, PRelu};
use super::Backbone;
use crate::backbone::onnx::OnnxGraph;
use tch::nn::{self, Module};
use tch::Tensor;

/// Initial filters: torch's default for convolutions (the model is meant to be imported, then
/// fine-tuned; there is no batch norm to rescue a poor start).
const INIT: nn::Init = nn::init::DEFAULT_KAIMING_UNIFORM;

/// Channels of the last feature map, which the head turns into the embedding.
const SEPARABLE: i64 = 512;
/// Side of the last feature map for a 112x112 input (four stride-2 steps).
const FINAL_SIDE: i64 = 7;
/// Channels the [`Head::Flatten`] head reduces the last map to before flattening it.
const FLATTENED_CHANNELS: i64 = 64;
/// Channel groups of the stem's second convolution at every width: arcface_torch fixes 64, so
/// that it is depthwise at width 1 and takes channels in pairs at width 2.
const STEM_GROUPS: i64 = 64;

/// The shape of a MobileFaceNet: what tells the pretrained models apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variant {
    /// Multiplies the channels of the stem and of the stages' outputs (64 and 128 at width 1):
    /// arcface_torch's `scale`. The bottlenecks' expanded widths (128, 256 and 512) stay as
    /// they are, as in arcface_torch.
    pub width: i64,
    /// Bottlenecks in each of the three residual stages (arcface_torch's `blocks[1..]`; its
    /// `blocks[0]` is 1 in both pretrained models: the stem's second convolution).
    pub blocks: [usize; 3],
    /// How the last feature map becomes the embedding.
    pub head: Head,
}

impl Variant {
    /// `models/mobilefacenet`: the MobileFaceNet of the paper.
    pub const MOBILEFACENET: Variant = Variant {
        width: 1,
        blocks: [4, 6, 2],
        head: Head::GlobalDepthwise,
    };
    /// `models/w600k_mbf`: insightface's wider MobileFaceNet, trained on WebFace600K.
    pub const MBF: Variant = Variant {
        width: 2,
        blocks: [4, 6, 2],
        head: Head::Flatten,
    };
}

/// How the last 512-channel 7x7 feature map becomes the 512-d embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// A linear 7x7 depthwise convolution over the whole map (global pooling with learnt
    /// weights), then a 1x1 convolution (the linear layer and its batch norm, folded).
    GlobalDepthwise,
    /// A 1x1 convolution + PReLU down to 64 channels, flattened (64 x 7 x 7 = 3,136 values),
    /// then a fully connected layer (with its batch norm folded in at import).
    Flatten,
}

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

/// A stage of bottlenecks: its name in the var store, number of blocks, channels in, expanded
/// and out, and the first block's stride.
type Stage = (&'static str, usize, i64, i64, i64, i64);

/// The bottleneck stages between the stem and the head, in the ONNX graph's order. Blocks after
/// the first take the stage's output channels in and keep the size; a block adds its input back
/// when it keeps both shape and size.
fn stages(v: Variant) -> [Stage; 6] {
    let (narrow, wide) = (64 * v.width, 128 * v.width);
    [
        ("conv_23", 1, narrow, 128, narrow, 2),
        ("conv_3", v.blocks[0], narrow, 128, narrow, 1),
        ("conv_34", 1, narrow, 256, wide, 2),
        ("conv_4", v.blocks[1], wide, 256, wide, 1),
        ("conv_45", 1, wide, 512, wide, 2),
        ("conv_5", v.blocks[2], wide, 256, wide, 1),
    ]
}

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

/// The layers of a [`Head`], named as the variant's head.
#[derive(Debug)]
enum HeadLayers {
    /// [`Head::GlobalDepthwise`].
    GlobalDepthwise { conv_6_dw: Conv, embedding: Conv },
    /// [`Head::Flatten`].
    Flatten { reduce: ConvPRelu, fc: Linear },
}

impl HeadLayers {
    fn new(p: &nn::Path, head: Head, features: i64) -> HeadLayers {
        match head {
            Head::GlobalDepthwise => HeadLayers::GlobalDepthwise {
                // Linear: no PReLU between the pooling and the embedding.
                conv_6_dw: Conv::new(
                    p / "conv_6_dw",
                    ConvSpec::depthwise(SEPARABLE, FINAL_SIDE, 1).unpadded(),
                    INIT,
                ),
                embedding: Conv::new(
                    p / "embedding",
                    ConvSpec::dense(SEPARABLE, features, 1, 1),
                    INIT,
                ),
            },
            Head::Flatten => HeadLayers::Flatten {
                reduce: ConvPRelu::new(
                    p / "reduce",
                    ConvSpec::dense(SEPARABLE, FLATTENED_CHANNELS, 1, 1),
                ),
                // `fc`: the name the graph gives its fully connected layer's weights.
                fc: Linear::new(
                    p / "fc",
                    FLATTENED_CHANNELS * FINAL_SIDE * FINAL_SIDE,
                    features,
                ),
            },
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        match self {
            HeadLayers::GlobalDepthwise {
                conv_6_dw,
                embedding,
            } => embedding.forward(&conv_6_dw.forward(x)).flatten(1, -1),
            HeadLayers::Flatten { reduce, fc } => fc.forward(&reduce.forward(x).flatten(1, -1)),
        }
    }

    fn layers(&self) -> Vec<Layer<'_>> {
        match self {
            HeadLayers::GlobalDepthwise {
                conv_6_dw,
                embedding,
            } => vec![Layer::Conv(conv_6_dw), Layer::Conv(embedding)],
            HeadLayers::Flatten { reduce, fc } => {
                let mut layers = reduce.layers().to_vec();
                layers.push(Layer::Linear(fc));
                layers
            }
        }
    }

    fn to_onnx(&self, g: &mut OnnxGraph, x: String) -> String {
        match self {
            HeadLayers::GlobalDepthwise {
                conv_6_dw,
                embedding,
            } => {
                let x = g.conv(x, conv_6_dw, None);
                let x = g.conv(x, embedding, None);
                g.flatten(x)
            }
            HeadLayers::Flatten { reduce, fc } => {
                let x = reduce.to_onnx(g, x);
                let x = g.flatten(x);
                g.linear(x, fc, None)
            }
        }
    }
}

/// MobileFaceNet: `[N, 3, 112, 112]` faces (RGB, normalised as the pretrained model's manifest
/// says: [`super::input_spec`]) to `[N, 512]` raw embeddings.
#[derive(Debug)]
pub struct MobileFaceNet {
    conv1: ConvPRelu,
    conv2_dw: ConvPRelu,
    blocks: Vec<Bottleneck>,
    conv_6_sep: ConvPRelu,
    head: HeadLayers,
}

impl MobileFaceNet {
    /// A freshly initialised network of the shape `variant` with its variables under `p`.
    pub fn new(p: &nn::Path, variant: Variant) -> MobileFaceNet {
        let mut blocks = Vec::new();
        for (name, count, input, expanded, output, stride) in stages(variant) {
            for i in 0..count {
                // Single-block stages are named like the layer they are, not like a list.
                let q = if count == 1 { p / name } else { p / name / i };
                let (input, stride) = if i == 0 { (input, stride) } else { (output, 1) };
                blocks.push(Bottleneck::new(q, input, expanded, output, stride));
            }
        }
        let stem = 64 * variant.width;
        MobileFaceNet {
            conv1: ConvPRelu::new(p / "conv1", ConvSpec::dense(3, stem, 3, 2)),
            conv2_dw: ConvPRelu::new(
                p / "conv2_dw",
                ConvSpec {
                    groups: STEM_GROUPS,
                    ..ConvSpec::dense(stem, stem, 3, 1)
                },
            ),
            blocks,
            conv_6_sep: ConvPRelu::new(
                p / "conv_6_sep",
                ConvSpec::dense(128 * variant.width, SEPARABLE, 1, 1),
            ),
            head: HeadLayers::new(p, variant.head, super::EMBEDDING_SIZE),
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
        self.head.forward(&self.conv_6_sep.forward(&x))
    }
}

impl Backbone for MobileFaceNet {
    fn layers(&self) -> Vec<Layer<'_>> {
        let mut layers: Vec<Layer<'_>> = self.conv1.layers().into();
        layers.extend(self.conv2_dw.layers());
        layers.extend(self.blocks.iter().flat_map(Bottleneck::layers));
        layers.extend(self.conv_6_sep.layers());
        layers.extend(self.head.layers());
        layers
    }

    fn to_onnx(&self, g: &mut OnnxGraph, x: String) -> String {
        let x = self.conv1.to_onnx(g, x);
        let mut x = self.conv2_dw.to_onnx(g, x);
        for block in &self.blocks {
            x = block.to_onnx(g, x);
        }
        let x = self.conv_6_sep.to_onnx(g, x);
        self.head.to_onnx(g, x)
    }
}
