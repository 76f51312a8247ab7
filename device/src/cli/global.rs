//! The flags every subcommand takes (models, gallery, detection, threads, progress) and what
//! they resolve to: the model folders, the pipeline, the gallery's database and model.

use anyhow::{bail, Context, Result};
use clap::Args;
use rusqlite::Connection;
use smoothface_device::detector::DetectorConfig;
use smoothface_device::gallery::{db, model as gallery_model};
use smoothface_device::media::DEFAULT_MAX_PIXELS;
use smoothface_device::models::{self, ModelPlaces};
use smoothface_device::pipeline::Pipeline;
use smoothface_shared::manifest::{ModelManifest, Thresholds};
use std::io::IsTerminal;
use std::path::PathBuf;

/// The flags every subcommand takes.
#[derive(Args)]
pub struct Global {
    /// Folder of model folders, searched first for the default models
    #[arg(long, global = true, value_name = "DIR")]
    pub models: Option<PathBuf>,
    /// Embedder: a model folder (ONNX + manifest.json) or an installed model's name:
    /// w600k_mbf (the default: insightface's ArcFace MobileFaceNet, weights for non-commercial
    /// research use) or mobilefacenet (MIT)
    #[arg(long, global = true, value_name = "DIR|NAME")]
    pub model: Option<PathBuf>,
    /// Detector: a model folder or an installed model's name: mtcnn (the default) or scrfd
    #[arg(long, global = true, value_name = "DIR|NAME")]
    pub detector: Option<PathBuf>,
    /// Gallery database [default: $SMOOTHFACE_DB or ~/.local/share/smoothface/gallery.sqlite]
    #[arg(long, global = true, value_name = "FILE")]
    pub db: Option<PathBuf>,
    /// Smallest face to find, in pixels (smaller is slower)
    #[arg(long, global = true, default_value_t = 20.0, value_name = "PX")]
    pub min_face: f32,
    /// Detect images whose longest side is larger on a copy reduced to this side, faster: a
    /// 12-megapixel group photo at 800 is detected in a quarter of the time, finding 97% of its
    /// faces 50 px wide and more but three quarters of those 20-49 px (`bench --detect-only`
    /// measures it); 0: detect every image at its own size
    #[arg(long, global = true, default_value_t = smoothface_device::mtcnn::DEFAULT_MAX_SIDE, value_name = "PX")]
    pub detect_side: u32,
    /// Refuse images with more pixels than this (decompression bombs)
    #[arg(long, global = true, default_value_t = DEFAULT_MAX_PIXELS, value_name = "PIXELS")]
    pub max_pixels: u64,
    /// Worker threads [default: one per core]
    #[arg(long, global = true, value_name = "N")]
    pub threads: Option<usize>,
    /// No progress bars
    #[arg(long, short, global = true)]
    pub quiet: bool,
}

/// `$SMOOTHFACE_DB`, else the gallery in the user's data folder.
fn default_db() -> PathBuf {
    if let Some(p) = std::env::var_os("SMOOTHFACE_DB") {
        return PathBuf::from(p);
    }
    models::data_home()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("smoothface/gallery.sqlite")
}

impl Global {
    /// Where models are looked for, in order.
    pub fn places(&self) -> ModelPlaces {
        ModelPlaces::for_process(self.models.as_deref())
    }

    /// The embedder's folder: `--model` (which must exist), else the default from the places.
    pub fn model_dir(&self) -> Result<PathBuf> {
        match &self.model {
            Some(dir) => models::given_folder(dir, "--model", &self.places()),
            None => self.places().find(models::EMBEDDER),
        }
    }

    /// The detector's smallest score of a face to group (its manifest's `group_min_score`),
    /// without loading its networks.
    pub fn detector_group_min_score(&self) -> Result<f32> {
        let manifest = ModelManifest::load(&self.detector_dir()?)?.manifest;
        Ok(smoothface_device::detector::group_min_score(&manifest))
    }

    /// The detector folder: `--detector`, else the default detector wherever it is installed.
    pub fn detector_dir(&self) -> Result<PathBuf> {
        match &self.detector {
            Some(dir) => models::given_folder(dir, "--detector", &self.places()),
            None => self.places().find(models::DETECTOR),
        }
    }

