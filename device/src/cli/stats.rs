//! `smoothface stats`: what the gallery holds.

use super::Global;
use anyhow::Result;
use smoothface_device::gallery::db;
use std::process::ExitCode;

/// What the gallery holds
#[derive(clap::Args)]
pub struct Args {
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

/// Prints the gallery's counts.
pub fn run(g: &Global, a: &Args) -> Result<ExitCode> {
    let path = g.db_path();
    let stats = db::stats(&db::open(&path)?, &path)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
    } else {
        println!(
            "gallery {} ({:.1} MB)",
            path.display(),
            stats.bytes as f64 / 1e6
        );
        println!(
            "{} files ({} videos, {:.0} s), {} unreadable",
            stats.media, stats.videos, stats.video_seconds, stats.unreadable
        );
        for m in &stats.models {
            println!(
                "model {}: {} files analysed, {} faces ({}-d)",
                m.name, m.photos, m.faces, m.dim
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
