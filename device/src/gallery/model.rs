//! The gallery's model: the one embedder its faces, people and decisions belong to.
//!
//! A gallery is embedded with one model at a time. A new gallery takes the model of its first
//! command; from then on every command that embeds (index, search by photo, the camera, the
//! service) must use that model, and another one is refused with an error naming both, because
//! two models' similarities mean different things. `smoothface models use` (or `index` with
//! another `--model`) moves the gallery to another model in place ([`super::switch`]).

use crate::embedder::Embedder;
use anyhow::{bail, Result};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::PathBuf;

/// The model a gallery's faces are embedded with.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GalleryModel {
    /// Its row in `models`.
    pub id: i64,
    /// The sha256 of its ONNX file: what identifies it.
    pub hash: String,
    /// Its manifest's name.
    pub name: String,
    /// Its embedding size.
    pub dim: usize,
    /// The folder it was last loaded from, if known.
    pub dir: Option<PathBuf>,
}

impl GalleryModel {
    /// How messages name it: its name and the start of its hash.
    pub fn label(&self) -> String {
        format!("{} ({})", self.name, &self.hash[..self.hash.len().min(12)])
    }
}

/// The gallery's current model; `None` for a gallery no model has analysed anything in yet.
pub fn current(conn: &Connection) -> Result<Option<GalleryModel>> {
    Ok(conn
        .query_row(
            "SELECT id, model_hash, name, dim, dir FROM models WHERE current = 1",
            [],
            |r| {
                Ok(GalleryModel {
                    id: r.get(0)?,
                    hash: r.get(1)?,
                    name: r.get(2)?,
                    dim: r.get::<_, i64>(3)? as usize,
                    dir: r.get::<_, Option<String>>(4)?.map(PathBuf::from),
                })
            },
        )
        .optional()?)
}

/// The row id of `emb`'s model in the gallery, which must be the gallery's model: a gallery
/// without one (new, or never analysed) takes it. The folder it was loaded from is recorded, so
/// that later commands find it without `--model`. Another model is an error naming both and
/// saying how to switch.
pub fn adopt(conn: &Connection, emb: &Embedder) -> Result<i64> {
    let id = crate::gallery::db::model_row(conn, &emb.model_id, &emb.name, emb.dim())?;
    let dir = emb.onnx_path.parent().map(|d| d.display().to_string());
    // One statement: the model becomes current only where no model is, so two first commands
    // at once cannot both make theirs current.
    conn.execute(
        "UPDATE models SET dir = ?2,
             current = (current OR NOT EXISTS (SELECT 1 FROM models WHERE current = 1))
         WHERE id = ?1",
        params![id, dir],
    )?;
    let cur = current(conn)?.expect("a model is current now");
    if cur.id != id {
        bail!(mismatch(
            &cur,
            &emb.name,
            &emb.model_id,
            dir.as_deref().unwrap_or("MODEL")
        ));
    }
    Ok(id)
}

/// The error for a command run with model `name` (`hash`, loaded from `dir`) on a gallery of
/// model `cur`.
pub fn mismatch(cur: &GalleryModel, name: &str, hash: &str, dir: &str) -> String {
    let own = cur
        .dir
        .as_deref()
        .map_or_else(|| cur.name.clone(), |d| d.display().to_string());
    format!(
        "this gallery is embedded with {}, not with {name} ({}): the two models' scores cannot \
         be compared. Switch the gallery to it with `smoothface models use {dir}` (re-embeds \
         every face, keeps people, names and decisions), or use the gallery's own model \
         (`--model {own}`; commands on a gallery use it when --model is not given)",
        cur.label(),
        &hash[..hash.len().min(12)],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gallery::db;

    #[test]
    fn the_first_model_is_current_and_another_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let conn = db::open(&tmp.path().join("g.sqlite")).unwrap();
        assert_eq!(current(&conn).unwrap(), None);
        let a = db::model_row(&conn, "aaaa", "a", 4).unwrap();
        // A model row alone (a search of an empty gallery) does not make it current...
        assert_eq!(current(&conn).unwrap(), None);
        conn.execute("UPDATE models SET current = 1 WHERE id = ?1", [a])
            .unwrap();
        let cur = current(&conn).unwrap().unwrap();
        assert_eq!((cur.id, cur.name.as_str(), cur.dim), (a, "a", 4));
        let msg = mismatch(&cur, "b", "bbbbbbbbbbbbbbbbbb", "/m/b");
        assert!(
            msg.contains("embedded with a (aaaa), not with b (bbbbbbbbbbbb)")
                && msg.contains("`smoothface models use /m/b`"),
            "{msg}"
        );
    }
}
