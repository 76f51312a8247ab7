//! End to end through the `smoothface` binary on real faces: index, search, incremental and
//! resumable indexing, bad input, deletion.

use smoothface_tests::{copy_people, faces_root, json, run, smoothface, succeed};
use std::path::Path;
use std::process::Stdio;

fn stats(db: &Path) -> serde_json::Value {
    json(&run(smoothface(db).args(["stats", "--json"])))
}

fn face_count(db: &Path) -> i64 {
    stats(db)["models"][0]["faces"].as_i64().unwrap_or(0)
}

#[test]
fn index_then_search_ranks_the_person_first() {
    let Some(faces) = faces_root("index_then_search_ranks_the_person_first") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (lib, db) = (tmp.path().join("library"), tmp.path().join("g.sqlite"));
    let people = copy_people(&faces.join("lfw-devtrain"), &lib, 6, 5);
    // Hold out each person's fifth photo as the query.
    let held = tmp.path().join("queries");
    std::fs::create_dir(&held).unwrap();
    for p in &people {
        let q = lib.join(p).join(format!("{p}_0005.jpg"));
        std::fs::rename(&q, held.join(q.file_name().unwrap())).unwrap();
    }
    let out = succeed(smoothface(&db).args(["index", "--json"]).arg(&lib));
    let report = json(&out);
    assert_eq!(report["analysed"], 24);
    assert!(report["faces"].as_u64().unwrap() >= 24, "{report}");

    for p in &people {
        let out = succeed(
            smoothface(&db)
                .args(["search", "--json", "--top", "4"])
                .arg(held.join(format!("{p}_0005.jpg"))),
        );
        let hits = json(&out)["hits"].as_array().unwrap().clone();
        let first = hits[0]["path"].as_str().unwrap();
        assert!(
            first.contains(&format!("/{p}/")),
            "{p}: best hit is {first}"
        );
        let scores: Vec<f64> = hits.iter().map(|h| h["score"].as_f64().unwrap()).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    }
}

#[test]
fn reindexing_skips_unchanged_and_recognises_moves_and_copies() {
    let Some(faces) = faces_root("reindexing_skips_unchanged_and_recognises_moves_and_copies")
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (lib, db) = (tmp.path().join("library"), tmp.path().join("g.sqlite"));
    let people = copy_people(&faces.join("lfw-devtrain"), &lib, 2, 4);
    let first = json(&run(smoothface(&db).args(["index", "--json"]).arg(&lib)));
    assert_eq!(first["analysed"], 8);
    let faces_before = face_count(&db);

    let again = json(&run(smoothface(&db).args(["index", "--json"]).arg(&lib)));
    assert_eq!(
        (again["analysed"].as_u64(), again["unchanged"].as_u64()),
        (Some(0), Some(8))
    );

    let a = lib.join(&people[0]).join(format!("{}_0001.jpg", people[0]));
    std::fs::rename(&a, lib.join("moved.jpg")).unwrap();
    let b = lib.join(&people[1]).join(format!("{}_0001.jpg", people[1]));
    std::fs::copy(&b, lib.join("copy.jpg")).unwrap();
    let third = json(&run(smoothface(&db).args(["index", "--json"]).arg(&lib)));
    assert_eq!(third["analysed"], 0, "{third}");
    assert_eq!(third["moved"], 1, "{third}");
    assert_eq!(third["duplicates"], 1, "{third}");
    assert_eq!(stats(&db)["media"], 9);
    // The copy brings its faces; the move keeps its own.
    let copy_faces = face_count(&db) - faces_before;
    assert!(copy_faces >= 1, "the copy added {copy_faces} faces");

    std::fs::remove_file(lib.join("moved.jpg")).unwrap();
    let fourth = json(&run(smoothface(&db).args(["index", "--json"]).arg(&lib)));
    assert_eq!(fourth["removed"], 1, "{fourth}");
    assert_eq!(stats(&db)["media"], 8);
}

