//! `smoothface serve`: the gallery as a local web service and web app, on tokio and axum.
//!
//! One process holds the models and serves every request from them; the gallery is the same
//! SQLite file the command line uses (WAL: the indexer writes while searches read). Modules:
//! [`auth`] decides who may ask (loopback without a token, a token everywhere else), [`api`] is
//! the JSON API, [`indexer`] indexes the library folders in the background, `web` serves the
//! page and its embedded assets, [`conn`] accepts and times the connections, and [`Service`]
//! holds what they share.

pub mod api;
pub mod auth;
pub mod conn;
pub mod indexer;
mod web;

pub use conn::{serve, serve_with, Limits};

use crate::frames::Sampling;
use crate::gallery::db;
use crate::gallery::search::FaceMatrix;
use crate::people::linkage::LinkageConfig;
use crate::people::store::Eligibility;
use crate::pipeline::Pipeline;
use crate::thumbs::Cache;
use anyhow::{bail, Context, Result};
use axum::Router;
use rusqlite::Connection;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

/// Default largest upload, bytes.
pub const DEFAULT_MAX_UPLOAD: usize = 20 * 1024 * 1024;

/// Shortest token accepted: 16 characters of a random token are beyond guessing over a network.
pub const MIN_TOKEN_CHARS: usize = 16;

/// Requests handled at once; more wait for one to finish. Each may hold an upload (up to
/// `--max-upload`), a gallery connection and a photo file open, so this bounds the memory and
/// the files requests take whatever the number of connections.
pub const MAX_IN_FLIGHT: usize = 32;

/// How the service runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The gallery database.
    pub db: PathBuf,
    /// The file whose first line is the token requests must carry (read again whenever it
    /// changes, see [`auth`]); `None` only on a loopback address.
    pub token_file: Option<PathBuf>,
    /// Folders indexed at start and on request.
    pub libraries: Vec<PathBuf>,
    /// Largest upload, bytes.
    pub max_upload: usize,
    /// How videos are sampled when indexing.
    pub sampling: Sampling,
    /// Which faces are grouped into people after an index run.
    pub eligibility: Eligibility,
    /// How they are grouped.
    pub linkage: LinkageConfig,
}

/// Refuses an address other than loopback without a token: the gallery's faces would be open
/// to the whole network.
pub fn check_listen(addr: &SocketAddr, token: Option<&str>) -> Result<()> {
    if !addr.ip().is_loopback() && token.is_none() {
        bail!(
            "refusing to listen on {addr} without a token: anyone on that network could read and \
             change the gallery. Give --token-file FILE (a secret of at least {MIN_TOKEN_CHARS} \
             characters that only you can read), or listen on 127.0.0.1"
        );
    }
    Ok(())
}

/// Reads the token of `--token-file`: the file's first line, at least [`MIN_TOKEN_CHARS`]
/// long, in a file that only its owner can read (as ssh wants of a key).
pub fn read_token(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read the token file", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            bail!(
                "{}: the token file can be read by others (mode {:o}): run `chmod 600 {}`",
                path.display(),
                mode & 0o777,
                path.display()
            );
        }
    }
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.chars().count() < MIN_TOKEN_CHARS {
        bail!(
            "{}: the token must be at least {MIN_TOKEN_CHARS} characters (e.g. `head -c 24 \
             /dev/urandom | base64 > {}`)",
            path.display(),
            path.display()
        );
    }
    Ok(token)
}

/// What every request shares: the models, the gallery and its caches.
pub struct Service {
    /// Detector and embedder.
    pub pipeline: Arc<Pipeline>,
    /// How the service was started.
    pub config: Config,
    /// The embedder's row in the gallery.
    pub model_id: i64,
    /// Thumbnails and face crops.
    pub cache: Cache,
    /// The background indexer.
    pub indexer: Arc<indexer::Indexer>,
    /// The token and the login sessions; `None` without a token file.
    pub access: Option<auth::Access>,
    /// Uploads analysed at once: one per core, so that a burst of searches queues rather than
    /// thrashing and every request's latency stays bounded.
    pub analysis: tokio::sync::Semaphore,
    faces: FaceCache,
    idle: Mutex<Vec<Connection>>,
}

/// Idle connections kept for the next requests, at most this many.
const POOLED: usize = 8;

/// A gallery connection borrowed from the service's pool (see [`Service::connection`]).
pub struct Pooled<'a> {
    conn: Option<Connection>,
    pool: &'a Mutex<Vec<Connection>>,
}

impl std::ops::Deref for Pooled<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn.as_ref().expect("held until dropped")
    }
}

impl std::ops::DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        self.conn.as_mut().expect("held until dropped")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        // Every transaction of a request commits or rolls back when its `Transaction` drops, so
        // a connection comes back in autocommit; one that does not is closed instead.
        if let (Some(conn), Ok(mut idle)) = (self.conn.take(), self.pool.lock()) {
            if idle.len() < POOLED && conn.is_autocommit() {
                idle.push(conn);
            }
        }
    }
}

/// The search matrix, kept in memory and reloaded when the gallery changed. SQLite's
/// `data_version`, read on a connection of its own, changes whenever any other connection
/// (the indexer, a `smoothface index` beside the service) commits.
struct FaceCache {
    watcher: Mutex<Connection>,
    current: RwLock<Option<(i64, Arc<FaceMatrix>)>>,
    reload: Mutex<()>,
}

