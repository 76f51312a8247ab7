//! The service's API in-process (axum's router driven by tower's `oneshot`, no sockets) on real
//! faces: every route, auth on and off, path traversal, broken and oversized uploads, searches
//! while the indexer writes.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use smoothface_device::detector::DetectorConfig;
use smoothface_device::frames::Sampling;
use smoothface_device::media::DEFAULT_MAX_PIXELS;
use smoothface_device::people::linkage::LinkageConfig;
use smoothface_device::people::store::Eligibility;
use smoothface_device::pipeline::Pipeline;
use smoothface_device::serve::{self, Config, Service};
use smoothface_tests::{copy_people, faces, library_with_query, make_clip, models};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;

const TOKEN: &str = "0123456789abcdef-the-test-token";

/// A service over a gallery in a temporary folder.
struct Served {
    service: Arc<Service>,
    router: Router,
    db: PathBuf,
    _tmp: tempfile::TempDir,
}

struct Options {
    libraries: Vec<PathBuf>,
    token: Option<&'static str>,
    max_upload: usize,
    max_pixels: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            libraries: Vec::new(),
            token: None,
            max_upload: serve::DEFAULT_MAX_UPLOAD,
            max_pixels: DEFAULT_MAX_PIXELS,
        }
    }
}

fn start(tmp: tempfile::TempDir, o: Options) -> Served {
    let m = models();
    let mut pipeline = Pipeline::load(
        &m.join("mobilefacenet"),
        &m.join("mtcnn"),
        DetectorConfig::default(),
        DEFAULT_MAX_PIXELS,
    )
    .unwrap();
    pipeline.max_pixels = o.max_pixels;
    let db = tmp.path().join("gallery.sqlite");
    let config = Config {
        db: db.clone(),
        token: o.token.map(str::to_string),
        libraries: o.libraries,
        max_upload: o.max_upload,
        sampling: Sampling::DEFAULT,
        eligibility: Eligibility::default(),
        linkage: LinkageConfig::for_model(&pipeline.embedder.thresholds),
    };
    let service = Service::start(config, pipeline).unwrap();
    Served {
        router: serve::router(service.clone()),
        service,
        db,
        _tmp: tmp,
    }
}

