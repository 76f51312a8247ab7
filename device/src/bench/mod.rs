//! `smoothface bench`: speed of every stage, each beside a peer measured in the same run.
//!
//! - embedding: per-face latency on one thread of every embedder given (`--model`, then each
//!   `--compare`), each graph as written and as the device runs it (its load-time rewrites), in
//!   tract and in onnxruntime (`bench/ort_peer.py`, run with the benchmark virtualenv's Python)
//!   on the same input tensors, with the embeddings compared across graphs and runtimes; with
//!   `--profile`, the time of every operator in both runtimes;
//! - detection: decode and detect per photo on one thread, on the photos as they are (250x250 for
//!   LFW) and resized (500x400, 12 megapixels), beside the detector's peer ([`detect`]);
//! - end to end: photos per second of `index` on all cores, into a fresh gallery;
//! - search: one query at a time against 10k, 100k and 1M faces (real ones padded with synthetic
//!   ones), exact and compact, beside faiss and numpy ([`search`]);
//! - grouping: faces into people from scratch and incrementally, ours beside the Immich rule on
//!   the same synthetic vectors ([`grouping`]).

pub mod detect;
pub mod search;

use crate::embedder::Embedder;
use crate::frames::Sampling;
use crate::gallery::{db, index};
use crate::onnx;
use crate::pipeline::Pipeline;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use smoothface_shared::embedding::{cosine, l2_normalize};
use smoothface_shared::manifest::{InputSpec, Layout, ModelManifest};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The embedder model folder (the pipeline's).
    pub model: PathBuf,
    /// Folder of face photos (searched recursively).
    pub photos: PathBuf,
    /// Faces for the embedding and detection timings.
    pub faces: usize,
    /// Photos for the end-to-end timing.
    pub e2e_photos: usize,
    /// The detection timing.
    pub detect: detect::DetectOptions,
    /// The search timing.
    pub search: search::SearchOptions,
    /// Python with onnxruntime, faiss and numpy; `None` skips the peers.
    pub python: Option<PathBuf>,
    /// Embedder model folders timed beside the pipeline's (an export, its int8 quantization).
    pub compare: Vec<PathBuf>,
    /// Rounds of the embedding timing: every round times every face once in every graph and
    /// runtime, so a slow spell of a shared machine spreads over all of them.
    pub rounds: usize,
    /// Also time each operator of every graph as the device runs it, in both runtimes.
    pub profile: bool,
    /// Faces grouped from scratch in the grouping timing (0 skips it).
    pub grouping_faces: usize,
    /// Faces then added to that gallery.
    pub grouping_add: usize,
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

/// Which form of an embedder's graph ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GraphForm {
    /// The ONNX file exactly as written.
    AsWritten,
    /// With the device's load-time rewrites, what `index` runs: tract gets them all
    /// ([`onnx::load_graph`]); onnxruntime gets their ONNX part ([`onnx::rewritten_proto`]),
    /// tract's layout change having no ONNX form.
    AsRun,
}

impl GraphForm {
    /// How the table names it.
    pub fn label(self) -> &'static str {
        match self {
            GraphForm::AsWritten => "as written",
            GraphForm::AsRun => "as the device runs it",
        }
    }
}

/// One embedder graph, one face at a time on one thread, in tract and in onnxruntime.
#[derive(Debug, Clone, Serialize)]
pub struct EmbedRow {
    /// The model folder.
    pub model: PathBuf,
    /// Its manifest's name.
    pub name: String,
    /// Which form of its graph.
    pub graph: GraphForm,
    /// Tract, milliseconds a face (median).
    pub tract_ms: f64,
    /// onnxruntime on the same graph, milliseconds a face (median), when the peer ran.
    pub onnxruntime_ms: Option<f64>,
    /// Lowest cosine, over the faces, between this graph's embeddings and those of the first
    /// model as the device runs it (1 for the same weights; lower for a retrained or int8 model).
    pub min_cosine_to_first: f32,
    /// The same for onnxruntime's embeddings of this graph (against the same reference, tract's
    /// of the first model): for an int8 graph, how far onnxruntime's rounding takes it.
    pub min_cosine_to_first_onnxruntime: Option<f32>,
    /// Lowest cosine between tract's and onnxruntime's embeddings of the same faces.
    pub min_cosine_tract_vs_onnxruntime: Option<f32>,
    /// With `--profile`: tract's time per operator.
    pub tract_ops: Option<Vec<onnx::OpTime>>,
    /// With `--profile`: onnxruntime's time per operator type.
    pub onnxruntime_ops: Option<Vec<onnx::OpTime>>,
}

