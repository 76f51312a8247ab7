//! `smoothface bench`: speed of every stage, each beside a peer measured in the same run.
//!
//! - embedding: per-face latency on one thread, tract against onnxruntime (`bench/ort_peer.py`,
//!   run with the benchmark virtualenv's Python) on the same graph and the same input tensors;
//!   the two runtimes' embeddings are compared too;
//! - detection: per-photo time on the photos as they are (250x250 for LFW) and resized to 500x400;
//! - end to end: photos per second of `index` on all cores, into a fresh gallery;
//! - search: one query against 10k, 100k and 1M random unit vectors, against numpy's
//!   matrix-vector product.

use crate::gallery::{db, index, search::FaceMatrix};
use crate::pipeline::Pipeline;
use anyhow::{bail, Context, Result};
use image::imageops;
use serde::Serialize;
use smoothface_shared::embedding::{cosine, l2_normalize};
use smoothface_shared::preprocess::face_tensor;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Folder of face photos (searched recursively).
    pub photos: PathBuf,
    /// Faces for the embedding and detection timings.
    pub faces: usize,
    /// Photos for the end-to-end timing.
    pub e2e_photos: usize,
    /// Gallery sizes for the search timing.
    pub search_sizes: Vec<usize>,
    /// Python with onnxruntime and numpy; `None` skips the peers.
    pub python: Option<PathBuf>,
}

/// A timing beside its peer's.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What was measured.
    pub what: String,
    /// Ours, milliseconds (median).
    pub ours_ms: f64,
    /// The peer's, milliseconds (median), when it ran.
    pub peer_ms: Option<f64>,
    /// Who the peer is.
    pub peer: Option<String>,
}

/// The benchmark's results.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Timings.
    pub rows: Vec<Row>,
    /// End-to-end photos per second on all cores.
    pub photos_per_second: f64,
    /// Worker threads used end to end.
    pub threads: usize,
    /// Largest difference between tract's and onnxruntime's embeddings, when the peer ran.
    pub max_abs_diff_vs_peer: Option<f32>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time_ms<T>(f: impl FnOnce() -> T) -> (f64, T) {
    let t = Instant::now();
    let r = f();
    (t.elapsed().as_secs_f64() * 1e3, r)
}

/// Runs the benchmark. Embedding and detection run on this thread alone; end to end and search
/// use the global thread pool.
pub fn run(pipeline: &Pipeline, opts: &BenchOptions) -> Result<BenchReport> {
    let files = photo_files(&opts.photos, opts.faces.max(opts.e2e_photos))?;
    let mut rows = Vec::new();

    // Detection and aligned crops.
    let mut crops = Vec::new();
    let (mut det_native, mut det_large) = (Vec::new(), Vec::new());
    let mut native_size = (0, 0);
    for path in files.iter().take(opts.faces) {
        let img = pipeline.decode(path)?;
        native_size = img.dimensions();
        let (ms, faces) = time_ms(|| pipeline.detector.detect(&img));
        det_native.push(ms);
        let large = imageops::resize(&img, 500, 400, imageops::FilterType::Triangle);
        det_large.push(time_ms(|| pipeline.detector.detect(&large)).0);
        if let Some(face) = faces?.into_iter().next() {
            let (w, h) = (img.width() as usize, img.height() as usize);
            if let Some(c) =
                smoothface_shared::align::align_face(img.as_raw(), w, h, &face.landmarks)
            {
                crops.push(c);
            }
        }
    }
    if crops.is_empty() {
        bail!(
            "{}: no face found in the benchmark photos",
            opts.photos.display()
        );
    }
    let (w, h) = native_size;
    rows.push(Row {
        what: format!("detect, {w}x{h} photo"),
        ours_ms: median(det_native),
        peer_ms: None,
        peer: None,
    });
    rows.push(Row {
        what: "detect, 500x400 photo".into(),
        ours_ms: median(det_large),
        peer_ms: None,
        peer: None,
    });

    // Embedding, one face at a time.
    let emb = &pipeline.embedder;
    let mut ours = Vec::new();
    let mut vectors = Vec::new();
    for repeat in 0..4 {
        for c in &crops {
            let (ms, v) = time_ms(|| emb.embed(&[c.as_slice()]));
            let v = v?;
            if repeat == 0 {
                vectors.push(v); // the first pass also warms up
            } else {
                ours.push(ms);
            }
        }
    }
    let mut max_abs_diff_vs_peer = None;
    let mut embed_row = Row {
        what: format!("embed one face ({}), 1 thread", emb.name),
        ours_ms: median(ours),
        peer_ms: None,
        peer: None,
    };
    if let Some(python) = &opts.python {
        let peer = ort_embed(python, pipeline, &crops)?;
        embed_row.peer_ms = Some(peer.median_ms);
        embed_row.peer = Some(peer.runtime);
        let diff = vectors
            .iter()
            .zip(&peer.embeddings)
            .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs()))
            .fold(0.0f32, f32::max);
        let min_cos = vectors
            .iter()
            .zip(&peer.embeddings)
            .map(|(a, b)| cosine(a, b))
            .fold(1.0f32, f32::min);
        // onnxruntime runs an int8 graph with integer kernels where tract dequantizes the
        // weights and convolves in float: their roundings differ, not their model.
        let floor = if emb.quantized { 0.98 } else { 0.999 };
        if min_cos < floor {
            bail!("tract and onnxruntime disagree on the same input (cosine {min_cos}): the model is not run correctly");
        }
        max_abs_diff_vs_peer = Some(diff);
    }
    rows.push(embed_row);

    // End to end on all cores into a fresh gallery.
    let tmp = tempfile_dir()?;
    let lib = tmp.join("photos");
    std::fs::create_dir_all(&lib)?;
    for (i, f) in files.iter().take(opts.e2e_photos).enumerate() {
        std::fs::copy(f, lib.join(format!("{i:06}.jpg")))?;
    }
    let mut conn = db::open(&tmp.join("bench.sqlite"))?;
    let (ms, report) =
        time_ms(|| index::index(&mut conn, pipeline, std::slice::from_ref(&lib), false));
    let report = report?;
    let photos_per_second = report.analysed as f64 / (ms / 1e3);
    drop(conn);
    std::fs::remove_dir_all(&tmp).ok();

    // Search over synthetic galleries.
    let peer_search = match &opts.python {
        Some(python) => Some(numpy_search(python, &opts.search_sizes)?),
        None => None,
    };
    for (i, &n) in opts.search_sizes.iter().enumerate() {
        let m = random_matrix(n, emb.dim());
        let query = m_row(emb.dim(), 0);
        let times: Vec<f64> = (0..5)
            .map(|_| time_ms(|| m.rank_media(&query, 20, -1.0)).0)
            .collect();
        rows.push(Row {
            what: format!("search {n} faces, top 20"),
            ours_ms: median(times),
            peer_ms: peer_search.as_ref().map(|p| p.1[i]),
            peer: peer_search.as_ref().map(|p| p.0.clone()),
        });
    }
    Ok(BenchReport {
        rows,
        photos_per_second,
        threads: rayon::current_num_threads(),
        max_abs_diff_vs_peer,
    })
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("smoothface-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The first `n` files under a folder, in name order.
fn photo_files(dir: &Path, n: usize) -> Result<Vec<PathBuf>> {
    let files: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_type().is_file()
                && e.path()
                    .extension()
                    .is_some_and(|x| x == "jpg" || x == "png")
        })
        .map(|e| e.into_path())
        .take(n)
        .collect();
    if files.is_empty() {
        bail!("{}: no .jpg or .png photos to benchmark on", dir.display());
    }
    Ok(files)
}

