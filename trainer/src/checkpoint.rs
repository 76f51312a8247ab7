//! Checkpoints: named tensors in one safetensors file, written atomically.
//!
//! A backbone's variables are named `<arch>.<layer>...` (see [`crate::backbone::Arch::build`]).
//! A checkpoint from `import` holds only those; one from `fit` also holds the ArcFace head
//! (`head.*`), Adam's moments (`adam.*`) and the training position (`train.*`), so that one
//! file is the whole state of a run and a resumed run can never pair weights with the moments
//! of another epoch. Readers take the entries they need and ignore the rest.

use anyhow::{anyhow, bail, Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{nn, Tensor};

/// Reads every tensor of the safetensors file at `path`, by name, onto the CPU.
pub fn read(path: &Path) -> Result<HashMap<String, Tensor>> {
    let tensors = Tensor::read_safetensors(path).map_err(|e| {
        anyhow!(
            "{}: not a readable safetensors checkpoint: {e}",
            path.display()
        )
    })?;
    Ok(tensors.into_iter().collect())
}

/// Writes `tensors` to `path` (its name must end in `.safetensors`) under a temporary name in
/// the same folder and renames it, so that `path` is always either the old file or the whole
/// new one, even if the process is killed while writing.
pub fn write(tensors: &[(String, Tensor)], path: &Path) -> Result<()> {
    if path.extension().is_none_or(|e| e != "safetensors") {
        bail!(
            "{}: the checkpoint's name must end in .safetensors",
            path.display()
        );
    }
    let tmp = temporary_name(path);
    let cpu: Vec<(&str, Tensor)> = tensors
        .iter()
        .map(|(name, t)| (name.as_str(), t.to_device(tch::Device::Cpu)))
        .collect();
    let written = Tensor::write_safetensors(&cpu, &tmp)
        .map_err(|e| anyhow!("{}: cannot write the checkpoint: {e}", tmp.display()))
        .and_then(|()| {
            std::fs::rename(&tmp, path)
                .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
        });
    if written.is_err() {
        // Best effort: the error that matters is the one being returned.
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// `dir/.name.<pid>.tmp.safetensors` beside `path`: same file system, so the rename is atomic,
/// and the extension still tells tch to write safetensors.
pub fn temporary_name(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".{name}.{}.tmp.safetensors", std::process::id()))
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
        tch::no_grad(|| var.shallow_clone().copy_(value));
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
