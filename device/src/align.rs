//! `smoothface align`: write the aligned 112x112 crop of one face per photo, mirroring a folder
//! tree. This is how raw photo folders become training data for the trainer: the crops come from
//! the device's own detector and `shared`'s alignment, so training sees exactly what the gallery
//! embeds.

use crate::eval::Missing;
use crate::pipeline::{FacePick, Pipeline};
use anyhow::{bail, Context, Result};
use image::RgbImage;
use rayon::prelude::*;
use serde::Serialize;
use smoothface_shared::align::{align_face, CROP_SIZE};
use smoothface_shared::atomic::write_atomically;
use std::path::{Path, PathBuf};

/// What an align run did.
#[derive(Debug, Default, Serialize)]
pub struct AlignReport {
    /// Crops written.
    pub written: usize,
    /// Crops already present (a resumed run).
    pub existing: usize,
    /// Photos with no crop, and why.
    pub missing: Vec<Missing>,
}

/// Aligns every photo under `input` into `output/<same relative path>.png`.
pub fn align_tree(
    pipeline: &Pipeline,
    input: &Path,
    output: &Path,
    pick: FacePick,
    progress: bool,
) -> Result<AlignReport> {
    if !input.is_dir() {
        bail!("{}: no such folder", input.display());
    }
    let files: Vec<PathBuf> = walkdir::WalkDir::new(input)
        .sort_by_file_name()
        .follow_links(true)
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    let bar = crate::progress::photos_bar(files.len(), progress);
    let outcomes: Vec<Result<bool, Missing>> = files
        .par_iter()
        .map(|path| {
            let rel = path.strip_prefix(input).expect("walked under input");
            let dest = output.join(rel).with_extension("png");
            let r = if dest.exists() {
                Ok(false)
            } else {
                align_one(pipeline, path, &dest, pick).map(|()| true)
            };
            bar.inc(1);
            r
        })
        .collect();
    bar.finish_and_clear();
    let mut report = AlignReport::default();
    for o in outcomes {
        match o {
            Ok(true) => report.written += 1,
            Ok(false) => report.existing += 1,
            Err(m) => report.missing.push(m),
        }
    }
    Ok(report)
}

fn align_one(pipeline: &Pipeline, path: &Path, dest: &Path, pick: FacePick) -> Result<(), Missing> {
    let missing = |reason: String| Missing {
        path: path.display().to_string(),
        reason,
    };
    let img = pipeline.decode(path).map_err(|e| missing(e.reason()))?;
    let face = pipeline
        .pick_face(&img, pick)
        .map_err(|e| missing(format!("{e:#}")))?
        .ok_or_else(|| missing("no face found".into()))?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let crop = align_face(img.as_raw(), w, h, &face.landmarks)
        .ok_or_else(|| missing("degenerate landmarks".into()))?;
    write_png_atomically(&crop, dest).map_err(|e| missing(format!("{}: {e:#}", dest.display())))
}

/// Writes through the shared atomic writer: a killed run never leaves a half-written crop that a
/// resumed run would take as done.
fn write_png_atomically(crop: &[u8], dest: &Path) -> Result<()> {
    let img = RgbImage::from_raw(CROP_SIZE as u32, CROP_SIZE as u32, crop.to_vec())
        .context("crop size")?;
    write_atomically(dest, |file| -> Result<()> {
        img.write_to(file, image::ImageFormat::Png)?;
        Ok(())
    })
}
