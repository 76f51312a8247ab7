//! The training configuration of `smoothface-train fit`: a TOML file, every field but the data
//! optional, with the Smooth-AP paper's settings as defaults.
//!
//! ```toml
//! [data]
//! folder = "/data/lfw-aligned"    # aligned crops, a folder per person
//!
//! [model]
//! init = "mobilefacenet.safetensors"  # from `smoothface-train import`
//!
//! [loss]
//! name = "smooth-ap"
//!
//! [train]
//! epochs = 5
//! ```
//!
//! Unknown keys are errors, so that a misspelt setting is never silently ignored.

use crate::backbone::Arch;
use crate::loss::{
    Mode, DEFAULT_ARCFACE_MARGIN, DEFAULT_ARCFACE_SCALE, DEFAULT_CONTRASTIVE_MARGIN, DEFAULT_TAU,
    DEFAULT_TRIPLET_MARGIN,
};
pub use crate::optim::OptimizerConfig;
use crate::precision::Precision;
use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A whole training run's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Where the faces come from and how people are split into training and validation.
    pub data: DataConfig,
    /// The backbone and its starting weights.
    #[serde(default)]
    pub model: ModelConfig,
    /// The objective.
    #[serde(default)]
    pub loss: LossConfig,
    /// Adam's settings.
    #[serde(default)]
    pub optimizer: OptimizerConfig,
    /// Batches, epochs, augmentation.
    #[serde(default)]
    pub train: TrainingConfig,
    /// The validation metrics computed after every epoch.
    #[serde(default)]
    pub eval: EvalConfig,
}

/// Training and validation data. Give `folder` (split by people into training and validation)
/// or `recordio` with a `validation_folder`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Aligned 112x112 crops, a folder per person (what `smoothface align` writes).
    pub folder: Option<PathBuf>,
    /// An insightface RecordIO pack (`train.rec`, with `train.idx` beside it) to train on.
    pub recordio: Option<PathBuf>,
    /// A folder per person to validate on; by default a share of `folder`'s people.
    pub validation_folder: Option<PathBuf>,
    /// People with fewer photos than this are left out of `folder` (training takes
    /// `per_class` photos of a person at once).
    #[serde(default = "default_min_photos")]
    pub min_photos: usize,
    /// Share of `folder`'s people held out for validation when there is no
    /// `validation_folder`.
    #[serde(default = "default_validation_fraction")]
    pub validation_fraction: f64,
    /// Seed of the people split (fixed, so runs with different losses see the same split).
    #[serde(default)]
    pub split_seed: u64,
}

/// The backbone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// `mobilefacenet`, `mbf` or `iresnet50`.
    #[serde(default = "default_arch")]
    pub arch: Arch,
    /// Starting weights: a checkpoint from `smoothface-train import` or from an earlier `fit`;
    /// a random initialisation without it.
    pub init: Option<PathBuf>,
    /// Keep batch norm in evaluation mode (running statistics) while training.
    #[serde(default)]
    pub frozen_batch_norm: bool,
}

/// Which objective `fit` minimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Objective {
    /// Smooth-AP alone.
    #[serde(rename = "smooth-ap")]
    SmoothAp,
    /// Batch-hard triplet.
    #[serde(rename = "triplet")]
    Triplet,
    /// Pairwise contrastive.
    #[serde(rename = "contrastive")]
    Contrastive,
    /// The ArcFace margin head alone.
    #[serde(rename = "arcface")]
    ArcFace,
    /// ArcFace + `smooth_ap_weight` · Smooth-AP.
    #[serde(rename = "arcface+smooth-ap")]
    ArcFaceSmoothAp,
}

/// The loss and its hyper-parameters (each used by the objectives it belongs to).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossConfig {
    /// `smooth-ap`, `triplet`, `contrastive`, `arcface` or `arcface+smooth-ap`.
    #[serde(default = "default_objective")]
    pub name: Objective,
    /// Smooth-AP's mode, `paper` or `official`.
    #[serde(default)]
    pub mode: Mode,
    /// Smooth-AP's sigmoid temperature.
    #[serde(default = "default_tau")]
    pub tau: f64,
    /// Triplet's distance margin or contrastive's similarity margin (each its own default).
    pub margin: Option<f64>,
    /// ArcFace's logit scale `s`.
    #[serde(default = "default_arcface_scale")]
    pub arcface_scale: f64,
    /// ArcFace's angular margin `m`, radians.
    #[serde(default = "default_arcface_margin")]
    pub arcface_margin: f64,
    /// λ in ArcFace + λ · Smooth-AP.
    #[serde(default = "default_smooth_ap_weight")]
    pub smooth_ap_weight: f64,
}

impl LossConfig {
    /// The margin of the triplet or contrastive loss: the configured one or that loss's default.
    pub fn margin_or_default(&self) -> f64 {
        self.margin.unwrap_or(match self.name {
            Objective::Contrastive => DEFAULT_CONTRASTIVE_MARGIN,
            _ => DEFAULT_TRIPLET_MARGIN,
        })
    }
}

