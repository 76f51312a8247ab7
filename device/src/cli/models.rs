//! `smoothface models`: find, list and install the models; switch the gallery's embedder.

use super::args::GroupingArgs;
use super::{exit_code, Global};
use anyhow::{Context, Result};
use clap::Subcommand;
use serde_json::json;
use smoothface_device::gallery::switch;
use smoothface_device::models;
use smoothface_shared::manifest::ModelManifest;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The `models` subcommands.
#[derive(Subcommand)]
pub enum Command {
    /// Where each model is found, and every place looked at
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Copy the pinned pretrained models (sha256-checked) into the user's models folder
    Install {
        /// Folder holding the pinned models (w600k_mbf/, mobilefacenet/, mtcnn/, scrfd/): a
        /// source tree's models/ after scripts/setup, or a bundle's [default: the first place that holds them]
        #[arg(long, value_name = "DIR")]
        from: Option<PathBuf>,
        /// Destination [default: $XDG_DATA_HOME/smoothface/models or ~/.local/share/smoothface/models]
        #[arg(long, value_name = "DIR")]
        to: Option<PathBuf>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Switch the gallery to another embedder in place: re-embed every face, regroup people
    #[command(
        long_about = "Switch the gallery to another embedder in place.\n\n\
        Every stored face is embedded again by MODEL from its stored box and landmarks (the photo \
        is decoded again; no detection is rerun; a video's face track from its best frame), with \
        a progress bar. Face ids, people, names, rejections and the decisions' history stay; the \
        faces the grouping had assigned are grouped again with MODEL's thresholds, the user's \
        assignments and rejections as constraints, and each person keeps its id where the new \
        grouping agrees. A switch killed at any point resumes when run again. Files that are gone \
        or unreadable lose their faces (listed). Camera enrolments keep the old model's vectors: \
        enrol again. Stop `smoothface serve` on this gallery first.\n\n\
        `smoothface index` with another --model switches the same way before indexing.",
        after_help = "Examples:\n  smoothface models use w600k_mbf\n  \
        smoothface models use mobilefacenet      # the MIT-licensed embedder\n  \
        smoothface models use ~/exports/my-finetune --json"
    )]
    Use {
        /// The embedder: an installed model's name (w600k_mbf, mobilefacenet) or a model folder
        #[arg(value_name = "NAME|DIR")]
        model: PathBuf,
        #[command(flatten)]
        grouping: GroupingArgs,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

/// Lists, installs, or switches the gallery's embedder.
pub fn run(g: &Global, c: &Command) -> Result<ExitCode> {
    match c {
        Command::List { json } => list(g, *json),
        Command::Install { from, to, json } => install(g, from.as_deref(), to.as_deref(), *json),
        Command::Use {
            model,
            grouping,
            json,
        } => use_model(g, model, grouping, *json),
    }
}

/// Where each pinned model is found; failure when one is missing.
fn list(g: &Global, json: bool) -> Result<ExitCode> {
    let places = g.places();
    let found: Vec<_> = models::PINNED
        .iter()
        .map(|(name, pinned)| {
            let manifest: ModelManifest =
                serde_json::from_str(pinned).expect("pinned manifests parse");
            (*name, manifest, places.locate(name))
        })
        .collect();
    let role = |name: &str| match name {
        models::EMBEDDER => "default embedder",
        models::DETECTOR => "default detector",
        models::PERMISSIVE_EMBEDDER => "embedder (--model mobilefacenet)",
        _ => "detector (--detector scrfd)",
    };
    if json {
        let models: Vec<_> = found
            .iter()
            .map(|(name, manifest, hit)| {
                json!({
                    "name": name,
                    "model": manifest.name,
                    "role": role(name),
                    "license": manifest.license,
                    "dir": hit.as_ref().map(|(d, _)| d),
                    "origin": hit.as_ref().map(|(_, p)| p.origin),
                })
            })
            .collect();
        let out = json!({"models": models, "places": places.places()});
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("places, searched in this order:");
        for p in places.places() {
            match &p.dir {
                Some(d) => println!("  {}: {}", p.origin, d.display()),
                None => println!("  {}: (not set)", p.origin),
            }
        }
        for (name, manifest, hit) in &found {
            match hit {
                Some((dir, place)) => println!(
                    "{name}: {} ({}), {}",
                    dir.display(),
                    place.origin,
                    role(name)
                ),
                None => println!(
                    "{name}: not found (smoothface models install), {}",
                    role(name)
                ),
            }
            if let Some(licence) = &manifest.license {
                println!("  licence: {licence}");
            }
        }
    }
    Ok(if found.iter().all(|(_, _, hit)| hit.is_some()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Copies the pinned models into the user's models folder.
fn install(g: &Global, from: Option<&Path>, to: Option<&Path>, json: bool) -> Result<ExitCode> {
    let places = g.places();
    let to = match to {
        Some(t) => t.to_path_buf(),
        None => places
            .install_dir()
            .context("no user data folder: set HOME or XDG_DATA_HOME, or pass --to")?
            .to_path_buf(),
    };
    let from = match from {
        Some(f) => f.to_path_buf(),
        None => places
            .places()
            .iter()
            .filter_map(|p| p.dir.clone())
            .find(|d| *d != to && models::holds_pinned(d))
            .context("no models to install from: pass --from DIR (a bundle's or a source tree's models folder)")?,
    };
    let installed = models::install(&from, &to)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&installed)?);
    } else {
        for m in &installed {
            let what = if m.copied {
                "installed"
            } else {
                "already installed"
            };
            println!("{}: {what} in {}", m.name, m.to.display());
            if let Some(licence) = &m.license {
                println!("  licence: {licence}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Switches the gallery to another embedder in place.
fn use_model(g: &Global, model: &Path, grouping: &GroupingArgs, json: bool) -> Result<ExitCode> {
    let mut conn = g.db()?;
    let pipeline = g.pipeline_with(models::given_folder(model, "models use", &g.places())?)?;
    let linkage = grouping.linkage(&pipeline.embedder.thresholds)?;
    let r = switch::switch(
        &mut conn,
        &pipeline,
        &grouping.eligibility(pipeline.group_min_score),
        &linkage,
        g.progress(),
    )?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print_switch(&r);
    }
    Ok(exit_code(!r.dropped.is_empty()))
}

/// What a switch did.
pub fn print_switch(r: &switch::SwitchReport) {
    let Some(from) = &r.from else {
        println!("the gallery is embedded with {}: nothing to switch", r.to);
        return;
    };
    for d in &r.dropped {
        eprintln!(
            "dropped: {}: {} (its faces left the gallery)",
            d.path, d.error
        );
    }
    let resumed = if r.resumed > 0 {
        format!(" ({} done by an earlier run)", r.resumed)
    } else {
        String::new()
    };
    println!(
        "switched from {from} to {}: {} faces re-embedded{resumed} in {:.1} s",
        r.to,
        r.faces,
        r.ms / 1e3
    );
    let g = &r.regroup;
    println!(
        "people: {} faces the grouping had assigned grouped again, {} in the same person as \
         before; {} faces the user assigned kept; {} people, {} emptied ones removed",
        g.auto_faces, g.same_person, g.user_faces, g.people, g.removed_people
    );
    if r.enrolments_kept > 0 {
        eprintln!(
            "note: {} camera enrolments are of another model and do not count with this one: \
             enrol again (`smoothface camera --enrol NAME`)",
            r.enrolments_kept
        );
    }
}
