//! The command-line flags of `eval ijbc`, one definition for `smoothface` and
//! `smoothface-train` (scripts rely on them being the same), and what both do with a report.

use super::features::default_cache_dir;
use super::pool::PoolOptions;
use super::report::{write_roc, EvalOptions, IjbReport, Protocol};
use std::path::PathBuf;

/// The set and the evaluation's choices.
#[derive(Debug, Clone, clap::Args)]
pub struct IjbcArgs {
    /// The IJB-C (or IJB-B) folder, holding meta/ and loose_crop/
    pub dir: PathBuf,
    /// Add the mirrored crop's feature (the default)
    #[arg(long, overrides_with = "no_flip")]
    flip: bool,
    /// One feature per crop, without the mirrored crop's
    #[arg(long)]
    no_flip: bool,
    /// L2-normalise each face's feature before pooling (drops the norm's quality weighting)
    #[arg(long)]
    no_norm_score: bool,
    /// Do not weight faces by their faceness score
    #[arg(long)]
    no_detector_score: bool,
    /// Which protocols: 1:1, 1:N, map, or all (those whose files are there)
    #[arg(long, default_value = "all", value_name = "P")]
    protocol: Protocol,
    /// Feature cache folder [default: $XDG_CACHE_HOME/smoothface/ijb]
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// Embed everything again and write no cache
    #[arg(long, conflicts_with = "cache")]
    no_cache: bool,
    /// Write the 1:1 ROC curve to this CSV (far,tar,threshold) and a PNG plot beside it
    #[arg(long, value_name = "FILE.csv")]
    roc: Option<PathBuf>,
    /// Print JSON (keys: verification.tar_at_far, identification.g1.rank1, retrieval.map ...)
    #[arg(long)]
    json: bool,
}

impl IjbcArgs {
    /// The evaluation's options from the flags.
    pub fn options(&self) -> EvalOptions {
        EvalOptions {
            pool: PoolOptions {
                flip: !self.no_flip,
                norm_score: !self.no_norm_score,
                detector_score: !self.no_detector_score,
            },
            protocol: self.protocol,
            cache: if self.no_cache {
                None
            } else {
                self.cache.clone().or_else(default_cache_dir)
            },
        }
    }

    /// Writes the ROC files when `--roc` asks (the plot titled with `model`), then prints the
    /// report: the left-out faces on stderr and the tables, or the JSON.
    pub fn finish(&self, report: &IjbReport, model: &str) -> Result<(), String> {
        if let Some(path) = &self.roc {
            write_roc(report, path, model)?;
        }
        if self.json {
            let text = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
            println!("{text}");
        } else {
            for m in &report.missing_faces {
                eprintln!("left out: {}: {}", m.path, m.reason);
            }
            print!("{}", report.table());
        }
        Ok(())
    }
}
