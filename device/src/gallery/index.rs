//! `smoothface index`: walk folders, analyse new and changed photos and videos in parallel,
//! store them. A video's faces are its face tracks ([`crate::video`]).
//!
//! Incremental: a file whose size and modification time are unchanged, and which the current
//! model has analysed, is skipped. A file whose content hash is already analysed is a move (the
//! old path is gone: the row follows the file) or a duplicate (its faces are copied, not
//! recomputed). Workers decode and embed; one writer stores each file in its own transaction, so
//! a killed run resumes where it stopped, with nothing duplicated and nothing missing.

use super::db::{self, FileFacts, StoredFace};
use crate::frames::Sampling;
use crate::pipeline::Pipeline;
use anyhow::{Context, Result};
use rayon::prelude::*;
use rusqlite::{params, Connection};
use serde::Serialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A file that could not be indexed, and why (the cause alone: the path is its own field).
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// The file.
    pub path: String,
    /// The cause.
    pub error: String,
}

/// What an index run did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct IndexReport {
    /// Files found under the folders.
    pub scanned: usize,
    /// Files analysed by the model in this run.
    pub analysed: usize,
    /// Files skipped because they were unchanged.
    pub unchanged: usize,
    /// Files recognised by content as moved from a path that no longer exists.
    pub moved: usize,
    /// Files recognised by content as copies of an analysed file.
    pub duplicates: usize,
    /// Gallery entries dropped because their file is gone.
    pub removed: usize,
    /// Faces stored in this run (a video's face tracks count one each).
    pub faces: usize,
    /// Videos analysed in this run.
    pub videos: usize,
    /// Seconds of video analysed in this run.
    pub video_seconds: f64,
    /// Video frames sampled and analysed in this run.
    pub video_frames: usize,
    /// Files that could not be read as images, each with its cause.
    pub failed: Vec<Failure>,
}

/// Where a run is, readable from other threads while it runs (the service shows it): files to
/// examine once the walk is done, files examined, faces stored, files failed.
#[derive(Debug, Default)]
pub struct Progress {
    /// Files to examine (new or changed); 0 until the walk ends.
    pub total: AtomicUsize,
    /// Files examined so far.
    pub done: AtomicUsize,
    /// Faces stored so far.
    pub faces: AtomicUsize,
    /// Files that failed so far.
    pub failed: AtomicUsize,
}

/// A file found by the walk.
struct Found {
    path: PathBuf,
    size: u64,
    mtime_ns: i64,
}

/// What a worker learnt of a file.
enum Outcome {
    /// Its content is already analysed under another path.
    KnownContent(FileFacts),
    /// It was analysed: its faces, and for a video what was sampled.
    Analysed(FileFacts, Vec<StoredFace>, Option<VideoFacts>),
    /// It could not be read or decoded.
    Failed(FileFacts, String),
}

/// What was sampled of an analysed video.
struct VideoFacts {
    duration_s: Option<f64>,
    sampled: usize,
}

