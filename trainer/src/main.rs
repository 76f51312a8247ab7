//! `smoothface-train`: the trainer's command line.
//!
//! [`cli`] has one module per subcommand: its clap definitions (every `--help` page;
//! `docs/training.md` shows them and `tests/tests/docs_flags.rs` checks that every flag the docs
//! show exists) and the glue that calls the `smoothface_trainer` library, where the work lives
//! (start at its `lib.rs`).

// The doc comments below are clap's --help text (`[B]` shapes, `<name>` placeholders), not
// rustdoc links or HTML.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

mod cli;

use clap::Parser;
use cli::Command;
use std::process::ExitCode;

/// The command line: one subcommand.
#[derive(Parser)]
#[command(
    name = "smoothface-train",
    version,
    about = "Train, export and quantize the Smoothface embedder on libtorch",
    long_about = "Train, export and quantize the Smoothface embedder on libtorch (through tch).\n\n\
        The embedder maps an aligned face to a vector; training pulls vectors of the same person \
        together so that a search ranks that person's photos first. Smooth-AP optimises that \
        ranking directly (a smoothed average precision); triplet, contrastive and ArcFace are the \
        baselines.\n\n\
        The usual path: import a pretrained model, fit it on aligned faces, export the result to \
        a model folder (quantize it to int8 if wanted), and give that folder to the device with \
        `smoothface --model DIR`.\n\n\
        Exit status: 0 success, 1 error (the message names the file and the cause), 2 bad usage."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("smoothface-train: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
