//! The command line's surface: names other tools depend on, and clear refusals.

use std::path::Path;
use std::process::{Command, Output};

fn smoothface(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_smoothface"))
        .args(args)
        .output()
        .expect("run smoothface")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn help_names_every_subcommand_and_flag_scripts_use() {
    let top = stdout(&smoothface(&["--help"]));
    for cmd in [
        "index", "search", "detect", "stats", "forget", "eval", "bench",
    ] {
        assert!(top.contains(cmd), "--help lacks {cmd}:\n{top}");
    }
    for (cmd, flags) in [
        (
            vec!["search"],
            vec![
                "--face",
                "--top",
                "--min-score",
                "--json",
                "--model",
                "--db",
            ],
        ),
        (vec!["detect"], vec!["--json", "--embeddings"]),
        (vec!["index"], vec!["--json", "--threads"]),
        (
            vec!["eval", "retrieval"],
            vec!["--face", "--min-per-person", "--json"],
        ),
        (vec!["eval", "pairs"], vec!["--dev", "--json"]),
    ] {
        let help = stdout(&smoothface(&[cmd.as_slice(), &["--help"]].concat()));
        for flag in flags {
            assert!(help.contains(flag), "{cmd:?} --help lacks {flag}:\n{help}");
        }
    }
}

#[test]
fn bad_usage_exits_2_and_says_why() {
    let o = smoothface(&["search"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("PHOTO"), "{}", stderr(&o));
}

#[test]
fn a_corrupt_model_file_is_refused_naming_it() {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/mobilefacenet");
    if !models.join("fr_feature.onnx").exists() {
        panic!("the pretrained models are missing: run scripts/setup (scripts/test does)");
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        models.join("manifest.json"),
        tmp.path().join("manifest.json"),
    )
    .unwrap();
    let onnx = std::fs::read(models.join("fr_feature.onnx")).unwrap();
    std::fs::write(tmp.path().join("fr_feature.onnx"), &onnx[..onnx.len() / 2]).unwrap();
    let img = tmp.path().join("grey.png");
    image::RgbImage::from_pixel(64, 64, image::Rgb([128, 128, 128]))
        .save(&img)
        .unwrap();
    let o = smoothface(&[
        "detect",
        "--model",
        tmp.path().to_str().unwrap(),
        img.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("fr_feature.onnx") && err.contains("sha256"),
        "{err}"
    );
}

#[test]
fn a_faceless_image_has_no_face_and_a_bad_one_is_partial() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("grey.png");
    image::RgbImage::from_pixel(200, 150, image::Rgb([128, 128, 128]))
        .save(&img)
        .unwrap();
    let bad = tmp.path().join("bad.jpg");
    std::fs::write(&bad, b"not a photo").unwrap();
    let o = smoothface(&[
        "detect",
        "--json",
        img.to_str().unwrap(),
        bad.to_str().unwrap(),
    ]);
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
fn bench_times_every_graph_of_every_model_and_profiles_them() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let photos = root.join("../shared/data/faces/lfw-devtrain");
    if !photos.exists() {
        eprintln!("skipped: {} is absent", photos.display());
        return;
    }
    let model = root.join("models/mobilefacenet");
    let (model, photos) = (model.to_str().unwrap(), photos.to_str().unwrap());
    let o = smoothface(&[
        "--model",
        model,
        "bench",
        "--photos",
        photos,
        "--faces",
        "3",
        "--e2e-photos",
        "2",
        "--search-sizes",
        "100",
        "--rounds",
        "1",
        "--profile",
        "--no-peer",
        "--json",
        "--compare",
        model,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = r["embedding"].as_array().unwrap();
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
