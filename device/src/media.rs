//! Decoding photos into RGB pixels: every format the `image` crate reads (JPEG, PNG, GIF, BMP,
//! WebP, PGM/PPM, TIFF; grey, CMYK and 16-bit), EXIF orientation applied, and a pixel limit that
//! refuses decompression bombs before any pixel is allocated.

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// Default largest image accepted, in pixels (100 megapixels: above any phone camera).
pub const DEFAULT_MAX_PIXELS: u64 = 100_000_000;

/// Why a file could not be turned into pixels. The message names the file and the cause.
///
/// The underlying error is part of the message (a `cause` field, not an error `source`), so a
/// chain printed with `{:#}` shows it once, not twice.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The file could not be read.
    #[error("{path}: cannot read: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
    /// The file has no bytes.
    #[error("{path}: empty file (0 bytes)")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The content is not an image format we read.
    #[error("{path}: not an image (unknown format)")]
    NotAnImage {
        /// The file.
        path: PathBuf,
    },
    /// The image is larger than the pixel limit.
    #[error("{path}: {width}x{height} is {} megapixels, over the limit of {} (raise --max-pixels to accept it)", *width as u64 * *height as u64 / 1_000_000, limit / 1_000_000)]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// The limit, in pixels.
        limit: u64,
    },
    /// A JPEG whose compressed data stops before its end marker. The JPEG decoder would fill
    /// the missing rows with grey and carry on; a half-grey photo must not enter the gallery.
    #[error("{path}: truncated JPEG (the data stops before the end-of-image marker)")]
    Truncated {
        /// The file.
        path: PathBuf,
    },
    /// The decoder failed: truncated or corrupt data.
    #[error("{path}: corrupt or truncated image: {cause}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        cause: image::ImageError,
    },
}

impl DecodeError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            DecodeError::Io { path, .. }
            | DecodeError::Empty { path }
            | DecodeError::NotAnImage { path }
            | DecodeError::Truncated { path }
            | DecodeError::TooLarge { path, .. }
            | DecodeError::Corrupt { path, .. } => path,
        }
    }

    /// The cause alone, for reports that name the file in a field of their own.
    pub fn reason(&self) -> String {
        let full = self.to_string();
        let prefix = format!("{}: ", self.path().display());
        full.strip_prefix(&prefix)
            .map_or_else(|| full.clone(), str::to_owned)
    }
}

/// What one streamed pass over a file learnt, before any pixel is decoded.
#[derive(Debug, Clone)]
pub struct Scanned {
    /// sha256 of the bytes, lower-case hex (empty when not asked for).
    pub sha256: String,
    /// The image format its first bytes announce; `None` for anything else.
    pub format: Option<ImageFormat>,
    /// For a JPEG: its last scan has no end-of-image marker after it.
    pub jpeg_truncated: bool,
    /// Its first bytes announce a video container.
    pub video: bool,
}

/// File name extensions of the videos `index` reads (a file is known by its content; the name
/// only chooses the words of an error).
pub const VIDEO_EXTENSIONS: [&str; 7] = ["mp4", "mov", "m4v", "mkv", "webm", "avi", "3gp"];

/// True when a path's extension is one of [`VIDEO_EXTENSIONS`], in any case.
pub fn has_video_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| VIDEO_EXTENSIONS.iter().any(|v| v.eq_ignore_ascii_case(e)))
}

/// True when a file's first bytes announce a container FFmpeg reads as video: ISO media (MP4,
/// MOV, M4V, 3GP), Matroska/WebM, or AVI.
pub fn looks_like_video(head: &[u8]) -> bool {
    let iso_box = head.len() >= 8
        && matches!(
            &head[4..8],
            b"ftyp" | b"moov" | b"mdat" | b"wide" | b"free" | b"skip"
        );
    let matroska = head.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]);
    let avi = head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"AVI ";
    iso_box || matroska || avi
}

/// Bytes read at a time while scanning.
const SCAN_BUFFER: usize = 1 << 16;
/// Bytes enough for every format signature the `image` crate knows.
const SIGNATURE_BYTES: usize = 32;