/// The benchmark's results.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Grouping timings.
    pub rows: Vec<Row>,
    /// Detection timings, ours beside the detector's peer.
    pub detection: detect::DetectReport,
    /// Search timings, ours beside faiss's and numpy's.
    pub search: search::SearchReport,
    /// Embedding timings, every graph beside onnxruntime.
    pub embedding: Vec<EmbedRow>,
    /// onnxruntime's version, when it ran.
    pub onnxruntime: Option<String>,
    /// `index` end to end, beside the reference pipeline.
    pub end_to_end: EndToEnd,
}

/// `index` on all cores into a fresh gallery, beside the reference pipeline on the same photos.
#[derive(Debug, Clone, Serialize)]
pub struct EndToEnd {
    /// Photos indexed.
    pub photos: usize,
    /// Our worker threads (one per core unless `--threads`).
    pub threads: usize,
    /// Ours, photos a second: the whole `index` run (walk, hashes, decode, detect, align, embed,
    /// the gallery's writes).
    pub photos_per_second: f64,
    /// Faces we stored.
    pub faces: usize,
    /// The reference pipeline (`PEER_SCRIPT`'s `index`: decode, detect, align, embed every
    /// face) with as many one-thread processes as we have threads, photos a second.
    pub reference_photos_per_second: Option<f64>,
    /// Faces the reference embedded.
    pub reference_faces: Option<usize>,
    /// The reference's versions.
    pub reference: Option<String>,
}

#[derive(Deserialize)]
struct PeerIndex {
    runtime: String,
    photos_per_second: f64,
    faces: Vec<i64>,
}

