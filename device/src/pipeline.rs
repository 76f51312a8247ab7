//! The per-photo pipeline: decode, detect, align, embed.

use crate::detector::{Detector, DetectorConfig};
use crate::embedder::Embedder;
use crate::media::{self, DecodeError};
use crate::mtcnn::Face;
use anyhow::Result;
use image::RgbImage;
use serde::Serialize;
use smoothface_shared::align::{align_face, estimate_similarity, ARCFACE_TEMPLATE};
use smoothface_shared::manifest::ModelManifest;
use std::path::Path;
use std::str::FromStr;

/// A face with its embedding.
#[derive(Debug, Clone, Serialize)]
pub struct EmbeddedFace {
    /// Where it is and how sure the detector is.
    #[serde(flatten)]
    pub face: Face,
    /// Unit-length embedding.
    pub embedding: Vec<f32>,
}

/// Why a photo file gave no faces: its decoding (the message names the file) or the models.
#[derive(Debug, thiserror::Error)]
pub enum PhotoError {
    /// The file could not be decoded.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// Detection or embedding failed.
    #[error(transparent)]
    Model(#[from] anyhow::Error),
}

impl PhotoError {
    /// The cause alone, for reports that name the file in a field of their own.
    pub fn reason(&self) -> String {
        match self {
            PhotoError::Decode(e) => e.reason(),
            PhotoError::Model(e) => format!("{e:#}"),
        }
    }
}

/// Which face of a photo stands for it when a photo must give exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FacePick {
    /// The face with the largest box.
    Largest,
    /// The face whose box centre is nearest the image centre (LFW-style crops).
    Central,
}

impl FromStr for FacePick {
    type Err = String;

    fn from_str(s: &str) -> Result<FacePick, String> {
        match s {
            "largest" => Ok(FacePick::Largest),
            "central" => Ok(FacePick::Central),
            other => Err(format!(
                "unknown face choice `{other}`: expected `largest` or `central`"
            )),
        }
    }
}

/// Detector and embedder, loaded once and shared by all threads.
pub struct Pipeline {
    /// The face detector (MTCNN or SCRFD, as its model folder's manifest says).
    pub detector: Detector,
    /// The face embedder.
    pub embedder: Embedder,
    /// Largest image accepted, in pixels.
    pub max_pixels: u64,
    /// The detector's smallest score for a face to be grouped into people or enrolled: its
    /// manifest's (see [`crate::detector::group_min_score`]).
    pub group_min_score: f32,
}

impl Pipeline {
    /// Loads and verifies both models; the detector is the one its folder's manifest names.
    pub fn load(
        model_dir: &Path,
        detector_dir: &Path,
        config: DetectorConfig,
        max_pixels: u64,
    ) -> Result<Pipeline> {
        let embedder = Embedder::load(&ModelManifest::load(model_dir)?)?;
        let detector_model = ModelManifest::load(detector_dir)?;
        let group_min_score = crate::detector::group_min_score(&detector_model.manifest);
        let detector = Detector::load(&detector_model, config)?;
        Ok(Pipeline {
            detector,
            embedder,
            max_pixels,
            group_min_score,
        })
    }

    /// Decodes a photo.
    pub fn decode(&self, path: &Path) -> Result<RgbImage, DecodeError> {
        media::load_rgb(path, self.max_pixels)
    }

    /// Aligns and embeds the given faces of an image.
    pub fn embed_faces(&self, img: &RgbImage, faces: Vec<Face>) -> Result<Vec<EmbeddedFace>> {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let mut kept = Vec::with_capacity(faces.len());
        let mut crops = Vec::with_capacity(faces.len());
        for face in faces {
            // Degenerate landmarks (all one point) give no transform: such a face is skipped.
            if let Some(crop) = align_face(img.as_raw(), w, h, &face.landmarks) {
                crops.push(crop);
                kept.push(face);
            }
        }
        self.embed_crops(kept, &crops)
    }

    /// Embeds aligned crops, one for each face.
    fn embed_crops(&self, faces: Vec<Face>, crops: &[Vec<u8>]) -> Result<Vec<EmbeddedFace>> {
        let refs: Vec<&[u8]> = crops.iter().map(Vec::as_slice).collect();
        let vectors = self.embedder.embed(&refs)?;
        Ok(faces
            .into_iter()
            .zip(vectors.chunks_exact(self.embedder.dim()))
            .map(|(face, v)| EmbeddedFace {
                face,
                embedding: v.to_vec(),
            })
            .collect())
    }

