//! Large JPEGs are decoded at a reduced DCT scale for detection: the faces and their embeddings
//! are those of the full-resolution decode, whichever copy each face is aligned from.

use image::{imageops, RgbImage};
use smoothface_device::detector::DetectorConfig;
use smoothface_device::media::{self, DEFAULT_MAX_PIXELS};
use smoothface_device::mtcnn::Face;
use smoothface_device::pipeline::{coarsest_reduction_for, EmbeddedFace, Pipeline};
use std::path::{Path, PathBuf};

fn pipeline() -> Pipeline {
    let models = smoothface_tests::models();
    Pipeline::load(
        &models.join("mobilefacenet"),
        &models.join("mtcnn"),
        DetectorConfig::default(),
        DEFAULT_MAX_PIXELS,
    )
    .unwrap()
}

/// The first `n` photos of `lfw-devtrain`, in file name order.
fn lfw_photos(lfw: &Path, n: usize) -> Vec<RgbImage> {
    smoothface_tests::files_under(lfw)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .take(n)
        .map(|p| image::open(&p).unwrap().to_rgb8())
        .collect()
}

/// A 4000x3000 photo tiled with `photos`, each resized to `tile` pixels a side: a group photo
/// whose faces are about 0.4 `tile` wide.
fn mosaic(photos: &[RgbImage], tile: u32) -> RgbImage {
    let mut canvas = RgbImage::new(4000, 3000);
    let mut next = photos.iter().cycle();
    for y in (0..3000 - tile + 1).step_by(tile as usize) {
        for x in (0..4000 - tile + 1).step_by(tile as usize) {
            let resized = imageops::resize(
                next.next().unwrap(),
                tile,
                tile,
                imageops::FilterType::Triangle,
            );
            imageops::replace(&mut canvas, &resized, i64::from(x), i64::from(y));
        }
    }
    canvas
}

fn write_jpeg(dir: &Path, name: &str, img: &RgbImage) -> PathBuf {
    let path = dir.join(name);
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95)
        .encode_image(img)
        .unwrap();
    path
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn iou(a: &Face, b: &Face) -> f32 {
    let (a, b) = (a.bbox, b.bbox);
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
}

/// The file decoded at full size, detected and aligned from those pixels: what the device did
/// before reduced decoding.
fn full_resolution(pipeline: &Pipeline, path: &Path) -> Vec<EmbeddedFace> {
    let img = media::load_rgb(path, DEFAULT_MAX_PIXELS).unwrap();
    let faces = pipeline.detector.detect(&img).unwrap();
    pipeline.embed_faces(&img, faces).unwrap()
}

/// Checks a file's reduced path against its full-resolution one.
/// - Detection on the reduced copy finds the same faces: 98% of them matched by a box at an IoU
///   of 0.8 or more, the landmarks of 95% within 5% of the face's width and all within 10%
///   (MTCNN's own move by up to 4.3% between pyramid levels; here the copy detected on is
///   resized from another decode).
/// - The full path's faces, aligned as the reduced path aligns them, embed as they do from the
///   full decode: cosine at least 0.995 for each. Each group of faces that needs a finer copy is
///   aligned on its own, so that every copy the reduced path decodes is checked.
///
/// Returns the full path's faces.
fn compare(pipeline: &Pipeline, path: &Path, expected_reduction: u32) -> Vec<Face> {
    let scan = media::scan_file(path, false).unwrap();
    let (copy, reduced) = pipeline.detect_file(path, &scan).unwrap();
    assert_eq!(copy.reduction, expected_reduction, "{}", path.display());
    let full = full_resolution(pipeline, path);
    let mut moves = Vec::new();
    for f in &full {
        let best = reduced
            .iter()
            .max_by(|a, b| iou(a, &f.face).total_cmp(&iou(b, &f.face)));
        if let Some(r) = best.filter(|r| iou(r, &f.face) >= 0.8) {
            let width = f.face.bbox[2] - f.face.bbox[0];
            let moved = r
                .landmarks
                .iter()
                .flatten()
                .zip(f.face.landmarks.iter().flatten())
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            moves.push(moved / width);
        }
    }
    assert!(
        moves.len() * 50 >= full.len() * 49 && reduced.len() * 50 <= full.len() * 51,
        "{}: {} of {} faces matched, {} found on the reduced copy",
        path.display(),
        moves.len(),
        full.len(),
        reduced.len()
    );
    moves.sort_by(f32::total_cmp);
    let (p95, worst) = (moves[moves.len() * 95 / 100], moves[moves.len() - 1]);
    assert!(
        p95 <= 0.05 && worst <= 0.10,
        "{}: landmarks moved by {p95} of the face's width (95th percentile), {worst} at worst",
        path.display()
    );
    let faces: Vec<Face> = full.iter().map(|f| f.face.clone()).collect();
    for need in [8, 4, 2, 1] {
        let (group, expected): (Vec<Face>, Vec<&EmbeddedFace>) = full
            .iter()
            .filter(|f| coarsest_reduction_for(&f.face) == need)
            .map(|f| (f.face.clone(), f))
            .unzip();
        let realigned = pipeline.embed_detected(path, &scan, &copy, group).unwrap();
        assert_eq!(realigned.len(), expected.len());
        for (a, b) in realigned.iter().zip(expected) {
            let cos = cosine(&a.embedding, &b.embedding);
            assert!(
                cos >= 0.995,
                "{}: a face aligned from the copy at 1/{} embeds at a cosine of {cos}",
                path.display(),
                need.min(copy.reduction)
            );
        }
    }
    faces
}

#[test]
fn large_jpegs_decoded_at_a_dct_reduction_give_the_full_decode_s_faces_and_embeddings() {
    let test = "large_jpegs_decoded_at_a_dct_reduction_give_the_full_decode_s_faces_and_embeddings";
    let Some(lfw) = smoothface_tests::faces(test, "lfw-devtrain") else {
        return;
    };
    let pipeline = pipeline();
    let photos = lfw_photos(&lfw, 48);
    let dir = tempfile::tempdir().unwrap();
    // Portraits at 12 MP: one large face a photo, aligned from the 1/4 copy detection used.
    for (i, photo) in photos.iter().take(4).enumerate() {
        let mut big = RgbImage::new(4000, 3000);
        let up = imageops::resize(photo, 3000, 3000, imageops::FilterType::Triangle);
        imageops::replace(&mut big, &up, 500, 0);
        let path = write_jpeg(dir.path(), &format!("portrait{i}.jpg"), &big);
        let faces = compare(&pipeline, &path, 4);
        assert!(faces.iter().any(|f| coarsest_reduction_for(f) >= 4));
    }
    // Group photos: faces of about 200 and 100 pixels, too small for the 1/4 copy; they are
    // aligned from a copy decoded again at 1/2 and at full size.
    for (tile, finer) in [(500, 2), (250, 1)] {
        let path = write_jpeg(
            dir.path(),
            &format!("group{tile}.jpg"),
            &mosaic(&photos, tile),
        );
        let faces = compare(&pipeline, &path, 4);
        let at = |r| {
            faces
                .iter()
                .filter(|f| coarsest_reduction_for(f) == r)
                .count()
        };
        assert!(
            at(finer) * 10 >= faces.len() * 8,
            "tiles of {tile}: {} of {} faces need a reduction of {finer}",
            at(finer),
            faces.len()
        );
    }
}