impl Served {
    /// Waits for the indexer to finish `runs` runs.
    fn indexed(&self, runs: u64) {
        let started = Instant::now();
        while self.service.indexer.status().runs < runs {
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "indexing took over 5 minutes"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let last = self.service.indexer.status().last.unwrap();
        assert!(last.error.is_none(), "{:?}", last.error);
    }

    async fn send(&self, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        let response = self.router.clone().oneshot(req).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        (parts.status, parts.headers, bytes.to_vec())
    }

    async fn get(&self, uri: &str) -> (StatusCode, Vec<u8>) {
        let (s, _, b) = self.send(request("GET", uri, Body::empty())).await;
        (s, b)
    }

    /// GET of a JSON route that must succeed.
    async fn json(&self, uri: &str) -> Value {
        let (s, b) = self.get(uri).await;
        assert_eq!(s, StatusCode::OK, "{uri}: {}", String::from_utf8_lossy(&b));
        serde_json::from_slice(&b).unwrap()
    }

    /// POST of a JSON body; the status and the JSON answer.
    async fn post(&self, uri: &str, body: Value) -> (StatusCode, Value) {
        let mut req = request("POST", uri, Body::from(body.to_string()));
        req.headers_mut()
            .insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        let (s, _, b) = self.send(req).await;
        (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
    }

    async fn search(&self, photo: &[u8], query: &str) -> (StatusCode, Value) {
        let (s, _, b) = self
            .send(request(
                "POST",
                &format!("/api/search{query}"),
                Body::from(photo.to_vec()),
            ))
            .await;
        (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
    }
}

/// A request as a browser on the same machine sends it (Host names loopback).
fn request(method: &str, uri: &str, body: Body) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, "127.0.0.1:8080")
        .body(body)
        .unwrap()
}

fn folder_of(path: &str) -> String {
    Path::new(path)
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// The service indexing a library of `people` people with 4 photos each (the first person's
/// fifth photo kept out, to search with): the service, the people, that photo.
fn served_library(test: &str, people: usize) -> Option<(Served, Vec<String>, PathBuf)> {
    let src = faces(test, "lfw-devtrain")?;
    let tmp = tempfile::tempdir().unwrap();
    let (lib, names, query) = library_with_query(tmp.path(), &src, people, 4);
    let s = start(
        tmp,
        Options {
            libraries: vec![lib],
            ..Options::default()
        },
    );
    Some((s, names, query))
}

/// The library the service indexes.
fn lib_of(s: &Served) -> PathBuf {
    s.service.config.libraries[0].clone()
}

fn is_jpeg_within(bytes: &[u8], side: u32) -> (u32, u32) {
    let img = image::load_from_memory_with_format(bytes, image::ImageFormat::Jpeg).unwrap();
    assert!(
        img.width().max(img.height()) <= side,
        "{}x{}",
        img.width(),
        img.height()
    );
    (img.width(), img.height())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_searches_browses_and_fixes_people_on_real_faces() {
    let Some((s, names, query)) =
        served_library("the_api_searches_browses_and_fixes_people_on_real_faces", 3)
    else {
        return;
    };
    s.indexed(1);

    let status = s.json("/api/status").await;
    assert_eq!(status["media"], 12, "{status}");
    assert!(status["faces"].as_i64().unwrap() >= 12, "{status}");
    assert_eq!(status["token"], false);

    // Search by upload: the person's four photos first, best first.
    let photo = std::fs::read(&query).unwrap();
    let (code, r) = s.search(&photo, "").await;
    assert_eq!(code, StatusCode::OK, "{r}");
    assert!(!r["faces"].as_array().unwrap().is_empty() && r["face"] == 0);
    let results = r["results"].as_array().unwrap();
    let top4: Vec<String> = results[..4]
        .iter()
        .map(|h| folder_of(h["path"].as_str().unwrap()))
        .collect();
    assert_eq!(top4, vec![names[0].clone(); 4], "{r}");
    let scores: Vec<f64> = results
        .iter()
        .map(|h| h["score"].as_f64().unwrap())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    assert!(results
        .iter()
        .all(|h| h["kind"] == "photo" && h["start_s"].is_null()));
    let (_, r2) = s.search(&photo, "?top=2").await;
    assert_eq!(r2["results"].as_array().unwrap().len(), 2);
    let (code, r3) = s.search(&photo, "?face=7").await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{r3}");
    assert!(r3["error"].as_str().unwrap().contains("no face 7"));

    // Browsing: newest first, a media row with its faces, thumbnails and crops as JPEGs.
    let media = s.json("/api/media?limit=100").await;
    assert_eq!(media["total"], 12);
    let times: Vec<f64> = media["media"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mtime"].as_f64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    assert_eq!(
        s.json("/api/media?limit=5&offset=10").await["media"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let best = &results[0];
    let one = s.json(&format!("/api/media/{}", best["media"])).await;
    assert_eq!(one["path"], best["path"]);
    assert!(one["faces"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["id"] == best["face"]));
    let (code, thumb) = s
        .get(&format!("/api/media/{}/thumbnail", best["media"]))
        .await;
    assert_eq!(code, StatusCode::OK);
    is_jpeg_within(&thumb, 320);
    let (_, small) = s
        .get(&format!("/api/media/{}/thumbnail?size=100", best["media"]))
        .await;
    is_jpeg_within(&small, 160);
    let (code, crop) = s.get(&format!("/api/faces/{}/crop", best["face"])).await;
    assert_eq!(code, StatusCode::OK);
    let (w, h) = is_jpeg_within(&crop, 160);
    assert_eq!(w, h, "a face crop is square");
    assert_eq!(
        s.get("/api/media/99999/thumbnail").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.get("/api/faces/99999/crop").await.0,
        StatusCode::NOT_FOUND
    );

    // Search by a face of the gallery: its own photo first, at cosine 1.
    let by_face = s
        .json(&format!("/api/search/face/{}?top=3", best["face"]))
        .await;
    assert_eq!(by_face["results"][0]["media"], best["media"]);
    assert!(by_face["results"][0]["score"].as_f64().unwrap() > 0.999);

    // People: name, search by person, merge, undo, split, move, reject.
    let person = best["person"]
        .as_i64()
        .expect("the best hit's face is grouped");
    let (code, named) = s
        .post(
            &format!("/api/people/{person}/name"),
            json!({"name": "Anna"}),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{named}");
    let people = s.json("/api/people").await;
    let list = people["people"].as_array().unwrap();
    assert!(
        list.iter()
            .any(|p| p["id"] == person && p["name"] == "Anna"),
        "{people}"
    );
    let mine = s.json(&format!("/api/search/person/{person}")).await;
    let hits = mine["results"].as_array().unwrap();
    let assigned = hits.iter().take_while(|h| h["assigned"] == true).count();
    assert!(
        assigned >= 2 && hits[assigned..].iter().all(|h| h["assigned"] == false),
        "{mine}"
    );
    assert!(hits[..assigned]
        .iter()
        .all(|h| folder_of(h["path"].as_str().unwrap()) == names[0]));

    let others: Vec<i64> = list
        .iter()
        .map(|p| p["id"].as_i64().unwrap())
        .filter(|&id| id != person)
        .collect();
    assert!(others.len() >= 2, "{people}");
    let (code, merged) = s
        .post(
            &format!("/api/people/{}/merge", others[0]),
            json!({"others": [others[1]]}),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{merged}");
    assert_eq!(
        s.json("/api/people").await["people"]
            .as_array()
            .unwrap()
            .len(),
        list.len() - 1
    );
    let (code, _) = s.post("/api/people/undo", json!({})).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        s.json("/api/people").await["people"]
            .as_array()
            .unwrap()
            .len(),
        list.len()
    );

    let anna = s.json(&format!("/api/people/{person}")).await;
    let face = anna["face_list"][0]["face"].as_i64().unwrap();
    let (code, split) = s
        .post(
            &format!("/api/people/{person}/split"),
            json!({"faces": [face], "name": "Ben"}),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{split}");
    let ben = split["person"].as_i64().unwrap();
    assert_ne!(ben, person);
    let (code, moved) = s
        .post(
            &format!("/api/faces/{face}/move"),
            json!({"person": person}),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{moved}");
    assert_eq!(moved["person"], person);
    let (code, rejected) = s
        .post(
            &format!("/api/people/{person}/reject"),
            json!({"faces": [face]}),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{rejected}");
    let after = s.json(&format!("/api/people/{person}")).await;
    assert!(after["face_list"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["face"] != face));
    // A rejected face is not suggested for the person again.
    let again = s.json(&format!("/api/search/person/{person}?top=0")).await;
    assert!(again["results"]
        .as_array()
        .unwrap()
        .iter()
        .all(|h| h["face"] != face));

    // Refusals are 4xx with the cause, never 500.
    let (code, e) = s.post("/api/people/99999/name", json!({"name": "X"})).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{e}");
    let (code, e) = s
        .post(&format!("/api/people/{person}/name"), json!({"nom": "X"}))
        .await;
    assert!(code.is_client_error(), "{code} {e}");
    let (code, e) = s
        .post(
            &format!("/api/people/{person}/merge"),
            json!({"others": []}),
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{e}");
    assert_eq!(s.get("/api/people/nobody").await.0, StatusCode::NOT_FOUND);

    // Stats, a second index run on request (nothing new), then forget one photo.
    let stats = s.json("/api/stats").await;
    assert_eq!(stats["media"], 12);
    let (code, _) = s.post("/api/index", json!({})).await;
    assert_eq!(code, StatusCode::ACCEPTED);
    s.indexed(2);
    let last = s.json("/api/index").await;
    assert_eq!(last["last"]["report"]["unchanged"], 12, "{last}");

    let gone = best["media"].as_i64().unwrap();
    let cache = PathBuf::from(format!("{}-cache", s.db.display()));
    let cached = |id: i64| {
        std::fs::read_dir(&cache).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(&format!("{id}-"))
        })
    };
    assert!(cached(gone), "the thumbnail and crop were cached");
    let (code, f) = s.post("/api/forget", json!({"media": [gone]})).await;
    assert_eq!(code, StatusCode::OK, "{f}");
    assert_eq!(f["media"], 1);
    assert!(!cached(gone), "forgetting a photo deletes its cached crops");
    assert_eq!(s.json("/api/media").await["total"], 11);
    assert_eq!(
        s.get(&format!("/api/media/{gone}/thumbnail")).await.0,
        StatusCode::NOT_FOUND
    );
    let (code, _) = s.post("/api/forget", json!({"media": [gone]})).await;
    assert_eq!(code, StatusCode::NOT_FOUND);

    // An upload is stored only when asked: then it joins the library and is indexed.
    let uploads = lib_of(&s).join("uploads");
    assert!(!uploads.exists(), "no upload was stored unasked");
    let (code, kept) = s.search(&photo, "?keep=true").await;
    assert_eq!(code, StatusCode::OK, "{kept}");
    let kept_path = PathBuf::from(kept["kept"].as_str().unwrap());
    assert!(kept_path.starts_with(&uploads), "{kept}");
    assert_eq!(std::fs::read(&kept_path).unwrap(), photo);
    s.indexed(3);
    // 11, the kept photo, and the forgotten one: forget leaves the file in the library, and the
    // index run the upload asked for adds it back (as `smoothface index` would).
    assert_eq!(s.json("/api/media").await["total"], 13);

    // The page and its assets.
    let (code, page) = s.get("/").await;
    assert_eq!(code, StatusCode::OK);
    assert!(String::from_utf8_lossy(&page).contains("<script src=\"/app.js\""));
    assert_eq!(s.get("/app.js").await.0, StatusCode::OK);
    assert_eq!(s.get("/app.css").await.0, StatusCode::OK);
    assert_eq!(s.get("/api/nothing").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_every_route_and_the_login_sets_a_strict_cookie() {
    let tmp = tempfile::tempdir().unwrap();
    let s = start(
        tmp,
        Options {
            token: Some(TOKEN),
            ..Options::default()
        },
    );
    let with = |uri: &str, auth: Option<(&str, String)>| {
        let mut r = request("GET", uri, Body::empty());
        if let Some((k, v)) = auth {
            r.headers_mut().insert(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        r
    };
    let (code, _, body) = s.send(with("/api/status", None)).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert!(String::from_utf8_lossy(&body).contains("Authorization: Bearer"));
    // Every route of the API, whatever it would do, is refused without the token.
    for (method, uri) in [
        ("GET", "/api/status"),
        ("GET", "/api/stats"),
        ("GET", "/api/index"),
        ("POST", "/api/index"),
        ("GET", "/api/media"),
        ("GET", "/api/media/1"),
        ("GET", "/api/media/1/thumbnail"),
        ("GET", "/api/faces/1/crop"),
        ("POST", "/api/faces/1/move"),
        ("POST", "/api/search"),
        ("GET", "/api/search/face/1"),
        ("GET", "/api/search/person/1"),
        ("GET", "/api/people"),
        ("POST", "/api/people/undo"),
        ("GET", "/api/people/1"),
        ("POST", "/api/people/1/name"),
        ("POST", "/api/people/1/merge"),
        ("POST", "/api/people/1/split"),
        ("POST", "/api/people/1/reject"),
        ("POST", "/api/forget"),
        ("GET", "/api/no-such-route"),
    ] {
        let (code, _, _) = s.send(request(method, uri, Body::empty())).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED, "{method} {uri}");
    }
    let bearer = |t: &str| Some(("authorization", format!("Bearer {t}")));
    assert_eq!(
        s.send(with("/api/status", bearer(TOKEN))).await.0,
        StatusCode::OK
    );
    assert_eq!(
        s.send(with(
            "/api/status",
            bearer("0123456789abcdef-the-test-tokeN")
        ))
        .await
        .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        s.send(with("/api/media/1/thumbnail", None)).await.0,
        StatusCode::UNAUTHORIZED
    );
    // Any host name is fine with a token (a LAN address, a name).
    let mut lan = with("/api/status", bearer(TOKEN));
    lan.headers_mut()
        .insert(header::HOST, "192.168.1.20:8080".parse().unwrap());
    assert_eq!(s.send(lan).await.0, StatusCode::OK);

    // Pages send a browser to the login form.
    let (code, headers, _) = s.send(with("/", None)).await;
    assert_eq!(code, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/login");
    let (code, form) = s.get("/login").await;
    assert_eq!(code, StatusCode::OK);
    assert!(String::from_utf8_lossy(&form).contains("name=\"token\""));
    let login = |t: &str| {
        let mut r = request("POST", "/login", Body::from(format!("token={t}")));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
        r
    };
    assert_eq!(
        s.send(login("wrong-but-long-enough")).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (code, headers, _) = s.send(login(TOKEN)).await;
    assert_eq!(code, StatusCode::SEE_OTHER);
    let cookie = headers[header::SET_COOKIE].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_string();
    assert_eq!(
        s.send(with("/api/status", Some(("cookie", pair.clone()))))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        s.send(with("/", Some(("cookie", pair)))).await.0,
        StatusCode::OK
    );
    assert_eq!(
        s.send(with("/", Some(("cookie", "smoothface_token=guess".into()))))
            .await
            .0,
        StatusCode::SEE_OTHER
    );

    // Logging out clears the cookie.
    let mut out = request("POST", "/logout", Body::empty());
    out.headers_mut().insert(
        header::AUTHORIZATION,
        format!("Bearer {TOKEN}").parse().unwrap(),
    );
    let (code, headers, _) = s.send(out).await;
    assert_eq!(code, StatusCode::SEE_OTHER);
    let cleared = headers[header::SET_COOKIE].to_str().unwrap();
    assert!(
        cleared.starts_with("smoothface_token=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );

    // Every answer keeps the page to its own assets.
    let (_, headers, _) = s.send(with("/api/status", bearer(TOKEN))).await;
    assert!(headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .contains("script-src 'self'"));
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");

    // Changes from another origin are refused even with the cookie's token.
    let mut cross = request("POST", "/api/people/undo", Body::empty());
    cross
        .headers_mut()
        .insert(header::ORIGIN, "http://evil.example".parse().unwrap());
    cross.headers_mut().insert(
        header::AUTHORIZATION,
        format!("Bearer {TOKEN}").parse().unwrap(),
    );
    assert_eq!(s.send(cross).await.0, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_only_loopback_names_are_answered() {
    let s = start(tempfile::tempdir().unwrap(), Options::default());
    assert_eq!(s.get("/api/status").await.0, StatusCode::OK);
    let mut rebound = request("GET", "/api/status", Body::empty());
    rebound
        .headers_mut()
        .insert(header::HOST, "evil.example:8080".parse().unwrap());
    let (code, _, body) = s.send(rebound).await;
    assert_eq!(code, StatusCode::MISDIRECTED_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("--token-file"));
    let mut cross = request("POST", "/api/people/undo", Body::empty());
    cross
        .headers_mut()
        .insert(header::ORIGIN, "http://evil.example".parse().unwrap());
    assert_eq!(s.send(cross).await.0, StatusCode::FORBIDDEN);
    // The page's own origin may change things (here: nothing to undo, a 400 with the cause).
    let mut own = request("POST", "/api/people/undo", Body::empty());
    own.headers_mut()
        .insert(header::ORIGIN, "http://127.0.0.1:8080".parse().unwrap());
    let (code, _, body) = s.send(own).await;
    assert!(
        code.is_client_error() && code != StatusCode::FORBIDDEN,
        "{code}"
    );
    assert!(String::from_utf8_lossy(&body).contains("error"));
    // Without libraries there is nothing to index.
    let (code, _) = s.post("/api/index", json!({})).await;
    assert_eq!(code, StatusCode::CONFLICT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_reaches_a_file_by_a_path_it_names() {
    let Some(src) = faces(
        "no_request_reaches_a_file_by_a_path_it_names",
        "lfw-devtrain",
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let secret = outside.join("secret.txt");
    std::fs::write(&secret, "TOPSECRET root:x:0:0\n").unwrap();
    let lib = tmp.path().join("library");
    copy_people(&src, &lib, 1, 2);
    // A link in the library to a file that is not a photo: indexed as unreadable, never shown.
    std::os::unix::fs::symlink(&secret, lib.join("link.jpg")).unwrap();
    let s = start(
        tmp,
        Options {
            libraries: vec![lib.clone()],
            ..Options::default()
        },
    );
    s.indexed(1);
    let media = s.json("/api/media").await;
    let photos: Vec<(i64, String)> = media["media"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_i64().unwrap(),
                m["path"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(photos.len(), 2, "{media}");
    // A photo replaced by a link to the secret after indexing: refused, not read.
    let (swapped, swapped_path) = photos[0].clone();
    std::fs::remove_file(&swapped_path).unwrap();
    std::os::unix::fs::symlink(&secret, &swapped_path).unwrap();

    let link: i64 = rusqlite::Connection::open(&s.db)
        .unwrap()
        .query_row(
            "SELECT id FROM media WHERE path LIKE '%/link.jpg' AND status = 'error'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let secret_abs = secret.display().to_string();
    let attempts = [
        "/../../../../etc/passwd".to_string(),
        "/%2e%2e/%2e%2e/%2e%2e/etc/passwd".into(),
        "/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd".into(),
        "/api/media/..%2F..%2F..%2Fetc%2Fpasswd/thumbnail".into(),
        "/api/media/%2Fetc%2Fpasswd/thumbnail".into(),
        "/api/media/1/thumbnail/../../../../etc/passwd".into(),
        "/api/faces/..%252f..%252fetc%252fpasswd/crop".into(),
        "//etc/passwd".into(),
        "/app.js/../../Cargo.toml".into(),
        format!("/{secret_abs}"),
        format!("/api/media/{secret_abs}/thumbnail"),
        format!("/api/media/{swapped}/thumbnail"),
        format!("/api/media/{swapped}/thumbnail?size=1280&path={secret_abs}"),
        format!("/api/media/{link}/thumbnail"), // indexed as unreadable
    ];
    for uri in &attempts {
        let (code, body) = s.get(uri).await;
        let text = String::from_utf8_lossy(&body);
        assert!(code.is_client_error(), "{uri}: {code} {text}");
        assert!(
            !text.contains("TOPSECRET") && !text.contains("root:x"),
            "{uri}: {text}"
        );
    }
    let (code, body) = s.get(&format!("/api/media/{swapped}/thumbnail")).await;
    assert_eq!(code, StatusCode::CONFLICT);
    assert!(String::from_utf8_lossy(&body).contains("changed since it was indexed"));
    // The other photo is still served.
    assert_eq!(
        s.get(&format!("/api/media/{}/thumbnail", photos[1].0))
            .await
            .0,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_and_oversized_uploads_get_a_4xx_with_the_cause() {
    let Some(src) = faces(
        "broken_and_oversized_uploads_get_a_4xx_with_the_cause",
        "lfw-devtrain",
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("library");
    copy_people(&src, &lib, 1, 1);
    let photo_path = std::fs::read_dir(
        std::fs::read_dir(&lib)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path(),
    )
    .unwrap()
    .next()
    .unwrap()
    .unwrap()
    .path();
    let photo = std::fs::read(&photo_path).unwrap();
    let s = start(
        tmp,
        Options {
            max_upload: 1024 * 1024,
            max_pixels: 300 * 300,
            ..Options::default()
        },
    );
    let mut grey = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageLuma8(image::GrayImage::from_pixel(200, 200, image::Luma([128])))
        .write_to(&mut grey, image::ImageFormat::Png)
        .unwrap();
    let mut big = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageLuma8(image::GrayImage::new(400, 400))
        .write_to(&mut big, image::ImageFormat::Png)
        .unwrap();
    let noise: Vec<u8> = (0..2 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let cases: Vec<(&str, Vec<u8>, &str, StatusCode, &str)> = vec![
        (
            "over the upload limit",
            noise,
            "",
            StatusCode::PAYLOAD_TOO_LARGE,
            "over the limit of 1 MB",
        ),
        ("empty", Vec::new(), "", StatusCode::BAD_REQUEST, "empty"),
        (
            "text",
            b"hello, not a photo".to_vec(),
            "",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not an image",
        ),
        (
            "truncated JPEG",
            photo[..photo.len() / 2].to_vec(),
            "",
            StatusCode::BAD_REQUEST,
            "truncated",
        ),
        (
            "over the pixel limit",
            big.into_inner(),
            "",
            StatusCode::PAYLOAD_TOO_LARGE,
            "over the limit",
        ),
        (
            "no face",
            grey.into_inner(),
            "",
            StatusCode::UNPROCESSABLE_ENTITY,
            "no face found",
        ),
        (
            "bad query",
            photo.clone(),
            "?face=first",
            StatusCode::BAD_REQUEST,
            "face",
        ),
        (
            "no such face",
            photo.clone(),
            "?face=3",
            StatusCode::UNPROCESSABLE_ENTITY,
            "no face 3",
        ),
    ];
    for (what, body, query, status, cause) in cases {
        let (code, answer) = s.search(&body, query).await;
        assert_eq!(code, status, "{what}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(cause), "{what}: {answer}");
    }
    // Without a library there is nowhere to keep an upload.
    let (code, answer) = s.search(&photo, "?keep=true").await;
    assert_eq!(code, StatusCode::CONFLICT, "{answer}");
    // The good photo is searched (an empty gallery: no results), and nothing was stored.
    let (code, answer) = s.search(&photo, "").await;
    assert_eq!(code, StatusCode::OK, "{answer}");
    assert_eq!(answer["results"], json!([]));
    assert_eq!(s.json("/api/media").await["total"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn searches_keep_answering_while_the_library_is_indexed() {
    let Some((s, _, query)) =
        served_library("searches_keep_answering_while_the_library_is_indexed", 8)
    else {
        return;
    };
    let photo = Arc::new(std::fs::read(&query).unwrap());
    let s = Arc::new(s);
    let mut during = 0;
    let mut answered = 0;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (s, photo) = (s.clone(), photo.clone());
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..6 {
                let status = s.service.indexer.status();
                let running = status.running || status.queued;
                let (code, answer) = s.search(&photo, "").await;
                assert_eq!(code, StatusCode::OK, "{answer}");
                seen.push((running, answer["faces_searched"].as_u64().unwrap()));
            }
            seen
        }));
    }
    for t in tasks {
        for (running, _) in t.await.unwrap() {
            during += running as usize;
            answered += 1;
        }
    }
    assert_eq!(answered, 24);
    assert!(during > 0, "no search was answered while the indexer ran");
    s.indexed(1);
    // Once it is done, a search sees every face.
    let (_, answer) = s.search(&photo, "").await;
    let faces = s.json("/api/status").await["faces"].as_u64().unwrap();
    assert_eq!(answer["faces_searched"].as_u64().unwrap(), faces);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_is_listed_with_its_length_and_found_with_when_its_face_is_on_screen() {
    let Some(lfw) = faces(
        "a_video_is_listed_with_its_length_and_found_with_when_its_face_is_on_screen",
        "lfw-devtrain",
    ) else {
        return;
    };
    let photo = |who: &str, n: u32| lfw.join(who).join(format!("{who}_{n:04}.jpg"));
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("library");
    std::fs::create_dir_all(&lib).unwrap();
    // Tony Blair from 2 s to 4 s, after someone else.
    make_clip(
        &lib.join("clip.mp4"),
        "640x360",
        &[
            (&photo("Colin_Powell", 1), 2.0),
            (&photo("Tony_Blair", 1), 2.0),
        ],
    );
    let query = std::fs::read(photo("Tony_Blair", 2)).unwrap();
    let s = start(
        tmp,
        Options {
            libraries: vec![lib],
            ..Options::default()
        },
    );
    s.indexed(1);
    let media = s.json("/api/media").await;
    let video = &media["media"][0];
    assert_eq!(video["kind"], "video", "{media}");
    assert!(
        (video["duration_s"].as_f64().unwrap() - 4.0).abs() < 0.2,
        "{media}"
    );
    let (code, thumb) = s
        .get(&format!("/api/media/{}/thumbnail", video["id"]))
        .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        is_jpeg_within(&thumb, 320),
        (320, 180),
        "a frame of the 640x360 clip"
    );
    let (code, answer) = s.search(&query, "?top=1").await;
    assert_eq!(code, StatusCode::OK, "{answer}");
    let hit = &answer["results"][0];
    assert_eq!(hit["kind"], "video");
    let (start_s, end_s) = (
        hit["start_s"].as_f64().unwrap(),
        hit["end_s"].as_f64().unwrap(),
    );
    assert!(
        (start_s - 2.0).abs() < 0.6 && (end_s - 3.5).abs() < 0.6,
        "{hit}"
    );
    let (code, crop) = s.get(&format!("/api/faces/{}/crop", hit["face"])).await;
    assert_eq!(code, StatusCode::OK);
    let (w, h) = is_jpeg_within(&crop, 160);
    assert_eq!(w, h);
}
