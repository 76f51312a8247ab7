//! The search timing: one query at a time against galleries of real face embeddings padded with
//! synthetic faces drawn to match their statistics, exact and compact, beside faiss's
//! `IndexFlatIP` and numpy's matrix-vector product on the same vectors and the same threads.
//!
//! The real faces are the benchmark photos' (one face a photo, the most central), embedded by
//! the pipeline. Each query is a held-out photo of a person who has another in the gallery, so a
//! top 10 holds a few true matches and the closest strangers, as a user's search does. A
//! synthetic face is `mean + sum over j of g_j (x_j - mean) / sqrt(k)` for `k` real faces `x_j`
//! drawn at random and standard normal `g_j`, normalised: its mean and covariance are the real
//! faces', so strangers crowd the top of a ranking as real strangers do. The table reports the
//! cosine of random pairs of each kind, to show it.

use super::{run_python, tempfile_dir};
use crate::gallery::search::{FaceMatrix, Hit};
use crate::pipeline::{FacePick, Pipeline};
use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use smoothface_shared::embedding::{dot, l2_normalize};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

/// Results per query kept and compared.
const TOP: usize = 10;

/// Real faces mixed into each synthetic one.
const MIXED: usize = 16;

/// What the search timing measures.
#[derive(Debug, Clone)]
pub struct SearchOptions {
    /// Gallery sizes, faces.
    pub sizes: Vec<usize>,
    /// Photos embedded for the real faces (queries included).
    pub real_photos: usize,
    /// Queries timed at each size.
    pub queries: usize,
}

/// One gallery size: our exact and compact searches beside the peers'.
#[derive(Debug, Clone, Serialize)]
pub struct SearchRow {
    /// Faces searched.
    pub faces: usize,
    /// Our exact scan of the float32 rows, milliseconds a query (median over the queries).
    pub exact_ms: f64,
    /// faiss `IndexFlatIP.search`, the same vectors, queries and threads.
    pub faiss_ms: Option<f64>,
    /// The same on one thread: faiss's best for a single query (it splits one query's scan
    /// over threads poorly).
    pub faiss_one_thread_ms: Option<f64>,
    /// numpy's matrix-vector product and `argpartition`.
    pub numpy_ms: Option<f64>,
    /// Share of our exact top 10s that faiss's top 10s hold (1 when both are exact).
    pub faiss_agreement: Option<f64>,
    /// Our compact search: the codes' scan, then the exact re-rank of its candidates.
    pub compact_ms: f64,
    /// Share of the exact top 10s that the compact search returns.
    pub compact_recall_at_10: f64,
    /// Building the compact codes of the whole gallery, milliseconds (once per load).
    pub compact_build_ms: f64,
    /// Bytes a face takes in the compact codes.
    pub compact_bytes_per_face: usize,
    /// Bytes a face takes as float32, which the re-rank reads.
    pub float_bytes_per_face: usize,
}

/// The mean and standard deviation of the cosine between random pairs of faces.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PairCosine {
    /// Mean.
    pub mean: f64,
    /// Standard deviation.
    pub sd: f64,
}

/// The search timing's results.
#[derive(Debug, Clone, Serialize)]
pub struct SearchReport {
    /// One row per gallery size.
    pub rows: Vec<SearchRow>,
    /// Real faces in every gallery (the rest are synthetic).
    pub real_faces: usize,
    /// People they belong to.
    pub people: usize,
    /// Queries timed at each size.
    pub queries: usize,
    /// Random pairs of real faces.
    pub real_pairs: PairCosine,
    /// Random pairs of synthetic faces.
    pub synthetic_pairs: PairCosine,
    /// Threads of every search, ours and the peers'.
    pub threads: usize,
    /// The peers' versions, when they ran.
    pub peers: Option<String>,
}

/// The photos' faces, embedded: (person, embedding), in file name order.
fn real_faces(pipeline: &Pipeline, photos: &Path, n: usize) -> Result<Vec<(String, Vec<f32>)>> {
    let files = super::photo_files(photos, n)?;
    eprintln!("search: embedding the faces of {} photos", files.len());
    let faces: Vec<Option<(String, Vec<f32>)>> = files
        .par_iter()
        .map(|path| {
            // A photo that fails to decode or holds no face is left out, as index leaves it.
            let img = pipeline.decode(path).ok()?;
            let face = pipeline.analyze_one(&img, FacePick::Central).ok()??;
            let person = path.parent()?.file_name()?.to_string_lossy().into_owned();
            Some((person, face.embedding))
        })
        .collect();
    Ok(faces.into_iter().flatten().collect())
}

