//! insightface's MXNet RecordIO packs (`train.rec` + `train.idx`), the format MS1M, Glint360K
//! and WebFace ship in.
//!
//! The `.idx` is text, one `key<TAB>offset` line per record. Each record in the `.rec` is a
//! little-endian u32 magic `0xced7230a`, a u32 whose upper 3 bits are a continuation flag and
//! lower 29 bits the payload length, then the payload padded to 4 bytes. A payload is an
//! `IRHeader` (`flag: u32, label: f32, id: u64, id2: u64`), then `flag` more f32 labels when
//! `flag > 0`, then the image bytes. Record 0 with `flag > 0` is the pack's header: its first
//! label is one past the last image record, so the images are records `1..label[0]`
//! (arcface_torch's `MXFaceDataset`); without such a header every record is an image.

use super::decode_crop;
use anyhow::{anyhow, bail, ensure, Context, Result};
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The magic number that opens every record part.
pub const MAGIC: u32 = 0xced7_230a;
/// Bytes of the fixed `IRHeader` at the start of a payload.
const HEADER_BYTES: usize = 24;
/// Continuation flags (upper 3 bits of `lrecord`): a whole record, or its first, middle and
/// last part. MXNet splits a record where its data holds the magic number, and joining the
/// parts puts the magic back between them.
const WHOLE: u32 = 0;
const FIRST: u32 = 1;
const MIDDLE: u32 = 2;
const LAST: u32 = 3;

/// An opened pack: reads records by position in `&self` (positional reads, no shared cursor),
/// so several loader threads can share one.
#[derive(Debug)]
pub struct RecordIo {
    rec: File,
    rec_path: PathBuf,
    rec_len: u64,
    offsets: HashMap<u64, u64>,
    /// Keys of the image records, in order: image `i` is record `images[i]`.
    images: Vec<u64>,
}

/// The `flag`, labels and image bytes of one record's payload.
fn split_payload(payload: &[u8], name: &str) -> Result<(u32, Vec<f32>, Vec<u8>)> {
    ensure!(
        payload.len() >= HEADER_BYTES,
        "{name}: {}-byte payload, shorter than its 24-byte header",
        payload.len()
    );
    let word = |at: usize| u32::from_le_bytes(payload[at..at + 4].try_into().unwrap());
    let flag = word(0) as usize;
    let mut labels = vec![f32::from_bits(word(4))];
    let image_at = HEADER_BYTES + 4 * flag;
    if flag > 0 {
        ensure!(
            payload.len() >= image_at,
            "{name}: header announces {flag} labels but the payload holds {} bytes",
            payload.len()
        );
        labels = (0..flag)
            .map(|k| f32::from_bits(word(HEADER_BYTES + 4 * k)))
            .collect();
    }
    Ok((flag as u32, labels, payload[image_at..].to_vec()))
}

