//! Helpers shared by the trainer's integration tests: reading the real aligned faces (which
//! `smoothface_tests` locates), tract as the independent runtime that ONNX graphs are checked
//! against, and RecordIO records written by hand.

// Each test file uses its own subset of the helpers.
#![allow(dead_code)]

use smoothface_shared::protocol::folder_per_person;
use smoothface_trainer::data::recordio::MAGIC;
use std::path::{Path, PathBuf};
use tract_onnx::prelude::{
    tvec, DatumType, Framework, InferenceFact, InferenceModelExt, IntoRunnable,
};

/// The largest difference allowed between two runtimes' outputs for the same weights.
pub const TOLERANCE: f32 = 1e-4;

/// The set of real face photos the tests use: 12 people, 60 crops each, already aligned to
/// 112x112 (found with [`smoothface_tests::faces`]).
pub const ALIGNED: &str = "glint-aligned12";

/// `count` faces of each of the first `people` identities (by name), as interleaved RGB crops.
pub fn crops(dir: &Path, people: usize, count: usize) -> Vec<Vec<u8>> {
    folder_per_person(dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .take(people)
        .flat_map(|person| person.images.into_iter().take(count))
        .map(|file| {
            image::open(&file)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
                .to_rgb8()
                .into_raw()
        })
        .collect()
}

/// Largest absolute difference between two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Runs an ONNX file through tract on one input of shape `shape`. The input is declared of that
/// shape, as the device declares it: a graph's own declaration may leave the batch symbolic where
/// its inner shapes say 1 (w600k_mbf's), which tract cannot reconcile by itself.
pub fn run_tract(onnx: &Path, shape: &[usize], input: &[f32]) -> Vec<f32> {
    let plan = tract_onnx::onnx()
        .model_for_path(onnx)
        .and_then(|m| m.with_input_fact(0, InferenceFact::dt_shape(DatumType::F32, shape)))
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .unwrap_or_else(|e| panic!("{}: tract cannot run it: {e:#}", onnx.display()));
    let x = tract_onnx::prelude::Tensor::from_shape(shape, input).expect("input tensor");
    let out = plan.run(tvec!(x.into())).expect("tract run");
    let plain = out[0].try_as_plain_ram().expect("output in memory");
    plain.as_slice::<f32>().expect("float output").to_vec()
}

/// Runs an ONNX file through onnxruntime (the reference runtime, in the benchmark peers'
/// `.venv-bench`, which `scripts/setup --bench` makes and `scripts/test` runs) on `input`, one
/// face of `[3, size, size]` at a time (pretrained graphs may declare a batch of 1), and returns
/// the outputs one after the other. Panics, saying what to run, when that Python is missing.
pub fn run_onnxruntime(onnx: &Path, size: usize, input: &[f32]) -> Vec<f32> {
    let python = smoothface_tests::repo().join(".venv-bench/bin/python");
    assert!(
        python.exists(),
        "no {}: run scripts/setup --bench (scripts/test does)",
        python.display()
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let (x, y) = (dir.path().join("x.npy"), dir.path().join("y.npy"));
    let n = input.len() / (3 * size * size);
    tch::Tensor::from_slice(input)
        .reshape([n as i64, 3, size as i64, size as i64])
        .write_npy(&x)
        .expect("write the input");
    let script = "import sys, numpy as np, onnxruntime as ort\n\
        onnx, x, y = sys.argv[1:]\n\
        s = ort.InferenceSession(onnx, providers=['CPUExecutionProvider'])\n\
        name, x = s.get_inputs()[0].name, np.load(x)\n\
        np.save(y, np.concatenate([s.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))]))\n";
    let out = std::process::Command::new(&python)
        .args(["-c", script])
        .arg(onnx)
        .arg(&x)
        .arg(&y)
        .output()
        .expect("run the benchmark Python");
    assert!(
        out.status.success(),
        "onnxruntime failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let output = tch::Tensor::read_npy(&y).expect("read the output");
    Vec::try_from(output.to_kind(tch::Kind::Float).flatten(0, -1)).expect("float output")
}

/// An IRHeader payload: flag, label, id, id2, the extra labels, the image bytes.
pub fn payload(label: f32, extra: &[f32], image: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend((extra.len() as u32).to_le_bytes());
    p.extend(label.to_le_bytes());
    p.extend(7u64.to_le_bytes());
    p.extend(0u64.to_le_bytes());
    for l in extra {
        p.extend(l.to_le_bytes());
    }
    p.extend(image);
    p
}

/// Appends one record part: magic, continuation flag and length, data padded to 4 bytes.
pub fn part(rec: &mut Vec<u8>, cflag: u32, data: &[u8]) {
    rec.extend(MAGIC.to_le_bytes());
    rec.extend(((cflag << 29) | data.len() as u32).to_le_bytes());
    rec.extend(data);
    rec.resize(rec.len().next_multiple_of(4), 0);
}

/// Writes `payloads` as records (key = position) to `dir/train.rec` with their index
/// `dir/train.idx`; returns both paths and each record's offset.
pub fn write_records(dir: &Path, payloads: &[Vec<u8>]) -> (PathBuf, PathBuf, Vec<usize>) {
    let (mut rec, mut idx, mut offsets) = (Vec::new(), String::new(), Vec::new());
    for (key, p) in payloads.iter().enumerate() {
        offsets.push(rec.len());
        idx.push_str(&format!("{key}\t{}\n", rec.len()));
        part(&mut rec, 0, p);
    }
    let (rec_path, idx_path) = (dir.join("train.rec"), dir.join("train.idx"));
    std::fs::write(&rec_path, rec).unwrap();
    std::fs::write(&idx_path, idx).unwrap();
    (rec_path, idx_path, offsets)
}
