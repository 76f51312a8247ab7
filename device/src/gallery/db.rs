//! The gallery database: schema, migrations and the rows the indexer and search read and write.
//!
//! SQLite in WAL mode, so a search can read while an index run writes. Every change to one photo
//! is one transaction: a killed run leaves each photo either fully stored or absent. Deleted rows
//! are overwritten on disk (`secure_delete`), and `forget` truncates the WAL, because embeddings
//! are biometric data and deleting them must really delete them.

use anyhow::{bail, Context, Result};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Schema migrations, applied in order; `PRAGMA user_version` records how many have run.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE models (
    id INTEGER PRIMARY KEY,
    model_hash TEXT NOT NULL UNIQUE,   -- sha256 of the embedder's ONNX file
    name TEXT NOT NULL,
    dim INTEGER NOT NULL
);
CREATE TABLE media (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,         -- absolute path
    content_hash TEXT NOT NULL,        -- sha256 of the file's bytes
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'error')),
    error TEXT                         -- why it could not be read, when status = 'error'
);
CREATE INDEX media_content_hash ON media (content_hash);
-- A photo analysed with a model: present once all its faces are stored, so an unchanged photo
-- with a row here is skipped, and embeddings of different models never mix.
CREATE TABLE analyses (
    media_id INTEGER NOT NULL REFERENCES media (id) ON DELETE CASCADE,
    model_id INTEGER NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    faces INTEGER NOT NULL,
    PRIMARY KEY (media_id, model_id)
);
CREATE TABLE faces (
    id INTEGER PRIMARY KEY,
    media_id INTEGER NOT NULL REFERENCES media (id) ON DELETE CASCADE,
    model_id INTEGER NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    face_index INTEGER NOT NULL,       -- 0 = largest face of the photo
    x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
    score REAL NOT NULL,
    landmarks BLOB NOT NULL,           -- 10 little-endian f32: x, y of each of the 5 points
    embedding BLOB NOT NULL,           -- dim little-endian f32, unit length
    UNIQUE (media_id, model_id, face_index)
);
CREATE INDEX faces_model_media ON faces (model_id, media_id);
"#,
    r#"
-- People (schema 2). AUTOINCREMENT: an id is never reused, so `people undo` can bring a deleted
-- person back under its own id.
CREATE TABLE people (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model_id INTEGER NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    name TEXT
);
CREATE INDEX people_model ON people (model_id);
ALTER TABLE faces ADD COLUMN person_id INTEGER REFERENCES people (id) ON DELETE SET NULL;
-- Who put the face in its person: the grouping ('auto') or the user ('user').
ALTER TABLE faces ADD COLUMN assigned_by TEXT CHECK (assigned_by IN ('auto', 'user'));
CREATE INDEX faces_person ON faces (person_id);
-- "This face is not this person": no grouping ever puts it there again.
CREATE TABLE rejections (
    face_id INTEGER NOT NULL REFERENCES faces (id) ON DELETE CASCADE,
    person_id INTEGER NOT NULL REFERENCES people (id) ON DELETE CASCADE,
    PRIMARY KEY (face_id, person_id)
);
-- The user's decisions, newest last, each with what `people undo` needs to revert it.
CREATE TABLE decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model_id INTEGER NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    summary TEXT NOT NULL,
    undo TEXT NOT NULL,                -- JSON: the rows as they were before
    undone INTEGER NOT NULL DEFAULT 0
);
"#,
    r#"
