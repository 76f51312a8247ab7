//! `smoothface bench`: speed, each stage beside a peer (onnxruntime, faiss, numpy, the
//! reference MTCNN, the ffmpeg command) in the same run; [`tables`] prints the results.

mod tables;

use super::{report, Global};
use anyhow::{bail, Context, Result};
use smoothface_device::bench;
use smoothface_device::detector::Detector;
use smoothface_device::models;
use smoothface_shared::manifest::ModelManifest;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Measure speed, each stage beside a peer (onnxruntime, faiss, numpy) in the same run
#[derive(clap::Args)]
pub struct Args {
    /// Folder of face photos [default: $SMOOTHFACE_FACES/lfw-devtrain]
    #[arg(long, value_name = "DIR")]
    pub photos: Option<PathBuf>,
    /// Faces timed for embedding
    #[arg(long, default_value_t = 50, value_name = "N")]
    pub faces: usize,
    /// Photo sizes timed for decode + detect, one row each: `as-taken` (the files of
    /// --photos) or WIDTHxHEIGHT (those photos resized and written as JPEG once)
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "as-taken,500x400,4032x3024",
        value_name = "SIZE,SIZE,..."
    )]
    pub detect_sizes: Vec<bench::detect::PhotoSize>,
    /// Photos timed for decode + detect at each size up to 2 megapixels
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub detect_photos: usize,
    /// Photos timed at larger sizes (the reference MTCNN takes seconds for each)
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub detect_large_photos: usize,
    /// Detection sides compared on 12-megapixel group photos: the faces each finds of those
    /// found at full size, and its time (0: skip)
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "640,800,1024,1280",
        value_name = "PX,PX,..."
    )]
    pub detect_sides: Vec<u32>,
    /// Tile sizes of the group photos: the benchmark photos resized to this side and tiled
    /// into a 4032x3024 frame, one row each (LFW's faces are then about 0.4 of it wide)
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "100,150,250",
        value_name = "PX,PX,..."
    )]
    pub group_tiles: Vec<u32>,
    /// Group photos made at each tile size
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub group_photos: usize,
    /// Only the detection timing (ours beside the detector's peer)
    #[arg(long)]
    pub detect_only: bool,
    /// With --detect-only, a second detector (a model folder or an installed model's name,
    /// such as scrfd) timed beside --detector's on the same photos, each beside its peer, and
    /// compared with it: the faces both find, their landmarks' distance, and both detectors
    /// at each --detect-sides on the group photos
    #[arg(long, value_name = "DIR|NAME", requires = "detect_only")]
    pub detect_compare: Option<PathBuf>,
    /// Only the end-to-end timing (`index` beside the reference pipeline)
    #[arg(long)]
    e2e_only: bool,
    /// Photos indexed for the end-to-end rate
    #[arg(long, default_value_t = 200, value_name = "N")]
    e2e_photos: usize,
    /// Gallery sizes for the search timing: the real faces of --search-photos, then
    /// synthetic faces drawn to match their statistics
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "10000,100000,1000000",
        value_name = "N,N,..."
    )]
    pub search_sizes: Vec<usize>,
    /// Photos of --photos embedded for the search timing's real faces and queries
    #[arg(long, default_value_t = 2000, value_name = "N")]
    pub search_photos: usize,
    /// Queries timed at each gallery size: held-out photos of people with another photo in
    /// the gallery
    #[arg(long, default_value_t = 50, value_name = "N")]
    pub search_queries: usize,
    /// Only the search timing (exact and compact, beside faiss and numpy)
    #[arg(long)]
    pub search_only: bool,
    /// Another embedder folder timed beside --model, each as written and as the device runs
    /// it, in tract and onnxruntime (repeat: an export, its int8 quantization)
    #[arg(long, value_name = "DIR")]
    pub compare: Vec<PathBuf>,
    /// Rounds of the embedding timing: each times every face once in every graph and runtime
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub rounds: usize,
    /// Also time every operator of each embedder graph, in tract and onnxruntime
    #[arg(long)]
    pub profile: bool,
    /// Python with onnxruntime, faiss and numpy [default: .venv-bench/bin/python in the
    /// current folder, made by `scripts/setup --bench` in the source tree]
    #[arg(long, value_name = "PYTHON")]
    pub python: Option<PathBuf>,
    /// Faces grouped into people from scratch, ours beside the Immich rule, and beside
    /// Ente's HDBSCAN on at most 10,000 of them (synthetic 512-d vectors; 0 skips)
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    pub grouping_faces: usize,
    /// Faces then added to that gallery, grouped incrementally
    #[arg(long, default_value_t = 1_000, value_name = "N")]
    pub grouping_add: usize,
    /// Only the grouping timing (no photos, models or peers needed)
    #[arg(long)]
    pub grouping_only: bool,
    /// Only the video timings, on these clips (scripts/make-clip makes some): our decoder
    /// beside the ffmpeg command's, and the whole analysis
    #[arg(long, value_delimiter = ',', value_name = "CLIP,CLIP,...")]
    pub videos: Vec<PathBuf>,
    /// Skip the peers
    #[arg(long)]
    pub no_peer: bool,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

