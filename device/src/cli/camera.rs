//! `smoothface camera`: list the cameras, enrol a person from one, or watch and name who is seen.

use super::args::positive;
use super::Global;
use anyhow::Result;
use std::path::PathBuf;
use std::process::ExitCode;

/// Live faces: list the cameras, enrol a person from a camera, or watch and name who is seen
#[derive(clap::Args)]
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
pub struct Args {
    /// List the cameras (an empty list when there is none)
    #[arg(long)]
    pub list: bool,
    /// Enrol a person under this name from the camera's frames
    #[arg(long, value_name = "NAME")]
    pub enrol: Option<String>,
    /// Watch: track every face and say who it is, one JSON line per event
    #[arg(long)]
    pub watch: bool,
    /// Which camera (see --list)
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub device: u32,
    /// Read frames from a video file or a folder of images instead of a camera
    #[arg(long, value_name = "FILE", conflicts_with = "device")]
    pub source: Option<PathBuf>,
    /// Frames looked at for --enrol
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub frames: usize,
    /// Blurrier frames are not enrolled (variance of the Laplacian of the aligned face)
    #[arg(long, default_value_t = smoothface_device::watch::EnrolQuality::DEFAULT.min_sharpness, value_name = "S")]
    pub min_sharpness: f32,
    /// Frames per second taken from a --source video (a folder: shown at this rate)
    #[arg(long, default_value_t = 5.0, value_name = "FPS")]
    pub fps: f64,
    /// Smallest cosine similarity to a named person for --watch to name a track
    /// [default: the embedder's calibrated `identify` threshold, from its manifest]
    #[arg(long, value_name = "S", allow_negative_numbers = true)]
    pub min_score: Option<f32>,
    /// Print --list and --enrol as JSON (--watch always prints JSON lines)
    #[arg(long)]
    pub json: bool,
}

/// Lists, enrols or watches, as the mode flag says.
pub fn run(g: &Global, a: &Args) -> Result<ExitCode> {
    let Args {
        list: listing,
        enrol,
        watch,
        device,
        source,
        frames,
        min_sharpness,
        fps,
        min_score,
        json,
    } = a;
    let fps = positive("--fps", *fps, "frames per second")?;
    let open = || smoothface_device::source::open(source.as_deref(), *device, fps, g.max_pixels);
    if *listing {
        list(*json)
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
        let r =
            smoothface_device::watch::watch(&conn, &pipeline, src.as_mut(), min_score, &mut |e| {
                use std::io::Write;
                // A line at a time, flushed: a reader of the pipe sees each event as it happens.
                writeln!(out, "{}", serde_json::to_string(e)?)?;
                out.flush()?;
                Ok(())
            })?;
        eprintln!(
            "{} frames analysed, {} dropped while busy, {} tracks",
            r.frames, r.dropped, r.tracks
        );
        Ok(ExitCode::SUCCESS)
    }
}

/// Prints the cameras.
#[cfg(all(feature = "camera", target_os = "linux"))]
fn list(json: bool) -> Result<ExitCode> {
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
fn list(_: bool) -> Result<ExitCode> {
    anyhow::bail!(
        "this smoothface was built without camera support (the `camera` feature, Linux only)"
    )
}