/// Reads a file once as a stream: its sha256 (when `hash`), its format from the first bytes and,
/// for a JPEG, whether it is truncated. Memory stays one buffer whatever the file's size.
pub fn scan_file(path: &Path, hash: bool) -> Result<Scanned, DecodeError> {
    let file = File::open(path).map_err(|source| DecodeError::Io {
        path: path.to_path_buf(),
        cause: source,
    })?;
    scan_reader(file, path, hash)
}

/// [`scan_file`] over any reader; `path` names the source in errors.
fn scan_reader(mut file: impl Read, path: &Path, hash: bool) -> Result<Scanned, DecodeError> {
    let io = |source| DecodeError::Io {
        path: path.to_path_buf(),
        cause: source,
    };
    let mut hasher = hash.then(Sha256::new);
    let mut buf = vec![0u8; SCAN_BUFFER];
    let mut head = Vec::with_capacity(SIGNATURE_BYTES);
    let mut markers = JpegMarkers::default();
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io(e)),
        };
        let chunk = &buf[..n];
        if let Some(h) = hasher.as_mut() {
            h.update(chunk);
        }
        if head.len() < SIGNATURE_BYTES {
            let take = (SIGNATURE_BYTES - head.len()).min(n);
            head.extend_from_slice(&chunk[..take]);
        }
        markers.feed(chunk);
    }
    if head.is_empty() {
        return Err(DecodeError::Empty {
            path: path.to_path_buf(),
        });
    }
    let format = image::guess_format(&head).ok();
    Ok(Scanned {
        sha256: hasher
            .map(|h| hex::encode(h.finalize()))
            .unwrap_or_default(),
        format,
        jpeg_truncated: format == Some(ImageFormat::Jpeg) && markers.truncated(),
        video: format.is_none() && looks_like_video(&head),
    })
}

/// Decodes an image held in memory (an upload) with the checks a file gets: known format, no
/// truncated JPEG, the pixel limit, EXIF orientation. `label` names it in errors.
pub fn decode_bytes(bytes: &[u8], label: &Path, max_pixels: u64) -> Result<RgbImage, DecodeError> {
    let format = image_format(&scan_reader(bytes, label, false)?, label)?;
    let reader = ImageReader::with_format(std::io::Cursor::new(bytes), format);
    decode_reader(reader, label, max_pixels)
}

/// Decodes a scanned file from disk, streamed through a buffered reader: the pixel limit is
/// checked on the header, the EXIF orientation applied, the result 8-bit RGB.
pub fn load_scanned(path: &Path, scan: &Scanned, max_pixels: u64) -> Result<RgbImage, DecodeError> {
    let format = image_format(scan, path)?;
    let file = File::open(path).map_err(|source| DecodeError::Io {
        path: path.to_path_buf(),
        cause: source,
    })?;
    let reader = ImageReader::with_format(BufReader::new(file), format);
    decode_reader(reader, path, max_pixels)
}

/// A photo decoded at a reduced scale: each of its pixels stands for `reduction x reduction` of
/// the file's (orientation applied to both).
#[derive(Debug, Clone)]
pub struct Reduced {
    /// The pixels.
    pub image: RgbImage,
    /// 1 (the file's own pixels), 2, 4 or 8.
    pub reduction: u32,
}

impl Reduced {
    /// The photo's own width and height (orientation applied).
    pub fn photo_size(&self) -> (u32, u32) {
        let (w, h) = self.image.dimensions();
        (w * self.reduction, h * self.reduction)
    }

    /// A point of the file's pixels (0-based, pixel `i` centred on `i`) in this copy's.
    pub fn to_copy(&self, [x, y]: [f32; 2]) -> [f32; 2] {
        let r = self.reduction as f32;
        [(x + 0.5) / r - 0.5, (y + 0.5) / r - 0.5]
    }
}

/// The reductions a JPEG decoder gets from its DCT, largest first: an 8x8 block's coefficients
/// give 1x1, 2x2 or 4x4 pixels instead of 8x8.
const DCT_REDUCTIONS: [u32; 3] = [8, 4, 2];

