//! Where the device finds its models at run time, and how they are installed there.
//!
//! Nothing is compiled in from the source tree: a `smoothface` binary copied to a board, unpacked
//! from a bundle or installed with `cargo install` looks in these places, in order, and takes the
//! first that holds the model's folder (`NAME/manifest.json`):
//!
//! 1. `--models DIR`;
//! 2. `$SMOOTHFACE_MODELS`;
//! 3. `models/` beside the executable (a release bundle's layout);
//! 4. `$XDG_DATA_HOME/smoothface/models` (default `~/.local/share/smoothface/models`), where
//!    `smoothface models install` and `scripts/setup` put them.
//!
//! The pretrained models are pinned: their manifests are part of the binary, so `models install`
//! accepts only files whose sha256 is the pinned one, wherever they are copied from.

use anyhow::{bail, Context, Result};
use serde::Serialize;
use smoothface_shared::manifest::{sha256_file, ModelManifest, MANIFEST_FILE};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Folder name of the default embedder: insightface's MobileFaceNet trained with ArcFace on
/// WebFace600K (weights for non-commercial research use).
pub const EMBEDDER: &str = "w600k_mbf";
/// Folder name of the embedder under a permissive licence (MIT): `--model mobilefacenet`.
pub const PERMISSIVE_EMBEDDER: &str = "mobilefacenet";
/// Folder name of the default detector.
pub const DETECTOR: &str = "mtcnn";
/// Folder name of the SCRFD detector: `--detector scrfd`.
pub const SCRFD: &str = "scrfd";

/// The pinned manifests of the pretrained models, by folder name.
pub const PINNED: [(&str, &str); 4] = [
    (
        EMBEDDER,
        include_str!("../../models/w600k_mbf/manifest.json"),
    ),
    (
        PERMISSIVE_EMBEDDER,
        include_str!("../../models/mobilefacenet/manifest.json"),
    ),
    (DETECTOR, include_str!("../../models/mtcnn/manifest.json")),
    (SCRFD, include_str!("../../models/scrfd/manifest.json")),
];

/// One place models are looked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Place {
    /// How the place was chosen, as the user would name it (`--models`, `$SMOOTHFACE_MODELS`...).
    pub origin: &'static str,
    /// The folder; `None` when that source is not set (no `--models`, no variable).
    pub dir: Option<PathBuf>,
}

/// The places, in the order they are searched.
#[derive(Debug, Clone)]
pub struct ModelPlaces {
    places: Vec<Place>,
}

impl ModelPlaces {
    /// The places for this process: `--models` as given, then the environment and the executable.
    pub fn for_process(flag: Option<&Path>) -> ModelPlaces {
        let exe = std::env::current_exe()
            .ok()
            .and_then(|e| e.canonicalize().ok());
        ModelPlaces::new(
            flag.map(Path::to_path_buf),
            std::env::var_os("SMOOTHFACE_MODELS").map(PathBuf::from),
            exe.as_deref().and_then(Path::parent).map(Path::to_path_buf),
            data_home(),
        )
    }

    /// The places from their sources: the `--models` flag, `$SMOOTHFACE_MODELS`, the folder of the
    /// executable and the user's data folder (`$XDG_DATA_HOME` or `~/.local/share`).
    pub fn new(
        flag: Option<PathBuf>,
        env: Option<PathBuf>,
        exe_dir: Option<PathBuf>,
        data_home: Option<PathBuf>,
    ) -> ModelPlaces {
        let non_empty = |p: Option<PathBuf>| p.filter(|p| !p.as_os_str().is_empty());
        ModelPlaces {
            places: vec![
                Place {
                    origin: "--models",
                    dir: non_empty(flag),
                },
                Place {
                    origin: "$SMOOTHFACE_MODELS",
                    dir: non_empty(env),
                },
                Place {
                    origin: "beside the executable",
                    dir: exe_dir.map(|d| d.join("models")),
                },
                Place {
                    origin: "user data ($XDG_DATA_HOME or ~/.local/share)",
                    dir: install_dir_in(data_home),
                },
            ],
        }
    }

    /// Every place, searched or not.
    pub fn places(&self) -> &[Place] {
        &self.places
    }

    /// Where `models install` writes unless told otherwise: the user data place.
    pub fn install_dir(&self) -> Option<&Path> {
        self.places.last().and_then(|p| p.dir.as_deref())
    }

    /// The first place holding `name/manifest.json`, with that place.
    pub fn locate(&self, name: &str) -> Option<(PathBuf, &Place)> {
        self.places.iter().find_map(|place| {
            let dir = place.dir.as_ref()?.join(name);
            dir.join(MANIFEST_FILE).is_file().then_some((dir, place))
        })
    }

