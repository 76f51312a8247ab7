//! The user's decisions about people: name, merge, split, move, reject, and undo.
//!
//! Each decision is one transaction that changes the people tables and records, in
//! `decisions`, the rows as they were, so `people undo` can put them back. A decision is an
//! assignment by the user (`assigned_by = 'user'`) or a rejection row, and updates never move an
//! assigned face nor put a rejected one back: decisions are kept by every later grouping.
//!
//! A decision finds its people and faces inside its own write transaction (SQLite's
//! `BEGIN IMMEDIATE` takes the write lock first), so two decisions at once (the service's
//! clients, a command beside it) run one after the other: the second sees what the first did and
//! is refused with a [`Refused`] saying why (a person merged away is not found), never with a
//! database error.

use super::names::{self, printable};
use super::suggest::kept_apart;
use super::Seen;
use crate::gallery::db;
use anyhow::{bail, ensure, Context, Result};
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// A face as it was: (face, person, assigned_by).
type FaceWas = (i64, Option<i64>, Option<String>);

/// What a decision changed, as it was before: enough to revert it.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Undo {
    /// Faces as they were.
    faces: Vec<FaceWas>,
    /// Names as they were: (person, name).
    names: Vec<(i64, Option<String>)>,
    /// People the decision created (deleted by the undo).
    created: Vec<i64>,
    /// People the decision deleted (re-created, under their ids, by the undo).
    deleted: Vec<(i64, Option<String>)>,
    /// Rejections the decision added: (face, person).
    rejections_added: Vec<(i64, i64)>,
    /// Rejections the decision moved away: (face, person) as they were.
    rejections_removed: Vec<(i64, i64)>,
    /// `keep-apart` pairs the decision added (smaller id first). Absent from records written
    /// before keep-apart existed.
    #[serde(default)]
    apart_added: Vec<(i64, i64)>,
    /// `keep-apart` pairs the decision removed (a merge of the two; a person deleted).
    #[serde(default)]
    apart_removed: Vec<(i64, i64)>,
}

pub use super::refused::Refused;

/// What a decision did, in words (printed, and kept in the `decisions` table).
#[derive(Debug, Clone, Serialize)]
pub struct Decided {
    /// The decision's row id.
    pub decision: i64,
    /// One sentence.
    pub summary: String,
    /// The person the faces ended in, when there is one.
    pub person: Option<i64>,
}