/// A deterministic stream of standard normal values (splitmix64, then Box-Muller).
struct Normal(u64);

impl Normal {
    fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn next(&mut self) -> f64 {
        let u = self.uniform().max(f64::MIN_POSITIVE);
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * self.uniform()).cos()
    }

    fn below(&mut self, n: usize) -> usize {
        (self.uniform() * n as f64) as usize
    }
}

/// `count` synthetic faces (row-major) with the mean and covariance of `real`'s rows.
fn synthetic(real: &[f32], dim: usize, count: usize) -> Vec<f32> {
    let rows = real.len() / dim;
    let mut mean = vec![0f32; dim];
    for row in real.chunks_exact(dim) {
        mean.iter_mut()
            .zip(row)
            .for_each(|(m, x)| *m += x / rows as f32);
    }
    let scale = 1.0 / (MIXED as f32).sqrt();
    let mut out = vec![0f32; count * dim];
    out.par_chunks_mut(dim).enumerate().for_each(|(i, v)| {
        let mut rng = Normal(i as u64 ^ 0x5EED);
        v.copy_from_slice(&mean);
        for _ in 0..MIXED {
            let x = &real[rng.below(rows) * dim..][..dim];
            let g = rng.next() as f32 * scale;
            for ((o, x), m) in v.iter_mut().zip(x).zip(&mean) {
                *o += g * (x - m);
            }
        }
        l2_normalize(v);
    });
    out
}

/// The cosine of `pairs` random pairs of `rows`' faces.
fn pair_cosine(rows: &[f32], dim: usize, pairs: usize) -> PairCosine {
    let n = rows.len() / dim;
    let mut rng = Normal(7);
    let c: Vec<f64> = (0..pairs)
        .filter_map(|_| {
            let (a, b) = (rng.below(n), rng.below(n));
            (a != b).then(|| f64::from(dot(&rows[a * dim..][..dim], &rows[b * dim..][..dim])))
        })
        .collect();
    let mean = c.iter().sum::<f64>() / c.len().max(1) as f64;
    let var = c.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / c.len().max(1) as f64;
    PairCosine {
        mean,
        sd: var.sqrt(),
    }
}

/// What the peer reports of one size.
#[derive(Debug, Deserialize)]
struct PeerSize {
    vectors: usize,
    faiss_ms: f64,
    faiss_one_thread_ms: f64,
    numpy_ms: f64,
    /// faiss's top rows, one list per query.
    faiss_top: Vec<Vec<i64>>,
}

#[derive(Debug, Deserialize)]
struct PeerSearch {
    runtime: String,
    search: Vec<PeerSize>,
}

/// `values` as little-endian floats, streamed: `db::to_blob` would copy a 2 GB gallery first.
fn write_f32(path: &Path, values: &[f32]) -> Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    for v in values {
        f.write_all(&v.to_le_bytes())?;
    }
    f.flush()?;
    Ok(())
}

