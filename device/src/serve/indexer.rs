//! The service's background indexer: one thread that indexes the library folders (at start and
//! on request) and then updates the people, as `smoothface index` does.
//!
//! It is the gallery's one writer of faces; searches read beside it (WAL). Its workers run in a
//! thread pool of their own at a lower priority (nice 10), so the searches' own parallel scans
//! never queue behind a photo being analysed and a request stays quick while it runs. Each file
//! is its own transaction, so a killed service loses at most the files in flight and the next
//! run goes on from there.

use super::Config;
use crate::gallery::index::{self, IndexReport, Progress};
use crate::people::store::{self as people_store, UpdateReport};
use crate::pipeline::Pipeline;
use crate::thumbs::Cache;
use anyhow::{Context, Result};
use serde::Serialize;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

/// Where the indexer is, for `GET /api/index` and the page.
#[derive(Debug, Clone, Serialize)]
pub struct IndexStatus {
    /// A run is going on.
    pub running: bool,
    /// Another run was asked for and will start when this one ends.
    pub queued: bool,
    /// The folders it indexes.
    pub libraries: Vec<String>,
    /// Runs finished since the service started.
    pub runs: u64,
    /// The run going on: files to examine (0 while the folders are walked), examined, faces
    /// stored, failed.
    pub current: Option<Counts>,
    /// The last finished run.
    pub last: Option<LastRun>,
}

/// Counts of a run in progress.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Counts {
    /// Files to examine.
    pub total: usize,
    /// Files examined.
    pub done: usize,
    /// Faces stored.
    pub faces: usize,
    /// Files that failed.
    pub failed: usize,
}

/// What the last run did.
#[derive(Debug, Clone, Serialize)]
pub struct LastRun {
    /// Its report, as `smoothface index --json` gives it (absent when the run failed).
    pub report: Option<IndexReport>,
    /// The people update after it.
    pub people: Option<UpdateReport>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// How long it took.
    pub seconds: f64,
}

#[derive(Default)]
struct State {
    running: Option<Arc<Progress>>,
    queued: bool,
    runs: u64,
    last: Option<LastRun>,
}

/// The indexer thread and its status.
pub struct Indexer {
    config: Config,
    state: Mutex<State>,
    wake: Condvar,
}

impl Indexer {
    /// Starts the thread; it indexes the libraries at once when there are any.
    pub fn start(
        pipeline: Arc<Pipeline>,
        config: Config,
        model_id: i64,
        cache: Cache,
    ) -> Result<Arc<Indexer>> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("index-{i}"))
            .start_handler(|_| lower_priority())
            .build()
            .context("cannot start the indexer's threads")?;
        let indexer = Arc::new(Indexer {
            state: Mutex::new(State {
                queued: !config.libraries.is_empty(),
                ..State::default()
            }),
            config,
            wake: Condvar::new(),
        });
        let me = indexer.clone();
        std::thread::Builder::new()
            .name("indexer".into())
            .spawn(move || loop {
                let progress = me.next_run();
                let started = Instant::now();
                let outcome = pool.install(|| me.run(&pipeline, model_id, &progress));
                // The folders of forgotten or changed files' crops go with them.
                if let Ok(conn) = crate::gallery::db::open(&me.config.db) {
                    let _ = cache.sweep(&conn);
                }
                let last = match outcome {
                    Ok((report, people)) => LastRun {
                        report: Some(report),
                        people: Some(people),
                        error: None,
                        seconds: started.elapsed().as_secs_f64(),
                    },
                    Err(e) => LastRun {
                        report: None,
                        people: None,
                        error: Some(format!("{e:#}")),
                        seconds: started.elapsed().as_secs_f64(),
                    },
                };
                let mut state = me.state.lock().expect("not poisoned");
                state.running = None;
                state.runs += 1;
                state.last = Some(last);
            })
            .context("cannot start the indexer")?;
        Ok(indexer)
    }

    /// Asks for a run; returns false when there is nothing to index (no libraries).
    pub fn request(&self) -> bool {
        if self.config.libraries.is_empty() {
            return false;
        }
        let mut state = self.state.lock().expect("not poisoned");
        state.queued = true;
        self.wake.notify_one();
        true
    }

    /// Whether a run is going on.
    pub fn is_running(&self) -> bool {
        self.state.lock().expect("not poisoned").running.is_some()
    }

    /// The status as the API shows it.
    pub fn status(&self) -> IndexStatus {
        let state = self.state.lock().expect("not poisoned");
        IndexStatus {
            running: state.running.is_some(),
            queued: state.queued,
            libraries: self
                .config
                .libraries
                .iter()
                .map(|l| l.display().to_string())
                .collect(),
            runs: state.runs,
            current: state.running.as_ref().map(|p| Counts {
                total: p.total.load(Ordering::Relaxed),
                done: p.done.load(Ordering::Relaxed),
                faces: p.faces.load(Ordering::Relaxed),
                failed: p.failed.load(Ordering::Relaxed),
            }),
            last: state.last.clone(),
        }
    }

    /// Waits until a run is asked for, and marks it started.
    fn next_run(&self) -> Arc<Progress> {
        let mut state = self.state.lock().expect("not poisoned");
        while !state.queued {
            state = self.wake.wait(state).expect("not poisoned");
        }
        state.queued = false;
        let progress = Arc::new(Progress::default());
        state.running = Some(progress.clone());
        progress
    }

    fn run(
        &self,
        pipeline: &Pipeline,
        model_id: i64,
        progress: &Progress,
    ) -> Result<(IndexReport, UpdateReport)> {
        let c = &self.config;
        let mut conn = crate::gallery::db::open(&c.db)?;
        let report = index::index(
            &mut conn,
            pipeline,
            &c.libraries,
            c.sampling,
            false,
            progress,
        )?;
        let people = people_store::update(&mut conn, model_id, &c.eligibility, &c.linkage)?;
        Ok((report, people))
    }
}

/// Nice 10 for the calling thread (Linux applies it per thread), so the indexer yields the cores
/// to requests. Failing to lower it only costs responsiveness.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority has no memory effects; `who = 0` is the calling thread.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
}