/// The training loop's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingConfig {
    /// Faces per batch, a multiple of `per_class`.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Photos of each person in a batch (P).
    #[serde(default = "default_per_class")]
    pub per_class: usize,
    /// Passes over the training people.
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    /// Stop after this many steps in all (the last epoch is then partial); for comparing
    /// objectives at equal work.
    pub max_steps: Option<usize>,
    /// Seed of batch sampling and augmentation.
    #[serde(default)]
    pub seed: u64,
    /// Augmentation: largest random shift of a crop, pixels.
    #[serde(default = "default_shift")]
    pub shift: usize,
    /// Augmentation: probability of a horizontal flip.
    #[serde(default = "default_flip")]
    pub flip: f64,
    /// libtorch CPU threads; all cores by default.
    pub threads: Option<i32>,
    /// `cpu`, `cuda`, or `auto` (CUDA when available).
    #[serde(default)]
    pub device: DeviceChoice,
    /// The arithmetic of the forward and backward passes: `f32`, `bf16` (CPU or GPU) or `f16`
    /// (GPU, with a dynamic loss scale); weights, Adam and the loss stay in float32.
    #[serde(default)]
    pub precision: Precision,
    /// Threads that decode and augment batches ahead of the step.
    #[serde(default = "default_loader_workers")]
    pub loader_workers: usize,
    /// In a data-parallel run (torchrun, more than one process): normalise the batch norms in
    /// training mode with the statistics of the global batch, as torch.nn.SyncBatchNorm does,
    /// rather than of each process's share (DDP's default, and this one's: false). Changes
    /// nothing for one process, for frozen batch norm, or for MobileFaceNet (no batch norm).
    #[serde(default)]
    pub sync_batch_norm: bool,
}

/// Where training runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// The first CUDA device when libtorch sees one, else the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// The first CUDA device; an error when there is none.
    Cuda,
}

impl DeviceChoice {
    /// The libtorch device this choice means here.
    pub fn resolve(self) -> anyhow::Result<tch::Device> {
        Ok(match self {
            DeviceChoice::Cpu => tch::Device::Cpu,
            DeviceChoice::Auto => tch::Device::cuda_if_available(),
            DeviceChoice::Cuda => {
                anyhow::ensure!(
                    tch::Cuda::is_available(),
                    "device cuda was asked for but libtorch sees no CUDA device (was \
                     smoothface-train built with --features cuda?)"
                );
                tch::Device::Cuda(0)
            }
        })
    }
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let all = [DeviceChoice::Auto, DeviceChoice::Cpu, DeviceChoice::Cuda];
        crate::parse_choice(
            s,
            &all,
            |d| match d {
                DeviceChoice::Auto => "auto",
                DeviceChoice::Cpu => "cpu",
                DeviceChoice::Cuda => "cuda",
            },
            "device",
        )
    }
}

/// Validation after every epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// The K of Recall@K.
    #[serde(default = "default_recall_at")]
    pub recall_at: Vec<usize>,
    /// Faces per forward pass when embedding the validation set.
    #[serde(default = "default_eval_batch")]
    pub batch_size: usize,
}

fn default_min_photos() -> usize {
    4
}
fn default_validation_fraction() -> f64 {
    0.3
}
fn default_arch() -> Arch {
    Arch::MobileFaceNet
}
fn default_objective() -> Objective {
    Objective::SmoothAp
}
fn default_tau() -> f64 {
    DEFAULT_TAU
}
fn default_arcface_scale() -> f64 {
    DEFAULT_ARCFACE_SCALE
}
fn default_arcface_margin() -> f64 {
    DEFAULT_ARCFACE_MARGIN
}
fn default_smooth_ap_weight() -> f64 {
    1.0
}
fn default_batch_size() -> usize {
    224
}
fn default_per_class() -> usize {
    4
}
fn default_epochs() -> usize {
    10
}
fn default_shift() -> usize {
    4
}
fn default_flip() -> f64 {
    0.5
}
fn default_loader_workers() -> usize {
    2
}
fn default_recall_at() -> Vec<usize> {
    vec![1, 4, 16]
}
fn default_eval_batch() -> usize {
    128
}

/// Every section's defaults come from its fields' defaults: an empty TOML table.
macro_rules! default_from_empty_table {
    ($($t:ty),*) => {$(
        impl Default for $t {
            fn default() -> Self {
                toml::from_str("").expect("every field has a default")
            }
        }
    )*};
}
default_from_empty_table!(ModelConfig, LossConfig, TrainingConfig, EvalConfig);

