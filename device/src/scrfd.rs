//! SCRFD face detection in tract: one network over the whole image (insightface's SCRFD with
//! five keypoints), faces read off three feature maps of strides 8, 16 and 32.
//!
//! The decoding follows insightface's `scrfd.py`, the code the weights were published with: two
//! anchors at each place of a stride's grid, centred on the place's corner (`x * stride`,
//! `y * stride`); box and keypoints are distances from that centre in units of the stride;
//! anchors scoring below the threshold are dropped, then overlapping boxes (NMS). The network
//! takes RGB, `(pixel - 127.5) / 128`, channels first, both sides multiples of 32 (its coarsest
//! stride). Larger images are detected on a reduced copy as MTCNN's are
//! ([`ScrfdConfig::max_side`]), and copies larger than [`COARSE_SIDE`] also on coarser ones, for
//! the faces too large for the network ([`Scrfd::detect_at_side`]).
//!
//! Faces come back in [`Face`]'s conventions, MTCNN's, so the same ArcFace alignment applies:
//! SCRFD's keypoints are already in MTCNN's order (left eye, right eye, nose, left and right mouth
//! corner, as the viewer sees them) and in 0-based pixel positions (insightface aligns with them
//! as they are); its boxes are 0-based pixel positions too, which MTCNN's 1-based corners put one
//! higher.

use crate::mtcnn::{Face, DEFAULT_MAX_SIDE};
use crate::onnx::{self, PlanCache};
use anyhow::{bail, Context, Result};
use fast_image_resize::FilterType;
use image::RgbImage;
use serde::Serialize;
use smoothface_shared::manifest::{ModelKind, VerifiedModel};
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tract_onnx::prelude::*;

/// Detection settings.
#[derive(Debug, Clone, Copy)]
pub struct ScrfdConfig {
    /// Faces whose box is smaller than this on its longer side, in the image's pixels, are
    /// dropped. SCRFD looks for every size its strides cover at once (no pyramid to start at a
    /// size, unlike MTCNN), so this is a filter: a face this small gives a poor embedding.
    pub min_face: f32,
    /// Smallest face score kept (the network's sigmoid; insightface's default 0.5).
    pub score_threshold: f32,
    /// Overlap (intersection over union) above which the lower-scoring of two boxes is dropped
    /// (insightface's default 0.4).
    pub nms_iou: f32,
    /// Longest side of the copy a larger image is detected on (`None`: every image at its own
    /// size); it is rounded down to a multiple of 32, the network's coarsest stride, and is at
    /// least 32. Faces come back in the image's own pixels.
    pub max_side: Option<u32>,
}

impl Default for ScrfdConfig {
    fn default() -> Self {
        ScrfdConfig {
            min_face: 20.0,
            score_threshold: 0.5,
            nms_iou: 0.4,
            max_side: Some(DEFAULT_MAX_SIDE),
        }
    }
}

/// Milliseconds one detection spent in each of its parts.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StageTimes {
    /// Reducing an image larger than [`ScrfdConfig::max_side`] to the copy detected on.
    pub reduce: f64,
    /// Normalising the copy into the network's padded input.
    pub pack: f64,
    /// The network.
    pub network: f64,
    /// Building the plan for an input shape not seen before.
    pub plans: f64,
    /// The rest: reading the faces off the outputs, suppression, mapping back.
    pub rest: f64,
}

