//! Checkpoints: named tensors in one safetensors file, written atomically.
//!
//! A backbone's variables are named `<arch>.<layer>...` (see [`crate::backbone::Arch::build`]).
//! A checkpoint from `import` holds only those; one from `fit` also holds the ArcFace head
//! (`head.*`), Adam's moments (`adam.*`) and the training position (`train.*`), so that one
//! file is the whole state of a run and a resumed run can never pair weights with the moments
//! of another epoch. Readers take the entries they need and ignore the rest.
//!
//! Checkpoints are read back after crashes, copies and hand edits, so [`read`] checks the whole
//! safetensors layout first (header length, JSON, every tensor's dtype, shape and byte range)
//! and says what is wrong, naming the file: a truncated or tampered file is an error, never a
//! panic or an allocation of what a damaged header claims.

use crate::backbone::{Arch, Backbone, Options};
use anyhow::{anyhow, bail, Context, Result};
use safetensors::SafeTensors;
use serde::Deserialize;
use smoothface_shared::atomic::write_atomically;
use std::collections::HashMap;
use std::path::Path;
use tch::{nn, Tensor};

/// Reads every tensor of the safetensors file at `path`, by name, onto the CPU.
pub fn read(path: &Path) -> Result<HashMap<String, Tensor>> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("{}: cannot read the checkpoint", path.display()))?;
    let not_readable = |cause: String| {
        anyhow!(
            "{}: not a readable safetensors checkpoint: {cause}",
            path.display()
        )
    };
    check_layout(&bytes).map_err(not_readable)?;
    // The layout is checked: what safetensors and tch could still refuse is reported as they
    // say it.
    let file = SafeTensors::deserialize(&bytes).map_err(|e| not_readable(format!("{e:?}")))?;
    file.tensors()
        .into_iter()
        .map(|(name, view)| {
            let tensor = Tensor::try_from(view)
                .map_err(|e| not_readable(format!("tensor `{name}`: {e}")))?;
            Ok((name, tensor))
        })
        .collect()
}

/// One tensor's entry in a safetensors header.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TensorEntry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

/// Bytes per element of the safetensors dtypes libtorch holds (tch reads no other).
fn dtype_size(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" => 1,
        "I16" | "F16" | "BF16" => 2,
        "I32" | "F32" => 4,
        "I64" | "F64" => 8,
        _ => return None,
    })
}

/// Checks that `bytes` are a whole safetensors file: an 8-byte little-endian header length
/// `N` that the file holds, `N` bytes of JSON (`{name: {dtype, shape, data_offsets: [b, e]}}`
/// and an optional `__metadata__`), then the data, which the tensors tile exactly, each
/// spanning `shape x dtype` bytes. The error is the cause in words.
fn check_layout(bytes: &[u8]) -> Result<(), String> {
    let Some(length) = bytes.get(..8) else {
        return Err(format!(
            "{} bytes, too short for the 8-byte header length (truncated?)",
            bytes.len()
        ));
    };
    let n = u64::from_le_bytes(length.try_into().expect("8 bytes"));
    let rest = &bytes[8..];
    let header_len = usize::try_from(n)
        .ok()
        .filter(|&n| n <= rest.len())
        .ok_or_else(|| {
            format!(
                "the header claims {n} bytes but only {} follow its length (truncated?)",
                rest.len()
            )
        })?;
    let (header, data) = rest.split_at(header_len);
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(header)
        .map_err(|e| format!("its {n}-byte header is not a JSON object: {e}"))?;
    let mut spans = Vec::new();
    for (name, entry) in header {
        if name == "__metadata__" {
            continue;
        }
        let entry = TensorEntry::deserialize(&entry)
            .map_err(|e| format!("the header's entry for tensor `{name}` is malformed: {e}"))?;
        let size = dtype_size(&entry.dtype).ok_or_else(|| {
            format!(
                "tensor `{name}` has dtype {:?}, which libtorch does not hold",
                entry.dtype
            )
        })?;
        let [begin, end] = entry.data_offsets;
        if begin > end || end > data.len() as u64 {
            return Err(format!(
                "tensor `{name}` claims bytes {begin}..{end} of the data, which has {} \
                 (truncated or tampered)",
                data.len()
            ));
        }
        // libtorch sizes are i64.
        let needed = entry.shape.iter().try_fold(size, |n, &d| {
            n.checked_mul(d).filter(|_| i64::try_from(d).is_ok())
        });
        if needed != Some(end - begin) {
            return Err(format!(
                "tensor `{name}` of shape {:?} and dtype {} needs {} bytes, but its data_offsets \
                 span {} (tampered)",
                entry.shape,
                entry.dtype,
                needed.map_or_else(|| "more than 2^63".to_owned(), |n| n.to_string()),
                end - begin
            ));
        }
        spans.push((begin, end, name));
    }
    spans.sort();
    let mut at = 0;
    for (begin, end, name) in spans {
        if begin != at {
            return Err(format!(
                "tensor `{name}` starts at byte {begin} of the data, but the tensor before it \
                 ends at {at} (tampered)"
            ));
        }
        at = end;
    }
    if at != data.len() as u64 {
        return Err(format!(
            "the tensors end at byte {at} of the data, but the file holds {} bytes of data \
             (tampered)",
            data.len()
        ));
    }
    Ok(())
}

