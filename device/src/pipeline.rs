//! The per-photo pipeline: decode, detect, align, embed.

use crate::embedder::Embedder;
use crate::media::{self, DecodeError};
use crate::mtcnn::{Face, Mtcnn, MtcnnConfig};
use anyhow::Result;
use image::RgbImage;
use serde::Serialize;
use smoothface_shared::align::align_face;
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
    /// The face detector.
    pub detector: Mtcnn,
    /// The face embedder.
    pub embedder: Embedder,
    /// Largest image accepted, in pixels.
    pub max_pixels: u64,
}

impl Pipeline {
    /// Loads and verifies both models.
    pub fn load(
        model_dir: &Path,
        detector_dir: &Path,
        config: MtcnnConfig,
        max_pixels: u64,
    ) -> Result<Pipeline> {
        let embedder = Embedder::load(&ModelManifest::load(model_dir)?)?;
        let detector = Mtcnn::load(&ModelManifest::load(detector_dir)?, config)?;
        Ok(Pipeline {
            detector,
            embedder,
            max_pixels,
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
        let refs: Vec<&[u8]> = crops.iter().map(Vec::as_slice).collect();
        let vectors = self.embedder.embed(&refs)?;
        Ok(kept
            .into_iter()
            .zip(vectors.chunks_exact(self.embedder.dim()))
            .map(|(face, v)| EmbeddedFace {
                face,
                embedding: v.to_vec(),
            })
            .collect())
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
