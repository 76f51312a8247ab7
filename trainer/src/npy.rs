//! The `.npy` files the command line exchanges with Python (`numpy.save` / `numpy.load`):
//! embeddings and labels read with every check done before the data reach libtorch, gradients
//! written back.
//!
//! `ndarray-npy` parses the header and decodes the data. Two things it would trust are checked
//! first, so that a damaged file is an error naming it rather than an allocation of what its
//! header claims: that the header's length fits in the file, and that the data its shape needs
//! (computed without overflow) are exactly what follows the header. tch's own reader trusts the
//! shape and copies that many bytes whatever the file holds.

use ndarray_npy::npy::header::{Header, ReadHeaderError};
use ndarray_npy::ReadableElement;
use std::path::{Path, PathBuf};
use tch::Tensor;

/// Why an array could not be read or written; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    /// The file could not be opened, read or written.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The system's reason.
        error: std::io::Error,
    },
    /// The file is not an `.npy` array this reader understands.
    #[error("{}: not a readable .npy array: {reason}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong, in words.
        reason: String,
    },
    /// The array is well formed but not what the command needs.
    #[error("{}: {reason}", path.display())]
    Content {
        /// The file.
        path: PathBuf,
        /// What is wrong and what was expected, in words.
        reason: String,
    },
    /// libtorch failed to write the array.
    #[error("{}: {error}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// libtorch's reason.
        error: tch::TchError,
    },
}

/// A parsed `.npy` header and the bytes that follow it.
struct Array {
    header: Header,
    /// The dtype as numpy writes it (`<f4`), for choosing the tensor kind and for messages.
    descr: String,
    data: Vec<u8>,
}

const MAGIC: &[u8] = b"\x93NUMPY";

