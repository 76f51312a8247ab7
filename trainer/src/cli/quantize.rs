//! An int8 model folder from an exported one: `smoothface-train quantize`.

use anyhow::Result;
use smoothface_trainer::export::quantize::{Format, QuantizeOptions};
use std::path::PathBuf;
use std::str::FromStr;

/// Its arguments.
#[derive(clap::Args)]
pub struct Args {
    /// The float model folder (model.onnx + manifest.json, from export)
    #[arg(value_name = "DIR")]
    pub model: PathBuf,
    /// Aligned face crops to measure activation ranges on (a folder per person, or any tree)
    #[arg(long, value_name = "FACES")]
    pub calibration: PathBuf,
    /// The int8 model folder to create; it must not exist yet
    #[arg(long, value_name = "DIR8")]
    pub out: PathBuf,
    /// Calibration faces to use, spread over the folder (rounded down to a multiple of 16)
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub images: usize,
    /// Faces to compare float and int8 embeddings on, up to 1,024 [default: the calibration faces]
    #[arg(long, value_name = "FACES")]
    pub check: Option<PathBuf>,
    /// Quantized operators: `qdq` (QuantizeLinear/DequantizeLinear pairs around float
    /// convolutions) or `qlinear` (QLinearConv integer convolutions)
    #[arg(long, value_name = "FORMAT", value_parser = Format::from_str, default_value_t = Format::Qdq)]
    pub format: Format,
    /// Keep the first convolution in float
    #[arg(long)]
    pub first_float: bool,
    /// Keep the last convolution in float
    #[arg(long)]
    pub last_float: bool,
}

/// Runs the command.
pub fn run(args: &Args) -> Result<()> {
    let options = QuantizeOptions {
        format: args.format,
        first_float: args.first_float,
        last_float: args.last_float,
    };
    let report = smoothface_trainer::export::quantize::quantize(
        &args.model,
        &args.calibration,
        args.check.as_deref(),
        &args.out,
        args.images,
        &options,
    )?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
