//! Thumbnails of the gallery's photos and videos and crops of its faces, made on demand and kept
//! on disk beside the gallery (`<gallery>-cache/`), for the web app's grids.
//!
//! Everything is found by row id, never by a path from outside: a media row gives the file, and
//! only re-encoded JPEG pixels leave, so no request can read a file's bytes. A file that changed
//! since it was indexed (size or time) is refused rather than shown under the old entry. Face
//! crops are biometric data: each media row's images live in one folder named by its id and
//! content hash, and [`Cache::sweep`] removes every folder whose row is gone, so forgetting a
//! photo deletes its crops too.

use crate::media;
use anyhow::{Context, Result};
use image::RgbImage;
use rusqlite::{Connection, OptionalExtension};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The sizes images are made in (the longest side for a thumbnail, the side of a face crop): a
/// request is served the smallest one at least as large as asked, so the cache stays bounded.
pub const SIZES: [u32; 4] = [160, 320, 640, 1280];

/// Why an image could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ThumbError {
    /// No such media row or face.
    #[error("{0}")]
    NotFound(String),
    /// The file is gone, changed since it was indexed, or does not decode.
    #[error("{0}")]
    Unreadable(String),
    /// The cache or the gallery failed.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// The on-disk cache of one gallery.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

/// What the gallery records of a media file.
struct MediaFacts {
    path: PathBuf,
    hash: String,
    size: u64,
    mtime_ns: i64,
}

impl Cache {
    /// The cache of the gallery at `db`: the folder `<db>-cache` beside it.
    pub fn for_gallery(db: &Path) -> Cache {
        let mut name = db.file_name().unwrap_or_default().to_os_string();
        name.push("-cache");
        Cache {
            dir: db.with_file_name(name),
        }
    }

    /// A JPEG of the media row, its longest side the [`snap`]ped `size`: the photo, or for a
    /// video the frame its largest face is best seen in (else the first).
    pub fn thumbnail(
        &self,
        conn: &Connection,
        media_id: i64,
        size: u32,
        max_pixels: u64,
    ) -> Result<Vec<u8>, ThumbError> {
        let size = snap(size);
        let facts = media_facts(conn, media_id)?;
        let best_s: Option<f64> = conn
            .query_row(
                "SELECT best_s FROM faces WHERE media_id = ?1 ORDER BY face_index LIMIT 1",
                [media_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(anyhow::Error::from)?
            .flatten();
        self.cached(media_id, &facts, &format!("thumb-{size}.jpg"), || {
            let img = picture(&facts, best_s.unwrap_or(0.0), max_pixels)?;
            Ok(fit(&img, size))
        })
    }

    /// A square JPEG around a face (its box with a margin), `size` [`snap`]ped.
    pub fn face_crop(
        &self,
        conn: &Connection,
        face_id: i64,
        size: u32,
        max_pixels: u64,
    ) -> Result<Vec<u8>, ThumbError> {
        let size = snap(size);
        let row: Option<(i64, u32, [f32; 4], Option<f64>)> = conn
            .query_row(
                "SELECT media_id, face_index, x1, y1, x2, y2, best_s FROM faces WHERE id = ?1",
                [face_id],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        [r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?],
                        r.get(6)?,
                    ))
                },
            )
            .optional()
            .map_err(anyhow::Error::from)?;
        let (media_id, face_index, bbox, best_s) =
            row.ok_or_else(|| ThumbError::NotFound(format!("no face {face_id} in the gallery")))?;
        let facts = media_facts(conn, media_id)?;
        self.cached(
            media_id,
            &facts,
            &format!("face-{face_index}-{size}.jpg"),
            || {
                let img = picture(&facts, best_s.unwrap_or(0.0), max_pixels)?;
                Ok(square_crop(&img, bbox, size))
            },
        )
    }

    /// Removes the cached images of every media row that is no longer in the gallery, or whose
    /// content changed; returns how many rows' folders went.
    pub fn sweep(&self, conn: &Connection) -> Result<usize> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => {
                return Err(e).with_context(|| format!("{}: cannot list", self.dir.display()))
            }
        };
        let mut stmt = conn.prepare("SELECT content_hash FROM media WHERE id = ?1")?;
        let mut removed = 0;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let keep = match name.split_once('-') {
                Some((id, hash)) => match id.parse::<i64>() {
                    Ok(id) => stmt
                        .query_row([id], |r| r.get::<_, String>(0))
                        .optional()?
                        .is_some_and(|h| h.starts_with(hash) && hash.len() == HASH_CHARS),
                    Err(_) => false,
                },
                None => false,
            };
            if !keep {
                let path = entry.path();
                let gone = if entry.file_type()?.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                gone.with_context(|| format!("{}: cannot remove", path.display()))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The cached file `name` of a media row, made by `make` when missing. Written atomically
    /// (`shared::atomic`), so a reader never sees half an image.
    fn cached(
        &self,
        media_id: i64,
        facts: &MediaFacts,
        name: &str,
        make: impl FnOnce() -> Result<RgbImage, ThumbError>,
    ) -> Result<Vec<u8>, ThumbError> {
        let folder = self.dir.join(format!(
            "{media_id}-{}",
            &facts.hash[..HASH_CHARS.min(facts.hash.len())]
        ));
        let file = folder.join(name);
        if let Ok(bytes) = std::fs::read(&file) {
            return Ok(bytes);
        }
        let jpeg = encode_jpeg(&make()?)?;
        smoothface_shared::atomic::write_atomically(&file, |tmp| {
            std::io::Write::write_all(tmp, &jpeg)
        })
        .with_context(|| format!("{}: cannot write to the cache", file.display()))?;
        Ok(jpeg)
    }
}