/// Finds a person of the model by id or by name: an unknown or ambiguous name is an error.
pub fn resolve(conn: &Connection, model_id: i64, spec: &str) -> Result<i64> {
    if let Ok(id) = spec.parse::<i64>() {
        let model: Option<i64> = conn
            .query_row("SELECT model_id FROM people WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?;
        return match model {
            Some(m) if m == model_id => Ok(id),
            Some(_) => bail!(Refused::Invalid(format!("person {id} belongs to another model's grouping, not this model's (pick the model with --model)"))),
            None => bail!(Refused::NotFound(format!("no person {id} in the gallery (see `smoothface people list`)"))),
        };
    }
    named(conn, model_id, spec)?.ok_or_else(|| {
        Refused::NotFound(format!(
            "no person named {spec:?} (see `smoothface people list`)"
        ))
        .into()
    })
}

/// The person of the model with this name, `None` when nobody has it; several is an error.
fn named(conn: &Connection, model_id: i64, name: &str) -> Result<Option<i64>> {
    let ids: Vec<i64> = conn
        .prepare("SELECT id FROM people WHERE model_id = ?1 AND name = ?2 ORDER BY id")?
        .query_map(params![model_id, name], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    match ids.as_slice() {
        [] => Ok(None),
        [id] => Ok(Some(*id)),
        many => bail!(Refused::Invalid(format!(
            "{} people are named {name:?} (ids {}): give the id instead",
            many.len(),
            many.iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Checks a face exists and belongs to the model; returns its person and origin.
fn face_of_model(
    tx: &Transaction,
    model_id: i64,
    face: i64,
) -> Result<(Option<i64>, Option<String>)> {
    let row: Option<FaceWas> = tx
        .query_row(
            "SELECT model_id, person_id, assigned_by FROM faces WHERE id = ?1",
            [face],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    match row {
        None => bail!(Refused::NotFound(format!("no face {face} in the gallery (see `smoothface people show PERSON` or `people list --unassigned`)"))),
        Some((m, _, _)) if m != model_id => {
            bail!(Refused::Invalid(format!("face {face} was found by another model, not the one in use (pick it with --model)")))
        }
        Some((_, person, origin)) => Ok((person, origin)),
    }
}

fn name_of(tx: &Transaction, person: i64) -> Result<Option<String>> {
    tx.query_row("SELECT name FROM people WHERE id = ?1", [person], |r| {
        r.get(0)
    })
    .optional()?
    .ok_or_else(|| Refused::NotFound(format!("no person {person} in the gallery")).into())
}

/// A person as a summary names them; a name stored before [`names::clean`] with its control
/// characters escaped (summaries are printed).
fn label(person: i64, name: &Option<String>) -> String {
    match name {
        Some(n) => format!("{} (person {person})", printable(n)),
        None => format!("person {person}"),
    }
}

/// Runs one decision in a write transaction and records it.
fn decide(
    conn: &mut Connection,
    model_id: i64,
    act: impl FnOnce(&Transaction, &mut Undo) -> Result<(String, Option<i64>)>,
) -> Result<Decided> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut undo = Undo::default();
    // The keep-apart pairs before and after: a person deleted takes its pairs with it (the
    // table's cascade), and the undo puts them back.
    let apart_before = kept_apart(&tx)?;
    let (summary, person) = act(&tx, &mut undo)?;
    undo.deleted.extend(db::drop_empty_people(&tx)?);
    let apart_after = kept_apart(&tx)?;
    undo.apart_added = apart_after.difference(&apart_before).copied().collect();
    undo.apart_removed = apart_before.difference(&apart_after).copied().collect();
    // In order, so that the record reads the same however the sets hash.
    undo.apart_added.sort_unstable();
    undo.apart_removed.sort_unstable();
    tx.execute(
        "INSERT INTO decisions (model_id, summary, undo) VALUES (?1, ?2, ?3)",
        params![model_id, summary, serde_json::to_string(&undo)?],
    )?;
    let decision = tx.last_insert_rowid();
    tx.commit()?;
    Ok(Decided {
        decision,
        summary,
        person,
    })
}

/// A face and where it was seen.
struct Sighting {
    face: i64,
    seen: Seen,
    /// Its photo's or video's path.
    path: String,
}

/// Where each face that `filter` (on `faces f`, with `?1` = `value`) picks was seen.
fn sightings(tx: &Transaction, filter: &str, value: i64) -> Result<Vec<Sighting>> {
    let rows = tx
        .prepare(&format!(
            "SELECT f.id, f.media_id, f.start_s, f.end_s, m.path
             FROM faces f JOIN media m ON m.id = f.media_id WHERE {filter}"
        ))?
        .query_map([value], |r| {
            let start: Option<f64> = r.get(2)?;
            let end: Option<f64> = r.get(3)?;
            Ok(Sighting {
                face: r.get(0)?,
                seen: Seen {
                    media: r.get(1)?,
                    span: start.map(|s| (s, end.unwrap_or(s))),
                },
                path: r.get(4)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// The faces of `person`, and where each was seen.
fn sightings_of_person(tx: &Transaction, person: i64) -> Result<Vec<Sighting>> {
    sightings(tx, "f.person_id = ?1", person)
}

/// Refuses to put the `joining` faces into `into`, whose faces are `there`, when two of the
/// faces would then have been seen together (one photo, one moment of a video): one photo shows
/// a person once, so one of the two is someone else. The message names the photo, both faces,
/// and how to move the one already there out first.
fn ensure_never_together(joining: &[Sighting], there: &[Sighting], into: &str) -> Result<()> {
    let mut by_media: HashMap<i64, Vec<&Sighting>> = HashMap::new();
    for s in there {
        by_media.entry(s.seen.media).or_default().push(s);
    }
    for j in joining {
        let with = by_media.get(&j.seen.media).and_then(|faces| {
            faces
                .iter()
                .find(|e| e.face != j.face && e.seen.together(&j.seen))
        });
        if let Some(e) = with {
            let place = match j.seen.span {
                Some(_) => format!("on screen together in the video {}", printable(&e.path)),
                None => format!("both in the photo {}", printable(&e.path)),
            };
            bail!(Refused::Conflict(format!(
                "face {} and face {} are {place}, and one photo shows a person once: they cannot \
                 both be {into}. Move the wrong one to its own person first (for face {}: \
                 `smoothface people move {} PERSON`), then try again",
                e.face, j.face, e.face, e.face
            )));
        }
        by_media.entry(j.seen.media).or_default().push(j);
    }
    Ok(())
}

/// Moves faces to a person as the user's decision, remembering where they were.
fn assign(tx: &Transaction, undo: &mut Undo, faces: &[FaceWas], person: Option<i64>) -> Result<()> {
    for (face, was, origin) in faces {
        undo.faces.push((*face, *was, origin.clone()));
        let by = person.map(|_| "user");
        tx.execute(
            "UPDATE faces SET person_id = ?1, assigned_by = ?2 WHERE id = ?3",
            params![person, by, face],
        )?;
    }
    Ok(())
}

/// `people name PERSON NAME`: the name as [`names::clean`] leaves it (trimmed), or refused.
pub fn name(conn: &mut Connection, model_id: i64, person: &str, name: &str) -> Result<Decided> {
    let name = names::clean(name)?;
    decide(conn, model_id, |tx, undo| {
        let id = resolve(tx, model_id, person)?;
        let old = name_of(tx, id)?;
        undo.names.push((id, old.clone()));
        tx.execute(
            "UPDATE people SET name = ?1 WHERE id = ?2",
            params![name, id],
        )?;
        Ok((format!("{} is now named {name}", label(id, &old)), Some(id)))
    })
}

/// `people merge PERSON PERSON...`: the others' faces go to the first. The first's name is
/// kept; when it has none, the first named of the others gives its name. Other names are
/// dropped, and the summary says which.
pub fn merge(
    conn: &mut Connection,
    model_id: i64,
    into: &str,
    others: &[String],
) -> Result<Decided> {
    decide(conn, model_id, |tx, undo| {
        let keep = resolve(tx, model_id, into)?;
        let mut gone = Vec::new();
        for o in others {
            let id = resolve(tx, model_id, o)?;
            ensure!(
                id != keep,
                Refused::Invalid(format!("cannot merge {o} into itself"))
            );
            if !gone.contains(&id) {
                gone.push(id);
            }
        }
        ensure!(
            !gone.is_empty(),
            Refused::Invalid("give at least two people to merge".into())
        );
        let mut kept_name = name_of(tx, keep)?;
        let mut there = sightings_of_person(tx, keep)?;
        for &id in &gone {
            let joining = sightings_of_person(tx, id)?;
            ensure_never_together(&joining, &there, &label(keep, &kept_name))?;
            there.extend(joining);
        }
        let mut dropped = Vec::new();
        for &id in &gone {
            let name = name_of(tx, id)?;
            let faces: Vec<FaceWas> = tx
                .prepare("SELECT id, person_id, assigned_by FROM faces WHERE person_id = ?1")?
                .query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<_>>()?;
            assign(tx, undo, &faces, Some(keep))?;
            // A face rejected from a merged person is rejected from the merged whole.
            let rejections: Vec<i64> = tx
                .prepare("SELECT face_id FROM rejections WHERE person_id = ?1")?
                .query_map([id], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            for face in rejections {
                undo.rejections_removed.push((face, id));
                let added = tx.execute(
                    "INSERT OR IGNORE INTO rejections (face_id, person_id) VALUES (?1, ?2)",
                    params![face, keep],
                )?;
                if added == 1 {
                    undo.rejections_added.push((face, keep));
                }
            }
            // Enrolments follow the faces (undo leaves them with the kept person: still the
            // same human, recognised either way).
            tx.execute(
                "UPDATE enrolments SET person_id = ?1 WHERE person_id = ?2",
                params![keep, id],
            )?;
            // "Not the same as Z" holds for the merged whole; a pair of the two merged ends
            // (the person's delete takes its own pairs away).
            tx.execute(
                "INSERT OR IGNORE INTO keep_apart (a, b)
                 SELECT min(?1, other), max(?1, other) FROM (
                     SELECT CASE WHEN a = ?2 THEN b ELSE a END AS other
                     FROM keep_apart WHERE a = ?2 OR b = ?2)
                 WHERE other != ?1",
                params![keep, id],
            )?;
            undo.deleted.push((id, name.clone()));
            tx.execute("DELETE FROM people WHERE id = ?1", [id])?;
            match (&kept_name, name) {
                (None, Some(n)) => kept_name = Some(n),
                (Some(k), Some(n)) if *k != n => dropped.push(n),
                _ => {}
            }
        }
        undo.names.push((keep, name_of(tx, keep)?));
        tx.execute(
            "UPDATE people SET name = ?1 WHERE id = ?2",
            params![kept_name, keep],
        )?;
        let mut summary = format!(
            "merged {} into {}",
            gone.iter()
                .map(|id| format!("person {id}"))
                .collect::<Vec<_>>()
                .join(", "),
            label(keep, &kept_name)
        );
        if !dropped.is_empty() {
            summary += &format!(
                "; kept the name {}, dropped {}",
                printable(kept_name.as_deref().unwrap_or("")),
                dropped
                    .iter()
                    .map(|n| printable(n))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Ok((summary, Some(keep)))
    })
}

/// The faces given, each checked to be of the model and, when `of` is given, of that person
/// (a face that is someone else's is a conflict: it may have been moved a moment ago).
fn faces_of_person(
    tx: &Transaction,
    model_id: i64,
    faces: &[i64],
    of: Option<i64>,
) -> Result<Vec<FaceWas>> {
    ensure!(
        !faces.is_empty(),
        Refused::Invalid(
            "give the faces with --faces ID,ID,... (see `smoothface people show PERSON`)".into()
        )
    );
    let mut out = Vec::new();
    for &face in faces {
        let (person, origin) = face_of_model(tx, model_id, face)?;
        if let Some(p) = of {
            ensure!(
                person == Some(p),
                Refused::Conflict(format!(
                    "face {face} is not a face of person {p} (see `smoothface people show {p}`)"
                ))
            );
        }
        if !out.iter().any(|(f, _, _)| *f == face) {
            out.push((face, person, origin));
        }
    }
    Ok(out)
}

/// `people split PERSON --faces ID,... [--name NAME]`: the faces are someone else: a new
/// person, or the person of that name when there is one. The faces are checked before the
/// name, so an unknown face is "not found" whatever the name.
pub fn split(
    conn: &mut Connection,
    model_id: i64,
    person: &str,
    faces: &[i64],
    name: Option<&str>,
) -> Result<Decided> {
    decide(conn, model_id, |tx, undo| {
        let from = resolve(tx, model_id, person)?;
        let moving = faces_of_person(tx, model_id, faces, Some(from))?;
        let name = name.map(names::clean).transpose()?;
        let target = match &name {
            Some(n) => named(tx, model_id, n)?,
            None => None,
        };
        ensure!(
            target != Some(from),
            Refused::Invalid(format!(
                "the faces are already {person}'s: give another name to split them to"
            ))
        );
        let mut joining = Vec::new();
        for (face, _, _) in &moving {
            joining.extend(sightings(tx, "f.id = ?1", *face)?);
        }
        let (there, into) = match target {
            Some(id) => (sightings_of_person(tx, id)?, label(id, &name_of(tx, id)?)),
            None => (Vec::new(), "one new person".to_string()),
        };
        ensure_never_together(&joining, &there, &into)?;
        let to = match target {
            Some(id) => id,
            None => {
                let id = super::store::create_person(tx, model_id, name.as_deref())?;
                undo.created.push(id);
                id
            }
        };
        assign(tx, undo, &moving, Some(to))?;
        let to_name = name_of(tx, to)?;
        Ok((
            format!(
                "split {} face(s) from person {from} to {}",
                moving.len(),
                label(to, &to_name)
            ),
            Some(to),
        ))
    })
}

/// `people move FACE PERSON`.
pub fn move_face(conn: &mut Connection, model_id: i64, face: i64, person: &str) -> Result<Decided> {
    decide(conn, model_id, |tx, undo| {
        let to = resolve(tx, model_id, person)?;
        let moving = faces_of_person(tx, model_id, &[face], None)?;
        ensure_never_together(
            &sightings(tx, "f.id = ?1", face)?,
            &sightings_of_person(tx, to)?,
            &label(to, &name_of(tx, to)?),
        )?;
        assign(tx, undo, &moving, Some(to))?;
        let to_name = name_of(tx, to)?;
        Ok((
            format!("moved face {face} to {}", label(to, &to_name)),
            Some(to),
        ))
    })
}

/// `people reject PERSON --faces ID,...`: the faces are not this person. Those that are its
/// faces leave it; a face elsewhere (a "is this them too?" suggestion) stays where it is. No
/// grouping puts them in the person again, and its suggestions leave them out.
pub fn reject(
    conn: &mut Connection,
    model_id: i64,
    person: &str,
    faces: &[i64],
) -> Result<Decided> {
    decide(conn, model_id, |tx, undo| {
        let from = resolve(tx, model_id, person)?;
        let given = faces_of_person(tx, model_id, faces, None)?;
        let (leaving, elsewhere): (Vec<FaceWas>, Vec<FaceWas>) = given
            .into_iter()
            .partition(|(_, person, _)| *person == Some(from));
        assign(tx, undo, &leaving, None)?;
        for (face, _, _) in leaving.iter().chain(&elsewhere) {
            tx.execute(
                "INSERT OR IGNORE INTO rejections (face_id, person_id) VALUES (?1, ?2)",
                params![face, from],
            )?;
            undo.rejections_added.push((*face, from));
        }
        Ok((
            format!(
                "{} face(s) are not person {from}",
                leaving.len() + elsewhere.len()
            ),
            None,
        ))
    })
}

/// `people keep-apart A B`: the two are different people (a "Same person?" suggestion answered
/// no). No suggestion pairs them again, and no grouping merges them (a grouping never merges
/// two people; it only adds faces to one). A merge of the two by the user ends the pair; a merge
/// of either with a third person carries it over to the whole.
pub fn keep_apart(conn: &mut Connection, model_id: i64, a: &str, b: &str) -> Result<Decided> {
    decide(conn, model_id, |tx, _undo| {
        let x = resolve(tx, model_id, a)?;
        let y = resolve(tx, model_id, b)?;
        ensure!(
            x != y,
            Refused::Invalid(format!("{a} and {b} are one person: give two people"))
        );
        tx.execute(
            "INSERT OR IGNORE INTO keep_apart (a, b) VALUES (?1, ?2)",
            params![x.min(y), x.max(y)],
        )?;
        Ok((
            format!(
                "{} and {} are different people",
                label(x, &name_of(tx, x)?),
                label(y, &name_of(tx, y)?)
            ),
            None,
        ))
    })
}

/// `people undo`: reverts the model's last decision not yet undone.
pub fn undo(conn: &mut Connection, model_id: i64) -> Result<Decided> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let last: Option<(i64, String, String)> = tx
        .query_row(
            "SELECT id, summary, undo FROM decisions WHERE model_id = ?1 AND undone = 0 ORDER BY id DESC LIMIT 1",
            [model_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let (id, summary, record) = last.ok_or_else(|| {
        Refused::Conflict("nothing to undo: no decision about people was made".into())
    })?;
    let u: Undo = serde_json::from_str(&record)
        .with_context(|| format!("decision {id} cannot be undone: its record is damaged"))?;
    for (person, name) in &u.deleted {
        tx.execute(
            "INSERT OR IGNORE INTO people (id, model_id, name) VALUES (?1, ?2, ?3)",
            params![person, model_id, name],
        )?;
    }
    for (person, name) in u.names.iter().rev() {
        tx.execute(
            "UPDATE people SET name = ?1 WHERE id = ?2",
            params![name, person],
        )?;
    }
    // In reverse, so a face changed twice by one decision ends as it first was. A face forgotten
    // since is simply gone.
    for (face, person, origin) in u.faces.iter().rev() {
        tx.execute(
            "UPDATE faces SET person_id = ?1, assigned_by = ?2 WHERE id = ?3",
            params![person, origin, face],
        )?;
    }
    for (face, person) in &u.rejections_added {
        tx.execute(
            "DELETE FROM rejections WHERE face_id = ?1 AND person_id = ?2",
            params![face, person],
        )?;
    }
    for (face, person) in &u.rejections_removed {
        tx.execute(
            "INSERT OR IGNORE INTO rejections (face_id, person_id)
             SELECT ?1, ?2 WHERE EXISTS (SELECT 1 FROM faces WHERE id = ?1) AND EXISTS (SELECT 1 FROM people WHERE id = ?2)",
            params![face, person],
        )?;
    }
    for (a, b) in &u.apart_added {
        tx.execute(
            "DELETE FROM keep_apart WHERE a = ?1 AND b = ?2",
            params![a, b],
        )?;
    }
    for (a, b) in &u.apart_removed {
        tx.execute(
            "INSERT OR IGNORE INTO keep_apart (a, b)
             SELECT ?1, ?2 WHERE EXISTS (SELECT 1 FROM people WHERE id = ?1) AND EXISTS (SELECT 1 FROM people WHERE id = ?2)",
            params![a, b],
        )?;
    }
    for person in &u.created {
        tx.execute("DELETE FROM people WHERE id = ?1", [person])?;
    }
    db::drop_empty_people(&tx)?;
    tx.execute("UPDATE decisions SET undone = 1 WHERE id = ?1", [id])?;
    tx.commit()?;
    Ok(Decided {
        decision: id,
        summary: format!("undid: {summary}"),
        person: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gallery::db::{FileFacts, StoredFace};
    use crate::people::linkage::LinkageConfig;
    use crate::people::store::{self, Eligibility};
    use crate::people::tests::clustered;
    use std::collections::BTreeMap;

    const DIM: usize = 64;

    /// Every face's (person, origin) and every person's name.
    type State = (
        BTreeMap<i64, (Option<i64>, Option<String>)>,
        BTreeMap<i64, Option<String>>,
    );
    type Step = Box<dyn Fn(&mut Connection, i64) -> Result<Decided>>;

    /// A gallery of one face per photo, the faces of `people` people of `each` faces (in
    /// person order), under model "m"; returns the face ids in order.
    struct Fixture {
        _dir: tempfile::TempDir,
        conn: Connection,
        model: i64,
        faces: Vec<i64>,
        data: Vec<f32>,
    }

    impl Fixture {
        fn new(people: usize, each: usize) -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let conn = db::open(&dir.path().join("g.sqlite")).unwrap();
            let model = db::model_row(&conn, "m", "m", DIM).unwrap();
            let mut f = Fixture {
                _dir: dir,
                conn,
                model,
                faces: Vec::new(),
                data: clustered(people + 4, each, DIM, 0.5, 11),
            };
            for i in 0..people * each {
                f.add_face(i);
            }
            f
        }

        /// Stores the face of data row `i` as photo `/p/{i}.jpg`.
        fn add_face(&mut self, i: usize) -> i64 {
            let tx = self.conn.transaction().unwrap();
            let facts = FileFacts {
                path: format!("/p/{i}.jpg"),
                content_hash: format!("{i}"),
                size: 1,
                mtime_ns: 1,
            };
            let media = db::upsert_media(&tx, &facts, None).unwrap();
            let face = StoredFace {
                bbox: [0.0, 0.0, 100.0, 100.0],
                score: 0.99,
                landmarks: [[0.0; 2]; 5],
                embedding: self.data[i * DIM..(i + 1) * DIM].to_vec(),
                span: None,
            };
            db::store_faces(&tx, media, self.model, &[face]).unwrap();
            let id = tx
                .query_row("SELECT id FROM faces WHERE media_id = ?1", [media], |r| {
                    r.get(0)
                })
                .unwrap();
            tx.commit().unwrap();
            self.faces.push(id);
            id
        }

        fn update(&mut self) -> store::UpdateReport {
            let config = LinkageConfig {
                k: 16,
                ..LinkageConfig::at(0.5)
            };
            store::update(&mut self.conn, self.model, &Eligibility::default(), &config).unwrap()
        }

        fn state(&self) -> State {
            let faces = self
                .conn
                .prepare("SELECT id, person_id, assigned_by FROM faces")
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            let people = self
                .conn
                .prepare("SELECT id, name FROM people")
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            (faces, people)
        }

        fn person_of(&self, face: i64) -> Option<i64> {
            self.conn
                .query_row("SELECT person_id FROM faces WHERE id = ?1", [face], |r| {
                    r.get(0)
                })
                .unwrap()
        }
    }

    #[test]
    fn people_are_found_and_an_incremental_update_leaves_them_alone() {
        let mut f = Fixture::new(3, 4);
        let r = f.update();
        assert_eq!(
            (r.new_people, r.faces_in_new_people, r.unassigned),
            (3, 12, 0)
        );
        let people: Vec<i64> = (0..3)
            .map(|p| f.person_of(f.faces[p * 4]).unwrap())
            .collect();
        for (p, &id) in people.iter().enumerate() {
            for k in 0..4 {
                assert_eq!(f.person_of(f.faces[p * 4 + k]), Some(id));
            }
        }
        let before = f.state();
        // Two more faces of person 0 (data rows 12.. belong to person 3: use person 0's own
        // rows' neighbours by storing copies of rows 1 and 2) and two faces of a new person.
        let data_a: Vec<f32> = f.data[DIM..3 * DIM].to_vec();
        f.data.splice(12 * DIM..14 * DIM, data_a);
        let (a1, a2) = (f.add_face(12), f.add_face(13));
        let (d1, d2) = (f.add_face(16), f.add_face(17)); // rows 16.. are person 4's
        let r = f.update();
        assert_eq!((r.joined, r.new_people), (2, 1));
        assert_eq!(
            (f.person_of(a1), f.person_of(a2)),
            (Some(people[0]), Some(people[0]))
        );
        assert!(f.person_of(d1).is_some() && f.person_of(d1) == f.person_of(d2));
        assert!(!people.contains(&f.person_of(d1).unwrap()));
        let after = f.state();
        for (face, was) in &before.0 {
            assert_eq!(&after.0[face], was, "face {face} moved");
        }
    }

    #[test]
    fn every_decision_survives_later_updates() {
        let mut f = Fixture::new(4, 4);
        f.update();
        let p: Vec<i64> = (0..4)
            .map(|i| f.person_of(f.faces[i * 4]).unwrap())
            .collect();
        let ids = f.faces.clone();
        let fid = |i: usize| ids[i];
        name(&mut f.conn, f.model, &p[0].to_string(), "Anna").unwrap();
        merge(&mut f.conn, f.model, "Anna", &[p[1].to_string()]).unwrap();
        let split_off = split(
            &mut f.conn,
            f.model,
            &p[2].to_string(),
            &[fid(8), fid(9)],
            Some("Ben"),
        )
        .unwrap()
        .person
        .unwrap();
        move_face(&mut f.conn, f.model, fid(10), "Anna").unwrap();
        reject(&mut f.conn, f.model, &p[3].to_string(), &[fid(12)]).unwrap();
        let decided = f.state();
        // New faces of every person arrive; the grouping runs again, twice.
        for row in [3usize, 7, 11, 15] {
            let copy: Vec<f32> = f.data[row * DIM..(row + 1) * DIM]
                .iter()
                .map(|x| x * 1.0001)
                .collect();
            let at = 16 + row / 4;
            f.data.splice(at * DIM..(at + 1) * DIM, copy);
            f.add_face(at);
        }
        f.update();
        f.update();
        let now = f.state();
        for (face, was) in &decided.0 {
            if was.1.as_deref() == Some("user") || was.0.is_some() {
                assert_eq!(&now.0[face], was, "face {face}");
            }
        }
        assert_eq!(now.1[&p[0]].as_deref(), Some("Anna"));
        assert_eq!(now.1[&split_off].as_deref(), Some("Ben"));
        assert!(!now.1.contains_key(&p[1]), "merged away");
        // The rejected face went back to nobody and never to person 3, though it is theirs.
        assert_ne!(f.person_of(fid(12)), Some(p[3]));
        assert_eq!(resolve(&f.conn, f.model, "Anna").unwrap(), p[0]);
    }

    #[test]
    fn merge_split_move_reject_and_undo_round_trip() {
        let mut f = Fixture::new(3, 4);
        f.update();
        let p: Vec<i64> = (0..3)
            .map(|i| f.person_of(f.faces[i * 4]).unwrap())
            .collect();
        name(&mut f.conn, f.model, &p[1].to_string(), "Carl").unwrap();
        let start = f.state();
        let (a, b, c) = (p[0].to_string(), p[1].to_string(), p[2].to_string());
        let steps: Vec<Step> = vec![
            Box::new(move |conn, m| merge(conn, m, &a, &[b.clone(), c.clone()])),
            Box::new(|conn, m| split(conn, m, "Carl", &[5, 6], None)),
            Box::new(|conn, m| split(conn, m, "Carl", &[5], Some("Dora"))),
            Box::new(|conn, m| move_face(conn, m, 1, "Carl")),
            Box::new(|conn, m| reject(conn, m, "Carl", &[5, 6, 7, 8])),
        ];
        for step in &steps {
            let d = step(&mut f.conn, f.model).unwrap();
            assert_ne!(f.state(), start, "{} changed nothing", d.summary);
            undo(&mut f.conn, f.model).unwrap();
            assert_eq!(f.state(), start, "undoing: {}", d.summary);
        }
        // Several decisions, undone newest first, come back to the start too.
        for step in &steps[..2] {
            step(&mut f.conn, f.model).unwrap();
        }
        undo(&mut f.conn, f.model).unwrap();
        undo(&mut f.conn, f.model).unwrap();
        assert_eq!(f.state(), start);
        let msg = undo(&mut f.conn, f.model).map(|d| d.summary).unwrap();
        assert!(
            msg.contains("Carl"),
            "the name was the first decision: {msg}"
        );
        assert!(undo(&mut f.conn, f.model)
            .unwrap_err()
            .to_string()
            .contains("nothing to undo"));
    }

    /// The error of a refused decision, which must be a conflict.
    fn conflict(r: Result<Decided>) -> String {
        let e = r.expect_err("refused");
        assert!(
            matches!(e.downcast_ref::<Refused>(), Some(Refused::Conflict(_))),
            "{e}"
        );
        e.to_string()
    }

    #[test]
    fn a_decision_that_would_put_two_faces_of_one_photo_in_one_person_is_refused() {
        let mut f = Fixture::new(3, 4);
        f.update();
        let p: Vec<String> = (0..3)
            .map(|i| f.person_of(f.faces[i * 4]).unwrap().to_string())
            .collect();
        // Face x (the first person's) and face y (the second's) are seen in one photo.
        let (x, y) = (f.faces[0], f.faces[4]);
        f.conn
            .execute(
                "UPDATE faces SET face_index = 1,
                     media_id = (SELECT media_id FROM faces WHERE id = ?1) WHERE id = ?2",
                [x, y],
            )
            .unwrap();
        name(&mut f.conn, f.model, &p[0], "Ann").unwrap();
        let start = f.state();
        let e = conflict(merge(&mut f.conn, f.model, &p[0], &[p[1].clone()]));
        assert!(
            e.contains("/p/0.jpg") && e.contains(&format!("face {x} and face {y}")),
            "{e}"
        );
        assert!(e.contains(&format!("people move {x} ")), "{e}");
        // Either way round, and by moving or splitting one face.
        conflict(merge(&mut f.conn, f.model, &p[1], &[p[0].clone()]));
        conflict(merge(
            &mut f.conn,
            f.model,
            &p[2],
            &[p[0].clone(), p[1].clone()],
        ));
        conflict(move_face(&mut f.conn, f.model, y, "Ann"));
        conflict(split(&mut f.conn, f.model, &p[1], &[y], Some("Ann")));
        assert_eq!(f.state(), start, "a refused decision changes nothing");
        // Two faces of one photo split together into one new person.
        let z = f.faces[5];
        f.conn
            .execute(
                "UPDATE faces SET face_index = 2,
                     media_id = (SELECT media_id FROM faces WHERE id = ?1) WHERE id = ?2",
                [y, z],
            )
            .unwrap();
        conflict(split(&mut f.conn, f.model, &p[1], &[y, z], None));
        // Other decisions go on as before.
        split(&mut f.conn, f.model, &p[1], &[y], None).unwrap();
        merge(&mut f.conn, f.model, &p[0], &[p[2].clone()]).unwrap();
    }

    #[test]
    fn keep_apart_hides_a_suggestion_through_updates_follows_merges_and_is_undone() {
        let mut f = Fixture::new(3, 4);
        f.update();
        let p: Vec<i64> = (0..3)
            .map(|i| f.person_of(f.faces[i * 4]).unwrap())
            .collect();
        // The first person split in two: its halves are the suggestion.
        let q = split(&mut f.conn, f.model, &p[0].to_string(), &f.faces[..2], None)
            .unwrap()
            .person
            .unwrap();
        let pair = (p[0].min(q), p[0].max(q));
        let suggested = |f: &Fixture| {
            super::super::suggest::for_gallery(&f.conn, f.model, 0)
                .unwrap()
                .iter()
                .any(|s| (s.a, s.b) == pair)
        };
        let apart = |f: &Fixture| -> Vec<(i64, i64)> {
            super::super::suggest::kept_apart(&f.conn)
                .unwrap()
                .into_iter()
                .collect()
        };
        assert!(suggested(&f));
        let d = keep_apart(&mut f.conn, f.model, &p[0].to_string(), &q.to_string()).unwrap();
        assert!(d.summary.contains("different people"), "{}", d.summary);
        assert!(!suggested(&f));
        assert_eq!(apart(&f), [pair]);
        // New faces and a grouping update leave both people and the pair as they are.
        for i in 12..16 {
            f.add_face(i);
        }
        f.update();
        assert_eq!(f.person_of(f.faces[0]), Some(q));
        assert_eq!(f.person_of(f.faces[2]), Some(p[0]));
        assert!(!suggested(&f));
        assert_eq!(apart(&f), [pair]);
        // Undone: suggested again; done again, then one of the two merged into a third
        // person: the third is kept apart from the other.
        undo(&mut f.conn, f.model).unwrap();
        assert!(suggested(&f) && apart(&f).is_empty());
        keep_apart(&mut f.conn, f.model, &q.to_string(), &p[0].to_string()).unwrap();
        merge(&mut f.conn, f.model, &p[2].to_string(), &[p[0].to_string()]).unwrap();
        assert_eq!(apart(&f), [(p[2].min(q), p[2].max(q))]);
        undo(&mut f.conn, f.model).unwrap();
        assert_eq!(apart(&f), [pair], "the merge undone puts the pair back");
        // Merging the two ends the pair; undone, it is back.
        merge(&mut f.conn, f.model, &p[0].to_string(), &[q.to_string()]).unwrap();
        assert!(apart(&f).is_empty());
        undo(&mut f.conn, f.model).unwrap();
        assert_eq!(apart(&f), [pair]);
        let e = keep_apart(&mut f.conn, f.model, &q.to_string(), &q.to_string()).unwrap_err();
        assert!(e.to_string().contains("one person"), "{e}");
    }

    #[test]
    fn merging_named_people_keeps_one_name_and_says_so() {
        let mut f = Fixture::new(3, 3);
        f.update();
        let p: Vec<i64> = (0..3)
            .map(|i| f.person_of(f.faces[i * 3]).unwrap())
            .collect();
        name(&mut f.conn, f.model, &p[1].to_string(), "Eve").unwrap();
        name(&mut f.conn, f.model, &p[2].to_string(), "Evie").unwrap();
        // Evie was enrolled from a camera: her enrolment follows her faces.
        f.conn
            .execute(
                "INSERT INTO enrolments (person_id, embedding, frames, source) VALUES (?1, x'00', 1, 'camera 0')",
                [p[2]],
            )
            .unwrap();
        // The first has no name: it takes the first given name and says the other is dropped.
        let d = merge(
            &mut f.conn,
            f.model,
            &p[0].to_string(),
            &["Eve".into(), "Evie".into()],
        )
        .unwrap();
        assert!(
            d.summary.contains("kept the name Eve") && d.summary.contains("dropped Evie"),
            "{}",
            d.summary
        );
        assert_eq!(resolve(&f.conn, f.model, "Eve").unwrap(), p[0]);
        assert!(resolve(&f.conn, f.model, "Evie").is_err());
        let faces: i64 = f
            .conn
            .query_row(
                "SELECT count(*) FROM faces WHERE person_id = ?1",
                [p[0]],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(faces, 9);
        let enrolled: i64 = f
            .conn
            .query_row("SELECT person_id FROM enrolments", [], |r| r.get(0))
            .unwrap();
        assert_eq!(enrolled, p[0]);
    }

    #[test]
    fn a_persons_faces_and_summary_are_those_of_the_whole_lists() {
        let mut f = Fixture::new(3, 4);
        f.update();
        // One face of person 0 made nobody's, so that every pick has something to pick.
        let p0 = f.person_of(f.faces[0]).unwrap();
        reject(&mut f.conn, f.model, &p0.to_string(), &[f.faces[0]]).unwrap();
        let (all, _) = store::faces(&f.conn, f.model, store::Whose::All, false).unwrap();
        let ids = |rows: &[store::FaceRow]| rows.iter().map(|r| r.face).collect::<Vec<_>>();
        let people = store::list(&f.conn, f.model).unwrap();
        for p in &people {
            let (mine, _) =
                store::faces(&f.conn, f.model, store::Whose::Person(p.id), false).unwrap();
            let expected: Vec<_> = all
                .iter()
                .filter(|r| r.person == Some(p.id))
                .cloned()
                .collect();
            assert_eq!(ids(&mine), ids(&expected));
            let one = store::summary(&f.conn, f.model, p.id).unwrap().unwrap();
            assert_eq!((one.id, one.faces, one.media), (p.id, p.faces, p.media));
            assert_eq!(
                one.representative.map(|r| r.face),
                p.representative.as_ref().map(|r| r.face)
            );
        }
        let (nobody, _) = store::faces(&f.conn, f.model, store::Whose::Nobody, false).unwrap();
        let expected: Vec<_> = all.iter().filter(|r| r.person.is_none()).cloned().collect();
        assert_eq!(ids(&nobody), ids(&expected));
        assert!(ids(&nobody).contains(&f.faces[0]));
        assert!(store::summary(&f.conn, f.model, 999_999).unwrap().is_none());
    }

    #[test]
    fn unknown_ambiguous_and_foreign_are_refused_clearly() {
        let mut f = Fixture::new(2, 3);
        f.update();
        let p: Vec<i64> = (0..2)
            .map(|i| f.person_of(f.faces[i * 3]).unwrap())
            .collect();
        let err = |r: Result<Decided>| r.unwrap_err().to_string();
        assert!(
            err(name(&mut f.conn, f.model, "Nobody", "X")).contains("no person named \"Nobody\"")
        );
        assert!(err(name(&mut f.conn, f.model, "999", "X")).contains("no person 999"));
        assert!(err(name(&mut f.conn, f.model, &p[0].to_string(), "42"))
            .contains("reads as a person id"));
        name(&mut f.conn, f.model, &p[0].to_string(), "Sam").unwrap();
        name(&mut f.conn, f.model, &p[1].to_string(), "Sam").unwrap();
        let msg = err(move_face(&mut f.conn, f.model, f.faces[0], "Sam"));
        assert!(
            msg.contains("2 people are named \"Sam\"") && msg.contains("give the id"),
            "{msg}"
        );
        assert!(
            err(move_face(&mut f.conn, f.model, 12345, &p[0].to_string()))
                .contains("no face 12345")
        );
        assert!(
            err(reject(&mut f.conn, f.model, &p[0].to_string(), &[])).contains("give the faces")
        );
        // Not refused: a face of someone else is a declined "them too?" suggestion. It stays
        // where it is and is rejected from the person; undo takes the rejection back.
        reject(&mut f.conn, f.model, &p[0].to_string(), &[f.faces[5]]).unwrap();
        assert_eq!(f.person_of(f.faces[5]), Some(p[1]));
        let rejections = |f: &Fixture| -> i64 {
            f.conn
                .query_row(
                    "SELECT count(*) FROM rejections WHERE face_id = ?1 AND person_id = ?2",
                    [f.faces[5], p[0]],
                    |r| r.get(0),
                )
                .unwrap()
        };
        assert_eq!(rejections(&f), 1);
        undo(&mut f.conn, f.model).unwrap();
        assert_eq!(rejections(&f), 0);
        // A face and a person of another model.
        let other = db::model_row(&f.conn, "other", "other", DIM).unwrap();
        let msg = err(move_face(&mut f.conn, other, f.faces[0], &p[0].to_string()));
        assert!(msg.contains("another model"), "{msg}");
        f.conn
            .execute("INSERT INTO people (model_id) VALUES (?1)", [other])
            .unwrap();
        let foreign = f.conn.last_insert_rowid();
        let msg = err(move_face(
            &mut f.conn,
            f.model,
            f.faces[0],
            &foreign.to_string(),
        ));
        assert!(msg.contains("another model"), "{msg}");
    }

    #[test]
    fn forget_takes_faces_out_of_people_and_drops_emptied_unnamed_people() {
        let mut f = Fixture::new(2, 2);
        f.update();
        let p: Vec<i64> = (0..2)
            .map(|i| f.person_of(f.faces[i * 2]).unwrap())
            .collect();
        name(&mut f.conn, f.model, &p[1].to_string(), "Kept").unwrap();
        let all: Vec<std::path::PathBuf> = (0..4).map(|i| format!("/p/{i}.jpg").into()).collect();
        let r = db::forget(&mut f.conn, &all[..3]).unwrap();
        assert_eq!((r.photos, r.people), (3, 1));
        let (faces, people) = f.state();
        assert_eq!(faces.len(), 1);
        assert_eq!(faces[&f.faces[3]].0, Some(p[1]));
        assert_eq!(people.keys().copied().collect::<Vec<_>>(), vec![p[1]]);
        db::forget(&mut f.conn, &all[3..]).unwrap();
        assert_eq!(
            f.state().1[&p[1]].as_deref(),
            Some("Kept"),
            "a named person stays, without faces"
        );
    }
}