/// Refuses an image of more than `max_pixels` pixels, before any is decoded.
fn check_pixels(path: &Path, width: u32, height: u32, max_pixels: u64) -> Result<(), DecodeError> {
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(DecodeError::TooLarge {
            path: path.to_path_buf(),
            width,
            height,
            limit: max_pixels,
        });
    }
    Ok(())
}

/// True when a reduction divides both sides, so that each pixel of the copy covers whole pixels
/// of the file and the copy's pixel grid maps onto the file's exactly, whatever the orientation.
fn reduces_whole(reduction: u32, width: u32, height: u32) -> bool {
    width.is_multiple_of(reduction) && height.is_multiple_of(reduction)
}

/// Decodes a scanned file for detection on a copy whose longest side is `min_side` or more.
/// A large JPEG is decoded at the largest DCT reduction (2, 4 or 8) that keeps its longest side
/// at least `min_side` and divides both sides (so every pixel of the copy covers whole pixels of
/// the file): the decoder then reconstructs 1/4 to 1/64 of the pixels. Anything else (other
/// formats, CMYK or 16-bit JPEGs, `min_side` `None`, small photos) is decoded at full size.
pub fn load_reduced(
    path: &Path,
    scan: &Scanned,
    max_pixels: u64,
    min_side: Option<u32>,
) -> Result<Reduced, DecodeError> {
    if let Some(side) = min_side {
        let pick = |width: u32, height: u32| {
            DCT_REDUCTIONS
                .into_iter()
                .find(|&r| reduces_whole(r, width, height) && width.max(height) / r >= side.max(1))
        };
        if let Some(reduced) = load_jpeg_reduced(path, scan, max_pixels, pick)? {
            return Ok(reduced);
        }
    }
    Ok(Reduced {
        image: load_scanned(path, scan, max_pixels)?,
        reduction: 1,
    })
}

/// Decodes a scanned file at `reduction` (1, 2, 4 or 8) where its decoder can, else at full
/// size: the copy a face is aligned from when the one it was detected on is too coarse.
pub fn load_at(
    path: &Path,
    scan: &Scanned,
    max_pixels: u64,
    reduction: u32,
) -> Result<Reduced, DecodeError> {
    let pick = |width: u32, height: u32| {
        (reduction > 1 && reduces_whole(reduction, width, height)).then_some(reduction)
    };
    match load_jpeg_reduced(path, scan, max_pixels, pick)? {
        Some(reduced) => Ok(reduced),
        None => Ok(Reduced {
            image: load_scanned(path, scan, max_pixels)?,
            reduction: 1,
        }),
    }
}

/// A JPEG decoded at the DCT reduction `pick` chooses from its stored width and height, or
/// `None` where it is no JPEG, `pick` chooses none, or its pixels are neither grey nor colour.
/// jpeg-decoder does the scaled inverse DCT (the `image` crate's decoder, zune-jpeg, has none).
fn load_jpeg_reduced(
    path: &Path,
    scan: &Scanned,
    max_pixels: u64,
    pick: impl Fn(u32, u32) -> Option<u32>,
) -> Result<Option<Reduced>, DecodeError> {
    use jpeg_decoder::PixelFormat;
    if image_format(scan, path)? != ImageFormat::Jpeg {
        return Ok(None);
    }
    let corrupt = |e: jpeg_decoder::Error| DecodeError::Corrupt {
        path: path.to_path_buf(),
        cause: image::ImageError::Decoding(image::error::DecodingError::new(
            ImageFormat::Jpeg.into(),
            e,
        )),
    };
    let file = File::open(path).map_err(|source| DecodeError::Io {
        path: path.to_path_buf(),
        cause: source,
    })?;
    let mut decoder = jpeg_decoder::Decoder::new(BufReader::new(file));
    decoder.read_info().map_err(corrupt)?;
    let Some(info) = decoder.info() else {
        return Ok(None);
    };
    let (width, height) = (u32::from(info.width), u32::from(info.height));
    check_pixels(path, width, height, max_pixels)?;
    let Some(reduction) = pick(width, height) else {
        return Ok(None);
    };
    if !matches!(info.pixel_format, PixelFormat::RGB24 | PixelFormat::L8) {
        return Ok(None);
    }
    let (w, h) = decoder
        .scale((width / reduction) as u16, (height / reduction) as u16)
        .map_err(corrupt)?;
    let (w, h) = (u32::from(w), u32::from(h));
    if w * reduction != width || h * reduction != height {
        return Ok(None); // not a scale this decoder has: decode in full instead
    }
    let pixels = decoder.decode().map_err(corrupt)?;
    let img = match info.pixel_format {
        PixelFormat::L8 => image::GrayImage::from_raw(w, h, pixels).map(DynamicImage::ImageLuma8),
        _ => RgbImage::from_raw(w, h, pixels).map(DynamicImage::ImageRgb8),
    };
    let Some(mut img) = img else {
        return Ok(None);
    };
    // Where the EXIF block is missing or unreadable, the pixels are kept as stored (as
    // `decode_reader` does).
    let orientation = decoder
        .exif_data()
        .and_then(image::metadata::Orientation::from_exif_chunk)
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    img.apply_orientation(orientation);
    Ok(Some(Reduced {
        image: img.into_rgb8(),
        reduction,
    }))
}

