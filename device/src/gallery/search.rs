//! Search: every stored face of one model in one contiguous matrix, scanned in parallel.
//!
//! A scan of contiguous unit vectors is memory-bound and needs no index structure up to millions
//! of faces (see the README's benchmark); media are ranked by their best-matching face.

use super::db;
use anyhow::Result;
use rayon::prelude::*;
use rusqlite::Connection;
use serde::Serialize;
use smoothface_shared::embedding::dot;

/// All faces of one model: `rows x dim` unit vectors, row-major, grouped by media.
#[derive(Debug, Clone, Default)]
pub struct FaceMatrix {
    dim: usize,
    data: Vec<f32>,
    media: Vec<i64>,
    face_index: Vec<u32>,
    damaged: Vec<i64>,
}

/// One ranked photo.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    /// The media row.
    pub media_id: i64,
    /// Which of its faces matched best (0 = largest).
    pub face_index: u32,
    /// Cosine similarity of that face to the query.
    pub score: f32,
}

/// Rows scored per parallel task: large enough to amortise scheduling, small enough to balance.
const CHUNK_ROWS: usize = 4096;

impl FaceMatrix {
    /// An empty matrix of `dim`-sized rows.
    pub fn new(dim: usize) -> FaceMatrix {
        FaceMatrix {
            dim,
            ..FaceMatrix::default()
        }
    }

    /// Appends a face. Faces of one media must be pushed consecutively.
    pub fn push(&mut self, media_id: i64, face_index: u32, embedding: &[f32]) {
        assert_eq!(embedding.len(), self.dim, "embedding size");
        self.data.extend_from_slice(embedding);
        self.media.push(media_id);
        self.face_index.push(face_index);
    }

    /// Loads every face the model stored. A face whose embedding is damaged (not `dim` floats)
    /// is left out and listed in [`FaceMatrix::damaged`], so one bad row does not stop a search.
    pub fn load(conn: &Connection, model_id: i64, dim: usize) -> Result<FaceMatrix> {
        let count: i64 = conn.query_row(
            "SELECT count(*) FROM faces WHERE model_id = ?1",
            [model_id],
            |r| r.get(0),
        )?;
        let mut m = FaceMatrix::new(dim);
        m.data.reserve(count as usize * dim);
        let mut stmt = conn.prepare(
            "SELECT media_id, face_index, embedding, id FROM faces WHERE model_id = ?1 ORDER BY media_id, face_index",
        )?;
        let mut rows = stmt.query([model_id])?;
        while let Some(r) = rows.next()? {
            let id = r.get(3)?;
            let blob = r.get_ref(2)?.as_blob().unwrap_or_default();
            match db::floats(blob, dim, id, "embedding") {
                Ok(embedding) => m.push(r.get(0)?, r.get(1)?, &embedding),
                Err(_) => m.damaged.push(id),
            }
        }
        Ok(m)
    }

    /// Ids of the stored faces left out because their embedding is damaged.
    pub fn damaged(&self) -> &[i64] {
        &self.damaged
    }

    /// Number of faces.
    pub fn len(&self) -> usize {
        self.media.len()
    }

    /// True when no face is stored.
    pub fn is_empty(&self) -> bool {
        self.media.is_empty()
    }

    /// Cosine similarity of the query to every face, in row order.
    pub fn scores(&self, query: &[f32]) -> Vec<f32> {
        assert_eq!(query.len(), self.dim, "query size");
        let mut out = vec![0.0f32; self.len()];
        out.par_chunks_mut(CHUNK_ROWS)
            .zip(self.data.par_chunks(CHUNK_ROWS * self.dim))
            .for_each(|(out, rows)| {
                for (o, row) in out.iter_mut().zip(rows.chunks_exact(self.dim)) {
                    *o = dot(query, row);
                }
            });
        out
    }

    /// The embedding size.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The embeddings, `len() x dim` row-major, in row order.
    pub fn embeddings(&self) -> &[f32] {
        &self.data
    }

    /// The `top` media whose best face scores at least `min_score`, best first.
    pub fn rank_media(&self, query: &[f32], top: usize, min_score: f32) -> Vec<Hit> {
        self.rank_scores(&self.scores(query), top, min_score)
    }

    /// [`FaceMatrix::rank_media`] for given scores, one per row (such as a person's fused
    /// scores); `top` 0 keeps every media.
    pub fn rank_scores(&self, scores: &[f32], top: usize, min_score: f32) -> Vec<Hit> {
        assert_eq!(scores.len(), self.len(), "one score per face");
        let mut best: Vec<Hit> = Vec::new();
        for (i, &score) in scores.iter().enumerate() {
            match best.last_mut() {
                Some(h) if h.media_id == self.media[i] => {
                    if score > h.score {
                        h.score = score;
                        h.face_index = self.face_index[i];
                    }
                }
                _ => best.push(Hit {
                    media_id: self.media[i],
                    face_index: self.face_index[i],
                    score,
                }),
            }
        }
        best.retain(|h| h.score >= min_score);
        let by_score = |a: &Hit, b: &Hit| {
            b.score
                .total_cmp(&a.score)
                .then(a.media_id.cmp(&b.media_id))
        };
        if best.len() > top && top > 0 {
            best.select_nth_unstable_by(top - 1, by_score);
            best.truncate(top);
        }
        best.sort_by(by_score);
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(angle: f32) -> [f32; 2] {
        [angle.cos(), angle.sin()]
    }

    #[test]
    fn media_rank_by_their_best_face() {
        let mut m = FaceMatrix::new(2);
        m.push(1, 0, &unit(1.0)); // media 1: faces at 1.0 and 0.1 rad from the query
        m.push(1, 1, &unit(0.1));
        m.push(2, 0, &unit(0.5));
        m.push(3, 0, &unit(3.0));
        let hits = m.rank_media(&unit(0.0), 10, -1.0);
        let got: Vec<(i64, u32)> = hits.iter().map(|h| (h.media_id, h.face_index)).collect();
        assert_eq!(got, [(1, 1), (2, 0), (3, 0)]);
        assert!((hits[0].score - 0.1f32.cos()).abs() < 1e-6);
        // top and min_score cut the list.
        assert_eq!(m.rank_media(&unit(0.0), 1, -1.0).len(), 1);
        assert_eq!(m.rank_media(&unit(0.0), 10, 0.5).len(), 2); // cos 3.0 < 0
    }

    #[test]
    fn parallel_scores_match_a_plain_loop_across_chunks() {
        let dim = 7;
        let mut m = FaceMatrix::new(dim);
        let row = |i: usize| -> Vec<f32> {
            (0..dim)
                .map(|k| ((i * 31 + k * 7) % 13) as f32 - 6.0)
                .collect()
        };
        for i in 0..(CHUNK_ROWS * 2 + 5) {
            m.push(i as i64, 0, &row(i));
        }
        let q = row(12345);
        let s = m.scores(&q);
        for i in [0, 1, CHUNK_ROWS - 1, CHUNK_ROWS, CHUNK_ROWS * 2 + 4] {
            let expect: f32 = row(i).iter().zip(&q).map(|(a, b)| a * b).sum();
            assert_eq!(s[i], expect, "row {i}");
        }
    }
}
