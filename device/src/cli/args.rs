//! Flag groups more than one subcommand takes: how videos are sampled, how faces are grouped
//! into people, which face of a photo is meant; and the checks of flag values.

use anyhow::{bail, Result};
use clap::Args;
use smoothface_device::frames::Sampling;
use smoothface_device::people::linkage::LinkageConfig;
use smoothface_device::people::store::Eligibility;
use smoothface_device::pipeline::FacePick;
use smoothface_shared::manifest::Thresholds;

/// How videos are sampled (`index`).
#[derive(Args, Clone)]
pub struct VideoArgs {
    /// Video frames analysed per second of video (the first frame always)
    #[arg(long, default_value_t = Sampling::DEFAULT.fps, value_name = "FPS")]
    video_fps: f64,
    /// Videos longer than this are sampled more sparsely, to cost what a video of this length does
    #[arg(long, default_value_t = Sampling::DEFAULT.max_duration_s / 3600.0, value_name = "HOURS")]
    video_max_hours: f64,
}

impl VideoArgs {
    /// The sampling the flags ask for; an error naming a flag that is not a positive number.
    pub fn sampling(&self) -> Result<Sampling> {
        Ok(Sampling {
            fps: positive("--video-fps", self.video_fps, "frames per second")?,
            max_duration_s: positive("--video-max-hours", self.video_max_hours, "hours")? * 3600.0,
        })
    }
}

/// A flag's value when it is a positive, finite number; else an error naming the flag.
pub fn positive(flag: &str, value: f64, unit: &str) -> Result<f64> {
    if value > 0.0 && value.is_finite() {
        Ok(value)
    } else {
        bail!("{flag} must be a positive number of {unit}: got {value}")
    }
}

/// How faces are grouped into people (`index`, `people update`, `eval people`).
#[derive(Args, Clone)]
pub struct GroupingArgs {
    /// Smallest mean cosine similarity of two groups of faces merged into one person (the
    /// first pass) [default: the embedder's calibrated `link`, from its manifest]
    #[arg(long, value_name = "S", allow_negative_numbers = true)]
    link_threshold: Option<f32>,
    /// The second pass: smallest similarity of two groups' mean faces for them to merge (0:
    /// no second pass) [default: the embedder's calibrated `link_relative`]
    #[arg(long, value_name = "S")]
    link_relative: Option<f32>,
    /// The second pass: smallest plain mean similarity of two groups that merge [default: the
    /// embedder's calibrated `link_floor`]
    #[arg(long, value_name = "S", allow_negative_numbers = true)]
    link_floor: Option<f32>,
    /// Faces a new person needs (fewer stay unassigned until more arrive)
    #[arg(long, default_value_t = LinkageConfig::MIN_FACES, value_name = "N")]
    person_min_faces: usize,
    /// Faces with a lower detector score are not grouped [default: the detector's
    /// `group_min_score` from its manifest: 0.95 for MTCNN, 0.6 for SCRFD]
    #[arg(long, value_name = "S")]
    group_min_score: Option<f32>,
    /// Faces whose box is smaller (shorter side, pixels) are not grouped
    #[arg(long, default_value_t = Eligibility::default().min_size, value_name = "PX")]
    group_min_size: f32,
}

impl GroupingArgs {
    /// Our grouping with the embedder's thresholds `t`, unless a flag says otherwise.
    pub fn linkage(&self, t: &Thresholds) -> Result<LinkageConfig> {
        let model = LinkageConfig::for_model(t);
        let threshold = self.link_threshold.unwrap_or(model.threshold);
        let relative = self.link_relative.or(model.relative).filter(|&r| r > 0.0);
        let floor = self.link_floor.unwrap_or(model.floor);
        for (flag, v) in [
            ("--link-threshold", threshold),
            ("--link-relative", relative.unwrap_or(0.0)),
            ("--link-floor", floor),
        ] {
            if !(-1.0..=1.0).contains(&v) {
                bail!("{flag} is a cosine similarity, between -1 and 1: got {v}");
            }
        }
        let base = match relative {
            Some(r) => LinkageConfig::two_pass(threshold, r, floor),
            None => LinkageConfig::at(threshold),
        };
        Ok(LinkageConfig {
            min_faces: self.person_min_faces,
            ..base
        })
    }

    /// Which faces are grouped; `detector_min_score` is the detector's own smallest score
    /// (its manifest's), used unless --group-min-score says otherwise.
    pub fn eligibility(&self, detector_min_score: f32) -> Eligibility {
        Eligibility {
            min_score: self.group_min_score.unwrap_or(detector_min_score),
            min_size: self.group_min_size,
        }
    }
}

/// Parses a --face value (largest, central).
pub fn face_pick(s: &str) -> Result<FacePick, String> {
    s.parse()
}
