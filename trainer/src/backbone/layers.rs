//! The layers the backbones are made of. Each one keeps its name in the var store and the
//! hyper-parameters a graph node must agree with, so that the ONNX importer can check every node
//! it maps onto a layer and name the layer when they disagree.

use crate::precision::cast;
use tch::{nn, Tensor};

/// The full name of a var-store path, as the checkpoint spells it (`layer1.0.conv1`).
fn path_name(p: &nn::Path) -> String {
    p.components().collect::<Vec<_>>().join(".")
}

/// Hyper-parameters of a 2-D convolution with a square kernel and the same stride and padding on
/// both axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvSpec {
    /// Input channels.
    pub in_channels: i64,
    /// Output channels.
    pub out_channels: i64,
    /// Side of the kernel.
    pub kernel: i64,
    /// Stride on both axes.
    pub stride: i64,
    /// Zero padding on each of the four sides.
    pub padding: i64,
    /// Channel groups: 1 for a dense convolution, the channel count for a depthwise one.
    pub groups: i64,
    /// Whether the convolution adds a bias.
    pub bias: bool,
}

impl ConvSpec {
    /// A dense convolution with a bias, padded so that stride 1 keeps the spatial size.
    pub fn dense(in_channels: i64, out_channels: i64, kernel: i64, stride: i64) -> ConvSpec {
        ConvSpec {
            in_channels,
            out_channels,
            kernel,
            stride,
            padding: kernel / 2,
            groups: 1,
            bias: true,
        }
    }

    /// A depthwise convolution (one filter per channel) with a bias, padded like [`dense`](Self::dense).
    pub fn depthwise(channels: i64, kernel: i64, stride: i64) -> ConvSpec {
        ConvSpec {
            groups: channels,
            ..ConvSpec::dense(channels, channels, kernel, stride)
        }
    }

    /// The same convolution without a bias (the batch norm after it has one).
    pub fn without_bias(self) -> ConvSpec {
        ConvSpec {
            bias: false,
            ..self
        }
    }

    /// The same convolution without padding.
    pub fn unpadded(self) -> ConvSpec {
        ConvSpec { padding: 0, ..self }
    }
}

/// A 2-D convolution.
#[derive(Debug)]
pub struct Conv {
    /// Name in the var store.
    pub name: String,
    /// Hyper-parameters.
    pub spec: ConvSpec,
    /// Filters, `[out, in / groups, kernel, kernel]`.
    pub weight: Tensor,
    /// Bias, `[out]`, when the spec has one.
    pub bias: Option<Tensor>,
}

impl Conv {
    /// A convolution under `p` whose filters start from `init`; a bias starts at zero.
    pub fn new(p: nn::Path, spec: ConvSpec, init: nn::Init) -> Conv {
        let shape = [
            spec.out_channels,
            spec.in_channels / spec.groups,
            spec.kernel,
            spec.kernel,
        ];
        Conv {
            name: path_name(&p),
            spec,
            weight: p.var("weight", &shape, init),
            bias: spec
                .bias
                .then(|| p.var("bias", &[spec.out_channels], nn::Init::Const(0.0))),
        }
    }
}

impl nn::Module for Conv {
    /// In the compute kind of the [`autocast`](crate::precision::autocast) region.
    fn forward(&self, xs: &Tensor) -> Tensor {
        let s = &self.spec;
        cast(xs).conv2d(
            &cast(&self.weight),
            self.bias.as_ref().map(cast).as_ref(),
            [s.stride, s.stride],
            [s.padding, s.padding],
            [1, 1],
            s.groups,
        )
    }
}

/// PReLU with one slope per channel: `x` where positive, `slope * x` elsewhere.
#[derive(Debug)]
pub struct PRelu {
    /// Name in the var store.
    pub name: String,
    /// Slopes, `[channels]`.
    pub slope: Tensor,
}

impl PRelu {
    /// Slopes under `p`, starting at 0.25 as torch's `nn.PReLU` does.
    pub fn new(p: nn::Path, channels: i64) -> PRelu {
        PRelu {
            name: path_name(&p),
            slope: p.var("weight", &[channels], nn::Init::Const(0.25)),
        }
    }
}

impl nn::Module for PRelu {
    /// In its input's kind (the slopes are cast to it).
    fn forward(&self, xs: &Tensor) -> Tensor {
        // `to_kind` to the slopes' own kind is the slopes themselves, no copy.
        xs.prelu(&self.slope.to_kind(xs.kind()))
    }
}

