//! Moving a gallery to another embedder in place (`smoothface models use`, or `index` with
//! another `--model`).
//!
//! Every stored face is embedded again by the new model from its stored box and landmarks: the
//! photo is decoded again and the face aligned from the same points, with no detection rerun (a
//! video's face track from its best frame, found again by its time). Face ids stay, and with
//! them people, names, rejections and the decisions' history. The new embeddings are written
//! beside the old ones (`switch_embeddings`, a transaction per file), so a switch killed at any
//! point resumes where it stopped; the move itself is one transaction: the new vectors replace
//! the old, the faces, people and decisions change model, and the automatic assignments are
//! regrouped with the new model's thresholds while the user's assignments and rejections stay
//! constraints. A regrouped person takes back the id (and name) of the old person whose faces it
//! mostly holds, so "Anna" stays Anna.
//!
//! A file that is gone or cannot be read any more loses its faces (a later `index` analyses it
//! again if it comes back), and is listed. Camera enrolments keep their old vectors and model:
//! their frames were not kept, so they count again only if the gallery switches back.

use super::db;
use super::index::Failure;
use super::model;
use crate::mtcnn::Face;
use crate::people::linkage::{self, LinkageConfig};
use crate::people::store::{self, Eligibility};
use crate::pipeline::Pipeline;
use anyhow::{Context, Result};
use rayon::prelude::*;
use rusqlite::{params, Connection, Transaction, TransactionBehavior};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What a switch did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SwitchReport {
    /// The model the gallery was embedded with (`None`: it had none, nothing to re-embed).
    pub from: Option<String>,
    /// The model it is embedded with now.
    pub to: String,
    /// Faces embedded by the new model, this run and earlier interrupted runs together.
    pub faces: usize,
    /// Of them, those an earlier, interrupted run had done.
    pub resumed: usize,
    /// Files whose faces could not be embedded again (gone, unreadable): their faces left the
    /// gallery, each with the cause.
    pub dropped: Vec<Failure>,
    /// Faces of the new model an earlier `index` had stored (a gallery indexed with both
    /// models), replaced by the re-embedded ones.
    pub replaced: usize,
    /// Camera enrolments kept with the old model (enrol again to recognise with the new one).
    pub enrolments_kept: usize,
    /// The regrouping of the automatic assignments.
    pub regroup: Regroup,
    /// Time taken, milliseconds.
    pub ms: f64,
}

/// How the automatic assignments came out of the regrouping with the new model.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Regroup {
    /// Faces the user had assigned (kept as they were).
    pub user_faces: usize,
    /// Faces the grouping had assigned, grouped again.
    pub auto_faces: usize,
    /// Of them, those that ended in the same person as before.
    pub same_person: usize,
    /// People after the switch.
    pub people: usize,
    /// People the old grouping had and the new one left empty, removed (unnamed ones only).
    pub removed_people: usize,
}

/// One stored face to embed again.
struct Stored {
    id: i64,
    face: Face,
    /// A video track's best frame, seconds.
    best_s: Option<f64>,
}

/// One file's faces to embed again.
struct Job {
    path: PathBuf,
    video: bool,
    faces: Vec<Stored>,
}

