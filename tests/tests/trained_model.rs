//! From training to the gallery: a few fine-tuning steps from the pretrained MobileFaceNet
//! (`smoothface-train import`, `fit`), `export` to a model folder, `quantize` it to int8, then
//! `smoothface index` and `search` with each model (`--model DIR`) on real photos, finding each
//! held-out person first.

use smoothface_tests::{copy_people, faces_root, json, smoothface, succeed, text, train};

#[test]
fn a_fine_tuned_and_exported_model_finds_people_in_the_gallery() {
    let Some(faces) = faces_root("a_fine_tuned_and_exported_model_finds_people_in_the_gallery")
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let root = smoothface_tests::repo();
    let init = tmp.path().join("pretrained.safetensors");
    train(&[
        "import",
        text(&root.join("models/mobilefacenet/fr_feature.onnx")),
        "--arch",
        "mobilefacenet",
        "--out",
        text(&init),
    ]);

    // Two steps of Smooth-AP on the aligned crops of 12 people (16 faces a batch).
    let config = tmp.path().join("train.toml");
    std::fs::write(
        &config,
        format!(
            "[data]\nfolder = \"{}\"\nvalidation_fraction = 0.25\n[model]\ninit = \"{}\"\n\
             [train]\nbatch_size = 16\nepochs = 1\nmax_steps = 2\n",
            faces.join("glint-aligned12").display(),
            init.display()
        ),
    )
    .unwrap();
    let run_dir = tmp.path().join("run");
    let last = train(&[
        "fit",
        "--quiet",
        "--config",
        text(&config),
        "--out",
        text(&run_dir),
    ]);
    assert_eq!(
        (last["epoch"].as_u64(), last["step"].as_u64()),
        (Some(1), Some(2))
    );

    let model = tmp.path().join("model");
    let exported = train(&[
        "export",
        text(&run_dir.join("last.safetensors")),
        "--out",
        text(&model),
    ]);
    assert!(
        exported["max_abs_diff"].as_f64().unwrap() < 1e-4,
        "{exported}"
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(model.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(
        manifest["origin"]["training_config"]["train"]["max_steps"],
        2
    );

    let int8 = tmp.path().join("model-int8");
    let quantized = train(&[
        "quantize",
        text(&model),
        "--calibration",
        text(&faces.join("glint-aligned12")),
        "--images",
        "64",
        "--out",
        text(&int8),
    ]);
    assert!(
        quantized["mean_cosine"].as_f64().unwrap() > 0.98,
        "{quantized}"
    );

    // The gallery with each model: 6 people, 4 photos each, the 5th held out.
    let (lib, held) = (tmp.path().join("library"), tmp.path().join("queries"));
    let people = copy_people(&faces.join("lfw-devtrain"), &lib, 6, 5);
    std::fs::create_dir(&held).unwrap();
    for p in &people {
        let q = lib.join(p).join(format!("{p}_0005.jpg"));
        std::fs::rename(&q, held.join(q.file_name().unwrap())).unwrap();
    }
    for (name, model) in [("float", &model), ("int8", &int8)] {
        let db = tmp.path().join(format!("{name}.sqlite"));
        let with_model = |args: &[&str]| {
            let mut c = smoothface(&db);
            c.arg("--model").arg(model).args(args);
            c
        };
        let out = succeed(&mut with_model(&["index", "--json", text(&lib)]));
        assert_eq!(json(&out)["analysed"], 24);
        for p in &people {
            let query = held.join(format!("{p}_0005.jpg"));
            let out = succeed(&mut with_model(&[
                "search",
                "--json",
                "--top",
                "4",
                text(&query),
            ]));
            let hits = json(&out)["hits"].as_array().unwrap().clone();
            let first = hits[0]["path"].as_str().unwrap();
            assert!(
                first.contains(&format!("/{p}/")),
                "{name}, {p}: best hit is {first}"
            );
        }
    }
}
