//! Face features of a whole IJB set: crops aligned from the given landmarks, embedded (and
//! their mirror images, for the flip test) by any embedder, in chunks cached on disk under the
//! model's identity, so a killed run resumes where it stopped and a second protocol, or the same
//! model from the other binary, embeds nothing again.

use super::meta::{FaceRecord, IjbSet};
use crate::align::{align_face, CROP_SIZE};
use crate::preprocess::flip_horizontal;
use rayon::prelude::*;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// An error from an embedder, whatever its runtime.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the evaluation needs of a face embedder.
pub trait FaceEmbedder: Sync {
    /// The identity of the weights (sha256 of the model file): the cache is keyed by it.
    fn model_id(&self) -> &str;
    /// Floats per feature.
    fn dim(&self) -> usize;
    /// Raw features (not normalised: their norm is a quality signal) of aligned 112x112 RGB
    /// crops, one row of [`FaceEmbedder::dim`] floats a crop.
    fn embed(&self, crops: &[&[u8]]) -> Result<Vec<f32>, BoxError>;
}

/// A face whose crop could not be used.
#[derive(Debug, Clone, Serialize)]
pub struct Missing {
    /// The crop's path.
    pub path: String,
    /// Why.
    pub reason: String,
}

/// The raw features of every face of a set.
#[derive(Debug, Clone)]
pub struct FaceFeatures {
    /// Floats per feature.
    pub dim: usize,
    /// One row a face (zero for missing faces).
    pub plain: Vec<f32>,
    /// The mirrored crops' rows, when the flip test is on.
    pub flipped: Option<Vec<f32>>,
    /// Whether each face's crop could be read and aligned.
    pub present: Vec<bool>,
    /// The faces that could not, and why.
    pub missing: Vec<Missing>,
    /// Faces embedded by this run.
    pub embedded: usize,
    /// Faces read from the cache.
    pub cached: usize,
    /// Seconds spent reading, aligning and embedding the faces this run embedded.
    pub seconds: f64,
}

/// Why the features could not be computed.
///
/// The underlying error is part of the message (a `cause` field, not an error `source`), so a
/// chain printed with `{:#}` shows it once, not twice.
#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    /// The embedder failed: no face is to blame, so the evaluation stops.
    #[error("the embedder failed: {0}")]
    Embedder(BoxError),
    /// The embedder returned NaN or infinite values (a diverged model).
    #[error("the embedder's output is NaN or infinite ({count} values): the model is unusable")]
    NonFinite {
        /// How many values.
        count: usize,
    },
    /// A cache file could not be written.
    #[error("cannot write the feature cache {}: {cause}", path.display())]
    Cache {
        /// The file.
        path: PathBuf,
        /// The failure.
        cause: std::io::Error,
    },
}

/// Faces embedded, and cached, together: small enough that a killed run loses little, large
/// enough that the cache holds few files (IJB-C: 890).
pub const CHUNK: usize = 256;

/// The default cache folder: `$XDG_CACHE_HOME/smoothface/ijb`, else `~/.cache/smoothface/ijb`.
pub fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("smoothface").join("ijb"))
}

/// The aligned crop of `face` from the image at `path`, as insightface cuts it (our
/// [`align_face`] to the ArcFace template, from the file's upright pixels).
pub fn load_crop(path: &Path, face: &FaceRecord) -> Result<Vec<u8>, String> {
    use image::ImageDecoder;
    let reader = image::ImageReader::open(path)
        .map_err(|e| format!("cannot read: {e}"))?
        .with_guessed_format()
        .map_err(|e| format!("cannot read: {e}"))?;
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| format!("not an image: {e}"))?;
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img =
        image::DynamicImage::from_decoder(decoder).map_err(|e| format!("corrupt image: {e}"))?;
    img.apply_orientation(orientation);
    let rgb = img.into_rgb8();
    align_face(
        rgb.as_raw(),
        rgb.width() as usize,
        rgb.height() as usize,
        &face.landmarks,
    )
    .ok_or_else(|| "degenerate landmarks (all one point)".to_owned())
}

/// The cache file of a chunk: keyed by the model, the kind of crop, and every face's image name
/// and landmarks, so a changed face list never reads stale features.
fn chunk_path(dir: &Path, model: &str, kind: &str, faces: &[FaceRecord]) -> PathBuf {
    let mut h = Sha256::new();
    h.update(model.as_bytes());
    h.update([0]);
    h.update(kind.as_bytes());
    for f in faces {
        h.update([0]);
        h.update(f.image.as_bytes());
        for v in f.landmarks.iter().flatten() {
            h.update(v.to_le_bytes());
        }
    }
    let model_dir: String = model.chars().take(16).collect();
    dir.join(model_dir)
        .join(format!("{}-{kind}.f32", hex::encode(&h.finalize()[..12])))
}

const MAGIC: &[u8; 8] = b"SFIJBF1\0";

