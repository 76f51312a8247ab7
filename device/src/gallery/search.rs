//! Search: every stored face of one model in one contiguous matrix, scanned in parallel.
//!
//! A scan of contiguous unit vectors is memory-bound and needs no index structure up to millions
//! of faces (docs/benchmarks.md); media are ranked by their best-matching face. A large
//! gallery kept in memory for many queries (the service, `watch`) also gets compact codes
//! ([`FaceMatrix::compact_when_large`]): a scan of those finds the candidates, which are then
//! re-ranked on their float32 rows.

use super::compact::Codes;
use super::db;
use super::top::{best_first, Best};
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
    codes: Option<Codes>,
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

/// Galleries of this many faces or more get compact codes in [`FaceMatrix::compact_when_large`]:
/// below it an exact scan takes 5 to 8 ms on two cores (docs/benchmarks.md, "Search").
pub const COMPACT_FROM: usize = 100_000;

/// Faces the compact scan hands to the exact re-rank (at least; more for a long top list). The
/// benchmark's recall@10 is measured with it.
pub const COMPACT_CANDIDATES: usize = 1000;

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
        self.codes = None;
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

    /// Builds the compact codes when the gallery has [`COMPACT_FROM`] faces or more, so that
    /// [`FaceMatrix::rank_media`] scans them. Worth it for a matrix that serves many queries:
    /// the codes take about two exact scans to build.
    pub fn compact_when_large(&mut self) {
        if self.len() >= COMPACT_FROM {
            self.build_compact();
        }
    }

    /// Builds the compact codes whatever the gallery's size.
    pub fn build_compact(&mut self) {
        self.codes = Some(Codes::build(&self.data, self.dim));
    }

    /// The compact codes, when built.
    pub fn codes(&self) -> Option<&Codes> {
        self.codes.as_ref()
    }

    fn row(&self, i: u32) -> &[f32] {
        &self.data[i as usize * self.dim..][..self.dim]
    }

    /// The `top` media whose best face scores at least `min_score`, best first; `top` 0 keeps
    /// every media. Scans the compact codes where they are built, else every float32 row.
    pub fn rank_media(&self, query: &[f32], top: usize, min_score: f32) -> Vec<Hit> {
        if top == 0 {
            return self.rank_scores(&self.scores(query), 0, min_score);
        }
        if self.codes.is_some() {
            self.rank_media_compact(query, top, min_score)
        } else {
            self.rank_media_exact(query, top, min_score)
        }
    }

    /// [`FaceMatrix::rank_media`] by an exact scan of every float32 row: the best faces are
    /// kept as the scan goes, as many as `top` media need (more when some media have several).
    pub fn rank_media_exact(&self, query: &[f32], top: usize, min_score: f32) -> Vec<Hit> {
        assert_eq!(query.len(), self.dim, "query size");
        let mut keep = top.saturating_mul(2).saturating_add(16).min(self.len());
        loop {
            let faces = self.best_faces(query, keep);
            let hits = self.media_of(&faces);
            // Enough media, or no face left unseen that could add one above min_score.
            let done = hits.len() >= top
                || keep >= self.len()
                || faces.last().is_some_and(|f| f.0 < min_score);
            if done {
                return finish(hits, top, min_score);
            }
            keep = keep.saturating_mul(4).min(self.len());
        }
    }

    /// [`FaceMatrix::rank_media`] by the compact codes: their best [`COMPACT_CANDIDATES`] faces
    /// re-ranked on their float32 rows. Falls back to the exact scan when those hold fewer than
    /// `top` media, or when the codes are not built.
    pub fn rank_media_compact(&self, query: &[f32], top: usize, min_score: f32) -> Vec<Hit> {
        let Some(codes) = &self.codes else {
            return self.rank_media_exact(query, top, min_score);
        };
        let keep = COMPACT_CANDIDATES
            .max(top.saturating_mul(4))
            .min(self.len());
        let mut faces: Vec<(f32, u32)> = codes
            .candidates(query, keep)
            .into_iter()
            .map(|row| (dot(query, self.row(row)), row))
            .collect();
        faces.sort_by(best_first);
        let hits = self.media_of(&faces);
        if hits.len() < top && keep < self.len() {
            return self.rank_media_exact(query, top, min_score);
        }
        finish(hits, top, min_score)
    }

    /// The `keep` best faces for `query` (score, row), best first.
    fn best_faces(&self, query: &[f32], keep: usize) -> Vec<(f32, u32)> {
        let dim = self.dim;
        self.data
            .par_chunks(CHUNK_ROWS * dim)
            .enumerate()
            .fold(
                || Best::new(keep),
                |mut best, (chunk, rows)| {
                    let first = chunk * CHUNK_ROWS;
                    for (i, row) in rows.chunks_exact(dim).enumerate() {
                        best.offer(dot(query, row), (first + i) as u32);
                    }
                    best
                },
            )
            .reduce(|| Best::new(keep), Best::merge)
            .into_sorted()
    }

    /// Each media's best face among `faces` (best first), in that order.
    fn media_of(&self, faces: &[(f32, u32)]) -> Vec<Hit> {
        let mut seen = std::collections::HashSet::new();
        faces
            .iter()
            .filter(|(_, row)| seen.insert(self.media[*row as usize]))
            .map(|&(score, row)| Hit {
                media_id: self.media[row as usize],
                face_index: self.face_index[row as usize],
                score,
            })
            .collect()
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
        if best.len() > top && top > 0 {
            best.select_nth_unstable_by(top - 1, by_score);
            best.truncate(top);
        }
        best.sort_by(by_score);
        best
    }
}

