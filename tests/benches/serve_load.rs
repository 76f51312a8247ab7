//! Load on `smoothface serve`: requests per second and p50/p99 latency of searches over
//! galleries of 10k and 100k faces, from concurrent clients on loopback, beside the same
//! searches called in-process (no HTTP: the floor the service's overhead is measured against),
//! and the same service on axum's own server without its timeouts and connection cap (what
//! those limits cost).
//!
//! `cargo bench --workspace --bench serve_load [-- --faces 10000,100000 --clients 4
//! --requests 200 --seconds 60]`. The galleries hold random unit embeddings (a search's cost
//! depends on how many faces it scans, not on who they are); the query is a real photo of
//! ../shared/data/faces, detected and embedded on every request. Each measurement stops at
//! `--requests` per client or `--seconds`, whichever comes first.

use smoothface_device::detector::DetectorConfig;
use smoothface_device::frames::Sampling;
use smoothface_device::gallery::db::{self, FileFacts, StoredFace};
use smoothface_device::media::{self, DEFAULT_MAX_PIXELS};
use smoothface_device::people::linkage::LinkageConfig;
use smoothface_device::people::store::Eligibility;
use smoothface_device::pipeline::Pipeline;
use smoothface_device::serve::{self, Config, Service};
use smoothface_tests::{faces, models, Rng};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Args {
    faces: Vec<usize>,
    clients: usize,
    requests: usize,
    seconds: f64,
}