/// Re-embeds the gallery's faces with `pipeline`'s embedder and makes it the gallery's model,
/// then regroups the automatic assignments (`eligibility` and `linkage` as `people update`
/// takes them). A gallery already on that model is left as it is; a gallery without a model
/// takes it.
pub fn switch(
    conn: &mut Connection,
    pipeline: &Pipeline,
    eligibility: &Eligibility,
    linkage: &LinkageConfig,
    bar: bool,
) -> Result<SwitchReport> {
    let started = Instant::now();
    let emb = &pipeline.embedder;
    let to = db::model_row(conn, &emb.model_id, &emb.name, emb.dim())?;
    let mut report = SwitchReport {
        to: format!("{} ({})", emb.name, &emb.model_id[..12]),
        ..SwitchReport::default()
    };
    let from = match model::current(conn)? {
        Some(cur) if cur.id != to => cur,
        _ => {
            // No model yet, or this one already: nothing to re-embed.
            model::adopt(conn, emb)?;
            return Ok(report);
        }
    };
    report.from = Some(from.label());
    begin(conn, from.id, to)?;
    report.resumed = conn.query_row("SELECT count(*) FROM switch_embeddings", [], |r| {
        r.get::<_, i64>(0)
    })? as usize;

    let jobs = pending_jobs(conn, from.id)?;
    let total: usize = jobs.iter().map(|j| j.faces.len()).sum();
    let bar = crate::progress::bar(total, bar, "faces");
    bar.set_message(format!("re-embedding with {}", emb.name));
    let (tx, rx) = std::sync::mpsc::sync_channel::<(PathBuf, JobResult)>(64);
    std::thread::scope(|scope| -> Result<()> {
        scope.spawn(|| {
            jobs.par_iter().for_each_with(tx, |tx, job| {
                // The writer hangs up only on a database error, which it reports itself.
                let _ = tx.send((job.path.clone(), embed_job(pipeline, job)));
            });
        });
        for (path, result) in rx {
            match result {
                Ok(vectors) => {
                    let t = conn.transaction()?;
                    let mut insert = t.prepare_cached(
                        "INSERT OR REPLACE INTO switch_embeddings (face_id, embedding) VALUES (?1, ?2)",
                    )?;
                    for (face, v) in &vectors {
                        insert.execute(params![face, db::to_blob(v)])?;
                    }
                    drop(insert);
                    t.commit()?;
                    bar.inc(vectors.len() as u64);
                }
                Err((faces, error)) => {
                    bar.inc(faces as u64);
                    report.dropped.push(Failure {
                        path: path.display().to_string(),
                        error,
                    });
                }
            }
        }
        Ok(())
    })?;
    bar.finish_and_clear();

    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let dropped: Vec<String> = report.dropped.iter().map(|d| d.path.clone()).collect();
    report.replaced = finish(&tx, from.id, to, &dropped)?;
    tx.execute(
        "UPDATE models SET current = (id = ?1), dir = coalesce(?2, dir)",
        params![to, emb.onnx_path.parent().map(|d| d.display().to_string())],
    )?;
    report.regroup = regroup(&tx, to, eligibility, linkage)?;
    report.faces = tx.query_row(
        "SELECT count(*) FROM faces WHERE model_id = ?1",
        [to],
        |r| r.get::<_, i64>(0),
    )? as usize;
    report.enrolments_kept = tx.query_row(
        "SELECT count(*) FROM enrolments WHERE model_id IS NOT ?1",
        [to],
        |r| r.get::<_, i64>(0),
    )? as usize;
    tx.execute("DELETE FROM switch_embeddings", [])?;
    tx.execute("DELETE FROM switch", [])?;
    tx.commit()?;
    report.ms = started.elapsed().as_secs_f64() * 1e3;
    Ok(report)
}

