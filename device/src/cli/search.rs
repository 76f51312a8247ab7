//! `smoothface search`: rank the gallery by a photo's face or by a person's faces.

use super::Global;
use anyhow::{bail, Result};
use serde_json::json;
use smoothface_device::gallery::db::{self, TrackSpan};
use smoothface_device::gallery::{model as gallery_model, search::FaceMatrix};
use smoothface_device::media;
use smoothface_device::people::decisions;
use smoothface_device::people::fusion::Fusion;
use smoothface_device::people::store as people_store;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// Rank the gallery's photos and videos by how much their best face looks like the query's
/// face, or like a person's faces (--person); a video hit says when the face is on screen
#[derive(clap::Args)]
pub struct Args {
    /// Photo of the person to look for
    #[arg(required_unless_present = "person", conflicts_with = "person")]
    pub photo: Option<PathBuf>,
    /// Search for a person of the gallery (id or name) from all of their faces: their photos
    /// first, then the others ranked ("is this her too?")
    #[arg(long, value_name = "PERSON")]
    pub person: Option<String>,
    /// Which face of the query photo, 0 being the largest (see `smoothface detect`)
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub face: usize,
    /// How many photos to list (0: all); with --person, how many beyond the person's own
    #[arg(long, default_value_t = 20, value_name = "K")]
    pub top: usize,
    /// Only photos whose best face has at least this cosine similarity
    #[arg(long, default_value_t = -1.0, value_name = "S", allow_negative_numbers = true)]
    pub min_score: f32,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

/// Searches by the photo, or by `--person`.
pub fn run(g: &Global, a: &Args) -> Result<ExitCode> {
    match (&a.photo, &a.person) {
        (Some(photo), _) => by_photo(g, photo, a.face, a.top, a.min_score, a.json),
        (None, Some(person)) => by_person(g, person, a.top, a.min_score, a.json),
        (None, None) => bail!("search needs a photo or --person"),
    }
}

/// Ranks the gallery by the query photo's face.
fn by_photo(
    g: &Global,
    photo: &Path,
    face: usize,
    top: usize,
    min_score: f32,
    json: bool,
) -> Result<ExitCode> {
    let conn = g.db()?;
    let pipeline = g.gallery_pipeline(&conn)?;
    let faces = pipeline.analyze_file(photo, &media::scan_file(photo, false)?)?;
    let Some(query) = faces.get(face) else {
        bail!(
            "{}: has {} detected face(s), no face {face} (see `smoothface detect {}`)",
            photo.display(),
            faces.len(),
            photo.display()
        );
    };
    let emb = &pipeline.embedder;
    let model_id = gallery_model::adopt(&conn, emb)?;
    let loading = Instant::now();
    let matrix = FaceMatrix::load(&conn, model_id, emb.dim())?;
    let load_ms = loading.elapsed().as_secs_f64() * 1e3;
    let started = Instant::now();
    let hits = matrix.rank_media(&query.embedding, top, min_score);
    let search_ms = started.elapsed().as_secs_f64() * 1e3;
    if !matrix.damaged().is_empty() {
        eprintln!(
            "warning: {} damaged face(s) of the gallery left out of the search (face ids {:?}); \
             `smoothface forget` their photos and index them again",
            matrix.damaged().len(),
            matrix.damaged()
        );
    }
    type Row<'a> = (
        String,
        &'a smoothface_device::gallery::search::Hit,
        Option<TrackSpan>,
    );
    let rows: Vec<Row> = hits
        .iter()
        .map(|h| {
            let span = db::face_span(&conn, h.media_id, model_id, h.face_index)?;
            Ok((db::media_path(&conn, h.media_id)?, h, span))
        })
        .collect::<Result<_>>()?;
    if json {
        let hits: Vec<_> = rows
            .iter()
            .enumerate()
            .map(|(i, (path, h, span))| {
                json!({"rank": i + 1, "path": path, "score": h.score, "face_index": h.face_index,
                       "start_s": span.map(|s| s.start_s), "end_s": span.map(|s| s.end_s)})
            })
            .collect();
        let out = json!({
            "query": {"path": photo, "face_index": face, "bbox": query.face.bbox, "score": query.face.score},
            "model": emb.name,
            "faces_searched": matrix.len(),
            "load_ms": load_ms,
        "search_ms": search_ms,
            "hits": hits,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        if matrix.is_empty() {
            eprintln!(
                "the gallery has no faces for model {}: run `smoothface index DIR` first",
                emb.name
            );
        }
        for (i, (path, h, span)) in rows.iter().enumerate() {
            println!(
                "{:>4}  {:.3}  {path}{}  (face {})",
                i + 1,
                h.score,
                on_screen(*span),
                h.face_index
            );
        }
        eprintln!(
            "{} faces searched in {search_ms:.1} ms (loaded from the gallery in {load_ms:.0} ms)",
            matrix.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Ranks the gallery by a person's faces: theirs first, then the others.
fn by_person(g: &Global, person: &str, top: usize, min_score: f32, json: bool) -> Result<ExitCode> {
    let conn = g.db()?;
    let (model_id, dim) = g.gallery_model(&conn)?;
    let id = decisions::resolve(&conn, model_id, person)?;
    let matrix = FaceMatrix::load(&conn, model_id, dim)?;
    let started = Instant::now();
    let hits = people_store::rank_for_person(&conn, &matrix, id, Fusion::DEFAULT, top, min_score)?;
    let search_ms = started.elapsed().as_secs_f64() * 1e3;
    if json {
        let hits: Vec<_> = hits
            .iter()
            .enumerate()
            .map(|(i, h)| {
                json!({"rank": i + 1, "path": h.path, "score": h.score, "face_index": h.face_index,
                       "assigned": h.assigned, "start_s": h.span.map(|s| s.start_s),
                       "end_s": h.span.map(|s| s.end_s)})
            })
            .collect();
        let out = json!({
            "person": id,
            "fusion": Fusion::DEFAULT.name(),
            "faces_searched": matrix.len(),
            "search_ms": search_ms,
            "hits": hits,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for (i, h) in hits.iter().enumerate() {
            let mark = if h.assigned { "*" } else { " " };
            println!(
                "{:>4} {mark} {:.3}  {}{}  (face {})",
                i + 1,
                h.score,
                h.path,
                on_screen(h.span),
                h.face_index
            );
        }
        eprintln!(
            "* already the person's; {} faces searched in {search_ms:.1} ms ({})",
            matrix.len(),
            Fusion::DEFAULT.name()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// " at 1:05-1:12" for a video's face track, nothing for a photo's face.
fn on_screen(span: Option<TrackSpan>) -> String {
    let clock = |s: f64| {
        let s = s.max(0.0).round() as u64;
        match s / 3600 {
            0 => format!("{}:{:02}", s / 60, s % 60),
            h => format!("{h}:{:02}:{:02}", s / 60 % 60, s % 60),
        }
    };
    span.map_or(String::new(), |s| {
        format!(" at {}-{}", clock(s.start_s), clock(s.end_s))
    })
}
