//! `smoothface serve` as a process: what it refuses to start with, and a service killed while
//! it indexes resumes on restart with nothing lost and nothing twice.

use smoothface_tests::{copy_people, faces_root, json, run, smoothface, succeed, ServeProcess};
use std::path::Path;
use std::time::{Duration, Instant};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn serve_refuses_an_open_address_without_a_token_and_a_token_others_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("g.sqlite");
    let o = run(smoothface(&db).args(["serve", "--listen", "0.0.0.0:0"]));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("without a token") && stderr(&o).contains("--token-file"),
        "{}",
        stderr(&o)
    );
    let token = tmp.path().join("token");
    std::fs::write(&token, "0123456789abcdef0123\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = run(smoothface(&db)
        .args(["serve", "--listen", "0.0.0.0:0", "--token-file"])
        .arg(&token));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("chmod 600"), "{}", stderr(&o));
    let o = run(smoothface(&db).args(["serve", "--library", "/no/such/folder"]));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("--library /no/such/folder: no such folder"),
        "{}",
        stderr(&o)
    );
}

fn faces_by_path(db: &Path) -> Vec<(String, i64)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let rows = conn
        .prepare(
            "SELECT m.path, count(f.id) FROM media m LEFT JOIN faces f ON f.media_id = m.id
             GROUP BY m.id ORDER BY m.path",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    rows
}

#[test]
fn a_service_killed_while_indexing_resumes_with_nothing_lost_or_twice() {
    let Some(faces) =
        faces_root("a_service_killed_while_indexing_resumes_with_nothing_lost_or_twice")
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("library");
    copy_people(&faces.join("lfw-devtrain"), &lib, 30, 6);
    let files = walk_count(&lib);
    let db = tmp.path().join("g.sqlite");

    let s = ServeProcess::start(&db, &lib);
    let started = Instant::now();
    let at_kill = loop {
        let st = s.get("/api/index");
        let done = st["current"]["done"].as_u64().unwrap_or(0);
        if done >= 10 {
            break done;
        }
        assert!(
            st["runs"] == 0,
            "the run ended before it could be killed: {st}"
        );
        assert!(started.elapsed() < Duration::from_secs(120), "{st}");
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(s); // SIGKILL
    assert!(
        (at_kill as usize) < files,
        "killed after {at_kill} of {files}"
    );

    let s = ServeProcess::start(&db, &lib);
    let started = Instant::now();
    let last = loop {
        let st = s.get("/api/index");
        if st["runs"].as_u64() >= Some(1) {
            break st["last"].clone();
        }
        assert!(started.elapsed() < Duration::from_secs(300), "{st}");
        std::thread::sleep(Duration::from_millis(200));
    };
    drop(s);
    let report = &last["report"];
    assert!(last["error"].is_null(), "{last}");
    let (analysed, unchanged) = (
        report["analysed"].as_u64().unwrap(),
        report["unchanged"].as_u64().unwrap(),
    );
    assert_eq!(analysed + unchanged, files as u64, "{last}");
    assert!(
        unchanged >= 10,
        "the files stored before the kill were kept: {last}"
    );

    // The same gallery as one uninterrupted run.
    let clean = tmp.path().join("clean.sqlite");
    succeed(smoothface(&clean).arg("index").arg(&lib));
    assert_eq!(faces_by_path(&db), faces_by_path(&clean));
    let stats = json(&succeed(smoothface(&db).args(["stats", "--json"])));
    assert_eq!(stats["media"].as_u64(), Some(files as u64));
}

fn walk_count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| if p.is_dir() { walk_count(&p) } else { 1 })
        .sum()
}
