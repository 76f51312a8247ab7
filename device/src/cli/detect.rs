//! `smoothface detect`: the faces of images, with their boxes, landmarks and scores.

use super::{exit_code, Global};
use anyhow::Result;
use serde_json::json;
use smoothface_device::media;
use std::path::PathBuf;
use std::process::ExitCode;

/// Find the faces of images: boxes, five landmarks, scores (largest face first)
#[derive(clap::Args)]
pub struct Args {
    /// Images
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    /// Also compute each face's embedding
    #[arg(long)]
    pub embeddings: bool,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

/// Detects (and embeds) each image's faces; a file that fails is listed and the others go on.
pub fn run(g: &Global, a: &Args) -> Result<ExitCode> {
    let Args {
        images,
        embeddings,
        json,
    } = a;
    let pipeline = g.pipeline()?;
    let mut failed = false;
    let mut out = Vec::new();
    for path in images {
        let result = media::scan_file(path, false)
            .map_err(anyhow::Error::from)
            .and_then(|scan| {
                let (photo, faces) = pipeline.detect_file(path, &scan)?;
                let vectors = if *embeddings {
                    Some(pipeline.embed_detected(path, &scan, &photo, faces.clone())?)
                } else {
                    None
                };
                Ok((photo.photo_size(), faces, vectors))
            });
        match result {
            Ok(((w, h), faces, vectors)) => {
                if *json {
                    let faces: Vec<_> = match &vectors {
                        Some(v) => v
                            .iter()
                            .map(serde_json::to_value)
                            .collect::<Result<_, _>>()?,
                        None => faces
                            .iter()
                            .map(serde_json::to_value)
                            .collect::<Result<_, _>>()?,
                    };
                    out.push(json!({"path": path, "width": w, "height": h, "faces": faces}));
                } else {
                    println!("{}: {w}x{h}, {} face(s)", path.display(), faces.len());
                    for (i, f) in faces.iter().enumerate() {
                        let b = f.bbox;
                        println!(
                            "  face {i}: box ({:.0},{:.0})-({:.0},{:.0}) score {:.3}",
                            b[0], b[1], b[2], b[3], f.score
                        );
                    }
                }
            }
            Err(e) => {
                failed = true;
                eprintln!("failed: {e:#}");
                out.push(json!({"path": path, "error": format!("{e:#}")}));
            }
        }
    }
    if *json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(exit_code(failed))
}
