//! Frames in time order from any source: a camera, a video file or a folder of images, behind
//! one trait, so the live loop that serves a camera runs (and is tested) on a file as well.

use crate::media;
use anyhow::{Context, Result};
use image::RgbImage;
use std::path::{Path, PathBuf};

/// One picture of a source, at its time.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Seconds from the start of the source (a camera: from the first frame).
    pub time_s: f64,
    /// The picture, upright.
    pub image: RgbImage,
}

/// Where frames come from.
pub trait FrameSource: Send {
    /// What the source is, for messages: a device or a path.
    fn name(&self) -> String;

    /// The next frame, or `None` at the end. Errors name the source and the cause.
    fn next_frame(&mut self) -> Result<Option<Frame>>;

    /// True for a source that produces frames at its own pace (a camera): a consumer that falls
    /// behind must drop frames rather than queue them.
    fn is_live(&self) -> bool {
        false
    }
}

/// Which frames of a recording are analysed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// Frames per second of recording analysed.
    pub fps: f64,
    /// Recordings longer than this many seconds are sampled more sparsely, so that they cost no
    /// more frames than a recording of this length.
    pub max_duration_s: f64,
}

impl Sampling {
    /// Two frames per second, and recordings over three hours sampled as sparsely as it takes.
    pub const DEFAULT: Sampling = Sampling {
        fps: 2.0,
        max_duration_s: 3.0 * 3600.0,
    };

    /// Seconds between analysed frames of a recording of `duration_s` (unknown: the base rate).
    pub fn interval(&self, duration_s: Option<f64>) -> f64 {
        let base = 1.0 / self.fps;
        match duration_s {
            Some(d) if d > self.max_duration_s => base * d / self.max_duration_s,
            _ => base,
        }
    }
}

/// Picks frames at a fixed interval from a stream of timestamps: the first frame always, then
/// the first frame at or after each multiple of the interval.
#[derive(Debug, Clone)]
pub struct Sampler {
    interval: f64,
    next: f64,
}

impl Sampler {
    /// A sampler taking one frame per `interval` seconds.
    pub fn new(interval: f64) -> Sampler {
        Sampler {
            interval,
            next: f64::NEG_INFINITY,
        }
    }

    /// Seconds at which the next frame is wanted (before the first frame: minus infinity).
    pub fn next_wanted(&self) -> f64 {
        self.next
    }

    /// Whether the frame at `time_s` is taken; taking it moves the target to the next multiple
    /// of the interval after it, so a gap in the stream is followed by one frame, not a burst.
    pub fn take(&mut self, time_s: f64) -> bool {
        // Timestamps are rationals printed as floats: a millisecond of slack keeps a frame that
        // falls on a multiple from being missed by rounding.
        let t = time_s + 1e-3;
        if t < self.next {
            return false;
        }
        self.next = ((t / self.interval).floor() + 1.0) * self.interval;
        true
    }
}

/// The images of a folder in name order, as frames `1 / fps` seconds apart: a slide show.
pub struct ImageFolder {
    folder: PathBuf,
    paths: Vec<PathBuf>,
    next: usize,
    fps: f64,
    max_pixels: u64,
}

impl ImageFolder {
    /// Lists the images of a folder (not its subfolders); hidden files are left out.
    pub fn open(folder: &Path, fps: f64, max_pixels: u64) -> Result<ImageFolder> {
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(folder)
            .with_context(|| format!("{}: cannot list the folder", folder.display()))?
        {
            let entry =
                entry.with_context(|| format!("{}: cannot list the folder", folder.display()))?;
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            if !hidden && entry.path().is_file() {
                paths.push(entry.path());
            }
        }
        paths.sort();
        Ok(ImageFolder {
            folder: folder.to_path_buf(),
            paths,
            next: 0,
            fps,
            max_pixels,
        })
    }
}

impl FrameSource for ImageFolder {
    fn name(&self) -> String {
        self.folder.display().to_string()
    }

    fn next_frame(&mut self) -> Result<Option<Frame>> {
        let Some(path) = self.paths.get(self.next) else {
            return Ok(None);
        };
        let time_s = self.next as f64 / self.fps;
        self.next += 1;
        let image = media::load_rgb(path, self.max_pixels)?;
        Ok(Some(Frame { time_s, image }))
    }
}

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
    Ok(Box::new(crate::camera::Camera::open(device)?))
}

#[cfg(not(all(feature = "camera", target_os = "linux")))]
fn open_camera(device: u32) -> Result<Box<dyn FrameSource>> {
    anyhow::bail!(
        "camera {device}: this smoothface was built without camera support (the `camera` feature, Linux only); give --source FILE"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sampler_takes_the_first_frame_and_one_per_interval() {
        // 25 fps for 2 s, sampled at 2 per second: frames at 0, 0.52 (the first at or after 0.5),
        // 1.0 and 1.52; the target after a frame is the next multiple of the interval.
        let mut s = Sampler::new(0.5);
        let taken: Vec<usize> = (0..50).filter(|&i| s.take(i as f64 * 0.04)).collect();
        assert_eq!(taken, vec![0, 13, 25, 38]);

        // A stream starting late still gives its first frame; a gap gives one frame, not a burst.
        let mut s = Sampler::new(1.0);
        let times = [0.3, 0.9, 1.0, 1.1, 5.2, 5.3, 6.0];
        let taken: Vec<f64> = times.into_iter().filter(|&t| s.take(t)).collect();
        assert_eq!(taken, vec![0.3, 1.0, 5.2, 6.0]);
    }

    #[test]
    fn long_recordings_are_sampled_more_sparsely() {
        let s = Sampling {
            fps: 2.0,
            max_duration_s: 100.0,
        };
        assert_eq!(s.interval(Some(50.0)), 0.5);
        assert_eq!(s.interval(None), 0.5);
        // Twice the limit: half the rate, so the same number of frames as the limit's.
        assert_eq!(s.interval(Some(200.0)), 1.0);
    }

    #[test]
    fn a_folder_is_a_slide_show_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        for (name, shade) in [("b.png", 20u8), ("a.png", 10), (".hidden.png", 0)] {
            image::RgbImage::from_pixel(4, 3, image::Rgb([shade, 0, 0]))
                .save(dir.path().join(name))
                .unwrap();
        }
        let mut src = ImageFolder::open(dir.path(), 4.0, 1000).unwrap();
        let a = src.next_frame().unwrap().unwrap();
        let b = src.next_frame().unwrap().unwrap();
        assert_eq!((a.time_s, a.image.get_pixel(0, 0)[0]), (0.0, 10));
        assert_eq!((b.time_s, b.image.get_pixel(0, 0)[0]), (0.25, 20));
        assert!(src.next_frame().unwrap().is_none());
    }
}
