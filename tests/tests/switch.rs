//! A gallery moved to another embedder in place, through the `smoothface` binary on real faces:
//! it keeps its face ids, people, names and rejections, searches with the new model only, and a
//! switch killed half-way and run again ends exactly as one that ran through.

use smoothface_tests::{
    copy_people, faces_root, json, library_with_query, run, smoothface, succeed,
};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

/// Face id -> (person, path, embedding) of every face of the gallery's model.
fn faces(db: &Path) -> BTreeMap<i64, (Option<i64>, String, Vec<f64>)> {
    let out = json(&run(smoothface(db).args([
        "people",
        "faces",
        "--json",
        "--embeddings",
    ])));
    out.as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let embedding = f["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            (
                f["face"].as_i64().unwrap(),
                (
                    f["person"].as_i64(),
                    f["path"].as_str().unwrap().to_string(),
                    embedding,
                ),
            )
        })
        .collect()
}

/// The model `stats` says the gallery holds faces of (the one with faces).
fn models_with_faces(db: &Path) -> Vec<String> {
    let stats = json(&succeed(smoothface(db).args(["stats", "--json"])));
    stats["models"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["faces"].as_u64() > Some(0))
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_gallery_switches_models_in_place_keeping_people_names_and_rejections() {
    let Some(root) =
        faces_root("a_gallery_switches_models_in_place_keeping_people_names_and_rejections")
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("g.sqlite");
    let (lib, people, query) = library_with_query(tmp.path(), &root.join("lfw-devtrain"), 3, 6);
    succeed(
        smoothface(&db)
            .args(["--model", "mobilefacenet", "index"])
            .arg(&lib),
    );
    assert_eq!(models_with_faces(&db), ["mobilefacenet-faceplugin"]);

    // Name the person of the first folder, and reject one of her faces.
    let before = faces(&db);
    let in_folder =
        |f: &(Option<i64>, String, Vec<f64>), i: usize| f.1.contains(&format!("/{}/", people[i]));
    let mut counts: HashMap<i64, usize> = HashMap::new();
    for f in before.values().filter(|f| in_folder(f, 0)) {
        if let Some(p) = f.0 {
            *counts.entry(p).or_default() += 1;
        }
    }
    let anna = *counts.iter().max_by_key(|(p, n)| (**n, -**p)).unwrap().0;
    succeed(smoothface(&db).args(["people", "name", &anna.to_string(), "Anna"]));
    let rejected = *before.iter().find(|(_, f)| f.0 == Some(anna)).unwrap().0;
    succeed(smoothface(&db).args(["people", "reject", "Anna", "--faces", &rejected.to_string()]));

    // Without --model, commands use the gallery's own model; with another, a clear error.
    succeed(smoothface(&db).arg("search").arg(&query));
    let err = run(smoothface(&db)
        .args(["--model", "w600k_mbf", "search"])
        .arg(&query));
    let msg = String::from_utf8_lossy(&err.stderr);
    assert!(
        !err.status.success()
            && msg.contains("embedded with mobilefacenet-faceplugin")
            && msg.contains("not with w600k-mbf-insightface")
            && msg.contains("models use"),
        "{msg}"
    );

    let report = json(&succeed(smoothface(&db).args([
        "models",
        "use",
        "w600k_mbf",
        "--json",
    ])));
    assert_eq!(
        report["faces"].as_u64(),
        Some(before.len() as u64),
        "{report}"
    );
    assert_eq!(report["dropped"].as_array().unwrap().len(), 0, "{report}");
    assert_eq!(models_with_faces(&db), ["w600k-mbf-insightface"]);

    // The same faces, each with a new unit vector; Anna kept her id and name, and the rejected
    // face is not hers; most of her folder's faces are still hers.
    let after = faces(&db);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    for (id, (_, path, v)) in &after {
        let norm: f64 = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "face {id}: norm {norm}");
        assert_eq!(path, &before[id].1);
        assert_ne!(v, &before[id].2, "face {id} was not embedded again");
    }
    let list = json(&succeed(smoothface(&db).args(["people", "list", "--json"])));
    let named: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"] == "Anna")
        .collect();
    assert_eq!(named.len(), 1, "{list}");
    assert_eq!(named[0]["id"].as_i64(), Some(anna));
    assert_ne!(after[&rejected].0, Some(anna), "the rejection holds");
    let hers = after
        .values()
        .filter(|f| in_folder(f, 0) && f.0 == Some(anna))
        .count();
    assert!(hers >= 4, "{after:?}");

    // Searching: the new model by default, her photos first; the old one is refused.
    let hits = json(&succeed(
        smoothface(&db).arg("search").arg(&query).arg("--json"),
    ));
    let first = hits["hits"][0]["path"].as_str().unwrap();
    assert!(first.contains(&people[0]), "{hits}");
    let err = run(smoothface(&db)
        .args(["--model", "mobilefacenet", "search"])
        .arg(&query));
    let msg = String::from_utf8_lossy(&err.stderr);
    assert!(
        !err.status.success() && msg.contains("embedded with w600k-mbf-insightface"),
        "{msg}"
    );
    // Switching to the model it has is nothing to do.
    let again = json(&succeed(smoothface(&db).args([
        "models",
        "use",
        "w600k_mbf",
        "--json",
    ])));
    assert!(again["from"].is_null(), "{again}");
}

/// Rows in the table of a switch under way, read beside the running switch.
fn switched_so_far(db: &Path) -> i64 {
    let Ok(conn) =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return 0;
    };
    conn.query_row("SELECT count(*) FROM switch_embeddings", [], |r| r.get(0))
        .unwrap_or(0)
}

#[test]
fn a_switch_killed_midway_resumes_and_ends_as_one_that_ran_through() {
    let Some(root) = faces_root("a_switch_killed_midway_resumes_and_ends_as_one_that_ran_through")
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("library");
    copy_people(&root.join("lfw-devtrain"), &lib, 12, 10);
    let (killed, through) = (
        tmp.path().join("killed.sqlite"),
        tmp.path().join("through.sqlite"),
    );
    succeed(
        smoothface(&killed)
            .args(["--model", "mobilefacenet", "index"])
            .arg(&lib),
    );
    // The process closed the gallery: its file is the whole gallery.
    std::fs::copy(&killed, &through).unwrap();

    // One thread, so that the switch takes long enough to be caught half-way.
    let mut child = smoothface(&killed)
        .args(["--threads", "1", "models", "use", "w600k_mbf"])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while switched_so_far(&killed) < 10 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the switch ended before it could be killed"
        );
        assert!(Instant::now() < deadline, "the switch never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(child.try_wait().unwrap().is_none(), "still running");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let done_before = switched_so_far(&killed);
    assert!(done_before >= 10);
    assert_eq!(models_with_faces(&killed), ["mobilefacenet-faceplugin"]);

    let resumed = json(&succeed(smoothface(&killed).args([
        "models",
        "use",
        "w600k_mbf",
        "--json",
    ])));
    assert!(
        resumed["resumed"].as_i64().unwrap() >= done_before,
        "{resumed}"
    );
    succeed(smoothface(&through).args(["models", "use", "w600k_mbf"]));

    assert_eq!(faces(&killed), faces(&through));
    let people = |db: &Path| json(&succeed(smoothface(db).args(["people", "list", "--json"])));
    assert_eq!(people(&killed), people(&through));
}