/// Indexes every file under `roots` into the gallery with the pipeline's embedder; videos are
/// sampled as `sampling` says. A bar is drawn on stderr when `bar`; `progress` counts as it goes.
pub fn index(
    conn: &mut Connection,
    pipeline: &Pipeline,
    roots: &[PathBuf],
    sampling: Sampling,
    bar: bool,
    progress: &Progress,
) -> Result<IndexReport> {
    let model_id = super::model::adopt(conn, &pipeline.embedder)?;
    let mut report = IndexReport::default();
    let roots: Vec<PathBuf> = roots
        .iter()
        .map(|r| {
            r.canonicalize()
                .with_context(|| format!("{}: cannot index: no such folder", r.display()))
        })
        .collect::<Result<_>>()?;
    let (found, walk_failures) = walk(&roots);
    report.scanned = found.len();
    report.failed = walk_failures;

    let known = db::media_by_path(conn, model_id)?;
    let seen: HashSet<String> = found.iter().map(|f| path_key(&f.path)).collect();
    let todo: Vec<Found> = found
        .into_iter()
        .filter(|f| {
            let unchanged = known.get(&path_key(&f.path)).is_some_and(|k| {
                k.ok && k.analysed && k.size == f.size && k.mtime_ns == f.mtime_ns
            });
            report.unchanged += unchanged as usize;
            !unchanged
        })
        .collect();
    let analysed_hashes = analysed_hashes(conn, model_id)?;

    progress.total.store(todo.len(), Ordering::Relaxed);
    let bar = crate::progress::photos_bar(todo.len(), bar);
    let (tx, rx) = std::sync::mpsc::sync_channel::<Outcome>(64);
    std::thread::scope(|scope| -> Result<()> {
        scope.spawn(|| {
            todo.par_iter().for_each_with(tx, |tx, f| {
                // The writer hung up only on a database error, which it reports itself.
                let _ = tx.send(examine(pipeline, f, &analysed_hashes, sampling));
            });
        });
        for outcome in rx {
            store(conn, model_id, outcome, &mut report)?;
            progress.done.fetch_add(1, Ordering::Relaxed);
            progress.faces.store(report.faces, Ordering::Relaxed);
            progress
                .failed
                .store(report.failed.len(), Ordering::Relaxed);
            bar.inc(1);
            bar.set_message(format!(
                "{} faces, {} failed",
                report.faces,
                report.failed.len()
            ));
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    report.removed = prune(conn, &roots, &seen)?;
    Ok(report)
}

/// Paths are stored as UTF-8 text; a non-UTF-8 name is stored lossily but still indexed.
fn path_key(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Every regular, non-hidden file under the roots, with what could not be walked.
fn walk(roots: &[PathBuf]) -> (Vec<Found>, Vec<Failure>) {
    let mut found = Vec::new();
    let mut failed = Vec::new();
    for root in roots {
        // Links are followed (libraries often link in other disks); a broken one is reported.
        let entries = walkdir::WalkDir::new(root)
            .sort_by_file_name()
            .follow_links(true)
            .into_iter()
            .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
        for entry in entries {
            let meta = entry.and_then(|e| {
                let m = e.metadata()?;
                Ok((e.into_path(), m))
            });
            match meta {
                Ok((path, m)) if m.is_file() => found.push(Found {
                    path,
                    size: m.len(),
                    mtime_ns: db::mtime_ns(&m),
                }),
                Ok(_) => {}
                Err(e) => failed.push(Failure {
                    path: e
                        .path()
                        .map_or_else(|| root.display().to_string(), |p| p.display().to_string()),
                    error: format!(
                        "cannot read: {}",
                        e.io_error()
                            .map_or_else(|| e.to_string(), |io| io.to_string())
                    ),
                }),
            }
        }
    }
    (found, failed)
}

fn analysed_hashes(conn: &Connection, model_id: i64) -> Result<HashSet<String>> {
    let mut stmt = conn.prepare(
        "SELECT DISTINCT m.content_hash FROM media m JOIN analyses a ON a.media_id = m.id
         WHERE a.model_id = ?1 AND m.status = 'ok'",
    )?;
    let hashes = stmt
        .query_map([model_id], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(hashes)
}

/// A worker's job: hash the file as a stream and, unless its content is known, decode it (an
/// image or a video, as its first bytes say), detect and embed. No file is held in memory whole:
/// hashing a 10 GB video costs one read buffer, decoding it a few frames.
fn examine(
    pipeline: &Pipeline,
    f: &Found,
    analysed_hashes: &HashSet<String>,
    sampling: Sampling,
) -> Outcome {
    let mut facts = FileFacts {
        path: path_key(&f.path),
        content_hash: String::new(),
        size: f.size,
        mtime_ns: f.mtime_ns,
    };
    let scan = match crate::media::scan_file(&f.path, true) {
        Ok(scan) => scan,
        Err(e) => return Outcome::Failed(facts, e.reason()),
    };
    facts.content_hash = scan.sha256.clone();
    if analysed_hashes.contains(&facts.content_hash) {
        return Outcome::KnownContent(facts);
    }
    if scan.video {
        return examine_video(pipeline, &f.path, facts, sampling);
    }
    if scan.format.is_none() && crate::media::has_video_extension(&f.path) {
        return Outcome::Failed(facts, "not a video (unknown format)".into());
    }
    let analysed = pipeline
        .analyze_file(&f.path, &scan)
        .map_err(|e| e.reason());
    match analysed {
        Ok(faces) => Outcome::Analysed(
            facts,
            faces
                .into_iter()
                .map(|f| StoredFace {
                    bbox: f.face.bbox,
                    score: f.face.score,
                    landmarks: f.face.landmarks,
                    embedding: f.embedding,
                    span: None,
                })
                .collect(),
            None,
        ),
        Err(e) => Outcome::Failed(facts, e),
    }
}

/// A video's face tracks, each stored as one face: its best frame's box, score and landmarks,
/// its pooled embedding and its time span.
#[cfg(feature = "video")]
fn examine_video(
    pipeline: &Pipeline,
    path: &Path,
    facts: FileFacts,
    sampling: Sampling,
) -> Outcome {
    use crate::tracks::{Pooling, TrackerConfig};
    match crate::video::analyse(
        pipeline,
        path,
        sampling,
        TrackerConfig::for_model(&pipeline.embedder.thresholds),
    ) {
        Ok(v) => {
            let faces = v
                .tracks
                .iter()
                .map(|t| StoredFace {
                    bbox: t.best.bbox,
                    score: t.best.score,
                    landmarks: t.best.landmarks,
                    embedding: t.embedding(Pooling::DEFAULT),
                    span: Some(db::TrackSpan {
                        start_s: t.start_s,
                        end_s: t.end_s,
                        frames: t.frames as u32,
                        best_s: t.best_s,
                    }),
                })
                .collect();
            let video = VideoFacts {
                duration_s: v.info.duration_s,
                sampled: v.info.sampled,
            };
            Outcome::Analysed(facts, faces, Some(video))
        }
        Err(e) => Outcome::Failed(facts, e.cause),
    }
}

/// Without the `video` feature a video is reported, not guessed at.
#[cfg(not(feature = "video"))]
fn examine_video(_: &Pipeline, _: &Path, facts: FileFacts, _: Sampling) -> Outcome {
    Outcome::Failed(
        facts,
        "a video, and this smoothface was built without video support (the `video` feature)".into(),
    )
}

/// The writer: one transaction per file.
fn store(
    conn: &mut Connection,
    model_id: i64,
    outcome: Outcome,
    report: &mut IndexReport,
) -> Result<()> {
    let tx = conn.transaction()?;
    match outcome {
        Outcome::Analysed(facts, faces, video) => {
            let id = db::upsert_media(&tx, &facts, None)?;
            db::store_faces(&tx, id, model_id, &faces)?;
            report.analysed += 1;
            report.faces += faces.len();
            if let Some(v) = video {
                db::set_duration(&tx, id, v.duration_s)?;
                report.videos += 1;
                report.video_seconds += v.duration_s.unwrap_or(0.0);
                report.video_frames += v.sampled;
            }
        }
        Outcome::Failed(facts, error) => {
            let id = db::upsert_media(&tx, &facts, Some(&error))?;
            tx.execute("DELETE FROM faces WHERE media_id = ?1", [id])?;
            tx.execute("DELETE FROM analyses WHERE media_id = ?1", [id])?;
            report.failed.push(Failure {
                path: facts.path,
                error,
            });
        }
        Outcome::KnownContent(facts) => {
            let (source, source_path) =
                db::analysed_media_with_hash(&tx, &facts.content_hash, model_id)?
                    .context("an analysed file vanished from the gallery during the run")?;
            let source_faces = match db::faces_of(&tx, source, model_id) {
                Ok(faces) => faces,
                Err(e) => {
                    // The copy's source row is damaged: report this file, keep indexing.
                    report.failed.push(Failure {
                        path: facts.path,
                        error: format!(
                            "same content as {source_path}, whose gallery entry is damaged: {e:#}"
                        ),
                    });
                    return Ok(());
                }
            };
            if source_path != facts.path && !Path::new(&source_path).exists() {
                // Moved: the row follows the file, keeping its faces for every model.
                tx.execute("DELETE FROM media WHERE path = ?1", [&facts.path])?;
                tx.execute(
                    "UPDATE media SET path = ?1, size = ?2, mtime_ns = ?3 WHERE id = ?4",
                    params![facts.path, facts.size as i64, facts.mtime_ns, source],
                )?;
                report.moved += 1;
            } else {
                let id = db::upsert_media(&tx, &facts, None)?;
                if id != source {
                    db::store_faces(&tx, id, model_id, &source_faces)?;
                    tx.execute(
                        "UPDATE media SET duration_s = (SELECT duration_s FROM media WHERE id = ?2)
                         WHERE id = ?1",
                        [id, source],
                    )?;
                    report.duplicates += 1;
                    report.faces += source_faces.len();
                } else {
                    report.unchanged += 1; // touched but identical: only the mtime changed
                }
            }
        }
    }
    tx.commit()?;
    Ok(())
}

/// Drops the gallery entries under the roots whose file was not found by this walk.
fn prune(conn: &mut Connection, roots: &[PathBuf], seen: &HashSet<String>) -> Result<usize> {
    let tx = conn.transaction()?;
    let mut gone = Vec::new();
    {
        let mut stmt = tx.prepare("SELECT id, path FROM media")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
        for row in rows {
            let (id, path) = row?;
            let under_root = roots.iter().any(|r| Path::new(&path).starts_with(r));
            if under_root && !seen.contains(&path) && !Path::new(&path).exists() {
                gone.push(id);
            }
        }
    }
    for id in &gone {
        tx.execute("DELETE FROM media WHERE id = ?1", [id])?;
    }
    tx.commit()?;
    Ok(gone.len())
}