fn format_error(path: &Path, reason: impl Into<String>) -> NpyError {
    NpyError::Format {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

fn content_error(path: &Path, reason: impl Into<String>) -> NpyError {
    NpyError::Content {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// The shape as numpy prints it: `(3, 2)`, `(5,)`, `()`.
fn shape_text(shape: &[usize]) -> String {
    match shape {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Checks the magic string and that the header length the preamble gives (a u16 after format
/// version 1, a u32 after 2 and 3) fits in the file: ndarray-npy allocates that length before
/// reading it.
fn check_preamble(bytes: &[u8]) -> Result<(), String> {
    if !bytes.starts_with(MAGIC) || bytes.len() < 10 {
        return Err("no .npy magic string (write it with numpy.save)".into());
    }
    let (len, start) = match bytes[6] {
        1 => (u64::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        _ if bytes.len() >= 12 => (
            u64::from(u32::from_le_bytes([
                bytes[8], bytes[9], bytes[10], bytes[11],
            ])),
            12,
        ),
        _ => return Err("truncated header".into()),
    };
    let room = (bytes.len() - start) as u64;
    if len > room {
        return Err(format!(
            "the header claims {len} bytes but the file holds {room} after its {start}-byte \
             preamble (truncated?)"
        ));
    }
    Ok(())
}

fn read_array(path: &Path) -> Result<Array, NpyError> {
    let bytes = std::fs::read(path).map_err(|error| NpyError::Io {
        path: path.to_owned(),
        error,
    })?;
    check_preamble(&bytes).map_err(|reason| format_error(path, reason))?;
    let mut rest = bytes.as_slice();
    let header = Header::from_reader(&mut rest).map_err(|e| {
        format_error(
            path,
            match e {
                ReadHeaderError::Io(e) => format!("truncated or unreadable header ({e})"),
                ReadHeaderError::Parse(e) => format!("bad header: {e}"),
            },
        )
    })?;
    if header.layout.is_fortran() {
        return Err(format_error(
            path,
            "Fortran-ordered (save a C-contiguous array)",
        ));
    }
    let descr = match header.type_descriptor.as_string() {
        Some(descr) => descr.clone(),
        // A structured dtype: a list of fields, which no command reads.
        None => header.type_descriptor.to_string(),
    };
    Ok(Array {
        descr,
        data: rest.to_vec(),
        header,
    })
}

impl Array {
    /// The tensor of `kind`, whose elements are `T`, after checking that the data hold exactly
    /// the header's shape.
    fn into_tensor<T: ReadableElement + tch::kind::Element>(
        self,
        path: &Path,
    ) -> Result<Tensor, NpyError> {
        let shape = &self.header.shape;
        let elements = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        let bytes = elements.and_then(|n| n.checked_mul(std::mem::size_of::<T>()));
        let (Some(elements), Some(bytes)) = (elements, bytes) else {
            return Err(format_error(
                path,
                format!(
                    "the shape {} of '{}' overflows: more bytes than memory can address",
                    shape_text(shape),
                    self.descr
                ),
            ));
        };
        if self.data.len() != bytes {
            return Err(format_error(
                path,
                format!(
                    "the shape {} of '{}' needs {bytes} bytes of data, the file holds {}",
                    shape_text(shape),
                    self.descr,
                    self.data.len()
                ),
            ));
        }
        let dims = shape
            .iter()
            .map(|&d| i64::try_from(d))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| format_error(path, format!("bad shape {}", shape_text(shape))))?;
        let values =
            T::read_to_end_exact_vec(self.data.as_slice(), &self.header.type_descriptor, elements)
                .map_err(|e| format_error(path, e.to_string()))?;
        Tensor::from_slice(&values)
            .f_reshape(dims)
            .map_err(|e| format_error(path, e.to_string()))
    }
}

/// Reads a `[batch, dim]` float32 (`<f4`) or float64 (`<f8`) array of embeddings, with at least
/// one row and one column, every value finite and no row of norm 0. Big-endian arrays (`>f4`,
/// `>f8`) are read too.
pub fn read_embeddings(path: &Path) -> Result<Tensor, NpyError> {
    let array = read_array(path)?;
    let float64 = match array.descr.as_str() {
        "<f4" | ">f4" => false,
        "<f8" | ">f8" => true,
        other => {
            return Err(content_error(
                path,
                format!("embeddings must be float32 ('<f4') or float64 ('<f8'), got '{other}' (use .astype(numpy.float32))"),
            ))
        }
    };
    let shape = &array.header.shape;
    if shape.len() != 2 || shape[0] == 0 || shape[1] == 0 {
        return Err(content_error(
            path,
            format!(
                "embeddings must be a [batch, dim] array with batch, dim >= 1, got shape {}",
                shape_text(shape)
            ),
        ));
    }
    let embeddings = if float64 {
        array.into_tensor::<f64>(path)?
    } else {
        array.into_tensor::<f32>(path)?
    };
    if !bool::try_from(embeddings.isfinite().all()).unwrap_or(false) {
        return Err(content_error(
            path,
            "embeddings contain NaN or infinite values",
        ));
    }
    let zero_rows = embeddings.abs().amax([1], false).eq(0.0).nonzero();
    if zero_rows.size()[0] > 0 {
        let row = zero_rows.int64_value(&[0, 0]);
        return Err(content_error(
            path,
            format!("embedding row {row} is all zeros: it has no direction to compare"),
        ));
    }
    Ok(embeddings)
}

/// Reads the int64 (`<i8`, or big-endian `>i8`) labels `[batch]` that go with `batch`
/// embeddings.
pub fn read_labels(path: &Path, batch: i64) -> Result<Tensor, NpyError> {
    let array = read_array(path)?;
    if !["<i8", ">i8"].contains(&array.descr.as_str()) {
        return Err(content_error(
            path,
            format!(
                "labels must be int64 ('<i8'), got '{}' (use .astype(numpy.int64))",
                array.descr
            ),
        ));
    }
    if usize::try_from(batch).map_or(true, |b| array.header.shape != [b]) {
        return Err(content_error(
            path,
            format!(
                "labels must have shape ({batch},), one per embedding, got shape {}",
                shape_text(&array.header.shape)
            ),
        ));
    }
    array.into_tensor::<i64>(path)
}

/// Writes `tensor` to `path` as an `.npy` array of its kind.
pub fn write(tensor: &Tensor, path: &Path) -> Result<(), NpyError> {
    tensor.write_npy(path).map_err(|error| match error {
        tch::TchError::Io(error) => NpyError::Io {
            path: path.to_owned(),
            error,
        },
        error => NpyError::Write {
            path: path.to_owned(),
            error,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    /// An `.npy` file as numpy writes it (format 1.0, header padded to 64 bytes).
    fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        with_header(header, data)
    }

    /// A format 1.0 `.npy` file with the header text `header` (padded as numpy pads it).
    fn with_header(mut header: String, data: &[u8]) -> Vec<u8> {
        while !(10 + header.len() + 1).is_multiple_of(64) {
            header.push(' ');
        }
        header.push('\n');
        let mut bytes = MAGIC.to_vec();
        bytes.extend([1, 0]);
        bytes.extend((header.len() as u16).to_le_bytes());
        bytes.extend(header.as_bytes());
        bytes.extend(data);
        bytes
    }

    fn floats(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    fn error_of(dir: &Path, name: &str, bytes: &[u8], labels: bool) -> String {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let result = if labels {
            read_labels(&path, 2).map(drop)
        } else {
            read_embeddings(&path).map(drop)
        };
        result.unwrap_err().to_string()
    }

    #[test]
    fn reads_what_numpy_writes_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.npy");
        std::fs::write(
            &path,
            npy("<f4", "(2, 3)", &floats(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.5])),
        )
        .unwrap();
        let e = read_embeddings(&path).unwrap();
        assert_eq!((e.size(), e.kind()), (vec![2, 3], Kind::Float));
        assert_eq!(e.double_value(&[1, 2]), 6.5);
        let labels: Vec<u8> = [7i64, -1].iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(dir.path().join("l.npy"), npy("<i8", "(2,)", &labels)).unwrap();
        let l = read_labels(&dir.path().join("l.npy"), 2).unwrap();
        assert_eq!(Vec::<i64>::try_from(&l).unwrap(), [7, -1]);
        let out = dir.path().join("g.npy");
        write(&(e * 2.0), &out).unwrap();
        assert_eq!(read_embeddings(&out).unwrap().double_value(&[1, 2]), 13.0);
    }

    #[test]
    fn errors_name_the_file_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let missing = read_embeddings(&d.join("absent.npy"))
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("absent.npy") && missing.contains("No such file"),
            "{missing}"
        );
        let cases = [
            ("text.npy", b"hello".to_vec(), false, "no .npy magic string"),
            (
                "f16.npy",
                npy("<f2", "(1, 2)", &[0; 4]),
                false,
                "must be float32 ('<f4') or float64",
            ),
            (
                "flat.npy",
                npy("<f4", "(2,)", &floats(&[1.0, 2.0])),
                false,
                "got shape (2,)",
            ),
            (
                "cut.npy",
                npy("<f4", "(2, 2)", &floats(&[1.0, 2.0, 3.0])),
                false,
                "needs 16 bytes of data, the file holds 12",
            ),
            (
                "nan.npy",
                npy("<f4", "(1, 2)", &floats(&[1.0, f32::NAN])),
                false,
                "NaN or infinite",
            ),
            (
                "zero.npy",
                npy("<f4", "(2, 1)", &floats(&[1.0, 0.0])),
                false,
                "row 1 is all zeros",
            ),
            (
                "i32.npy",
                npy("<i4", "(2,)", &[0; 8]),
                true,
                "labels must be int64 ('<i8'), got '<i4'",
            ),
            (
                "three.npy",
                npy("<i8", "(3,)", &[0; 24]),
                true,
                "shape (2,), one per embedding, got shape (3,)",
            ),
        ];
        for (name, bytes, labels, expected) in cases {
            let message = error_of(d, name, &bytes, labels);
            assert!(
                message.starts_with(&d.join(name).display().to_string()),
                "{message}"
            );
            assert!(message.contains(expected), "{name}: {message}");
        }
    }

    #[test]
    fn overflowing_headers_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut long_v1 = npy("<f4", "(1, 2)", &floats(&[1.0, 2.0]));
        long_v1[8..10].copy_from_slice(&u16::MAX.to_le_bytes());
        let mut long_v2 = MAGIC.to_vec();
        long_v2.extend([2, 0]);
        long_v2.extend(u32::MAX.to_le_bytes());
        long_v2.extend(b"{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2), }\n");
        let cases = [
            (
                "long-v1.npy",
                long_v1,
                "the header claims 65535 bytes but the file holds",
            ),
            ("long-v2.npy", long_v2, "the header claims 4294967295 bytes"),
            (
                "elements.npy",
                npy("<f4", "(1099511627776, 1099511627776)", &floats(&[1.0])),
                "the shape (1099511627776, 1099511627776) of '<f4' overflows",
            ),
            (
                "bytes.npy",
                npy("<f8", "(4611686018427387904, 2)", &floats(&[1.0])),
                "of '<f8' overflows",
            ),
            (
                "beyond.npy",
                npy("<f4", "(1000000, 512)", &floats(&[1.0, 2.0])),
                "needs 2048000000 bytes of data, the file holds 8",
            ),
            (
                "beyond-usize.npy",
                npy("<f4", "(100000000000000000000000, 2)", &floats(&[1.0])),
                "bad header",
            ),
            (
                "garbled.npy",
                with_header(
                    "{'descr': '<f4', 'shape': (1, 2".into(),
                    &floats(&[1.0, 2.0]),
                ),
                "bad header",
            ),
            (
                "cut-header.npy",
                npy("<f4", "(1, 2)", &[])[..30].to_vec(),
                "the header claims",
            ),
        ];
        for (name, bytes, expected) in cases {
            let message = error_of(d, name, &bytes, false);
            assert!(
                message.starts_with(&d.join(name).display().to_string()),
                "{message}"
            );
            assert!(message.contains(expected), "{name}: {message}");
        }
    }

    #[test]
    fn big_endian_arrays_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("be.npy");
        let data: Vec<u8> = [1.5f64, -2.0]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect();
        std::fs::write(&path, npy(">f8", "(1, 2)", &data)).unwrap();
        let e = read_embeddings(&path).unwrap();
        assert_eq!((e.kind(), e.double_value(&[0, 1])), (Kind::Double, -2.0));
    }
}