impl TrainConfig {
    /// Reads and checks the configuration at `path`; relative data and checkpoint paths are
    /// taken relative to the file's folder, so a config works from any working directory.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read the configuration", path.display()))?;
        let mut config: TrainConfig = toml::from_str(&text)
            .with_context(|| format!("{}: not a valid training configuration", path.display()))?;
        let base = path.parent().unwrap_or(Path::new(""));
        for p in [
            &mut config.data.folder,
            &mut config.data.recordio,
            &mut config.data.validation_folder,
            &mut config.model.init,
        ]
        .into_iter()
        .flatten()
        {
            *p = base.join(&*p);
        }
        config
            .check()
            .with_context(|| format!("{}: invalid setting", path.display()))?;
        Ok(config)
    }

    /// The settings' ranges and combinations.
    pub fn check(&self) -> Result<()> {
        let d = &self.data;
        ensure!(
            d.folder.is_some() != d.recordio.is_some(),
            "[data] needs exactly one of `folder` and `recordio`"
        );
        ensure!(
            d.recordio.is_none() || d.validation_folder.is_some(),
            "[data] `recordio` needs a `validation_folder` (a pack cannot be split by people)"
        );
        ensure!(
            d.validation_folder.is_some() || (0.0..1.0).contains(&d.validation_fraction),
            "[data] validation_fraction must be in [0, 1), got {}",
            d.validation_fraction
        );
        let t = &self.train;
        ensure!(
            t.per_class >= 2,
            "[train] per_class must be at least 2 (a person needs a positive)"
        );
        ensure!(
            t.batch_size >= 2 * t.per_class && t.batch_size.is_multiple_of(t.per_class),
            "[train] batch_size {} must be a multiple of per_class {} holding at least 2 people",
            t.batch_size,
            t.per_class
        );
        ensure!(t.epochs > 0, "[train] epochs must be positive");
        ensure!(
            t.loader_workers > 0,
            "[train] loader_workers must be at least 1"
        );
        ensure!(t.max_steps != Some(0), "[train] max_steps must be positive");
        ensure!(
            (0.0..=1.0).contains(&t.flip),
            "[train] flip is a probability, got {}",
            t.flip
        );
        let o = &self.optimizer;
        ensure!(
            o.lr > 0.0 && o.weight_decay >= 0.0 && o.eps > 0.0,
            "[optimizer] lr and eps must be > 0 and weight_decay >= 0"
        );
        ensure!(
            (0.0..1.0).contains(&o.beta1) && (0.0..1.0).contains(&o.beta2),
            "[optimizer] beta1 and beta2 must be in [0, 1)"
        );
        let e = &self.eval;
        ensure!(
            !e.recall_at.is_empty() && e.recall_at.iter().all(|&k| k > 0),
            "[eval] recall_at needs positive K values"
        );
        ensure!(e.batch_size > 0, "[eval] batch_size must be positive");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_almost_empty_file_takes_the_papers_settings() {
        let config: TrainConfig = toml::from_str("[data]\nfolder = \"faces\"").unwrap();
        config.check().unwrap();
        assert_eq!(config.optimizer.lr, 1e-5);
        assert_eq!(config.optimizer.weight_decay, 4e-4);
        assert_eq!(config.train.batch_size, 224);
        assert_eq!(config.train.per_class, 4);
        assert_eq!(config.loss.tau, 0.01);
        assert_eq!(config.loss.name, Objective::SmoothAp);
        assert_eq!(config.loss.mode, Mode::Paper);
        assert_eq!(config.model.arch, Arch::MobileFaceNet);
        assert_eq!(config.eval.recall_at, [1, 4, 16]);
    }

    #[test]
    fn misspelt_keys_and_bad_values_are_errors() {
        assert!(
            toml::from_str::<TrainConfig>("[data]\nfolder = \"f\"\n[train]\nepoch = 3").is_err()
        );
        let bad = |extra: &str| {
            let config: TrainConfig =
                toml::from_str(&format!("[data]\nfolder = \"f\"\n{extra}")).unwrap();
            config.check().is_err()
        };
        assert!(bad("[train]\nbatch_size = 10"));
        assert!(bad("[train]\nper_class = 1"));
        assert!(bad("[optimizer]\nlr = 0"));
        assert!(bad("[eval]\nrecall_at = []"));
        assert!(!bad(
            "[loss]\nname = \"arcface+smooth-ap\"\nsmooth_ap_weight = 0.5"
        ));
    }

    /// trainer/configs/every-setting.toml lists every setting at its default: it must parse,
    /// check, and equal the defaults.
    #[test]
    fn the_documented_example_is_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/every-setting.toml");
        let example: TrainConfig = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        example.check().unwrap();
        let defaults: TrainConfig = toml::from_str("[data]\nfolder = \"faces-aligned\"").unwrap();
        assert_eq!(example, defaults);
    }

    #[test]
    fn relative_paths_follow_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.toml");
        std::fs::write(
            &path,
            "[data]\nfolder = \"faces\"\n[model]\ninit = \"/abs/m.safetensors\"",
        )
        .unwrap();
        let config = TrainConfig::load(&path).unwrap();
        assert_eq!(config.data.folder.unwrap(), dir.path().join("faces"));
        assert_eq!(
            config.model.init.unwrap(),
            PathBuf::from("/abs/m.safetensors")
        );
    }
}