/// Indexes `files` (copied into a scratch folder) into a fresh gallery on all cores, then runs
/// the reference pipeline over the same files with the pipeline's embedder, its ONNX file as
/// written.
pub fn end_to_end(
    pipeline: &Pipeline,
    files: &[PathBuf],
    python: Option<&Path>,
) -> Result<EndToEnd> {
    let tmp = tempfile_dir()?.join("index");
    let lib = tmp.join("photos");
    std::fs::create_dir_all(&lib)?;
    for (i, f) in files.iter().enumerate() {
        std::fs::copy(f, lib.join(format!("{i:06}.jpg")))?;
    }
    let mut conn = db::open(&tmp.join("bench.sqlite"))?;
    let (ms, report) = time_ms(|| {
        index::index(
            &mut conn,
            pipeline,
            std::slice::from_ref(&lib),
            Sampling::DEFAULT,
            false,
            &index::Progress::default(),
        )
    });
    let report = report?;
    drop(conn);
    let threads = rayon::current_num_threads();
    let mut result = EndToEnd {
        photos: report.analysed,
        threads,
        photos_per_second: report.analysed as f64 / (ms / 1e3),
        faces: report.faces,
        reference_photos_per_second: None,
        reference_faces: None,
        reference: None,
    };
    if let Some(python) = python {
        let (onnx_file, spec) = (&pipeline.embedder.onnx_path, &pipeline.embedder.spec);
        let list = write_list(&tmp, files)?;
        let args = [
            "index".to_string(),
            "--list".into(),
            list.to_string_lossy().into_owned(),
            "--model".into(),
            onnx_file.to_string_lossy().into_owned(),
            "--size".into(),
            spec.size.to_string(),
            "--mean".into(),
            spec.mean.to_string(),
            "--std".into(),
            spec.std.to_string(),
            "--layout".into(),
            match spec.layout {
                Layout::Nchw => "nchw".into(),
                Layout::Nhwc => "nhwc".into(),
            },
            "--processes".into(),
            threads.to_string(),
        ];
        let out = run_python(python, &args, &[("OMP_NUM_THREADS", "1".into())])?;
        let peer: PeerIndex =
            serde_json::from_value(out).context("the reference pipeline's output")?;
        result.reference_photos_per_second = Some(peer.photos_per_second);
        result.reference_faces = Some(peer.faces.iter().map(|&f| f.max(0) as usize).sum());
        result.reference = Some(peer.runtime);
    }
    std::fs::remove_dir_all(&tmp).ok();
    Ok(result)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs `f` `rounds` times (at least once): the median of its times in milliseconds, and what
/// its last round returned; the first error ends it.
#[cfg(feature = "video")]
fn median_of_rounds<T>(rounds: usize, mut f: impl FnMut() -> Result<T>) -> Result<(f64, T)> {
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..rounds.max(1) {
        let (ms, r) = time_ms(&mut f);
        last = Some(r?);
        times.push(ms);
    }
    Ok((median(times), last.expect("one round at least")))
}

fn time_ms<T>(f: impl FnOnce() -> T) -> (f64, T) {
    let t = Instant::now();
    let r = f();
    (t.elapsed().as_secs_f64() * 1e3, r)
}

/// Runs the benchmark. Embedding and detection run on this thread alone; end to end and search
/// use the global thread pool.
pub fn run(pipeline: &Pipeline, opts: &BenchOptions) -> Result<BenchReport> {
    let wanted = [
        opts.faces,
        opts.e2e_photos,
        opts.detect.photos,
        opts.detect.large_photos,
    ];
    let files = photo_files(&opts.photos, wanted.into_iter().max().unwrap_or(1))?;
    let mut rows = Vec::new();

    let detection = detect::run(pipeline, None, &files, &opts.detect, opts.python.as_deref())?;

    // Aligned crops for the embedding timing.
    let mut crops = Vec::new();
    for path in files.iter().take(opts.faces) {
        let img = pipeline.decode(path)?;
        if let Some(face) = pipeline.detector.detect(&img)?.into_iter().next() {
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

    let (embedding, onnxruntime) = embed_table(opts, &crops)?;

    let end_to_end = end_to_end(
        pipeline,
        &files[..opts.e2e_photos.min(files.len())],
        opts.python.as_deref(),
    )?;

    let search = search::run(pipeline, &opts.photos, &opts.search, opts.python.as_deref())?;
    if opts.grouping_faces > 0 {
        rows.extend(grouping(
            opts.grouping_faces,
            opts.grouping_add,
            pipeline.embedder.dim(),
        ));
    }
    Ok(BenchReport {
        rows,
        detection,
        search,
        embedding,
        onnxruntime,
        end_to_end,
    })
}

/// Writes `files`, one a line, to `photos.txt` in `dir`, for a peer to read: its path.
fn write_list(dir: &Path, files: &[PathBuf]) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let list = dir.join("photos.txt");
    let names: Vec<String> = files
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    std::fs::write(&list, names.join("\n"))?;
    Ok(list)
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("smoothface-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The first `n` files under a folder, in name order.
pub fn photo_files(dir: &Path, n: usize) -> Result<Vec<PathBuf>> {
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

/// Vector `i` of the grouping's synthetic faces: a deterministic pseudo-random unit vector.
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

/// One graph of the embedding table while it is being measured.
struct Variant {
    dir: PathBuf,
    form: GraphForm,
    embedder: Embedder,
    /// The file onnxruntime runs: the model's own, or the device's rewrite of it.
    onnx_file: PathBuf,
    vectors: Vec<Vec<f32>>,
    tract_ms: Vec<f64>,
    peer_ms: Vec<f64>,
    peer_vectors: Vec<Vec<f32>>,
    tract_ops: Option<Vec<onnx::OpTime>>,
    peer_ops: Option<Vec<onnx::OpTime>>,
}

/// Times one face at a time on this thread: every model given, each as written and as the
/// device runs it, in tract and in onnxruntime. Each round runs every graph over all the faces
/// in turn (as an indexer would, with its caches warm), tract then onnxruntime, so that a slow
/// spell of a shared machine spreads over all of them.
fn embed_table(opts: &BenchOptions, crops: &[Vec<u8>]) -> Result<(Vec<EmbedRow>, Option<String>)> {
    let scratch = tempfile_dir()?.join("graphs");
    std::fs::create_dir_all(&scratch)?;
    let mut variants = Vec::new();
    for (i, dir) in std::iter::once(&opts.model)
        .chain(&opts.compare)
        .enumerate()
    {
        let model = ModelManifest::load(dir)?;
        for form in [GraphForm::AsWritten, GraphForm::AsRun] {
            let embedder = match form {
                GraphForm::AsWritten => Embedder::load_as_written(&model),
                GraphForm::AsRun => Embedder::load(&model),
            }
            .with_context(|| format!("{}: cannot load the embedder", dir.display()))?;
            let onnx_file = match form {
                GraphForm::AsWritten => embedder.onnx_path.clone(),
                GraphForm::AsRun => {
                    let file = scratch.join(format!("{i}.onnx"));
                    let proto = onnx::rewritten_proto(&embedder.onnx_path)?;
                    std::fs::write(&file, prost::Message::encode_to_vec(&proto))?;
                    file
                }
            };
            variants.push(Variant {
                dir: dir.clone(),
                form,
                embedder,
                onnx_file,
                vectors: Vec::new(),
                tract_ms: Vec::new(),
                peer_ms: Vec::new(),
                peer_vectors: Vec::new(),
                tract_ops: None,
                peer_ops: None,
            });
        }
    }
    let spec = variants[0].embedder.spec;
    if let Some(v) = variants.iter().find(|v| v.embedder.spec != spec) {
        bail!(
            "{}: takes other input than {} ({:?} against {:?}); benchmark them separately",
            v.dir.display(),
            opts.model.display(),
            v.embedder.spec,
            spec
        );
    }
    // A first pass warms up every plan and keeps the embeddings.
    for v in &mut variants {
        for c in crops {
            v.vectors.push(v.embedder.embed(&[c.as_slice()])?);
        }
    }
    let peer_input = match &opts.python {
        Some(_) => Some(write_peer_input(&variants[0].embedder, crops)?),
        None => None,
    };
    let mut runtime = None;
    for round in 0..opts.rounds.max(1) {
        for v in &mut variants {
            for c in crops {
                let (ms, r) = time_ms(|| v.embedder.embed(&[c.as_slice()]));
                r?;
                v.tract_ms.push(ms);
            }
        }
        if let (Some(python), Some(input)) = (&opts.python, &peer_input) {
            let last = round + 1 == opts.rounds.max(1);
            let files: Vec<&Path> = variants.iter().map(|v| v.onnx_file.as_path()).collect();
            let peer = ort_embed(
                python,
                &files,
                input,
                &spec,
                crops.len(),
                opts.profile && last,
            )?;
            for (v, p) in variants.iter_mut().zip(peer.models) {
                v.peer_ms.extend(p.times_ms);
                v.peer_vectors = p.embeddings;
                v.peer_ops = p.profile;
            }
            runtime = Some(peer.runtime);
        }
    }
    if opts.profile {
        for v in &mut variants {
            v.tract_ops = Some(v.embedder.profile(&crops[0], PROFILE_RUNS)?);
        }
    }
    std::fs::remove_dir_all(&scratch).ok();
    if let Some(input) = peer_input {
        std::fs::remove_file(input).ok();
    }
    let min_cosine = |a: &[Vec<f32>], b: &[Vec<f32>]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| cosine(x, y))
            .fold(1.0f32, f32::min)
    };
    // Float graphs must give the same embeddings in both runtimes, or one of them runs the
    // model wrongly; int8 graphs may not (each runtime rounds its own way: QLinearConv's 50
    // requantizations put them at cosine 0.97).
    for v in variants.iter().filter(|v| !v.embedder.quantized) {
        let agreement = min_cosine(&v.vectors, &v.peer_vectors);
        if !v.peer_vectors.is_empty() && agreement < FLOAT_AGREEMENT {
            bail!(
                "{} ({}): tract and onnxruntime disagree on the same input (cosine {agreement}): the model is not run correctly",
                v.dir.display(),
                v.form.label()
            );
        }
    }
    // The first model as the device runs it.
    let reference = variants[1].vectors.clone();
    let rows = variants
        .into_iter()
        .map(|v| EmbedRow {
            name: v.embedder.name.clone(),
            model: v.dir,
            graph: v.form,
            tract_ms: median(v.tract_ms),
            onnxruntime_ms: (!v.peer_ms.is_empty()).then(|| median(v.peer_ms)),
            min_cosine_to_first: min_cosine(&v.vectors, &reference),
            min_cosine_to_first_onnxruntime: (!v.peer_vectors.is_empty())
                .then(|| min_cosine(&v.peer_vectors, &reference)),
            min_cosine_tract_vs_onnxruntime: (!v.peer_vectors.is_empty())
                .then(|| min_cosine(&v.vectors, &v.peer_vectors)),
            tract_ops: v.tract_ops,
            onnxruntime_ops: v.peer_ops,
        })
        .collect();
    Ok((rows, runtime))
}

/// Lowest cosine between tract's and onnxruntime's embeddings of a float graph.
const FLOAT_AGREEMENT: f32 = 0.999;

/// Runs of one face behind each operator time of `--profile`.
const PROFILE_RUNS: usize = 20;

/// Writes the embedder's input tensors of `crops` as raw float32 for the peer.
fn write_peer_input(embedder: &Embedder, crops: &[Vec<u8>]) -> Result<PathBuf> {
    let crops: Vec<&[u8]> = crops.iter().map(Vec::as_slice).collect();
    let input = embedder.input_tensor(&crops)?;
    let path = std::env::temp_dir().join(format!("smoothface-bench-{}.f32", std::process::id()));
    std::fs::write(
        &path,
        db::to_blob(input.try_as_plain_ram()?.as_slice::<f32>()?),
    )?;
    Ok(path)
}

/// What the peer reports of one model.
#[derive(Deserialize)]
struct PeerModel {
    times_ms: Vec<f64>,
    embeddings: Vec<Vec<f32>>,
    profile: Option<Vec<onnx::OpTime>>,
}

#[derive(Deserialize)]
struct PeerEmbed {
    runtime: String,
    models: Vec<PeerModel>,
}

/// The peer's script, part of the binary so that `bench` runs outside the source tree; it is
/// handed to Python on standard input.
const PEER_SCRIPT: &str = include_str!("../../../bench/ort_peer.py");

/// Runs the peer script with `args` (and the environment variables `env`), returning the JSON
/// object it prints.
fn run_python(python: &Path, args: &[String], env: &[(&str, String)]) -> Result<serde_json::Value> {
    let cannot = || {
        format!(
            "{}: cannot run the peer (run scripts/setup --bench)",
            python.display()
        )
    };
    let mut child = Command::new(python)
        .arg("-")
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(cannot)?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(PEER_SCRIPT.as_bytes())
        .with_context(cannot)?;
    let out = child.wait_with_output().with_context(cannot)?;
    if !out.status.success() {
        bail!("the peer failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn ort_embed(
    python: &Path,
    models: &[&Path],
    input: &Path,
    spec: &InputSpec,
    n: usize,
    profile: bool,
) -> Result<PeerEmbed> {
    let s = spec.size;
    let shape = match spec.layout {
        Layout::Nchw => format!("3,{s},{s}"),
        Layout::Nhwc => format!("{s},{s},3"),
    };
    let mut args = vec!["embed".to_string()];
    for m in models {
        args.extend(["--model".to_string(), m.display().to_string()]);
    }
    args.extend([
        "--input".into(),
        input.display().to_string(),
        "--n".into(),
        n.to_string(),
        "--shape".into(),
        shape,
    ]);
    if profile {
        args.push("--profile".into());
    }
    let peer: PeerEmbed = serde_json::from_value(run_python(python, &args, &[])?)
        .context("the peer's output is not what this version of smoothface expects")?;
    if peer.models.len() != models.len() || peer.models.iter().any(|m| m.embeddings.len() != n) {
        bail!("the peer did not report every model and face");
    }
    Ok(peer)
}

/// Grouping on synthetic faces: `people` people of `faces / people` faces each, 512-d (the
/// embedder's size), a face `centre + 0.8 noise` normalised (two faces of a person about 0.6
/// similar, as ArcFace's are), in a shuffled order as in a library. Ours and the Immich rule,
/// from scratch over `faces`, then `add` more faces (of the same people and of new ones) grouped
/// against what each made.
pub fn grouping(faces: usize, add: usize, dim: usize) -> Vec<Row> {
    use crate::people::{ente, immich, linkage, Gallery, Grouping};
    let each = 20;
    let total = faces + add;
    let people = total.div_ceil(each);
    let centres: Vec<Vec<f32>> = (0..people).map(|p| m_row(dim, 1_000_000_000 + p)).collect();
    // Face i is of person (i * a prime) mod people: people spread all over the gallery.
    let data: Vec<f32> = (0..total)
        .flat_map(|i| {
            let noise = m_row(dim, i);
            let c = &centres[(i * 7919) % people];
            let mut v: Vec<f32> = c.iter().zip(&noise).map(|(c, n)| c + 0.8 * n).collect();
            l2_normalize(&mut v);
            v
        })
        .collect();
    let first = &data[..faces * dim];
    let scratch = Gallery::from_scratch(first, dim);
    let incremental = |made: &Grouping| {
        let mut person = vec![None; total];
        for (p, rows) in made.new_people.iter().enumerate() {
            for &r in rows {
                person[r as usize] = Some(p as i64);
            }
        }
        Gallery {
            data: &data,
            dim,
            person,
            pending: made
                .unassigned
                .iter()
                .copied()
                .chain(faces as u32..total as u32)
                .collect(),
            rejected: Default::default(),
            seen: Vec::new(),
        }
    };
    // The synthetic people (centre + 0.8 noise: same-person pairs about 0.6, others about 0)
    // are apart at any threshold between; this is the first calibrated model's (MobileFaceNet
    // on lfw-devtrain), kept so that timings compare across runs.
    // Ours as a new gallery runs it: the default embedder's calibrated grouping (two passes).
    let pinned: ModelManifest =
        serde_json::from_str(crate::models::PINNED[0].1).expect("the pinned manifests parse");
    let ours_config = linkage::LinkageConfig::for_model(
        &pinned
            .thresholds
            .unwrap_or(smoothface_shared::manifest::Thresholds::FALLBACK),
    );
    let immich_config = immich::ImmichConfig::default();
    let (ours_ms, ours) = time_ms(|| linkage::group(&scratch, &ours_config));
    let (immich_ms, theirs) = time_ms(|| immich::group(&scratch, &immich_config));
    let (ours_add, theirs_add) = (incremental(&ours), incremental(&theirs));
    let ours_add_ms = time_ms(|| linkage::group(&ours_add, &ours_config)).0;
    let immich_add_ms = time_ms(|| immich::group(&theirs_add, &immich_config)).0;
    let peer = Some("Immich rule, same vectors".to_string());
    // Ente's HDBSCAN builds a spanning tree over every pair of faces (its time grows with the
    // square of the faces) and clusters the whole gallery again each time: it is timed from
    // scratch on at most the first ENTE_FACES faces.
    const ENTE_FACES: usize = 10_000;
    let few = faces.min(ENTE_FACES);
    let scratch_few = Gallery::from_scratch(&data[..few * dim], dim);
    let ours_few_ms = time_ms(|| linkage::group(&scratch_few, &ours_config)).0;
    let ente_ms = time_ms(|| ente::group(&scratch_few, &ente::EnteConfig::default())).0;
    vec![
        Row {
            what: format!("group {few} faces from scratch (the first of them)"),
            ours_ms: ours_few_ms,
            peer_ms: Some(ente_ms),
            peer: Some("Ente's HDBSCAN, same vectors".to_string()),
        },
        Row {
            what: format!(
                "group {faces} faces from scratch ({} people of {each}, 512-d synthetic)",
                faces / each
            ),
            ours_ms,
            peer_ms: Some(immich_ms),
            peer: peer.clone(),
        },
        Row {
            what: format!("add {add} faces to the {faces}-face gallery"),
            ours_ms: ours_add_ms,
            peer_ms: Some(immich_add_ms),
            peer,
        },
    ]
}

/// One clip's video timings: our decoder beside the ffmpeg command's on the same sampled
/// frames, and the whole analysis (decode, detect, embed, track) that `index` runs.
#[cfg(feature = "video")]
#[derive(Debug, Clone, Serialize)]
pub struct VideoRow {
    /// The clip.
    pub clip: PathBuf,
    /// Frame width and height.
    pub size: String,
    /// Its length, seconds.
    pub duration_s: f64,
    /// Frames decoded (sampled or not) by our decoder.
    pub decoded_frames: usize,
    /// Frames sampled.
    pub sampled_frames: usize,
    /// Ours: decoding the sampled frames to RGB, milliseconds (median of the rounds).
    pub decode_ms: f64,
    /// The peer: `ffmpeg -i CLIP -vf fps=F,format=rgb24 -f null -`, milliseconds (median).
    pub ffmpeg_decode_ms: Option<f64>,
    /// The whole analysis, milliseconds (median).
    pub analyse_ms: f64,
    /// Sampled frames analysed per second of wall time: the photos-equivalent throughput.
    pub frames_per_s: f64,
    /// Seconds of video indexed per second of wall time.
    pub video_s_per_s: f64,
    /// Share of the analysis time that decoding takes (decode_ms / analyse_ms).
    pub decode_share: f64,
}

/// Times each clip `rounds` times: our sampled decoding, the ffmpeg command's (unless
/// `no_peer`), and the whole analysis.
#[cfg(feature = "video")]
pub fn video(
    pipeline: &Pipeline,
    clips: &[PathBuf],
    sampling: Sampling,
    rounds: usize,
    no_peer: bool,
) -> Result<Vec<VideoRow>> {
    use crate::video::decode::VideoFile;
    let mut rows = Vec::new();
    for clip in clips {
        let (decode_ms, info) = median_of_rounds(rounds, || -> Result<_> {
            let mut v = VideoFile::open(clip, sampling, pipeline.max_pixels)?;
            while v.next_sample()?.is_some() {}
            Ok(v.info().clone())
        })?;
        let peer = if no_peer {
            None
        } else {
            let (ms, ()) = median_of_rounds(rounds, || {
                let status = std::process::Command::new("ffmpeg")
                    .args(["-loglevel", "error", "-nostdin", "-i"])
                    .arg(clip)
                    .args(["-vf", &format!("fps={},format=rgb24", sampling.fps)])
                    .args(["-f", "null", "-"])
                    .status()
                    .context(
                        "cannot run the ffmpeg command (the peer): install it, or pass --no-peer",
                    )?;
                anyhow::ensure!(status.success(), "ffmpeg failed on {}", clip.display());
                Ok(())
            })?;
            Some(ms)
        };
        let (analyse_ms, _) = median_of_rounds(rounds, || {
            Ok(crate::video::analyse(
                pipeline,
                clip,
                sampling,
                crate::tracks::TrackerConfig::for_model(&pipeline.embedder.thresholds),
            )?)
        })?;
        let duration_s = info.duration_s.unwrap_or(0.0);
        rows.push(VideoRow {
            clip: clip.clone(),
            size: format!("{}x{}", info.width, info.height),
            duration_s,
            decoded_frames: info.decoded,
            sampled_frames: info.sampled,
            decode_ms,
            ffmpeg_decode_ms: peer,
            analyse_ms,
            frames_per_s: info.sampled as f64 / (analyse_ms / 1e3),
            video_s_per_s: duration_s / (analyse_ms / 1e3),
            decode_share: decode_ms / analyse_ms,
        });
    }
    Ok(rows)
}