-- Videos (schema 3). A video's faces are its face tracks: box, score and landmarks of the
-- track's best frame, the embedding pooled over its frames, and when it is on screen.
ALTER TABLE media ADD COLUMN duration_s REAL;   -- a video's length; NULL for a photo
ALTER TABLE faces ADD COLUMN start_s REAL;      -- first sampled frame of the track, seconds
ALTER TABLE faces ADD COLUMN end_s REAL;        -- last sampled frame of the track
ALTER TABLE faces ADD COLUMN frames INTEGER;    -- sampled frames the track appears in
ALTER TABLE faces ADD COLUMN best_s REAL;       -- the frame whose box and landmarks are stored
-- A person's vector from `camera --enrol`: the mean of the good frames' embeddings.
CREATE TABLE enrolments (
    id INTEGER PRIMARY KEY,
    person_id INTEGER NOT NULL REFERENCES people (id) ON DELETE CASCADE,
    embedding BLOB NOT NULL,           -- dim little-endian f32, unit length
    frames INTEGER NOT NULL,           -- the frames averaged
    source TEXT NOT NULL               -- the camera or file it was captured from
);
CREATE INDEX enrolments_person ON enrolments (person_id);
"#,
    r#"
-- One model at a time (schema 4): the gallery's faces, people and decisions are of its current
-- model; another model re-embeds them in place (gallery/switch.rs). A gallery indexed with two
-- models before keeps the one that analysed the most files.
ALTER TABLE models ADD COLUMN current INTEGER NOT NULL DEFAULT 0;
ALTER TABLE models ADD COLUMN dir TEXT;         -- the folder it was last loaded from
UPDATE models SET current = 1 WHERE id = (
    SELECT model_id FROM analyses GROUP BY model_id ORDER BY count(*) DESC, model_id DESC LIMIT 1);
-- An enrolment keeps the model it was embedded with: its camera frames were not kept, so a
-- switch cannot re-embed it (it counts again if the gallery switches back).
ALTER TABLE enrolments ADD COLUMN model_id INTEGER REFERENCES models (id) ON DELETE CASCADE;
UPDATE enrolments SET model_id = (SELECT model_id FROM people p WHERE p.id = enrolments.person_id);
-- A switch under way: the new embeddings of the faces done so far, so that a killed switch
-- resumes where it stopped.
CREATE TABLE switch (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    from_model INTEGER NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    to_model INTEGER NOT NULL REFERENCES models (id) ON DELETE CASCADE
);
CREATE TABLE switch_embeddings (
    face_id INTEGER PRIMARY KEY REFERENCES faces (id) ON DELETE CASCADE,
    embedding BLOB NOT NULL            -- dim little-endian f32 of the new model, unit length
);
-- "These two are not the same person" (`people keep-apart`): no suggestion pairs them again.
CREATE TABLE keep_apart (
    a INTEGER NOT NULL REFERENCES people (id) ON DELETE CASCADE,
    b INTEGER NOT NULL REFERENCES people (id) ON DELETE CASCADE,
    PRIMARY KEY (a, b),
    CHECK (a < b)
);
"#,
];

/// Opens (creating if needed) a gallery and brings its schema up to date.
pub fn open(path: &Path) -> Result<Connection> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create the gallery folder", dir.display()))?;
    }
    if path.is_dir() {
        bail!(
            "{}: is a folder, not a gallery database (--db takes a file)",
            path.display()
        );
    }
    let mut conn = Connection::open(path)
        .with_context(|| format!("{}: cannot open the gallery", path.display()))?;
    let settings = |conn: &Connection| -> rusqlite::Result<()> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        enter_wal(conn)?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.pragma_update(None, "secure_delete", "ON")
    };
    settings(&conn).map_err(|e| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => anyhow::anyhow!(
            "{}: is not a smoothface gallery (not an SQLite database); point --db at another file",
            path.display()
        ),
        _ => anyhow::Error::new(e).context(format!("{}: cannot open the gallery", path.display())),
    })?;
    migrate(&mut conn).with_context(|| format!("{}: cannot use this gallery", path.display()))?;
    Ok(conn)
}

/// How long a connection waits for another's lock before giving up.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Puts the gallery in WAL mode (kept in the file, so later opens find it there). A new
/// gallery opened by several connections at once can answer "database is locked" at once here,
/// without waiting for the busy timeout: the switch upgrades a read lock to an exclusive one, and
/// SQLite refuses that to one of two readers rather than let them deadlock. So retry until the
/// busy timeout, as the busy handler would.
fn enter_wal(conn: &Connection) -> rusqlite::Result<()> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(e)
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            done => return done,
        }
    }
}