/// A checkpoint's backbone, built on the CPU with the checkpoint's weights.
pub struct LoadedBackbone {
    /// The variables the backbone's layers hold (keep it alive; move it with `set_device`).
    pub vars: nn::VarStore,
    /// The backbone.
    pub backbone: Box<dyn Backbone>,
    /// Its architecture, read from the checkpoint's variable names.
    pub arch: Arch,
}

/// Reads `path` and builds the backbone it holds (default [`Options`]: evaluation and export
/// need no training choices) with its weights.
pub fn load_backbone(path: &Path) -> Result<LoadedBackbone> {
    let tensors = read(path)?;
    let arch = arch_of(&tensors, path)?;
    let vars = nn::VarStore::new(tch::Device::Cpu);
    let backbone = arch.build(&vars.root(), Options::default());
    load_into(&vars, arch.name(), &tensors, path)?;
    Ok(LoadedBackbone {
        vars,
        backbone,
        arch,
    })
}

/// The architecture whose variables `tensors` holds.
fn arch_of(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<Arch> {
    Arch::ALL
        .into_iter()
        .find(|arch| {
            let prefix = format!("{}.", arch.name());
            tensors.keys().any(|k| k.starts_with(&prefix))
        })
        .ok_or_else(|| {
            let prefixes: Vec<String> = Arch::ALL.iter().map(|a| format!("{a}.*")).collect();
            anyhow!(
                "{}: holds no backbone (no {} variables)",
                path.display(),
                prefixes.join(", ")
            )
        })
}

/// Writes `tensors` to `path` (its name must end in `.safetensors`) atomically: `path` is
/// always either the old file or the whole new one, even if the process is killed while
/// writing.
pub fn write(tensors: &[(String, Tensor)], path: &Path) -> Result<()> {
    if path.extension().is_none_or(|e| e != "safetensors") {
        bail!(
            "{}: the checkpoint's name must end in .safetensors",
            path.display()
        );
    }
    let cpu: Vec<(&str, Tensor)> = tensors
        .iter()
        .map(|(name, t)| (name.as_str(), t.to_device(tch::Device::Cpu)))
        .collect();
    // tch writes to a path; the temporary file's ends in .safetensors like `path`'s.
    write_atomically(path, |tmp| -> Result<()> {
        Ok(Tensor::write_safetensors(&cpu, tmp.path())?)
    })
    .with_context(|| format!("{}: cannot write the checkpoint", path.display()))
}

/// The variables of `vs` whose names start with `prefix.` (all of them for an empty prefix),
/// sorted by name.
pub fn variables(vs: &nn::VarStore, prefix: &str) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(name, _)| prefix.is_empty() || name.starts_with(&format!("{prefix}.")))
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// Copies the entries of `tensors` into the variables of `vs` under `prefix` (see
/// [`variables`]); every such variable must be present with its shape. `source` names the
/// checkpoint in errors.
pub fn load_into(
    vs: &nn::VarStore,
    prefix: &str,
    tensors: &HashMap<String, Tensor>,
    source: &Path,
) -> Result<usize> {
    let vars = variables(vs, prefix);
    for (name, var) in &vars {
        let value = tensors.get(name).ok_or_else(|| {
            anyhow!(
                "{}: has no `{name}` (is it a checkpoint of this architecture?)",
                source.display()
            )
        })?;
        if value.size() != var.size() {
            bail!(
                "{}: `{name}` has shape {:?}, the model needs {:?}",
                source.display(),
                value.size(),
                var.size()
            );
        }
        tch::no_grad(|| var.shallow_clone().f_copy_(value))
            .with_context(|| format!("{}: cannot load `{name}`", source.display()))?;
    }
    Ok(vars.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn written_tensors_read_back_equal_and_no_temporary_file_remains() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.safetensors");
        let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
        let b = Tensor::from_slice(&[7i64]);
        write(
            &[
                ("a".into(), a.shallow_clone()),
                ("b".into(), b.shallow_clone()),
            ],
            &path,
        )
        .unwrap();
        let back = read(&path).unwrap();
        assert_eq!(back["a"], a);
        assert_eq!(back["b"], b);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "only the checkpoint is left");
        assert!(write(&[], &dir.path().join("c.bin")).is_err());
    }

    /// A checkpoint written by [`write`] in `dir`: `a`, three f32, and `b`, one i64.
    fn written(dir: &Path) -> (std::path::PathBuf, Vec<u8>) {
        let path = dir.join("c.safetensors");
        let tensors = [
            ("a".to_string(), Tensor::from_slice(&[1.0f32, 2.0, 3.0])),
            ("b".to_string(), Tensor::from_slice(&[7i64])),
        ];
        write(&tensors, &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        (path, bytes)
    }

    /// The header length of a safetensors file.
    fn header_len(bytes: &[u8]) -> usize {
        u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize
    }

    /// `bytes` with its JSON header replaced by `header` (the data kept).
    fn with_header(bytes: &[u8], header: &str) -> Vec<u8> {
        let data = &bytes[8 + header_len(bytes)..];
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend(header.as_bytes());
        out.extend(data);
        out
    }

    /// `bytes` with `edit` applied to its header, parsed as JSON.
    fn edited(bytes: &[u8], edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
        let mut header: serde_json::Value =
            serde_json::from_slice(&bytes[8..8 + header_len(bytes)]).unwrap();
        edit(&mut header);
        with_header(bytes, &header.to_string())
    }

    /// The error of reading `bytes` as the checkpoint `path`, which must name the file.
    fn error_of(path: &Path, bytes: &[u8]) -> String {
        std::fs::write(path, bytes).unwrap();
        let message = format!("{:#}", read(path).unwrap_err());
        assert!(
            message.starts_with(&path.display().to_string()),
            "{message}"
        );
        message
    }

    #[test]
    fn truncated_checkpoints_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (path, bytes) = written(dir.path());
        let data_start = 8 + header_len(&bytes);
        for cut in [0, 5, 8, 9, data_start - 1, data_start, bytes.len() - 1] {
            let message = error_of(&path, &bytes[..cut]);
            assert!(message.contains("truncated"), "cut at {cut}: {message}");
        }
        // A byte too many is not a whole checkpoint either.
        let longer = [bytes.as_slice(), &[0]].concat();
        assert!(error_of(&path, &longer).contains("tampered"));
    }

    #[test]
    fn tampered_headers_are_errors_naming_the_cause() {
        let dir = tempfile::tempdir().unwrap();
        let (path, bytes) = written(dir.path());
        let cases: Vec<(Vec<u8>, String)> = vec![
            (
                edited(&bytes, |h| h["a"]["data_offsets"][1] = 1_000_000.into()),
                "claims bytes".into(),
            ),
            (
                edited(&bytes, |h| h["a"]["shape"] = serde_json::json!([1000])),
                "needs 4000 bytes, but its data_offsets span 12".into(),
            ),
            (
                edited(&bytes, |h| {
                    h["a"]["shape"] = serde_json::json!([1u64 << 62, 1u64 << 62])
                }),
                "needs more than 2^63 bytes".into(),
            ),
            (
                edited(&bytes, |h| h["a"]["dtype"] = "F8_E4M3".into()),
                "has dtype \"F8_E4M3\", which libtorch does not hold".into(),
            ),
            (
                // The later tensor moved 4 bytes back, over the end of the earlier one.
                edited(&bytes, |h| {
                    let begin = |h: &serde_json::Value, t: &str| h[t]["data_offsets"][0].as_u64();
                    let later = if begin(h, "a") > begin(h, "b") {
                        "a"
                    } else {
                        "b"
                    };
                    for k in 0..2 {
                        let v = h[later]["data_offsets"][k].as_u64().unwrap();
                        h[later]["data_offsets"][k] = (v - 4).into();
                    }
                }),
                "ends at".into(),
            ),
            (
                edited(&bytes, |h| h["a"]["shape"] = "three".into()),
                "entry for tensor `a` is malformed".into(),
            ),
            (
                with_header(&bytes, "{\"a\": {\"dtype\": \"F32\", \"sha"),
                "header is not a JSON object".into(),
            ),
            (
                [&u64::MAX.to_le_bytes()[..], &bytes[8..]].concat(),
                format!("claims {} bytes", u64::MAX),
            ),
        ];
        for (tampered, expected) in cases {
            let message = error_of(&path, &tampered);
            assert!(message.contains(&expected), "{expected:?}: {message}");
        }
    }

    #[test]
    fn load_into_checks_names_and_shapes() {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().sub("net").var("w", &[2], nn::Init::Const(0.0));
        let path = Path::new("test.safetensors");
        let good = HashMap::from([
            ("net.w".to_string(), Tensor::from_slice(&[4.0f32, 5.0])),
            ("other".to_string(), Tensor::from_slice(&[1.0f32])),
        ]);
        assert_eq!(load_into(&vs, "net", &good, path).unwrap(), 1);
        assert_eq!(w, Tensor::from_slice(&[4.0f32, 5.0]));
        let wrong_shape = HashMap::from([(
            "net.w".to_string(),
            Tensor::zeros([3], (Kind::Float, Device::Cpu)),
        )]);
        let err = load_into(&vs, "net", &wrong_shape, path).unwrap_err();
        assert!(err.to_string().contains("shape"), "{err}");
        let missing = HashMap::new();
        assert!(load_into(&vs, "net", &missing, path)
            .unwrap_err()
            .to_string()
            .contains("net.w"));
    }
}
