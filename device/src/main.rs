//! `smoothface`: index a photo library by face and search it, on the device.
//!
//! The command line alone: the clap definitions (every `--help` page; `docs/` shows them and
//! `tests/tests/docs_flags.rs` checks that every flag the docs show exists here) and the glue that
//! calls the `smoothface_device` library, where every job lives (start at its `lib.rs`).

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use rusqlite::Connection;
use serde_json::json;
use smoothface_device::bench;
use smoothface_device::detector::{Detector, DetectorConfig};
use smoothface_device::embedder::Embedder;
use smoothface_device::eval::ijbc;
use smoothface_device::eval::ijbc_fixture::{self, FixtureOptions};
use smoothface_device::eval::{self, RECALL_KS};
use smoothface_device::frames::Sampling;
use smoothface_device::gallery::db::TrackSpan;
use smoothface_device::gallery::{db, index, model as gallery_model, search::FaceMatrix, switch};
use smoothface_device::media::{self, DEFAULT_MAX_PIXELS};
use smoothface_device::models::{self, ModelPlaces};
use smoothface_device::people::ente::EnteConfig;
use smoothface_device::people::fusion::Fusion;
use smoothface_device::people::immich::ImmichConfig;
use smoothface_device::people::linkage::LinkageConfig;
use smoothface_device::people::names::printable;
use smoothface_device::people::store::{self as people_store, Eligibility, Whose};
use smoothface_device::people::{decisions, evaluation, names};
use smoothface_device::pipeline::{FacePick, Pipeline};
use smoothface_device::serve;
use smoothface_device::thumbs::Cache;
use smoothface_shared::ijb::cli::IjbcArgs;
use smoothface_shared::manifest::{ModelManifest, Thresholds};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// Exit code of a run that finished but could not read some inputs.
const EXIT_PARTIAL: u8 = 3;

#[derive(Parser)]
#[command(
    name = "smoothface",
    version,
    about = "Find every photo and video of a person in your own library, on this machine.",
    long_about = "Find every photo and video of a person in your own library, on this machine.\n\n\
        smoothface detects faces (MTCNN), aligns them to the ArcFace template and embeds them \
        (an ArcFace model run by tract), links a video's faces into tracks, keeps the gallery in \
        SQLite, and ranks the whole gallery by identity. Nothing leaves the machine.\n\n\
        Start with:\n  smoothface index ~/Pictures\n  smoothface search photo-of-her.jpg\n\n\
        Exit status: 0 success, 1 error, 2 bad usage, 3 finished but some files could not be read (each is \
        listed with its cause).",
    after_help = "Models are looked for in --models, $SMOOTHFACE_MODELS, models/ beside the \
        executable, then ~/.local/share/smoothface/models (see `smoothface models list`); the \
        gallery lives in $SMOOTHFACE_DB or ~/.local/share/smoothface/gallery.sqlite unless --db \
        says otherwise."
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Global {
    /// Folder of model folders, searched first for the default models
    #[arg(long, global = true, value_name = "DIR")]
    models: Option<PathBuf>,
    /// Embedder: a model folder (ONNX + manifest.json) or an installed model's name:
    /// w600k_mbf (the default: insightface's ArcFace MobileFaceNet, weights for non-commercial
    /// research use) or mobilefacenet (MIT)
    #[arg(long, global = true, value_name = "DIR|NAME")]
    model: Option<PathBuf>,
    /// Detector: a model folder or an installed model's name: mtcnn (the default) or scrfd
    #[arg(long, global = true, value_name = "DIR|NAME")]
    detector: Option<PathBuf>,
    /// Gallery database [default: $SMOOTHFACE_DB or ~/.local/share/smoothface/gallery.sqlite]
    #[arg(long, global = true, value_name = "FILE")]
    db: Option<PathBuf>,
    /// Smallest face to find, in pixels (smaller is slower)
    #[arg(long, global = true, default_value_t = 20.0, value_name = "PX")]
    min_face: f32,
    /// Detect images whose longest side is larger on a copy reduced to this side, faster: a
    /// 12-megapixel group photo at 800 is detected in a quarter of the time, finding 97% of its
    /// faces 50 px wide and more but three quarters of those 20-49 px (`bench --detect-only`
    /// measures it); 0: detect every image at its own size
    #[arg(long, global = true, default_value_t = smoothface_device::mtcnn::DEFAULT_MAX_SIDE, value_name = "PX")]
    detect_side: u32,
    /// Refuse images with more pixels than this (decompression bombs)
    #[arg(long, global = true, default_value_t = DEFAULT_MAX_PIXELS, value_name = "PIXELS")]
    max_pixels: u64,
    /// Worker threads [default: one per core]
    #[arg(long, global = true, value_name = "N")]
    threads: Option<usize>,
    /// No progress bars
    #[arg(long, short, global = true)]
    quiet: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Add the photos and videos under folders to the gallery (recursive, incremental, resumable)
    #[command(
        long_about = "Add the photos and videos under folders to the gallery (recursive, \
        incremental, resumable).\n\nPhotos: every face. Videos (mp4, mov, m4v, mkv, webm, avi, 3gp): \
        frames are sampled (--video-fps), their faces linked into tracks across frames, and each \
        track is stored as one face with the time it is on screen, so a search finds the video \
        and when. Unchanged files are skipped, moved ones recognised by content; files that \
        cannot be read are listed with the cause (exit status 3) and the run goes on."
    )]
    Index {
        /// Folders (or single files' folders) to index
        #[arg(required = true, value_name = "DIR")]
        dirs: Vec<PathBuf>,
        #[command(flatten)]
        grouping: GroupingArgs,
        #[command(flatten)]
        video: VideoArgs,
        /// Print the run's report as JSON
        #[arg(long)]
        json: bool,
    },
    /// Rank the gallery's photos and videos by how much their best face looks like the query's
    /// face, or like a person's faces (--person); a video hit says when the face is on screen
    Search {
        /// Photo of the person to look for
        #[arg(required_unless_present = "person", conflicts_with = "person")]
        photo: Option<PathBuf>,
        /// Search for a person of the gallery (id or name) from all of their faces: their photos
        /// first, then the others ranked ("is this her too?")
        #[arg(long, value_name = "PERSON")]
        person: Option<String>,
        /// Which face of the query photo, 0 being the largest (see `smoothface detect`)
        #[arg(long, default_value_t = 0, value_name = "N")]
        face: usize,
        /// How many photos to list (0: all); with --person, how many beyond the person's own
        #[arg(long, default_value_t = 20, value_name = "K")]
        top: usize,
        /// Only photos whose best face has at least this cosine similarity
        #[arg(long, default_value_t = -1.0, value_name = "S", allow_negative_numbers = true)]
        min_score: f32,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Find the faces of images: boxes, five landmarks, scores (largest face first)
    Detect {
        /// Images
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<PathBuf>,
        /// Also compute each face's embedding
        #[arg(long)]
        embeddings: bool,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Serve the gallery to a browser: a web app and a JSON API, on this machine only unless
    /// told otherwise
    #[command(
        long_about = "Serve the gallery to a browser: a web app (browse, search by photo, name, \
        merge and correct people) and the JSON API it uses (listed in docs/api.md).\n\n\
        Listens on 127.0.0.1:8080 unless --listen says otherwise; any address but loopback needs \
        --token-file, and every request then carries the token (a bearer header, or the cookie \
        of the login page). --library folders are indexed in the background at start and on \
        request (the page's Index button, POST /api/index) while searches go on. Uploaded \
        photos are searched in memory and not stored (unless `?keep=true` asks). The first line on stdout says where it \
        listens; Ctrl-C stops it.",
        after_help = "Examples:\n  smoothface serve --library ~/Pictures\n  \
        smoothface serve --listen 0.0.0.0:8080 --token-file ~/.config/smoothface/token --library /photos"
    )]
    Serve {
        /// Address and port to listen on (port 0: any free port)
        #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR:PORT")]
        listen: std::net::SocketAddr,
        /// File whose first line is the token every request must carry (at least 16
        /// characters, readable only by you); required for any address but loopback
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// Folders to index in the background, at start and on request
        #[arg(long = "library", value_name = "DIR", num_args = 1..)]
        libraries: Vec<PathBuf>,
        /// Largest photo upload accepted, in megabytes
        #[arg(long, default_value_t = 20, value_name = "MB")]
        max_upload: usize,
        #[command(flatten)]
        grouping: GroupingArgs,
        #[command(flatten)]
        video: VideoArgs,
    },
    /// What the gallery holds
    Stats {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Delete photos (a file, or every photo under a folder) and their faces from the gallery
    Forget {
        /// Files or folders, as they were indexed
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Write the aligned 112x112 crop of one face per photo, mirroring a folder tree (training data)
    Align {
        /// Folder of photos (for training: one sub-folder per person)
        input: PathBuf,
        /// Folder for the crops (PNG, same relative paths); existing crops are kept
        output: PathBuf,
        /// Which face of each photo: largest, or central (nearest the image centre)
        #[arg(long, default_value = "largest", value_parser = face_pick, value_name = "PICK")]
        face: FacePick,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// The people of the gallery: list, name, merge, split, move, reject, undo
    #[command(subcommand)]
    People(PeopleCommand),
    /// Live faces: list the cameras, enrol a person from a camera, or watch and name who is seen
    #[command(
        group(clap::ArgGroup::new("mode").required(true).args(["list", "enrol", "watch"])),
        long_about = "Live faces from a camera (V4L2), or from a video file or a folder of images \
            (--source), which behave like a camera that never drops a frame.\n\n\
            --enrol NAME captures --frames frames, keeps those with one large, sharp face, and \
            stores the mean of their embeddings as the person NAME (a person of the gallery, or a \
            new one).\n\n\
            --watch tracks the faces of every frame and prints one JSON line per event: a track \
            appeared, was identified as someone else, or left; each with time, track, box, \
            person (a named person scoring at least --min-score, else null), score, and \
            best_media (the gallery file whose face it looks most like). When the analysis is \
            slower than the camera, frames are dropped, never queued.",
        after_help = "Examples:\n  smoothface camera --list\n  smoothface camera --enrol Anna --frames 30\n  \
            smoothface camera --watch --device 1\n  smoothface camera --watch --source doorbell.mp4"
    )]
    Camera {
        /// List the cameras (an empty list when there is none)
        #[arg(long)]
        list: bool,
        /// Enrol a person under this name from the camera's frames
        #[arg(long, value_name = "NAME")]
        enrol: Option<String>,
        /// Watch: track every face and say who it is, one JSON line per event
        #[arg(long)]
        watch: bool,
        /// Which camera (see --list)
        #[arg(long, default_value_t = 0, value_name = "N")]
        device: u32,
        /// Read frames from a video file or a folder of images instead of a camera
        #[arg(long, value_name = "FILE", conflicts_with = "device")]
        source: Option<PathBuf>,
        /// Frames looked at for --enrol
        #[arg(long, default_value_t = 20, value_name = "N")]
        frames: usize,
        /// Blurrier frames are not enrolled (variance of the Laplacian of the aligned face)
        #[arg(long, default_value_t = smoothface_device::watch::EnrolQuality::DEFAULT.min_sharpness, value_name = "S")]
        min_sharpness: f32,
        /// Frames per second taken from a --source video (a folder: shown at this rate)
        #[arg(long, default_value_t = 5.0, value_name = "FPS")]
        fps: f64,
        /// Smallest cosine similarity to a named person for --watch to name a track
        /// [default: the embedder's calibrated `identify` threshold, from its manifest]
        #[arg(long, value_name = "S", allow_negative_numbers = true)]
        min_score: Option<f32>,
        /// Print --list and --enrol as JSON (--watch always prints JSON lines)
        #[arg(long)]
        json: bool,
    },
    /// Find, list and install the models
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Measure accuracy on labelled photos
    #[command(subcommand)]
    Eval(EvalCommand),
    /// Measure speed, each stage beside a peer (onnxruntime, faiss, numpy) in the same run
    Bench {
        /// Folder of face photos [default: $SMOOTHFACE_FACES/lfw-devtrain]
        #[arg(long, value_name = "DIR")]
        photos: Option<PathBuf>,
        /// Faces timed for embedding
        #[arg(long, default_value_t = 50, value_name = "N")]
        faces: usize,
        /// Photo sizes timed for decode + detect, one row each: `as-taken` (the files of
        /// --photos) or WIDTHxHEIGHT (those photos resized and written as JPEG once)
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "as-taken,500x400,4032x3024",
            value_name = "SIZE,SIZE,..."
        )]
        detect_sizes: Vec<bench::detect::PhotoSize>,
        /// Photos timed for decode + detect at each size up to 2 megapixels
        #[arg(long, default_value_t = 100, value_name = "N")]
        detect_photos: usize,
        /// Photos timed at larger sizes (the reference MTCNN takes seconds for each)
        #[arg(long, default_value_t = 5, value_name = "N")]
        detect_large_photos: usize,
        /// Detection sides compared on 12-megapixel group photos: the faces each finds of those
        /// found at full size, and its time (0: skip)
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "640,800,1024,1280",
            value_name = "PX,PX,..."
        )]
        detect_sides: Vec<u32>,
        /// Tile sizes of the group photos: the benchmark photos resized to this side and tiled
        /// into a 4032x3024 frame, one row each (LFW's faces are then about 0.4 of it wide)
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "100,150,250",
            value_name = "PX,PX,..."
        )]
        group_tiles: Vec<u32>,
        /// Group photos made at each tile size
        #[arg(long, default_value_t = 2, value_name = "N")]
        group_photos: usize,
        /// Only the detection timing (ours beside the detector's peer)
        #[arg(long)]
        detect_only: bool,
        /// With --detect-only, a second detector (a model folder or an installed model's name,
        /// such as scrfd) timed beside --detector's on the same photos, each beside its peer, and
        /// compared with it: the faces both find, their landmarks' distance, and both detectors
        /// at each --detect-sides on the group photos
        #[arg(long, value_name = "DIR|NAME", requires = "detect_only")]
        detect_compare: Option<PathBuf>,
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
        search_sizes: Vec<usize>,
        /// Photos of --photos embedded for the search timing's real faces and queries
        #[arg(long, default_value_t = 2000, value_name = "N")]
        search_photos: usize,
        /// Queries timed at each gallery size: held-out photos of people with another photo in
        /// the gallery
        #[arg(long, default_value_t = 50, value_name = "N")]
        search_queries: usize,
        /// Only the search timing (exact and compact, beside faiss and numpy)
        #[arg(long)]
        search_only: bool,
        /// Another embedder folder timed beside --model, each as written and as the device runs
        /// it, in tract and onnxruntime (repeat: an export, its int8 quantization)
        #[arg(long, value_name = "DIR")]
        compare: Vec<PathBuf>,
        /// Rounds of the embedding timing: each times every face once in every graph and runtime
        #[arg(long, default_value_t = 3, value_name = "N")]
        rounds: usize,
        /// Also time every operator of each embedder graph, in tract and onnxruntime
        #[arg(long)]
        profile: bool,
        /// Python with onnxruntime, faiss and numpy [default: .venv-bench/bin/python in the
        /// current folder, made by `scripts/setup --bench` in the source tree]
        #[arg(long, value_name = "PYTHON")]
        python: Option<PathBuf>,
        /// Faces grouped into people from scratch, ours beside the Immich rule, and beside
        /// Ente's HDBSCAN on at most 10,000 of them (synthetic 512-d vectors; 0 skips)
        #[arg(long, default_value_t = 100_000, value_name = "N")]
        grouping_faces: usize,
        /// Faces then added to that gallery, grouped incrementally
        #[arg(long, default_value_t = 1_000, value_name = "N")]
        grouping_add: usize,
        /// Only the grouping timing (no photos, models or peers needed)
        #[arg(long)]
        grouping_only: bool,
        /// Only the video timings, on these clips (scripts/make-clip makes some): our decoder
        /// beside the ffmpeg command's, and the whole analysis
        #[arg(long, value_delimiter = ',', value_name = "CLIP,CLIP,...")]
        videos: Vec<PathBuf>,
        /// Skip the peers
        #[arg(long)]
        no_peer: bool,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

