//! The frame sources a user names (`smoothface camera --source FILE|DIR` or `--device N`): a
//! folder of images, a video file or a camera, opened as one [`FrameSource`]. [`crate::frames`]
//! is the abstraction; the folder (there), [`crate::video`] and [`crate::camera`] implement it,
//! and this module alone knows them all.

#[cfg(feature = "video")]
use crate::frames::Sampling;
use crate::frames::{FrameSource, ImageFolder};
use anyhow::Result;
use std::path::Path;

/// Opens what `--source` or `--device` names: a folder of images (a slide show at `fps`), a
/// video file (sampled at `fps`), or, without a source, camera `device`.
pub fn open(
    source: Option<&Path>,
    device: u32,
    fps: f64,
    max_pixels: u64,
) -> Result<Box<dyn FrameSource>> {
    match source {
        Some(dir) if dir.is_dir() => Ok(Box::new(ImageFolder::open(dir, fps, max_pixels)?)),
        Some(file) => open_video(file, fps, max_pixels),
        None => open_camera(device),
    }
}

#[cfg(feature = "video")]
fn open_video(file: &Path, fps: f64, max_pixels: u64) -> Result<Box<dyn FrameSource>> {
    let sampling = Sampling {
        fps,
        max_duration_s: f64::INFINITY,
    };
    Ok(Box::new(crate::video::decode::VideoFile::open(
        file, sampling, max_pixels,
    )?))
}

#[cfg(not(feature = "video"))]
fn open_video(file: &Path, _: f64, _: u64) -> Result<Box<dyn FrameSource>> {
    anyhow::bail!(
        "{}: this smoothface was built without video support (the `video` feature); give a folder of images",
        file.display()
    )
}

#[cfg(all(feature = "camera", target_os = "linux"))]
fn open_camera(device: u32) -> Result<Box<dyn FrameSource>> {
    Ok(Box::new(crate::camera::open(device)?))
}

#[cfg(not(all(feature = "camera", target_os = "linux")))]
fn open_camera(device: u32) -> Result<Box<dyn FrameSource>> {
    anyhow::bail!(
        "camera {device}: this smoothface was built without camera support (the `camera` feature, Linux only); give --source FILE"
    )
}
