//! Videos and the camera loop end to end through the `smoothface` binary, on clips made at test
//! time from real face photos (`scripts/make-clip`): tracks with the right people and times,
//! search that finds a clip and when, bad videos reported while the rest is indexed, and the
//! watch loop naming an enrolled person on a video file.

use smoothface_tests::{faces, json, make_clip, run, smoothface, succeed};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Photo `n` of an LFW person.
fn photo(lfw: &Path, who: &str, n: u32) -> PathBuf {
    lfw.join(who).join(format!("{who}_{n:04}.jpg"))
}

const A: &str = "Colin_Powell";
const B: &str = "Tony_Blair";

/// A 640x360 clip: A for 2 s, B for 2 s, A (another photo) for 2 s.
fn clip_aba(lfw: &Path, out: &Path) {
    make_clip(
        out,
        "640x360",
        &[
            (&photo(lfw, A, 1), 2.0),
            (&photo(lfw, B, 1), 2.0),
            (&photo(lfw, A, 2), 2.0),
        ],
    );
}

/// Rewrites a video with the ffmpeg command: `ffmpeg -i input ARGS output`.
fn ffmpeg(input: &Path, args: &[&str], output: &Path) {
    let status = std::process::Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-i"])
        .arg(input)
        .args(args)
        .arg(output)
        .status()
        .expect("run ffmpeg (scripts/setup installs it)");
    assert!(status.success(), "ffmpeg {args:?} failed");
}

/// The track of a clip that starts at `start_s` and whose box is nearest the frame's centre
/// (LFW's person is the central face; others in the photo are bystanders).
fn central_track(tracks: &[serde_json::Value], start_s: f64) -> &serde_json::Value {
    tracks
        .iter()
        .filter(|t| (t["start_s"].as_f64().unwrap() - start_s).abs() < 0.1)
        .min_by(|a, b| {
            let off = |t: &serde_json::Value| {
                let b = t["box"].as_array().unwrap();
                let x = (b[0].as_f64().unwrap() + b[2].as_f64().unwrap()) / 2.0;
                (x - 320.0).abs()
            };
            off(a).total_cmp(&off(b))
        })
        .unwrap_or_else(|| panic!("no track starts at {start_s} s: {tracks:?}"))
}

/// The person most of a folder's photos' faces are in.
fn person_of_folder(faces: &[serde_json::Value], folder: &Path) -> i64 {
    let mut counts: HashMap<i64, usize> = HashMap::new();
    for f in faces {
        if Path::new(f["path"].as_str().unwrap()).starts_with(folder) {
            if let Some(p) = f["person"].as_i64() {
                *counts.entry(p).or_default() += 1;
            }
        }
    }
    counts
        .into_iter()
        .max_by_key(|&(p, n)| (n, -p))
        .map(|(p, _)| p)
        .unwrap_or_else(|| panic!("no person for {}", folder.display()))
}