/// How videos are sampled (`index`).
#[derive(Args, Clone)]
struct VideoArgs {
    /// Video frames analysed per second of video (the first frame always)
    #[arg(long, default_value_t = Sampling::DEFAULT.fps, value_name = "FPS")]
    video_fps: f64,
    /// Videos longer than this are sampled more sparsely, to cost what a video of this length does
    #[arg(long, default_value_t = Sampling::DEFAULT.max_duration_s / 3600.0, value_name = "HOURS")]
    video_max_hours: f64,
}

impl VideoArgs {
    fn sampling(&self) -> Result<Sampling> {
        Ok(Sampling {
            fps: positive("--video-fps", self.video_fps, "frames per second")?,
            max_duration_s: positive("--video-max-hours", self.video_max_hours, "hours")? * 3600.0,
        })
    }
}

/// A flag's value when it is a positive, finite number; else an error naming the flag.
fn positive(flag: &str, value: f64, unit: &str) -> Result<f64> {
    if value > 0.0 && value.is_finite() {
        Ok(value)
    } else {
        bail!("{flag} must be a positive number of {unit}: got {value}")
    }
}

/// How faces are grouped into people (`index`, `people update`, `eval people`).
#[derive(Args, Clone)]
struct GroupingArgs {
    /// Smallest mean cosine similarity of two groups of faces merged into one person (the
    /// first pass) [default: the embedder's calibrated `link`, from its manifest]
    #[arg(long, value_name = "S", allow_negative_numbers = true)]
    link_threshold: Option<f32>,
    /// The second pass: smallest similarity of two groups' mean faces for them to merge (0:
    /// no second pass) [default: the embedder's calibrated `link_relative`]
    #[arg(long, value_name = "S")]
    link_relative: Option<f32>,
    /// The second pass: smallest plain mean similarity of two groups that merge [default: the
    /// embedder's calibrated `link_floor`]
    #[arg(long, value_name = "S", allow_negative_numbers = true)]
    link_floor: Option<f32>,
    /// Faces a new person needs (fewer stay unassigned until more arrive)
    #[arg(long, default_value_t = LinkageConfig::MIN_FACES, value_name = "N")]
    person_min_faces: usize,
    /// Faces with a lower detector score are not grouped [default: the detector's
    /// `group_min_score` from its manifest: 0.95 for MTCNN, 0.6 for SCRFD]
    #[arg(long, value_name = "S")]
    group_min_score: Option<f32>,
    /// Faces whose box is smaller (shorter side, pixels) are not grouped
    #[arg(long, default_value_t = Eligibility::default().min_size, value_name = "PX")]
    group_min_size: f32,
}

impl GroupingArgs {
    /// Our grouping with the embedder's thresholds `t`, unless a flag says otherwise.
    fn linkage(&self, t: &Thresholds) -> Result<LinkageConfig> {
        let model = LinkageConfig::for_model(t);
        let threshold = self.link_threshold.unwrap_or(model.threshold);
        let relative = self.link_relative.or(model.relative).filter(|&r| r > 0.0);
        let floor = self.link_floor.unwrap_or(model.floor);
        for (flag, v) in [
            ("--link-threshold", threshold),
            ("--link-relative", relative.unwrap_or(0.0)),
            ("--link-floor", floor),
        ] {
            if !(-1.0..=1.0).contains(&v) {
                bail!("{flag} is a cosine similarity, between -1 and 1: got {v}");
            }
        }
        let base = match relative {
            Some(r) => LinkageConfig::two_pass(threshold, r, floor),
            None => LinkageConfig::at(threshold),
        };
        Ok(LinkageConfig {
            min_faces: self.person_min_faces,
            ..base
        })
    }

    /// Which faces are grouped; `detector_min_score` is the detector's own smallest score
    /// (its manifest's), used unless --group-min-score says otherwise.
    fn eligibility(&self, detector_min_score: f32) -> Eligibility {
        Eligibility {
            min_score: self.group_min_score.unwrap_or(detector_min_score),
            min_size: self.group_min_size,
        }
    }
}