/// Batch normalisation over the channels (axis 1) of `[N, C]` or `[N, C, H, W]` inputs, with
/// torch's defaults (eps 1e-5, momentum 0.1) as insightface's arcface_torch uses them.
#[derive(Debug)]
pub struct BatchNorm {
    /// Name in the var store.
    pub name: String,
    /// Scale, `[C]`, starting at 1.
    pub weight: Tensor,
    /// Shift, `[C]`, starting at 0.
    pub bias: Tensor,
    /// Running mean, `[C]` (a buffer, not trained).
    pub running_mean: Tensor,
    /// Running variance, `[C]` (a buffer, not trained).
    pub running_var: Tensor,
}

impl BatchNorm {
    /// Added to the variance before its square root.
    pub const EPS: f64 = 1e-5;
    /// Weight of the newest batch in the running statistics.
    pub const MOMENTUM: f64 = 0.1;

    /// A batch norm under `p`. `trainable_scale: false` keeps the scale out of the optimiser, as
    /// arcface_torch does for the final feature normalisation.
    pub fn new(p: nn::Path, channels: i64, trainable_scale: bool) -> BatchNorm {
        let ones = || Tensor::ones([channels], (tch::Kind::Float, p.device()));
        BatchNorm {
            name: path_name(&p),
            weight: p.add("weight", ones(), trainable_scale),
            bias: p.var("bias", &[channels], nn::Init::Const(0.0)),
            running_mean: p.zeros_no_train("running_mean", &[channels]),
            running_var: p.ones_no_train("running_var", &[channels]),
        }
    }
}

impl nn::ModuleT for BatchNorm {
    /// Normalises with the batch's statistics and updates the running ones when `train`, with
    /// the running ones otherwise. In training mode inside a
    /// [`sync_batch_norm`](crate::dist::sync_batch_norm) region the statistics are those of
    /// every process's batch together (`[train] sync_batch_norm = true`).
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        if train {
            let bn = crate::dist::BatchNormParams {
                weight: Some(&self.weight),
                bias: Some(&self.bias),
                running_mean: Some(&self.running_mean),
                running_var: Some(&self.running_var),
                momentum: Self::MOMENTUM,
                eps: Self::EPS,
            };
            if let Some(y) = crate::dist::batch_norm_in_sync_region(xs, &bn) {
                return y;
            }
        }
        xs.batch_norm(
            Some(&self.weight),
            Some(&self.bias),
            Some(&self.running_mean),
            Some(&self.running_var),
            train,
            Self::MOMENTUM,
            Self::EPS,
            true,
        )
    }
}

/// A fully connected layer, `x W^T + b`.
#[derive(Debug)]
pub struct Linear {
    /// Name in the var store.
    pub name: String,
    /// Weight, `[out, in]`.
    pub weight: Tensor,
    /// Bias, `[out]`.
    pub bias: Tensor,
}

impl Linear {
    /// A layer under `p` initialised as torch's `nn.Linear` is.
    pub fn new(p: nn::Path, in_features: i64, out_features: i64) -> Linear {
        let inner = nn::linear(&p, in_features, out_features, Default::default());
        Linear {
            name: path_name(&p),
            weight: inner.ws,
            bias: inner
                .bs
                .expect("nn::linear's default configuration has a bias"),
        }
    }
}

impl nn::Module for Linear {
    /// In the compute kind of the [`autocast`](crate::precision::autocast) region.
    fn forward(&self, xs: &Tensor) -> Tensor {
        cast(xs).linear(&cast(&self.weight), Some(&cast(&self.bias)))
    }
}

/// A layer with parameters, as the ONNX importer sees it.
#[derive(Debug, Clone, Copy)]
pub enum Layer<'a> {
    /// A convolution.
    Conv(&'a Conv),
    /// A batch normalisation.
    BatchNorm(&'a BatchNorm),
    /// A PReLU.
    PRelu(&'a PRelu),
    /// A fully connected layer.
    Linear(&'a Linear),
}

impl Layer<'_> {
    /// The layer's name in the var store.
    pub fn name(&self) -> &str {
        match self {
            Layer::Conv(l) => &l.name,
            Layer::BatchNorm(l) => &l.name,
            Layer::PRelu(l) => &l.name,
            Layer::Linear(l) => &l.name,
        }
    }

    /// What kind of layer it is, in words for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Layer::Conv(_) => "convolution",
            Layer::BatchNorm(_) => "batch norm",
            Layer::PRelu(_) => "PReLU",
            Layer::Linear(_) => "fully connected layer",
        }
    }
}