/// A chunk's rows from the cache, or `None` when absent or not of the expected size (then it
/// is embedded again).
fn read_chunk(path: &Path, dim: usize, count: usize) -> Option<Vec<f32>> {
    let bytes = std::fs::read(path).ok()?;
    let body = bytes.strip_prefix(MAGIC.as_slice())?;
    if body.len() != dim * count * 4 {
        return None;
    }
    Some(
        body.chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    )
}

fn write_chunk(path: &Path, rows: &[f32]) -> Result<(), FeatureError> {
    let mut bytes = Vec::with_capacity(MAGIC.len() + rows.len() * 4);
    bytes.extend_from_slice(MAGIC);
    rows.iter().for_each(|v| bytes.extend(v.to_le_bytes()));
    crate::atomic::write_atomically(path, |file| std::io::Write::write_all(file, &bytes)).map_err(
        |source| FeatureError::Cache {
            path: path.to_path_buf(),
            cause: source,
        },
    )
}

/// Embeds every face of `set` with `model` (and each mirrored crop when `flip`), reusing and
/// filling the cache under `cache` when given. `progress` is told each chunk's face count.
pub fn embed_faces(
    set: &IjbSet,
    model: &dyn FaceEmbedder,
    flip: bool,
    cache: Option<&Path>,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<FaceFeatures, FeatureError> {
    let dim = model.dim();
    let n = set.faces.len();
    let mut out = FaceFeatures {
        dim,
        plain: Vec::with_capacity(n * dim),
        flipped: flip.then(|| Vec::with_capacity(n * dim)),
        present: Vec::with_capacity(n),
        missing: Vec::new(),
        embedded: 0,
        cached: 0,
        seconds: 0.0,
    };
    for chunk in set.faces.chunks(CHUNK) {
        let paths = cache.map(|dir| {
            (
                chunk_path(dir, model.model_id(), "plain", chunk),
                chunk_path(dir, model.model_id(), "flip", chunk),
            )
        });
        let from_cache = paths.as_ref().and_then(|(plain, flipped)| {
            let p = read_chunk(plain, dim, chunk.len())?;
            let f = if flip {
                Some(read_chunk(flipped, dim, chunk.len())?)
            } else {
                None
            };
            Some((p, f))
        });
        if let Some((p, f)) = from_cache {
            out.plain.extend(p);
            if let (Some(all), Some(f)) = (out.flipped.as_mut(), f) {
                all.extend(f);
            }
            out.present.extend(std::iter::repeat_n(true, chunk.len()));
            out.cached += chunk.len();
            progress(chunk.len());
            continue;
        }

        let start = Instant::now();
        let crops: Vec<Result<Vec<u8>, String>> = chunk
            .par_iter()
            .map(|f| load_crop(&set.image_path(f), f))
            .collect();
        let mut inputs: Vec<&[u8]> = Vec::with_capacity(2 * chunk.len());
        for (face, crop) in chunk.iter().zip(&crops) {
            match crop {
                Ok(c) => inputs.push(c),
                Err(reason) => out.missing.push(Missing {
                    path: set.image_path(face).display().to_string(),
                    reason: reason.clone(),
                }),
            }
        }
        let good = inputs.len();
        let mirrored: Vec<Vec<u8>> = if flip {
            inputs
                .par_iter()
                .map(|c| flip_horizontal(c, CROP_SIZE))
                .collect()
        } else {
            Vec::new()
        };
        inputs.extend(mirrored.iter().map(Vec::as_slice));
        let rows = if inputs.is_empty() {
            Vec::new()
        } else {
            model.embed(&inputs).map_err(FeatureError::Embedder)?
        };
        assert_eq!(rows.len(), inputs.len() * dim, "one row per crop");
        let bad = rows.iter().filter(|v| !v.is_finite()).count();
        if bad > 0 {
            return Err(FeatureError::NonFinite { count: bad });
        }
        // Back to one row per face, zero where the crop is missing.
        let (mut plain, mut mirror) = (Vec::new(), Vec::new());
        let mut k = 0;
        for crop in &crops {
            if crop.is_ok() {
                plain.extend_from_slice(&rows[k * dim..(k + 1) * dim]);
                if flip {
                    mirror.extend_from_slice(&rows[(good + k) * dim..(good + k + 1) * dim]);
                }
                k += 1;
            } else {
                plain.extend(std::iter::repeat_n(0.0, dim));
                mirror.extend(std::iter::repeat_n(0.0, if flip { dim } else { 0 }));
            }
            out.present.push(crop.is_ok());
        }
        // A chunk with a missing face is not cached: the reason would be lost, and a fixed
        // file should be read on the next run.
        if let Some((plain_path, flip_path)) = paths.filter(|_| good == chunk.len()) {
            write_chunk(&plain_path, &plain)?;
            if flip {
                write_chunk(&flip_path, &mirror)?;
            }
        }
        out.plain.extend(plain);
        if let Some(all) = out.flipped.as_mut() {
            all.extend(mirror);
        }
        out.embedded += chunk.len();
        out.seconds += start.elapsed().as_secs_f64();
        progress(chunk.len());
    }
    Ok(out)
}