#[derive(Subcommand)]
enum PeopleCommand {
    /// Every person: id, name, faces, photos, the face that stands for them
    List {
        /// List the faces that belong to nobody instead
        #[arg(long)]
        unassigned: bool,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// A person's faces: face id, photo, box, score
    Show {
        /// Person id or name
        person: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Name a person (or rename)
    Name {
        /// Person id or name
        person: String,
        /// The name
        name: String,
    },
    /// These are the same person: the others' faces go to the first (which keeps its name)
    Merge {
        /// Person id or name that stays
        person: String,
        /// People merged into it
        #[arg(required = true)]
        others: Vec<String>,
    },
    /// These two are different people: a "Same person?" suggestion answered no (undo with
    /// `people undo`). No suggestion pairs them again
    #[command(name = "keep-apart")]
    KeepApart {
        /// Person id or name
        person: String,
        /// The other person's id or name
        other: String,
    },
    /// These faces are someone else: move them from a person to a new one, or to the named one
    Split {
        /// Person id or name the faces are taken from
        person: String,
        /// Face ids (see `people show`)
        #[arg(long, required = true, value_delimiter = ',', value_name = "ID,...")]
        faces: Vec<i64>,
        /// Name of the person they are: an existing one, or a new one of this name
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
    },
    /// Move one face to a person
    Move {
        /// Face id (see `people show` or `people list --unassigned`)
        face: i64,
        /// Person id or name
        person: String,
    },
    /// These faces are not this person: they leave it, and no grouping puts them back
    Reject {
        /// Person id or name
        person: String,
        /// Face ids
        #[arg(long, required = true, value_delimiter = ',', value_name = "ID,...")]
        faces: Vec<i64>,
    },
    /// Pairs of people that may be one, best first: answer with `people merge A B` or
    /// `people keep-apart A B`
    #[command(
        long_about = "Pairs of people that may be one person, best first, for you to answer: \
        `smoothface people merge A B` (they are) or `smoothface people keep-apart A B` (they are \
        not; never suggested again). The score is how alike the two people's faces are, relative \
        to how alike each one's own faces are (1 at most). People with a face each in one photo \
        are never suggested."
    )]
    Suggest {
        /// How many pairs (0: every pair scoring above zero)
        #[arg(long, default_value_t = 20, value_name = "N")]
        top: usize,
        /// Print JSON: a, b, score, a_face, b_face
        #[arg(long)]
        json: bool,
    },
    /// Revert the last decision (repeat to go further back)
    Undo,
    /// Group the faces that belong to nobody (index does this after every run)
    Update {
        #[command(flatten)]
        grouping: GroupingArgs,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Every face of the gallery's model, one JSON object each: face, path, box, score, person
    Faces {
        /// Print JSON (the only format)
        #[arg(long, required = true)]
        json: bool,
        /// Include each face's embedding
        #[arg(long)]
        embeddings: bool,
    },
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Where each model is found, and every place looked at
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Copy the pinned pretrained models (sha256-checked) into the user's models folder
    Install {
        /// Folder holding the pinned models (w600k_mbf/, mobilefacenet/, mtcnn/, scrfd/): a
        /// source tree's models/ after scripts/setup, or a bundle's [default: the first place that holds them]
        #[arg(long, value_name = "DIR")]
        from: Option<PathBuf>,
        /// Destination [default: $XDG_DATA_HOME/smoothface/models or ~/.local/share/smoothface/models]
        #[arg(long, value_name = "DIR")]
        to: Option<PathBuf>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Switch the gallery to another embedder in place: re-embed every face, regroup people
    #[command(
        long_about = "Switch the gallery to another embedder in place.\n\n\
        Every stored face is embedded again by MODEL from its stored box and landmarks (the photo \
        is decoded again; no detection is rerun; a video's face track from its best frame), with \
        a progress bar. Face ids, people, names, rejections and the decisions' history stay; the \
        faces the grouping had assigned are grouped again with MODEL's thresholds, the user's \
        assignments and rejections as constraints, and each person keeps its id where the new \
        grouping agrees. A switch killed at any point resumes when run again. Files that are gone \
        or unreadable lose their faces (listed). Camera enrolments keep the old model's vectors: \
        enrol again. Stop `smoothface serve` on this gallery first.\n\n\
        `smoothface index` with another --model switches the same way before indexing.",
        after_help = "Examples:\n  smoothface models use w600k_mbf\n  \
        smoothface models use mobilefacenet      # the MIT-licensed embedder\n  \
        smoothface models use ~/exports/my-finetune --json"
    )]
    Use {
        /// The embedder: an installed model's name (w600k_mbf, mobilefacenet) or a model folder
        #[arg(value_name = "NAME|DIR")]
        model: PathBuf,
        #[command(flatten)]
        grouping: GroupingArgs,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum EvalCommand {
    /// Every face a query against all others in a folder-per-person tree: mAP and Recall@1/4/16
    Retrieval {
        /// Folder with one sub-folder of photos per person
        dir: PathBuf,
        /// Which face stands for a photo: largest, or central (nearest the image centre)
        #[arg(long, default_value = "largest", value_parser = face_pick, value_name = "PICK")]
        face: FacePick,
        /// Leave out people with fewer photos than this
        #[arg(long, default_value_t = 2, value_name = "N")]
        min_per_person: usize,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Group a folder-per-person tree's faces, ours beside the Immich rule and Ente's HDBSCAN:
    /// BCubed and pairwise F, same-photo pairs, and the "Same person?" suggestions
    People {
        /// Folder with one sub-folder of photos per person
        dir: PathBuf,
        /// Which face of each photo is labelled: largest, or central (nearest the image centre)
        #[arg(long, default_value = "largest", value_parser = face_pick, value_name = "PICK")]
        face: FacePick,
        #[command(flatten)]
        grouping: GroupingArgs,
        /// Immich's maxDistance (cosine distance)
        #[arg(long, default_value_t = ImmichConfig::default().max_distance, value_name = "D")]
        immich_max_distance: f32,
        /// Immich's minFaces
        #[arg(long, default_value_t = ImmichConfig::default().min_faces, value_name = "N")]
        immich_min_faces: usize,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// IJB-B/C 1:1 TAR@FAR, 1:N rank-k and TPIR@FPIR, retrieval mAP, as insightface computes them
    #[command(
        long_about = "Evaluate the embedder on IJB-C (or IJB-B) in the layout \
        insightface's tools read: DIR/meta/ijbc_face_tid_mid.txt, ijbc_name_5pts_score.txt, \
        ijbc_template_pair_label.txt, ijbc_1N_gallery_G1.csv, ijbc_1N_gallery_G2.csv, \
        ijbc_1N_probe_mixed.csv, and DIR/loose_crop/. Each crop is aligned from its five \
        points and embedded with its mirror image (flip test); features keep their norm and are \
        weighted by the faceness score; a media's faces are averaged and a template is the sum \
        of its media, normalised.\n\n\
        1:1: TAR at FAR 1e-6 ... 1e-1 at the ROC point nearest each FAR (as insightface's \
        table), and AUC. 1:N: rank-1/5/10 and TPIR at FPIR 0.01/0.1 of the mixed probes against \
        G1 and against G2 each on its own (NIST's open-set way), and insightface ijb_1n.py's \
        joined-gallery figures, labelled as such. map: every template a query against all \
        others, identities with fewer than 5 templates left out (the Smooth-AP paper).\n\n\
        Features are cached under --cache by the model's sha256 and each image, so a killed run \
        resumes and a second protocol embeds nothing. Make a small set in this layout from a \
        folder-per-person tree with `smoothface eval ijbc-fixture`.\n\n  \
        smoothface eval ijbc /data/IJB_release/IJBC\n  \
        smoothface eval ijbc fixture/ --protocol 1:1 --roc roc.csv --json"
    )]
    Ijbc {
        #[command(flatten)]
        args: IjbcArgs,
    },
    /// Make an IJB-C-layout set from a folder-per-person tree, to check a model with `eval ijbc`
    #[command(
        long_about = "Make an IJB-C-layout set (meta/ and loose_crop/) from a \
        folder-per-person tree: the detector finds each photo's largest face (its landmarks and \
        score become the 5-point file); each person's photos become templates of \
        --photos-per-template photos, the first two of a template sharing one media as a \
        video's frames do; every pair of templates is a 1:1 pair; each person's first template \
        is in gallery G1 or G2 (alternately), the others are mixed probes. People with fewer \
        than two templates' worth of photos are left out. The photos are copied, not cut.\n\n  \
        smoothface eval ijbc-fixture ../shared/data/faces/lfw-devtrain /tmp/lfw-ijbc \\\n      \
        --max-people 50\n  smoothface eval ijbc /tmp/lfw-ijbc"
    )]
    IjbcFixture {
        /// Folder with one sub-folder of photos per person
        src: PathBuf,
        /// The new set's folder (must not exist)
        out: PathBuf,
        /// Photos per template
        #[arg(long, default_value_t = FixtureOptions::default().photos_per_template, value_name = "N")]
        photos_per_template: usize,
        /// Most templates from one person
        #[arg(long, default_value_t = FixtureOptions::default().max_templates_per_person, value_name = "N")]
        max_templates_per_person: usize,
        /// Most people, in name order
        #[arg(long, default_value_t = FixtureOptions::default().max_people, value_name = "N")]
        max_people: usize,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Measure the embedder's similarity thresholds on labelled sets (for its manifest)
    #[command(
        long_about = "Measure the embedder's similarity thresholds on labelled sets, every \
        threshold chosen on all of them at once and reported per set, the worst first.\n\n\
        Each DIR (one sub-folder of photos per person) is indexed into a temporary gallery as a \
        user's would be. link, link_relative and link_floor (people grouping): the grouping with the \
        best worst-set BCubed F whose BCubed precision is at least 0.97 on every set, among one \
        pass at 0.20-0.80 and two passes (a first pass at 0.36-0.56, then whole groups merged at \
        a relative link of 0.45-0.80 and a plain one of at least 0.15 or 0.25). identify (the camera \
        naming a face) and track_strong (a video track continuing anywhere): the strictest set's \
        threshold at a false-match rate of 1e-4 among different people's faces; track \
        (continuing where the boxes overlap): at 1e-2.\n\n\
        --write stores them in the model's manifest.json, where every command reads them; a \
        model without them gets conservative ones, with a warning.",
        after_help = "Examples:\n  smoothface eval calibrate ../shared/data/faces/*/\n  \
        smoothface --model ~/exports/finetuned eval calibrate ~/labelled/* --write"
    )]
    Calibrate {
        /// Folders with one sub-folder of photos per person
        #[arg(required = true, value_name = "DIR")]
        dirs: Vec<PathBuf>,
        /// Which face of each photo is labelled: largest, or central (nearest the image centre)
        #[arg(long, default_value = "central", value_parser = face_pick, value_name = "PICK")]
        face: FacePick,
        /// Write the thresholds into the model's manifest.json
        #[arg(long)]
        write: bool,
        /// Keep each set's gallery in this folder (SET.sqlite, one folder per model), so that
        /// a second run indexes nothing again
        #[arg(long, value_name = "DIR")]
        keep: Option<PathBuf>,
        /// Print JSON (with every set's grouping curve)
        #[arg(long)]
        json: bool,
    },
    /// Verification accuracy on LFW-format pairs (10-fold, or threshold chosen on --dev)
    Pairs {
        /// Folder with one sub-folder of photos per person (LFW layout)
        dir: PathBuf,
        /// Pairs file (`pairs.txt` of LFW View 2, or a View 1 file)
        pairs: PathBuf,
        /// Choose the threshold on this pairs file instead of 10-fold cross-validation
        #[arg(long, value_name = "PAIRS_DEV.txt")]
        dev: Option<PathBuf>,
        /// Which face stands for a photo: largest, or central (nearest the image centre)
        #[arg(long, default_value = "largest", value_parser = face_pick, value_name = "PICK")]
        face: FacePick,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    // Output piped into `head` and closed early ends the program quietly, as it does every Unix
    // tool, instead of a panic in `println!` (Rust ignores SIGPIPE by default).
    #[cfg(unix)]
    // SAFETY: restoring a signal's default disposition, before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("smoothface: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn face_pick(s: &str) -> Result<FacePick, String> {
    s.parse()
}

fn default_db() -> PathBuf {
    if let Some(p) = std::env::var_os("SMOOTHFACE_DB") {
        return PathBuf::from(p);
    }
    models::data_home()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("smoothface/gallery.sqlite")
}