/// Row `i` of the synthetic gallery: a deterministic pseudo-random unit vector.
fn m_row(dim: usize, i: usize) -> Vec<f32> {
    let mut state = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v: Vec<f32> = (0..dim)
        .map(|_| {
            // xorshift64*: fast, and good enough to spread vectors over the sphere.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    l2_normalize(&mut v);
    v
}

fn random_matrix(n: usize, dim: usize) -> FaceMatrix {
    let mut m = FaceMatrix::new(dim);
    for i in 0..n {
        m.push(i as i64, 0, &m_row(dim, i));
    }
    m
}

struct PeerEmbed {
    runtime: String,
    median_ms: f64,
    embeddings: Vec<Vec<f32>>,
}

fn peer_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/ort_peer.py")
}

fn run_python(python: &Path, args: &[String]) -> Result<serde_json::Value> {
    let out = Command::new(python)
        .arg(peer_script())
        .args(args)
        .output()
        .with_context(|| {
            format!(
                "{}: cannot run the peer (run scripts/setup --bench)",
                python.display()
            )
        })?;
    if !out.status.success() {
        bail!("the peer failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn ort_embed(python: &Path, pipeline: &Pipeline, crops: &[Vec<u8>]) -> Result<PeerEmbed> {
    let emb = &pipeline.embedder;
    let per = 3 * emb.spec.size * emb.spec.size;
    let mut data = vec![0.0f32; per * crops.len()];
    for (c, slot) in crops.iter().zip(data.chunks_exact_mut(per)) {
        face_tensor(c, &emb.spec, slot);
    }
    let input = std::env::temp_dir().join(format!("smoothface-bench-{}.f32", std::process::id()));
    std::fs::write(&input, db::to_blob(&data))?;
    let s = emb.spec.size;
    let shape = match emb.spec.layout {
        smoothface_shared::manifest::Layout::Nchw => format!("3,{s},{s}"),
        smoothface_shared::manifest::Layout::Nhwc => format!("{s},{s},3"),
    };
    let args = [
        "embed".to_string(),
        "--model".into(),
        emb.onnx_path.display().to_string(),
        "--input".into(),
        input.display().to_string(),
        "--n".into(),
        crops.len().to_string(),
        "--shape".into(),
        shape,
    ];
    let v = run_python(python, &args);
    std::fs::remove_file(&input).ok();
    let v = v?;
    let embeddings = v["embeddings"]
        .as_array()
        .context("peer output")?
        .iter()
        .map(|row| {
            row.as_array().map(|r| {
                r.iter()
                    .map(|x| x.as_f64().unwrap_or(f64::NAN) as f32)
                    .collect()
            })
        })
        .collect::<Option<Vec<Vec<f32>>>>()
        .context("peer embeddings")?;
    Ok(PeerEmbed {
        runtime: v["runtime"].as_str().unwrap_or("onnxruntime").into(),
        median_ms: v["median_ms"].as_f64().context("peer timing")?,
        embeddings,
    })
}

fn numpy_search(python: &Path, sizes: &[usize]) -> Result<(String, Vec<f64>)> {
    let sizes = sizes
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let v = run_python(python, &["search".into(), "--sizes".into(), sizes])?;
    let times = v["search"]
        .as_array()
        .context("peer output")?
        .iter()
        .filter_map(|r| r["median_ms"].as_f64())
        .collect();
    Ok((v["runtime"].as_str().unwrap_or("numpy").into(), times))
}
