//! `smoothface eval`: accuracy of the detector and embedder on labelled photos, with the
//! shared metrics (the same code the trainer reports).

pub mod calibrate;
pub mod ijbc;
pub mod ijbc_fixture;

use crate::pipeline::{FacePick, Pipeline};
use anyhow::{ensure, Context, Result};
use rayon::prelude::*;
use serde::Serialize;
use smoothface_shared::embedding::dot;
use smoothface_shared::metrics::{self, KFoldReport, RetrievalReport};
use smoothface_shared::protocol::{self, Identity};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Recall@K values reported, as in the Smooth-AP paper's face retrieval tables.
pub const RECALL_KS: [usize; 3] = [1, 4, 16];

/// Why a photo gave no embedding.
#[derive(Debug, Clone, Serialize)]
pub struct Missing {
    /// The photo.
    pub path: String,
    /// Unreadable, or no face found.
    pub reason: String,
}

/// One embedding per photo (or why not), computed in parallel with a progress bar. A photo that
/// cannot be decoded or has no face is [`Missing`]; a failure of the models themselves (such as
/// a diverged embedder's NaN output) fails the whole evaluation, since no photo is to blame.
pub fn embed_photos(
    pipeline: &Pipeline,
    paths: &[PathBuf],
    pick: FacePick,
    progress: bool,
) -> Result<Vec<Result<Vec<f32>, Missing>>> {
    let bar = crate::progress::photos_bar(paths.len(), progress);
    let out = paths
        .par_iter()
        .map(|p| {
            let missing = |reason: String| Missing {
                path: p.display().to_string(),
                reason,
            };
            let r = match pipeline.decode(p) {
                Err(e) => Ok(Err(missing(e.reason()))),
                Ok(img) => pipeline.analyze_one(&img, pick).map(|face| {
                    face.map(|f| f.embedding)
                        .ok_or_else(|| missing("no face found".into()))
                }),
            };
            bar.inc(1);
            r
        })
        .collect();
    bar.finish_and_clear();
    out
}

/// Result of `eval retrieval`.
#[derive(Debug, Serialize)]
pub struct RetrievalEval {
    /// People kept (at least `min_per_person` photos with a face).
    pub people: usize,
    /// Photos used as queries and gallery.
    pub photos: usize,
    /// Photos that gave no embedding.
    pub missing: Vec<Missing>,
    /// mAP and Recall@K.
    pub metrics: RetrievalReport,
}

/// Every face a query against all the others (the Smooth-AP paper's protocol), one face per photo.
pub fn retrieval(
    pipeline: &Pipeline,
    dir: &Path,
    pick: FacePick,
    min_per_person: usize,
    progress: bool,
) -> Result<RetrievalEval> {
    let people: Vec<Identity> = protocol::folder_per_person(dir)?
        .into_iter()
        .filter(|p| p.images.len() >= min_per_person)
        .collect();
    let paths: Vec<PathBuf> = people
        .iter()
        .flat_map(|p| p.images.iter().cloned())
        .collect();
    let person_of: Vec<u32> = people
        .iter()
        .enumerate()
        .flat_map(|(i, p)| std::iter::repeat_n(i as u32, p.images.len()))
        .collect();
    let results = embed_photos(pipeline, &paths, pick, progress)?;
    let mut missing = Vec::new();
    let mut by_person: HashMap<u32, Vec<Vec<f32>>> = HashMap::new();
    for (r, &person) in results.into_iter().zip(&person_of) {
        match r {
            Ok(v) => by_person.entry(person).or_default().push(v),
            Err(m) => missing.push(m),
        }
    }
    // A person may fall under the minimum once faceless photos are gone.
    let mut kept: Vec<(u32, Vec<Vec<f32>>)> = by_person
        .into_iter()
        .filter(|(_, v)| v.len() >= min_per_person)
        .collect();
    kept.sort_by_key(|(p, _)| *p);
    let (mut embeddings, mut labels) = (Vec::new(), Vec::new());
    for (person, vectors) in &kept {
        for v in vectors {
            embeddings.extend_from_slice(v);
            labels.push(*person);
        }
    }
    ensure!(
        !labels.is_empty(),
        "{}: no person has {min_per_person} photos with a detectable face",
        dir.display()
    );
    let metrics =
        metrics::retrieval_metrics(&embeddings, pipeline.embedder.dim(), &labels, &RECALL_KS)
            .with_context(|| format!("embeddings of {}", pipeline.embedder.name))?;
    Ok(RetrievalEval {
        people: kept.len(),
        photos: labels.len(),
        missing,
        metrics,
    })
}

