//! The release bundle runs where there is no Rust and no source tree: `scripts/bundle` packs the
//! binary built for this test run with its models, and the unpacked copy indexes and searches a
//! library with a clean environment, from a folder outside the checkout.

use smoothface_tests::{binary, copy_people, faces, json, repo, run, succeed};
use std::process::Command;

#[test]
fn an_unpacked_bundle_indexes_and_searches_on_its_own() {
    let Some(lfw) = faces(
        "an_unpacked_bundle_indexes_and_searches_on_its_own",
        "lfw-devtrain",
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let tarball = tmp.path().join("bundle.tar.gz");
    succeed(
        Command::new(repo().join("scripts/bundle"))
            .arg("--binary")
            .arg(binary("smoothface"))
            .arg("--out")
            .arg(&tarball),
    );
    let unpacked = tmp.path().join("unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    let tar = run(Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(&unpacked));
    assert!(tar.status.success());
    let top: Vec<_> = std::fs::read_dir(&unpacked)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(top.len(), 1, "one folder: {top:?}");
    let bundle = &top[0];
    for file in [
        "smoothface",
        "README.txt",
        "models/w600k_mbf/w600k_mbf.onnx",
        "models/mobilefacenet/manifest.json",
        "models/mtcnn/pnet.onnx",
        "models/scrfd/manifest.json",
    ] {
        assert!(
            bundle.join(file).is_file(),
            "{file} missing from the bundle"
        );
    }

    let library = tmp.path().join("library");
    let people = copy_people(&lfw, &library, 3, 4);
    let query = tmp.path().join("query.jpg");
    let held = library
        .join(&people[1])
        .join(format!("{}_0004.jpg", people[1]));
    std::fs::rename(&held, &query).unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir(&home).unwrap();
    // No variable of ours, no cargo, no source tree: HOME and the working folder are elsewhere.
    let smoothface = |args: &[&str]| {
        let mut c = Command::new(bundle.join("smoothface"));
        c.env_clear()
            .env("HOME", &home)
            .env("PATH", "/usr/bin:/bin")
            .current_dir(tmp.path())
            .arg("--quiet")
            .args(args);
        run(&mut c)
    };
    let index = smoothface(&["index", "--json", library.to_str().unwrap()]);
    assert!(
        index.status.success(),
        "{}",
        String::from_utf8_lossy(&index.stderr)
    );
    assert_eq!(json(&index)["analysed"], 11);
    assert!(home
        .join(".local/share/smoothface/gallery.sqlite")
        .is_file());
    let search = smoothface(&["search", "--json", "--top", "3", query.to_str().unwrap()]);
    assert!(
        search.status.success(),
        "{}",
        String::from_utf8_lossy(&search.stderr)
    );
    let first = json(&search)["hits"][0]["path"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        first.contains(&format!("/{}/", people[1])),
        "best hit {first}"
    );
    let list = json(&smoothface(&["models", "list", "--json"]));
    assert_eq!(
        list["models"][0]["origin"], "beside the executable",
        "{list}"
    );
}