    /// The detector settings of `--min-face` and `--detect-side`.
    pub fn detector_config(&self) -> Result<DetectorConfig> {
        ensure_min_face(self.min_face)?;
        Ok(DetectorConfig {
            min_face: self.min_face,
            max_side: (self.detect_side > 0).then_some(self.detect_side),
        })
    }

    /// The embedder folder for a command on the gallery `conn`: `--model` when given; else the
    /// gallery's own model wherever it is installed; else, for a new gallery, the default.
    pub fn gallery_model_dir(&self, conn: &Connection) -> Result<PathBuf> {
        if self.model.is_some() {
            return self.model_dir();
        }
        let Some(cur) = gallery_model::current(conn)? else {
            return self.places().find(models::EMBEDDER);
        };
        models::find_by_id(&self.places(), &cur.hash, cur.dir.as_deref()).with_context(|| {
            format!(
                "this gallery is embedded with {}, which is not installed here (last loaded from \
                 {}): install it (`smoothface models install`), pass its folder with --model, or \
                 switch the gallery to an installed model with `smoothface models use NAME`",
                cur.label(),
                cur.dir
                    .as_deref()
                    .map_or("an unknown folder".into(), |d| d.display().to_string())
            )
        })
    }

    /// The pipeline for a command on the gallery `conn`, with its embedder as
    /// [`Global::gallery_model_dir`] finds it.
    pub fn gallery_pipeline(&self, conn: &Connection) -> Result<Pipeline> {
        self.pipeline_with(self.gallery_model_dir(conn)?)
    }

    /// The pipeline with the embedder of `--model` (or the default).
    pub fn pipeline(&self) -> Result<Pipeline> {
        self.pipeline_with(self.model_dir()?)
    }

    /// The pipeline with the embedder in `model`; a warning when that model has no calibrated
    /// thresholds.
    pub fn pipeline_with(&self, model: PathBuf) -> Result<Pipeline> {
        let config = self.detector_config()?;
        let pipeline = Pipeline::load(&model, &self.detector_dir()?, config, self.max_pixels)?;
        if let Some(warning) = pipeline.embedder.uncalibrated_warning() {
            eprintln!("warning: {warning}");
        }
        Ok(pipeline)
    }

    /// The gallery's file: `--db`, else the default.
    pub fn db_path(&self) -> PathBuf {
        self.db.clone().unwrap_or_else(default_db)
    }

    /// The gallery, opened (made when new).
    pub fn db(&self) -> Result<Connection> {
        db::open(&self.db_path())
    }

    /// Whether to draw progress bars: not with --quiet, nor when stderr is not a terminal.
    pub fn progress(&self) -> bool {
        !self.quiet && std::io::stderr().is_terminal()
    }

    /// The gallery's model, for commands that need no pipeline: an error saying to index first for a
    /// gallery without one, and one naming both models when `--model` names another.
    pub fn gallery_model(&self, conn: &Connection) -> Result<(i64, usize)> {
        let cur = gallery_model::current(conn)?
            .context("the gallery holds no faces yet: run `smoothface index DIR` first")?;
        if self.model.is_some() {
            let dir = self.model_dir()?;
            let model = ModelManifest::load(&dir)?;
            if model.id != cur.hash {
                bail!(gallery_model::mismatch(
                    &cur,
                    &model.manifest.name,
                    &model.id,
                    &dir.display().to_string()
                ));
            }
        }
        Ok((cur.id, cur.dim))
    }

    /// The thresholds of the gallery's model (its manifest's, else the fallback, with a warning).
    pub fn gallery_thresholds(&self, conn: &Connection) -> Result<Thresholds> {
        let dir = self.gallery_model_dir(conn)?;
        let model = ModelManifest::load(&dir)?;
        Ok(match model.manifest.thresholds {
            Some(t) => t,
            None => {
                eprintln!(
                    "warning: model {} ({}) has no calibrated thresholds: grouping with the \
                     conservative ones; calibrate it with `smoothface --model {} eval calibrate --write`",
                    model.manifest.name,
                    dir.display(),
                    dir.display()
                );
                Thresholds::FALLBACK
            }
        })
    }
}

/// `--min-face` as MTCNN can honour it.
fn ensure_min_face(px: f32) -> Result<()> {
    if px.is_nan() || px < 12.0 {
        bail!("--min-face must be at least 12 pixels (MTCNN's smallest window), got {px}");
    }
    Ok(())
}