impl Global {
    fn places(&self) -> ModelPlaces {
        ModelPlaces::for_process(self.models.as_deref())
    }

    /// The embedder's folder: `--model` (which must exist), else the default from the places.
    fn model_dir(&self) -> Result<PathBuf> {
        match &self.model {
            Some(dir) => models::given_folder(dir, "--model", &self.places()),
            None => self.places().find(models::EMBEDDER),
        }
    }

    /// The detector's smallest score of a face to group (its manifest's `group_min_score`),
    /// without loading its networks.
    fn detector_group_min_score(&self) -> Result<f32> {
        let manifest = ModelManifest::load(&self.detector_dir()?)?.manifest;
        Ok(smoothface_device::detector::group_min_score(&manifest))
    }

    /// The detector folder: `--detector`, else the default detector wherever it is installed.
    fn detector_dir(&self) -> Result<PathBuf> {
        match &self.detector {
            Some(dir) => models::given_folder(dir, "--detector", &self.places()),
            None => self.places().find(models::DETECTOR),
        }
    }

    /// The detector settings of `--min-face` and `--detect-side`.
    fn detector_config(&self) -> Result<DetectorConfig> {
        ensure_min_face(self.min_face)?;
        Ok(DetectorConfig {
            min_face: self.min_face,
            max_side: (self.detect_side > 0).then_some(self.detect_side),
        })
    }

    /// The embedder folder for a command on the gallery `conn`: `--model` when given; else the
    /// gallery's own model wherever it is installed; else, for a new gallery, the default.
    fn gallery_model_dir(&self, conn: &Connection) -> Result<PathBuf> {
        if self.model.is_some() {
            return self.model_dir();
        }
        let Some(cur) = gallery_model::current(conn)? else {
            return self.places().find(models::EMBEDDER);
        };
        models::find_by_id(&self.places(), &cur.hash, cur.dir.as_deref()).with_context(|| {
            format!(
                "this gallery is embedded with {}, which is not installed here (last loaded from \
                 {}): install it (`smoothface models install`), pass its folder with --model, or \
                 switch the gallery to an installed model with `smoothface models use NAME`",
                cur.label(),
                cur.dir
                    .as_deref()
                    .map_or("an unknown folder".into(), |d| d.display().to_string())
            )
        })
    }

    /// The pipeline for a command on the gallery `conn`, with its embedder as
    /// [`Global::gallery_model_dir`] finds it.
    fn gallery_pipeline(&self, conn: &Connection) -> Result<Pipeline> {
        self.pipeline_with(self.gallery_model_dir(conn)?)
    }

    fn pipeline(&self) -> Result<Pipeline> {
        self.pipeline_with(self.model_dir()?)
    }

    /// The pipeline with the embedder in `model`; a warning when that model has no calibrated
    /// thresholds.
    fn pipeline_with(&self, model: PathBuf) -> Result<Pipeline> {
        let config = self.detector_config()?;
        let pipeline = Pipeline::load(&model, &self.detector_dir()?, config, self.max_pixels)?;
        if let Some(warning) = pipeline.embedder.uncalibrated_warning() {
            eprintln!("warning: {warning}");
        }
        Ok(pipeline)
    }

    /// The gallery's file: `--db`, else the default.
    fn db_path(&self) -> PathBuf {
        self.db.clone().unwrap_or_else(default_db)
    }

    fn db(&self) -> Result<Connection> {
        db::open(&self.db_path())
    }

    fn progress(&self) -> bool {
        !self.quiet && std::io::stderr().is_terminal()
    }
}

fn ensure_min_face(px: f32) -> Result<()> {
    if px.is_nan() || px < 12.0 {
        bail!("--min-face must be at least 12 pixels (MTCNN's smallest window), got {px}");
    }
    Ok(())
}