/// Times what the flags ask for (everything by default) and prints the tables.
pub fn run(g: &Global, a: &Args) -> Result<ExitCode> {
    let Args {
        photos,
        faces,
        detect_sizes,
        detect_photos,
        detect_large_photos,
        detect_sides,
        group_tiles,
        group_photos,
        detect_only,
        detect_compare,
        e2e_only,
        e2e_photos,
        search_sizes,
        search_photos,
        search_queries,
        search_only,
        compare,
        rounds,
        profile,
        grouping_faces,
        grouping_add,
        grouping_only,
        videos,
        python,
        no_peer,
        json,
    } = a;
    if !videos.is_empty() {
        return videos_table(g, videos, *rounds, *no_peer, *json);
    }
    if *grouping_only {
        let rows = bench::grouping(*grouping_faces, *grouping_add, 512);
        return report(*json, &rows, |rows| tables::rows(rows));
    }
    let python = match (no_peer, python) {
        (true, _) => None,
        (false, Some(p)) => Some(p.clone()),
        (false, None) => {
            let venv = PathBuf::from(".venv-bench/bin/python");
            if !venv.exists() {
                bail!("no benchmark Python at {} in the current folder: run `scripts/setup --bench` in the source tree and bench from there, pass --python, or --no-peer", venv.display());
            }
            Some(venv)
        }
    };
    let photos = match photos {
        Some(p) => p.clone(),
        None => std::env::var_os("SMOOTHFACE_FACES")
            .map(|f| Path::new(&f).join("lfw-devtrain"))
            .context("no photos to time: pass --photos DIR or set SMOOTHFACE_FACES")?,
    };
    let search = bench::search::SearchOptions {
        sizes: search_sizes.clone(),
        real_photos: *search_photos,
        queries: *search_queries,
    };
    let detect = bench::detect::DetectOptions {
        sizes: detect_sizes.clone(),
        photos: *detect_photos,
        large_photos: *detect_large_photos,
        rounds: *rounds,
        sides: detect_sides.iter().copied().filter(|&s| s > 0).collect(),
        group_tiles: group_tiles.clone(),
        group_photos: *group_photos,
    };
    if *e2e_only {
        let files = bench::photo_files(&photos, *e2e_photos)?;
        let r = bench::end_to_end(&g.pipeline()?, &files, python.as_deref())?;
        return report(*json, &r, tables::end_to_end);
    }
    if *detect_only {
        let wanted = (*detect_photos).max(*detect_large_photos);
        let files = bench::photo_files(&photos, wanted)?;
        let compare = match detect_compare {
            Some(dir) => {
                let dir = models::given_folder(dir, "--detect-compare", &g.places())?;
                Some(Detector::load(
                    &ModelManifest::load(&dir)?,
                    g.detector_config()?,
                )?)
            }
            None => None,
        };
        let pipeline = g.pipeline()?;
        let r = bench::detect::run(
            &pipeline,
            compare.as_ref(),
            &files,
            &detect,
            python.as_deref(),
        )?;
        return report(*json, &r, tables::detection);
    }
    if *search_only {
        let r = bench::search::run(&g.pipeline()?, &photos, &search, python.as_deref())?;
        return report(*json, &r, tables::search);
    }
    let opts = bench::BenchOptions {
        model: g.model_dir()?,
        compare: compare.clone(),
        rounds: *rounds,
        profile: *profile,
        photos,
        faces: *faces,
        e2e_photos: *e2e_photos,
        detect,
        search,
        python,
        grouping_faces: *grouping_faces,
        grouping_add: *grouping_add,
    };
    let r = bench::run(&g.pipeline()?, &opts)?;
    report(*json, &r, tables::all)
}

/// The video timings beside their peers', in Markdown.
#[cfg(feature = "video")]
fn videos_table(
    g: &Global,
    clips: &[PathBuf],
    rounds: usize,
    no_peer: bool,
    json: bool,
) -> Result<ExitCode> {
    let pipeline = g.pipeline()?;
    let rows = bench::video(
        &pipeline,
        clips,
        smoothface_device::frames::Sampling::DEFAULT,
        rounds,
        no_peer,
    )?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("| clip | frames sampled / decoded | decode (ours) | decode (ffmpeg command) | whole analysis | sampled frames/s | video s per s | decode share |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} {} {:.0} s | {} / {} | {:.0} ms | {} | {:.0} ms | {:.2} | {:.2} | {:.0}% |",
            r.clip.file_name().map_or_else(
                || r.clip.display().to_string(),
                |n| n.to_string_lossy().into_owned()
            ),
            r.size,
            r.duration_s,
            r.sampled_frames,
            r.decoded_frames,
            r.decode_ms,
            r.ffmpeg_decode_ms
                .map_or("-".into(), |v| format!("{v:.0} ms")),
            r.analyse_ms,
            r.frames_per_s,
            r.video_s_per_s,
            100.0 * r.decode_share
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(not(feature = "video"))]
fn videos_table(_: &Global, _: &[PathBuf], _: usize, _: bool, _: bool) -> Result<ExitCode> {
    anyhow::bail!("this smoothface was built without video support (the `video` feature)")
}
