//! The `.npy` files the command line exchanges with Python (`numpy.save` / `numpy.load`):
//! embeddings and labels read with every check done before the data reach libtorch, gradients
//! written back.
//!
//! tch's own reader trusts the header's shape and copies that many bytes whatever the file holds,
//! so a truncated file would be read past its end; this reader checks the length first, and every
//! error names the file.

use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

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
    descr: String,
    shape: Vec<i64>,
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
fn shape_text(shape: &[i64]) -> String {
    match shape {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The value of `'key': value` in a header dictionary, up to the next top-level comma.
fn header_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let start = header.find(&format!("'{key}'"))? + key.len() + 2;
    let rest = header[start..].trim_start().strip_prefix(':')?.trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else {
        rest.find([',', '}'])?
    };
    Some(rest[..end].trim())
}

fn read_array(path: &Path) -> Result<Array, NpyError> {
    let bytes = std::fs::read(path).map_err(|error| NpyError::Io {
        path: path.to_owned(),
        error,
    })?;
    if !bytes.starts_with(MAGIC) || bytes.len() < 10 {
        return Err(format_error(
            path,
            "no .npy magic string (write it with numpy.save)",
        ));
    }
    let (len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        version => {
            return Err(format_error(
                path,
                format!("unsupported format version {version}"),
            ))
        }
    };
    let header = bytes
        .get(start..start + len)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| format_error(path, "truncated or unreadable header"))?;
    let descr = header_value(header, "descr")
        .map(|d| d.trim_matches('\'').to_owned())
        .ok_or_else(|| format_error(path, "header without 'descr'"))?;
    if header_value(header, "fortran_order") != Some("False") {
        return Err(format_error(
            path,
            "Fortran-ordered (save a C-contiguous array)",
        ));
    }
    let shape = header_value(header, "shape")
        .and_then(|s| s.strip_prefix('(')?.strip_suffix(')'))
        .ok_or_else(|| format_error(path, "header without 'shape'"))?;
    let shape = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<i64>().ok().filter(|n| *n >= 0))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| format_error(path, format!("bad shape ({shape})")))?;
    Ok(Array {
        descr,
        shape,
        data: bytes[start + len..].to_vec(),
    })
}

impl Array {
    /// The tensor of `kind`, after checking that the data hold exactly the header's shape.
    fn into_tensor(self, path: &Path, kind: Kind, item: usize) -> Result<Tensor, NpyError> {
        let elements = self.shape.iter().product::<i64>() as usize;
        if self.data.len() != elements * item {
            return Err(format_error(
                path,
                format!(
                    "the shape {} of '{}' needs {} bytes of data, the file holds {}",
                    shape_text(&self.shape),
                    self.descr,
                    elements * item,
                    self.data.len()
                ),
            ));
        }
        Tensor::f_from_data_size(&self.data, &self.shape, kind)
            .map_err(|e| format_error(path, e.to_string()))
    }
}

/// Reads a `[batch, dim]` float32 (`<f4`) or float64 (`<f8`) array of embeddings, with at least
/// one row and one column, every value finite and no row of norm 0.
pub fn read_embeddings(path: &Path) -> Result<Tensor, NpyError> {
    let array = read_array(path)?;
    let (kind, item) = match array.descr.as_str() {
        "<f4" => (Kind::Float, 4),
        "<f8" => (Kind::Double, 8),
        other => {
            return Err(content_error(
                path,
                format!("embeddings must be float32 ('<f4') or float64 ('<f8'), got '{other}' (use .astype(numpy.float32))"),
            ))
        }
    };
    let shape = array.shape.clone();
    if shape.len() != 2 || shape[0] == 0 || shape[1] == 0 {
        return Err(content_error(
            path,
            format!(
                "embeddings must be a [batch, dim] array with batch, dim >= 1, got shape {}",
                shape_text(&shape)
            ),
        ));
    }
    let embeddings = array.into_tensor(path, kind, item)?;
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

/// Reads the int64 (`<i8`) labels `[batch]` that go with `batch` embeddings.
pub fn read_labels(path: &Path, batch: i64) -> Result<Tensor, NpyError> {
    let array = read_array(path)?;
    if array.descr != "<i8" {
        return Err(content_error(
            path,
            format!(
                "labels must be int64 ('<i8'), got '{}' (use .astype(numpy.int64))",
                array.descr
            ),
        ));
    }
    if array.shape != [batch] {
        return Err(content_error(
            path,
            format!(
                "labels must have shape ({batch},), one per embedding, got shape {}",
                shape_text(&array.shape)
            ),
        ));
    }
    array.into_tensor(path, Kind::Int64, 8)
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

    /// An `.npy` file as numpy writes it (format 1.0, header padded to 64 bytes).
    fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
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
}