#[test]
fn bad_files_are_reported_with_their_cause_and_the_rest_indexed() {
    let Some(faces) = faces_root("bad_files_are_reported_with_their_cause_and_the_rest_indexed")
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (lib, db) = (tmp.path().join("library"), tmp.path().join("g.sqlite"));
    copy_people(&faces.join("lfw-devtrain"), &lib, 2, 3);
    let real = std::fs::read(faces.join("lfw-devtrain/AJ_Cook/AJ_Cook_0001.jpg")).unwrap();
    std::fs::write(lib.join("empty.jpg"), b"").unwrap();
    std::fs::write(lib.join("truncated.jpg"), &real[..real.len() / 3]).unwrap();
    std::fs::write(lib.join("notes.jpg"), b"shopping list: eggs, milk").unwrap();
    // A PPM header declaring 50000 x 50000 pixels: refused before any pixel is allocated.
    std::fs::write(lib.join("huge.ppm"), b"P6\n50000 50000\n255\n\x00\x00\x00").unwrap();
    std::os::unix::fs::symlink(tmp.path().join("nowhere.jpg"), lib.join("dangling.jpg")).unwrap();

    let out = run(smoothface(&db).args(["index", "--json"]).arg(&lib));
    assert_eq!(
        out.status.code(),
        Some(3),
        "a partial run exits 3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json(&out);
    assert_eq!(report["analysed"], 6, "{report}");
    let failed = report["failed"].as_array().unwrap();
    let cause = |name: &str| -> String {
        failed
            .iter()
            .find(|f| f["path"].as_str().unwrap().ends_with(name))
            .unwrap_or_else(|| panic!("{name} not reported: {report}"))["error"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(cause("empty.jpg").contains("empty file"));
    assert!(cause("truncated.jpg").contains("truncated JPEG"));
    assert!(cause("notes.jpg").contains("not an image"));
    assert!(cause("huge.ppm").contains("50000x50000"));
    assert!(cause("dangling.jpg").contains("cannot read"));
    assert_eq!(failed.len(), 5, "{report}");
    // The path is its own field: the cause never repeats it ("X: X: not an image").
    for f in failed {
        let name = std::path::Path::new(f["path"].as_str().unwrap())
            .file_name()
            .unwrap();
        let error = f["error"].as_str().unwrap();
        assert!(!error.contains(&*name.to_string_lossy()), "{f}");
    }
    let stderr =
        String::from_utf8_lossy(&run(smoothface(&db).arg("index").arg(&lib)).stderr).into_owned();
    let line = stderr
        .lines()
        .find(|l| l.contains("notes.jpg"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert_eq!(line.matches("notes.jpg").count(), 1, "{line}");
    assert!(face_count(&db) >= 6);
}

#[test]
fn a_killed_index_run_resumes_without_duplicates_or_gaps() {
    let Some(faces) = faces_root("a_killed_index_run_resumes_without_duplicates_or_gaps") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("library");
    copy_people(&faces.join("lfw-devtrain"), &lib, 8, 4);
    let (killed_db, clean_db) = (
        tmp.path().join("killed.sqlite"),
        tmp.path().join("clean.sqlite"),
    );

    let mut child = smoothface(&killed_db)
        .args(["index", "--threads", "1"])
        .arg(&lib)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill -9 once a few photos are stored (or give up waiting and kill anyway).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
        if killed_db.exists()
            && stats(&killed_db)["models"][0]["photos"]
                .as_i64()
                .unwrap_or(0)
                >= 5
        {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    let partial = stats(&killed_db)["models"][0]["photos"]
        .as_i64()
        .unwrap_or(0);
    assert!(
        partial < 32,
        "the run finished before it was killed ({partial} photos)"
    );

    let resumed = json(&run(smoothface(&killed_db)
        .args(["index", "--json"])
        .arg(&lib)));
    assert_eq!(
        resumed["analysed"].as_i64().unwrap() + resumed["unchanged"].as_i64().unwrap(),
        32,
        "{resumed}"
    );
    assert!(
        run(smoothface(&clean_db).args(["index", "--json"]).arg(&lib))
            .status
            .success()
    );
    let (a, b) = (stats(&killed_db), stats(&clean_db));
    assert_eq!(a["media"], 32);
    assert_eq!(a["models"][0]["photos"], b["models"][0]["photos"]);
    assert_eq!(
        a["models"][0]["faces"], b["models"][0]["faces"],
        "resumed and clean runs store the same faces"
    );
}

#[test]
fn forget_really_deletes_the_embeddings() {
    let Some(faces) = faces_root("forget_really_deletes_the_embeddings") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (lib, db) = (tmp.path().join("library"), tmp.path().join("g.sqlite"));
    let people = copy_people(&faces.join("lfw-devtrain"), &lib, 2, 2);
    let photo = lib.join(&people[0]).join(format!("{}_0001.jpg", people[0]));
    assert!(run(smoothface(&db).args(["index"]).arg(&lib))
        .status
        .success());
    // The photo's embedding bytes, as stored.
    let detect = json(&run(smoothface(&db)
        .args(["detect", "--json", "--embeddings"])
        .arg(&photo)));
    let v: Vec<f32> = detect[0]["faces"][0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    let needle: Vec<u8> = v[..16].iter().flat_map(|x| x.to_le_bytes()).collect();
    let on_disk = |db: &Path| -> bool {
        let mut bytes = std::fs::read(db).unwrap();
        bytes.extend(std::fs::read(db.with_extension("sqlite-wal")).unwrap_or_default());
        bytes.windows(needle.len()).any(|w| w == needle.as_slice())
    };
    assert!(
        on_disk(&db),
        "the embedding should be stored before forgetting"
    );

    let out = succeed(smoothface(&db).arg("forget").arg(lib.join(&people[0])));
    assert!(String::from_utf8_lossy(&out.stdout).contains("forgot 2 photos"));
    assert_eq!(stats(&db)["media"], 2);
    assert!(
        !on_disk(&db),
        "the forgotten embedding is still in the database files"
    );
}
