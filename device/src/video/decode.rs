//! Decoding videos with FFmpeg (through `ffmpeg-next`): the sampled frames of a file, upright
//! and in RGB, read as a stream.
//!
//! Decoding must not dominate the analysis, so only what is sampled is paid for in full: every
//! frame is decoded (a frame depends on earlier ones) but only sampled frames are converted to
//! RGB; frames no other frame refers to are dropped by the decoder while the next sample is
//! still a few frames away; and when it is seconds away, the file is seeked to the keyframe
//! before it, when that moves forward.

use crate::frames::{Frame, FrameSource, Sampler, Sampling};
use ffmpeg::format::Pixel;
use ffmpeg::software::scaling;
use ffmpeg_next as ffmpeg;
use image::RgbImage;
use std::path::{Path, PathBuf};
use std::sync::Once;

/// Why a video could not be read, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("{}: {cause}", path.display())]
pub struct VideoError {
    /// The file.
    pub path: PathBuf,
    /// The cause.
    pub cause: String,
}

impl VideoError {
    fn new(path: &Path, cause: impl Into<String>) -> VideoError {
        VideoError {
            path: path.to_path_buf(),
            cause: cause.into(),
        }
    }
}

/// What the container says of a video and what decoding it cost.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VideoInfo {
    /// Length in seconds, when the container declares one.
    pub duration_s: Option<f64>,
    /// Coded width and height.
    pub width: u32,
    /// Coded height.
    pub height: u32,
    /// The codec's name.
    pub codec: String,
    /// Clockwise rotation applied to every frame (a phone's portrait video), in degrees.
    pub rotation: u32,
    /// Frames decoded so far (sampled or not).
    pub decoded: usize,
    /// Frames sampled so far.
    pub sampled: usize,
    /// Seeks made to skip ahead.
    pub seeks: usize,
}

/// A video that is sampled further than this many seconds ahead is seeked rather than decoded
/// through: beyond a typical phone's keyframe interval (1 to 2 s).
const SEEK_AHEAD_S: f64 = 4.0;
/// While the next sample is further than this many frames ahead, the decoder skips frames that
/// no other frame needs.
const SKIP_AHEAD_FRAMES: f64 = 3.0;
/// A video whose frames stop this far before its declared end (and before 90% of it) is
/// truncated.
const TRUNCATION_SLACK_S: f64 = 2.0;

/// The sampled frames of one video file.
pub struct VideoFile {
    path: PathBuf,
    input: ffmpeg::format::context::Input,
    stream_index: usize,
    time_base: f64,
    start_pts: i64,
    frame_duration_s: f64,
    decoder: ffmpeg::decoder::Video,
    scaler: Option<Scaler>,
    sampler: Sampler,
    max_pixels: u64,
    info: VideoInfo,
    last_time_s: f64,
    input_done: bool,
    seek_helps: bool,
    skipping: bool,
    frame: ffmpeg::frame::Video,
}

/// The RGB converter for one input format and size.
struct Scaler {
    context: scaling::Context,
    key: (Pixel, u32, u32),
}

// SAFETY: an `SwsContext` is plain heap state with no thread affinity; a `VideoFile` (and with it
// its scaler) is used by one thread at a time, which `Send` allows and `Sync` would not.
unsafe impl Send for Scaler {}

fn init_ffmpeg() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // Registers the error messages, among others; with libraries linked, it cannot fail.
        let _ = ffmpeg::init();
        // Our errors name the file and the cause; FFmpeg's own log lines would interleave with
        // progress bars and JSON.
        ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Quiet);
    });
}

impl VideoFile {
    /// Opens a video and its best video stream. `max_pixels` refuses absurd frame sizes before
    /// any frame is decoded.
    pub fn open(path: &Path, sampling: Sampling, max_pixels: u64) -> Result<VideoFile, VideoError> {
        VideoFile::open_sampled(path, max_pixels, |duration_s| {
            Sampler::new(sampling.interval(duration_s))
        })
    }

