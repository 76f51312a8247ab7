//! People in the gallery: loading the faces of a model for grouping, running an incremental
//! update, and the read side of `people list`, `show` and `faces`.
//!
//! An update groups only the faces that belong to nobody, against the people already there:
//! the people a user has seen keep their faces (an update never moves an assigned face), new
//! faces join them or form new people, and every decision of the user, being an assignment or a
//! rejection in these tables, is kept by construction.

use super::linkage::{self, LinkageConfig};
use super::{Gallery, Grouping, Seen};
use crate::gallery::db;
use anyhow::Result;
use rusqlite::{params, Connection, Transaction, TransactionBehavior};
use serde::Serialize;
use std::collections::HashMap;
use std::time::Instant;

/// Which faces are grouped at all: faces too unsure or too small stay unassigned.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Eligibility {
    /// Smallest detector score.
    pub min_score: f32,
    /// Smallest box side, in pixels.
    pub min_size: f32,
}

impl Default for Eligibility {
    /// MTCNN's smallest score (a pipeline's detector may say another: [`crate::pipeline::Pipeline::group_min_score`]); below 40 pixels a face's embedding is
    /// much less reliable (the model sees 112x112 crops upscaled from it).
    fn default() -> Eligibility {
        Eligibility {
            min_score: crate::detector::DEFAULT_GROUP_MIN_SCORE,
            min_size: 40.0,
        }
    }
}

/// One face of the gallery.
#[derive(Debug, Clone, Serialize)]
pub struct FaceRow {
    /// Face id.
    pub face: i64,
    /// Media path.
    pub path: String,
    /// Box corners `[x1, y1, x2, y2]`.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    /// Detector score.
    pub score: f32,
    /// Its person, if any.
    pub person: Option<i64>,
    /// Who assigned it: `auto` or `user`.
    pub assigned_by: Option<String>,
    /// For a video's face track: its first sampled frame, seconds (`null` for a photo's face).
    pub start_s: Option<f64>,
    /// For a video's face track: its last sampled frame.
    pub end_s: Option<f64>,
    /// Its media row.
    pub media: i64,
    /// The embedding, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding: Option<Vec<f32>>,
}

impl FaceRow {
    /// Where the face was seen: its photo, or its video while its track is on screen.
    pub fn seen(&self) -> Seen {
        Seen {
            media: self.media,
            span: self.start_s.map(|s| (s, self.end_s.unwrap_or(s))),
        }
    }

    /// Whether the face is grouped at all under `e`.
    pub fn eligible(&self, e: &Eligibility) -> bool {
        let side = (self.bbox[2] - self.bbox[0]).min(self.bbox[3] - self.bbox[1]);
        self.score >= e.min_score && side >= e.min_size
    }
}

/// Whose faces [`faces`] lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whose {
    /// Every face of the model.
    All,
    /// A person's faces.
    Person(i64),
    /// The faces of nobody.
    Nobody,
}

/// The faces of a model that `whose` picks (with embeddings when `embeddings`), in face id
/// order; the pick is the query's, so a person's page reads their faces only. A face whose
/// embedding blob is damaged is left out and its id returned beside.
pub fn faces(
    conn: &Connection,
    model_id: i64,
    whose: Whose,
    embeddings: bool,
) -> Result<(Vec<FaceRow>, Vec<i64>)> {
    let dim = db::model_dim(conn, model_id)?;
    let (pick, person) = match whose {
        Whose::All => ("", None),
        // `IS`: equal to the id, or NULL for nobody.
        Whose::Person(id) => (" AND f.person_id IS ?2", Some(id)),
        Whose::Nobody => (" AND f.person_id IS ?2", None),
    };
    let mut stmt = conn.prepare(&format!(
        "SELECT f.id, m.path, f.x1, f.y1, f.x2, f.y2, f.score, f.person_id, f.assigned_by, f.embedding,
                f.start_s, f.end_s, f.media_id
         FROM faces f JOIN media m ON m.id = f.media_id WHERE f.model_id = ?1{pick} ORDER BY f.id",
    ))?;
    let mut rows = if whose == Whose::All {
        stmt.query([model_id])?
    } else {
        stmt.query(params![model_id, person])?
    };
    let (mut out, mut damaged) = (Vec::new(), Vec::new());
    while let Some(r) = rows.next()? {
        let face: i64 = r.get(0)?;
        let embedding = if embeddings {
            match db::floats(
                r.get_ref(9)?.as_blob().unwrap_or_default(),
                dim,
                face,
                "embedding",
            ) {
                Ok(v) => Some(v),
                Err(_) => {
                    damaged.push(face);
                    continue;
                }
            }
        } else {
            None
        };
        out.push(FaceRow {
            face,
            path: r.get(1)?,
            bbox: [r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?],
            score: r.get(6)?,
            person: r.get(7)?,
            assigned_by: r.get(8)?,
            start_s: r.get(10)?,
            end_s: r.get(11)?,
            media: r.get(12)?,
            embedding,
        });
    }
    Ok((out, damaged))
}

