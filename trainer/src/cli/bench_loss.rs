//! Time Smooth-AP against the authors' form and PyTorch: `smoothface-train bench-loss`.

use anyhow::{Context, Result};
use smoothface_trainer::bench::{self, Form, Setup};
use smoothface_trainer::loss::{Mode, SmoothAp, DEFAULT_TAU};
use std::str::FromStr;

/// Its arguments.
#[derive(clap::Args)]
pub struct Args {
    /// Batch sizes B, comma-separated; each a multiple of --per-identity
    #[arg(long, value_name = "B,...", value_delimiter = ',', default_values_t = [224, 384, 1024, 4096])]
    pub batches: Vec<i64>,
    /// libtorch CPU thread counts, comma-separated [default: 1 and every hardware thread]
    #[arg(long, value_name = "N,...", value_delimiter = ',', value_parser = clap::value_parser!(i32).range(1..))]
    pub threads: Vec<i32>,
    /// Samples per identity (P); the batch is B/P identities
    #[arg(long, value_name = "P", default_value_t = 4, value_parser = clap::value_parser!(i64).range(1..))]
    pub per_identity: i64,
    /// Embedding dimension
    #[arg(long, value_name = "D", default_value_t = 512, value_parser = clap::value_parser!(i64).range(1..))]
    pub dim: i64,
    /// The scalable form's mode, `paper` or `official`. `official` computes exactly what the
    /// authors' form computes, so the two losses in the table must agree
    #[arg(long, value_name = "MODE", value_parser = Mode::from_str, default_value_t = Mode::Official)]
    pub mode: Mode,
    /// Sigmoid temperature
    #[arg(long, value_name = "T", default_value_t = DEFAULT_TAU)]
    pub tau: f64,
    /// Skip the authors' form where its estimated memory (11·B³ float32 numbers) exceeds this
    /// many GB
    #[arg(long, value_name = "GB", default_value_t = 12.0)]
    pub authors_limit_gb: f64,
    /// Print the setup and one object per configuration as JSON instead of the markdown table
    #[arg(long)]
    pub json: bool,
    /// Measure one configuration of the form `scalable` or `authors` in this process (the first
    /// --batches and --threads values) and print it as JSON: what the benchmark runs in each child
    #[arg(long, hide = true, value_name = "FORM", value_parser = Form::from_str)]
    pub child: Option<Form>,
}

/// Runs the command.
pub fn run(args: &Args) -> Result<()> {
    SmoothAp::new(args.mode, args.tau)?;
    let setup = Setup {
        per_identity: args.per_identity,
        dim: args.dim,
        mode: args.mode,
        tau: args.tau,
    };
    if let Some(form) = args.child {
        let threads = args.threads.first().copied().unwrap_or(1);
        let measurement = bench::measure(form, &setup, args.batches[0], threads)?;
        println!("{}", serde_json::to_string(&measurement)?);
        return Ok(());
    }
    if let Some(b) = args
        .batches
        .iter()
        .find(|&&b| b < 1 || b % args.per_identity != 0)
    {
        anyhow::bail!(
            "--batches: {b} is not a positive multiple of --per-identity {}",
            args.per_identity
        );
    }
    let threads = super::thread_counts(&args.threads);
    let exe = std::env::current_exe().context("finding this binary to run the children")?;
    let child = |form: Form, batch: i64, threads: i32| {
        let mut command = std::process::Command::new(&exe);
        command.args([
            "bench-loss",
            "--child",
            form.name(),
            "--mode",
            args.mode.name(),
        ]);
        for (flag, value) in [
            ("--batches", batch.to_string()),
            ("--threads", threads.to_string()),
            ("--per-identity", args.per_identity.to_string()),
            ("--dim", args.dim.to_string()),
            ("--tau", args.tau.to_string()),
        ] {
            command.args([flag, &value]);
        }
        command
    };
    let limit = (args.authors_limit_gb * 1e9) as u64;
    let rows = bench::run(&args.batches, &threads, limit, child, |row| {
        eprintln!(
            "bench-loss: B={} threads={} {}: {:?}",
            row.batch, row.threads, row.form, row.outcome
        );
    })?;
    if args.json {
        let report =
            serde_json::json!({ "setup": setup, "machine": bench::machine(), "rows": rows });
        println!("{report}");
    } else {
        print!("{}", bench::markdown(&setup, &rows));
    }
    Ok(())
}
