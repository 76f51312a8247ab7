//! Cameras through V4L2 (`nokhwa`): the list of cameras, and a camera as a live
//! [`FrameSource`].
//!
//! A capture thread reads the camera at its own pace and hands over at most one waiting frame:
//! when the analysis is slower than the camera, newer frames are dropped at the hand-over, so the
//! frame analysed is never more than one frame old. A camera that sends nothing for
//! [`FRAME_TIMEOUT`] is an error naming it, never a hang.

use crate::frames::{Frame, FrameSource};
use anyhow::{anyhow, Result};
use image::RgbImage;
use nokhwa::pixel_format::RgbFormat;
use nokhwa::utils::{
    ApiBackend, CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType,
};
use serde::Serialize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// A camera, streaming.
pub struct Camera {
    index: u32,
    frames: Receiver<Result<RgbImage, String>>,
    /// The first frame, received by `open` to prove the camera works.
    pending: Option<RgbImage>,
    dropped: Arc<AtomicUsize>,
    started: Instant,
}

impl Camera {
    /// Opens camera `index` (720p at 30 frames a second, or the nearest it offers) and waits
    /// for its first frame: a missing or busy camera is an error here, naming it.
    pub fn open(index: u32) -> Result<Camera> {
        let (tx, rx) = mpsc::sync_channel(1);
        let dropped = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&dropped);
        std::thread::Builder::new()
            .name(format!("camera {index}"))
            .spawn(move || capture(index, tx, counter))
            .map_err(|e| anyhow!("camera {index}: cannot start its capture thread: {e}"))?;
        let mut camera = Camera {
            index,
            frames: rx,
            pending: None,
            dropped,
            started: Instant::now(),
        };
        camera.pending = Some(camera.receive()?);
        camera.started = Instant::now();
        Ok(camera)
    }

    /// Frames the analysis was too slow for, dropped so far.
    pub fn dropped(&self) -> usize {
        self.dropped.load(Ordering::Relaxed)
    }

    fn receive(&mut self) -> Result<RgbImage> {
        match self.frames.recv_timeout(FRAME_TIMEOUT) {
            Ok(Ok(image)) => Ok(image),
            Ok(Err(e)) => Err(anyhow!("camera {}: {e}", self.index)),
            Err(RecvTimeoutError::Timeout) => Err(anyhow!(
                "camera {}: no frame for {} s (unplugged, or in use by another program?)",
                self.index,
                FRAME_TIMEOUT.as_secs()
            )),
            Err(RecvTimeoutError::Disconnected) => {
                Err(anyhow!("camera {}: the capture stopped", self.index))
            }
        }
    }
}

impl FrameSource for Camera {
    fn name(&self) -> String {
        format!("camera {}", self.index)
    }

    fn next_frame(&mut self) -> Result<Option<Frame>> {
        let image = match self.pending.take() {
            Some(first) => first,
            None => self.receive()?,
        };
        Ok(Some(Frame {
            time_s: self.started.elapsed().as_secs_f64(),
            image,
        }))
    }

    fn is_live(&self) -> bool {
        true
    }
}

/// The capture thread: frames into `tx`, the newest dropped while one is still waiting; an
/// error ends it after being sent.
fn capture(index: u32, tx: SyncSender<Result<RgbImage, String>>, dropped: Arc<AtomicUsize>) {
    let format = RequestedFormat::new::<RgbFormat>(RequestedFormatType::Closest(
        CameraFormat::new_from(1280, 720, FrameFormat::MJPEG, 30),
    ));
    let opened =
        nokhwa::Camera::with_backend(CameraIndex::Index(index), format, ApiBackend::Video4Linux)
            .map_err(|e| format!("cannot open: {e} (see `smoothface camera --list`)"))
            .and_then(|mut c| {
                c.open_stream().map_err(|e| {
                    format!("cannot start streaming (in use by another program?): {e}")
                })?;
                Ok(c)
            });
    let mut camera = match opened {
        Ok(c) => c,
        Err(e) => {
            let _ = tx.send(Err(e));
            return;
        }
    };
    loop {
        let frame = camera
            .frame()
            .map_err(|e| format!("stopped sending frames: {e}"))
            .and_then(|buffer| to_rgb(&buffer));
        match frame {
            Ok(image) => match tx.try_send(Ok(image)) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
                Err(TrySendError::Disconnected(_)) => break,
            },
            Err(e) => {
                // Waits for room, so the cause is seen; then the capture ends.
                let _ = tx.send(Err(e));
                break;
            }
        }
    }
    let _ = camera.stop_stream();
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
