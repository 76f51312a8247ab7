//! The service's connections: accepted up to a limit, timed, and closed when idle.
//!
//! `axum::serve` sets no timeout and has no setting for one, so the service runs hyper's HTTP/1
//! server itself, with the HTTP stack's own limits where it has them:
//!
//! - headers: hyper's header-read timeout ([`Limits::header_read`]) closes a connection whose
//!   request headers have not all come in time. It runs whenever a connection waits for a
//!   request, so an idle keep-alive connection is closed after the same time;
//! - bodies: tower-http's request-body timeout fails a body that sends nothing for
//!   [`Limits::body_idle`], and its request timeout answers 408 to a request not answered within
//!   [`Limits::request`] of its headers, body included (a body trickled a byte at a time);
//! - connections: at most [`Limits::connections`] are open at once, fewer than the process may
//!   open files. hyper has no such setting, so the accept loop here keeps count. When every
//!   place is taken, the oldest connection with no request in flight makes room: closed at once
//!   if it never sent a whole request (as one held open to exhaust the service does), else
//!   after its answer (hyper's graceful shutdown). Without one, the new connection waits.

use super::{router, shutdown_signal, Service, MAX_IN_FLIGHT};
use anyhow::Result;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutLayer};

/// How long a request may take to arrive, and how many connections may be open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest wait for a request's headers, from the connection's start or its last answer:
    /// also how long an idle keep-alive connection stays open.
    pub header_read: Duration,
    /// Longest wait for the next part of a request's body.
    pub body_idle: Duration,
    /// Longest time from a request's headers to its answer, reading its body included.
    pub request: Duration,
    /// Connections open at once.
    pub connections: usize,
}

/// Default [`Limits::header_read`].
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`Limits::body_idle`].
pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`Limits::request`]: a 20 MB upload needs 350 kB/s.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Most connections open at once, whatever the open-file limit.
pub const MAX_CONNECTIONS: usize = 1024;
/// Fewest, however low the open-file limit.
const MIN_CONNECTIONS: usize = 16;
/// Open files left to the process itself beside its connections: its own (the gallery's pooled
/// connections, the indexer's, the runtime's) and those of each request in flight (a gallery
/// connection of three files, a photo).
const RESERVED_FILES: u64 = 64 + 4 * MAX_IN_FLIGHT as u64;

impl Limits {
    /// The default timeouts, and as many connections as this process's open-file limit leaves
    /// room for: the soft limit less `RESERVED_FILES`, at most [`MAX_CONNECTIONS`] (832 with
    /// the usual limit of 1024, 64 with 256).
    pub fn for_this_process() -> Limits {
        Limits {
            header_read: HEADER_READ_TIMEOUT,
            body_idle: BODY_IDLE_TIMEOUT,
            request: REQUEST_TIMEOUT,
            connections: connections_for(open_file_limit()),
        }
    }
}

/// The soft limit on open files (`ulimit -n`), where the system says.
fn open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes the struct it is given.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            return Some(limit.rlim_cur);
        }
    }
    None
}

fn connections_for(open_files: Option<u64>) -> usize {
    open_files.map_or(MAX_CONNECTIONS, |n| {
        n.saturating_sub(RESERVED_FILES)
            .clamp(MIN_CONNECTIONS as u64, MAX_CONNECTIONS as u64) as usize
    })
}

/// Serves with [`Limits::for_this_process`] until Ctrl-C or SIGTERM; requests in flight finish
/// first.
pub async fn serve(service: Arc<Service>, listener: TcpListener) -> Result<()> {
    serve_with(
        service,
        listener,
        Limits::for_this_process(),
        shutdown_signal(),
    )
    .await
}

