//! The face embedders the trainer fine-tunes: networks from an aligned 112x112 face to a raw
//! (not yet L2-normalised) 512-d embedding, with the topology of the pretrained ArcFace models
//! they start from, so that [`crate::import`] can load those models' weights.
//!
//! - [`MobileFaceNet`]: the device's pretrained embedder, batch norm folded.
//! - [`IResNet50`]: insightface arcface_torch's ResNet-50, with real batch norm.

mod iresnet;
pub mod layers;
mod mobilefacenet;

pub use iresnet::IResNet50;
pub use mobilefacenet::MobileFaceNet;

use crate::export::OnnxGraph;
use layers::Layer;
use std::fmt;
use tch::nn;

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
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// MobileFaceNet with batch norm folded into its convolutions: the device's pretrained
    /// embedder (models/mobilefacenet)
    #[value(name = "mobilefacenet")]
    MobileFaceNet,
    /// insightface arcface_torch's IResNet-50 (its r50), with real batch norm
    #[value(name = "iresnet50")]
    IResNet50,
}

impl Arch {
    /// The name on the command line, and the prefix of the backbone's variables in a checkpoint
    /// (so that loading one architecture's checkpoint into the other fails by name).
    pub fn name(self) -> &'static str {
        match self {
            Arch::MobileFaceNet => "mobilefacenet",
            Arch::IResNet50 => "iresnet50",
        }
    }

    /// A freshly initialised backbone with its variables under `p / self.name()`.
    pub fn build(self, p: &nn::Path, options: Options) -> Box<dyn Backbone> {
        let p = p / self.name();
        match self {
            Arch::MobileFaceNet => Box::new(MobileFaceNet::new(&p)),
            Arch::IResNet50 => Box::new(IResNet50::new(&p, options)),
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Training-time choices of a backbone. MobileFaceNet has neither batch norm nor dropout and
/// ignores them.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Options {
    /// Keeps every batch norm in evaluation mode (running statistics, never updated) while
    /// training: for small fine-tuning batches, whose statistics are noisy, and for weights
    /// imported from a graph whose batch norms were folded into the convolutions.
    pub frozen_batch_norm: bool,
    /// Dropout probability before the final fully connected layer (arcface_torch's default: 0).
    pub dropout: f64,
}
