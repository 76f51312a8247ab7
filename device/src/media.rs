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
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
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
    #[error("{path}: corrupt or truncated image: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        source: image::ImageError,
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
        source,
    })?;
    scan_reader(file, path, hash)
}

/// [`scan_file`] over any reader; `path` names the source in errors.
fn scan_reader(mut file: impl Read, path: &Path, hash: bool) -> Result<Scanned, DecodeError> {
    let io = |source| DecodeError::Io {
        path: path.to_path_buf(),
        source,
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
        source,
    })?;
    let reader = ImageReader::with_format(BufReader::new(file), format);
    decode_reader(reader, path, max_pixels)
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
        source,
    };
    let mut decoder = reader.into_decoder().map_err(corrupt)?;
    let (width, height) = decoder.dimensions();
    if width as u64 * height as u64 > max_pixels {
        return Err(DecodeError::TooLarge {
            path: path.to_path_buf(),
            width,
            height,
            limit: max_pixels,
        });
    }
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
        let tiff: &[u8] = &[
            b'M', b'M', 0, 42, 0, 0, 0, 8, // big-endian TIFF header, first IFD at offset 8
            0, 1, // one entry
            0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0, // Orientation, SHORT, count 1, value 6
            0, 0, 0, 0, // no next IFD
        ];
        let payload = [b"Exif\0\0".as_slice(), tiff].concat();
        let len = (payload.len() + 2) as u16;
        let mut with_exif = vec![0xFF, 0xD8, 0xFF, 0xE1];
        with_exif.extend_from_slice(&len.to_be_bytes());
        with_exif.extend_from_slice(&payload);
        with_exif.extend_from_slice(&jpeg[2..]);
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
}