    /// Opens a video to read the frames at `times` (seconds) again: each the first frame at or
    /// after its time, as a sampling found them ([`Sampler::at_times`]).
    pub fn open_at_times(
        path: &Path,
        times: &[f64],
        max_pixels: u64,
    ) -> Result<VideoFile, VideoError> {
        VideoFile::open_sampled(path, max_pixels, |_| Sampler::at_times(times))
    }

    /// Opens a video whose frames are picked by the sampler `sampler` makes for its duration.
    fn open_sampled(
        path: &Path,
        max_pixels: u64,
        sampler: impl FnOnce(Option<f64>) -> Sampler,
    ) -> Result<VideoFile, VideoError> {
        init_ffmpeg();
        let input = ffmpeg::format::input(&path).map_err(|e| {
            VideoError::new(
                path,
                format!("cannot open as a video: {e} (truncated, damaged, or not a video)"),
            )
        })?;
        let stream = input
            .streams()
            .best(ffmpeg::media::Type::Video)
            .ok_or_else(|| VideoError::new(path, "no video stream"))?;
        let stream_index = stream.index();
        let tb = stream.time_base();
        let time_base = f64::from(tb.numerator()) / f64::from(tb.denominator().max(1));
        let start_pts = match stream.start_time() {
            ffmpeg::ffi::AV_NOPTS_VALUE => 0,
            t => t,
        };
        let rate = stream.avg_frame_rate();
        let fps = f64::from(rate.numerator()) / f64::from(rate.denominator().max(1));
        let frame_duration_s = if fps > 0.0 { 1.0 / fps } else { 1.0 / 30.0 };
        let duration_s = if input.duration() > 0 {
            Some(input.duration() as f64 / f64::from(ffmpeg::ffi::AV_TIME_BASE))
        } else if stream.duration() > 0 {
            Some(stream.duration() as f64 * time_base)
        } else {
            None
        };
        let rotation = stream
            .side_data()
            .find(|d| d.kind() == ffmpeg::codec::packet::side_data::Type::DisplayMatrix)
            .map_or(0, |d| clockwise_rotation(d.data()));
        let mut context = ffmpeg::codec::context::Context::from_parameters(stream.parameters())
            .map_err(|e| VideoError::new(path, format!("cannot read the video stream ({e})")))?;
        // Frame threads, as many as FFmpeg sees cores (count 0).
        context.set_threading(ffmpeg::threading::Config {
            kind: ffmpeg::threading::Type::Frame,
            ..ffmpeg::threading::Config::default()
        });
        let codec = context.id();
        let decoder = context.decoder().video().map_err(|e| {
            VideoError::new(path, format!("unsupported codec {} ({e})", codec.name()))
        })?;
        let (width, height) = (decoder.width(), decoder.height());
        if width == 0 || height == 0 {
            return Err(VideoError::new(
                path,
                format!("{width}x{height} frames: no picture"),
            ));
        }
        if u64::from(width) * u64::from(height) > max_pixels {
            return Err(VideoError::new(
                path,
                format!(
                    "{width}x{height} frames are over the limit of {:.1} megapixels (raise --max-pixels to accept them)",
                    max_pixels as f64 / 1e6
                ),
            ));
        }
        let sampler = sampler(duration_s);
        Ok(VideoFile {
            path: path.to_path_buf(),
            input,
            stream_index,
            time_base,
            start_pts,
            frame_duration_s,
            decoder,
            scaler: None,
            sampler,
            max_pixels,
            info: VideoInfo {
                duration_s,
                width,
                height,
                codec: codec.name().to_string(),
                rotation,
                ..VideoInfo::default()
            },
            last_time_s: f64::NEG_INFINITY,
            input_done: false,
            seek_helps: true,
            skipping: false,
            frame: ffmpeg::frame::Video::empty(),
        })
    }