/// Brings the schema up to date. The version is read and every pending migration applied in one
/// write transaction taken up front, so two processes opening a new gallery at once (an index
/// run and a `stats` beside it) serialise: the second sees the first one's version, never
/// re-running its migrations.
fn migrate(conn: &mut Connection) -> Result<()> {
    let newest = MIGRATIONS.len() as i64;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version == newest {
        return Ok(()); // the common case: no write lock needed
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    anyhow::ensure!(
        version <= newest,
        "its schema version is {version}, newer than this smoothface's ({newest}): it was written \
         by a newer smoothface, which is needed to read it"
    );
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
    }
    tx.commit()?;
    Ok(())
}

/// The row id of a model, inserting it on first use.
pub fn model_row(conn: &Connection, model_hash: &str, name: &str, dim: usize) -> Result<i64> {
    conn.execute(
        "INSERT INTO models (model_hash, name, dim) VALUES (?1, ?2, ?3) ON CONFLICT (model_hash) DO NOTHING",
        params![model_hash, name, dim as i64],
    )?;
    Ok(conn.query_row(
        "SELECT id FROM models WHERE model_hash = ?1",
        [model_hash],
        |r| r.get(0),
    )?)
}

/// The row id and embedding size of a model the gallery has seen, if any.
pub fn find_model(conn: &Connection, model_hash: &str) -> Result<Option<(i64, usize)>> {
    Ok(conn
        .query_row(
            "SELECT id, dim FROM models WHERE model_hash = ?1",
            [model_hash],
            |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as usize)),
        )
        .optional()?)
}

/// The embedding size of a model row.
pub fn model_dim(conn: &Connection, model_id: i64) -> Result<usize> {
    Ok(
        conn.query_row("SELECT dim FROM models WHERE id = ?1", [model_id], |r| {
            r.get::<_, i64>(0)
        })? as usize,
    )
}

/// What the gallery knows of one path.
#[derive(Debug, Clone)]
pub struct MediaRow {
    /// Row id.
    pub id: i64,
    /// File size when indexed.
    pub size: u64,
    /// Modification time when indexed, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Content hash.
    pub content_hash: String,
    /// Whether the given model has analysed it.
    pub analysed: bool,
    /// Whether it could be read.
    pub ok: bool,
}