/// Runs the search timing on the faces of the photos under `photos`, beside the peers when
/// `python` (with faiss and numpy) is given.
pub fn run(
    pipeline: &Pipeline,
    photos: &Path,
    opts: &SearchOptions,
    python: Option<&Path>,
) -> Result<SearchReport> {
    let dim = pipeline.embedder.dim();
    let faces = real_faces(pipeline, photos, opts.real_photos)?;
    // Hold out one photo of each person with two or more as a query.
    let mut count: HashMap<&str, usize> = HashMap::new();
    faces
        .iter()
        .for_each(|(p, _)| *count.entry(p).or_default() += 1);
    let (mut queries, mut real) = (Vec::new(), Vec::new());
    let mut held_out = std::collections::HashSet::new();
    for (person, v) in &faces {
        let hold = queries.len() < opts.queries * dim
            && count[person.as_str()] >= 2
            && held_out.insert(person.as_str());
        if hold {
            queries.extend_from_slice(v);
        } else {
            real.extend_from_slice(v);
        }
    }
    let n_queries = queries.len() / dim;
    let largest = opts.sizes.iter().copied().max().unwrap_or(0);
    if n_queries == 0 || real.len() / dim > largest {
        bail!(
            "{}: {} real faces with {} queries: the search timing needs people with two photos or more, and gallery sizes above the real faces",
            photos.display(),
            real.len() / dim,
            n_queries
        );
    }
    let real_faces = real.len() / dim;
    eprintln!("search: {real_faces} real faces, {n_queries} queries; drawing synthetic faces up to {largest}");
    let extra = synthetic(&real, dim, largest - real_faces);
    let report_pairs = (
        pair_cosine(&real, dim, 20_000),
        pair_cosine(&extra, dim, 20_000),
    );
    let mut gallery = real;
    gallery.extend_from_slice(&extra);
    drop(extra);

    let peer = match python {
        Some(python) => Some(peer_search(python, &gallery, &queries, dim, &opts.sizes)?),
        None => None,
    };
    let mut rows = Vec::new();
    for (i, &n) in opts.sizes.iter().enumerate() {
        eprintln!("search: {n} faces");
        let mut m = FaceMatrix::new(dim);
        for (r, v) in gallery[..n * dim].chunks_exact(dim).enumerate() {
            m.push(r as i64, 0, v);
        }
        let t = Instant::now();
        m.build_compact();
        let compact_build_ms = t.elapsed().as_secs_f64() * 1e3;
        let (mut exact_ms, mut compact_ms) = (Vec::new(), Vec::new());
        let (mut found, mut agree) = (0usize, 0usize);
        for (qi, q) in queries.chunks_exact(dim).enumerate() {
            let (ms, exact) = super::time_ms(|| m.rank_media_exact(q, TOP, -1.0));
            exact_ms.push(ms);
            let (ms, compact) = super::time_ms(|| m.rank_media_compact(q, TOP, -1.0));
            compact_ms.push(ms);
            found += shared(&exact, &compact);
            if let Some(p) = &peer {
                let top = &p.search[i].faiss_top[qi];
                agree += exact.iter().filter(|h| top.contains(&h.media_id)).count();
            }
        }
        let codes = m.codes().context("codes built above")?;
        let compared = (TOP * n_queries) as f64;
        rows.push(SearchRow {
            faces: n,
            exact_ms: super::median(exact_ms),
            faiss_ms: peer.as_ref().map(|p| p.search[i].faiss_ms),
            faiss_one_thread_ms: peer.as_ref().map(|p| p.search[i].faiss_one_thread_ms),
            numpy_ms: peer.as_ref().map(|p| p.search[i].numpy_ms),
            faiss_agreement: peer.as_ref().map(|_| agree as f64 / compared),
            compact_ms: super::median(compact_ms),
            compact_recall_at_10: found as f64 / compared,
            compact_build_ms,
            compact_bytes_per_face: codes.bytes_per_face(),
            float_bytes_per_face: dim * 4,
        });
    }
    Ok(SearchReport {
        rows,
        real_faces,
        people: count.len(),
        queries: n_queries,
        real_pairs: report_pairs.0,
        synthetic_pairs: report_pairs.1,
        threads: rayon::current_num_threads(),
        peers: peer.map(|p| p.runtime),
    })
}

/// How many of `exact`'s hits `other` holds.
fn shared(exact: &[Hit], other: &[Hit]) -> usize {
    exact
        .iter()
        .filter(|h| other.iter().any(|o| o.media_id == h.media_id))
        .count()
}

/// The peers on the same vectors: faiss and numpy, with as many threads as ours.
fn peer_search(
    python: &Path,
    gallery: &[f32],
    queries: &[f32],
    dim: usize,
    sizes: &[usize],
) -> Result<PeerSearch> {
    let dir = tempfile_dir()?;
    let (g, q) = (dir.join("gallery.f32"), dir.join("queries.f32"));
    write_f32(&g, gallery)?;
    write_f32(&q, queries)?;
    let threads = rayon::current_num_threads().to_string();
    let sizes_arg = sizes
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",");
    eprintln!("search: faiss and numpy on the same vectors");
    let out = run_python(
        python,
        &[
            "search".into(),
            "--gallery".into(),
            g.display().to_string(),
            "--queries".into(),
            q.display().to_string(),
            "--dim".into(),
            dim.to_string(),
            "--sizes".into(),
            sizes_arg,
            "--top".into(),
            TOP.to_string(),
            "--threads".into(),
            threads.clone(),
        ],
        &[
            ("OMP_NUM_THREADS", threads.clone()),
            ("OPENBLAS_NUM_THREADS", threads),
        ],
    );
    std::fs::remove_dir_all(&dir).ok();
    let peer: PeerSearch = serde_json::from_value(out?)
        .context("the peer's output is not what this version of smoothface expects")?;
    let n_queries = queries.len() / dim;
    let complete = peer.search.len() == sizes.len()
        && peer
            .search
            .iter()
            .zip(sizes)
            .all(|(s, &n)| s.vectors == n && s.faiss_top.len() == n_queries);
    if !complete {
        bail!("the search peer did not report every size and query");
    }
    Ok(peer)
}
