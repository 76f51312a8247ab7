//! `smoothface align`: the aligned crop of one face per photo, for training data.

use super::args::face_pick;
use super::{exit_code, Global};
use anyhow::Result;
use smoothface_device::pipeline::FacePick;
use std::path::PathBuf;
use std::process::ExitCode;

/// Write the aligned 112x112 crop of one face per photo, mirroring a folder tree (training data)
#[derive(clap::Args)]
pub struct Args {
    /// Folder of photos (for training: one sub-folder per person)
    pub input: PathBuf,
    /// Folder for the crops (PNG, same relative paths); existing crops are kept
    pub output: PathBuf,
    /// Which face of each photo: largest, or central (nearest the image centre)
    #[arg(long, default_value = "largest", value_parser = face_pick, value_name = "PICK")]
    pub face: FacePick,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

/// Writes the crops of the tree, keeping those already there.
pub fn run(g: &Global, a: &Args) -> Result<ExitCode> {
    let pipeline = g.pipeline()?;
    let r =
        smoothface_device::align::align_tree(&pipeline, &a.input, &a.output, a.face, g.progress())?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        for m in &r.missing {
            eprintln!("no crop: {}: {}", m.path, m.reason);
        }
        println!(
            "{} crops written, {} already there, {} photos without a crop",
            r.written,
            r.existing,
            r.missing.len()
        );
    }
    Ok(exit_code(!r.missing.is_empty()))
}
