//! `smoothface serve`: the gallery's web app and JSON API, on this machine unless told otherwise.

use super::args::{GroupingArgs, VideoArgs};
use super::Global;
use anyhow::{bail, Context, Result};
use smoothface_device::serve;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Serve the gallery to a browser: a web app and a JSON API, on this machine only unless
/// told otherwise
#[derive(clap::Args)]
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
pub struct Args {
    /// Address and port to listen on (port 0: any free port)
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR:PORT")]
    pub listen: std::net::SocketAddr,
    /// File whose first line is the token every request must carry (at least 16
    /// characters, readable only by you); required for any address but loopback
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Folders to index in the background, at start and on request
    #[arg(long = "library", value_name = "DIR", num_args = 1..)]
    pub libraries: Vec<PathBuf>,
    /// Largest photo upload accepted, in megabytes
    #[arg(long, default_value_t = 20, value_name = "MB")]
    pub max_upload: usize,
    #[command(flatten)]
    pub grouping: GroupingArgs,
    #[command(flatten)]
    pub video: VideoArgs,
}

/// Starts the service and serves until Ctrl-C.
pub fn run(g: &Global, a: &Args) -> Result<ExitCode> {
    let Args {
        listen,
        token_file,
        libraries,
        max_upload: max_upload_mb,
        grouping,
        video,
    } = a;
    let (listen, token_file, max_upload_mb) = (*listen, token_file.as_deref(), *max_upload_mb);
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