impl StageTimes {
    /// Every part's name (as the benchmark's table heads it) and time, the rest last.
    pub fn named(&self) -> [(&'static str, f64); 5] {
        [
            ("reduce", self.reduce),
            ("pack", self.pack),
            ("network", self.network),
            ("plans", self.plans),
            ("rest", self.rest),
        ]
    }

    fn each_mut(&mut self) -> [&mut f64; 5] {
        [
            &mut self.reduce,
            &mut self.pack,
            &mut self.network,
            &mut self.plans,
            &mut self.rest,
        ]
    }

    /// Adds another detection's times.
    pub fn add(&mut self, other: &StageTimes) {
        let mut other = *other;
        for (t, o) in self.each_mut().into_iter().zip(other.each_mut()) {
            *t += *o;
        }
    }

    /// Every part's time times `factor` (a sum over photos into a mean).
    pub fn scale(&mut self, factor: f64) {
        for t in self.each_mut() {
            *t *= factor;
        }
    }
}

/// The network's strides, finest first: its outputs come in this order for scores, then boxes,
/// then keypoints.
const STRIDES: [usize; 3] = [8, 16, 32];

/// Anchors at each place of a stride's grid (insightface's SCRFD models with keypoints have 2).
const ANCHORS: usize = 2;

/// Values per anchor in the score, box and keypoint outputs.
const PER_ANCHOR: [usize; 3] = [1, 4, 10];

/// Most plans kept, one per input shape. Photos larger than the side get one shape per aspect
/// ratio (the short side in steps of 32), smaller ones one per size in steps of 32: a library of
/// a few cameras needs a handful; the cap keeps one of odd sizes from growing memory.
const MAX_PLANS: usize = 64;

/// Longest side of the coarsest copy: a face as large as such a copy is within the network's
/// reach (up to about 300 pixels wide), so no coarser one is needed.
pub const COARSE_SIDE: u32 = 256;

/// How much smaller each coarser copy is (on each side): a face found at 40 pixels in a coarser
/// copy is 160 in the finer one, which finds faces from about 10 pixels to 300.
const LEVEL_RATIO: u32 = 4;

/// The width, in a finer copy's pixels, from which a coarser copy's faces are kept: faces the
/// finer copy finds reliably (up to about 230 pixels) overlap them, and suppression keeps the
/// better-scoring one of each.
const LARGE_FACE: f32 = 160.0;

/// A padded pixel's value: black normalised, as insightface pads with zeros before normalising.
const PAD: f32 = -127.5 / 128.0;

/// The SCRFD network and the plans built so far.
pub struct Scrfd {
    config: ScrfdConfig,
    net: PlanCache,
    onnx_path: PathBuf,
}

impl Scrfd {
    /// The settings it detects with.
    pub fn config(&self) -> &ScrfdConfig {
        &self.config
    }

    /// The ONNX file it runs (the benchmark hands it to onnxruntime).
    pub fn onnx_path(&self) -> &Path {
        &self.onnx_path
    }

    /// Loads the network of a verified SCRFD model folder (its manifest's first file) and checks
    /// that it answers a blank image with SCRFD's nine outputs, so that a wrong or damaged file
    /// is refused here with its name rather than misread on the first photo.
    pub fn load(model: &VerifiedModel, config: ScrfdConfig) -> Result<Scrfd> {
        if model.manifest.kind != ModelKind::ScrfdDetector {
            bail!(
                "{}: is not an SCRFD detector (kind {:?})",
                model.dir.display(),
                model.manifest.kind
            );
        }
        let path = model
            .manifest
            .files
            .first()
            .and_then(|f| model.file(&f.file))
            .with_context(|| format!("{}: manifest lists no model file", model.dir.display()))?;
        let net = PlanCache::new(onnx::load_graph(&path)?, MAX_PLANS);
        let side = STRIDES[2];
        let blank = Tensor::zero::<f32>(&[1, 3, side, side])?;
        let shapes = net
            .get(&[1, 3, side, side])
            .and_then(|plan| plan.run(tvec!(blank.into())))
            .map(|out| out.iter().map(|t| t.shape().to_vec()).collect::<Vec<_>>())
            .with_context(|| {
                format!(
                    "{}: not an SCRFD detector: it does not run on a 1x3x{side}x{side} image",
                    path.display()
                )
            })?;
        if let Err(e) = check_outputs(&shapes, side, side) {
            bail!(
                "{}: not an SCRFD detector with keypoints: for a 1x3x{side}x{side} image {e}",
                path.display()
            );
        }
        Ok(Scrfd {
            config,
            net,
            onnx_path: path,
        })
    }

    /// Detects the faces of an RGB image, largest first.
    pub fn detect(&self, img: &RgbImage) -> Result<Vec<Face>> {
        Ok(self.detect_at_side(img, 1, self.config.max_side)?.0)
    }