impl Service {
    /// Opens the gallery, registers the model and starts the background indexer (which indexes
    /// the libraries at once when there are any).
    pub fn start(config: Config, pipeline: Pipeline) -> Result<Arc<Service>> {
        let access = config
            .token_file
            .as_deref()
            .map(auth::Access::open)
            .transpose()?;
        let conn = db::open(&config.db)?;
        let emb = &pipeline.embedder;
        let model_id = crate::gallery::model::adopt(&conn, emb)?;
        let cache = Cache::for_gallery(&config.db);
        cache.sweep(&conn)?;
        let pipeline = Arc::new(pipeline);
        let indexer =
            indexer::Indexer::start(pipeline.clone(), config.clone(), model_id, cache.clone())?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(Arc::new(Service {
            pipeline,
            model_id,
            cache,
            indexer,
            access,
            analysis: tokio::sync::Semaphore::new(cores),
            faces: FaceCache {
                watcher: Mutex::new(conn),
                current: RwLock::new(None),
                reload: Mutex::new(()),
            },
            idle: Mutex::new(Vec::new()),
            config,
        }))
    }

    /// A connection to the gallery for one request: an idle one from the pool, or a new one.
    /// It goes back to the pool when dropped, so a request pays for opening the gallery (its
    /// settings, its schema check) only when all the pooled ones are in use.
    pub fn connection(&self) -> Result<Pooled<'_>> {
        let idle = self.idle.lock().expect("not poisoned").pop();
        let conn = match idle {
            Some(c) => c,
            None => db::open(&self.config.db)?,
        };
        Ok(Pooled {
            conn: Some(conn),
            pool: &self.idle,
        })
    }

    /// The faces to search, current unless an index run is writing: then the last loaded
    /// matrix is used while a newer one loads, so searches never wait on the indexer.
    pub fn matrix(self: &Arc<Self>) -> Result<Arc<FaceMatrix>> {
        let version = self.data_version()?;
        let current = self.faces.current.read().expect("not poisoned").clone();
        match current {
            Some((v, m)) if v == version => Ok(m),
            Some((_, m)) if self.indexer.is_running() => {
                if let Ok(guard) = self.faces.reload.try_lock() {
                    drop(guard);
                    let service = self.clone();
                    std::thread::spawn(move || {
                        // A failed reload leaves the older matrix; the next search retries.
                        let _ = service.reload(version);
                    });
                }
                Ok(m)
            }
            _ => self.reload(version),
        }
    }

    fn data_version(&self) -> Result<i64> {
        let watcher = self.faces.watcher.lock().expect("not poisoned");
        Ok(watcher.query_row("PRAGMA data_version", [], |r| r.get(0))?)
    }

    /// Loads the matrix as of `version` (read before loading, so a commit during the load
    /// shows as a newer version and is loaded next time), one load at a time.
    fn reload(&self, version: i64) -> Result<Arc<FaceMatrix>> {
        let _one_at_a_time = self.faces.reload.lock().expect("not poisoned");
        if let Some((v, m)) = self.faces.current.read().expect("not poisoned").as_ref() {
            if *v == version {
                return Ok(m.clone());
            }
        }
        let conn = self.connection()?;
        let mut matrix = FaceMatrix::load(&conn, self.model_id, self.pipeline.embedder.dim())?;
        // The service answers many queries from one load: large galleries scan compact codes.
        matrix.compact_when_large();
        let matrix = Arc::new(matrix);
        *self.faces.current.write().expect("not poisoned") = Some((version, matrix.clone()));
        Ok(matrix)
    }
}

/// The whole service: the web app, the API, and the guard in front of both. At most
/// [`MAX_IN_FLIGHT`] requests that passed the guard are handled at once (one limit for every
/// route: tower's global limit, where a plain one would count each route apart).
pub fn router(service: Arc<Service>) -> Router {
    let max_upload = service.config.max_upload;
    Router::new()
        .merge(web::routes())
        .merge(api::routes(max_upload))
        .merge(auth::routes())
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            MAX_IN_FLIGHT,
        ))
        .layer(axum::middleware::from_fn_with_state(
            service.clone(),
            auth::guard,
        ))
        .with_state(service)
}

/// Resolves at Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_may_go_without_a_token() {
        for ok in ["127.0.0.1:8080", "[::1]:80", "127.0.0.2:1"] {
            check_listen(&ok.parse().unwrap(), None).unwrap();
        }
        for open in ["0.0.0.0:8080", "192.168.1.5:8080", "[::]:8080"] {
            let e = check_listen(&open.parse().unwrap(), None).unwrap_err();
            assert!(e.to_string().contains("--token-file"), "{e}");
            check_listen(&open.parse().unwrap(), Some("a-long-enough-token")).unwrap();
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_token_file_must_be_private_and_long_enough() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        let write = |text: &str, mode: u32| {
            std::fs::write(&f, text).unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        write("0123456789abcdef0123\n", 0o600);
        assert_eq!(read_token(&f).unwrap(), "0123456789abcdef0123");
        write("0123456789abcdef0123\n", 0o644);
        assert!(read_token(&f)
            .unwrap_err()
            .to_string()
            .contains("chmod 600"));
        write("short\n", 0o600);
        assert!(read_token(&f)
            .unwrap_err()
            .to_string()
            .contains("at least 16"));
        assert!(read_token(&dir.path().join("none")).is_err());
    }
}
