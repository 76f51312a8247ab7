//! People end to end through the `smoothface` binary on real faces: index groups the faces,
//! people are named and searched, decisions survive a re-index, errors are clear.

use smoothface_tests::{copy_people, faces_root, files_under, json, run, smoothface, succeed};
use std::collections::HashMap;
use std::path::Path;

/// The person of the largest face of each photo, by the photo's folder (its true person).
fn people_by_folder(db: &Path) -> HashMap<String, Vec<Option<i64>>> {
    let faces = json(&run(smoothface(db).args(["people", "faces", "--json"])));
    let mut first: HashMap<String, Option<i64>> = HashMap::new();
    for f in faces.as_array().unwrap() {
        // Face ids grow in face order within a photo: the first seen is the largest.
        first
            .entry(f["path"].as_str().unwrap().to_string())
            .or_insert(f["person"].as_i64());
    }
    let mut by_folder: HashMap<String, Vec<Option<i64>>> = HashMap::new();
    for (path, person) in first {
        let folder = Path::new(&path)
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        by_folder.entry(folder).or_default().push(person);
    }
    by_folder
}

/// The person most of a folder's photos are in.
fn main_person(v: &[Option<i64>]) -> i64 {
    let mut counts: HashMap<i64, usize> = HashMap::new();
    for p in v.iter().flatten() {
        *counts.entry(*p).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by_key(|&(p, n)| (n, -p))
        .map(|(p, _)| p)
        .expect("a person")
}

#[test]
fn people_are_grouped_apart_named_searched_and_kept_through_a_reindex() {
    let Some(faces) =
        faces_root("people_are_grouped_apart_named_searched_and_kept_through_a_reindex")
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (lib, db) = (tmp.path().join("library"), tmp.path().join("g.sqlite"));
    let people = copy_people(&faces.join("lfw-devtrain"), &lib, 2, 6);
    let out = succeed(smoothface(&db).args(["index", "--json"]).arg(&lib));
    let report = json(&out);
    assert!(
        report["people"]["new_people"].as_u64().unwrap() >= 2,
        "{report}"
    );

    // Each folder's photos are mostly one person, and the two folders are two people.
    let by_folder = people_by_folder(&db);
    let (a, b) = (
        main_person(&by_folder[&people[0]]),
        main_person(&by_folder[&people[1]]),
    );
    assert_ne!(a, b, "{by_folder:?}");
    for (folder, person) in [(&people[0], a), (&people[1], b)] {
        let hits = by_folder[folder]
            .iter()
            .filter(|p| **p == Some(person))
            .count();
        assert!(hits >= 5, "{folder}: {:?}", by_folder[folder]);
    }

    // Name the first; every photo of hers comes back from search --person, hers first.
    succeed(smoothface(&db).args(["people", "name", &a.to_string(), "Anna"]));
    let list = json(&run(smoothface(&db).args(["people", "list", "--json"])));
    let anna = list
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "Anna")
        .expect("Anna listed");
    assert_eq!(anna["id"].as_i64(), Some(a));
    assert!(
        anna["representative"]["path"]
            .as_str()
            .unwrap()
            .contains(&people[0]),
        "{anna}"
    );
    let out = succeed(smoothface(&db).args(["search", "--person", "Anna", "--top", "3", "--json"]));
    let hits = json(&out)["hits"].as_array().unwrap().clone();
    let own = hits.iter().take_while(|h| h["assigned"] == true).count();
    assert_eq!(own, anna["media"].as_u64().unwrap() as usize, "{hits:?}");
    assert!(hits[..own]
        .iter()
        .all(|h| h["path"].as_str().unwrap().contains(&people[0])));
    assert!(hits.len() <= own + 3);

    // Reject one of Anna's faces; touch every photo and index again; then people update.
    let shown = json(&run(
        smoothface(&db).args(["people", "show", "Anna", "--json"])
    ));
    let face = shown[0]["face"].as_i64().unwrap();
    succeed(smoothface(&db).args(["people", "reject", "Anna", "--faces", &face.to_string()]));
    // Split one of the other person's faces off as "Bob", and move another to Anna.
    let theirs = json(&run(smoothface(&db).args([
        "people",
        "show",
        &b.to_string(),
        "--json",
    ])));
    let (off, moved) = (
        theirs[0]["face"].as_i64().unwrap(),
        theirs[1]["face"].as_i64().unwrap(),
    );
    for args in [
        vec![
            "people".to_string(),
            "split".into(),
            b.to_string(),
            "--faces".into(),
            off.to_string(),
            "--name".into(),
            "Bob".into(),
        ],
        vec![
            "people".to_string(),
            "move".into(),
            moved.to_string(),
            "Anna".into(),
        ],
    ] {
        succeed(smoothface(&db).args(&args));
    }
    // Bob is one of the other person's faces: "Same person?" asks about the two; keep-apart
    // answers no, and it holds through a re-index and an update.
    let bob = json(&run(smoothface(&db).args(["people", "list", "--json"])))
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "Bob")
        .and_then(|p| p["id"].as_i64())
        .expect("Bob listed");
    let pair = (b.min(bob), b.max(bob));
    let suggested = || {
        let out = succeed(smoothface(&db).args(["people", "suggest", "--top", "0", "--json"]));
        json(&out)
            .as_array()
            .unwrap()
            .iter()
            .any(|s| (s["a"].as_i64(), s["b"].as_i64()) == (Some(pair.0), Some(pair.1)))
    };
    assert!(suggested(), "Bob and person {b} are suggested");
    succeed(smoothface(&db).args(["people", "keep-apart", &b.to_string(), "Bob"]));
    assert!(!suggested(), "kept apart");
    let before = json(&run(smoothface(&db).args(["people", "faces", "--json"])));
    for (f, who) in [(off, "user"), (moved, "user")] {
        let row = before
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["face"] == f)
            .unwrap();
        assert_eq!(row["assigned_by"], who, "{row}");
    }
    for entry in files_under(&lib) {
        let f = std::fs::File::options().append(true).open(&entry).unwrap();
        f.set_modified(std::time::SystemTime::now()).unwrap();
    }
    let out = succeed(smoothface(&db).args(["index", "--json"]).arg(&lib));
    assert_eq!(json(&out)["analysed"], 0);
    assert!(run(smoothface(&db).args(["people", "update"]))
        .status
        .success());
    let after = json(&run(smoothface(&db).args(["people", "faces", "--json"])));
    let (before, after) = (before.as_array().unwrap(), after.as_array().unwrap());
    assert_eq!(before.len(), after.len());
    for (b, a) in before.iter().zip(after) {
        // Faces with a person keep it; faces of nobody may have been grouped since.
        if !b["person"].is_null() {
            assert_eq!(b, a, "moved");
        }
    }
    let rejected = after.iter().find(|f| f["face"] == face).unwrap();
    assert_ne!(rejected["person"].as_i64(), Some(a));
    assert!(
        !suggested(),
        "still kept apart after a re-index and an update"
    );
    let undone = succeed(smoothface(&db).args(["people", "undo"]));
    assert!(
        String::from_utf8_lossy(&undone.stdout).contains("different people"),
        "the keep-apart was the last decision"
    );
    assert!(suggested(), "undone: suggested again");
    let list = json(&run(smoothface(&db).args(["people", "list", "--json"])));
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "Anna" && p["id"] == a));

    // Clear errors, exit status 1.
    for (args, says) in [
        (
            vec!["people", "show", "Nobody"],
            "no person named \"Nobody\"",
        ),
        (vec!["people", "move", "999999", "Anna"], "no face 999999"),
        (vec!["search", "--person", "424242"], "no person 424242"),
    ] {
        let out = run(smoothface(&db).args(&args));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

#[test]
fn eval_people_scores_both_groupings_on_the_same_faces() {
    let Some(faces) = faces_root("eval_people_scores_both_groupings_on_the_same_faces") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("library");
    copy_people(&faces.join("lfw-devtrain"), &lib, 6, 4);
    let out = succeed(
        smoothface(&tmp.path().join("g.sqlite"))
            .args(["eval", "people", "--face", "central", "--json"])
            .arg(&lib),
    );
    let r = json(&out);
    assert_eq!(
        (r["labelled_faces"].as_u64(), r["true_people"].as_u64()),
        (Some(24), Some(6)),
        "{r}"
    );
    for who in ["ours", "immich"] {
        for key in [
            "bcubed_f",
            "pairwise_f",
            "bcubed_precision",
            "bcubed_recall",
            "nmi",
            "unassigned_share",
        ] {
            let v = r[who][key].as_f64().unwrap_or(-1.0);
            assert!((0.0..=1.0).contains(&v), "{who}.{key} = {v}");
        }
    }
    // Six people of four clear photos each: our grouping finds them nearly perfectly.
    assert!(r["ours"]["bcubed_f"].as_f64().unwrap() > 0.9, "{r}");
    assert_eq!(r["fusion_queries"].as_u64(), Some(6));
}

/// A name stored before names were checked, with ESC and BEL in it (which would recolour the
/// terminal and set its title), is printed by `people list` with them escaped; `people name`
/// refuses such a name, saying which characters.
#[test]
fn people_list_prints_a_stored_control_character_escaped_and_people_name_refuses_one() {
    use smoothface_device::gallery::db;
    let tmp = tempfile::tempdir().unwrap();
    let gallery = tmp.path().join("g.sqlite");
    {
        let conn = db::open(&gallery).unwrap();
        let model = db::model_row(&conn, "0123456789abcdef", "legacy", 512).unwrap();
        conn.execute("UPDATE models SET current = 1 WHERE id = ?1", [model])
            .unwrap();
        conn.execute(
            "INSERT INTO people (model_id, name) VALUES (?1, ?2)",
            rusqlite::params![model, "\u{1b}]0;owned\u{7}Eve\u{1b}[31m"],
        )
        .unwrap();
    }
    let out = succeed(smoothface(&gallery).args(["people", "list"]));
    assert!(
        !out.stdout.iter().any(|&b| b == 0x1b || b == 0x07),
        "raw control characters reached the terminal"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("\\u{1b}]0;owned\\u{7}Eve\\u{1b}[31m"),
        "{text}"
    );
    let out = run(smoothface(&gallery).args(["people", "name", "1", "Eve\u{7}"]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("U+0007"), "{err}");
}