    /// [`Scrfd::detect`] on a copy of a photo whose every pixel stands for `reduction x
    /// reduction` of the photo's (a JPEG decoded at a reduced DCT scale), reduced further to
    /// `max_side` when larger; the faces come back in the photo's pixels, with where the time
    /// went.
    ///
    /// The network finds faces up to about 300 of its input's pixels wide (LFW faces upscaled:
    /// 19 of 20 found at 230 pixels, 14 of 20 at 320, none at 380), so a copy larger than
    /// [`COARSE_SIDE`] is followed by coarser ones (`Geometry::levels`) for the faces too
    /// large for it; the faces of every level are suppressed together, as one level's are.
    pub fn detect_at_side(
        &self,
        img: &RgbImage,
        reduction: u32,
        max_side: Option<u32>,
    ) -> Result<(Vec<Face>, StageTimes)> {
        let start = Instant::now();
        let mut times = StageTimes::default();
        let (w, h) = img.dimensions();
        if w == 0 || h == 0 {
            return Ok((Vec::new(), times));
        }
        let r = reduction.max(1) as f32;
        let levels = Geometry::levels(w, h, max_side);
        let mut copy = Cow::Borrowed(img);
        let mut found = Vec::new();
        for (i, level) in levels.iter().enumerate() {
            if copy.dimensions() != (level.width, level.height) {
                // Each level from the one before: the smallest copy that still has its pixels.
                let mut clock = Instant::now();
                copy = Cow::Owned(crate::media::resize(
                    &copy,
                    level.width,
                    level.height,
                    FilterType::Bilinear,
                ));
                times.reduce += lap(&mut clock);
            }
            let (sx, sy) = (
                w as f32 / level.width as f32,
                h as f32 / level.height as f32,
            );
            // A coarser level is there for the faces too large for the finer one: those it
            // finds smaller are the finer level's, which sees them in more pixels.
            let smallest = match i {
                0 => 0.0,
                _ => LARGE_FACE * r * w as f32 / levels[i - 1].width as f32,
            };
            found.extend(
                self.run(&copy, level, &mut times)?
                    .into_iter()
                    .map(|d| d.face().rescaled(sx * r, sy * r))
                    .filter(|f| f.bbox[2] - f.bbox[0] >= smallest),
            );
        }
        let mut faces: Vec<Face> = nms(found, self.config.nms_iou)
            .into_iter()
            .filter(|f| {
                let (bw, bh) = (f.bbox[2] - f.bbox[0], f.bbox[3] - f.bbox[1]);
                bw.max(bh) >= self.config.min_face
            })
            .collect();
        faces.sort_by(|a, b| b.area().total_cmp(&a.area()));
        times.rest = start.elapsed().as_secs_f64() * 1e3
            - (times.reduce + times.pack + times.network + times.plans);
        Ok((faces, times))
    }

    /// The network over one level's copy: the faces scoring above the threshold, in the copy's
    /// pixels.
    fn run(
        &self,
        copy: &RgbImage,
        level: &Geometry,
        times: &mut StageTimes,
    ) -> Result<Vec<Detection>> {
        let mut clock = Instant::now();
        let (width, height) = (level.padded_width as usize, level.padded_height as usize);
        let input = tensor(copy, level.padded_width, level.padded_height);
        times.pack += lap(&mut clock);
        let plan = self.net.get(&[1, 3, height, width])?;
        times.plans += lap(&mut clock);
        let out = plan.run(tvec!(input.into()))?;
        times.network += lap(&mut clock);
        let views = out
            .iter()
            .map(|t| t.to_plain_array_view::<f32>())
            .collect::<TractResult<Vec<_>>>()?;
        let slices = views
            .iter()
            .map(|v| v.as_slice().context("SCRFD's outputs are not contiguous"))
            .collect::<Result<Vec<_>>>()?;
        decode(&slices, width, height, self.config.score_threshold)
    }
}

/// The milliseconds since `clock`, which restarts.
fn lap(clock: &mut Instant) -> f64 {
    let now = Instant::now();
    let ms = (now - *clock).as_secs_f64() * 1e3;
    *clock = now;
    ms
}

/// Checks the network's output shapes for an input of `width x height`: scores, boxes and
/// keypoints for each stride, finest first, each `[1, anchors, k]` (or `[anchors, k]`, as
/// insightface's unbatched exports have them).
fn check_outputs(shapes: &[Vec<usize>], width: usize, height: usize) -> Result<(), String> {
    if shapes.len() != 9 {
        return Err(format!(
            "it has {} outputs, expected 9 (score, box and keypoints at strides 8, 16 and 32)",
            shapes.len()
        ));
    }
    for (i, shape) in shapes.iter().enumerate() {
        let anchors = anchors_of(width, height, STRIDES[i % 3]);
        let k = PER_ANCHOR[i / 3];
        if shape[..] != [1, anchors, k] && shape[..] != [anchors, k] {
            return Err(format!(
                "output {i} has shape {shape:?}, expected [1, {anchors}, {k}]"
            ));
        }
    }
    Ok(())
}

/// Anchors of one stride's map over a `width x height` input (both multiples of 32).
fn anchors_of(width: usize, height: usize, stride: usize) -> usize {
    (width / stride) * (height / stride) * ANCHORS
}

/// The copy SCRFD runs on and the padded input it goes into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    /// The copy's width and height: the image's own, or reduced to the side.
    width: u32,
    height: u32,
    /// The input's: the copy's rounded up to multiples of 32.
    padded_width: u32,
    padded_height: u32,
}

