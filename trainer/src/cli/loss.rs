//! Compute a loss on a batch of saved embeddings: `smoothface-train loss`.

use anyhow::{Context, Result};
use clap::ValueEnum;
use serde::Serialize;
use smoothface_trainer::loss::{
    Contrastive, Mode, SmoothAp, Triplet, DEFAULT_CONTRASTIVE_MARGIN, DEFAULT_TAU,
    DEFAULT_TRIPLET_MARGIN,
};
use smoothface_trainer::npy;
use std::path::PathBuf;
use std::str::FromStr;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossName {
    /// Smooth-AP (Brown et al., ECCV 2020): 1 - smoothed average precision of each query
    SmoothAp,
    /// Batch-hard triplet: hardest positive vs hardest negative distance, per anchor
    Triplet,
    /// Pairwise: same-person similarities pulled to 1, others pushed below the margin
    Contrastive,
}

/// Its arguments.
#[derive(clap::Args)]
pub struct Args {
    /// Embeddings: a float32 [B, D] .npy array (float64 also accepted; the loss then computes in
    /// float64). Rows are L2-normalised by the loss, so any scale will do
    #[arg(long, value_name = "E.npy")]
    pub embeddings: PathBuf,
    /// Identity labels: an int64 [B] .npy array, one per embedding row. Any values, any number of
    /// samples per identity, any order
    #[arg(long, value_name = "L.npy")]
    pub labels: PathBuf,
    /// Which loss
    #[arg(long, value_enum, default_value_t = LossName::SmoothAp)]
    pub loss: LossName,
    /// Smooth-AP only, one of `paper`, `official`. `paper`: the query is left out of its own
    /// retrieval and positive sets, as the paper defines it. `official`: the authors' released
    /// code, where each query also retrieves itself [default: paper]
    #[arg(long, value_name = "MODE", value_parser = Mode::from_str)]
    pub mode: Option<Mode>,
    /// Smooth-AP only: temperature of the sigmoid that smooths the ranking; smaller is closer to
    /// the true AP but gives gradients to fewer pairs [default: 0.01]
    #[arg(long, value_name = "T")]
    pub tau: Option<f64>,
    /// Triplet and contrastive only: for triplet, the distance margin between hardest positive
    /// and hardest negative [default: 0.2]; for contrastive, the similarity that negative pairs
    /// are pushed below [default: 0.5]
    #[arg(long, value_name = "M")]
    pub margin: Option<f64>,
    /// Also write d loss / d embeddings (with respect to the raw rows as given, before
    /// normalisation) to this .npy file, [B, D], in the embeddings' dtype
    #[arg(long, value_name = "G.npy")]
    pub grad_out: Option<PathBuf>,
    /// CPU threads for libtorch [default: libtorch's choice, one per core]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..))]
    pub threads: Option<i32>,
}

/// What `loss` prints.
#[derive(Serialize)]
struct LossReport {
    loss: f64,
    loss_name: LossName,
    mode: Option<Mode>,
    tau: Option<f64>,
    margin: Option<f64>,
    batch: i64,
    dim: i64,
}

/// Runs the command.
pub fn run(args: &Args) -> Result<()> {
    let smooth_ap = args.loss == LossName::SmoothAp;
    if smooth_ap && args.margin.is_some() {
        anyhow::bail!("--margin applies to triplet and contrastive, not smooth-ap (see --tau)");
    }
    if !smooth_ap && (args.mode.is_some() || args.tau.is_some()) {
        anyhow::bail!("--mode and --tau apply to smooth-ap only (see --margin)");
    }
    if let Some(threads) = args.threads {
        tch::set_num_threads(threads);
    }
    let embeddings = npy::read_embeddings(&args.embeddings)?.set_requires_grad(true);
    let (batch, dim) = (embeddings.size()[0], embeddings.size()[1]);
    let labels = npy::read_labels(&args.labels, batch)?;
    let mut report = LossReport {
        loss: f64::NAN,
        loss_name: args.loss,
        mode: None,
        tau: None,
        margin: None,
        batch,
        dim,
    };
    let value = match args.loss {
        LossName::SmoothAp => {
            let (mode, tau) = (
                args.mode.unwrap_or_default(),
                args.tau.unwrap_or(DEFAULT_TAU),
            );
            (report.mode, report.tau) = (Some(mode), Some(tau));
            SmoothAp::new(mode, tau)?.loss(&embeddings, &labels)
        }
        LossName::Triplet => {
            let margin = args.margin.unwrap_or(DEFAULT_TRIPLET_MARGIN);
            report.margin = Some(margin);
            Triplet::new(margin)?.loss(&embeddings, &labels)
        }
        LossName::Contrastive => {
            let margin = args.margin.unwrap_or(DEFAULT_CONTRASTIVE_MARGIN);
            report.margin = Some(margin);
            Contrastive::new(margin)?.loss(&embeddings, &labels)
        }
    }
    .with_context(|| {
        format!(
            "{} with {}",
            args.embeddings.display(),
            args.labels.display()
        )
    })?;
    report.loss = value.double_value(&[]);
    if let Some(path) = &args.grad_out {
        value.backward();
        npy::write(&embeddings.grad(), path)?;
    }
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
