//! A checkpoint from a pretrained ONNX model: `smoothface-train import`.

use anyhow::Result;
use smoothface_trainer::backbone::Arch;
use std::path::PathBuf;
use std::str::FromStr;

/// Its arguments.
#[derive(clap::Args)]
pub struct Args {
    /// The ONNX model
    #[arg(value_name = "MODEL.onnx")]
    pub model: PathBuf,
    /// The architecture the graph is: `mobilefacenet` (MobileFaceNet with batch norm folded into
    /// its convolutions: models/mobilefacenet/fr_feature.onnx), `mbf` (insightface's wider
    /// MobileFaceNet, batch norm folded: models/w600k_mbf/w600k_mbf.onnx) or `iresnet50`
    /// (insightface arcface_torch's IResNet-50, with real batch norm)
    #[arg(long, value_name = "ARCH", value_parser = Arch::from_str)]
    pub arch: Arch,
    /// Where to write the checkpoint; the name must end in .safetensors. Written under a
    /// temporary name and renamed, so it is complete or absent
    #[arg(long, value_name = "CKPT.safetensors")]
    pub out: PathBuf,
}

/// Runs the command.
pub fn run(args: &Args) -> Result<()> {
    let imported = smoothface_trainer::import::import(&args.model, args.arch, &args.out)?;
    let report = serde_json::json!({
        "checkpoint": args.out,
        "arch": args.arch.name(),
        "layers": imported.layers,
        "folded_batch_norms": imported.folded_batch_norms,
        "batch_norms_folded_into_linear": imported.batch_norms_folded_into_linear,
    });
    println!("{report}");
    Ok(())
}