/// Serves with these limits until `shutdown` resolves; then stops accepting, closes the
/// connections that wait for a request and lets those with one in flight finish its answer.
pub async fn serve_with(
    service: Arc<Service>,
    listener: TcpListener,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let app = tower::ServiceBuilder::new()
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request,
        ))
        .layer(RequestBodyTimeoutLayer::new(limits.body_idle))
        .service(router(service));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read);
    let places = Arc::new(Places::new(limits.connections));
    // Dropped at shutdown, which every connection hears.
    let (stop, stopping) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let place = tokio::select! {
            place = places.admit() => place,
            () = &mut shutdown => break,
        };
        let (app, http, mut stopping) = (app.clone(), http.clone(), stopping.clone());
        tokio::spawn(async move {
            let slot = place.slot.clone();
            let requests = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(remote));
                let in_flight = slot.begin();
                let answer = app.clone().oneshot(req);
                async move {
                    let answered = answer.await;
                    drop(in_flight);
                    answered
                }
            });
            let mut conn = std::pin::pin!(http.serve_connection(TokioIo::new(stream), requests));
            let mut closing = false;
            loop {
                tokio::select! {
                    // A connection's errors (a timeout, a malformed request) are its client's:
                    // hyper has answered what it could, and the connection is over.
                    _ = conn.as_mut() => break,
                    () = place.slot.evict.notified(), if !closing => {}
                    _ = stopping.changed(), if !closing => {}
                }
                // Asked to close: to make room, or the service stops.
                if !place.slot.served.load(Ordering::SeqCst) {
                    break; // never sent a whole request: nothing to finish
                }
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            drop(place);
        });
    }
    drop(stop);
    drop(listener);
    places.all_closed().await;
    Ok(())
}

/// An accept that failed. A connection reset before it was accepted is nothing; anything else
/// (out of files, out of memory) would fail again at once, so the loop waits a second first, as
/// hyper's and axum's own loops do.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind;
    if !matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        eprintln!("smoothface serve: cannot accept a connection: {e}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The places for connections: a semaphore of [`Limits::connections`] permits, and the open
/// connections, oldest first, to pick one to close when all are taken.
struct Places {
    permits: Arc<Semaphore>,
    size: u32,
    open: Mutex<BTreeMap<u64, Arc<Slot>>>,
    next: AtomicU64,
}

/// What the accept loop knows of an open connection.
#[derive(Default)]
struct Slot {
    /// Requests being answered.
    in_flight: AtomicUsize,
    /// It has sent a whole request (its headers), so closing it waits for its answer.
    served: AtomicBool,
    /// It was asked to close (so it is not asked again).
    evicted: AtomicBool,
    evict: Notify,
}

impl Slot {
    /// A request came: counted until the returned guard drops.
    fn begin(self: &Arc<Slot>) -> InFlight {
        self.served.store(true, Ordering::SeqCst);
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }
}

/// A request being answered (see [`Slot::begin`]).
struct InFlight(Arc<Slot>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A connection's place, given back when it drops.
struct Place {
    id: u64,
    slot: Arc<Slot>,
    places: Arc<Places>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Ok(mut open) = self.places.open.lock() {
            open.remove(&self.id);
        }
    }
}

impl Places {
    fn new(connections: usize) -> Places {
        // At least one, and few enough for a semaphore's count.
        let size = connections.clamp(1, 1 << 20) as u32;
        Places {
            permits: Arc::new(Semaphore::new(size as usize)),
            size,
            open: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(0),
        }
    }

    /// A place for a new connection: a free one, else the one the oldest connection without a
    /// request in flight gives up, else the first given back.
    async fn admit(self: &Arc<Places>) -> Place {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                self.make_room();
                self.permits
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed")
            }
        };
        let id = self.next.fetch_add(1, Ordering::SeqCst);
        let slot = Arc::new(Slot::default());
        self.open
            .lock()
            .expect("not poisoned")
            .insert(id, slot.clone());
        Place {
            id,
            slot,
            places: self.clone(),
            _permit: permit,
        }
    }

    /// Asks the oldest connection with no request in flight, not asked before, to close.
    fn make_room(&self) {
        let open = self.open.lock().expect("not poisoned");
        let idle = open.values().find(|s| {
            s.in_flight.load(Ordering::SeqCst) == 0 && !s.evicted.swap(true, Ordering::SeqCst)
        });
        if let Some(slot) = idle {
            slot.evict.notify_one();
        }
    }

    /// Resolves once every connection has closed.
    async fn all_closed(&self) {
        // Every permit back: no connection holds a place.
        let _all = self.permits.acquire_many(self.size).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_fit_in_the_open_file_limit() {
        assert_eq!(connections_for(Some(1024)), 1024 - RESERVED_FILES as usize);
        assert_eq!(connections_for(Some(256)), 64);
        assert_eq!(connections_for(Some(100)), MIN_CONNECTIONS);
        assert_eq!(connections_for(Some(u64::MAX)), MAX_CONNECTIONS);
        assert_eq!(connections_for(None), MAX_CONNECTIONS);
        assert!(Limits::for_this_process().connections >= MIN_CONNECTIONS);
    }
}
