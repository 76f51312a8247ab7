//! `smoothface forget`: delete photos and their faces from the gallery.

use super::Global;
use anyhow::Result;
use smoothface_device::gallery::db;
use smoothface_device::thumbs::Cache;
use std::path::PathBuf;
use std::process::ExitCode;

/// Delete photos (a file, or every photo under a folder) and their faces from the gallery
#[derive(clap::Args)]
pub struct Args {
    /// Files or folders, as they were indexed
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

/// Deletes the photos and their faces, thumbnails and crops.
pub fn run(g: &Global, a: &Args) -> Result<ExitCode> {
    let mut conn = g.db()?;
    let absolute: Vec<PathBuf> = a
        .paths
        .iter()
        .map(|p| p.canonicalize().or_else(|_| std::path::absolute(p)))
        .collect::<std::io::Result<_>>()?;
    let r = db::forget(&mut conn, &absolute)?;
    // Their thumbnails and face crops go too.
    Cache::for_gallery(&g.db_path()).sweep(&conn)?;
    for p in &r.not_found {
        eprintln!("{}: not in the gallery", p.display());
    }
    println!(
        "forgot {} photos and {} faces ({} people left without faces removed)",
        r.photos, r.faces, r.people
    );
    Ok(ExitCode::SUCCESS)
}