impl Geometry {
    /// The copies an image of `width x height` is detected on, finest first: [`Geometry::of`]
    /// at `max_side`, then, while the last is larger than [`COARSE_SIDE`], one a
    /// [`LEVEL_RATIO`] of its size (no smaller than [`COARSE_SIDE`]). A 12-megapixel photo at
    /// 800 is detected at 800x600 and 256x192; one of 250x250, at its own size alone.
    fn levels(width: u32, height: u32, max_side: Option<u32>) -> Vec<Geometry> {
        let mut levels = vec![Geometry::of(width, height, max_side)];
        loop {
            let last = levels[levels.len() - 1];
            let longest = last.width.max(last.height);
            if longest <= COARSE_SIDE {
                return levels;
            }
            let side = (longest / LEVEL_RATIO).max(COARSE_SIDE);
            levels.push(Geometry::of(width, height, Some(side)));
        }
    }

    /// The copy of a `width x height` image (both at least 1) for `max_side`. A larger image is
    /// resized (aspect kept) to a longest side of `max_side` rounded down to a multiple of 32,
    /// then both sides are padded up to multiples of 32 rather than stretched to them: padding
    /// keeps the faces' proportions (insightface pads too, to its 640x640 square), costs under
    /// 32 pixels a side (800x600 becomes 800x608, 1.3% more), and with the longest side a
    /// multiple of 32 a photo's input is never larger than the side. Photos of one aspect ratio
    /// then share one input shape, and so one plan.
    fn of(width: u32, height: u32, max_side: Option<u32>) -> Geometry {
        let stride = STRIDES[2] as u32;
        let longest = width.max(height);
        let (width, height) = match max_side {
            Some(side) if longest > side => {
                let target = (side / stride * stride).max(stride);
                let scale = target as f32 / longest as f32;
                let fit = |v: u32| ((v as f32 * scale).round() as u32).clamp(1, target);
                (fit(width), fit(height))
            }
            _ => (width, height),
        };
        let pad = |v: u32| v.div_ceil(stride) * stride;
        Geometry {
            width,
            height,
            padded_width: pad(width),
            padded_height: pad(height),
        }
    }
}

/// The copy as the network's input `[1, 3, padded_height, padded_width]`: RGB planes of
/// `(pixel - 127.5) / 128`, padded right and bottom with black.
fn tensor(img: &RgbImage, padded_width: u32, padded_height: u32) -> Tensor {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (pw, ph) = (padded_width as usize, padded_height as usize);
    let plane = pw * ph;
    let mut t = vec![PAD; 3 * plane];
    for (y, row) in img.as_raw().chunks_exact(3 * w).take(h).enumerate() {
        for (x, p) in row.chunks_exact(3).enumerate() {
            for (c, &v) in p.iter().enumerate() {
                t[c * plane + y * pw + x] = (v as f32 - 127.5) * 0.0078125;
            }
        }
    }
    tract_ndarray::Array4::from_shape_vec((1, 3, ph, pw), t)
        .expect("sized for every pixel")
        .into_tensor()
}

/// A face read off the network's outputs, in the input's pixels (insightface's coordinates:
/// 0-based, the pixel `i` centred on `i`).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Detection {
    /// `[x1, y1, x2, y2]`.
    bbox: [f32; 4],
    score: f32,
    keypoints: [[f32; 2]; 5],
}

impl Detection {
    /// As a [`Face`]: the box's corners 1-based.
    fn face(self) -> Face {
        Face {
            bbox: self.bbox.map(|v| v + 1.0),
            score: self.score,
            landmarks: self.keypoints,
        }
    }
}