impl RecordIo {
    /// Opens `rec` with its index `idx`, reading the header record to find the image records.
    pub fn open(rec: &Path, idx: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(idx)
            .with_context(|| format!("{}: cannot read the index", idx.display()))?;
        let mut offsets = HashMap::new();
        let mut keys = Vec::new();
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let mut fields = line.split_whitespace();
            let parsed = match (fields.next(), fields.next(), fields.next()) {
                (Some(k), Some(o), None) => k.parse::<u64>().ok().zip(o.parse::<u64>().ok()),
                _ => None,
            };
            let (key, offset) = parsed.ok_or_else(|| {
                anyhow!(
                    "{}:{}: expected `key<TAB>offset`, found {line:?}",
                    idx.display(),
                    n + 1
                )
            })?;
            offsets.insert(key, offset);
            keys.push(key);
        }
        let file = File::open(rec).with_context(|| format!("{}: cannot open", rec.display()))?;
        let rec_len = file
            .metadata()
            .with_context(|| format!("{}: cannot stat", rec.display()))?
            .len();
        let mut pack = RecordIo {
            rec: file,
            rec_path: rec.to_path_buf(),
            rec_len,
            offsets,
            images: Vec::new(),
        };
        let header = if pack.offsets.contains_key(&0) {
            Some(split_payload(&pack.record(0)?, &pack.name(0))?)
        } else {
            None
        };
        pack.images = match header {
            Some((flag, labels, _)) if flag > 0 => {
                let end = labels[0] as u64;
                if let Some(key) = (1..end).find(|key| !pack.offsets.contains_key(key)) {
                    bail!(
                        "{}: the header record lists images 1..{end} but image record {key} is \
                         not in {}",
                        rec.display(),
                        idx.display()
                    );
                }
                (1..end).collect()
            }
            _ => keys,
        };
        Ok(pack)
    }

    /// Number of image records.
    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// True when the pack holds no image.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// How errors name record `key`.
    fn name(&self, key: u64) -> String {
        format!("{}: record {key}", self.rec_path.display())
    }

    /// Reads `len` bytes at `at`, or says that the file ends too soon. The bounds are checked
    /// before anything is allocated: a damaged header or index may claim any length or offset.
    fn read_at(&self, at: u64, len: usize, key: u64, what: &str) -> Result<Vec<u8>> {
        let end = at.checked_add(len as u64);
        if end.is_none_or(|end| end > self.rec_len) {
            bail!(
                "{} at byte {at}: its {what} claims {len} bytes, beyond the end of the file \
                 ({} bytes): truncated, or the record header or index is damaged",
                self.name(key),
                self.rec_len
            );
        }
        let mut buf = vec![0u8; len];
        self.rec
            .read_exact_at(&mut buf, at)
            .with_context(|| format!("{}: cannot read its {what}", self.name(key)))?;
        Ok(buf)
    }

    /// Where record `key` starts in the `.rec`.
    fn offset(&self, key: u64) -> Result<u64> {
        self.offsets
            .get(&key)
            .copied()
            .ok_or_else(|| anyhow!("{}: not in the index", self.name(key)))
    }

    /// The continuation flag and data length of the record part at `at`, its magic checked.
    fn part_header(&self, at: u64, key: u64) -> Result<(u32, usize)> {
        let head = self.read_at(at, 8, key, "record header")?;
        let magic = u32::from_le_bytes(head[..4].try_into().unwrap());
        ensure!(
            magic == MAGIC,
            "{} at byte {at}: bad magic {magic:#010x} (expected {MAGIC:#010x}): not a RecordIO \
             file, or the index does not belong to it",
            self.name(key)
        );
        let lrecord = u32::from_le_bytes(head[4..].try_into().unwrap());
        Ok((lrecord >> 29, (lrecord & ((1 << 29) - 1)) as usize))
    }

    /// The payload of record `key`, its parts joined.
    fn record(&self, key: u64) -> Result<Vec<u8>> {
        let mut at = self.offset(key)?;
        let mut payload = Vec::new();
        loop {
            let (cflag, len) = self.part_header(at, key)?;
            payload.extend(self.read_at(at + 8, len, key, "payload")?);
            at += 8 + len.next_multiple_of(4) as u64;
            match cflag {
                WHOLE | LAST => return Ok(payload),
                // The magic number was where MXNet cut the record.
                FIRST | MIDDLE => payload.extend_from_slice(&MAGIC.to_le_bytes()),
                _ => bail!("{}: unknown continuation flag {cflag}", self.name(key)),
            }
        }
    }

    /// Image `i`: its class label (the first label, as arcface_torch takes it) and its
    /// encoded image bytes.
    pub fn get(&self, i: usize) -> Result<(i64, Vec<u8>)> {
        let key = self.images[i];
        let (_, labels, image) = split_payload(&self.record(key)?, &self.name(key))?;
        Ok((labels[0] as i64, image))
    }

    /// Image `i` decoded into an interleaved RGB crop of `size` x `size`, with its label.
    pub fn crop(&self, i: usize, size: usize) -> Result<(i64, Vec<u8>)> {
        let (label, bytes) = self.get(i)?;
        Ok((
            label,
            decode_crop(&bytes, size, &self.name(self.images[i]))?,
        ))
    }

    /// The labels of all images, in order (for the sampler). Reads only the start of each
    /// record: a pack holds millions of images and their bytes are not needed here.
    pub fn labels(&self) -> Result<Vec<i64>> {
        self.images.iter().map(|&key| self.label(key)).collect()
    }

    /// The class label of record `key`: the IRHeader's label, or the first extra label when
    /// `flag > 0`, both within the first 28 bytes of its first part.
    fn label(&self, key: u64) -> Result<i64> {
        let at = self.offset(key)?;
        let (_, len) = self.part_header(at, key)?;
        let head = self.read_at(at + 8, len.min(HEADER_BYTES + 4), key, "payload")?;
        let word = |k: usize| head.get(k..k + 4).map(|b| b.try_into().unwrap());
        match (word(0).map(u32::from_le_bytes), word(4), word(HEADER_BYTES)) {
            (Some(0), Some(label), _) | (Some(1..), _, Some(label)) => {
                Ok(f32::from_le_bytes(label) as i64)
            }
            // A record cut inside those bytes, or a broken one: reading it whole says which.
            _ => Ok(split_payload(&self.record(key)?, &self.name(key))?.1[0] as i64),
        }
    }
}