/// Result of `eval pairs`.
#[derive(Debug, Serialize)]
pub struct PairsEval {
    /// Pairs scored.
    pub pairs: usize,
    /// Photos that gave no embedding: their pairs score -1 (judged different).
    pub missing: Vec<Missing>,
    /// With 10-fold cross-validation: each fold's threshold and accuracy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kfold: Option<KFoldReport>,
    /// With `--dev`: the threshold chosen on the dev pairs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dev_threshold: Option<f32>,
    /// Accuracy: the 10-fold mean, or on the pairs at the dev threshold.
    pub accuracy: f64,
    /// True accept rate at a false accept rate of 1%.
    pub tar_at_far_1e2: f64,
}

/// LFW-style verification. The threshold is chosen by 10-fold cross-validation over the pairs'
/// folds, or on a separate dev pairs file.
pub fn pairs(
    pipeline: &Pipeline,
    dir: &Path,
    pairs_file: &Path,
    dev_file: Option<&Path>,
    pick: FacePick,
    progress: bool,
) -> Result<PairsEval> {
    let test = protocol::read_lfw_pairs(pairs_file)?;
    let dev = dev_file.map(protocol::read_lfw_pairs).transpose()?;
    let mut paths: Vec<PathBuf> = test
        .iter()
        .chain(dev.iter().flatten())
        .flat_map(|p| {
            [
                protocol::lfw_image_path(dir, &p.a),
                protocol::lfw_image_path(dir, &p.b),
            ]
        })
        .collect();
    paths.sort();
    paths.dedup();
    let results = embed_photos(pipeline, &paths, pick, progress)?;
    let mut missing = Vec::new();
    let mut vectors: HashMap<&Path, Vec<f32>> = HashMap::new();
    for (p, r) in paths.iter().zip(results) {
        match r {
            Ok(v) => {
                vectors.insert(p.as_path(), v);
            }
            Err(m) => missing.push(m),
        }
    }
    let score = |pairs: &[protocol::Pair]| -> (Vec<f32>, Vec<bool>) {
        pairs
            .iter()
            .map(|p| {
                let (a, b) = (
                    protocol::lfw_image_path(dir, &p.a),
                    protocol::lfw_image_path(dir, &p.b),
                );
                let s = match (vectors.get(a.as_path()), vectors.get(b.as_path())) {
                    (Some(a), Some(b)) => dot(a, b),
                    _ => -1.0,
                };
                (s, p.same)
            })
            .unzip()
    };
    let (scores, same) = score(&test);
    let cannot = |file: &Path| format!("{}: cannot score these pairs", file.display());
    let tar_at_far_1e2 =
        metrics::tar_at_far(&scores, &same, 1e-2).with_context(|| cannot(pairs_file))?;
    let eval = match (dev, dev_file) {
        (Some(dev), Some(dev_file)) => {
            let (dev_scores, dev_same) = score(&dev);
            let (threshold, _) = metrics::best_threshold(&dev_scores, &dev_same)
                .with_context(|| cannot(dev_file))?;
            PairsEval {
                pairs: test.len(),
                missing,
                kfold: None,
                dev_threshold: Some(threshold),
                accuracy: metrics::accuracy_at(&scores, &same, threshold)
                    .with_context(|| cannot(pairs_file))?,
                tar_at_far_1e2,
            }
        }
        _ => {
            let folds: Vec<usize> = test.iter().map(|p| p.fold).collect();
            let kfold = metrics::kfold_accuracy(&scores, &same, &folds)
                .with_context(|| cannot(pairs_file))?;
            PairsEval {
                pairs: test.len(),
                missing,
                accuracy: kfold.mean_accuracy,
                kfold: Some(kfold),
                dev_threshold: None,
                tar_at_far_1e2,
            }
        }
    };
    Ok(eval)
}