/// The centre of anchor `k` of a stride's map `cells` places wide: the anchors come
/// [`ANCHORS`] to a place, the places row by row, and a place's centre is its corner on the
/// stride's grid.
fn anchor_centre(k: usize, cells: usize, stride: usize) -> [f32; 2] {
    let place = k / ANCHORS;
    [
        ((place % cells) * stride) as f32,
        ((place / cells) * stride) as f32,
    ]
}

/// insightface's `distance2bbox`: the box `d` (left, top, right, bottom distances, in strides)
/// puts around the centre `c`.
fn distance_to_box(c: [f32; 2], d: &[f32], stride: f32) -> [f32; 4] {
    [
        c[0] - d[0] * stride,
        c[1] - d[1] * stride,
        c[0] + d[2] * stride,
        c[1] + d[3] * stride,
    ]
}

/// insightface's `distance2kps`: the five points `d` (x, y offsets in strides, point after
/// point) puts around the centre `c`.
fn distance_to_keypoints(c: [f32; 2], d: &[f32], stride: f32) -> [[f32; 2]; 5] {
    std::array::from_fn(|i| [c[0] + d[2 * i] * stride, c[1] + d[2 * i + 1] * stride])
}

/// Every anchor of the nine outputs (scores, boxes, keypoints; strides finest first) of a
/// `width x height` input scoring at least `threshold`, with its box and keypoints. A score
/// that is not a number is below any threshold.
fn decode(
    outputs: &[&[f32]],
    width: usize,
    height: usize,
    threshold: f32,
) -> Result<Vec<Detection>> {
    if outputs.len() != 9 {
        bail!("SCRFD gave {} outputs, expected 9", outputs.len());
    }
    let mut found = Vec::new();
    for (level, &stride) in STRIDES.iter().enumerate() {
        let anchors = anchors_of(width, height, stride);
        let [scores, boxes, points] = [0, 1, 2].map(|k| outputs[level + 3 * k]);
        if scores.len() != anchors || boxes.len() != 4 * anchors || points.len() != 10 * anchors {
            bail!("SCRFD's stride-{stride} outputs do not have {anchors} anchors for a {width}x{height} input");
        }
        let s = stride as f32;
        for (k, &score) in scores.iter().enumerate() {
            if score.is_nan() || score < threshold {
                continue;
            }
            let c = anchor_centre(k, width / stride, stride);
            found.push(Detection {
                bbox: distance_to_box(c, &boxes[4 * k..4 * k + 4], s),
                score,
                keypoints: distance_to_keypoints(c, &points[10 * k..10 * k + 10], s),
            });
        }
    }
    Ok(found)
}

