//! Frames in time order from any source: a camera, a video file or a folder of images, behind
//! one trait, so the live loop that serves a camera runs (and is tested) on a file as well.

use crate::media;
use anyhow::{anyhow, Context, Result};
use image::RgbImage;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

    /// Frames a live source dropped because its consumer was busy.
    fn dropped(&self) -> usize {
        0
    }
}

/// A live source: a device read at its own pace on a thread of its own, which hands over at
/// most one waiting frame. While the consumer is busy, newer frames are dropped at the
/// hand-over, so the frame it gets is never more than one frame old and it never falls behind;
/// a device that sends nothing for `timeout` is an error naming it, never a hang.
pub struct LiveSource {
    name: String,
    frames: Receiver<Result<RgbImage, String>>,
    /// The first frame, received by `start` to prove the device works.
    pending: Option<RgbImage>,
    dropped: Arc<AtomicUsize>,
    started: Instant,
    timeout: Duration,
}

impl LiveSource {
    /// Starts the capture thread: `open` runs on it (a device handle need not be `Send`) and
    /// returns the function that reads one frame. Waits for the first frame, so a device that
    /// cannot be opened, or sends nothing, is an error here.
    pub fn start<F, G>(name: String, timeout: Duration, open: F) -> Result<LiveSource>
    where
        F: FnOnce() -> Result<G, String> + Send + 'static,
        G: FnMut() -> Result<RgbImage, String>,
    {
        let (tx, rx) = mpsc::sync_channel(1);
        let dropped = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&dropped);
        std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                let mut read = match open() {
                    Ok(read) => read,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                loop {
                    match read() {
                        Ok(image) => match tx.try_send(Ok(image)) {
                            Ok(()) => {}
                            Err(TrySendError::Full(_)) => {
                                counter.fetch_add(1, Ordering::Relaxed);
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
            })
            .map_err(|e| anyhow!("{name}: cannot start its capture thread: {e}"))?;
        let mut source = LiveSource {
            name,
            frames: rx,
            pending: None,
            dropped,
            started: Instant::now(),
            timeout,
        };
        source.pending = Some(source.receive()?);
        source.started = Instant::now();
        Ok(source)
    }

    fn receive(&mut self) -> Result<RgbImage> {
        match self.frames.recv_timeout(self.timeout) {
            Ok(Ok(image)) => Ok(image),
            Ok(Err(e)) => Err(anyhow!("{}: {e}", self.name)),
            Err(RecvTimeoutError::Timeout) => Err(anyhow!(
                "{}: no frame for {} s (unplugged, or in use by another program?)",
                self.name,
                self.timeout.as_secs_f64()
            )),
            Err(RecvTimeoutError::Disconnected) => {
                Err(anyhow!("{}: the capture stopped", self.name))
            }
        }
    }
}

impl FrameSource for LiveSource {
    fn name(&self) -> String {
        self.name.clone()
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

    fn dropped(&self) -> usize {
        self.dropped.load(Ordering::Relaxed)
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
/// the first frame at or after each multiple of the interval. Or picks the first frame at or
/// after each of a list of times ([`Sampler::at_times`]).
#[derive(Debug, Clone)]
pub struct Sampler {
    /// Seconds between frames; infinite for a list of times.
    interval: f64,
    next: f64,
    /// The wanted times after `next`, latest first.
    later: Vec<f64>,
}

impl Sampler {
    /// A sampler taking one frame per `interval` seconds.
    pub fn new(interval: f64) -> Sampler {
        Sampler {
            interval,
            next: f64::NEG_INFINITY,
            later: Vec::new(),
        }
    }

    /// A sampler taking the first frame at or after each of `times` (seconds): the frames an
    /// earlier sampling took, found again by their times. After the last it takes no frame.
    pub fn at_times(times: &[f64]) -> Sampler {
        let mut later: Vec<f64> = times.iter().copied().filter(|t| t.is_finite()).collect();
        later.sort_by(|a, b| b.total_cmp(a));
        later.dedup();
        let next = later.pop().unwrap_or(f64::INFINITY);
        Sampler {
            interval: f64::INFINITY,
            next,
            later,
        }
    }

    /// Seconds at which the next frame is wanted (before the first frame: minus infinity;
    /// after the last of a list of times: infinity).
    pub fn next_wanted(&self) -> f64 {
        self.next
    }

    /// Whether the frame at `time_s` is taken; taking it moves the target to the next multiple
    /// of the interval after it (or the next listed time after it), so a gap in the stream is
    /// followed by one frame, not a burst.
    pub fn take(&mut self, time_s: f64) -> bool {
        // Timestamps are rationals printed as floats: a millisecond of slack keeps a frame that
        // falls on a multiple from being missed by rounding.
        let t = time_s + 1e-3;
        if t < self.next {
            return false;
        }
        self.next = if self.interval.is_finite() {
            ((t / self.interval).floor() + 1.0) * self.interval
        } else {
            std::iter::from_fn(|| self.later.pop())
                .find(|&n| n > t)
                .unwrap_or(f64::INFINITY)
        };
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
    fn a_list_of_times_finds_the_frames_an_interval_sampling_took() {
        // The frames Sampler::new(0.5) took at 25 fps (0, 0.52, 1.0, 1.52) found again from
        // three of their times, given out of order and once twice; nothing after the last.
        let frames: Vec<f64> = (0..100).map(|i| i as f64 * 0.04).collect();
        let mut s = Sampler::at_times(&[1.52, 0.52, 1.0, 0.52]);
        let taken: Vec<f64> = frames.iter().copied().filter(|&t| s.take(t)).collect();
        assert_eq!(taken, vec![0.52, 1.0, 1.52]);
        assert_eq!(s.next_wanted(), f64::INFINITY);
        // A time between frames takes the first frame after it; no times, no frame.
        let mut s = Sampler::at_times(&[0.5]);
        assert_eq!(frames.iter().position(|&t| s.take(t)), Some(13));
        let mut s = Sampler::at_times(&[]);
        assert!(!frames.iter().any(|&t| s.take(t)));
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

    /// Reads one frame of a test device.
    type ReadFrame = Box<dyn FnMut() -> Result<RgbImage, String>>;

    /// A device whose frame `n` is a 1x1 picture of shade `n % 256`, made every millisecond,
    /// that stops with an error after `frames`, or (`stall`) stops sending without one.
    fn device(frames: usize, stall: bool) -> impl FnOnce() -> Result<ReadFrame, String> {
        move || {
            let mut n = 0usize;
            Ok(Box::new(move || {
                if n == frames {
                    if stall {
                        std::thread::sleep(Duration::from_secs(3600));
                    }
                    return Err("unplugged".into());
                }
                std::thread::sleep(Duration::from_millis(1));
                n += 1;
                Ok(RgbImage::from_pixel(
                    1,
                    1,
                    image::Rgb([(n % 256) as u8, 0, 0]),
                ))
            })
                as Box<dyn FnMut() -> Result<RgbImage, String>>)
        }
    }

    #[test]
    fn a_slow_consumer_of_a_live_source_gets_recent_frames_and_the_rest_are_dropped() {
        let mut src = LiveSource::start(
            "camera 7".into(),
            Duration::from_secs(5),
            device(200, false),
        )
        .unwrap();
        let mut shades = Vec::new();
        let error = loop {
            match src.next_frame() {
                Ok(Some(f)) => {
                    shades.push(f.image.get_pixel(0, 0)[0]);
                    // Ten times slower than the device.
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(None) => unreachable!("a live source does not end"),
                Err(e) => break e.to_string(),
            }
        };
        // Far fewer frames than made, in order, the rest dropped and counted.
        assert!(shades.len() < 100, "{} frames taken", shades.len());
        assert!(shades.windows(2).all(|w| w[0] < w[1]), "{shades:?}");
        assert_eq!(src.dropped() + shades.len(), 200, "{shades:?}");
        assert_eq!(error, "camera 7: unplugged");
    }

    #[test]
    fn a_live_source_that_stalls_or_cannot_open_is_an_error_naming_it() {
        let mut src = LiveSource::start(
            "camera 3".into(),
            Duration::from_millis(300),
            device(2, true),
        )
        .unwrap();
        assert!(src.next_frame().is_ok());
        let started = Instant::now();
        let e = loop {
            if let Err(e) = src.next_frame() {
                break e.to_string();
            }
        };
        assert!(e.starts_with("camera 3: no frame for 0.3 s"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let refused = LiveSource::start("camera 9".into(), Duration::from_secs(1), || {
            Err::<fn() -> Result<RgbImage, String>, _>("cannot open: busy".to_string())
        });
        assert_eq!(
            refused.err().unwrap().to_string(),
            "camera 9: cannot open: busy"
        );
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