/// Records the switch under way, or keeps the one a killed run left if it is the same; a
/// different one left behind is abandoned with its vectors.
fn begin(conn: &mut Connection, from: i64, to: i64) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let same: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM switch WHERE from_model = ?1 AND to_model = ?2)",
        params![from, to],
        |r| r.get(0),
    )?;
    if !same {
        tx.execute("DELETE FROM switch_embeddings", [])?;
        tx.execute("DELETE FROM switch", [])?;
        tx.execute(
            "INSERT INTO switch (id, from_model, to_model) VALUES (1, ?1, ?2)",
            params![from, to],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// The faces of model `from` without a new vector yet, by file.
fn pending_jobs(conn: &Connection, from: i64) -> Result<Vec<Job>> {
    let mut stmt = conn.prepare(
        "SELECT f.id, m.path, m.duration_s IS NOT NULL, f.x1, f.y1, f.x2, f.y2, f.score,
                f.landmarks, f.best_s
         FROM faces f JOIN media m ON m.id = f.media_id
         WHERE f.model_id = ?1
           AND NOT EXISTS (SELECT 1 FROM switch_embeddings s WHERE s.face_id = f.id)
         ORDER BY f.media_id, f.face_index",
    )?;
    let mut rows = stmt.query([from])?;
    let mut jobs: Vec<Job> = Vec::new();
    while let Some(r) = rows.next()? {
        let id: i64 = r.get(0)?;
        let path = PathBuf::from(r.get::<_, String>(1)?);
        let lm = db::floats(r.get_ref(8)?.as_blob()?, 10, id, "landmarks")?;
        let stored = Stored {
            id,
            face: Face {
                bbox: [r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?],
                score: r.get(7)?,
                landmarks: std::array::from_fn(|k| [lm[2 * k], lm[2 * k + 1]]),
            },
            best_s: r.get(9)?,
        };
        match jobs.last_mut() {
            Some(job) if job.path == path => job.faces.push(stored),
            _ => jobs.push(Job {
                path,
                video: r.get(2)?,
                faces: vec![stored],
            }),
        }
    }
    Ok(jobs)
}

/// A file's new vectors by face id, or how many faces it had and why they could not be redone.
type JobResult = Result<Vec<(i64, Vec<f32>)>, (usize, String)>;

fn embed_job(pipeline: &Pipeline, job: &Job) -> JobResult {
    let done = if job.video {
        embed_video(pipeline, &job.path, &job.faces)
    } else {
        embed_photo(pipeline, &job.path, &job.faces)
    };
    done.map_err(|e| (job.faces.len(), e))
}

/// A photo's faces, aligned from the same pixels `index` aligned them from: the copy decoded
/// for detection, or a finer one where the face needs it.
fn embed_photo(
    pipeline: &Pipeline,
    path: &Path,
    faces: &[Stored],
) -> Result<Vec<(i64, Vec<f32>)>, String> {
    let scan = crate::media::scan_file(path, false).map_err(|e| e.reason())?;
    let side = pipeline.detector.max_side();
    let photo = crate::media::load_reduced(path, &scan, pipeline.max_pixels, side)
        .map_err(|e| e.reason())?;
    let wanted: Vec<Face> = faces.iter().map(|f| f.face.clone()).collect();
    let embedded = pipeline
        .embed_detected(path, &scan, &photo, wanted)
        .map_err(|e| e.reason())?;
    Ok(matched(faces.iter(), embedded))
}

/// A video's face tracks, each from its best frame (the box and landmarks stored for it).
#[cfg(feature = "video")]
fn embed_video(
    pipeline: &Pipeline,
    path: &Path,
    faces: &[Stored],
) -> Result<Vec<(i64, Vec<f32>)>, String> {
    use crate::video::decode::VideoFile;
    let time = |f: &Stored| f.best_s.unwrap_or(0.0);
    let times: Vec<f64> = faces.iter().map(time).collect();
    let mut video =
        VideoFile::open_at_times(path, &times, pipeline.max_pixels).map_err(|e| e.cause)?;
    let mut pending: Vec<&Stored> = faces.iter().collect();
    pending.sort_by(|a, b| time(a).total_cmp(&time(b)));
    pending.reverse();
    let mut out = Vec::with_capacity(faces.len());
    while let Some(next) = pending.last() {
        let Some(frame) = video.next_sample().map_err(|e| e.cause)? else {
            return Err(format!(
                "the video ends before its frame at {:.2} s, where a face track was found",
                time(next)
            ));
        };
        // The sampler took the first frame at or after each wanted time (1 ms of slack).
        let mut here = Vec::new();
        while pending
            .last()
            .is_some_and(|f| time(f) <= frame.time_s + 1e-3)
        {
            here.push(pending.pop().expect("checked"));
        }
        let wanted: Vec<Face> = here.iter().map(|f| f.face.clone()).collect();
        let embedded = pipeline
            .embed_faces(&frame.image, wanted)
            .map_err(|e| format!("embedding the frame at {:.2} s: {e:#}", frame.time_s))?;
        out.extend(matched(here, embedded));
    }
    Ok(out)
}

/// Without the `video` feature a video's tracks cannot be embedded again.
#[cfg(not(feature = "video"))]
fn embed_video(_: &Pipeline, _: &Path, _: &[Stored]) -> Result<Vec<(i64, Vec<f32>)>, String> {
    Err("a video, and this smoothface was built without video support (the `video` feature)".into())
}

/// Pairs the faces with the vectors the pipeline returned for them, in order: it skips a face
/// whose landmarks give no alignment (degenerate), which then gets none.
fn matched<'a>(
    faces: impl IntoIterator<Item = &'a Stored>,
    embedded: Vec<crate::pipeline::EmbeddedFace>,
) -> Vec<(i64, Vec<f32>)> {
    let mut out = Vec::with_capacity(embedded.len());
    let mut embedded = embedded.into_iter().peekable();
    for f in faces {
        if embedded.peek().is_some_and(|e| e.face == f.face) {
            out.push((f.id, embedded.next().expect("peeked").embedding));
        }
    }
    out
}

/// Moves the gallery's rows from model `from` to `to` with their new vectors: the faces of the
/// `dropped` files (and any face without a new vector) leave, with their analyses so that
/// `index` looks at those files again; rows an earlier `index` stored for `to` are replaced.
/// Returns how many of those were.
fn finish(tx: &Transaction, from: i64, to: i64, dropped: &[String]) -> Result<usize> {
    let replaced = tx.execute("DELETE FROM faces WHERE model_id = ?1", [to])?;
    tx.execute("DELETE FROM analyses WHERE model_id = ?1", [to])?;
    tx.execute("DELETE FROM decisions WHERE model_id = ?1", [to])?;
    tx.execute("DELETE FROM people WHERE model_id = ?1", [to])?;
    for path in dropped {
        tx.execute(
            "DELETE FROM analyses WHERE model_id = ?1 AND media_id = (SELECT id FROM media WHERE path = ?2)",
            params![from, path],
        )?;
    }
    tx.execute(
        "DELETE FROM faces WHERE model_id = ?1
           AND NOT EXISTS (SELECT 1 FROM switch_embeddings s WHERE s.face_id = faces.id)",
        [from],
    )?;
    tx.execute(
        "UPDATE faces SET model_id = ?2,
             embedding = (SELECT s.embedding FROM switch_embeddings s WHERE s.face_id = faces.id)
         WHERE model_id = ?1",
        params![from, to],
    )?;
    for table in ["analyses", "people", "decisions"] {
        tx.execute(
            &format!("UPDATE {table} SET model_id = ?2 WHERE model_id = ?1"),
            params![from, to],
        )
        .with_context(|| format!("moving {table} to the new model"))?;
    }
    Ok(replaced)
}

/// Groups the faces the grouping had assigned again with the new model's vectors, the user's
/// assignments and rejections as constraints, then gives each new person the id of the old
/// person whose faces it mostly holds where that person was left empty.
fn regroup(
    tx: &Transaction,
    model_id: i64,
    eligibility: &Eligibility,
    config: &LinkageConfig,
) -> Result<Regroup> {
    let before: HashMap<i64, i64> = tx
        .prepare("SELECT id, person_id FROM faces WHERE model_id = ?1 AND assigned_by = 'auto'")?
        .query_map([model_id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let user_faces: i64 = tx.query_row(
        "SELECT count(*) FROM faces WHERE model_id = ?1 AND assigned_by = 'user'",
        [model_id],
        |r| r.get(0),
    )?;
    tx.execute(
        "UPDATE faces SET person_id = NULL, assigned_by = NULL
         WHERE model_id = ?1 AND assigned_by = 'auto'",
        [model_id],
    )?;
    let loaded = store::load(tx, model_id, eligibility)?;
    let grouping = linkage::group(&loaded.gallery(), config);
    let created = store::apply(tx, model_id, &loaded.face_ids, &grouping)?;

    // Each new person's faces counted by the old person they were in, largest overlaps first.
    let mut overlaps: Vec<(usize, i64, i64)> = Vec::new();
    for (new, rows) in created.iter().zip(&grouping.new_people) {
        let mut counts: HashMap<i64, usize> = HashMap::new();
        for &row in rows {
            if let Some(&old) = before.get(&loaded.face_ids[row as usize]) {
                *counts.entry(old).or_default() += 1;
            }
        }
        overlaps.extend(counts.into_iter().map(|(old, n)| (n, *new, old)));
    }
    overlaps.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let (mut renamed, mut taken) = (HashSet::new(), HashSet::new());
    for (_, new, old) in overlaps {
        if renamed.contains(&new) || taken.contains(&old) {
            continue;
        }
        let empty: bool = tx.query_row(
            "SELECT NOT EXISTS (SELECT 1 FROM faces WHERE person_id = ?1)
                AND EXISTS (SELECT 1 FROM people WHERE id = ?1)",
            [old],
            |r| r.get(0),
        )?;
        if empty {
            tx.execute(
                "UPDATE faces SET person_id = ?2 WHERE person_id = ?1",
                params![new, old],
            )?;
            // A face the user rejected from the old person never ends in it, whoever it was
            // grouped with.
            tx.execute(
                "UPDATE faces SET person_id = NULL, assigned_by = NULL
                 WHERE person_id = ?1 AND assigned_by = 'auto'
                   AND id IN (SELECT face_id FROM rejections WHERE person_id = ?1)",
                [old],
            )?;
            tx.execute("DELETE FROM people WHERE id = ?1", [new])?;
            renamed.insert(new);
            taken.insert(old);
        }
    }
    let removed_people = db::drop_empty_people(tx)?.len();
    let same_person = {
        let mut stmt = tx.prepare_cached("SELECT person_id FROM faces WHERE id = ?1")?;
        let mut same = 0;
        for (face, old) in &before {
            let now: Option<i64> = stmt.query_row([face], |r| r.get(0))?;
            same += (now == Some(*old)) as usize;
        }
        same
    };
    let people: i64 = tx.query_row(
        "SELECT count(*) FROM people WHERE model_id = ?1",
        [model_id],
        |r| r.get(0),
    )?;
    Ok(Regroup {
        user_faces: user_faces as usize,
        auto_faces: before.len(),
        same_person,
        people: people as usize,
        removed_people,
    })
}