/// Best first; equal scores by media.
fn by_score(a: &Hit, b: &Hit) -> std::cmp::Ordering {
    b.score
        .total_cmp(&a.score)
        .then(a.media_id.cmp(&b.media_id))
}

/// The first `top` of `hits` that score at least `min_score`, in [`by_score`] order.
fn finish(mut hits: Vec<Hit>, top: usize, min_score: f32) -> Vec<Hit> {
    hits.retain(|h| h.score >= min_score);
    hits.sort_by(by_score);
    hits.truncate(top);
    hits
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

    /// Unit vectors shaped like face embeddings: people's centres with per-dimension spreads
    /// that differ (as a trained embedding's do), each face its centre plus noise, normalised;
    /// media of one to four faces, one media of 60 faces of the same person (so the best
    /// faces of a query can all be one media's).
    fn face_like(faces: usize, dim: usize, seed: u64) -> (FaceMatrix, Vec<Vec<f32>>) {
        let mut rng = smoothface_tests::Rng::new(seed);
        // Noise of about the centres' length: two faces of a person about 0.5 similar.
        let spread: Vec<f32> = (0..dim)
            .map(|d| (0.5 + (d % 7) as f32 * 0.25) / (dim as f32).sqrt())
            .collect();
        let draw = |centre: Option<&[f32]>, rng: &mut smoothface_tests::Rng| {
            let mut v: Vec<f32> = (0..dim)
                .map(|d| {
                    let noise = rng.normal() as f32 * spread[d];
                    centre.map_or(noise, |c| c[d] + 0.9 * noise)
                })
                .collect();
            smoothface_shared::embedding::l2_normalize(&mut v);
            v
        };
        let centres: Vec<Vec<f32>> = (0..faces / 10).map(|_| draw(None, &mut rng)).collect();
        let mut m = FaceMatrix::new(dim);
        let (mut media, mut left_in_media) = (0i64, 0u32);
        for i in 0..faces {
            if left_in_media == 0 {
                media += 1;
                left_in_media = if media == 7 {
                    60
                } else {
                    1 + rng.below(4) as u32
                };
            }
            let person = if media == 7 {
                0
            } else {
                rng.below(centres.len() as u64) as usize
            };
            let face = draw(Some(&centres[person]), &mut rng);
            m.push(media, (i % 64) as u32, &face);
            left_in_media -= 1;
        }
        let queries = (0..20).map(|p| draw(Some(&centres[p]), &mut rng)).collect();
        (m, queries)
    }

    #[test]
    fn exact_ranking_equals_ranking_every_score() {
        let (m, queries) = face_like(3 * CHUNK_ROWS + 77, 64, 1);
        for q in &queries {
            // usize::MAX: a top past the gallery keeps every media, allocating for the gallery.
            for (top, min_score) in [
                (1, -1.0),
                (10, -1.0),
                (50, 0.2),
                (500, -1.0),
                (usize::MAX, 0.3),
            ] {
                let reference = m.rank_scores(&m.scores(q), top, min_score);
                assert_eq!(
                    m.rank_media_exact(q, top, min_score),
                    reference,
                    "top {top}"
                );
            }
        }
    }

    #[test]
    fn compact_search_finds_the_exact_top_ten() {
        let (mut m, queries) = face_like(60_000, 512, 2);
        m.build_compact();
        assert_eq!(
            m.codes().map(|c| (c.len(), c.bytes_per_face())),
            Some((60_000, 256))
        );
        let mut found = 0;
        for q in &queries {
            let exact = m.rank_media_exact(q, 10, -1.0);
            let compact = m.rank_media_compact(q, 10, -1.0);
            assert_eq!(compact.len(), 10);
            // Whatever the compact scan finds is scored exactly.
            for h in &compact {
                assert!(exact.contains(h) || h.score <= exact[9].score, "{h:?}");
            }
            found += compact.iter().filter(|h| exact.contains(h)).count();
        }
        let recall = found as f64 / (10 * queries.len()) as f64;
        assert!(recall >= 0.99, "recall@10 {recall}");
        // The person whose 60 faces are one media: that media comes first once, not 60 times.
        let q = &queries[0];
        let hits = m.rank_media(q, 5, -1.0);
        assert_eq!(hits.iter().filter(|h| h.media_id == 7).count(), 1);
        assert_eq!(hits, m.rank_media_exact(q, 5, -1.0));
        let all = m.rank_scores(&m.scores(q), 0, 0.3);
        assert_eq!(m.rank_media_compact(q, usize::MAX, 0.3), all);
        assert!(FaceMatrix::new(512).rank_media(q, 10, -1.0).is_empty());
    }

    #[test]
    fn codes_hold_each_value_within_half_a_level() {
        let dim = 100;
        let (m, _) = face_like(2000, dim, 3);
        let codes = Codes::build(m.embeddings(), dim);
        let mut clipped = 0;
        for (r, row) in m.embeddings().chunks_exact(dim).enumerate() {
            for (d, &x) in row.iter().enumerate() {
                let (low, high) = codes.range(d);
                let step = (high - low) / 15.0;
                let got = codes.value(r, d);
                if x < low || x > high {
                    clipped += 1;
                    assert_eq!(got, if x < low { low } else { low + 15.0 * step });
                } else {
                    assert!(
                        (x - got).abs() <= step * 0.5001,
                        "row {r} dim {d}: {x} as {got}"
                    );
                }
            }
        }
        // Mean ± 3 standard deviations holds all but a few values in a thousand.
        let share = clipped as f64 / (2000 * dim) as f64;
        assert!(share > 0.0 && share < 0.01, "{share} clipped");
    }
}