    /// What the container declared and what decoding has cost so far.
    pub fn info(&self) -> &VideoInfo {
        &self.info
    }

    fn error(&self, cause: impl Into<String>) -> VideoError {
        VideoError::new(&self.path, cause)
    }

    /// The next sampled frame, or `None` at the end of the stream.
    pub fn next_sample(&mut self) -> Result<Option<Frame>, VideoError> {
        loop {
            match self.decoder.receive_frame(&mut self.frame) {
                Ok(()) => {
                    self.info.decoded += 1;
                    let time_s = match self.frame.timestamp() {
                        Some(ts) => (ts - self.start_pts) as f64 * self.time_base,
                        None => self.info.decoded as f64 * self.frame_duration_s,
                    };
                    if time_s < self.last_time_s && self.info.seeks > 0 {
                        // A seek landed before where decoding already was: seeking does not
                        // help this file (keyframes too sparse); decode straight through.
                        self.seek_helps = false;
                    }
                    self.last_time_s = self.last_time_s.max(time_s);
                    if self.sampler.take(time_s) {
                        self.info.sampled += 1;
                        let image = self.current_rgb()?;
                        return Ok(Some(Frame { time_s, image }));
                    }
                }
                Err(ffmpeg::Error::Eof) => return self.finish(),
                Err(ffmpeg::Error::Other {
                    errno: ffmpeg::error::EAGAIN,
                }) => self.feed(),
                // A damaged frame: the decoder conceals what it can and goes on.
                Err(_) => {}
            }
        }
    }

    /// Sends the decoder the next packet of the stream (or the end of it), skipping ahead first
    /// when the next sample is far away.
    fn feed(&mut self) {
        if self.input_done {
            // Drained already; the decoder answers Eof from here on.
            let _ = self.decoder.send_eof();
            return;
        }
        let ahead = self.sampler.next_wanted() - self.last_time_s;
        // No seek once nothing more is wanted (an infinite target): the reader stops reading.
        if self.seek_helps
            && ahead > SEEK_AHEAD_S
            && self.last_time_s.is_finite()
            && ahead.is_finite()
        {
            let target = self.sampler.next_wanted();
            let ts = (target * f64::from(ffmpeg::ffi::AV_TIME_BASE)) as i64;
            if self.input.seek(ts, ..ts).is_ok() {
                self.decoder.flush();
                self.info.seeks += 1;
            }
        }
        let skip = ahead > SKIP_AHEAD_FRAMES * self.frame_duration_s;
        if skip != self.skipping {
            self.skipping = skip;
            self.decoder.skip_frame(if skip {
                ffmpeg::Discard::NonReference
            } else {
                ffmpeg::Discard::Default
            });
        }
        let mut packet = ffmpeg::Packet::empty();
        loop {
            match packet.read(&mut self.input) {
                Ok(()) if packet.stream() == self.stream_index => {
                    // A corrupt packet is the decoder's to conceal; only the end stops us.
                    let _ = self.decoder.send_packet(&packet);
                    return;
                }
                Ok(()) => {}
                // The end, or data that cannot be read any further (a truncated file): what
                // was decoded is checked against the declared length in `finish`.
                Err(_) => {
                    self.input_done = true;
                    let _ = self.decoder.send_eof();
                    return;
                }
            }
        }
    }

    /// The end of the stream: an error if nothing could be decoded, or if the frames stop well
    /// before the length the container declares.
    fn finish(&mut self) -> Result<Option<Frame>, VideoError> {
        if self.info.decoded == 0 {
            return Err(self.error("no frame could be decoded (an empty or damaged video stream)"));
        }
        if let Some(d) = self.info.duration_s {
            let last = self.last_time_s + self.frame_duration_s;
            if last < d - TRUNCATION_SLACK_S && last < 0.9 * d {
                return Err(self.error(format!(
                    "truncated: frames stop at {last:.1} s of the {d:.1} s the file declares"
                )));
            }
        }
        Ok(None)
    }