    /// The folder of model `name`, or an error naming every place looked at and how to install it.
    pub fn find(&self, name: &str) -> Result<PathBuf> {
        if let Some((dir, _)) = self.locate(name) {
            return Ok(dir);
        }
        let mut msg = format!("no `{name}` model found; looked for {name}/{MANIFEST_FILE} in:");
        for p in &self.places {
            match &p.dir {
                Some(d) => write!(msg, "\n  {}: {}", p.origin, d.display()),
                None => write!(msg, "\n  {}: (not set)", p.origin),
            }
            .expect("writing to a String");
        }
        msg.push_str(
            "\ninstall the pretrained models with `scripts/setup` in the source tree, or with \
             `smoothface models install --from DIR` from a bundle's or a source tree's models folder",
        );
        bail!(msg)
    }
}

/// The user's data folder: `$XDG_DATA_HOME`, else `$HOME/.local/share`.
pub fn data_home() -> Option<PathBuf> {
    std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/share")))
}

fn install_dir_in(data_home: Option<PathBuf>) -> Option<PathBuf> {
    data_home.map(|d| d.join("smoothface/models"))
}

/// A model given by the user (`--model`, `--detector`): a folder, or the name of an installed
/// model (`--model mobilefacenet`) looked for in the places. A path that is neither is an error,
/// so that a typo is told apart from a missing installation.
pub fn given_folder(dir: &Path, flag: &str, places: &ModelPlaces) -> Result<PathBuf> {
    if dir.is_dir() {
        return Ok(dir.to_path_buf());
    }
    let is_name = dir.components().count() == 1 && !dir.as_os_str().is_empty();
    if is_name {
        if let Some((found, _)) = dir.to_str().and_then(|name| places.locate(name)) {
            return Ok(found);
        }
        bail!(
            "{flag} {}: no such model folder, and no installed model of that name (`smoothface \
             models list` lists them)",
            dir.display()
        );
    }
    bail!("{flag} {}: no such model folder", dir.display());
}

/// The identity of the model in `dir` as its manifest states it (its first file's sha256),
/// without hashing the files: to find a model by identity cheaply; loading it checks the hashes.
pub fn stated_id(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(MANIFEST_FILE)).ok()?;
    let manifest: ModelManifest = serde_json::from_str(&text).ok()?;
    Some(manifest.files.first()?.sha256.to_ascii_lowercase())
}

/// The installed folder of the model whose identity is `id`: `hint` (where it was last loaded
/// from) if it still holds it, else the first pinned model's folder in the places that does.
pub fn find_by_id(places: &ModelPlaces, id: &str, hint: Option<&Path>) -> Option<PathBuf> {
    let holds = |dir: &Path| stated_id(dir).is_some_and(|s| s == id);
    if let Some(dir) = hint.filter(|d| holds(d)) {
        return Some(dir.to_path_buf());
    }
    PINNED
        .iter()
        .filter_map(|(name, _)| places.locate(name))
        .map(|(dir, _)| dir)
        .find(|dir| holds(dir))
}

/// True when `dir` holds a folder with a manifest for every pinned model.
pub fn holds_pinned(dir: &Path) -> bool {
    PINNED
        .iter()
        .all(|(name, _)| dir.join(name).join(MANIFEST_FILE).is_file())
}

/// What `models install` did with one model.
#[derive(Debug, Clone, Serialize)]
pub struct Installed {
    /// The model's folder name.
    pub name: String,
    /// Where it was copied from.
    pub from: PathBuf,
    /// Where it now is.
    pub to: PathBuf,
    /// False when the destination already held the pinned files.
    pub copied: bool,
    /// The licence of its weights, from its manifest.
    pub license: Option<String>,
}

/// Installs the pinned pretrained models from `from` (a folder of model folders, such as the
/// source tree's `models/` after `scripts/setup`, or a bundle's) into `to`, checking every file
/// against the sha256 pinned in this binary. Each model folder appears whole or not at all: it
/// is assembled beside its destination and renamed into place.
pub fn install(from: &Path, to: &Path) -> Result<Vec<Installed>> {
    std::fs::create_dir_all(to)
        .with_context(|| format!("{}: cannot create the models folder", to.display()))?;
    PINNED
        .iter()
        .map(|(name, manifest)| install_one(name, manifest, from, to))
        .collect()
}

