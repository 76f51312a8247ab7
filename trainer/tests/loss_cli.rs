//! `smoothface-train loss` end to end: the binary on .npy files written here, against hand-computed
//! values and the library.

use smoothface_trainer::loss::{Mode, SmoothAp};
use smoothface_trainer::npy;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tch::{Kind, Tensor};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_smoothface-train"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs `loss` and returns its JSON report.
fn report(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["loss"];
    all.extend(args);
    let out = run(&all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Writes a float32 [B, 2] embeddings file and an int64 labels file, as numpy.save would.
fn batch(dir: &Path, name: &str, embeddings: &[f32], labels: &[i64]) -> (PathBuf, PathBuf) {
    let (e, l) = (
        dir.join(format!("{name}-e.npy")),
        dir.join(format!("{name}-l.npy")),
    );
    npy::write(&Tensor::from_slice(embeddings).view([-1, 2]), &e).unwrap();
    npy::write(&Tensor::from_slice(labels), &l).unwrap();
    (e, l)
}

fn text(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The batch worked out in the Smooth-AP unit tests: e0 = (1, 0), e1 = (0.6, 0.8),
/// e2 = (0.6, −0.8), labels [0, 0, 1]. Paper mode: query 0 ranks its positive tied with the
/// negative (AP 2/3), query 1 ranks it first (AP 1): loss 1/6. Official mode: 1/30. Scaling the
/// rows changes nothing.
#[test]
fn hand_computed_smooth_ap() {
    let dir = tempfile::tempdir().unwrap();
    let (e, l) = batch(
        dir.path(),
        "hand",
        &[2.0, 0.0, 0.6, 0.8, 3.0, -4.0],
        &[0, 0, 1],
    );
    let paper = report(&["--embeddings", text(&e), "--labels", text(&l)]);
    assert!(
        (paper["loss"].as_f64().unwrap() - 1.0 / 6.0).abs() < 1e-6,
        "{paper}"
    );
    assert_eq!(paper["loss_name"], "smooth-ap");
    assert_eq!(paper["mode"], "paper");
    assert_eq!(paper["tau"], 0.01);
    assert_eq!(
        (paper["batch"].as_i64(), paper["dim"].as_i64()),
        (Some(3), Some(2))
    );
    let official = report(&[
        "--embeddings",
        text(&e),
        "--labels",
        text(&l),
        "--mode",
        "official",
    ]);
    assert!(
        (official["loss"].as_f64().unwrap() - 1.0 / 30.0).abs() < 1e-6,
        "{official}"
    );
}

/// The baselines on the batch of their unit tests: triplet 0.3609, contrastive 0.775.
#[test]
fn hand_computed_baselines() {
    let dir = tempfile::tempdir().unwrap();
    let (e, l) = batch(
        dir.path(),
        "hand",
        &[1.0, 0.0, 0.6, 0.8, 0.0, 1.0, -1.0, 0.0],
        &[0, 0, 1, 1],
    );
    let triplet = report(&[
        "--embeddings",
        text(&e),
        "--labels",
        text(&l),
        "--loss",
        "triplet",
    ]);
    let expected = (0.4 + 0.8f64.sqrt() + 2f64.sqrt() - 2.0 * 0.4f64.sqrt()) / 4.0;
    assert!(
        (triplet["loss"].as_f64().unwrap() - expected).abs() < 1e-6,
        "{triplet}"
    );
    assert_eq!(
        (triplet["margin"].as_f64(), triplet["mode"].is_null()),
        (Some(0.2), true)
    );
    let contrastive = report(&[
        "--embeddings",
        text(&e),
        "--labels",
        text(&l),
        "--loss",
        "contrastive",
        "--margin",
        "0.5",
    ]);
    assert!(
        (contrastive["loss"].as_f64().unwrap() - 0.775).abs() < 1e-6,
        "{contrastive}"
    );
}

/// A random batch: the printed loss and the written gradient are the library's.
#[test]
fn matches_the_library() {
    let dir = tempfile::tempdir().unwrap();
    tch::manual_seed(3);
    let embeddings = Tensor::randn([40, 16], (Kind::Float, tch::Device::Cpu));
    let labels = Tensor::randint(10, [40], (Kind::Int64, tch::Device::Cpu));
    let (e, l, g) = (
        dir.path().join("e.npy"),
        dir.path().join("l.npy"),
        dir.path().join("g.npy"),
    );
    npy::write(&embeddings, &e).unwrap();
    npy::write(&labels, &l).unwrap();
    for mode in [Mode::Paper, Mode::Official] {
        let name = if mode == Mode::Paper {
            "paper"
        } else {
            "official"
        };
        let args = [
            "--embeddings",
            text(&e),
            "--labels",
            text(&l),
            "--mode",
            name,
            "--tau",
            "0.05",
        ];
        let mut with_grad = args.to_vec();
        with_grad.extend(["--grad-out", text(&g)]);
        let printed = report(&with_grad)["loss"].as_f64().unwrap();
        let x = embeddings.detach().set_requires_grad(true);
        let loss = SmoothAp::new(mode, 0.05)
            .unwrap()
            .loss(&x, &labels)
            .unwrap();
        loss.backward();
        assert!((printed - loss.double_value(&[])).abs() < 1e-7, "{mode:?}");
        let written = npy::read_embeddings(&g).unwrap();
        assert_eq!(
            (written.size(), written.kind()),
            (vec![40, 16], Kind::Float)
        );
        let error = (written - x.grad()).abs().max().double_value(&[]);
        assert!(error < 1e-7, "{mode:?}: gradient differs by {error}");
    }
}

/// Errors name the file and the fix and exit 1; bad usage exits 2.
#[test]
fn errors() {
    let dir = tempfile::tempdir().unwrap();
    let (e, l) = batch(dir.path(), "ok", &[1.0, 0.0, 0.0, 1.0], &[0, 0]);
    let missing = dir.path().join("missing.npy");
    let cases: [(&[&str], &str); 5] = [
        (
            &["--embeddings", text(&missing), "--labels", text(&l)],
            "missing.npy: No such file",
        ),
        (
            &["--embeddings", text(&l), "--labels", text(&l)],
            "must be float32 ('<f4') or float64",
        ),
        (
            &["--embeddings", text(&e), "--labels", text(&e)],
            "labels must be int64",
        ),
        (
            &[
                "--embeddings",
                text(&e),
                "--labels",
                text(&l),
                "--loss",
                "triplet",
                "--tau",
                "1",
            ],
            "--mode and --tau apply to smooth-ap only",
        ),
        (
            &[
                "--embeddings",
                text(&e),
                "--labels",
                text(&l),
                "--loss",
                "triplet",
            ],
            "no sample has both a positive and a negative",
        ),
    ];
    for (args, expected) in cases {
        let mut all = vec!["loss"];
        all.extend(args);
        let out = run(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
    }
    let usage = run(&["loss", "--embeddings", text(&e)]);
    assert_eq!(usage.status.code(), Some(2));
}
