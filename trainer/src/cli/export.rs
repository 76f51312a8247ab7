//! A model folder the device runs, from a checkpoint: `smoothface-train export`.

use anyhow::Result;
use std::path::PathBuf;

/// Its arguments.
#[derive(clap::Args)]
pub struct Args {
    /// The checkpoint (.safetensors from fit or import); its architecture is read from it
    #[arg(value_name = "CKPT")]
    pub checkpoint: PathBuf,
    /// The model folder to create; it must not exist yet
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The model's name in the manifest (shown by `smoothface stats`)
    /// [default: <arch>-<start of the checkpoint's sha256>]
    #[arg(long)]
    pub name: Option<String>,
}

/// Runs the command.
pub fn run(args: &Args) -> Result<()> {
    let exported =
        smoothface_trainer::export::export(&args.checkpoint, &args.out, args.name.as_deref())?;
    println!("{}", serde_json::to_string(&exported)?);
    Ok(())
}