/// Hex characters of the content hash in a cache folder's name.
const HASH_CHARS: usize = 16;

/// The smallest of [`SIZES`] at least `size` (the largest for anything above).
pub fn snap(size: u32) -> u32 {
    SIZES
        .into_iter()
        .find(|&s| s >= size)
        .unwrap_or(SIZES[SIZES.len() - 1])
}

fn media_facts(conn: &Connection, media_id: i64) -> Result<MediaFacts, ThumbError> {
    let row = conn
        .query_row(
            "SELECT path, content_hash, size, mtime_ns, status FROM media WHERE id = ?1",
            [media_id],
            |r| {
                Ok((
                    MediaFacts {
                        path: PathBuf::from(r.get::<_, String>(0)?),
                        hash: r.get(1)?,
                        size: r.get::<_, i64>(2)? as u64,
                        mtime_ns: r.get(3)?,
                    },
                    r.get::<_, String>(4)?,
                ))
            },
        )
        .optional()
        .map_err(anyhow::Error::from)?;
    match row {
        None => Err(ThumbError::NotFound(format!(
            "no media {media_id} in the gallery"
        ))),
        Some((_, status)) if status != "ok" => Err(ThumbError::Unreadable(format!(
            "media {media_id} could not be read when it was indexed"
        ))),
        Some((facts, _)) => Ok(facts),
    }
}

/// The picture of a media file: the photo, or a video's frame at `at_s`. The file must still be
/// the one indexed (same size and modification time).
fn picture(facts: &MediaFacts, at_s: f64, max_pixels: u64) -> Result<RgbImage, ThumbError> {
    let unreadable =
        |why: String| ThumbError::Unreadable(format!("{}: {why}", facts.path.display()));
    let meta =
        std::fs::metadata(&facts.path).map_err(|e| unreadable(format!("cannot read: {e}")))?;
    if !meta.is_file()
        || meta.len() != facts.size
        || crate::gallery::db::mtime_ns(&meta) != facts.mtime_ns
    {
        return Err(unreadable(
            "changed since it was indexed: index its folder again".into(),
        ));
    }
    let mut head = [0u8; 32];
    let n = std::fs::File::open(&facts.path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|e| unreadable(format!("cannot read: {e}")))?;
    if image::guess_format(&head[..n]).is_err() && media::looks_like_video(&head[..n]) {
        return video_frame(&facts.path, at_s, max_pixels).map_err(unreadable);
    }
    media::load_rgb(&facts.path, max_pixels).map_err(|e| unreadable(e.reason()))
}