/// The faces of a model as a grouping problem: every assigned face, and the eligible faces of
/// nobody as the pending rows.
pub struct Loaded {
    /// The face id of each row.
    pub face_ids: Vec<i64>,
    /// `rows x dim` embeddings.
    pub data: Vec<f32>,
    /// Embedding size.
    pub dim: usize,
    /// Each row's person.
    pub person: Vec<Option<i64>>,
    /// Rows to group.
    pub pending: Vec<u32>,
    /// People each pending row was rejected from.
    pub rejected: HashMap<u32, Vec<i64>>,
    /// Where each row was seen.
    pub seen: Vec<Seen>,
    /// Faces left out because their embedding is damaged.
    pub damaged: Vec<i64>,
}

impl Loaded {
    /// The grouping problem over these rows.
    pub fn gallery(&self) -> Gallery<'_> {
        Gallery {
            data: &self.data,
            dim: self.dim,
            person: self.person.clone(),
            pending: self.pending.clone(),
            rejected: self.rejected.clone(),
            seen: self.seen.clone(),
        }
    }
}

/// Loads the faces of a model for grouping.
pub fn load(conn: &Connection, model_id: i64, e: &Eligibility) -> Result<Loaded> {
    let dim = db::model_dim(conn, model_id)?;
    let (rows, damaged) = faces(conn, model_id, Whose::All, true)?;
    let mut l = Loaded {
        face_ids: Vec::new(),
        data: Vec::new(),
        dim,
        person: Vec::new(),
        pending: Vec::new(),
        rejected: HashMap::new(),
        seen: Vec::new(),
        damaged,
    };
    let mut row_of: HashMap<i64, u32> = HashMap::new();
    for f in rows {
        if f.person.is_none() && !f.eligible(e) {
            continue;
        }
        let row = l.face_ids.len() as u32;
        if f.person.is_none() {
            l.pending.push(row);
        }
        row_of.insert(f.face, row);
        l.face_ids.push(f.face);
        l.person.push(f.person);
        l.seen.push(f.seen());
        l.data.extend(f.embedding.unwrap_or_default());
    }
    let mut stmt = conn.prepare(
        "SELECT r.face_id, r.person_id FROM rejections r JOIN faces f ON f.id = r.face_id WHERE f.model_id = ?1",
    )?;
    for pair in stmt.query_map([model_id], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
    })? {
        let (face, person) = pair?;
        if let Some(&row) = row_of.get(&face) {
            l.rejected.entry(row).or_default().push(person);
        }
    }
    Ok(l)
}

/// What an update did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UpdateReport {
    /// Faces that joined people already there.
    pub joined: usize,
    /// New people.
    pub new_people: usize,
    /// Faces in those new people.
    pub faces_in_new_people: usize,
    /// Eligible faces still unassigned (too few like them yet).
    pub unassigned: usize,
    /// People of the model after the update.
    pub people: usize,
    /// People left without faces and without a name, removed.
    pub removed_people: usize,
    /// Faces left out because their embedding is damaged.
    pub damaged: Vec<i64>,
    /// Time spent grouping (loading and storing included), milliseconds.
    pub ms: f64,
}

