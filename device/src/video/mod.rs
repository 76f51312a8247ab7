//! Videos in the gallery: a file's sampled frames (decoded by [`decode`]) analysed in parallel,
//! their faces linked into tracks ([`crate::tracks`]), one face per track.

pub mod decode;

use crate::frames::Sampling;
use crate::pipeline::{EmbeddedFace, Pipeline};
use crate::tracks::{Track, Tracker, TrackerConfig};
use decode::{VideoError, VideoFile, VideoInfo};
use rayon::prelude::*;
use std::path::Path;

/// A video's face tracks, largest best face first, and what decoding it took.
#[derive(Debug)]
pub struct VideoFaces {
    /// The container's facts and the decoder's counts.
    pub info: VideoInfo,
    /// Its face tracks.
    pub tracks: Vec<Track>,
}

/// Sampled frames decoded ahead of the analysis: enough to keep every core busy.
const FRAMES_AHEAD: usize = 8;

/// Decodes a video's sampled frames on one thread while the others detect and embed their
/// faces, then links the faces into tracks.
pub fn analyse(
    pipeline: &Pipeline,
    path: &Path,
    sampling: Sampling,
    tracker: TrackerConfig,
) -> Result<VideoFaces, VideoError> {
    let mut video = VideoFile::open(path, sampling, pipeline.max_pixels)?;
    let (tx, rx) = std::sync::mpsc::sync_channel(FRAMES_AHEAD);
    let (decoded, analysed) = std::thread::scope(|scope| {
        let decoder = scope.spawn(move || -> Result<VideoInfo, VideoError> {
            let mut n = 0usize;
            while let Some(frame) = video.next_sample()? {
                if tx.send((n, frame)).is_err() {
                    break; // the analysis failed and hung up
                }
                n += 1;
            }
            Ok(video.info().clone())
        });
        let analysed: Result<Vec<(usize, f64, Vec<EmbeddedFace>)>, String> = rx
            .into_iter()
            .par_bridge()
            .map(|(n, frame)| {
                let faces = pipeline
                    .analyze(&frame.image)
                    .map_err(|e| format!("analysing the frame at {:.1} s: {e:#}", frame.time_s))?;
                Ok((n, frame.time_s, faces))
            })
            .collect();
        let decoded = decoder.join().expect("the decoding thread does not panic");
        (decoded, analysed)
    });
    let info = decoded?;
    let mut frames = analysed.map_err(|cause| VideoError {
        path: path.to_path_buf(),
        cause,
    })?;
    frames.sort_by_key(|f| f.0);
    let mut tracker = Tracker::new(tracker);
    for (_, time_s, faces) in frames {
        tracker.update(time_s, faces);
    }
    let mut tracks = tracker.finish();
    tracks.sort_by(|a, b| b.best.area().total_cmp(&a.best.area()));
    Ok(VideoFaces { info, tracks })
}
