//! `smoothface index`: add the photos and videos under folders to the gallery.

use super::args::{GroupingArgs, VideoArgs};
use super::{exit_code, Global};
use anyhow::Result;
use smoothface_device::gallery::{index, model as gallery_model, switch};
use smoothface_device::models;
use smoothface_device::people::store as people_store;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// Add the photos and videos under folders to the gallery (recursive, incremental, resumable)
#[derive(clap::Args)]
#[command(
    long_about = "Add the photos and videos under folders to the gallery (recursive, \
    incremental, resumable).\n\nPhotos: every face. Videos (mp4, mov, m4v, mkv, webm, avi, 3gp): \
    frames are sampled (--video-fps), their faces linked into tracks across frames, and each \
    track is stored as one face with the time it is on screen, so a search finds the video \
    and when. Unchanged files are skipped, moved ones recognised by content; files that \
    cannot be read are listed with the cause (exit status 3) and the run goes on."
)]
pub struct Args {
    /// Folders (or single files' folders) to index
    #[arg(required = true, value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
    #[command(flatten)]
    pub grouping: GroupingArgs,
    #[command(flatten)]
    pub video: VideoArgs,
    /// Print the run's report as JSON
    #[arg(long)]
    pub json: bool,
}

/// Indexes the folders, then groups the new faces into people.
pub fn run(g: &Global, a: &Args) -> Result<ExitCode> {
    let Args {
        dirs,
        grouping,
        video,
        json,
    } = a;
    let mut conn = g.db()?;
    let pipeline = g.gallery_pipeline(&conn)?;
    let linkage = grouping.linkage(&pipeline.embedder.thresholds)?;
    let started = Instant::now();
    let was = gallery_model::current(&conn)?;
    let switched = match &was {
        Some(cur) if cur.hash != pipeline.embedder.model_id => {
            eprintln!(
                "the gallery is embedded with {}: re-embedding its faces with {} first",
                cur.label(),
                pipeline.embedder.name
            );
            Some(switch::switch(
                &mut conn,
                &pipeline,
                &grouping.eligibility(pipeline.group_min_score),
                &linkage,
                g.progress(),
            )?)
        }
        _ => None,
    };
    let r = index::index(
        &mut conn,
        &pipeline,
        dirs,
        video.sampling()?,
        g.progress(),
        &index::Progress::default(),
    )?;
    let model_id = gallery_model::adopt(&conn, &pipeline.embedder)?;
    let people = people_store::update(
        &mut conn,
        model_id,
        &grouping.eligibility(pipeline.group_min_score),
        &linkage,
    )?;
    if *json {
        let mut out = serde_json::to_value(&r)?;
        out["people"] = serde_json::to_value(&people)?;
        out["switch"] = serde_json::to_value(&switched)?;
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        if let Some(s) = &switched {
            super::models::print_switch(s);
        }
        for f in &r.failed {
            eprintln!("failed: {}: {}", f.path, f.error);
        }
        println!(
            "{} files: {} analysed, {} unchanged, {} moved, {} duplicates, {} failed, {} removed; {} faces stored in {:.1} s",
            r.scanned,
            r.analysed,
            r.unchanged,
            r.moved,
            r.duplicates,
            r.failed.len(),
            r.removed,
            r.faces,
            started.elapsed().as_secs_f64()
        );
        if r.videos > 0 {
            println!(
                "{} videos ({:.0} s of video, {} frames sampled)",
                r.videos, r.video_seconds, r.video_frames
            );
        }
        super::people::print_update(&people);
        let default_id = g
            .places()
            .locate(models::EMBEDDER)
            .and_then(|(dir, _)| models::stated_id(&dir));
        let on_default = default_id.as_deref() == Some(pipeline.embedder.model_id.as_str());
        if g.model.is_none() && !on_default && default_id.is_some() {
            eprintln!(
                "note: this gallery uses {}, not the default embedder ({}, stronger): \
                 `smoothface models use {}` switches it in place, keeping people and names",
                pipeline.embedder.name,
                models::EMBEDDER,
                models::EMBEDDER
            );
        }
    }
    Ok(exit_code(!r.failed.is_empty()))
}