#[test]
fn a_clip_of_a_then_b_then_a_becomes_tracks_with_their_people_times_and_search_hits() {
    let test = "a_clip_of_a_then_b_then_a_becomes_tracks_with_their_people_times_and_search_hits";
    let Some(lfw) = faces(test, "lfw-devtrain") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (lib, db) = (tmp.path().join("library"), tmp.path().join("g.sqlite"));
    for who in [A, B] {
        std::fs::create_dir_all(lib.join(who)).unwrap();
        for n in 3..=6 {
            let p = photo(&lfw, who, n);
            std::fs::copy(&p, lib.join(who).join(p.file_name().unwrap())).unwrap();
        }
    }
    let clip = lib.join("clips/aba.mp4");
    std::fs::create_dir_all(clip.parent().unwrap()).unwrap();
    clip_aba(&lfw, &clip);
    // Bad videos beside it: a copy cut in half (its index, at the end, is lost), the same with
    // the index moved to the front (the frames stop early), and a text file named .mp4.
    let broken = lib.join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    let bytes = std::fs::read(&clip).unwrap();
    std::fs::write(broken.join("cut.mp4"), &bytes[..bytes.len() / 2]).unwrap();
    let faststart = tmp.path().join("faststart.mp4");
    ffmpeg(
        &clip,
        &["-c", "copy", "-movflags", "+faststart"],
        &faststart,
    );
    let bytes = std::fs::read(&faststart).unwrap();
    std::fs::write(broken.join("cut-faststart.mp4"), &bytes[..bytes.len() / 2]).unwrap();
    std::fs::write(broken.join("notes.mp4"), "a text file, renamed").unwrap();
    std::fs::write(broken.join("empty.mov"), "").unwrap();

    let out = run(smoothface(&db).args(["index", "--json"]).arg(&lib));
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json(&out);
    assert_eq!(report["videos"], 1, "{report}");
    // 6 s at 2 frames a second.
    assert_eq!(report["video_frames"], 12, "{report}");
    assert_eq!(report["analysed"], 9, "8 photos and the clip: {report}");
    let failed: HashMap<String, String> = report["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let name = Path::new(f["path"].as_str().unwrap()).file_name().unwrap();
            (
                name.to_string_lossy().into_owned(),
                f["error"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(failed.len(), 4, "{failed:?}");
    assert_eq!(failed["empty.mov"], "empty file (0 bytes)");
    let stats = json(&run(smoothface(&db).args(["stats", "--json"])));
    assert_eq!(
        (stats["videos"].as_i64(), stats["video_seconds"].as_f64()),
        (Some(1), Some(6.0)),
        "{stats}"
    );
    assert!(
        failed["cut.mp4"].contains("cannot open as a video"),
        "{failed:?}"
    );
    assert!(
        failed["cut-faststart.mp4"].starts_with("truncated"),
        "{failed:?}"
    );
    assert_eq!(failed["notes.mp4"], "not a video (unknown format)");

    // Three main tracks with the segments' times; the two of A are A's person, B's is B's.
    let faces = json(&run(smoothface(&db).args(["people", "faces", "--json"])));
    let faces = faces.as_array().unwrap();
    let tracks: Vec<serde_json::Value> = faces
        .iter()
        .filter(|f| f["path"].as_str().unwrap().ends_with("aba.mp4"))
        .cloned()
        .collect();
    let (a1, b1, a2) = (
        central_track(&tracks, 0.0),
        central_track(&tracks, 2.0),
        central_track(&tracks, 4.0),
    );
    for (t, end) in [(a1, 1.52), (b1, 3.52), (a2, 5.52)] {
        // The last frame sampled before the next photo: 1.52 s is frame 38 of 25 per second.
        assert!(
            (t["end_s"].as_f64().unwrap() - end).abs() < 0.05,
            "{t} should end at {end}"
        );
    }
    let (person_a, person_b) = (
        person_of_folder(faces, &lib.join(A)),
        person_of_folder(faces, &lib.join(B)),
    );
    assert_ne!(person_a, person_b);
    assert_eq!(a1["person"].as_i64(), Some(person_a), "{a1}");
    assert_eq!(a2["person"].as_i64(), Some(person_a), "{a2}");
    assert_eq!(b1["person"].as_i64(), Some(person_b), "{b1}");

    // Without B's photos, another photo of B finds the clip first, at B's time.
    succeed(smoothface(&db).arg("forget").arg(lib.join(B)));
    let out = run(smoothface(&db)
        .args(["search", "--json"])
        .arg(photo(&lfw, B, 7)));
    let hits = json(&out)["hits"].clone();
    assert!(
        hits[0]["path"].as_str().unwrap().ends_with("aba.mp4"),
        "{hits}"
    );
    assert_eq!(hits[0]["start_s"].as_f64(), Some(2.0), "{hits}");
    assert!(
        (hits[0]["end_s"].as_f64().unwrap() - 3.52).abs() < 0.05,
        "{hits}"
    );
    // Photos have no time range.
    assert!(hits[1]["start_s"].is_null(), "{hits}");

    // Frames over the pixel limit are refused before any is decoded.
    let small = run(smoothface(&tmp.path().join("small.sqlite"))
        .args(["--max-pixels", "100000", "index", "--json"])
        .arg(clip.parent().unwrap()));
    assert_eq!(small.status.code(), Some(3));
    let small = json(&small);
    let cause = small["failed"][0]["error"].as_str().unwrap();
    assert!(
        cause.starts_with("640x360 frames are over the limit"),
        "{cause}"
    );

    // A moved clip is recognised by its content, not analysed again.
    std::fs::rename(&clip, lib.join("clips/renamed.mp4")).unwrap();
    let again = json(&run(smoothface(&db).args(["index", "--json"]).arg(&lib)));
    assert_eq!(
        (again["moved"].as_u64(), again["videos"].as_u64()),
        (Some(1), Some(0)),
        "{again}"
    );
}

#[test]
fn the_watch_loop_names_a_person_enrolled_from_another_clip() {
    let test = "the_watch_loop_names_a_person_enrolled_from_another_clip";
    let Some(lfw) = faces(test, "lfw-devtrain") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("g.sqlite");
    let enrol_clip = tmp.path().join("a.mp4");
    make_clip(
        &enrol_clip,
        "640x360",
        &[
            (&photo(&lfw, A, 3), 1.0),
            (&photo(&lfw, A, 4), 1.0),
            (&photo(&lfw, A, 5), 1.0),
        ],
    );
    let out = succeed(
        smoothface(&db)
            .args(["camera", "--enrol", "Colin", "--json", "--source"])
            .arg(&enrol_clip),
    );
    let enrolled = json(&out);
    assert_eq!(
        enrolled["frames_seen"], 15,
        "3 s at 5 frames a second: {enrolled}"
    );
    assert!(
        enrolled["frames_kept"].as_u64().unwrap() >= 10,
        "{enrolled}"
    );

    let watched = tmp.path().join("aba.mp4");
    clip_aba(&lfw, &watched);
    let out = succeed(
        smoothface(&db)
            .args(["camera", "--watch", "--source"])
            .arg(&watched),
    );
    let events: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let named = |from: f64, to: f64| {
        events.iter().any(|e| {
            let t = e["time"].as_f64().unwrap();
            e["event"] == "appeared" && e["person"] == "Colin" && (from..to).contains(&t)
        })
    };
    assert!(named(0.0, 2.0), "A at the start is named: {events:?}");
    assert!(named(4.0, 6.0), "A at the end is named: {events:?}");
    for e in &events {
        let t = e["time"].as_f64().unwrap();
        if e["event"] != "left" && (2.0..4.0).contains(&t) {
            assert!(e["person"].is_null(), "B is not Colin: {e}");
        }
        for field in ["track", "box", "score", "best_media"] {
            assert!(e.get(field).is_some(), "{field} missing: {e}");
        }
    }
}

#[test]
fn a_missing_camera_is_a_clear_error_and_an_empty_list() {
    if Path::new("/dev/video0").exists() {
        eprintln!("SKIPPED a_missing_camera_is_a_clear_error: this machine has a camera");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("g.sqlite");
    let list = succeed(smoothface(&db).args(["camera", "--list", "--json"]));
    assert_eq!(json(&list), serde_json::json!([]));
    let out = run(smoothface(&db).args(["camera", "--watch", "--device", "0"]));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("camera 0: cannot open"), "{err}");
}

#[test]
fn a_video_stored_sideways_is_turned_upright_by_its_display_matrix() {
    let test = "a_video_stored_sideways_is_turned_upright_by_its_display_matrix";
    let Some(lfw) = faces(test, "lfw-devtrain") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let upright = tmp.path().join("upright.mp4");
    make_clip(&upright, "640x360", &[(&photo(&lfw, A, 3), 1.0)]);
    // The frames turned a quarter clockwise, as a phone held upright stores them; the copy in
    // the library says so in its display matrix (FFmpeg's `rotate` tag), the other does not.
    let (lib, sideways) = (tmp.path().join("library"), tmp.path().join("sideways.mp4"));
    std::fs::create_dir_all(&lib).unwrap();
    ffmpeg(&upright, &["-vf", "transpose=1"], &sideways);
    ffmpeg(
        &sideways,
        &["-c", "copy", "-metadata:s:v:0", "rotate=90"],
        &lib.join("portrait.mp4"),
    );
    std::fs::copy(&sideways, lib.join("no-matrix.mp4")).unwrap();
    let db = tmp.path().join("g.sqlite");
    succeed(smoothface(&db).args(["index", "--json"]).arg(&lib));
    let faces = json(&run(smoothface(&db).args(["people", "faces", "--json"])));
    let faces = faces.as_array().unwrap();
    // The sideways face is not found; the turned one is, where the upright clip has it.
    assert_eq!(faces.len(), 1, "{faces:?}");
    assert!(faces[0]["path"].as_str().unwrap().ends_with("portrait.mp4"));
    let first = tmp.path().join("first.png");
    ffmpeg(&upright, &["-frames:v", "1"], &first);
    let reference = json(&run(smoothface(&db).args(["detect", "--json"]).arg(&first)));
    let expected = &reference[0]["faces"][0]["bbox"];
    let got = &faces[0]["box"];
    for k in 0..4 {
        let (e, g) = (expected[k].as_f64().unwrap(), got[k].as_f64().unwrap());
        assert!(
            (e - g).abs() < 8.0,
            "box {got} against the upright clip's {expected}"
        );
    }
}