/// Every media row with whether `model_id` has analysed it, by path.
pub fn media_by_path(
    conn: &Connection,
    model_id: i64,
) -> Result<std::collections::HashMap<String, MediaRow>> {
    let mut stmt = conn.prepare(
        "SELECT m.path, m.id, m.size, m.mtime_ns, m.content_hash, a.media_id IS NOT NULL, m.status = 'ok'
         FROM media m LEFT JOIN analyses a ON a.media_id = m.id AND a.model_id = ?1",
    )?;
    let rows = stmt.query_map([model_id], |r| {
        Ok((
            r.get::<_, String>(0)?,
            MediaRow {
                id: r.get(1)?,
                size: r.get::<_, i64>(2)? as u64,
                mtime_ns: r.get(3)?,
                content_hash: r.get(4)?,
                analysed: r.get(5)?,
                ok: r.get(6)?,
            },
        ))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// A face as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredFace {
    /// Box corners.
    pub bbox: [f32; 4],
    /// Detector score.
    pub score: f32,
    /// Five landmarks.
    pub landmarks: [[f32; 2]; 5],
    /// Unit embedding.
    pub embedding: Vec<f32>,
    /// For a face track of a video: when it is on screen.
    pub span: Option<TrackSpan>,
}

/// When a video's face track is on screen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TrackSpan {
    /// Time of its first sampled frame, seconds.
    pub start_s: f64,
    /// Time of its last sampled frame.
    pub end_s: f64,
    /// Sampled frames it appears in.
    pub frames: u32,
    /// Time of the frame whose box and landmarks are stored.
    pub best_s: f64,
}

/// File facts stored with a media row.
#[derive(Debug, Clone)]
pub struct FileFacts {
    /// Absolute path.
    pub path: String,
    /// sha256 of the bytes.
    pub content_hash: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
}

/// A file's modification time as the gallery records it: nanoseconds since the epoch (0 when the
/// system cannot say).
pub fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Inserts or updates the media row of a path, removing what an earlier version of the file left.
pub fn upsert_media(tx: &Transaction, f: &FileFacts, error: Option<&str>) -> Result<i64> {
    tx.execute(
        "DELETE FROM media WHERE path = ?1 AND content_hash != ?2",
        params![f.path, f.content_hash],
    )?;
    tx.execute(
        "INSERT INTO media (path, content_hash, size, mtime_ns, status, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (path) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns,
           status = excluded.status, error = excluded.error",
        params![f.path, f.content_hash, f.size as i64, f.mtime_ns, if error.is_some() { "error" } else { "ok" }, error],
    )?;
    Ok(
        tx.query_row("SELECT id FROM media WHERE path = ?1", [&f.path], |r| {
            r.get(0)
        })?,
    )
}

/// Replaces the faces of a media row for one model and marks it analysed.
pub fn store_faces(
    tx: &Transaction,
    media_id: i64,
    model_id: i64,
    faces: &[StoredFace],
) -> Result<()> {
    tx.execute(
        "DELETE FROM faces WHERE media_id = ?1 AND model_id = ?2",
        params![media_id, model_id],
    )?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO faces (media_id, model_id, face_index, x1, y1, x2, y2, score, landmarks, embedding,
                            start_s, end_s, frames, best_s)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?;
    for (i, f) in faces.iter().enumerate() {
        let lm: Vec<f32> = f.landmarks.iter().flatten().copied().collect();
        insert.execute(params![
            media_id,
            model_id,
            i as i64,
            f.bbox[0],
            f.bbox[1],
            f.bbox[2],
            f.bbox[3],
            f.score,
            to_blob(&lm),
            to_blob(&f.embedding),
            f.span.map(|s| s.start_s),
            f.span.map(|s| s.end_s),
            f.span.map(|s| s.frames),
            f.span.map(|s| s.best_s),
        ])?;
    }
    tx.execute(
        "INSERT INTO analyses (media_id, model_id, faces) VALUES (?1, ?2, ?3)
         ON CONFLICT (media_id, model_id) DO UPDATE SET faces = excluded.faces",
        params![media_id, model_id, faces.len() as i64],
    )?;
    Ok(())
}

/// The faces one model found in a media row, in face order. A row whose landmark or embedding
/// blob is not of its size (a damaged gallery) is an error naming the face.
pub fn faces_of(conn: &Connection, media_id: i64, model_id: i64) -> Result<Vec<StoredFace>> {
    let dim = model_dim(conn, model_id)?;
    let mut stmt = conn.prepare_cached(
        "SELECT id, x1, y1, x2, y2, score, landmarks, embedding, start_s, end_s, frames, best_s
         FROM faces WHERE media_id = ?1 AND model_id = ?2 ORDER BY face_index",
    )?;
    let mut rows = stmt.query(params![media_id, model_id])?;
    let mut faces = Vec::new();
    while let Some(r) = rows.next()? {
        let id: i64 = r.get(0)?;
        let lm = floats(r.get_ref(6)?.as_blob()?, 10, id, "landmarks")?;
        faces.push(StoredFace {
            bbox: [r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?],
            score: r.get(5)?,
            landmarks: std::array::from_fn(|k| [lm[2 * k], lm[2 * k + 1]]),
            embedding: floats(r.get_ref(7)?.as_blob()?, dim, id, "embedding")?,
            span: span_of(r, 8)?,
        });
    }
    Ok(faces)
}

/// The track span stored in the four columns from `first` (start, end, frames, best), if any.
pub fn span_of(r: &rusqlite::Row, first: usize) -> rusqlite::Result<Option<TrackSpan>> {
    let start: Option<f64> = r.get(first)?;
    Ok(match start {
        Some(start_s) => Some(TrackSpan {
            start_s,
            end_s: r.get::<_, Option<f64>>(first + 1)?.unwrap_or(start_s),
            frames: r.get::<_, Option<u32>>(first + 2)?.unwrap_or(1),
            best_s: r.get::<_, Option<f64>>(first + 3)?.unwrap_or(start_s),
        }),
        None => None,
    })
}

/// The span of one face of a media row, when it is a video's track.
pub fn face_span(
    conn: &Connection,
    media_id: i64,
    model_id: i64,
    face_index: u32,
) -> Result<Option<TrackSpan>> {
    let mut stmt = conn.prepare_cached(
        "SELECT start_s, end_s, frames, best_s FROM faces
         WHERE media_id = ?1 AND model_id = ?2 AND face_index = ?3",
    )?;
    Ok(stmt
        .query_row(params![media_id, model_id, face_index], |r| span_of(r, 0))
        .optional()?
        .flatten())
}

/// Records a video's length.
pub fn set_duration(tx: &Transaction, media_id: i64, duration_s: Option<f64>) -> Result<()> {
    tx.execute(
        "UPDATE media SET duration_s = ?2 WHERE id = ?1",
        params![media_id, duration_s],
    )?;
    Ok(())
}

/// The `len` floats of a stored blob, or an error naming the damaged face row.
pub fn floats(blob: &[u8], len: usize, face_id: i64, what: &str) -> Result<Vec<f32>> {
    if blob.len() != len * 4 {
        bail!(
            "face {face_id} of the gallery is damaged: its {what} has {} bytes, expected {} \
             (forget its photo and index it again)",
            blob.len(),
            len * 4
        );
    }
    Ok(from_blob(blob))
}

/// A media row analysed by the model whose content hash is `hash`, if any: the source of a
/// moved or duplicated file's faces.
pub fn analysed_media_with_hash(
    conn: &Connection,
    hash: &str,
    model_id: i64,
) -> Result<Option<(i64, String)>> {
    Ok(conn
        .query_row(
            "SELECT m.id, m.path FROM media m JOIN analyses a ON a.media_id = m.id AND a.model_id = ?2
             WHERE m.content_hash = ?1 AND m.status = 'ok' LIMIT 1",
            params![hash, model_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

/// What the gallery holds for one model (`smoothface stats`).
#[derive(Debug, Clone, Serialize)]
pub struct ModelStats {
    /// The manifest's name.
    pub name: String,
    /// sha256 of its ONNX file.
    pub sha256: String,
    /// Embedding size.
    pub dim: i64,
    /// Photos it analysed.
    pub photos: i64,
    /// Faces it stored.
    pub faces: i64,
}

/// What the gallery holds (`smoothface stats`).
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// The database file.
    pub database: PathBuf,
    /// Its size on disk.
    pub bytes: u64,
    /// Files known.
    pub media: i64,
    /// Files that could not be read.
    pub unreadable: i64,
    /// Videos analysed (their files are among `media`).
    pub videos: i64,
    /// Their total length, seconds.
    pub video_seconds: f64,
    /// Per model.
    pub models: Vec<ModelStats>,
}

/// Counts what the gallery at `path` holds.
pub fn stats(conn: &Connection, path: &Path) -> Result<Stats> {
    let count = |sql: &str| -> Result<i64> { Ok(conn.query_row(sql, [], |r| r.get(0))?) };
    let mut stmt = conn.prepare(
        "SELECT m.name, m.model_hash, m.dim, (SELECT count(*) FROM analyses a WHERE a.model_id = m.id),
                (SELECT count(*) FROM faces f WHERE f.model_id = m.id) FROM models m ORDER BY m.id",
    )?;
    let models = stmt
        .query_map([], |r| {
            Ok(ModelStats {
                name: r.get(0)?,
                sha256: r.get(1)?,
                dim: r.get(2)?,
                photos: r.get(3)?,
                faces: r.get(4)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Stats {
        database: path.to_path_buf(),
        bytes: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
        media: count("SELECT count(*) FROM media")?,
        unreadable: count("SELECT count(*) FROM media WHERE status = 'error'")?,
        videos: count("SELECT count(*) FROM media WHERE duration_s IS NOT NULL")?,
        video_seconds: conn.query_row(
            "SELECT coalesce(sum(duration_s), 0.0) FROM media",
            [],
            |r| r.get(0),
        )?,
        models,
    })
}

/// What `forget` removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Forgotten {
    /// Photos removed.
    pub photos: usize,
    /// Their faces.
    pub faces: usize,
    /// People left without faces, and without a name, so removed with them.
    pub people: usize,
    /// Paths given that matched nothing.
    pub not_found: Vec<PathBuf>,
}

/// Deletes the people left without any face, unless the user named them; returns them.
pub fn drop_empty_people(tx: &Transaction) -> Result<Vec<(i64, Option<String>)>> {
    let empty = "name IS NULL AND NOT EXISTS (SELECT 1 FROM faces f WHERE f.person_id = people.id)";
    let gone = tx
        .prepare(&format!("SELECT id, name FROM people WHERE {empty}"))?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    tx.execute(&format!("DELETE FROM people WHERE {empty}"), [])?;
    Ok(gone)
}

/// Removes the media at each absolute path, or under it for a folder, with their faces, in one
/// transaction; then truncates the WAL so that no copy of the deleted pages is left on disk.
pub fn forget(conn: &mut Connection, paths: &[PathBuf]) -> Result<Forgotten> {
    let tx = conn.transaction()?;
    let mut report = Forgotten::default();
    for abs in paths {
        let key = abs.to_string_lossy().into_owned();
        // Exact prefix match: LIKE would ignore case and treat `_` and `%` as wildcards.
        let prefix = format!("{}/", key.trim_end_matches('/'));
        let filter = "path = ?1 OR substr(path, 1, length(?2)) = ?2";
        report.faces += tx.query_row(
            &format!("SELECT count(*) FROM faces WHERE media_id IN (SELECT id FROM media WHERE {filter})"),
            [&key, &prefix],
            |r| r.get::<_, i64>(0),
        )? as usize;
        let n = tx.execute(
            &format!("DELETE FROM media WHERE {filter}"),
            [&key, &prefix],
        )?;
        if n == 0 {
            report.not_found.push(abs.clone());
        }
        report.photos += n;
    }
    report.people = drop_empty_people(&tx)?.len();
    tx.commit()?;
    // secure_delete zeroed the freed pages; truncating the WAL drops its copies of them too.
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(report)
}

/// The path of a media row.
pub fn media_path(conn: &Connection, media_id: i64) -> Result<String> {
    let mut stmt = conn.prepare_cached("SELECT path FROM media WHERE id = ?1")?;
    Ok(stmt.query_row([media_id], |r| r.get(0))?)
}

/// Encodes floats as little-endian bytes.
pub fn to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Decodes little-endian bytes into floats.
pub fn from_blob(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(v: f32) -> StoredFace {
        StoredFace {
            bbox: [1.0, 2.0, 3.0, 4.0],
            score: 0.9,
            landmarks: [[v, v]; 5],
            embedding: vec![v, 1.0 - v],
            span: None,
        }
    }

    fn facts(path: &str, hash: &str) -> FileFacts {
        FileFacts {
            path: path.into(),
            content_hash: hash.into(),
            size: 10,
            mtime_ns: 5,
        }
    }

    #[test]
    fn migrations_are_idempotent_and_versioned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.sqlite");
        drop(open(&path).unwrap());
        let conn = open(&path).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v as usize, MIGRATIONS.len());
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn a_schema_1_gallery_gains_people_and_keeps_its_faces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.sqlite");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute_batch(
                "INSERT INTO models VALUES (1, 'h', 'a', 2);
                 INSERT INTO media VALUES (1, '/p/a.jpg', 'x', 1, 1, 'ok', NULL);
                 INSERT INTO faces (id, media_id, model_id, face_index, x1, y1, x2, y2, score, landmarks, embedding)
                   VALUES (7, 1, 1, 0, 0, 0, 1, 1, 0.9, x'00', x'00');",
            )
            .unwrap();
        }
        let conn = open(&path).unwrap();
        let (face, person): (i64, Option<i64>) = conn
            .query_row("SELECT id, person_id FROM faces", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((face, person), (7, None));
        conn.execute("INSERT INTO people (model_id, name) VALUES (1, 'Anna')", [])
            .unwrap();
        conn.execute("UPDATE faces SET person_id = 1, assigned_by = 'user'", [])
            .unwrap();
        assert!(conn
            .execute("UPDATE faces SET assigned_by = 'someone'", [])
            .is_err());
    }

    #[test]
    fn faces_round_trip_and_replace_per_model() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open(&dir.path().join("g.sqlite")).unwrap();
        let (m1, m2) = (
            model_row(&conn, "h1", "a", 2).unwrap(),
            model_row(&conn, "h2", "b", 2).unwrap(),
        );
        assert_eq!(model_row(&conn, "h1", "a", 2).unwrap(), m1);
        let tx = conn.transaction().unwrap();
        let id = upsert_media(&tx, &facts("/p/a.jpg", "x"), None).unwrap();
        store_faces(&tx, id, m1, &[face(0.25), face(0.5)]).unwrap();
        store_faces(&tx, id, m2, &[face(0.75)]).unwrap();
        store_faces(&tx, id, m1, &[face(0.125)]).unwrap(); // re-analysis replaces, never appends
        tx.commit().unwrap();
        assert_eq!(faces_of(&conn, id, m1).unwrap(), [face(0.125)]);
        assert_eq!(faces_of(&conn, id, m2).unwrap(), [face(0.75)]);
        assert_eq!(
            analysed_media_with_hash(&conn, "x", m2).unwrap(),
            Some((id, "/p/a.jpg".into()))
        );
        assert_eq!(analysed_media_with_hash(&conn, "y", m2).unwrap(), None);
    }

    #[test]
    fn a_changed_file_loses_its_old_faces() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open(&dir.path().join("g.sqlite")).unwrap();
        let m = model_row(&conn, "h", "a", 2).unwrap();
        let tx = conn.transaction().unwrap();
        let id = upsert_media(&tx, &facts("/p/a.jpg", "old"), None).unwrap();
        store_faces(&tx, id, m, &[face(0.5)]).unwrap();
        let id2 = upsert_media(&tx, &facts("/p/a.jpg", "new"), None).unwrap();
        tx.commit().unwrap();
        assert!(faces_of(&conn, id2, m).unwrap().is_empty());
        let n: i64 = conn
            .query_row("SELECT count(*) FROM faces", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
        assert!(!media_by_path(&conn, m).unwrap()["/p/a.jpg"].analysed);
    }

    #[test]
    fn galleries_opened_at_once_migrate_once() {
        let dir = tempfile::tempdir().unwrap();
        // Many new galleries, each opened by four threads at once: the race between their
        // switches to WAL failed about one gallery in twenty before `enter_wal`.
        for i in 0..40 {
            let path = dir.path().join(format!("g{i}.sqlite"));
            let opened: Vec<_> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..4).map(|_| s.spawn(|| open(&path).map(drop))).collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            for r in opened {
                r.unwrap();
            }
            let conn = open(&path).unwrap();
            let v: i64 = conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap();
            assert_eq!(v as usize, MIGRATIONS.len());
            let mode: String = conn
                .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .unwrap();
            assert_eq!(mode, "wal");
        }
    }

    #[test]
    fn a_file_that_is_not_a_database_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("photo.jpg");
        std::fs::write(&path, vec![0xAB; 4096]).unwrap();
        let msg = format!("{:#}", open(&path).unwrap_err());
        assert!(
            msg.contains(&path.display().to_string()) && msg.contains("not an SQLite database"),
            "{msg}"
        );
        let msg = format!("{:#}", open(dir.path()).unwrap_err());
        assert!(msg.contains("is a folder"), "{msg}");
    }

    #[test]
    fn a_gallery_from_a_newer_schema_is_refused_not_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.sqlite");
        drop(open(&path).unwrap());
        let newer = MIGRATIONS.len() as i64 + 1;
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", newer)
            .unwrap();
        let msg = format!("{:#}", open(&path).unwrap_err());
        assert!(
            msg.contains(&path.display().to_string())
                && msg.contains(&format!("schema version is {newer}"))
                && msg.contains("newer smoothface"),
            "{msg}"
        );
        let v: i64 = Connection::open(&path)
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, newer);
    }

    #[test]
    fn damaged_face_rows_are_errors_naming_the_face() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open(&dir.path().join("g.sqlite")).unwrap();
        let m = model_row(&conn, "h", "a", 2).unwrap();
        let tx = conn.transaction().unwrap();
        let id = upsert_media(&tx, &facts("/p/a.jpg", "x"), None).unwrap();
        store_faces(&tx, id, m, &[face(0.5)]).unwrap();
        tx.commit().unwrap();
        conn.execute("UPDATE faces SET landmarks = x'0000'", [])
            .unwrap();
        let face_id: i64 = conn
            .query_row("SELECT id FROM faces", [], |r| r.get(0))
            .unwrap();
        let msg = faces_of(&conn, id, m).unwrap_err().to_string();
        assert!(
            msg.contains(&format!("face {face_id} "))
                && msg.contains("landmarks has 2 bytes, expected 40"),
            "{msg}"
        );
        conn.execute(
            "UPDATE faces SET landmarks = ?1, embedding = x'00'",
            [to_blob(&[0.0; 10])],
        )
        .unwrap();
        let msg = faces_of(&conn, id, m).unwrap_err().to_string();
        assert!(msg.contains("embedding has 1 bytes, expected 8"), "{msg}");
    }

    #[test]
    fn forget_removes_a_file_or_a_folder_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open(&dir.path().join("g.sqlite")).unwrap();
        let m = model_row(&conn, "h", "a", 2).unwrap();
        let tx = conn.transaction().unwrap();
        for (p, h) in [
            ("/p/a.jpg", "1"),
            ("/p/b/c.jpg", "2"),
            ("/p/b_c.jpg", "3"),
            ("/q.jpg", "4"),
        ] {
            let id = upsert_media(&tx, &facts(p, h), None).unwrap();
            store_faces(&tx, id, m, &[face(0.5), face(0.25)]).unwrap();
        }
        tx.commit().unwrap();
        let r = forget(
            &mut conn,
            &["/p/b".into(), "/q.jpg".into(), "/nothing".into()],
        )
        .unwrap();
        assert_eq!((r.photos, r.faces), (2, 4));
        assert_eq!(r.not_found, [PathBuf::from("/nothing")]);
        let left: Vec<String> = conn
            .prepare("SELECT path FROM media ORDER BY path")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(left, ["/p/a.jpg", "/p/b_c.jpg"]);
        let s = stats(&conn, &dir.path().join("g.sqlite")).unwrap();
        assert_eq!((s.media, s.models[0].faces, s.models[0].photos), (2, 4, 2));
    }

    #[test]
    fn blobs_round_trip() {
        let v = [1.5f32, -0.0, f32::MAX, 1e-30];
        assert_eq!(from_blob(&to_blob(&v)), v);
        assert_eq!(to_blob(&[1.0]), [0, 0, 0x80, 0x3f]);
    }
}