fn args() -> Args {
    let mut a = Args {
        faces: vec![10_000, 100_000],
        clients: 4,
        requests: 200,
        seconds: 60.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--faces" => a.faces = value().split(',').map(|v| v.parse().unwrap()).collect(),
            "--clients" => a.clients = value().parse().unwrap(),
            "--requests" => a.requests = value().parse().unwrap(),
            "--seconds" => a.seconds = value().parse().unwrap(),
            "--bench" => {} // cargo bench passes it
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// A gallery of `n` faces with random unit embeddings, one face per media row.
fn synthetic_gallery(path: &Path, pipeline: &Pipeline, n: usize) {
    let mut conn = db::open(path).unwrap();
    let emb = &pipeline.embedder;
    let model = db::model_row(&conn, &emb.model_id, &emb.name, emb.dim()).unwrap();
    let mut rng = Rng::new(7);
    let tx = conn.transaction().unwrap();
    for i in 0..n {
        let mut v: Vec<f32> = (0..emb.dim()).map(|_| rng.normal() as f32).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
        let facts = FileFacts {
            path: format!("/synthetic/{i:07}.jpg"),
            content_hash: format!("{i:064x}"),
            size: 1,
            mtime_ns: i as i64,
        };
        let id = db::upsert_media(&tx, &facts, None).unwrap();
        let face = StoredFace {
            bbox: [10.0, 10.0, 110.0, 130.0],
            score: 0.999,
            landmarks: [
                [40.0, 50.0],
                [80.0, 50.0],
                [60.0, 70.0],
                [45.0, 95.0],
                [75.0, 95.0],
            ],
            embedding: v,
            span: None,
        };
        db::store_faces(&tx, id, model, &[face]).unwrap();
    }
    tx.commit().unwrap();
}

fn load_pipeline() -> Pipeline {
    let m = models();
    Pipeline::load(
        &m.join("mobilefacenet"),
        &m.join("mtcnn"),
        DetectorConfig::default(),
        DEFAULT_MAX_PIXELS,
    )
    .unwrap()
}

/// Latencies of one measurement, and its failures.
struct Run {
    latencies: Vec<Duration>,
    errors: usize,
    wall: Duration,
}

impl Run {
    fn percentile(&self, p: f64) -> f64 {
        let mut v = self.latencies.clone();
        v.sort();
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1].as_secs_f64() * 1e3
    }

    fn row(&self, what: &str, faces: usize, clients: usize) -> String {
        format!(
            "| {what} | {faces} | {clients} | {} | {:.1} | {:.0} | {:.0} | {} |",
            self.latencies.len(),
            self.latencies.len() as f64 / self.wall.as_secs_f64(),
            self.percentile(50.0),
            self.percentile(99.0),
            self.errors
        )
    }
}

impl Run {
    /// Both runs as one: their calls, errors and time together.
    fn and(mut self, other: Run) -> Run {
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
        self.wall += other.wall;
        self
    }
}

/// Two ways of making one request measured in turn, A B B A, each way's two halves then taken
/// together: a drift of the machine's speed during the four (another tenant, a warmer cache)
/// weighs on both alike.
fn side_by_side(
    a: &Args,
    first: impl Fn() -> bool + Sync,
    second: impl Fn() -> bool + Sync,
) -> (Run, Run) {
    let half = Args {
        requests: a.requests.div_ceil(2),
        seconds: a.seconds / 2.0,
        faces: Vec::new(),
        clients: a.clients,
    };
    let (a1, b1) = (measure(&half, &first), measure(&half, &second));
    let (b2, a2) = (measure(&half, &second), measure(&half, &first));
    (a1.and(a2), b1.and(b2))
}

/// `clients` threads each calling `request` until `requests` calls or `seconds` have passed;
/// `request` answers whether the call succeeded.
fn measure(a: &Args, request: impl Fn() -> bool + Sync) -> Run {
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(a.seconds);
    let per_client: Vec<(Vec<Duration>, usize)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..a.clients)
            .map(|_| {
                scope.spawn(|| {
                    let (mut lat, mut errors) = (Vec::new(), 0);
                    while lat.len() < a.requests && Instant::now() < deadline {
                        let t = Instant::now();
                        let ok = request();
                        lat.push(t.elapsed());
                        errors += !ok as usize;
                    }
                    (lat, errors)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let wall = started.elapsed();
    Run {
        latencies: per_client.iter().flat_map(|(l, _)| l.clone()).collect(),
        errors: per_client.iter().map(|(_, e)| e).sum(),
        wall,
    }
}

fn main() {
    let a = args();
    let Some(lfw) = faces("serve_load", "lfw-devtrain") else {
        return;
    };
    let mut people: Vec<_> = std::fs::read_dir(&lfw)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    people.sort();
    let query_path = std::fs::read_dir(&people[0])
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let photo = Arc::new(std::fs::read(&query_path).unwrap());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut rows = Vec::new();
    for &n in &a.faces {
        let tmp = tempfile::tempdir().unwrap();
        let db_path = tmp.path().join("gallery.sqlite");
        let pipeline = load_pipeline();
        eprintln!("serve_load: a gallery of {n} faces...");
        synthetic_gallery(&db_path, &pipeline, n);
        let config = Config {
            db: db_path.clone(),
            token_file: None,
            libraries: Vec::new(),
            max_upload: serve::DEFAULT_MAX_UPLOAD,
            sampling: Sampling::DEFAULT,
            eligibility: Eligibility::default(),
            linkage: LinkageConfig::for_model(&pipeline.embedder.thresholds),
        };
        let service = Service::start(config, pipeline).unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        runtime.spawn(serve::serve(service.clone(), listener));
        // The same service on axum's own server, without the timeouts and the connection cap:
        // what the service was before them, measured beside it.
        let plain = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let plain_url = format!("http://{}", plain.local_addr().unwrap());
        let app = serve::router(service.clone())
            .into_make_service_with_connect_info::<std::net::SocketAddr>();
        runtime.spawn(async move { axum::serve(plain, app).await });
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let post_to = |url: String| {
            let agent = agent.clone();
            let photo = photo.clone();
            move || {
                agent
                    .post(&format!("{url}/api/search?top=20"))
                    .send(&photo[..])
                    .is_ok_and(|mut r| r.status() == 200 && r.body_mut().read_to_vec().is_ok())
            }
        };
        let get_from = |url: String| {
            let agent = agent.clone();
            move || {
                agent
                    .get(&format!("{url}/api/search/face/1?top=20"))
                    .call()
                    .is_ok_and(|mut r| r.status() == 200 && r.body_mut().read_to_vec().is_ok())
            }
        };
        let (post, get) = (post_to(url.clone()), get_from(url.clone()));
        let (plain_post, plain_get) = (post_to(plain_url.clone()), get_from(plain_url));
        assert!(post() && get(), "the service answers");
        assert!(
            plain_post() && plain_get(),
            "the service answers without limits"
        );

        // The peer: the same work in-process, the matrix already loaded as the service's is.
        let matrix = service.matrix().unwrap();
        // Both rank and then read the hits' rows on a connection from the service's pool, as
        // the service does for each request: what is left between the two is HTTP, JSON, tokio.
        let ranked = |query: &[f32]| {
            let hits = matrix.rank_media(query, 20, -1.0);
            let conn = service.connection().unwrap();
            hits.iter()
                .all(|h| db::media_path(&conn, h.media_id).is_ok())
        };
        let direct_search = || {
            let img = media::decode_bytes(&photo, Path::new("query"), DEFAULT_MAX_PIXELS).unwrap();
            let faces = service.pipeline.analyze(&img).unwrap();
            ranked(&faces[0].embedding)
        };
        let query = matrix.embeddings()[..matrix.dim()].to_vec();
        let direct_face = || ranked(&query);

        eprintln!("serve_load: measuring {n} faces...");
        let (limited, plain) = side_by_side(&a, &post, &plain_post);
        rows.push(limited.row("POST /api/search (photo upload)", n, a.clients));
        rows.push(plain.row(
            "POST /api/search, no timeouts or connection cap (axum::serve)",
            n,
            a.clients,
        ));
        rows.push(measure(&a, direct_search).row(
            "in-process: decode, detect, embed, rank, read the rows",
            n,
            a.clients,
        ));
        let (limited, plain) = side_by_side(&a, &get, &plain_get);
        rows.push(limited.row("GET /api/search/face/ID", n, a.clients));
        rows.push(plain.row(
            "GET /api/search/face/ID, no timeouts or connection cap (axum::serve)",
            n,
            a.clients,
        ));
        rows.push(measure(&a, direct_face).row("in-process: rank, read the rows", n, a.clients));
    }
    println!("| request | faces | clients | requests | req/s | p50 ms | p99 ms | errors |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
}