    /// The current frame in RGB, rotated upright.
    fn current_rgb(&mut self) -> Result<RgbImage, VideoError> {
        let (format, w, h) = (self.frame.format(), self.frame.width(), self.frame.height());
        if u64::from(w) * u64::from(h) > self.max_pixels || w == 0 || h == 0 {
            return Err(self.error(format!("a {w}x{h} frame: outside the accepted sizes")));
        }
        let key = (format, w, h);
        if self.scaler.as_ref().is_none_or(|s| s.key != key) {
            let context =
                scaling::Context::get(format, w, h, Pixel::RGB24, w, h, scaling::Flags::BILINEAR)
                    .map_err(|e| {
                    self.error(format!("cannot convert {format:?} frames to RGB ({e})"))
                })?;
            self.scaler = Some(Scaler { context, key });
        }
        let scaler = self.scaler.as_mut().expect("set above");
        let mut rgb = ffmpeg::frame::Video::empty();
        scaler
            .context
            .run(&self.frame, &mut rgb)
            .map_err(|e| VideoError::new(&self.path, format!("cannot convert a frame ({e})")))?;
        let stride = rgb.stride(0);
        let data = rgb.data(0);
        let row = w as usize * 3;
        let mut pixels = Vec::with_capacity(row * h as usize);
        for y in 0..h as usize {
            pixels.extend_from_slice(&data[y * stride..y * stride + row]);
        }
        let image = RgbImage::from_raw(w, h, pixels).expect("w x h x 3 bytes");
        Ok(match self.info.rotation {
            90 => image::imageops::rotate90(&image),
            180 => image::imageops::rotate180(&image),
            270 => image::imageops::rotate270(&image),
            _ => image,
        })
    }
}

impl FrameSource for VideoFile {
    fn name(&self) -> String {
        self.path.display().to_string()
    }

    fn next_frame(&mut self) -> anyhow::Result<Option<Frame>> {
        Ok(self.next_sample()?)
    }
}

/// The clockwise rotation, to a multiple of 90 degrees, that shows a frame upright, from a
/// stream's display matrix (nine native-endian 16.16 fixed-point numbers, row-major). It is
/// FFmpeg's `av_display_rotation_get` (which answers counter-clockwise) in safe code.
fn clockwise_rotation(matrix: &[u8]) -> u32 {
    let m: Vec<f64> = matrix
        .chunks_exact(4)
        .take(9)
        .map(|b| f64::from(i32::from_ne_bytes([b[0], b[1], b[2], b[3]])))
        .collect();
    if m.len() < 9 {
        return 0;
    }
    let (scale0, scale1) = (m[0].hypot(m[3]), m[1].hypot(m[4]));
    if scale0 == 0.0 || scale1 == 0.0 {
        return 0;
    }
    let counter_clockwise = -(m[1] / scale1).atan2(m[0] / scale0).to_degrees();
    let clockwise = (-counter_clockwise).rem_euclid(360.0);
    ((clockwise / 90.0).round() as u32 % 4) * 90
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(a: i32, b: i32, c: i32, d: i32) -> Vec<u8> {
        [a, b, 0, c, d, 0, 0, 0, 1 << 30]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect()
    }

    #[test]
    fn display_matrices_give_the_rotation_that_shows_frames_upright() {
        let one = 1 << 16;
        assert_eq!(clockwise_rotation(&matrix(one, 0, 0, one)), 0);
        // A phone held upright records landscape frames with this matrix (FFmpeg: "rotation of
        // -90.00 degrees"), shown by turning them 90 degrees clockwise.
        assert_eq!(clockwise_rotation(&matrix(0, one, -one, 0)), 90);
        assert_eq!(clockwise_rotation(&matrix(-one, 0, 0, -one)), 180);
        assert_eq!(clockwise_rotation(&matrix(0, -one, one, 0)), 270);
        assert_eq!(clockwise_rotation(&[1, 2, 3]), 0);
    }
}