    /// Decodes a scanned photo file and detects its faces, in the file's pixels. A large JPEG is
    /// decoded at a reduced DCT scale (no smaller than the detector's `max_side`, the copy it
    /// detects on anyway); the copy decoded is returned with the faces.
    pub fn detect_file(
        &self,
        path: &Path,
        scan: &media::Scanned,
    ) -> Result<(media::Reduced, Vec<Face>), PhotoError> {
        let side = self.detector.max_side();
        let photo = media::load_reduced(path, scan, self.max_pixels, side)?;
        let (faces, _) = self
            .detector
            .detect_reduced_timed(&photo.image, photo.reduction)?;
        Ok((photo, faces))
    }

    /// Every face of a scanned photo file, largest first, embedded. Each face is aligned from
    /// the copy it was detected on where that copy has at least as many pixels across the face
    /// as the 112x112 crop takes from it (so the crop loses nothing), else from a copy decoded
    /// again as fine as the face needs (the full-resolution pixels at most).
    pub fn analyze_file(
        &self,
        path: &Path,
        scan: &media::Scanned,
    ) -> Result<Vec<EmbeddedFace>, PhotoError> {
        let (photo, faces) = self.detect_file(path, scan)?;
        self.embed_detected(path, scan, &photo, faces)
    }

    /// Aligns and embeds the faces [`Pipeline::detect_file`] found on `photo`, the copy of the
    /// file at `path` it decoded, as [`Pipeline::analyze_file`] does.
    pub fn embed_detected(
        &self,
        path: &Path,
        scan: &media::Scanned,
        photo: &media::Reduced,
        faces: Vec<Face>,
    ) -> Result<Vec<EmbeddedFace>, PhotoError> {
        let finest = faces
            .iter()
            .map(coarsest_reduction_for)
            .filter(|&r| r < photo.reduction)
            .min();
        let finer = match finest {
            Some(r) => Some(media::load_at(path, scan, self.max_pixels, r)?),
            None => None,
        };
        let mut kept = Vec::with_capacity(faces.len());
        let mut crops = Vec::with_capacity(faces.len());
        for face in faces {
            let copy = match &finer {
                Some(finer) if coarsest_reduction_for(&face) < photo.reduction => finer,
                _ => photo,
            };
            let landmarks = face.landmarks.map(|p| copy.to_copy(p));
            let (w, h) = (copy.image.width() as usize, copy.image.height() as usize);
            if let Some(crop) = align_face(copy.image.as_raw(), w, h, &landmarks) {
                crops.push(crop);
                kept.push(face);
            }
        }
        Ok(self.embed_crops(kept, &crops)?)
    }

    /// Every face of an image, largest first, embedded.
    pub fn analyze(&self, img: &RgbImage) -> Result<Vec<EmbeddedFace>> {
        let faces = self.detector.detect(img)?;
        self.embed_faces(img, faces)
    }

    /// The one face that stands for a photo: the largest, or the one nearest the image centre.
    pub fn pick_face(&self, img: &RgbImage, pick: FacePick) -> Result<Option<Face>> {
        let faces = self.detector.detect(img)?;
        let (cx, cy) = (img.width() as f32 / 2.0, img.height() as f32 / 2.0);
        Ok(match pick {
            FacePick::Largest => faces.into_iter().next(),
            FacePick::Central => faces.into_iter().min_by(|a, b| {
                let d = |f: &Face| {
                    let [x, y] = f.center();
                    (x - cx).powi(2) + (y - cy).powi(2)
                };
                d(a).total_cmp(&d(b))
            }),
        })
    }

    /// The one face that stands for a photo, embedded; `None` when no face is found.
    pub fn analyze_one(&self, img: &RgbImage, pick: FacePick) -> Result<Option<EmbeddedFace>> {
        let chosen = self.pick_face(img, pick)?;
        Ok(self.embed_faces(img, chosen.into_iter().collect())?.pop())
    }
}

/// The largest reduction (8, 4, 2 or 1) of a photo whose copy still has at least as many pixels
/// across a face as its aligned crop takes: the alignment's scale (crop pixels per photo pixel)
/// times the reduction at most 1. Degenerate landmarks get 1 (alignment then skips the face).
pub fn coarsest_reduction_for(face: &Face) -> u32 {
    let scale = estimate_similarity(&face.landmarks, &ARCFACE_TEMPLATE)
        .map_or(f64::INFINITY, |t| t.scale());
    [8, 4, 2]
        .into_iter()
        .find(|&r| scale * r as f64 <= 1.0)
        .unwrap_or(1)
}
