//! `smoothface`: index a photo library by face and search it, on the device.
//!
//! The command line alone: [`cli`] has one module per subcommand, each with its clap definitions
//! (every `--help` page; `docs/` shows them and `tests/tests/docs_flags.rs` checks that every flag
//! the docs show exists) and the glue that calls the `smoothface_device` library, where every job
//! lives (start at its `lib.rs`).

mod cli;

use anyhow::Context;
use clap::Parser;
use cli::{Command, Global};
use std::process::ExitCode;

/// The command line: the flags every subcommand takes, and the subcommand.
#[derive(Parser)]
#[command(
    name = "smoothface",
    version,
    about = "Find every photo and video of a person in your own library, on this machine.",
    long_about = "Find every photo and video of a person in your own library, on this machine.\n\n\
        smoothface detects faces (MTCNN), aligns them to the ArcFace template and embeds them \
        (an ArcFace model run by tract), links a video's faces into tracks, keeps the gallery in \
        SQLite, and ranks the whole gallery by identity. Nothing leaves the machine.\n\n\
        Start with:\n  smoothface index ~/Pictures\n  smoothface search photo-of-her.jpg\n\n\
        Exit status: 0 success, 1 error, 2 bad usage, 3 finished but some files could not be read (each is \
        listed with its cause).",
    after_help = "Models are looked for in --models, $SMOOTHFACE_MODELS, models/ beside the \
        executable, then ~/.local/share/smoothface/models (see `smoothface models list`); the \
        gallery lives in $SMOOTHFACE_DB or ~/.local/share/smoothface/gallery.sqlite unless --db \
        says otherwise."
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

fn main() -> ExitCode {
    // Output piped into `head` and closed early ends the program quietly, as it does every Unix
    // tool, instead of a panic in `println!` (Rust ignores SIGPIPE by default).
    #[cfg(unix)]
    // SAFETY: restoring a signal's default disposition, before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("smoothface: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Sets up the thread pool, then runs the subcommand.
fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Some(n) = cli.global.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("--threads")?;
    }
    cli.command.run(&cli.global)
}
