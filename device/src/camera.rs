//! Cameras through V4L2 (`nokhwa`): the list of cameras, and a camera as a
//! [`LiveSource`]: read at its own pace on its own thread, frames dropped when the analysis is
//! slower, an error naming it when it sends nothing for [`FRAME_TIMEOUT`].

use crate::frames::LiveSource;
use anyhow::{anyhow, Result};
use image::RgbImage;
use nokhwa::pixel_format::RgbFormat;
use nokhwa::utils::{
    ApiBackend, CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType,
};
use serde::Serialize;
use std::time::Duration;

/// How long a camera may send nothing before it counts as stopped.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(5);

/// A camera the system offers.
#[derive(Debug, Clone, Serialize)]
pub struct CameraInfo {
    /// Its index, for `--device`.
    pub index: String,
    /// Its name.
    pub name: String,
    /// What the driver says of it.
    pub description: String,
}

/// The cameras of this machine; none is an empty list, not an error (a machine without V4L2
/// devices has no `/dev/video*` to query).
pub fn list() -> Result<Vec<CameraInfo>> {
    let found = match nokhwa::query(ApiBackend::Video4Linux) {
        Ok(found) => found,
        Err(_) if !has_video_devices() => Vec::new(),
        Err(e) => return Err(anyhow!("cannot list the cameras: {e}")),
    };
    Ok(found
        .into_iter()
        .map(|c| CameraInfo {
            index: c.index().to_string(),
            name: c.human_name(),
            description: c.description().to_string(),
        })
        .collect())
}

fn has_video_devices() -> bool {
    std::fs::read_dir("/dev").is_ok_and(|d| {
        d.flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("video"))
    })
}

/// Opens camera `index` (720p at 30 frames a second, or the nearest it offers) as a live
/// source: a missing or busy camera is an error here, naming it.
pub fn open(index: u32) -> Result<LiveSource> {
    LiveSource::start(format!("camera {index}"), FRAME_TIMEOUT, move || {
        let format = RequestedFormat::new::<RgbFormat>(RequestedFormatType::Closest(
            CameraFormat::new_from(1280, 720, FrameFormat::MJPEG, 30),
        ));
        let mut camera = nokhwa::Camera::with_backend(
            CameraIndex::Index(index),
            format,
            ApiBackend::Video4Linux,
        )
        .map_err(|e| format!("cannot open: {e} (see `smoothface camera --list`)"))?;
        camera
            .open_stream()
            .map_err(|e| format!("cannot start streaming (in use by another program?): {e}"))?;
        Ok(move || {
            camera
                .frame()
                .map_err(|e| format!("stopped sending frames: {e}"))
                .and_then(|buffer| to_rgb(&buffer))
        })
    })
}

/// A camera buffer in RGB: MJPEG through the `image` crate's JPEG decoder (the one photos use,
/// rather than nokhwa's mozjpeg, a second C build), raw formats through nokhwa.
fn to_rgb(buffer: &nokhwa::Buffer) -> Result<RgbImage, String> {
    if buffer.source_frame_format() == FrameFormat::MJPEG {
        image::load_from_memory_with_format(buffer.buffer(), image::ImageFormat::Jpeg)
            .map(|i| i.into_rgb8())
            .map_err(|e| format!("a frame that is not valid MJPEG: {e}"))
    } else {
        buffer
            .decode_image::<RgbFormat>()
            .map_err(|e| format!("cannot convert a frame to RGB: {e}"))
    }
}