/// The image format a scan found, unless it found none or a truncated JPEG.
fn image_format(scan: &Scanned, path: &Path) -> Result<ImageFormat, DecodeError> {
    match scan.format {
        None => Err(DecodeError::NotAnImage {
            path: path.to_path_buf(),
        }),
        Some(_) if scan.jpeg_truncated => Err(DecodeError::Truncated {
            path: path.to_path_buf(),
        }),
        Some(format) => Ok(format),
    }
}

/// The image resized to `width x height` with a convolution `filter` (fast_image_resize).
pub fn resize(
    img: &RgbImage,
    width: u32,
    height: u32,
    filter: fast_image_resize::FilterType,
) -> RgbImage {
    use fast_image_resize::{ResizeAlg, ResizeOptions, Resizer};
    let mut out = RgbImage::new(width, height);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(filter));
    Resizer::new()
        .resize(img, &mut out, &options)
        .expect("RGB to RGB resize between non-empty images");
    out
}

/// Reads an image file into 8-bit RGB with its EXIF orientation applied. Refuses an image whose
/// header declares more than `max_pixels` pixels without decoding it.
pub fn load_rgb(path: &Path, max_pixels: u64) -> Result<RgbImage, DecodeError> {
    load_scanned(path, &scan_file(path, false)?, max_pixels)
}

/// The decoding itself: pixel limit from the header, orientation, RGB.
fn decode_reader<R: std::io::BufRead + std::io::Seek>(
    reader: ImageReader<R>,
    path: &Path,
    max_pixels: u64,
) -> Result<RgbImage, DecodeError> {
    let corrupt = |source| DecodeError::Corrupt {
        path: path.to_path_buf(),
        cause: source,
    };
    let mut decoder = reader.into_decoder().map_err(corrupt)?;
    let (width, height) = decoder.dimensions();
    check_pixels(path, width, height, max_pixels)?;
    // A missing or unreadable EXIF block is common and harmless: keep the pixels as stored.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    img.apply_orientation(orientation);
    Ok(img.into_rgb8())
}

/// The positions of the last start-of-scan and end-of-image markers of a byte stream fed in
/// pieces. Inside compressed data a 0xFF byte is always followed by 0x00 or a restart marker, so
/// the markers found by a byte search are real ones; an EXIF thumbnail's own end marker comes
/// before the main scan.
#[derive(Debug, Default)]
struct JpegMarkers {
    offset: u64,
    previous_was_ff: bool,
    last_scan: Option<u64>,
    last_end: Option<u64>,
}

impl JpegMarkers {
    fn feed(&mut self, chunk: &[u8]) {
        for (i, &b) in chunk.iter().enumerate() {
            if self.previous_was_ff {
                let at = self.offset + i as u64;
                match b {
                    0xDA => self.last_scan = Some(at),
                    0xD9 => self.last_end = Some(at),
                    _ => {}
                }
            }
            self.previous_was_ff = b == 0xFF;
        }
        self.offset += chunk.len() as u64;
    }

