//! Evaluate a checkpoint on IJB-B/C: `smoothface-train eval ijbc`.

use anyhow::{anyhow, Result};
use smoothface_shared::ijb::cli::IjbcArgs;
use smoothface_trainer::config::DeviceChoice;
use smoothface_trainer::eval::TorchEmbedder;
use std::io::IsTerminal;
use std::path::PathBuf;

/// Its arguments.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub common: IjbcArgs,
    /// The checkpoint (.safetensors from fit or import)
    #[arg(long, value_name = "CKPT")]
    pub checkpoint: PathBuf,
    /// Where to run: `auto` (CUDA when available), `cpu` or `cuda`
    #[arg(long, default_value = "auto", value_name = "DEVICE")]
    pub device: DeviceChoice,
    /// Crops per forward pass (with the flip test each face is two crops) [default: 128 on a
    /// GPU, 16 on the CPU, where larger batches ran slower: see hardware.md]
    #[arg(long, value_name = "N")]
    pub batch: Option<usize>,
    /// No progress bar
    #[arg(long, short)]
    pub quiet: bool,
}

/// Runs the command.
pub fn run(args: &Args) -> Result<()> {
    let device = args.device.resolve()?;
    let batch = args
        .batch
        .unwrap_or(if device.is_cuda() { 128 } else { 16 });
    let model = TorchEmbedder::load(&args.checkpoint, device, batch)?;
    let progress = !args.quiet && std::io::stderr().is_terminal();
    let c = &args.common;
    let report = smoothface_trainer::eval::ijbc(&model, &c.dir, &c.options(), progress)?;
    c.finish(&report, &args.checkpoint.display().to_string())
        .map_err(|e| anyhow!(e))
}