/// Adds a person (named, or not yet) to a model's people; their id.
pub fn create_person(tx: &Transaction, model_id: i64, name: Option<&str>) -> Result<i64> {
    tx.execute(
        "INSERT INTO people (model_id, name) VALUES (?1, ?2)",
        params![model_id, name],
    )?;
    Ok(tx.last_insert_rowid())
}

/// Stores a grouping's outcome: new people created (their ids returned, in the order of
/// [`Grouping::new_people`]), faces assigned automatically. Only faces still unassigned are
/// touched, so a decision made meanwhile is never overwritten.
pub fn apply(tx: &Transaction, model_id: i64, face_ids: &[i64], g: &Grouping) -> Result<Vec<i64>> {
    let mut assign = tx.prepare_cached(
        "UPDATE faces SET person_id = ?1, assigned_by = 'auto' WHERE id = ?2 AND person_id IS NULL",
    )?;
    for &(row, person) in &g.joins {
        assign.execute(params![person, face_ids[row as usize]])?;
    }
    let mut created = Vec::with_capacity(g.new_people.len());
    for group in &g.new_people {
        let person = create_person(tx, model_id, None)?;
        for &row in group {
            assign.execute(params![person, face_ids[row as usize]])?;
        }
        created.push(person);
    }
    Ok(created)
}

/// Groups the model's unassigned faces into people, in one write transaction.
pub fn update(
    conn: &mut Connection,
    model_id: i64,
    e: &Eligibility,
    config: &LinkageConfig,
) -> Result<UpdateReport> {
    let started = Instant::now();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let removed_people = db::drop_empty_people(&tx)?.len();
    let loaded = load(&tx, model_id, e)?;
    let grouping = linkage::group(&loaded.gallery(), config);
    apply(&tx, model_id, &loaded.face_ids, &grouping)?;
    let people: i64 = tx.query_row(
        "SELECT count(*) FROM people WHERE model_id = ?1",
        [model_id],
        |r| r.get(0),
    )?;
    tx.commit()?;
    Ok(UpdateReport {
        joined: grouping.joins.len(),
        new_people: grouping.new_people.len(),
        faces_in_new_people: grouping.new_people.iter().map(Vec::len).sum(),
        unassigned: grouping.unassigned.len(),
        people: people as usize,
        removed_people,
        damaged: loaded.damaged,
        ms: started.elapsed().as_secs_f64() * 1e3,
    })
}

/// A person as listed.
#[derive(Debug, Clone, Serialize)]
pub struct PersonSummary {
    /// Person id.
    pub id: i64,
    /// The user's name for them.
    pub name: Option<String>,
    /// Faces assigned.
    pub faces: usize,
    /// Photos those faces are in.
    pub media: usize,
    /// The face shown for them: the largest.
    pub representative: Option<Representative>,
}

/// The face that stands for a person in a list.
#[derive(Debug, Clone, Serialize)]
pub struct Representative {
    /// Face id.
    pub face: i64,
    /// Media path.
    pub path: String,
    /// Box corners.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
}

/// Every person of a model, most faces first.
pub fn list(conn: &Connection, model_id: i64) -> Result<Vec<PersonSummary>> {
    summaries(conn, model_id, None)
}

/// One person of a model, if there is one of that id.
pub fn summary(conn: &Connection, model_id: i64, person: i64) -> Result<Option<PersonSummary>> {
    Ok(summaries(conn, model_id, Some(person))?.pop())
}

