//! The face detector the device runs: MTCNN ([`crate::mtcnn`], the default) or SCRFD
//! ([`crate::scrfd`]), chosen by the model folder's manifest kind. Both give the same [`Face`]s
//! (box, score, five landmarks in the same order and pixel conventions), so everything after
//! detection is the same for either; only the scores' scale is each detector's own.

use crate::mtcnn::{self, Face, Mtcnn, MtcnnConfig, DEFAULT_MAX_SIDE};
use crate::scrfd::{self, Scrfd, ScrfdConfig};
use anyhow::{bail, Result};
use image::RgbImage;
use serde::Serialize;
use smoothface_shared::manifest::{ModelKind, ModelManifest, VerifiedModel};

/// The settings both detectors take; each keeps its own thresholds at its defaults.
#[derive(Debug, Clone, Copy)]
pub struct DetectorConfig {
    /// Smallest face to find, in the image's pixels ([`MtcnnConfig::min_face`],
    /// [`ScrfdConfig::min_face`]).
    pub min_face: f32,
    /// Longest side of the copy a larger image is detected on; `None`: every image at its own
    /// size ([`MtcnnConfig::max_side`], [`ScrfdConfig::max_side`]).
    pub max_side: Option<u32>,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            min_face: 20.0,
            max_side: Some(DEFAULT_MAX_SIDE),
        }
    }
}

/// Smallest detector score of a face grouped into people or enrolled, for a detector whose
/// manifest names none: MTCNN scores real faces above 0.95 almost always. Each detector's
/// scores are on its own scale (SCRFD's manifest says 0.6).
pub const DEFAULT_GROUP_MIN_SCORE: f32 = 0.95;

/// A detector's smallest score of a face grouped into people or enrolled: its manifest's
/// `group_min_score`, else [`DEFAULT_GROUP_MIN_SCORE`].
pub fn group_min_score(manifest: &ModelManifest) -> f32 {
    manifest.group_min_score.unwrap_or(DEFAULT_GROUP_MIN_SCORE)
}

/// A loaded face detector. Each is boxed: they differ in size (MTCNN has three plan caches),
/// and one is loaded per pipeline.
pub enum Detector {
    /// MTCNN's three networks.
    Mtcnn(Box<Mtcnn>),
    /// SCRFD's one network.
    Scrfd(Box<Scrfd>),
}

/// Where one detection's time went, in the parts of the detector that ran it.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(untagged)]
pub enum StageTimes {
    /// MTCNN's parts.
    Mtcnn(mtcnn::StageTimes),
    /// SCRFD's parts.
    Scrfd(scrfd::StageTimes),
}

impl StageTimes {
    /// Every part's name (as the benchmark's table heads it) and milliseconds, the rest last.
    pub fn named(&self) -> Vec<(&'static str, f64)> {
        match self {
            StageTimes::Mtcnn(t) => t.named().to_vec(),
            StageTimes::Scrfd(t) => t.named().to_vec(),
        }
    }

    /// Adds another detection's times. Only times of the same detector add up; another's are
    /// left out (their parts are not these).
    pub fn add(&mut self, other: &StageTimes) {
        match (self, other) {
            (StageTimes::Mtcnn(t), StageTimes::Mtcnn(o)) => t.add(o),
            (StageTimes::Scrfd(t), StageTimes::Scrfd(o)) => t.add(o),
            _ => {}
        }
    }

    /// Every part's time times `factor` (a sum over photos into a mean).
    pub fn scale(&mut self, factor: f64) {
        match self {
            StageTimes::Mtcnn(t) => t.scale(factor),
            StageTimes::Scrfd(t) => t.scale(factor),
        }
    }
}

impl Detector {
    /// Loads a verified detector model folder: MTCNN or SCRFD as its manifest's kind says, each
    /// with its own thresholds and `config`'s minimum face and side.
    pub fn load(model: &VerifiedModel, config: DetectorConfig) -> Result<Detector> {
        Ok(match model.manifest.kind {
            ModelKind::MtcnnDetector => Detector::Mtcnn(Box::new(Mtcnn::load(
                model,
                MtcnnConfig {
                    min_face: config.min_face,
                    max_side: config.max_side,
                    ..MtcnnConfig::default()
                },
            )?)),
            ModelKind::ScrfdDetector => Detector::Scrfd(Box::new(Scrfd::load(
                model,
                ScrfdConfig {
                    min_face: config.min_face,
                    max_side: config.max_side,
                    ..ScrfdConfig::default()
                },
            )?)),
            ModelKind::Embedder => bail!(
                "{}: is an embedder, not a face detector (its manifest's kind)",
                model.dir.display()
            ),
        })
    }

    /// The detector's name, for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Detector::Mtcnn(_) => "MTCNN",
            Detector::Scrfd(_) => "SCRFD",
        }
    }

    /// Longest side of the copy a larger image is detected on (`None`: every image as it is).
    pub fn max_side(&self) -> Option<u32> {
        match self {
            Detector::Mtcnn(d) => d.config().max_side,
            Detector::Scrfd(d) => d.config().max_side,
        }
    }

    /// Times of no detection yet, in this detector's parts (a sum to add detections to).
    pub fn no_time(&self) -> StageTimes {
        match self {
            Detector::Mtcnn(_) => StageTimes::Mtcnn(mtcnn::StageTimes::default()),
            Detector::Scrfd(_) => StageTimes::Scrfd(scrfd::StageTimes::default()),
        }
    }

    /// Detects the faces of an RGB image, largest first.
    pub fn detect(&self, img: &RgbImage) -> Result<Vec<Face>> {
        match self {
            Detector::Mtcnn(d) => d.detect(img),
            Detector::Scrfd(d) => d.detect(img),
        }
    }

    /// [`Detector::detect`] on a copy of a photo whose every pixel stands for `reduction x
    /// reduction` of the photo's (a JPEG decoded at a reduced DCT scale): the faces come back in
    /// the photo's pixels, with where the time went.
    pub fn detect_reduced_timed(
        &self,
        img: &RgbImage,
        reduction: u32,
    ) -> Result<(Vec<Face>, StageTimes)> {
        self.detect_at_side(img, reduction, self.max_side())
    }

    /// [`Detector::detect_reduced_timed`] on a copy reduced to `max_side` instead of the
    /// configured one: for measuring what each side finds.
    pub fn detect_at_side(
        &self,
        img: &RgbImage,
        reduction: u32,
        max_side: Option<u32>,
    ) -> Result<(Vec<Face>, StageTimes)> {
        Ok(match self {
            Detector::Mtcnn(d) => {
                let (faces, t) = d.detect_at_side(img, reduction, max_side)?;
                (faces, StageTimes::Mtcnn(t))
            }
            Detector::Scrfd(d) => {
                let (faces, t) = d.detect_at_side(img, reduction, max_side)?;
                (faces, StageTimes::Scrfd(t))
            }
        })
    }
}