/// The frame of a video at `at_s` seconds (the first frame for 0): sampled at one frame every
/// `at_s` seconds, the second sample is the one wanted, and the decoder seeks to it.
#[cfg(feature = "video")]
fn video_frame(path: &Path, at_s: f64, max_pixels: u64) -> Result<RgbImage, String> {
    use crate::frames::Sampling;
    let sampling = Sampling {
        fps: if at_s > 0.0 { 1.0 / at_s } else { 1.0 },
        max_duration_s: f64::INFINITY,
    };
    let mut video =
        crate::video::decode::VideoFile::open(path, sampling, max_pixels).map_err(|e| e.cause)?;
    let first = video.next_sample().map_err(|e| e.cause)?;
    let wanted = if at_s > 0.0 {
        video.next_sample().map_err(|e| e.cause)?
    } else {
        None
    };
    wanted
        .or(first)
        .map(|f| f.image)
        .ok_or_else(|| "no decodable frame".to_string())
}

#[cfg(not(feature = "video"))]
fn video_frame(_: &Path, _: f64, _: u64) -> Result<RgbImage, String> {
    Err("a video, and this smoothface was built without video support".into())
}

/// The image scaled down so that its longest side is at most `size` (never enlarged).
fn fit(img: &RgbImage, size: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let scale = (size as f32 / w.max(h) as f32).min(1.0);
    let (tw, th) = (
        ((w as f32 * scale).round() as u32).max(1),
        ((h as f32 * scale).round() as u32).max(1),
    );
    resize(img, tw, th)
}

/// A square around the box, 1.6 times its longest side, shifted inside the image, at `size`.
fn square_crop(img: &RgbImage, bbox: [f32; 4], size: u32) -> RgbImage {
    let (w, h) = (img.width() as f32, img.height() as f32);
    let side = ((bbox[2] - bbox[0]).max(bbox[3] - bbox[1]) * 1.6)
        .clamp(1.0, w.min(h).max(1.0))
        .round();
    let cx = (bbox[0] + bbox[2]) / 2.0;
    let cy = (bbox[1] + bbox[3]) / 2.0;
    let x = (cx - side / 2.0).clamp(0.0, (w - side).max(0.0)) as u32;
    let y = (cy - side / 2.0).clamp(0.0, (h - side).max(0.0)) as u32;
    let side = side as u32;
    let crop = image::imageops::crop_imm(img, x, y, side, side).to_image();
    let out = size.min(side.max(1));
    resize(&crop, out, out)
}

/// Lanczos: thumbnails are looked at, where MTCNN's pyramid only needs bilinear.
fn resize(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    if img.dimensions() == (width, height) {
        return img.clone();
    }
    media::resize(img, width, height, fast_image_resize::FilterType::Lanczos3)
}

fn encode_jpeg(img: &RgbImage) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
        .encode_image(img)
        .context("cannot encode the thumbnail")?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    #[test]
    fn sizes_snap_up_to_the_next_cached_size() {
        assert_eq!(
            [0, 160, 161, 320, 500, 1280, 5000].map(snap),
            [160, 160, 320, 320, 640, 1280, 1280]
        );
    }

    #[test]
    fn a_thumbnail_keeps_the_aspect_and_never_enlarges() {
        let img = RgbImage::new(400, 100);
        assert_eq!(fit(&img, 160).dimensions(), (160, 40));
        assert_eq!(fit(&img, 640).dimensions(), (400, 100));
    }

    #[test]
    fn a_face_crop_is_a_square_around_the_box_inside_the_image() {
        // A red box at 40..60 on a black 100x80 image: the crop (32 px, centred on it) is red in
        // the middle and black at the corners.
        let mut img = RgbImage::new(100, 80);
        for y in 30..50 {
            for x in 40..60 {
                img.put_pixel(x, y, Rgb([255, 0, 0]));
            }
        }
        let crop = square_crop(&img, [40.0, 30.0, 60.0, 50.0], 160);
        assert_eq!(crop.dimensions(), (32, 32));
        assert!(crop.get_pixel(16, 16)[0] > 240);
        assert!(crop.get_pixel(1, 1)[0] < 15);
        // A box at the corner: the square is shifted in, not cut.
        let corner = square_crop(&img, [0.0, 0.0, 40.0, 40.0], 160);
        assert_eq!(corner.dimensions(), (64, 64));
    }
}