/// The people of a model, or only `only`, most faces first, each with their representative.
fn summaries(conn: &Connection, model_id: i64, only: Option<i64>) -> Result<Vec<PersonSummary>> {
    let mut stmt = conn.prepare(
        "SELECT p.id, p.name, count(f.id), count(DISTINCT f.media_id) FROM people p
         LEFT JOIN faces f ON f.person_id = p.id WHERE p.model_id = ?1 AND (?2 IS NULL OR p.id = ?2)
         GROUP BY p.id ORDER BY count(f.id) DESC, p.id",
    )?;
    let mut people: Vec<PersonSummary> = stmt
        .query_map(params![model_id, only], |r| {
            Ok(PersonSummary {
                id: r.get(0)?,
                name: r.get(1)?,
                faces: r.get::<_, i64>(2)? as usize,
                media: r.get::<_, i64>(3)? as usize,
                representative: None,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut rep = conn.prepare(
        "SELECT f.id, m.path, f.x1, f.y1, f.x2, f.y2 FROM faces f JOIN media m ON m.id = f.media_id
         WHERE f.person_id = ?1 ORDER BY (f.x2 - f.x1) * (f.y2 - f.y1) DESC, f.id LIMIT 1",
    )?;
    for p in &mut people {
        p.representative = rep
            .query_map([p.id], |r| {
                Ok(Representative {
                    face: r.get(0)?,
                    path: r.get(1)?,
                    bbox: [r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?],
                })
            })?
            .next()
            .transpose()?;
    }
    Ok(people)
}

/// One photo of `search --person`.
#[derive(Debug, Clone, Serialize)]
pub struct PersonHit {
    /// Media path.
    pub path: String,
    /// Fused score of its best face for the person.
    pub score: f32,
    /// That face (0 = largest of the photo).
    pub face_index: u32,
    /// Whether the photo already has a face assigned to the person.
    pub assigned: bool,
    /// When that face is on screen, for a video's face track.
    pub span: Option<db::TrackSpan>,
}

/// `search --person`: the photos already the person's, then the `top` best others (0: all), each
/// list by the fused score of the photo's best face, with their paths and time spans.
pub fn rank_for_person(
    conn: &Connection,
    matrix: &crate::gallery::search::FaceMatrix,
    person: i64,
    fusion: super::fusion::Fusion,
    top: usize,
    min_score: f32,
) -> Result<Vec<PersonHit>> {
    let model_id: i64 =
        conn.query_row("SELECT model_id FROM people WHERE id = ?1", [person], |r| {
            r.get(0)
        })?;
    rank_person(conn, matrix, person, fusion, top, min_score)?
        .into_iter()
        .map(|(h, assigned)| {
            Ok(PersonHit {
                path: db::media_path(conn, h.media_id)?,
                score: h.score,
                face_index: h.face_index,
                assigned,
                span: db::face_span(conn, h.media_id, model_id, h.face_index)?,
            })
        })
        .collect()
}

/// The ranking of [`rank_for_person`] alone: each hit, and whether its photo is already the
/// person's (those first). Callers read the rows they show themselves.
pub fn rank_person(
    conn: &Connection,
    matrix: &crate::gallery::search::FaceMatrix,
    person: i64,
    fusion: super::fusion::Fusion,
    top: usize,
    min_score: f32,
) -> Result<Vec<(crate::gallery::search::Hit, bool)>> {
    let dim = matrix.dim();
    let mut stmt =
        conn.prepare("SELECT id, media_id, embedding FROM faces WHERE person_id = ?1 ORDER BY id")?;
    let mut rows = stmt.query([person])?;
    let (mut own, mut media) = (Vec::new(), std::collections::HashSet::new());
    while let Some(r) = rows.next()? {
        let face: i64 = r.get(0)?;
        own.extend(db::floats(
            r.get_ref(2)?.as_blob().unwrap_or_default(),
            dim,
            face,
            "embedding",
        )?);
        media.insert(r.get::<_, i64>(1)?);
    }
    anyhow::ensure!(
        !own.is_empty(),
        super::refused::Refused::Invalid(format!("person {person} has no faces to search with"))
    );
    let scores = super::fusion::scores(matrix.embeddings(), &own, dim, fusion);
    let ranked = matrix.rank_scores(&scores, 0, min_score);
    let (mine, others): (Vec<_>, Vec<_>) = ranked
        .into_iter()
        .partition(|h| media.contains(&h.media_id));
    // Faces the user said are not this person are not suggested again.
    let rejected: std::collections::HashSet<(i64, u32)> = conn
        .prepare(
            "SELECT f.media_id, f.face_index FROM rejections r JOIN faces f ON f.id = r.face_id
             WHERE r.person_id = ?1",
        )?
        .query_map([person], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let others = others
        .into_iter()
        .filter(|h| !rejected.contains(&(h.media_id, h.face_index)))
        .take(if top == 0 { usize::MAX } else { top });
    Ok(mine
        .into_iter()
        .map(|h| (h, true))
        .chain(others.map(|h| (h, false)))
        .collect())
}
