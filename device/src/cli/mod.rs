//! The subcommands of `smoothface`, one module each: its arguments (the clap definitions every
//! `--help` page shows) and its body, which calls the `smoothface_device` library and prints what
//! it returns. [`Global`] holds the flags every subcommand takes, [`args`] the flag groups some of
//! them share.

pub mod align;
pub mod args;
pub mod bench;
pub mod camera;
pub mod detect;
pub mod eval;
pub mod forget;
mod global;
pub mod index;
pub mod models;
pub mod people;
pub mod search;
pub mod serve;
pub mod stats;

use anyhow::Result;
use clap::Subcommand;
use std::process::ExitCode;

pub use global::Global;

/// Exit code of a run that finished but could not read some inputs.
pub const EXIT_PARTIAL: u8 = 3;

/// Success, or [`EXIT_PARTIAL`] when some inputs could not be read.
fn exit_code(partial: bool) -> ExitCode {
    if partial {
        ExitCode::from(EXIT_PARTIAL)
    } else {
        ExitCode::SUCCESS
    }
}

/// Prints a result: as pretty JSON, or as `table` prints it.
fn report<T: serde::Serialize>(json: bool, r: &T, table: fn(&T)) -> Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
    } else {
        table(r);
    }
    Ok(ExitCode::SUCCESS)
}

/// The subcommands; each one's help is its module's `Args` (or `Command`) documentation.
#[derive(Subcommand)]
pub enum Command {
    Index(index::Args),
    Search(search::Args),
    Detect(detect::Args),
    Serve(serve::Args),
    Stats(stats::Args),
    Forget(forget::Args),
    Align(align::Args),
    /// The people of the gallery: list, name, merge, split, move, reject, undo
    #[command(subcommand)]
    People(people::Command),
    Camera(camera::Args),
    /// Find, list and install the models
    #[command(subcommand)]
    Models(models::Command),
    /// Measure accuracy on labelled photos
    #[command(subcommand)]
    Eval(eval::Command),
    Bench(bench::Args),
}

impl Command {
    /// Runs the subcommand; its exit code.
    pub fn run(&self, g: &Global) -> Result<ExitCode> {
        match self {
            Command::Index(a) => index::run(g, a),
            Command::Search(a) => search::run(g, a),
            Command::Detect(a) => detect::run(g, a),
            Command::Serve(a) => serve::run(g, a),
            Command::Stats(a) => stats::run(g, a),
            Command::Forget(a) => forget::run(g, a),
            Command::Align(a) => align::run(g, a),
            Command::People(c) => people::run(g, c),
            Command::Camera(a) => camera::run(g, a),
            Command::Models(c) => models::run(g, c),
            Command::Eval(c) => eval::run(g, c),
            Command::Bench(a) => bench::run(g, a),
        }
    }
}
