//! `smoothface-train bench-loss` end to end (the children's memory measurement in processes of
//! their own, and the table) and `bench-step` beside its PyTorch peer.

use std::process::Command;

fn run(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_smoothface-train"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// One configuration measured in a child, as the benchmark runs it.
fn child(form: &str, batch: i64) -> serde_json::Value {
    let batch = batch.to_string();
    let args = [
        "bench-loss",
        "--child",
        form,
        "--batches",
        &batch,
        "--threads",
        "1",
        "--dim",
        "64",
    ];
    serde_json::from_str(&run(&args)).unwrap()
}

/// The scalable form's peak holds at least what autograd must keep (official mode: the
/// sigmoid's output, [B, 4, B] float32) and stays within a few times that; the authors' form's
/// peak is of the order of its estimate (11 B³ float32 numbers); both compute the same loss.
#[test]
fn children_measure_memory() {
    let ours = child("scalable", 1024);
    let saved = 1024 * 4 * 1024 * 4;
    let peak = ours["peak_bytes"].as_u64().unwrap();
    assert!(peak >= saved && peak < 8 * saved, "{ours}");
    let theirs = child("authors", 128);
    let estimate = 11 * 128u64.pow(3) * 4;
    let peak = theirs["peak_bytes"].as_u64().unwrap();
    assert!(
        peak > estimate / 2 && peak < estimate * 3 / 2,
        "{theirs} vs estimate {estimate}"
    );
    let small = child("scalable", 128);
    let difference = small["loss"].as_f64().unwrap() - theirs["loss"].as_f64().unwrap();
    assert!(difference.abs() < 1e-5, "{small} {theirs}");
}

#[test]
fn table_and_json() {
    let common = [
        "bench-loss",
        "--batches",
        "16,1024",
        "--threads",
        "1",
        "--dim",
        "16",
    ];
    let limit = ["--authors-limit-gb", "1"];
    let table = run(&[&common[..], &limit[..]].concat());
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| l.starts_with("| 16") || l.starts_with("| 1024"))
        .collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert!(rows[1].contains("skipped: needs ~44.00 GiB"), "{table}");
    let json: serde_json::Value =
        serde_json::from_str(&run(&[&common[..], &limit[..], &["--json"]].concat())).unwrap();
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!(
        (rows[1]["form"].as_str(), rows[1]["status"].as_str()),
        (Some("authors"), Some("measured"))
    );
    assert_eq!(rows[3]["status"], "skipped");
    assert_eq!(json["setup"]["mode"], "official");
}

/// `bench-step --json` of one timed step at batch 8 on one thread, its peer run by `python`.
fn bench_step(python: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "bench-step",
        "--batches",
        "8",
        "--threads",
        "1",
        "--steps",
        "1",
        "--max-seconds",
        "0",
        "--python",
        python,
        "--json",
    ];
    args.extend_from_slice(extra);
    serde_json::from_str(&run(&args)).unwrap()
}

/// `bench-step` end to end, with its PyTorch peer (`bench/torch_step.py` in `.venv-torch`, which
/// `scripts/setup --trainer` installs): for every backbone the peer loads the trainer's weights
/// by name (it refuses weights that do not fit its model) and its warm-up step computes the
/// trainer's loss on the same batch, which holds only if the two are the same network with the
/// same Smooth-AP. The JSON has a row per configuration with both measurements.
#[test]
fn bench_step_runs_the_same_step_as_pytorch() {
    let python = smoothface_tests::repo().join(".venv-torch/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup --trainer (scripts/test does)",
        python.display()
    );
    let python = python.to_string_lossy().into_owned();
    let report = bench_step(&python, &[]);
    let rows = report["rows"].as_array().unwrap();
    let archs: Vec<&str> = rows.iter().map(|r| r["arch"].as_str().unwrap()).collect();
    assert_eq!(archs, ["mobilefacenet", "mbf", "iresnet50"]);
    for row in rows {
        let (ours, peer) = (&row["smoothface"], &row["pytorch"]);
        assert_eq!(ours["status"], "measured", "{row}");
        assert_eq!(peer["status"], "measured", "{row}");
        let (a, b) = (
            ours["first_loss"].as_f64().unwrap(),
            peer["first_loss"].as_f64().unwrap(),
        );
        assert!(a > 0.0 && a < 1.0 && (a - b).abs() < 1e-5, "{row}");
        assert_eq!(ours["steps"], 1);
        let ips = ours["images_per_second"].as_f64().unwrap();
        let seconds = ours["seconds_per_step"].as_f64().unwrap();
        assert!((ips * seconds - 8.0).abs() < 1e-6, "{row}");
    }

    // A peer that cannot start is a failed row, not a failed benchmark.
    let report = bench_step("/nonexistent/python", &["--arch", "mobilefacenet"]);
    let row = &report["rows"][0];
    assert_eq!(row["smoothface"]["status"], "measured");
    assert_eq!(row["pytorch"]["status"], "failed", "{row}");
}