fn run(cli: Cli) -> Result<ExitCode> {
    let g = &cli.global;
    if let Some(n) = g.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("--threads")?;
    }
    match &cli.command {
        Command::Index {
            dirs,
            grouping,
            video,
            json,
        } => cmd_index(g, dirs, grouping, video, *json),
        Command::Search {
            photo: Some(photo),
            face,
            top,
            min_score,
            json,
            ..
        } => cmd_search(g, photo, *face, *top, *min_score, *json),
        Command::Search {
            person: Some(person),
            top,
            min_score,
            json,
            ..
        } => cmd_search_person(g, person, *top, *min_score, *json),
        Command::Search { .. } => unreachable!("clap requires a photo or --person"),
        Command::People(c) => cmd_people(g, c),
        Command::Camera {
            list,
            enrol,
            watch,
            device,
            source,
            frames,
            min_sharpness,
            fps,
            min_score,
            json,
        } => {
            let fps = positive("--fps", *fps, "frames per second")?;
            let open =
                || smoothface_device::frames::open(source.as_deref(), *device, fps, g.max_pixels);
            if *list {
                cmd_camera_list(*json)
            } else if let Some(name) = enrol {
                let mut conn = g.db()?;
                let pipeline = g.gallery_pipeline(&conn)?;
                let mut src = open()?;
                let r = smoothface_device::watch::enrol(
                    &mut conn,
                    &pipeline,
                    src.as_mut(),
                    name,
                    *frames,
                    smoothface_device::watch::EnrolQuality {
                        min_sharpness: *min_sharpness,
                        min_score: pipeline.group_min_score,
                        ..smoothface_device::watch::EnrolQuality::DEFAULT
                    },
                )?;
                if *json {
                    println!("{}", serde_json::to_string_pretty(&r)?);
                } else {
                    println!(
                        "enrolled {} (person {}) from {} of {} frames",
                        r.name, r.person, r.frames_kept, r.frames_seen
                    );
                }
                Ok(ExitCode::SUCCESS)
            } else {
                debug_assert!(*watch, "clap requires one mode");
                let conn = g.db()?;
                let pipeline = g.gallery_pipeline(&conn)?;
                let min_score = min_score.unwrap_or(pipeline.embedder.thresholds.identify);
                let mut src = open()?;
                let mut out = std::io::stdout().lock();
                let r = smoothface_device::watch::watch(
                    &conn,
                    &pipeline,
                    src.as_mut(),
                    min_score,
                    &mut |e| {
                        use std::io::Write;
                        // A line at a time, flushed: a reader of the pipe sees each event as it happens.
                        writeln!(out, "{}", serde_json::to_string(e)?)?;
                        out.flush()?;
                        Ok(())
                    },
                )?;
                eprintln!(
                    "{} frames analysed, {} dropped while busy, {} tracks",
                    r.frames, r.dropped, r.tracks
                );
                Ok(ExitCode::SUCCESS)
            }
        }
        Command::Detect {
            images,
            embeddings,
            json,
        } => cmd_detect(g, images, *embeddings, *json),
        Command::Serve {
            listen,
            token_file,
            libraries,
            max_upload,
            grouping,
            video,
        } => cmd_serve(
            g,
            *listen,
            token_file.as_deref(),
            libraries,
            *max_upload,
            grouping,
            video,
        ),
        Command::Stats { json } => cmd_stats(g, *json),
        Command::Forget { paths } => cmd_forget(g, paths),
        Command::Align {
            input,
            output,
            face,
            json,
        } => {
            let pipeline = g.pipeline()?;
            let r = smoothface_device::align::align_tree(
                &pipeline,
                input,
                output,
                *face,
                g.progress(),
            )?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                for m in &r.missing {
                    eprintln!("no crop: {}: {}", m.path, m.reason);
                }
                println!(
                    "{} crops written, {} already there, {} photos without a crop",
                    r.written,
                    r.existing,
                    r.missing.len()
                );
            }
            Ok(if r.missing.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_PARTIAL)
            })
        }
        Command::Bench {
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
        } => {
            if !videos.is_empty() {
                return cmd_bench_videos(g, videos, *rounds, *no_peer, *json);
            }
            if *grouping_only {
                let rows = bench::grouping(*grouping_faces, *grouping_add, 512);
                return report(*json, &rows, |rows| print_rows(rows));
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
                return report(*json, &r, print_end_to_end);
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
                return report(*json, &r, print_detect);
            }
            if *search_only {
                let r = bench::search::run(&g.pipeline()?, &photos, &search, python.as_deref())?;
                return report(*json, &r, print_search);
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
            report(*json, &r, print_bench)
        }
        Command::Models(ModelsCommand::List { json }) => cmd_models_list(g, *json),
        Command::Models(ModelsCommand::Install { from, to, json }) => {
            cmd_models_install(g, from.as_deref(), to.as_deref(), *json)
        }
        Command::Models(ModelsCommand::Use {
            model,
            grouping,
            json,
        }) => cmd_models_use(g, model, grouping, *json),
        Command::Eval(EvalCommand::Retrieval {
            dir,
            face,
            min_per_person,
            json,
        }) => {
            let pipeline = g.pipeline()?;
            let r = eval::retrieval(&pipeline, dir, *face, *min_per_person, g.progress())?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                for m in &r.missing {
                    eprintln!("skipped: {}: {}", m.path, m.reason);
                }
                println!(
                    "{} people, {} photos ({} without a usable face)",
                    r.people,
                    r.photos,
                    r.missing.len()
                );
                println!("mAP        {:.4}", r.metrics.map);
                for (k, v) in &r.metrics.recall_at {
                    println!("Recall@{k:<3} {v:.4}");
                }
            }
            debug_assert_eq!(r.metrics.recall_at.len(), RECALL_KS.len());
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval(EvalCommand::Calibrate {
            dirs,
            face,
            write,
            keep,
            json,
        }) => {
            let pipeline = g.pipeline()?;
            if let Some(k) = keep {
                std::fs::create_dir_all(k)
                    .with_context(|| format!("--keep {}: cannot create it", k.display()))?;
            }
            let c = smoothface_device::eval::calibrate::calibrate(
                &pipeline,
                dirs,
                *face,
                &Eligibility {
                    min_score: pipeline.group_min_score,
                    ..Eligibility::default()
                },
                keep.as_deref(),
                g.progress(),
            )?;
            let written = match write {
                true => Some(smoothface_device::eval::calibrate::write_thresholds(
                    &g.model_dir()?,
                    &c.thresholds,
                )?),
                false => None,
            };
            if *json {
                println!("{}", serde_json::to_string_pretty(&c)?);
            } else {
                print_calibration(&c);
            }
            if let Some(path) = written {
                eprintln!("thresholds written to {}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval(EvalCommand::People {
            dir,
            face,
            grouping,
            immich_max_distance,
            immich_min_faces,
            json,
        }) => {
            let pipeline = g.pipeline()?;
            let immich = ImmichConfig {
                max_distance: *immich_max_distance,
                min_faces: *immich_min_faces,
            };
            let options = evaluation::PeopleEvalOptions {
                pick: *face,
                eligibility: grouping.eligibility(pipeline.group_min_score),
                linkage: grouping.linkage(&pipeline.embedder.thresholds)?,
                immich,
                ente: EnteConfig::default(),
            };
            let r = evaluation::people(&pipeline, dir, g.db.as_deref(), &options, g.progress())?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                for m in &r.missing {
                    eprintln!("no labelled face: {}: {}", m.path, m.reason);
                }
                println!(
                    "{} photos, {} labelled faces of {} people; {} faces in the gallery, {} grouped",
                    r.photos, r.labelled_faces, r.true_people, r.gallery_faces, r.grouped_faces
                );
                println!("| grouping | BCubed F | BCubed P | BCubed R | pairwise F | NMI | people found | unassigned | same-photo pairs | time |");
                println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
                for (what, s) in [
                    ("ours (average linkage)", &r.ours),
                    ("Immich rule", &r.immich),
                    ("Ente's HDBSCAN", &r.ente),
                ] {
                    println!(
                        "| {what} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {} | {:.1}% | {} | {:.0} ms |",
                        s.bcubed_f,
                        s.scores.bcubed_precision,
                        s.scores.bcubed_recall,
                        s.pairwise_f,
                        s.scores.nmi,
                        s.people_found,
                        100.0 * s.unassigned_share,
                        s.same_photo_pairs,
                        s.ms
                    );
                }
                for s in &r.suggestions {
                    println!(
                        "\"same person?\" suggestions, best {}: {} of {} right (precision {:.3}), \
                         {} of our {} split pairs (recall {:.3})",
                        s.top, s.right, s.suggested, s.precision, s.right, s.split_pairs, s.recall
                    );
                }
                println!(
                    "\nsearch --person, mAP over {} people by fusion:",
                    r.fusion_queries
                );
                for (name, map) in &r.fusion_map {
                    println!("  {name:<15} {map:.4}");
                }
                println!("\nvideo track pooling (the same faces as one vector), mAP:");
                for (name, map) in &r.pooling_map {
                    println!("  {name:<15} {map:.4}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval(EvalCommand::Ijbc { args }) => {
            let embedder = Embedder::load(&ModelManifest::load(&g.model_dir()?)?)?;
            let r = ijbc::run(&embedder, &args.dir, &args.options(), g.progress())?;
            args.finish(&r, &embedder.name).map_err(|e| anyhow!(e))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval(EvalCommand::IjbcFixture {
            src,
            out,
            photos_per_template,
            max_templates_per_person,
            max_people,
            json,
        }) => {
            let options = FixtureOptions {
                photos_per_template: *photos_per_template,
                max_templates_per_person: *max_templates_per_person,
                max_people: *max_people,
            };
            let r = ijbc_fixture::build(&g.pipeline()?, src, out, &options, g.progress())?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                for m in &r.skipped {
                    eprintln!("left out: {}: {}", m.path, m.reason);
                }
                println!(
                    "{}: {} people, {} templates, {} faces; {} pairs ({} mated); galleries {} + {}, {} probes",
                    r.dir.display(),
                    r.people,
                    r.templates,
                    r.faces,
                    r.pairs,
                    r.mated_pairs,
                    r.gallery[0],
                    r.gallery[1],
                    r.probes
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval(EvalCommand::Pairs {
            dir,
            pairs,
            dev,
            face,
            json,
        }) => {
            let pipeline = g.pipeline()?;
            let r = eval::pairs(&pipeline, dir, pairs, dev.as_deref(), *face, g.progress())?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                for m in &r.missing {
                    eprintln!("no embedding: {}: {}", m.path, m.reason);
                }
                match (&r.kfold, r.dev_threshold) {
                    (Some(k), _) => println!(
                        "{} pairs, 10-fold accuracy {:.4} ± {:.4}",
                        r.pairs, k.mean_accuracy, k.std_accuracy
                    ),
                    (None, Some(t)) => println!(
                        "{} pairs, accuracy {:.4} at the dev threshold {t:.4}",
                        r.pairs, r.accuracy
                    ),
                    (None, None) => unreachable!("pairs evaluation has a fold or a dev threshold"),
                }
                println!("TAR@FAR=1e-2 {:.4}", r.tar_at_far_1e2);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn cmd_index(
    g: &Global,
    dirs: &[PathBuf],
    grouping: &GroupingArgs,
    video: &VideoArgs,
    json: bool,
) -> Result<ExitCode> {
    let mut conn = g.db()?;
    let pipeline = g.gallery_pipeline(&conn)?;
    let linkage = grouping.linkage(&pipeline.embedder.thresholds)?;
    let started = Instant::now();
    let was = gallery_model::current(&conn)?;
    let switched = match &was {
        Some(cur) if cur.hash != pipeline.embedder.model_id => {
            eprintln!(
                "the gallery is embedded with {}: re-embedding its faces with {} first",
                cur.label(),
                pipeline.embedder.name
            );
            Some(switch::switch(
                &mut conn,
                &pipeline,
                &grouping.eligibility(pipeline.group_min_score),
                &linkage,
                g.progress(),
            )?)
        }
        _ => None,
    };
    let r = index::index(
        &mut conn,
        &pipeline,
        dirs,
        video.sampling()?,
        g.progress(),
        &index::Progress::default(),
    )?;
    let model_id = gallery_model::adopt(&conn, &pipeline.embedder)?;
    let people = people_store::update(
        &mut conn,
        model_id,
        &grouping.eligibility(pipeline.group_min_score),
        &linkage,
    )?;
    if json {
        let mut out = serde_json::to_value(&r)?;
        out["people"] = serde_json::to_value(&people)?;
        out["switch"] = serde_json::to_value(&switched)?;
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        if let Some(s) = &switched {
            print_switch(s);
        }
        for f in &r.failed {
            eprintln!("failed: {}: {}", f.path, f.error);
        }
        println!(
            "{} files: {} analysed, {} unchanged, {} moved, {} duplicates, {} failed, {} removed; {} faces stored in {:.1} s",
            r.scanned,
            r.analysed,
            r.unchanged,
            r.moved,
            r.duplicates,
            r.failed.len(),
            r.removed,
            r.faces,
            started.elapsed().as_secs_f64()
        );
        if r.videos > 0 {
            println!(
                "{} videos ({:.0} s of video, {} frames sampled)",
                r.videos, r.video_seconds, r.video_frames
            );
        }
        print_update(&people);
        let default_id = g
            .places()
            .locate(models::EMBEDDER)
            .and_then(|(dir, _)| models::stated_id(&dir));
        let on_default = default_id.as_deref() == Some(pipeline.embedder.model_id.as_str());
        if g.model.is_none() && !on_default && default_id.is_some() {
            eprintln!(
                "note: this gallery uses {}, not the default embedder ({}, stronger): \
                 `smoothface models use {}` switches it in place, keeping people and names",
                pipeline.embedder.name,
                models::EMBEDDER,
                models::EMBEDDER
            );
        }
    }
    Ok(if r.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_PARTIAL)
    })
}

fn cmd_search(
    g: &Global,
    photo: &Path,
    face: usize,
    top: usize,
    min_score: f32,
    json: bool,
) -> Result<ExitCode> {
    let conn = g.db()?;
    let pipeline = g.gallery_pipeline(&conn)?;
    let faces = pipeline.analyze_file(photo, &media::scan_file(photo, false)?)?;
    let Some(query) = faces.get(face) else {
        bail!(
            "{}: has {} detected face(s), no face {face} (see `smoothface detect {}`)",
            photo.display(),
            faces.len(),
            photo.display()
        );
    };
    let emb = &pipeline.embedder;
    let model_id = gallery_model::adopt(&conn, emb)?;
    let loading = Instant::now();
    let matrix = FaceMatrix::load(&conn, model_id, emb.dim())?;
    let load_ms = loading.elapsed().as_secs_f64() * 1e3;
    let started = Instant::now();
    let hits = matrix.rank_media(&query.embedding, top, min_score);
    let search_ms = started.elapsed().as_secs_f64() * 1e3;
    if !matrix.damaged().is_empty() {
        eprintln!(
            "warning: {} damaged face(s) of the gallery left out of the search (face ids {:?}); \
             `smoothface forget` their photos and index them again",
            matrix.damaged().len(),
            matrix.damaged()
        );
    }
    type Row<'a> = (
        String,
        &'a smoothface_device::gallery::search::Hit,
        Option<TrackSpan>,
    );
    let rows: Vec<Row> = hits
        .iter()
        .map(|h| {
            let span = db::face_span(&conn, h.media_id, model_id, h.face_index)?;
            Ok((db::media_path(&conn, h.media_id)?, h, span))
        })
        .collect::<Result<_>>()?;
    if json {
        let hits: Vec<_> = rows
            .iter()
            .enumerate()
            .map(|(i, (path, h, span))| {
                json!({"rank": i + 1, "path": path, "score": h.score, "face_index": h.face_index,
                       "start_s": span.map(|s| s.start_s), "end_s": span.map(|s| s.end_s)})
            })
            .collect();
        let out = json!({
            "query": {"path": photo, "face_index": face, "bbox": query.face.bbox, "score": query.face.score},
            "model": emb.name,
            "faces_searched": matrix.len(),
            "load_ms": load_ms,
        "search_ms": search_ms,
            "hits": hits,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        if matrix.is_empty() {
            eprintln!(
                "the gallery has no faces for model {}: run `smoothface index DIR` first",
                emb.name
            );
        }
        for (i, (path, h, span)) in rows.iter().enumerate() {
            println!(
                "{:>4}  {:.3}  {path}{}  (face {})",
                i + 1,
                h.score,
                on_screen(*span),
                h.face_index
            );
        }
        eprintln!(
            "{} faces searched in {search_ms:.1} ms (loaded from the gallery in {load_ms:.0} ms)",
            matrix.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(all(feature = "camera", target_os = "linux"))]
fn cmd_camera_list(json: bool) -> Result<ExitCode> {
    let cameras = smoothface_device::camera::list()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&cameras)?);
    } else {
        for c in &cameras {
            println!("{:>3}  {}  ({})", c.index, c.name, c.description);
        }
        eprintln!("{} cameras", cameras.len());
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(not(all(feature = "camera", target_os = "linux")))]
fn cmd_camera_list(_: bool) -> Result<ExitCode> {
    bail!("this smoothface was built without camera support (the `camera` feature, Linux only)")
}

/// " at 1:05-1:12" for a video's face track, nothing for a photo's face.
fn on_screen(span: Option<TrackSpan>) -> String {
    let clock = |s: f64| {
        let s = s.max(0.0).round() as u64;
        match s / 3600 {
            0 => format!("{}:{:02}", s / 60, s % 60),
            h => format!("{h}:{:02}:{:02}", s / 60 % 60, s % 60),
        }
    };
    span.map_or(String::new(), |s| {
        format!(" at {}-{}", clock(s.start_s), clock(s.end_s))
    })
}

fn cmd_detect(g: &Global, images: &[PathBuf], embeddings: bool, json: bool) -> Result<ExitCode> {
    let pipeline = g.pipeline()?;
    let mut failed = false;
    let mut out = Vec::new();
    for path in images {
        let result = media::scan_file(path, false)
            .map_err(anyhow::Error::from)
            .and_then(|scan| {
                let (photo, faces) = pipeline.detect_file(path, &scan)?;
                let vectors = if embeddings {
                    Some(pipeline.embed_detected(path, &scan, &photo, faces.clone())?)
                } else {
                    None
                };
                Ok((photo.photo_size(), faces, vectors))
            });
        match result {
            Ok(((w, h), faces, vectors)) => {
                if json {
                    let faces: Vec<_> = match &vectors {
                        Some(v) => v
                            .iter()
                            .map(serde_json::to_value)
                            .collect::<Result<_, _>>()?,
                        None => faces
                            .iter()
                            .map(serde_json::to_value)
                            .collect::<Result<_, _>>()?,
                    };
                    out.push(json!({"path": path, "width": w, "height": h, "faces": faces}));
                } else {
                    println!("{}: {w}x{h}, {} face(s)", path.display(), faces.len());
                    for (i, f) in faces.iter().enumerate() {
                        let b = f.bbox;
                        println!(
                            "  face {i}: box ({:.0},{:.0})-({:.0},{:.0}) score {:.3}",
                            b[0], b[1], b[2], b[3], f.score
                        );
                    }
                }
            }
            Err(e) => {
                failed = true;
                eprintln!("failed: {e:#}");
                out.push(json!({"path": path, "error": format!("{e:#}")}));
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(if failed {
        ExitCode::from(EXIT_PARTIAL)
    } else {
        ExitCode::SUCCESS
    })
}

fn cmd_stats(g: &Global, json: bool) -> Result<ExitCode> {
    let path = g.db_path();
    let stats = db::stats(&db::open(&path)?, &path)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
    } else {
        println!(
            "gallery {} ({:.1} MB)",
            path.display(),
            stats.bytes as f64 / 1e6
        );
        println!(
            "{} files ({} videos, {:.0} s), {} unreadable",
            stats.media, stats.videos, stats.video_seconds, stats.unreadable
        );
        for m in &stats.models {
            println!(
                "model {}: {} files analysed, {} faces ({}-d)",
                m.name, m.photos, m.faces, m.dim
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::too_many_arguments)]
fn cmd_serve(
    g: &Global,
    listen: std::net::SocketAddr,
    token_file: Option<&Path>,
    libraries: &[PathBuf],
    max_upload_mb: usize,
    grouping: &GroupingArgs,
    video: &VideoArgs,
) -> Result<ExitCode> {
    let token = token_file.map(serve::read_token).transpose()?;
    serve::check_listen(&listen, token.as_deref())?;
    if max_upload_mb == 0 {
        bail!("--max-upload must be at least 1 (megabytes)");
    }
    let libraries = libraries
        .iter()
        .map(|l| {
            l.canonicalize()
                .with_context(|| format!("--library {}: no such folder", l.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let pipeline = g.gallery_pipeline(&g.db()?)?;
    let config = serve::Config {
        db: g.db_path(),
        token_file: token_file.map(Path::to_path_buf),
        libraries,
        max_upload: max_upload_mb.saturating_mul(1024 * 1024),
        sampling: video.sampling()?,
        eligibility: grouping.eligibility(pipeline.group_min_score),
        linkage: grouping.linkage(&pipeline.embedder.thresholds)?,
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the service's runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| {
                format!("cannot listen on {listen} (in use? pick another with --listen)")
            })?;
        let at = listener.local_addr()?;
        let token_required = config.token_file.is_some();
        let service = serve::Service::start(config, pipeline)?;
        // The first line says where: scripts started with port 0 read it.
        println!("listening on http://{at}/");
        eprintln!(
            "smoothface serve: the gallery is at http://{at}/{}; Ctrl-C stops it",
            if token_required {
                " (token required)"
            } else {
                ""
            }
        );
        serve::serve(service, listener).await
    })?;
    Ok(ExitCode::SUCCESS)
}

fn cmd_forget(g: &Global, paths: &[PathBuf]) -> Result<ExitCode> {
    let mut conn = g.db()?;
    let absolute: Vec<PathBuf> = paths
        .iter()
        .map(|p| p.canonicalize().or_else(|_| std::path::absolute(p)))
        .collect::<std::io::Result<_>>()?;
    let r = db::forget(&mut conn, &absolute)?;
    // Their thumbnails and face crops go too.
    Cache::for_gallery(&g.db_path()).sweep(&conn)?;
    for p in &r.not_found {
        eprintln!("{}: not in the gallery", p.display());
    }
    println!(
        "forgot {} photos and {} faces ({} people left without faces removed)",
        r.photos, r.faces, r.people
    );
    Ok(ExitCode::SUCCESS)
}

/// The gallery's model, for commands that need no pipeline: an error saying to index first for a
/// gallery without one, and one naming both models when `--model` names another.
fn gallery_model(g: &Global, conn: &Connection) -> Result<(i64, usize)> {
    let cur = gallery_model::current(conn)?
        .context("the gallery holds no faces yet: run `smoothface index DIR` first")?;
    if g.model.is_some() {
        let dir = g.model_dir()?;
        let model = ModelManifest::load(&dir)?;
        if model.id != cur.hash {
            bail!(gallery_model::mismatch(
                &cur,
                &model.manifest.name,
                &model.id,
                &dir.display().to_string()
            ));
        }
    }
    Ok((cur.id, cur.dim))
}

/// The thresholds of the gallery's model (its manifest's, else the fallback, with a warning).
fn gallery_thresholds(g: &Global, conn: &Connection) -> Result<Thresholds> {
    let dir = g.gallery_model_dir(conn)?;
    let model = ModelManifest::load(&dir)?;
    Ok(match model.manifest.thresholds {
        Some(t) => t,
        None => {
            eprintln!(
                "warning: model {} ({}) has no calibrated thresholds: grouping with the \
                 conservative ones; calibrate it with `smoothface --model {} eval calibrate --write`",
                model.manifest.name,
                dir.display(),
                dir.display()
            );
            Thresholds::FALLBACK
        }
    })
}

fn cmd_models_use(
    g: &Global,
    model: &Path,
    grouping: &GroupingArgs,
    json: bool,
) -> Result<ExitCode> {
    let mut conn = g.db()?;
    let pipeline = g.pipeline_with(models::given_folder(model, "models use", &g.places())?)?;
    let linkage = grouping.linkage(&pipeline.embedder.thresholds)?;
    let r = switch::switch(
        &mut conn,
        &pipeline,
        &grouping.eligibility(pipeline.group_min_score),
        &linkage,
        g.progress(),
    )?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print_switch(&r);
    }
    Ok(if r.dropped.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_PARTIAL)
    })
}

fn print_switch(r: &switch::SwitchReport) {
    let Some(from) = &r.from else {
        println!("the gallery is embedded with {}: nothing to switch", r.to);
        return;
    };
    for d in &r.dropped {
        eprintln!(
            "dropped: {}: {} (its faces left the gallery)",
            d.path, d.error
        );
    }
    let resumed = if r.resumed > 0 {
        format!(" ({} done by an earlier run)", r.resumed)
    } else {
        String::new()
    };
    println!(
        "switched from {from} to {}: {} faces re-embedded{resumed} in {:.1} s",
        r.to,
        r.faces,
        r.ms / 1e3
    );
    let g = &r.regroup;
    println!(
        "people: {} faces the grouping had assigned grouped again, {} in the same person as \
         before; {} faces the user assigned kept; {} people, {} emptied ones removed",
        g.auto_faces, g.same_person, g.user_faces, g.people, g.removed_people
    );
    if r.enrolments_kept > 0 {
        eprintln!(
            "note: {} camera enrolments are of another model and do not count with this one: \
             enrol again (`smoothface camera --enrol NAME`)",
            r.enrolments_kept
        );
    }
}

fn print_calibration(c: &smoothface_device::eval::calibrate::Calibration) {
    let t = &c.thresholds;
    let second = match (t.link_relative, t.link_floor) {
        (Some(r), Some(f)) => format!(" then relative {r:.2} over {f:.2}"),
        _ => String::new(),
    };
    println!(
        "{}: link {:.2}{second}, identify {:.4}, track {:.4}, track_strong {:.4}",
        c.model, t.link, t.identify, t.track, t.track_strong
    );
    println!("| set (worst first) | photos | people | BCubed F | P | R | at FMR 1e-4 | at FMR 1e-2 | same-person pairs at identify |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for s in &c.sets {
        println!(
            "| {} | {} | {} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.1}% |",
            s.set,
            s.photos,
            s.people,
            s.grouping.bcubed_f,
            s.grouping.scores.bcubed_precision,
            s.grouping.scores.bcubed_recall,
            s.strict,
            s.loose,
            100.0 * s.identify_tmr
        );
    }
}

fn print_update(r: &people_store::UpdateReport) {
    println!(
        "people: {} faces joined people, {} new people ({} faces), {} faces unassigned; {} people in all",
        r.joined, r.new_people, r.faces_in_new_people, r.unassigned, r.people
    );
    if !r.damaged.is_empty() {
        eprintln!(
            "warning: damaged faces {:?} left out of the grouping; forget their photos and index them again",
            r.damaged
        );
    }
}

fn cmd_search_person(
    g: &Global,
    person: &str,
    top: usize,
    min_score: f32,
    json: bool,
) -> Result<ExitCode> {
    let conn = g.db()?;
    let (model_id, dim) = gallery_model(g, &conn)?;
    let id = decisions::resolve(&conn, model_id, person)?;
    let matrix = FaceMatrix::load(&conn, model_id, dim)?;
    let started = Instant::now();
    let hits = people_store::rank_for_person(&conn, &matrix, id, Fusion::DEFAULT, top, min_score)?;
    let search_ms = started.elapsed().as_secs_f64() * 1e3;
    if json {
        let hits: Vec<_> = hits
            .iter()
            .enumerate()
            .map(|(i, h)| {
                json!({"rank": i + 1, "path": h.path, "score": h.score, "face_index": h.face_index,
                       "assigned": h.assigned, "start_s": h.span.map(|s| s.start_s),
                       "end_s": h.span.map(|s| s.end_s)})
            })
            .collect();
        let out = json!({
            "person": id,
            "fusion": Fusion::DEFAULT.name(),
            "faces_searched": matrix.len(),
            "search_ms": search_ms,
            "hits": hits,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for (i, h) in hits.iter().enumerate() {
            let mark = if h.assigned { "*" } else { " " };
            println!(
                "{:>4} {mark} {:.3}  {}{}  (face {})",
                i + 1,
                h.score,
                h.path,
                on_screen(h.span),
                h.face_index
            );
        }
        eprintln!(
            "* already the person's; {} faces searched in {search_ms:.1} ms ({})",
            matrix.len(),
            Fusion::DEFAULT.name()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_people(g: &Global, c: &PeopleCommand) -> Result<ExitCode> {
    let mut conn = g.db()?;
    let (model_id, _) = gallery_model(g, &conn)?;
    let decided = match c {
        PeopleCommand::List {
            unassigned: false,
            json,
        } => {
            let people = people_store::list(&conn, model_id)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&people)?);
            } else {
                for p in &people {
                    let face = p.representative.as_ref().map_or(String::new(), |r| {
                        format!("  e.g. face {} in {}", r.face, r.path)
                    });
                    println!(
                        "{:>5}  {:<24} {:>5} faces {:>5} photos{face}",
                        p.id,
                        p.name.as_deref().map_or("-".into(), names::printable),
                        p.faces,
                        p.media
                    );
                }
                eprintln!("{} people", people.len());
            }
            return Ok(ExitCode::SUCCESS);
        }
        PeopleCommand::List {
            unassigned: true,
            json,
        } => {
            let (faces, _) = people_store::faces(&conn, model_id, Whose::Nobody, false)?;
            print_faces(&faces, *json)?;
            return Ok(ExitCode::SUCCESS);
        }
        PeopleCommand::Show { person, json } => {
            let id = decisions::resolve(&conn, model_id, person)?;
            let (faces, _) = people_store::faces(&conn, model_id, Whose::Person(id), false)?;
            print_faces(&faces, *json)?;
            return Ok(ExitCode::SUCCESS);
        }
        PeopleCommand::Suggest { top, json } => {
            let pairs = smoothface_device::people::suggest::for_gallery(&conn, model_id, *top)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&pairs)?);
            } else {
                let name = |id: i64| -> Result<String> {
                    Ok(people_store::summary(&conn, model_id, id)?
                        .and_then(|p| p.name)
                        .map_or(format!("{id}"), |n| format!("{id} ({})", printable(&n))))
                };
                for s in &pairs {
                    println!(
                        "{:.3}  {:<28} {:<28} faces {} and {}",
                        s.score,
                        name(s.a)?,
                        name(s.b)?,
                        s.a_face,
                        s.b_face
                    );
                }
                eprintln!(
                    "{} pairs; answer with `smoothface people merge A B` or `smoothface people keep-apart A B`",
                    pairs.len()
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        PeopleCommand::Faces { embeddings, .. } => {
            let (faces, damaged) = people_store::faces(&conn, model_id, Whose::All, *embeddings)?;
            if !damaged.is_empty() {
                eprintln!("warning: damaged faces {damaged:?} left out");
            }
            println!("{}", serde_json::to_string(&faces)?);
            return Ok(ExitCode::SUCCESS);
        }
        PeopleCommand::Update { grouping, json } => {
            let thresholds = gallery_thresholds(g, &conn)?;
            let r = people_store::update(
                &mut conn,
                model_id,
                &grouping.eligibility(g.detector_group_min_score()?),
                &grouping.linkage(&thresholds)?,
            )?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print_update(&r);
            }
            return Ok(ExitCode::SUCCESS);
        }
        PeopleCommand::Name { person, name } => decisions::name(&mut conn, model_id, person, name)?,
        PeopleCommand::Merge { person, others } => {
            decisions::merge(&mut conn, model_id, person, others)?
        }
        PeopleCommand::KeepApart { person, other } => {
            decisions::keep_apart(&mut conn, model_id, person, other)?
        }
        PeopleCommand::Split {
            person,
            faces,
            name,
        } => decisions::split(&mut conn, model_id, person, faces, name.as_deref())?,
        PeopleCommand::Move { face, person } => {
            decisions::move_face(&mut conn, model_id, *face, person)?
        }
        PeopleCommand::Reject { person, faces } => {
            decisions::reject(&mut conn, model_id, person, faces)?
        }
        PeopleCommand::Undo => decisions::undo(&mut conn, model_id)?,
    };
    println!("{}", decided.summary);
    Ok(ExitCode::SUCCESS)
}

/// Faces as a table, or as JSON objects (face, path, box, score, person).
fn print_faces(faces: &[people_store::FaceRow], json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(faces)?);
    } else {
        for f in faces {
            let b = f.bbox;
            println!(
                "face {:>6}  score {:.3}  box ({:.0},{:.0})-({:.0},{:.0})  {}",
                f.face, f.score, b[0], b[1], b[2], b[3], f.path
            );
        }
        eprintln!("{} faces", faces.len());
    }
    Ok(())
}

fn cmd_models_list(g: &Global, json: bool) -> Result<ExitCode> {
    let places = g.places();
    let found: Vec<_> = models::PINNED
        .iter()
        .map(|(name, pinned)| {
            let manifest: ModelManifest =
                serde_json::from_str(pinned).expect("pinned manifests parse");
            (*name, manifest, places.locate(name))
        })
        .collect();
    let role = |name: &str| match name {
        models::EMBEDDER => "default embedder",
        models::DETECTOR => "default detector",
        models::PERMISSIVE_EMBEDDER => "embedder (--model mobilefacenet)",
        _ => "detector (--detector scrfd)",
    };
    if json {
        let models: Vec<_> = found
            .iter()
            .map(|(name, manifest, hit)| {
                json!({
                    "name": name,
                    "model": manifest.name,
                    "role": role(name),
                    "license": manifest.license,
                    "dir": hit.as_ref().map(|(d, _)| d),
                    "origin": hit.as_ref().map(|(_, p)| p.origin),
                })
            })
            .collect();
        let out = json!({"models": models, "places": places.places()});
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("places, searched in this order:");
        for p in places.places() {
            match &p.dir {
                Some(d) => println!("  {}: {}", p.origin, d.display()),
                None => println!("  {}: (not set)", p.origin),
            }
        }
        for (name, manifest, hit) in &found {
            match hit {
                Some((dir, place)) => println!(
                    "{name}: {} ({}), {}",
                    dir.display(),
                    place.origin,
                    role(name)
                ),
                None => println!(
                    "{name}: not found (smoothface models install), {}",
                    role(name)
                ),
            }
            if let Some(licence) = &manifest.license {
                println!("  licence: {licence}");
            }
        }
    }
    Ok(if found.iter().all(|(_, _, hit)| hit.is_some()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn cmd_models_install(
    g: &Global,
    from: Option<&Path>,
    to: Option<&Path>,
    json: bool,
) -> Result<ExitCode> {
    let places = g.places();
    let to = match to {
        Some(t) => t.to_path_buf(),
        None => places
            .install_dir()
            .context("no user data folder: set HOME or XDG_DATA_HOME, or pass --to")?
            .to_path_buf(),
    };
    let from = match from {
        Some(f) => f.to_path_buf(),
        None => places
            .places()
            .iter()
            .filter_map(|p| p.dir.clone())
            .find(|d| *d != to && models::holds_pinned(d))
            .context("no models to install from: pass --from DIR (a bundle's or a source tree's models folder)")?,
    };
    let installed = models::install(&from, &to)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&installed)?);
    } else {
        for m in &installed {
            let what = if m.copied {
                "installed"
            } else {
                "already installed"
            };
            println!("{}: {what} in {}", m.name, m.to.display());
            if let Some(licence) = &m.license {
                println!("  licence: {licence}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A table cell of milliseconds, `-` where nothing was timed.
fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.2} ms"))
}

/// Prints the benchmark's tables in Markdown.
fn print_bench(r: &bench::BenchReport) {
    let ort = r.onnxruntime.as_deref().unwrap_or("onnxruntime (not run)");
    println!("Embedding one face on one thread, tract beside {ort}:\n");
    println!("| model | graph | tract | onnxruntime | tract / onnxruntime | cosine to the first model, tract | same, onnxruntime | cosine tract vs onnxruntime |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for e in &r.embedding {
        println!(
            "| {} ({}) | {} | {:.2} ms | {} | {} | {:.5} | {} | {} |",
            e.name,
            e.model.display(),
            e.graph.label(),
            e.tract_ms,
            ms(e.onnxruntime_ms),
            e.onnxruntime_ms
                .map_or("-".into(), |o| format!("{:.2}", e.tract_ms / o)),
            e.min_cosine_to_first,
            e.min_cosine_to_first_onnxruntime
                .map_or("-".into(), |c| format!("{c:.5}")),
            e.min_cosine_tract_vs_onnxruntime
                .map_or("-".into(), |c| format!("{c:.5}")),
        );
    }
    for e in r.embedding.iter().filter(|e| e.tract_ops.is_some()) {
        println!(
            "\nOperators of {} {}, fastest run of each node summed:\n",
            e.name,
            e.graph.label()
        );
        println!("| tract op | nodes | time | onnxruntime op | nodes | time |");
        println!("|---|---:|---:|---|---:|---:|");
        let (tract, peer) = (
            e.tract_ops.as_deref().unwrap_or_default(),
            e.onnxruntime_ops.as_deref().unwrap_or_default(),
        );
        let cell = |o: Option<&smoothface_device::onnx::OpTime>| {
            o.map_or("| | |".to_string(), |o| {
                format!("{} | {} | {:.3} ms", o.op, o.nodes, o.ms)
            })
        };
        for i in 0..tract.len().max(peer.len()) {
            println!("| {} | {} |", cell(tract.get(i)), cell(peer.get(i)));
        }
    }
    println!();
    print_detect(&r.detection);
    println!();
    if !r.rows.is_empty() {
        print_rows(&r.rows);
        println!();
    }
    print_end_to_end(&r.end_to_end);
    println!();
    print_search(&r.search);
}

/// Prints a benchmark's results: as JSON, or as `table` prints them.
fn report<T: serde::Serialize>(json: bool, r: &T, table: fn(&T)) -> Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
    } else {
        table(r);
    }
    Ok(ExitCode::SUCCESS)
}

/// The end-to-end table in Markdown.
fn print_end_to_end(e: &bench::EndToEnd) {
    let peer = e
        .reference
        .as_deref()
        .unwrap_or("the reference pipeline (not run)");
    println!("Index end to end, {} photos, beside {peer}:\n", e.photos);
    println!("| `smoothface index`, {} threads | reference | ours / reference | faces: ours / reference |", e.threads);
    println!("|---:|---:|---:|---:|");
    println!(
        "| {:.1} photos/s | {} | {} | {} / {} |",
        e.photos_per_second,
        e.reference_photos_per_second
            .map_or("-".into(), |p| format!("{p:.1} photos/s")),
        e.reference_photos_per_second
            .map_or("-".into(), |p| format!("{:.2}x", e.photos_per_second / p)),
        e.faces,
        e.reference_faces.map_or("-".into(), |f| f.to_string()),
    );
}

/// The detection tables in Markdown: each detector beside its peer and its sides, then, with a
/// second detector, how the two agree and both at each side on the group photos.
fn print_detect(r: &bench::detect::DetectReport) {
    for report in std::iter::once(r).chain(r.compared.as_deref()) {
        print_detect_rows(report);
        if let Some(sweep) = &report.sides {
            print_sides(&report.detector, sweep);
        }
        println!();
    }
    if let (Some(other), false) = (&r.compared, r.agreement.is_empty()) {
        print_agreement([&r.detector, &other.detector], &r.agreement);
    }
    if let Some(both) = &r.side_by_side {
        print_side_by_side(both);
    }
}

/// One detector's timing beside its peer.
fn print_detect_rows(r: &bench::detect::DetectReport) {
    let peer = r.reference.as_deref().unwrap_or("its peer (not run)");
    println!(
        "{}: decode + detect, one photo at a time on one thread, beside {peer} on the same files:\n",
        r.detector
    );
    let Some(first) = r.rows.first() else {
        return;
    };
    let parts: Vec<&str> = first.ours_stages.named().iter().map(|p| p.0).collect();
    let peer_detect = r.rows.iter().any(|d| d.reference_detect_ms.is_some());
    println!(
        "| photos | ours | reference |{} ours / reference | our decode | {} | faces: ours / reference | reference's found by ours | ours found by reference |",
        if peer_detect { " reference's detect alone |" } else { "" },
        parts.join(" | ")
    );
    println!(
        "|---|---:|---:|{}---:|---:|{}---:|---:|---:|",
        if peer_detect { "---:|" } else { "" },
        "---:|".repeat(parts.len())
    );
    let share = |s: Option<f64>| s.map_or("-".into(), |s| format!("{:.1}%", 100.0 * s));
    for d in &r.rows {
        let size = match d.size {
            bench::detect::PhotoSize::AsTaken => {
                format!("{} as taken ({}x{})", d.photos, d.width, d.height)
            }
            bench::detect::PhotoSize::Scaled { width, height } => {
                format!("{} at {width}x{height}", d.photos)
            }
        };
        let stages: Vec<String> = d
            .ours_stages
            .named()
            .iter()
            .map(|p| format!("{:.1}", p.1))
            .collect();
        println!(
            "| {size} | {:.1} ms | {} |{} {} | {:.1} | {} | {} / {} | {} | {} |",
            d.ours_ms,
            ms(d.reference_ms),
            if peer_detect {
                format!(" {} |", ms(d.reference_detect_ms))
            } else {
                String::new()
            },
            d.reference_ms
                .map_or("-".into(), |p| format!("{:.2}", d.ours_ms / p)),
            d.ours_decode_ms,
            stages.join(" | "),
            d.ours_faces,
            d.reference_faces.map_or("-".into(), |f| f.to_string()),
            share(d.reference_found_by_ours),
            share(d.ours_found_by_reference),
        );
    }
}

/// The detection side table in Markdown.
fn print_sides(detector: &str, sweep: &bench::detect::SideSweep) {
    let (w, h) = bench::detect::GROUP_FRAME;
    println!(
        "\n{detector}, {} group photos ({w}x{h}, tiles of benchmark photos): of the faces found at full size, the share each --detect-side finds too, and decode + detect a photo:\n",
        sweep.photos
    );
    let sides: Vec<String> = sweep.sides.iter().map(|s| format!("side {s}")).collect();
    println!(
        "| face width at full size | faces | {} |",
        sides.join(" | ")
    );
    println!("|---|---:|{}", "---:|".repeat(sides.len()));
    for r in &sweep.rows {
        let found: Vec<String> = r.found.iter().map(|&f| percent(f, r.full_faces)).collect();
        println!(
            "| {} | {} | {} |",
            width_range(r.from_px, r.below_px),
            r.full_faces,
            found.join(" | ")
        );
    }
    let times: Vec<String> = sweep.side_ms.iter().map(|t| format!("{t:.0} ms")).collect();
    println!(
        "| decode + detect, a photo | {:.0} ms at full size | {} |",
        sweep.full_ms,
        times.join(" | ")
    );
}

/// `found` of `of` as a percentage.
fn percent(found: usize, of: usize) -> String {
    format!("{:.1}%", 100.0 * found as f64 / of.max(1) as f64)
}

/// A row's face widths, as the side tables head them.
fn width_range(from_px: u32, below_px: Option<u32>) -> String {
    match below_px {
        Some(b) => format!("{from_px}-{} px", b - 1),
        None => format!("{from_px} px and more"),
    }
}

/// Two detectors on the same photos: faces, landmark distances, scores at equal shares.
fn print_agreement([first, second]: [&str; 2], rows: &[bench::detect::Agreement]) {
    println!("{first} and {second} on the same photos: the faces both find (boxes overlapping by IoU 0.5) and the distance between their landmarks there, in inter-ocular distances (mean over the five points; then each point's mean):\n");
    println!("| photos | faces: {first} / {second} | both | mean | median | 95th percentile | left eye | right eye | nose | left mouth | right mouth |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for a in rows {
        let lm = a
            .landmarks
            .as_ref()
            .map_or("- | - | - | - | - | - | - | -".into(), |l| {
                let points: Vec<String> = l.points.iter().map(|p| format!("{p:.3}")).collect();
                format!(
                    "{:.3} | {:.3} | {:.3} | {}",
                    l.mean,
                    l.median,
                    l.p95,
                    points.join(" | ")
                )
            });
        println!(
            "| {} | {} / {} | {} | {lm} |",
            a.photos, a.faces[0], a.faces[1], a.matched
        );
    }
    let Some(shares) = rows.iter().find(|a| !a.score_at_share.is_empty()) else {
        return;
    };
    println!("\nOn the faces both find, the score each detector must be given to keep a share of them ({first} / {second}):\n");
    let heads: Vec<String> = shares
        .score_at_share
        .iter()
        .map(|s| format!("{}%", 100.0 * s.share))
        .collect();
    println!("| photos | {} |", heads.join(" | "));
    println!("|---|{}", "---:|".repeat(heads.len()));
    for a in rows.iter().filter(|a| !a.score_at_share.is_empty()) {
        let cells: Vec<String> = a
            .score_at_share
            .iter()
            .map(|s| format!("{:.3} / {:.3}", s.score[0], s.score[1]))
            .collect();
        println!("| {} | {} |", a.photos, cells.join(" | "));
    }
    for a in rows {
        if let Some(g) = &a.grouping {
            println!(
                "\n{}: the grouping's default minimum score {} keeps {:.1}% of the faces both find by {first}'s scores; {second}'s score that keeps as many: {:.3}",
                a.photos,
                g.first,
                100.0 * g.share,
                g.second
            );
        }
    }
}

/// Both detectors at each side on the group photos.
fn print_side_by_side(b: &bench::detect::SideBySide) {
    let [first, second] = &b.detectors;
    println!(
        "\n{first} and {second} on {} group photos: of the faces either finds at full size, the share each finds at full size and at each --detect-side, and decode + detect a photo:\n",
        b.photos
    );
    let heads: Vec<String> = b
        .detectors
        .iter()
        .flat_map(|d| {
            std::iter::once(format!("{d} full size"))
                .chain(b.sides.iter().map(move |s| format!("{d} {s}")))
        })
        .collect();
    println!(
        "| face width at full size | faces | {} |",
        heads.join(" | ")
    );
    println!("|---|---:|{}", "---:|".repeat(heads.len()));
    for r in &b.rows {
        let cells: Vec<String> = (0..2)
            .flat_map(|k| {
                std::iter::once(percent(r.found_full[k], r.faces))
                    .chain(r.found[k].iter().map(|&f| percent(f, r.faces)))
            })
            .collect();
        println!(
            "| {} | {} | {} |",
            width_range(r.from_px, r.below_px),
            r.faces,
            cells.join(" | ")
        );
    }
    let times: Vec<String> = (0..2)
        .flat_map(|k| {
            std::iter::once(format!("{:.0} ms", b.full_ms[k]))
                .chain(b.side_ms[k].iter().map(|t| format!("{t:.0} ms")))
        })
        .collect();
    println!("| decode + detect, a photo | | {} |\n", times.join(" | "));
    print_agreement([first, second], std::slice::from_ref(&b.agreement));
}

/// The search table in Markdown.
fn print_search(r: &bench::search::SearchReport) {
    println!(
        "Search, one query at a time, top 10, {} threads; {} real faces of {} people, the rest synthetic; {} queries (median); {}:\n",
        r.threads,
        r.real_faces,
        r.people,
        r.queries,
        r.peers.as_deref().unwrap_or("peers not run")
    );
    println!("| faces | exact, ours | faiss IndexFlatIP | faiss, 1 thread | numpy | ours / faiss's best | faiss's top 10 = ours | compact, ours | compact recall@10 | compact / faiss's best | memory a face: codes + float32 | codes built in |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in &r.rows {
        let best = row
            .faiss_ms
            .zip(row.faiss_one_thread_ms)
            .map(|(a, b)| a.min(b));
        let ratio = |ours: f64| best.map_or("-".into(), |f| format!("{:.2}", ours / f));
        println!(
            "| {} | {:.2} ms | {} | {} | {} | {} | {} | {:.2} ms | {:.4} | {} | {} + {} B | {:.0} ms |",
            row.faces,
            row.exact_ms,
            ms(row.faiss_ms),
            ms(row.faiss_one_thread_ms),
            ms(row.numpy_ms),
            ratio(row.exact_ms),
            row.faiss_agreement
                .map_or("-".into(), |a| format!("{:.1}%", 100.0 * a)),
            row.compact_ms,
            row.compact_recall_at_10,
            ratio(row.compact_ms),
            row.compact_bytes_per_face,
            row.float_bytes_per_face,
            row.compact_build_ms,
        );
    }
    println!(
        "\nCosine of random pairs: real faces {:.3} ± {:.3}, synthetic {:.3} ± {:.3}.",
        r.real_pairs.mean, r.real_pairs.sd, r.synthetic_pairs.mean, r.synthetic_pairs.sd
    );
}

/// The timings beside their peers', in Markdown.
#[cfg(feature = "video")]
fn cmd_bench_videos(
    g: &Global,
    clips: &[PathBuf],
    rounds: usize,
    no_peer: bool,
    json: bool,
) -> Result<ExitCode> {
    let pipeline = g.pipeline()?;
    let rows = bench::video(&pipeline, clips, Sampling::DEFAULT, rounds, no_peer)?;
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
fn cmd_bench_videos(_: &Global, _: &[PathBuf], _: usize, _: bool, _: bool) -> Result<ExitCode> {
    bail!("this smoothface was built without video support (the `video` feature)")
}

fn print_rows(rows: &[bench::Row]) {
    println!("| what | smoothface | peer | peer time |");
    println!("|---|---:|---|---:|");
    for row in rows {
        println!(
            "| {} | {:.2} ms | {} | {} |",
            row.what,
            row.ours_ms,
            row.peer.as_deref().unwrap_or("-"),
            ms(row.peer_ms)
        );
    }
}