/// insightface's non-maximum suppression, over the faces of every level in the image's pixels
/// (as insightface's runs after mapping them back): the best-scoring face is kept, every face
/// whose box overlaps it by more than `threshold` (intersection over union, areas counted in
/// whole pixels, `+ 1`, as its code does) is dropped, and so on down the scores.
fn nms(mut faces: Vec<Face>, threshold: f32) -> Vec<Face> {
    faces.sort_by(|a, b| b.score.total_cmp(&a.score));
    let area = |b: &[f32; 4]| (b[2] - b[0] + 1.0) * (b[3] - b[1] + 1.0);
    let mut kept: Vec<Face> = Vec::new();
    for f in faces {
        let b = f.bbox;
        let overlaps = kept.iter().any(|k| {
            let a = k.bbox;
            let iw = (a[2].min(b[2]) - a[0].max(b[0]) + 1.0).max(0.0);
            let ih = (a[3].min(b[3]) - a[1].max(b[1]) + 1.0).max(0.0);
            let inter = iw * ih;
            inter / (area(&a) + area(&b) - inter) > threshold
        });
        if !overlaps {
            kept.push(f);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_come_two_to_a_place_row_by_row_on_the_stride_grid() {
        // A map 4 places wide at stride 16: anchors 0 and 1 at the first place's corner, 2 at
        // the second place (x = 16), 7 at the fourth (x = 48), 8 at the second row's first.
        let centre = |k| anchor_centre(k, 4, 16);
        assert_eq!(centre(0), [0.0, 0.0]);
        assert_eq!(centre(1), [0.0, 0.0]);
        assert_eq!(centre(2), [16.0, 0.0]);
        assert_eq!(centre(7), [48.0, 0.0]);
        assert_eq!(centre(8), [0.0, 16.0]);
        assert_eq!(centre(15), [48.0, 16.0]);
        // 64x32 input: stride 8 has 8x4 places, 16 has 4x2, 32 has 2x1; two anchors each.
        assert_eq!(STRIDES.map(|s| anchors_of(64, 32, s)), [64, 16, 4]);
    }

    #[test]
    fn boxes_and_keypoints_are_distances_in_strides_from_the_centre() {
        // Centre (16, 32), stride 8: left 1 and top 2 strides, right 3 and bottom 4.
        assert_eq!(
            distance_to_box([16.0, 32.0], &[1.0, 2.0, 3.0, 4.0], 8.0),
            [8.0, 16.0, 40.0, 64.0]
        );
        let d = [0.5, -1.0, 1.0, 1.0, 0.0, 0.0, -2.0, 3.0, 2.0, 3.0];
        assert_eq!(
            distance_to_keypoints([16.0, 32.0], &d, 8.0),
            [
                [20.0, 24.0],
                [24.0, 40.0],
                [16.0, 32.0],
                [0.0, 56.0],
                [32.0, 56.0]
            ]
        );
    }

    fn det(bbox: [f32; 4], score: f32) -> Face {
        Face {
            bbox,
            score,
            landmarks: [[0.0; 2]; 5],
        }
    }

    #[test]
    fn nms_keeps_the_best_and_drops_boxes_overlapping_a_kept_one() {
        // A and B: 10x10 inclusive pixels each, overlapping by 7x10: IoU 70 / 130 = 0.54 > 0.4.
        // C overlaps A by 4x10: 40 / 160 = 0.25, and B (dropped, so it drops nothing) by 0.54.
        let a = det([0.0, 0.0, 9.0, 9.0], 0.9);
        let b = det([3.0, 0.0, 12.0, 9.0], 0.8);
        let c = det([6.0, 0.0, 15.0, 9.0], 0.7);
        let far = det([50.0, 50.0, 59.0, 59.0], 0.6);
        let kept = nms(vec![far.clone(), c.clone(), b.clone(), a.clone()], 0.4);
        assert_eq!(kept, [a.clone(), c.clone(), far]);
        // At 0.6 nothing overlaps enough.
        assert_eq!(nms(vec![c.clone(), a.clone(), b.clone()], 0.6), [a, b, c]);
    }

    #[test]
    fn decoding_reads_the_anchors_above_the_threshold() {
        // A 64x32 input: 64, 16 and 4 anchors at strides 8, 16 and 32.
        let counts = [64, 16, 4];
        let mut outputs: Vec<Vec<f32>> = Vec::new();
        for per in PER_ANCHOR {
            for n in counts {
                outputs.push(vec![0.0; n * per]);
            }
        }
        // Stride 16, anchor 11: place 5, the second row's second place, centred on (16, 16); a
        // box one stride out each way, keypoints on the centre but the nose, a stride right.
        outputs[1][11] = 0.9;
        outputs[4][44..48].copy_from_slice(&[1.0, 1.0, 1.0, 1.0]);
        outputs[7][110 + 4] = 1.0;
        // Below the threshold, and not a number: neither is a face.
        outputs[0][3] = 0.49;
        outputs[2][0] = f32::NAN;
        let views: Vec<&[f32]> = outputs.iter().map(Vec::as_slice).collect();
        let found = decode(&views, 64, 32, 0.5).unwrap();
        let mut nose = [[16.0, 16.0]; 5];
        nose[2] = [32.0, 16.0];
        assert_eq!(
            found,
            [Detection {
                bbox: [0.0, 0.0, 32.0, 32.0],
                score: 0.9,
                keypoints: nose,
            }]
        );
        // Outputs that do not fit the input are an error, not an index out of bounds.
        let err = decode(&views, 64, 64, 0.5).unwrap_err().to_string();
        assert!(err.contains("stride-8") && err.contains("64x64"), "{err}");
        assert!(decode(&views[..8], 64, 32, 0.5).is_err());
    }

    #[test]
    fn a_detection_is_a_face_with_one_based_corners() {
        let face = Detection {
            bbox: [10.0, 20.0, 30.0, 40.0],
            score: 0.7,
            keypoints: [[15.0, 25.0]; 5],
        }
        .face();
        assert_eq!(face.bbox, [11.0, 21.0, 31.0, 41.0]);
        assert_eq!(face.landmarks, [[15.0, 25.0]; 5]);
        assert_eq!(face.score, 0.7);
    }

    #[test]
    fn copies_are_reduced_to_the_side_and_padded_to_multiples_of_32() {
        let of = |w, h, side| {
            let g = Geometry::of(w, h, side);
            [g.width, g.height, g.padded_width, g.padded_height]
        };
        // A 12-megapixel photo at 800: 800x600, padded to 800x608; either orientation.
        assert_eq!(of(4032, 3024, Some(800)), [800, 600, 800, 608]);
        assert_eq!(of(3024, 4032, Some(800)), [600, 800, 608, 800]);
        // No larger than the side: as it is, padded.
        assert_eq!(of(250, 250, Some(800)), [250, 250, 256, 256]);
        // 3024 = 94.5 x 32.
        assert_eq!(of(4032, 3024, None), [4032, 3024, 4032, 3040]);
        // A side that is no multiple of 32 is rounded down (1000: 992), one under 32 up to 32.
        assert_eq!(of(4032, 3024, Some(1000)), [992, 744, 992, 768]);
        assert_eq!(of(4032, 3024, Some(20)), [32, 24, 32, 32]);
        // A thin image keeps a pixel.
        assert_eq!(of(1000, 1, Some(800)), [800, 1, 800, 32]);
        assert_eq!(of(1, 1, None), [1, 1, 32, 32]);
    }

    #[test]
    fn copies_larger_than_the_coarse_side_are_followed_by_coarser_ones() {
        let sizes = |w, h, side| {
            Geometry::levels(w, h, side)
                .iter()
                .map(|g| [g.width, g.height, g.padded_width, g.padded_height])
                .collect::<Vec<_>>()
        };
        assert_eq!(
            sizes(4032, 3024, Some(800)),
            [[800, 600, 800, 608], [256, 192, 256, 192]]
        );
        assert_eq!(sizes(250, 250, Some(800)), [[250, 250, 256, 256]]);
        // 400 * 256 / 500 = 204.8.
        assert_eq!(
            sizes(500, 400, Some(800)),
            [[500, 400, 512, 416], [256, 205, 256, 224]]
        );
        // At full size: 4032 / 4 = 1008, rounded down to 992; then 256.
        assert_eq!(
            sizes(4032, 3024, None),
            [
                [4032, 3024, 4032, 3040],
                [992, 744, 992, 768],
                [256, 192, 256, 192]
            ]
        );
    }

    #[test]
    fn the_input_is_rgb_planes_normalised_and_padded_with_black() {
        let mut img = RgbImage::new(2, 1);
        img.put_pixel(1, 0, image::Rgb([255, 0, 128]));
        let t = tensor(&img, 32, 32);
        let v = t.to_plain_array_view::<f32>().unwrap();
        assert_eq!(v.shape(), [1, 3, 32, 32]);
        assert_eq!(v[[0, 0, 0, 1]], 127.5 / 128.0);
        assert_eq!(v[[0, 1, 0, 1]], -127.5 / 128.0);
        assert_eq!(v[[0, 2, 0, 1]], 0.5 / 128.0);
        assert_eq!(v[[0, 0, 0, 0]], -127.5 / 128.0);
        // Padding: black, the value of a zero pixel.
        assert_eq!(v[[0, 1, 5, 5]], PAD);
        assert_eq!(PAD, (0.0 - 127.5) / 128.0);
    }

    #[test]
    fn output_shapes_are_checked_against_the_input() {
        // A 32x32 input: 32, 8 and 2 anchors.
        let good: Vec<Vec<usize>> = PER_ANCHOR
            .iter()
            .flat_map(|&k| [32, 8, 2].map(|a| vec![1, a, k]))
            .collect();
        assert!(check_outputs(&good, 32, 32).is_ok());
        // insightface's unbatched exports: no batch axis.
        let unbatched: Vec<Vec<usize>> = good.iter().map(|s| s[1..].to_vec()).collect();
        assert!(check_outputs(&unbatched, 32, 32).is_ok());
        let err = check_outputs(&good[..6], 32, 32).unwrap_err();
        assert!(err.contains("6 outputs"), "{err}");
        let mut wrong = good.clone();
        wrong[4] = vec![1, 8, 1];
        let err = check_outputs(&wrong, 32, 32).unwrap_err();
        assert!(
            err.contains("output 4") && err.contains("[1, 8, 4]"),
            "{err}"
        );
    }
}