    /// True when the last scan has no end-of-image marker after it.
    fn truncated(&self) -> bool {
        match (self.last_scan, self.last_end) {
            (Some(scan), Some(end)) => end < scan,
            (Some(_), None) => true,
            (None, _) => false, // no scan at all: the decoder reports what is wrong
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Luma, Rgb};

    /// Decodes `bytes` the way the device reads a file: written to a temporary file named
    /// `name`, then [`load_rgb`]; returns the result and the file's path.
    fn decode_named(
        bytes: &[u8],
        name: &str,
        max_pixels: u64,
    ) -> (Result<RgbImage, DecodeError>, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        (load_rgb(&path, max_pixels), path)
    }

    fn decode_rgb(bytes: &[u8], name: &str, max_pixels: u64) -> Result<RgbImage, DecodeError> {
        decode_named(bytes, name, max_pixels).0
    }

    fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    #[test]
    fn grey_and_16_bit_images_become_rgb() {
        let grey = DynamicImage::ImageLuma8(image::ImageBuffer::from_pixel(3, 2, Luma([200u8])));
        let rgb = decode_rgb(&encode(&grey, ImageFormat::Png), "g.png", 100).unwrap();
        assert_eq!(rgb.dimensions(), (3, 2));
        assert_eq!(rgb.get_pixel(1, 1), &Rgb([200, 200, 200]));

        let deep = DynamicImage::ImageRgb16(image::ImageBuffer::from_pixel(
            2,
            2,
            Rgb([65535u16, 0, 32896]),
        ));
        let rgb = decode_rgb(&encode(&deep, ImageFormat::Png), "d.png", 100).unwrap();
        assert_eq!(rgb.get_pixel(0, 0), &Rgb([255, 0, 128]));
    }

    #[test]
    fn every_lossless_format_round_trips() {
        let img = image::RgbImage::from_fn(5, 3, |x, y| Rgb([x as u8 * 50, y as u8 * 100, 7]));
        for format in [
            ImageFormat::Png,
            ImageFormat::Bmp,
            ImageFormat::Gif,
            ImageFormat::WebP,
            ImageFormat::Tiff,
            ImageFormat::Pnm,
        ] {
            let bytes = encode(&DynamicImage::ImageRgb8(img.clone()), format);
            let back = decode_rgb(&bytes, "x", 100).unwrap_or_else(|e| panic!("{format:?}: {e}"));
            // GIF quantises to a palette of 256: these 15 colours fit, so it is exact too.
            assert_eq!(back, img, "{format:?}");
        }
    }

    #[test]
    fn pgm_is_read_by_content() {
        let pgm = b"P2\n2 1\n255\n0 255\n";
        let rgb = decode_rgb(pgm, "no-extension", 100).unwrap();
        assert_eq!(rgb.get_pixel(1, 0), &Rgb([255, 255, 255]));
    }

    #[test]
    fn bad_inputs_name_the_file_and_the_cause() {
        let p = "x.jpg";
        let msg = |e: DecodeError| e.to_string();
        let (empty, path) = decode_named(b"", p, 100);
        assert!(msg(empty.unwrap_err()).contains(&format!("{}: empty file", path.display())));
        assert!(
            msg(decode_rgb(b"hello, not an image", p, 100).unwrap_err()).contains("not an image")
        );
        let jpeg = encode(&DynamicImage::new_rgb8(64, 64), ImageFormat::Jpeg);
        assert!(decode_rgb(&jpeg, p, 10_000).is_ok());
        let e = decode_rgb(&jpeg[..jpeg.len() - 40], p, 10_000).unwrap_err();
        assert!(matches!(e, DecodeError::Truncated { .. }), "{e}");
        let png = encode(&DynamicImage::new_rgb8(8, 8), ImageFormat::Png);
        let e = decode_rgb(&png[..png.len() / 2], p, 1000).unwrap_err();
        assert!(matches!(e, DecodeError::Corrupt { .. }), "{e}");
        let e = decode_rgb(&png, p, 63).unwrap_err();
        assert!(
            matches!(
                e,
                DecodeError::TooLarge {
                    width: 8,
                    height: 8,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn a_streamed_scan_hashes_sniffs_and_finds_truncation_across_buffers() {
        let dir = tempfile::tempdir().unwrap();
        // A JPEG larger than the scan buffer, so markers and the hash span several reads.
        let img = image::RgbImage::from_fn(700, 500, |x, y| {
            Rgb([((x * 7) ^ (y * 13)) as u8, y as u8, 9])
        });
        let jpeg = encode(&DynamicImage::ImageRgb8(img), ImageFormat::Jpeg);
        assert!(jpeg.len() > 2 * SCAN_BUFFER, "{} bytes", jpeg.len());
        let path = dir.path().join("big.jpg");
        std::fs::write(&path, &jpeg).unwrap();
        let scan = scan_file(&path, true).unwrap();
        assert_eq!(scan.sha256, hex::encode(Sha256::digest(&jpeg)));
        assert_eq!(scan.format, Some(ImageFormat::Jpeg));
        assert!(!scan.jpeg_truncated);
        assert_eq!(
            load_scanned(&path, &scan, 1 << 20).unwrap().dimensions(),
            (700, 500)
        );

        std::fs::write(&path, &jpeg[..jpeg.len() - 1000]).unwrap();
        let scan = scan_file(&path, false).unwrap();
        assert!(scan.jpeg_truncated && scan.sha256.is_empty());
        let e = load_scanned(&path, &scan, 1 << 20).unwrap_err();
        assert!(matches!(e, DecodeError::Truncated { .. }), "{e}");

        // Text is known to be no image from its first bytes; the cause names no path twice.
        std::fs::write(&path, "hello, I am a text file renamed .jpg").unwrap();
        let e = load_scanned(&path, &scan_file(&path, true).unwrap(), 100).unwrap_err();
        assert_eq!(e.reason(), "not an image (unknown format)");
        std::fs::write(&path, "").unwrap();
        let e = scan_file(&path, true).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{}: empty file (0 bytes)", path.display())
        );
    }

    #[test]
    fn containers_are_known_by_their_first_bytes() {
        assert!(looks_like_video(b"\0\0\0\x20ftypisom\0\0\x02\0"));
        assert!(looks_like_video(&[0x1A, 0x45, 0xDF, 0xA3, 0x9F]));
        assert!(looks_like_video(b"RIFF\x10\0\0\0AVI LIST"));
        assert!(!looks_like_video(b"RIFF\x10\0\0\0WEBPVP8 "));
        assert!(!looks_like_video(b"hello, I am a text file"));
        assert!(!looks_like_video(b""));
    }

    #[test]
    fn exif_orientation_is_applied() {
        // A 16x8 JPEG, left half black and right half white, with an EXIF APP1 segment saying
        // orientation 6 ("rotate 90 degrees clockwise to display"): the result is 8x16, black on top.
        let mut img = image::RgbImage::new(16, 8);
        for (x, _, p) in img.enumerate_pixels_mut() {
            *p = if x < 8 {
                Rgb([0, 0, 0])
            } else {
                Rgb([255, 255, 255])
            };
        }
        let jpeg = encode(&DynamicImage::ImageRgb8(img), ImageFormat::Jpeg);
        let with_exif = with_exif_orientation(&jpeg, 6);
        let rgb = decode_rgb(&with_exif, "r.jpg", 1000).unwrap();
        assert_eq!(rgb.dimensions(), (8, 16));
        assert!(
            rgb.get_pixel(4, 2)[0] < 30,
            "top should be the former left (black)"
        );
        assert!(
            rgb.get_pixel(4, 13)[0] > 225,
            "bottom should be the former right (white)"
        );
    }

    #[test]
    fn an_upload_is_decoded_and_refused_exactly_as_the_same_file_would_be() {
        let img = DynamicImage::ImageRgb8(image::ImageBuffer::from_fn(12, 9, |x, y| {
            Rgb([(x * 20) as u8, (y * 25) as u8, 7])
        }));
        let png = encode(&img, ImageFormat::Png);
        let jpeg = encode(&img, ImageFormat::Jpeg);
        let label = Path::new("upload");
        assert_eq!(
            decode_bytes(&png, label, 1000).unwrap(),
            decode_rgb(&png, "a.png", 1000).unwrap()
        );
        assert_eq!(
            decode_bytes(&jpeg, label, 1000).unwrap(),
            decode_rgb(&jpeg, "a.jpg", 1000).unwrap()
        );
        let cut = &jpeg[..jpeg.len() - 2];
        let cases: [(&[u8], u64, &str); 4] = [
            (b"", 1000, "empty file"),
            (b"not an image at all", 1000, "not an image"),
            (cut, 1000, "truncated JPEG"),
            (&png, 100, "over the limit"),
        ];
        for (bytes, limit, cause) in cases {
            let e = decode_bytes(bytes, label, limit).unwrap_err().to_string();
            assert!(
                e.starts_with("upload: ") && e.contains(cause),
                "{cause}: {e}"
            );
        }
    }

    /// A smooth colour photo, `width x height`: detail a DCT-scaled decode keeps.
    fn smooth_photo(width: u32, height: u32) -> RgbImage {
        image::ImageBuffer::from_fn(width, height, |x, y| {
            let (u, v) = (x as f32 / width as f32, y as f32 / height as f32);
            let wave = |f: f32| (127.5 + 100.0 * f.sin()) as u8;
            Rgb([wave(6.0 * u + 1.0), wave(5.0 * v), wave(4.0 * (u + v))])
        })
    }

    /// `img` averaged over `r x r` blocks: what each pixel of a copy reduced `r` times stands for.
    fn box_reduced(img: &RgbImage, r: u32) -> RgbImage {
        image::ImageBuffer::from_fn(img.width() / r, img.height() / r, |x, y| {
            let mut sum = [0u32; 3];
            for dy in 0..r {
                for dx in 0..r {
                    let p = img.get_pixel(x * r + dx, y * r + dy);
                    (0..3).for_each(|c| sum[c] += u32::from(p[c]));
                }
            }
            Rgb(sum.map(|v| ((v as f32 / (r * r) as f32).round()) as u8))
        })
    }

    fn mean_abs_diff(a: &RgbImage, b: &RgbImage) -> f32 {
        assert_eq!(a.dimensions(), b.dimensions());
        let sum: u64 = a
            .as_raw()
            .iter()
            .zip(b.as_raw())
            .map(|(&x, &y)| u64::from(x.abs_diff(y)))
            .sum();
        sum as f32 / a.as_raw().len() as f32
    }

    /// `jpeg` with an EXIF block (APP1) right after its start marker, giving `orientation`.
    fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
        // Little-endian TIFF header, one IFD with one entry: tag 0x0112, SHORT, count 1.
        let mut tiff = b"II*\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0".to_vec();
        tiff.extend_from_slice(&orientation.to_le_bytes());
        tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend_from_slice(&tiff);
        let mut out = jpeg[..2].to_vec();
        out.extend_from_slice(&[0xFF, 0xE1]);
        out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(&app1);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    fn write_temp(dir: &Path, name: &str, bytes: &[u8]) -> (PathBuf, Scanned) {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let scan = scan_file(&path, false).unwrap();
        (path, scan)
    }

    #[test]
    fn a_large_jpeg_is_decoded_at_the_largest_dct_reduction_the_detector_allows() {
        let dir = tempfile::tempdir().unwrap();
        let photo = DynamicImage::ImageRgb8(smooth_photo(640, 480));
        let (path, scan) = write_temp(dir.path(), "p.jpg", &encode(&photo, ImageFormat::Jpeg));
        let full = load_scanned(&path, &scan, 1 << 30).unwrap();
        // The largest of 8, 4, 2 that keeps the longest side at `side` or more.
        for (side, want) in [(80, 8), (81, 4), (160, 4), (161, 2), (320, 2), (321, 1)] {
            let copy = load_reduced(&path, &scan, 1 << 30, Some(side)).unwrap();
            assert_eq!(copy.reduction, want, "side {side}");
            assert_eq!(copy.photo_size(), (640, 480));
            assert_eq!(copy.image.dimensions(), (640 / want, 480 / want));
            // Each pixel is what the full decode holds under it, within the rounding of two
            // decoders' colour conversions and of a low-passed DCT.
            let diff = mean_abs_diff(&copy.image, &box_reduced(&full, want));
            assert!(diff < 2.0, "reduction {want}: mean difference {diff}");
        }
        let copy = load_reduced(&path, &scan, 1 << 30, None).unwrap();
        assert_eq!((copy.reduction, &copy.image), (1, &full));
        // The point mapping is the pixel-centre one: the copy's pixel 0 spans the file's 0..r.
        let copy = load_at(&path, &scan, 1 << 30, 4).unwrap();
        assert_eq!(copy.to_copy([1.5, 5.5]), [0.0, 1.0]);
    }

    #[test]
    fn a_reduction_that_does_not_divide_both_sides_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        // 644 = 4 x 161 and 484 = 4 x 121: 4 divides both, 8 divides neither.
        let photo = DynamicImage::ImageRgb8(smooth_photo(644, 484));
        let (path, scan) = write_temp(dir.path(), "p.jpg", &encode(&photo, ImageFormat::Jpeg));
        assert_eq!(
            load_reduced(&path, &scan, 1 << 30, Some(40))
                .unwrap()
                .reduction,
            4
        );
        assert_eq!(load_at(&path, &scan, 1 << 30, 8).unwrap().reduction, 1);
        // 642 is only even: 2 at most.
        let photo = DynamicImage::ImageRgb8(smooth_photo(642, 484));
        let (path, scan) = write_temp(dir.path(), "q.jpg", &encode(&photo, ImageFormat::Jpeg));
        assert_eq!(
            load_reduced(&path, &scan, 1 << 30, Some(40))
                .unwrap()
                .reduction,
            2
        );
        // Other formats are decoded at full size.
        let (path, scan) = write_temp(dir.path(), "p.png", &encode(&photo, ImageFormat::Png));
        assert_eq!(
            load_reduced(&path, &scan, 1 << 30, Some(40))
                .unwrap()
                .reduction,
            1
        );
    }

    #[test]
    fn a_reduced_decode_applies_the_exif_orientation_and_the_pixel_limit() {
        let dir = tempfile::tempdir().unwrap();
        let photo = DynamicImage::ImageRgb8(smooth_photo(320, 160));
        let jpeg = encode(&photo, ImageFormat::Jpeg);
        // 6: the stored pixels are to be turned 90 degrees clockwise; 3: 180 degrees.
        for (orientation, size) in [(6, (160, 320)), (3, (320, 160)), (1, (320, 160))] {
            let bytes = with_exif_orientation(&jpeg, orientation);
            let (path, scan) = write_temp(dir.path(), "o.jpg", &bytes);
            let full = load_scanned(&path, &scan, 1 << 30).unwrap();
            assert_eq!(full.dimensions(), size, "orientation {orientation}");
            let copy = load_reduced(&path, &scan, 1 << 30, Some(80)).unwrap();
            assert_eq!(copy.reduction, 4);
            assert_eq!(copy.photo_size(), size);
            let diff = mean_abs_diff(&copy.image, &box_reduced(&full, 4));
            assert!(
                diff < 2.0,
                "orientation {orientation}: mean difference {diff}"
            );
        }
        let (path, scan) = write_temp(dir.path(), "big.jpg", &jpeg);
        let e = load_reduced(&path, &scan, 320 * 160 - 1, Some(80)).unwrap_err();
        assert!(
            matches!(
                e,
                DecodeError::TooLarge {
                    width: 320,
                    height: 160,
                    ..
                }
            ),
            "{e}"
        );
        let mut damaged = jpeg.clone();
        let middle = damaged.len() / 2;
        damaged[middle..middle + 64].fill(0xFF);
        let (path, scan) = write_temp(dir.path(), "bad.jpg", &damaged);
        if let Err(e) = load_reduced(&path, &scan, 1 << 30, Some(80)) {
            assert!(
                e.to_string().starts_with(&format!("{}: ", path.display())),
                "{e}"
            );
        }
    }
}
