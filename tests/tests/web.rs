//! The web app in a real browser: headless Chromium driven over WebDriver (Debian's `chromium`
//! and `chromium-driver`, which scripts/setup installs) against `smoothface serve` on a gallery
//! of real faces. Each test saves what the page showed under `target/web-tests/`.
//!
//! The tests take turns (one browser and one service at a time: the machine has two cores).

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use smoothface_tests::{faces, library_with_query, repo, ServeProcess};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A child process killed when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The service on a library of real faces, a browser, and what the test needs to know.
struct Session {
    browser: Client,
    people: Vec<String>,
    query: PathBuf,
    service: ServeProcess,
    _driver: Killed,
    _tmp: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` every 200 ms until it gives a value, for at most `secs` seconds.
async fn until<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(secs),
            "waited {secs} s for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether the browser is installed; without it the test fails in CI (SMOOTHFACE_REQUIRE_DATA=1)
/// and skips elsewhere, saying how to install it.
fn browser_installed(test: &str) -> bool {
    let found = Path::new(CHROMIUM).is_file()
        && Command::new("chromedriver")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    if !found {
        let why = format!(
            "{test}: no {CHROMIUM} or chromedriver: run scripts/setup --browser (Debian's \
             chromium and chromium-driver)"
        );
        if std::env::var_os("SMOOTHFACE_REQUIRE_DATA").is_some_and(|v| v == "1") {
            panic!("{why}");
        }
        eprintln!("SKIPPED {why}");
    }
    found
}

const CHROMIUM: &str = "/usr/bin/chromium";

async fn session(test: &str) -> Option<Session> {
    let src = faces(test, "lfw-devtrain")?;
    if !browser_installed(test) {
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (lib, people, query) = library_with_query(tmp.path(), &src, 4, 4);
    let service = ServeProcess::start(&tmp.path().join("gallery.sqlite"), &lib);
    until("the library to be indexed", 300, || async {
        (service.get("/api/index")["runs"].as_u64() >= Some(1)).then_some(())
    })
    .await;

    let port = free_port();
    let driver = Killed(
        Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; scripts/setup installs it)"),
    );
    let profile = tmp.path().join("chromium-profile");
    let caps = json!({
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,900", format!("--user-data-dir={}", profile.display())],
        }
    });
    let browser = until("chromedriver to accept a session", 60, || async {
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.as_object().unwrap().clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .ok()
    })
    .await;
    Some(Session {
        browser,
        people,
        query,
        service,
        _driver: driver,
        _tmp: tmp,
    })
}

impl Session {
    async fn open(&self, hash: &str) {
        self.browser
            .goto(&format!("{}/{hash}", self.service.url))
            .await
            .unwrap();
    }

    /// Saves a screenshot as `target/web-tests/NAME.png`.
    async fn screenshot(&self, name: &str) -> PathBuf {
        let dir = repo().join("target/web-tests");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, self.browser.screenshot().await.unwrap()).unwrap();
        path
    }

    async fn count(&self, css: &str) -> usize {
        self.browser
            .find_all(Locator::Css(css))
            .await
            .map_or(0, |v| v.len())
    }

    async fn attrs(&self, css: &str, attr: &str) -> Vec<String> {
        let mut out = Vec::new();
        for e in self.browser.find_all(Locator::Css(css)).await.unwrap() {
            out.push(e.attr(attr).await.unwrap().unwrap_or_default());
        }
        out
    }

    async fn values(&self, css: &str) -> Vec<String> {
        let mut out = Vec::new();
        for e in self.browser.find_all(Locator::Css(css)).await.unwrap() {
            out.push(e.prop("value").await.unwrap().unwrap_or_default());
        }
        out
    }
}

fn folder_of(path: &str) -> String {
    Path::new(path)
        .parent()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploading_a_photo_shows_that_persons_photos_first() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(s) = session("uploading_a_photo_shows_that_persons_photos_first").await else {
        return;
    };
    s.open("#/search").await;
    let input = s
        .browser
        .wait()
        .for_element(Locator::Css("#search-file"))
        .await
        .unwrap();
    input.send_keys(s.query.to_str().unwrap()).await.unwrap();
    until("the results", 60, || async {
        (s.count("#results .tile").await >= 4).then_some(())
    })
    .await;
    // The faces found are drawn on the photo, the chosen one marked.
    until("the face boxes", 20, || async {
        (s.count("#query-boxes .face-box.chosen").await == 1).then_some(())
    })
    .await;
    let paths = s.attrs("#results .tile", "data-path").await;
    let first4: Vec<String> = paths[..4].iter().map(|p| folder_of(p)).collect();
    let shot = s.screenshot("search").await;
    assert_eq!(
        first4,
        vec![s.people[0].clone(); 4],
        "the person's 4 photos first; see {}",
        shot.display()
    );
    let scores: Vec<f64> = {
        let mut v = Vec::new();
        for e in s
            .browser
            .find_all(Locator::Css("#results .score"))
            .await
            .unwrap()
        {
            v.push(e.text().await.unwrap().parse().unwrap());
        }
        v
    };
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    s.browser.clone().close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_named_on_the_page_is_found_by_name_and_two_people_merge() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(s) = session("a_person_named_on_the_page_is_found_by_name_and_two_people_merge").await
    else {
        return;
    };
    s.open("#/people").await;
    let before = until("the people", 30, || async {
        let n = s.count(".person-card").await;
        (n >= 3).then_some(n)
    })
    .await;

    // Name the first person in place; Enter commits it.
    let first_id = s.attrs(".person-card", "data-id").await[0].clone();
    let name = s
        .browser
        .find(Locator::Css(&format!(
            ".person-card[data-id=\"{first_id}\"] input.name"
        )))
        .await
        .unwrap();
    name.clear().await.unwrap();
    name.send_keys("Anna Example\n").await.unwrap();
    until("the name to be saved", 20, || async {
        let people = s.service.get("/api/people");
        people["people"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "Anna Example")
            .then_some(())
    })
    .await;
    // A fresh page shows it.
    s.open("#/gallery").await;
    s.open("#/people").await;
    until("the name on the people page", 20, || async {
        s.values(".person-card input.name")
            .await
            .contains(&"Anna Example".to_string())
            .then_some(())
    })
    .await;
    s.screenshot("people-named").await;

    // Merge the two last people by ticking them.
    let ids = s.attrs(".person-card", "data-id").await;
    for id in &ids[ids.len() - 2..] {
        s.browser
            .find(Locator::Css(&format!(
                ".person-card[data-id=\"{id}\"] input.select"
            )))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }
    s.browser
        .find(Locator::Css("#merge"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until("one person fewer", 20, || async {
        (s.count(".person-card").await == before - 1).then_some(())
    })
    .await;
    let message = s
        .browser
        .find(Locator::Css("#message"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    s.screenshot("people-merged").await;
    assert!(message.contains("merged"), "{message}");
    let people = s.service.get("/api/people");
    assert_eq!(people["people"].as_array().unwrap().len(), before - 1);

    // On a phone-sized screen the page fits its width.
    s.browser.set_window_size(390, 844).await.unwrap();
    s.open("#/gallery").await;
    until("the gallery", 20, || async {
        (s.count(".media-grid .tile").await > 0).then_some(())
    })
    .await;
    let overflow = s
        .browser
        .execute(
            "return document.documentElement.scrollWidth - window.innerWidth;",
            vec![],
        )
        .await
        .unwrap();
    s.screenshot("gallery-phone").await;
    assert!(overflow.as_f64().unwrap() <= 0.0, "{overflow}");
    s.browser.clone().close().await.unwrap();
}

/// The people page's "Same person?" cards: a person split in two is asked about; "No" keeps
/// the two apart (the card goes and the service stops suggesting them; undo brings it back),
/// "Yes" merges them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_person_cards_keep_apart_on_no_and_merge_on_yes() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(s) = session("same_person_cards_keep_apart_on_no_and_merge_on_yes").await else {
        return;
    };
    // Half of the largest person's faces split off: the two halves are one person.
    let people = s.service.get("/api/people");
    let largest = people["people"][0]["id"].as_i64().unwrap();
    let faces: Vec<i64> = s.service.get(&format!("/api/people/{largest}"))["face_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["face"].as_i64().unwrap())
        .collect();
    assert!(faces.len() >= 2, "{faces:?}");
    let half = &faces[..faces.len() / 2];
    let split = s.service.post(
        &format!("/api/people/{largest}/split"),
        &json!({ "faces": half }),
    );
    let other = split["person"].as_i64().unwrap();
    let (a, b) = (largest.min(other), largest.max(other));
    let card = format!(".pair-card[data-a=\"{a}\"][data-b=\"{b}\"]");
    let suggested = |s: &Session| {
        s.service.get("/api/people/suggestions?top=0")["suggestions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["a"] == a && p["b"] == b)
    };
    assert!(suggested(&s), "the two halves are suggested");

    s.open("#/people").await;
    until("the card of the two halves", 30, || async {
        (s.count(&card).await == 1).then_some(())
    })
    .await;
    s.screenshot("same-person").await;
    let click = |css: String| {
        let browser = s.browser.clone();
        async move {
            browser
                .find(Locator::Css(&css))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();
        }
    };
    click(format!("{card} button.no")).await;
    until("the card to go", 20, || async {
        (s.count(&card).await == 0).then_some(())
    })
    .await;
    assert!(!suggested(&s), "kept apart: no longer suggested");

    // Undo brings the pair back; "Yes" merges them.
    s.service.post("/api/people/undo", &json!({}));
    assert!(suggested(&s), "undone: suggested again");
    s.open("#/gallery").await;
    s.open("#/people").await;
    until("the card again", 30, || async {
        (s.count(&card).await == 1).then_some(())
    })
    .await;
    let before = s.service.get("/api/people")["people"]
        .as_array()
        .unwrap()
        .len();
    click(format!("{card} button.yes")).await;
    until("one person fewer", 20, || async {
        let n = s.service.get("/api/people")["people"]
            .as_array()
            .unwrap()
            .len();
        (n == before - 1).then_some(())
    })
    .await;
    let person = s.service.get(&format!("/api/people/{a}"));
    assert_eq!(person["face_list"].as_array().unwrap().len(), faces.len());
    s.browser.clone().close().await.unwrap();
}
