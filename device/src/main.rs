//! `smoothface`: index a photo library by face and search it, on the device.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use rusqlite::Connection;
use serde_json::json;
use smoothface_device::bench;
use smoothface_device::eval::{self, RECALL_KS};
use smoothface_device::gallery::{db, index, search::FaceMatrix};
use smoothface_device::media::DEFAULT_MAX_PIXELS;
use smoothface_device::models::{self, ModelPlaces};
use smoothface_device::mtcnn::MtcnnConfig;
use smoothface_device::pipeline::{FacePick, Pipeline};
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
    about = "Find every photo of a person in your own library, on this machine.",
    long_about = "Find every photo of a person in your own library, on this machine.\n\n\
        smoothface detects faces (MTCNN), aligns them to the ArcFace template and embeds them \
        (an ArcFace model run by tract), keeps the gallery in SQLite, and ranks the whole \
        gallery by identity. Nothing leaves the machine.\n\n\
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
    /// Embedder model folder (ONNX + manifest.json) [default: mobilefacenet from the models folders]
    #[arg(long, global = true, value_name = "DIR")]
    model: Option<PathBuf>,
    /// MTCNN detector folder [default: mtcnn from the models folders]
    #[arg(long, global = true, value_name = "DIR")]
    detector: Option<PathBuf>,
    /// Gallery database [default: $SMOOTHFACE_DB or ~/.local/share/smoothface/gallery.sqlite]
    #[arg(long, global = true, value_name = "FILE")]
    db: Option<PathBuf>,
    /// Smallest face to find, in pixels (smaller is slower)
    #[arg(long, global = true, default_value_t = 20.0, value_name = "PX")]
    min_face: f32,
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
    /// Add the photos under folders to the gallery (recursive, incremental, resumable)
    Index {
        /// Folders (or single files' folders) to index
        #[arg(required = true, value_name = "DIR")]
        dirs: Vec<PathBuf>,
        /// Print the run's report as JSON
        #[arg(long)]
        json: bool,
    },
    /// Rank the gallery's photos by how much their best face looks like the query's face
    Search {
        /// Photo of the person to look for
        photo: PathBuf,
        /// Which face of the query photo, 0 being the largest (see `smoothface detect`)
        #[arg(long, default_value_t = 0, value_name = "N")]
        face: usize,
        /// How many photos to list (0: all)
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
    /// Find, list and install the models
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Measure accuracy on labelled photos
    #[command(subcommand)]
    Eval(EvalCommand),
    /// Measure speed, each stage beside a peer (onnxruntime, numpy) in the same run
    Bench {
        /// Folder of face photos [default: $SMOOTHFACE_FACES/lfw-devtrain]
        #[arg(long, value_name = "DIR")]
        photos: Option<PathBuf>,
        /// Faces timed for detection and embedding
        #[arg(long, default_value_t = 50, value_name = "N")]
        faces: usize,
        /// Photos indexed for the end-to-end rate
        #[arg(long, default_value_t = 200, value_name = "N")]
        e2e_photos: usize,
        /// Gallery sizes for the search timing
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "10000,100000,1000000",
            value_name = "N,N,..."
        )]
        search_sizes: Vec<usize>,
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
        /// Python with onnxruntime and numpy [default: .venv-bench/bin/python in the current
        /// folder, made by `scripts/setup --bench` in the source tree]
        #[arg(long, value_name = "PYTHON")]
        python: Option<PathBuf>,
        /// Skip the peers
        #[arg(long)]
        no_peer: bool,
        /// Print JSON
        #[arg(long)]
        json: bool,
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
        /// Folder holding mobilefacenet/ and mtcnn/: a source tree's models/ after
        /// scripts/setup, or a bundle's [default: the first place that holds them]
        #[arg(long, value_name = "DIR")]
        from: Option<PathBuf>,
        /// Destination [default: $XDG_DATA_HOME/smoothface/models or ~/.local/share/smoothface/models]
        #[arg(long, value_name = "DIR")]
        to: Option<PathBuf>,
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
            Some(dir) => models::given_folder(dir, "--model"),
            None => self.places().find(models::EMBEDDER),
        }
    }

    fn pipeline(&self) -> Result<Pipeline> {
        let config = MtcnnConfig {
            min_face: self.min_face,
            ..MtcnnConfig::default()
        };
        ensure_min_face(self.min_face)?;
        let model = self.model_dir()?;
        let detector = match &self.detector {
            Some(dir) => models::given_folder(dir, "--detector")?,
            None => self.places().find(models::DETECTOR)?,
        };
        Pipeline::load(&model, &detector, config, self.max_pixels)
    }

    fn db(&self) -> Result<Connection> {
        db::open(&self.db.clone().unwrap_or_else(default_db))
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
        Command::Index { dirs, json } => cmd_index(g, dirs, *json),
        Command::Search {
            photo,
            face,
            top,
            min_score,
            json,
        } => cmd_search(g, photo, *face, *top, *min_score, *json),
        Command::Detect {
            images,
            embeddings,
            json,
        } => cmd_detect(g, images, *embeddings, *json),
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
            e2e_photos,
            search_sizes,
            compare,
            rounds,
            profile,
            python,
            no_peer,
            json,
        } => {
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
            let opts = bench::BenchOptions {
                model: g.model_dir()?,
                compare: compare.clone(),
                rounds: *rounds,
                profile: *profile,
                photos,
                faces: *faces,
                e2e_photos: *e2e_photos,
                search_sizes: search_sizes.clone(),
                python,
            };
            let r = bench::run(&g.pipeline()?, &opts)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print_bench(&r);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Models(ModelsCommand::List { json }) => cmd_models_list(g, *json),
        Command::Models(ModelsCommand::Install { from, to, json }) => {
            cmd_models_install(g, from.as_deref(), to.as_deref(), *json)
        }
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

fn cmd_index(g: &Global, dirs: &[PathBuf], json: bool) -> Result<ExitCode> {
    let pipeline = g.pipeline()?;
    let mut conn = g.db()?;
    let started = Instant::now();
    let r = index::index(&mut conn, &pipeline, dirs, g.progress())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
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
    let pipeline = g.pipeline()?;
    let conn = g.db()?;
    let img = pipeline.decode(photo)?;
    let faces = pipeline.analyze(&img)?;
    let Some(query) = faces.get(face) else {
        bail!(
            "{}: has {} detected face(s), no face {face} (see `smoothface detect {}`)",
            photo.display(),
            faces.len(),
            photo.display()
        );
    };
    let emb = &pipeline.embedder;
    let model_id = db::model_row(&conn, &emb.model_id, &emb.name, emb.dim())?;
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
    let rows: Vec<(String, &smoothface_device::gallery::search::Hit)> = hits
        .iter()
        .map(|h| Ok((db::media_path(&conn, h.media_id)?, h)))
        .collect::<Result<_>>()?;
    if json {
        let hits: Vec<_> = rows
            .iter()
            .enumerate()
            .map(|(i, (path, h))| json!({"rank": i + 1, "path": path, "score": h.score, "face_index": h.face_index}))
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
        for (i, (path, h)) in rows.iter().enumerate() {
            println!(
                "{:>4}  {:.3}  {path}  (face {})",
                i + 1,
                h.score,
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

fn cmd_detect(g: &Global, images: &[PathBuf], embeddings: bool, json: bool) -> Result<ExitCode> {
    let pipeline = g.pipeline()?;
    let mut failed = false;
    let mut out = Vec::new();
    for path in images {
        let result = pipeline
            .decode(path)
            .map_err(anyhow::Error::from)
            .and_then(|img| {
                let faces = pipeline.detector.detect(&img)?;
                let vectors = if embeddings {
                    Some(pipeline.embed_faces(&img, faces.clone())?)
                } else {
                    None
                };
                Ok((img.dimensions(), faces, vectors))
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
    let path = g.db.clone().unwrap_or_else(default_db);
    let stats = db::stats(&db::open(&path)?, &path)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
    } else {
        println!(
            "gallery {} ({:.1} MB)",
            path.display(),
            stats.bytes as f64 / 1e6
        );
        println!("{} files, {} unreadable", stats.media, stats.unreadable);
        for m in &stats.models {
            println!(
                "model {}: {} photos analysed, {} faces ({}-d)",
                m.name, m.photos, m.faces, m.dim
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_forget(g: &Global, paths: &[PathBuf]) -> Result<ExitCode> {
    let mut conn = g.db()?;
    let absolute: Vec<PathBuf> = paths
        .iter()
        .map(|p| p.canonicalize().or_else(|_| std::path::absolute(p)))
        .collect::<std::io::Result<_>>()?;
    let r = db::forget(&mut conn, &absolute)?;
    for p in &r.not_found {
        eprintln!("{}: not in the gallery", p.display());
    }
    println!("forgot {} photos and {} faces", r.photos, r.faces);
    Ok(ExitCode::SUCCESS)
}

fn cmd_models_list(g: &Global, json: bool) -> Result<ExitCode> {
    let places = g.places();
    let found: Vec<_> = [models::EMBEDDER, models::DETECTOR]
        .into_iter()
        .map(|name| (name, places.locate(name)))
        .collect();
    if json {
        let models: Vec<_> = found
            .iter()
            .map(|(name, hit)| {
                json!({
                    "name": name,
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
        for (name, hit) in &found {
            match hit {
                Some((dir, place)) => println!("{name}: {} ({})", dir.display(), place.origin),
                None => println!("{name}: not found (smoothface models install)"),
            }
        }
    }
    Ok(if found.iter().all(|(_, hit)| hit.is_some()) {
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
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the benchmark's tables in Markdown.
fn print_bench(r: &bench::BenchReport) {
    let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2} ms"));
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
    println!("\n| what | smoothface (tract) | peer | peer time |");
    println!("|---|---:|---|---:|");
    for row in &r.rows {
        println!(
            "| {} | {:.2} ms | {} | {} |",
            row.what,
            row.ours_ms,
            row.peer.as_deref().unwrap_or("-"),
            ms(row.peer_ms)
        );
    }
    println!(
        "| index end to end, {} threads | {:.1} photos/s | | |",
        r.threads, r.photos_per_second
    );
}
