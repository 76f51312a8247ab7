//! `smoothface-train`: the trainer's command line.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;
use smoothface_trainer::backbone::Arch;
use smoothface_trainer::loss::{
    Contrastive, Mode, SmoothAp, Triplet, DEFAULT_CONTRASTIVE_MARGIN, DEFAULT_TAU,
    DEFAULT_TRIPLET_MARGIN,
};
use smoothface_trainer::npy;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "smoothface-train",
    version,
    about = "Train and check the Smoothface embedder on libtorch",
    long_about = "Train and check the Smoothface embedder on libtorch (through tch).\n\n\
        The embedder maps an aligned face to a vector; training pulls vectors of the same person \
        together so that a search ranks that person's photos first. Smooth-AP optimises that \
        ranking directly (a smoothed average precision); triplet and contrastive are the classic \
        baselines.\n\n\
        Exit status: 0 success, 1 error (the message names the file and the cause), 2 bad usage."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compute a loss (and its gradient) on a batch of embeddings saved with numpy
    #[command(
        long_about = "Compute a loss on one batch of embeddings saved with numpy.save, and \
        print it as JSON: {\"loss\", \"loss_name\", \"mode\", \"tau\", \"margin\", \"batch\", \
        \"dim\"} (mode and tau are null for the baselines, margin for Smooth-AP).\n\n\
        Use it to check a Python implementation against this one, or to look at a batch:\n\n  \
        python -c 'import numpy as np; np.save(\"e.npy\", np.random.randn(8, 4).astype(np.float32)); \
        np.save(\"l.npy\", np.array([0,0,1,1,2,2,3,3]))'\n  \
        smoothface-train loss --embeddings e.npy --labels l.npy --grad-out g.npy"
    )]
    Loss(LossArgs),
    /// Build a checkpoint from a pretrained ONNX embedder
    #[command(
        long_about = "Build a checkpoint (safetensors) from a pretrained ONNX embedder, to \
        fine-tune it. The weights are matched by graph structure: the nodes are walked in order \
        and each Conv, BatchNormalization, PRelu and Gemm fills the next layer of the \
        architecture; every shape and convolution setting is checked, and a mismatch names the \
        node. Prints {\"checkpoint\", \"arch\", \"layers\", \"folded_batch_norms\"} as JSON.\n\n\
        Batch norms the exporter folded into convolutions are imported as identity plus bias: \
        fine-tune such a model with frozen batch norm.\n\n  \
        smoothface-train import models/mobilefacenet/fr_feature.onnx --arch mobilefacenet \
        --out mobilefacenet.safetensors"
    )]
    Import(ImportArgs),
}

/// The losses `loss` can compute.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum LossName {
    /// Smooth-AP (Brown et al., ECCV 2020): 1 - smoothed average precision of each query
    SmoothAp,
    /// Batch-hard triplet: hardest positive vs hardest negative distance, per anchor
    Triplet,
    /// Pairwise: same-person similarities pulled to 1, others pushed below the margin
    Contrastive,
}

#[derive(Args)]
struct LossArgs {
    /// Embeddings: a float32 [B, D] .npy array (float64 also accepted; the loss then computes in
    /// float64). Rows are L2-normalised by the loss, so any scale will do
    #[arg(long, value_name = "E.npy")]
    embeddings: PathBuf,
    /// Identity labels: an int64 [B] .npy array, one per embedding row. Any values, any number of
    /// samples per identity, any order
    #[arg(long, value_name = "L.npy")]
    labels: PathBuf,
    /// Which loss
    #[arg(long, value_enum, default_value_t = LossName::SmoothAp)]
    loss: LossName,
    /// Smooth-AP only. `paper`: the query is left out of its own retrieval and positive sets, as
    /// the paper defines it. `official`: the authors' released code, where each query also
    /// retrieves itself [default: paper]
    #[arg(long, value_enum)]
    mode: Option<Mode>,
    /// Smooth-AP only: temperature of the sigmoid that smooths the ranking; smaller is closer to
    /// the true AP but gives gradients to fewer pairs [default: 0.01]
    #[arg(long, value_name = "T")]
    tau: Option<f64>,
    /// Triplet and contrastive only: for triplet, the distance margin between hardest positive
    /// and hardest negative [default: 0.2]; for contrastive, the similarity that negative pairs
    /// are pushed below [default: 0.5]
    #[arg(long, value_name = "M")]
    margin: Option<f64>,
    /// Also write d loss / d embeddings (with respect to the raw rows as given, before
    /// normalisation) to this .npy file, [B, D], in the embeddings' dtype
    #[arg(long, value_name = "G.npy")]
    grad_out: Option<PathBuf>,
    /// CPU threads for libtorch [default: libtorch's choice, one per core]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..))]
    threads: Option<i32>,
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

fn loss(args: &LossArgs) -> Result<()> {
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

#[derive(Args)]
struct ImportArgs {
    /// The ONNX model
    #[arg(value_name = "MODEL.onnx")]
    model: PathBuf,
    /// The architecture the graph is
    #[arg(long, value_enum)]
    arch: Arch,
    /// Where to write the checkpoint; the name must end in .safetensors. Written under a
    /// temporary name and renamed, so it is complete or absent
    #[arg(long, value_name = "CKPT.safetensors")]
    out: PathBuf,
}

fn import(args: &ImportArgs) -> Result<()> {
    let imported = smoothface_trainer::import::import(&args.model, args.arch, &args.out)?;
    let report = serde_json::json!({
        "checkpoint": args.out,
        "arch": args.arch.name(),
        "layers": imported.layers,
        "folded_batch_norms": imported.folded_batch_norms,
    });
    println!("{report}");
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Loss(args) => loss(args),
        Command::Import(args) => import(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("smoothface-train: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