fn install_one(name: &str, pinned: &str, from: &Path, to: &Path) -> Result<Installed> {
    let manifest: ModelManifest = serde_json::from_str(pinned).expect("pinned manifests parse");
    let (src, dest) = (from.join(name), to.join(name));
    let result = |copied| Installed {
        name: name.to_owned(),
        from: src.clone(),
        to: dest.clone(),
        copied,
        license: manifest.license.clone(),
    };
    let matches = |dir: &Path| {
        manifest.files.iter().all(|f| {
            sha256_file(&dir.join(&f.file)).is_ok_and(|h| h.eq_ignore_ascii_case(&f.sha256))
        })
    };
    if dest.join(MANIFEST_FILE).is_file() && matches(&dest) {
        // The files are the pinned ones; a manifest of an older binary (without this one's
        // calibrated thresholds, say) is brought up to date through a rename.
        if std::fs::read_to_string(dest.join(MANIFEST_FILE)).is_ok_and(|m| m == pinned) {
            return Ok(result(false));
        }
        smoothface_shared::atomic::write_atomically(&dest.join(MANIFEST_FILE), |f| {
            std::io::Write::write_all(f, pinned.as_bytes())
        })
        .with_context(|| format!("{}: cannot update the manifest", dest.display()))?;
        return Ok(result(true));
    }
    for f in &manifest.files {
        let file = src.join(&f.file);
        let actual = sha256_file(&file).with_context(|| {
            format!(
                "{name}: no {} to install from {} (run scripts/setup in the source tree first)",
                f.file,
                src.display()
            )
        })?;
        if !actual.eq_ignore_ascii_case(&f.sha256) {
            bail!(
                "{}: sha256 is {actual}, the pinned {name} model has {}: refusing it",
                file.display(),
                f.sha256
            );
        }
    }
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{name}.install."))
        .tempdir_in(to)
        .with_context(|| format!("{}: cannot write", to.display()))?;
    std::fs::write(staging.path().join(MANIFEST_FILE), pinned)?;
    for f in &manifest.files {
        std::fs::copy(src.join(&f.file), staging.path().join(&f.file))
            .with_context(|| format!("{}: cannot copy", src.join(&f.file).display()))?;
    }
    if dest.exists() {
        std::fs::remove_dir_all(&dest)
            .with_context(|| format!("{}: cannot replace", dest.display()))?;
    }
    std::fs::rename(staging.keep(), &dest)
        .with_context(|| format!("{}: cannot move the model into place", dest.display()))?;
    Ok(result(true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoothface_shared::manifest::ModelKind;

    fn model_at(root: &Path, name: &str) {
        std::fs::create_dir_all(root.join(name)).unwrap();
        std::fs::write(root.join(name).join(MANIFEST_FILE), "{}").unwrap();
    }

    #[test]
    fn places_are_searched_in_order_and_the_first_holder_wins() {
        let tmp = tempfile::tempdir().unwrap();
        let [flag, env, exe, data] = ["flag", "env", "exe", "data"].map(|d| tmp.path().join(d));
        let places = ModelPlaces::new(
            Some(flag.clone()),
            Some(env.clone()),
            Some(exe.clone()),
            Some(data.clone()),
        );
        let origins: Vec<_> = places.places().iter().map(|p| p.origin).collect();
        assert_eq!(
            origins[..3],
            ["--models", "$SMOOTHFACE_MODELS", "beside the executable"]
        );
        assert_eq!(
            places.install_dir(),
            Some(data.join("smoothface/models").as_path())
        );

        model_at(&data.join("smoothface/models"), "m");
        assert_eq!(places.find("m").unwrap(), data.join("smoothface/models/m"));
        model_at(&exe.join("models"), "m");
        assert_eq!(places.find("m").unwrap(), exe.join("models/m"));
        model_at(&env, "m");
        assert_eq!(places.find("m").unwrap(), env.join("m"));
        model_at(&flag, "m");
        let (dir, place) = places.locate("m").unwrap();
        assert_eq!((dir, place.origin), (flag.join("m"), "--models"));
    }

    #[test]
    fn a_missing_model_names_every_place_and_the_install_command() {
        let tmp = tempfile::tempdir().unwrap();
        let places = ModelPlaces::new(None, None, Some(tmp.path().join("bin")), None);
        let msg = places.find("mtcnn").unwrap_err().to_string();
        assert!(msg.contains("no `mtcnn` model found"), "{msg}");
        assert!(msg.contains("--models: (not set)"), "{msg}");
        assert!(msg.contains("$SMOOTHFACE_MODELS: (not set)"), "{msg}");
        assert!(
            msg.contains(&tmp.path().join("bin/models").display().to_string()),
            "{msg}"
        );
        assert!(msg.contains("smoothface models install"), "{msg}");
    }

    #[test]
    fn a_mistyped_model_folder_is_not_a_setup_problem() {
        let places = ModelPlaces::new(None, None, None, None);
        let msg = given_folder(Path::new("/no/such/place"), "--model", &places)
            .unwrap_err()
            .to_string();
        assert_eq!(msg, "--model /no/such/place: no such model folder");
        let msg = given_folder(Path::new("nosuchmodel"), "--model", &places)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("no installed model of that name"), "{msg}");
    }

    #[test]
    fn a_model_is_named_by_its_installed_folder() {
        let tmp = tempfile::tempdir().unwrap();
        model_at(tmp.path(), PERMISSIVE_EMBEDDER);
        let places = ModelPlaces::new(Some(tmp.path().to_path_buf()), None, None, None);
        let found = given_folder(Path::new(PERMISSIVE_EMBEDDER), "--model", &places).unwrap();
        assert_eq!(found, tmp.path().join(PERMISSIVE_EMBEDDER));
    }

    #[test]
    fn a_model_is_found_by_its_identity_where_it_was_or_among_the_installed() {
        let tmp = tempfile::tempdir().unwrap();
        let manifest = |dir: &Path, sha: &str| {
            std::fs::create_dir_all(dir).unwrap();
            let text = format!(
                r#"{{"name":"x","kind":"embedder","files":[{{"file":"m.onnx","sha256":"{sha}"}}]}}"#
            );
            std::fs::write(dir.join(MANIFEST_FILE), text).unwrap();
        };
        let installed = tmp.path().join("models");
        manifest(&installed.join(EMBEDDER), "AAAA");
        manifest(&installed.join(PERMISSIVE_EMBEDDER), "bbbb");
        let elsewhere = tmp.path().join("export");
        manifest(&elsewhere, "cccc");
        let places = ModelPlaces::new(Some(installed.clone()), None, None, None);
        assert_eq!(stated_id(&elsewhere).as_deref(), Some("cccc"));
        assert_eq!(
            find_by_id(&places, "bbbb", None),
            Some(installed.join(PERMISSIVE_EMBEDDER))
        );
        // Identities are compared in lower case; the hint wins when it holds the model.
        assert_eq!(
            find_by_id(&places, "aaaa", Some(&elsewhere)),
            Some(installed.join(EMBEDDER))
        );
        assert_eq!(
            find_by_id(&places, "cccc", Some(&elsewhere)),
            Some(elsewhere.clone())
        );
        assert_eq!(find_by_id(&places, "dddd", Some(&elsewhere)), None);
    }

    #[test]
    fn every_pinned_manifest_parses_and_names_its_licence() {
        for (name, text) in PINNED {
            let m: ModelManifest = serde_json::from_str(text).unwrap();
            assert!(m.license.is_some(), "{name} names no licence");
            assert!(m.source.is_some(), "{name} has no registry source");
            if m.kind == ModelKind::Embedder {
                assert!(
                    m.thresholds.is_some(),
                    "{name} has no calibrated thresholds"
                );
            }
        }
    }

    #[test]
    fn install_brings_an_old_manifest_of_the_pinned_files_up_to_date() {
        let tmp = tempfile::tempdir().unwrap();
        let (from, to) = (tmp.path().join("from"), tmp.path().join("to"));
        // The pinned file's hash is known: a folder whose file is "abc" pinned as such.
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let pinned = format!(
            r#"{{"name":"m","kind":"embedder","files":[{{"file":"m.onnx","sha256":"{abc}"}}]}}"#
        );
        std::fs::create_dir_all(to.join("m")).unwrap();
        std::fs::write(to.join("m/m.onnx"), b"abc").unwrap();
        std::fs::write(to.join("m").join(MANIFEST_FILE), "{\"old\": true}").unwrap();
        let done = install_one("m", &pinned, &from, &to).unwrap();
        assert!(done.copied);
        assert_eq!(
            std::fs::read_to_string(to.join("m").join(MANIFEST_FILE)).unwrap(),
            pinned
        );
        assert!(!install_one("m", &pinned, &from, &to).unwrap().copied);
    }

    #[test]
    fn install_refuses_files_that_are_not_the_pinned_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let (from, to) = (tmp.path().join("from"), tmp.path().join("to"));
        std::fs::create_dir_all(from.join(EMBEDDER)).unwrap();
        std::fs::write(from.join(EMBEDDER).join("w600k_mbf.onnx"), b"not the model").unwrap();
        let msg = format!("{:#}", install(&from, &to).unwrap_err());
        assert!(
            msg.contains("w600k_mbf.onnx") && msg.contains("refusing it"),
            "{msg}"
        );
        assert!(!to.join(EMBEDDER).exists(), "nothing half-installed");
    }
}
