//! The face embedders the trainer fine-tunes: networks from an aligned 112x112 face to a raw
//! (not yet L2-normalised) 512-d embedding, with the topology of the pretrained ArcFace models
//! they start from, so that [`crate::import`] can load those models' weights.
//!
//! - [`MobileFaceNet`], batch norm folded, in the shapes of two pretrained models
//!   ([`Variant`]): the faceplugin MobileFaceNet and insightface's wider w600k_mbf.
//! - [`IResNet50`]: insightface arcface_torch's ResNet-50, with real batch norm.
//!
//! [`layers`] are the pieces they are built of, [`onnx`] the ONNX graph each writes of itself.

mod iresnet;
pub mod layers;
mod mobilefacenet;
pub mod onnx;

pub use iresnet::IResNet50;
pub use mobilefacenet::{Head, MobileFaceNet, Variant};

use layers::Layer;
use onnx::OnnxGraph;
use smoothface_shared::manifest::{Channels, InputSpec, Layout};
use std::fmt;
use std::str::FromStr;
use tch::nn;

/// The size of every backbone's embedding.
pub const EMBEDDING_SIZE: i64 = 512;

/// A backbone: a module from `[N, 3, 112, 112]` face tensors to `[N, 512]` raw embeddings.
pub trait Backbone: nn::ModuleT {
    /// Every layer with parameters, in the order the forward pass runs them: the order in which
    /// an exported ONNX graph lists the matching nodes.
    fn layers(&self) -> Vec<Layer<'_>>;

    /// Writes the evaluation-mode forward pass into `graph`, from the value `x`; returns the
    /// name of the raw embedding.
    fn to_onnx(&self, graph: &mut OnnxGraph, x: String) -> String;
}

/// Which backbone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// MobileFaceNet with batch norm folded into its convolutions: the faceplugin model
    /// (models/mobilefacenet)
    MobileFaceNet,
    /// insightface's wider MobileFaceNet (arcface_torch's `mbf`: a 128-channel stem, a flattened
    /// fully connected head), batch norm folded: w600k_mbf (models/w600k_mbf)
    Mbf,
    /// insightface arcface_torch's IResNet-50 (its r50), with real batch norm
    IResNet50,
}

impl Arch {
    /// Every architecture, in the order the command line lists them.
    pub const ALL: [Arch; 3] = [Arch::MobileFaceNet, Arch::Mbf, Arch::IResNet50];

    /// The name on the command line, and the prefix of the backbone's variables in a checkpoint
    /// (so that loading one architecture's checkpoint into the other fails by name).
    pub fn name(self) -> &'static str {
        match self {
            Arch::MobileFaceNet => "mobilefacenet",
            Arch::Mbf => "mbf",
            Arch::IResNet50 => "iresnet50",
        }
    }

    /// A freshly initialised backbone with its variables under `p / self.name()`.
    pub fn build(self, p: &nn::Path, options: Options) -> Box<dyn Backbone> {
        let p = p / self.name();
        match self {
            Arch::MobileFaceNet => Box::new(MobileFaceNet::new(&p, Variant::MOBILEFACENET)),
            Arch::Mbf => Box::new(MobileFaceNet::new(&p, Variant::MBF)),
            Arch::IResNet50 => Box::new(IResNet50::new(&p, options)),
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Arch {
    type Err = String;

    /// Parses an architecture's [`Arch::name`].
    fn from_str(s: &str) -> Result<Self, String> {
        crate::parse_choice(s, &Arch::ALL, Arch::name, "architecture")
    }
}

/// How the pretrained weights of each architecture expect their input, as the device will
/// feed it: MobileFaceNet's manifest says `(pixel - 127) / 128`; arcface_torch trains mbf and
/// IResNet on `(pixel / 255 - 0.5) / 0.5`, which is `(pixel - 127.5) / 127.5` (w600k_mbf's
/// manifest).
pub fn input_spec(arch: Arch) -> InputSpec {
    let (mean, std) = match arch {
        Arch::MobileFaceNet => (127.0, 128.0),
        Arch::Mbf | Arch::IResNet50 => (127.5, 127.5),
    };
    InputSpec {
        layout: Layout::Nchw,
        size: smoothface_shared::align::CROP_SIZE,
        channels: Channels::Rgb,
        mean,
        std,
    }
}

/// Training-time choices of a backbone. MobileFaceNet (`mobilefacenet` and `mbf`) has neither
/// batch norm nor dropout and ignores them.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Options {
    /// Keeps every batch norm in evaluation mode (running statistics, never updated) while
    /// training: for small fine-tuning batches, whose statistics are noisy, and for weights
    /// imported from a graph whose batch norms were folded into the convolutions.
    pub frozen_batch_norm: bool,
    /// Dropout probability before the final fully connected layer (arcface_torch's default: 0).
    pub dropout: f64,
}
