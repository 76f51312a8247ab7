//! Train as a configuration says: `smoothface-train fit`.

use anyhow::{Context, Result};
use smoothface_trainer::config::TrainConfig;
use smoothface_trainer::fit::FitOptions;
use std::io::IsTerminal;
use std::path::PathBuf;

/// Its arguments.
#[derive(clap::Args)]
pub struct Args {
    /// The training configuration (TOML); relative paths in it are relative to its folder
    #[arg(long, value_name = "TRAIN.toml")]
    pub config: PathBuf,
    /// The run folder [default: runs/<name of the configuration file>]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Continue the run in the folder from its last completed epoch
    #[arg(long)]
    pub resume: bool,
    /// No progress bar
    #[arg(long, short)]
    pub quiet: bool,
}

/// Runs the command.
pub fn run(args: &Args) -> Result<()> {
    super::keep_freed_memory();
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("{}: cannot read the configuration", args.config.display()))?;
    let config = TrainConfig::load(&args.config)?;
    let out = args.out.clone().unwrap_or_else(|| {
        let stem = args.config.file_stem().unwrap_or_default();
        PathBuf::from("runs").join(stem)
    });
    let options = FitOptions {
        out,
        resume: args.resume,
        progress: !args.quiet && std::io::stderr().is_terminal(),
        // Under torchrun (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT): data-parallel.
        launch: smoothface_trainer::dist::Launch::from_env()?,
    };
    smoothface_trainer::fit::fit(&config, &text, &options, |record| {
        println!(
            "{}",
            serde_json::to_string(record).expect("records serialise")
        );
    })?;
    Ok(())
}
