//! `smoothface eval people`: our grouping, the Immich rule and Ente's HDBSCAN on the same faces
//! and embeddings of a folder-per-person tree, scored with the shared clustering metrics (and
//! the pairs of faces of one photo each put in one person); our "Same person?" suggestions
//! scored against the true people; and the fusions of `search --person` compared by mAP.
//!
//! The tree is indexed into a gallery as a user's would be (every face of every photo), both
//! groupings run from scratch over the gallery's eligible faces, and the labelled face of each
//! photo (its largest, or the one nearest the image centre) is scored against the photo's
//! folder. A labelled face that is not grouped (too small, too unsure, or left alone) counts as a
//! person of its own: that is what a user sees.

use super::ente::{self, EnteConfig};
use super::fusion::{self, Fusion};
use super::immich::{self, ImmichConfig};
use super::linkage::{self, LinkageConfig};
use super::store::{self, Eligibility, FaceRow};
use super::suggest::{self, PersonFaces};
use super::{Gallery, Grouping};
use crate::eval::Missing;
use crate::frames::Sampling;
use crate::gallery::{db as gallery_db, index};
use crate::pipeline::{FacePick, Pipeline};
use crate::tracks::{self, Pooling};
use anyhow::{ensure, Context, Result};
use rayon::prelude::*;
use serde::Serialize;
use smoothface_shared::clustering::{self, ClusteringScores};
use smoothface_shared::metrics::average_precision;
use smoothface_shared::protocol;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Instant;

/// How one grouping scored.
#[derive(Debug, Clone, Serialize)]
pub struct GroupingScore {
    /// BCubed F of the labelled faces.
    pub bcubed_f: f64,
    /// Pairwise F of the labelled faces.
    pub pairwise_f: f64,
    /// Every metric.
    #[serde(flatten)]
    pub scores: ClusteringScores,
    /// People the grouping made among the labelled faces (unassigned faces not counted).
    pub people_found: usize,
    /// Share of the labelled faces left unassigned.
    pub unassigned_share: f64,
    /// Pairs of faces of one photo put in one person (each such pair is a certain mistake:
    /// one photo shows a person once), over every grouped face of the gallery.
    pub same_photo_pairs: usize,
    /// Time to group the gallery's faces, milliseconds.
    pub ms: f64,
}

/// How the "same person?" suggestions did on a grouping's people.
#[derive(Debug, Clone, Serialize)]
pub struct SuggestionScore {
    /// Suggestions looked at (the best ones).
    pub top: usize,
    /// Suggestions there were (at most `top`).
    pub suggested: usize,
    /// Of them, pairs of people who are one true person.
    pub right: usize,
    /// `right / suggested`.
    pub precision: f64,
    /// Pairs of the grouping's people who are one true person: the splits to repair.
    pub split_pairs: usize,
    /// `right / split_pairs`: the share of the splits the suggestions cover.
    pub recall: f64,
}

/// Result of `eval people`.
#[derive(Debug, Serialize)]
pub struct PeopleEval {
    /// Photos of the tree.
    pub photos: usize,
    /// Faces in the gallery (every face of every photo).
    pub gallery_faces: usize,
    /// Of them, the faces grouped (eligible).
    pub grouped_faces: usize,
    /// Labelled faces scored (one per photo with a face).
    pub labelled_faces: usize,
    /// True people among them.
    pub true_people: usize,
    /// Photos without a labelled face, and why.
    pub missing: Vec<Missing>,
    /// Our grouping.
    pub ours: GroupingScore,
    /// The Immich rule.
    pub immich: GroupingScore,
    /// Ente's HDBSCAN.
    pub ente: GroupingScore,
    /// "Same person?" suggestions among our people: the best 20, and the best 100.
    pub suggestions: Vec<SuggestionScore>,
    /// Our parameters.
    pub linkage: LinkageConfig,
    /// Immich's parameters.
    pub immich_config: ImmichConfig,
    /// Ente's parameters.
    pub ente_config: EnteConfig,
    /// Which faces were grouped.
    pub eligibility: Eligibility,
    /// mAP of `search --person` by fusion: each true person with two or more labelled faces
    /// searches with the first half of them (at least one) for the rest among all other
    /// labelled faces.
    pub fusion_map: BTreeMap<&'static str, f64>,
    /// Queries (people) behind each `fusion_map` value.
    pub fusion_queries: usize,
    /// mAP of the same queries when the first half of each person's faces is pooled into one
    /// vector as a video track's frames are: plain mean, or weighted by detector score.
    pub pooling_map: BTreeMap<&'static str, f64>,
}

/// How `eval people` groups and labels.
#[derive(Debug, Clone, Copy)]
pub struct PeopleEvalOptions {
    /// Which face of a photo is labelled.
    pub pick: FacePick,
    /// Which faces are grouped.
    pub eligibility: Eligibility,
    /// Our grouping's parameters.
    pub linkage: LinkageConfig,
    /// The Immich rule's.
    pub immich: ImmichConfig,
    /// Ente's HDBSCAN's.
    pub ente: EnteConfig,
}

/// A labelled tree indexed into a gallery, ready to be grouped any number of ways: every face of
/// every photo, the eligible ones as grouping rows, and the labelled face of each photo.
pub struct Prepared {
    /// Photos of the tree.
    pub photos: usize,
    /// Every face of the gallery.
    pub faces: Vec<FaceRow>,
    /// The labelled faces, as indices into `faces`.
    pub labelled: Vec<usize>,
    /// The true person of each labelled face.
    pub truth: Vec<u32>,
    /// Photos without a labelled face, and why.
    pub missing: Vec<Missing>,
    /// The faces grouped (eligible), as indices into `faces`.
    pub grouped: Vec<usize>,
    row_of: HashMap<usize, usize>,
    data: Vec<f32>,
    /// Embedding size.
    pub dim: usize,
}

impl Prepared {
    /// The eligible faces as a grouping from scratch, with where each was seen.
    pub fn gallery(&self) -> Gallery<'_> {
        Gallery {
            seen: self.grouped.iter().map(|&i| self.faces[i].seen()).collect(),
            ..Gallery::from_scratch(&self.data, self.dim)
        }
    }

    /// The embedding of face `i` (an index into `faces`).
    pub fn embedding(&self, i: usize) -> &[f32] {
        self.faces[i].embedding.as_deref().unwrap_or_default()
    }

    /// Runs a grouping over [`Prepared::gallery`] and scores the labelled faces: a labelled face
    /// left out of every person counts as a person of its own.
    pub fn score(&self, group: &dyn Fn(&Gallery) -> Grouping) -> Result<GroupingScore> {
        Ok(self.score_grouping(group)?.0)
    }

    /// [`Prepared::score`], with the grouping itself.
    pub fn score_grouping(
        &self,
        group: &dyn Fn(&Gallery) -> Grouping,
    ) -> Result<(GroupingScore, Grouping)> {
        let gallery = self.gallery();
        let started = Instant::now();
        let grouping = group(&gallery);
        let ms = started.elapsed().as_secs_f64() * 1e3;
        let labels = grouping.labels(&gallery);
        let assigned: std::collections::HashSet<u32> = grouping
            .new_people
            .iter()
            .flatten()
            .map(|&r| labels[r as usize])
            .collect();
        // Labelled faces outside the grouping get labels past every grouping label.
        let mut next = labels.len() as u32;
        let predicted: Vec<u32> = self
            .labelled
            .iter()
            .map(|i| match self.row_of.get(i) {
                Some(&r) => labels[r],
                None => {
                    next += 1;
                    next
                }
            })
            .collect();
        let scores = clustering::score(&self.truth, &predicted)?;
        let found: std::collections::HashSet<u32> = predicted
            .iter()
            .copied()
            .filter(|l| assigned.contains(l))
            .collect();
        let unassigned = predicted.iter().filter(|l| !assigned.contains(l)).count();
        let score = GroupingScore {
            bcubed_f: scores.bcubed_f,
            pairwise_f: scores.pairwise_f,
            scores,
            people_found: found.len(),
            unassigned_share: unassigned as f64 / predicted.len() as f64,
            same_photo_pairs: same_photo_pairs(&grouping, &gallery),
            ms,
        };
        Ok((score, grouping))
    }

    /// The "same person?" suggestions among the new people of `grouping`, scored: each person
    /// is the true person most of its labelled faces are; a pair of people of one true person is
    /// a split, which a right suggestion repairs.
    pub fn suggestions(&self, grouping: &Grouping, top: usize) -> SuggestionScore {
        let gallery = self.gallery();
        let truth_of_row: HashMap<usize, u32> = self
            .labelled
            .iter()
            .zip(&self.truth)
            .filter_map(|(i, &t)| self.row_of.get(i).map(|&r| (r, t)))
            .collect();
        let mut people = Vec::new();
        let mut truth = HashMap::new();
        for (id, rows) in grouping.new_people.iter().enumerate() {
            let mut counts: HashMap<u32, usize> = HashMap::new();
            for r in rows {
                if let Some(&t) = truth_of_row.get(&(*r as usize)) {
                    *counts.entry(t).or_default() += 1;
                }
            }
            let Some((&t, _)) = counts
                .iter()
                .max_by_key(|(t, n)| (**n, std::cmp::Reverse(**t)))
            else {
                continue; // no labelled face: nothing to score it by
            };
            truth.insert(id as i64, t);
            let mut sum = vec![0.0f32; self.dim];
            let mut seen = Vec::with_capacity(rows.len());
            for &r in rows {
                let v = &self.data[r as usize * self.dim..(r as usize + 1) * self.dim];
                sum.iter_mut().zip(v).for_each(|(s, x)| *s += x);
                seen.extend(gallery.seen.get(r as usize).copied());
            }
            seen.sort_by_key(|s| s.media);
            people.push(PersonFaces {
                id: id as i64,
                sum,
                size: rows.len(),
                seen,
                face: rows[0] as i64,
                area: 0.0,
            });
        }
        let mut by_truth: HashMap<u32, usize> = HashMap::new();
        for t in truth.values() {
            *by_truth.entry(*t).or_default() += 1;
        }
        let split_pairs: usize = by_truth.values().map(|&k| k * (k - 1) / 2).sum();
        let ranked = suggest::rank(&people, &Default::default(), top);
        let right = ranked.iter().filter(|s| truth[&s.a] == truth[&s.b]).count();
        SuggestionScore {
            top,
            suggested: ranked.len(),
            right,
            precision: right as f64 / ranked.len().max(1) as f64,
            split_pairs,
            recall: right as f64 / split_pairs.max(1) as f64,
        }
    }
}

/// Indexes a folder-per-person tree into the gallery `db` (a temporary one when `None`) as a
/// user's would be, and finds each photo's labelled face (`pick`); the faces `eligibility`
/// admits are the grouping's rows.
pub fn prepare(
    pipeline: &Pipeline,
    dir: &Path,
    db: Option<&Path>,
    pick: FacePick,
    eligibility: &Eligibility,
    progress: bool,
) -> Result<Prepared> {
    let people = protocol::folder_per_person(dir)?;
    let tmp = tempfile::tempdir().context("a temporary folder for the evaluation's gallery")?;
    let db_path = db.map_or_else(|| tmp.path().join("eval.sqlite"), Path::to_path_buf);
    let mut conn = gallery_db::open(&db_path)?;
    let report = index::index(
        &mut conn,
        pipeline,
        &[dir.to_path_buf()],
        Sampling::DEFAULT,
        progress,
        &index::Progress::default(),
    )?;
    let emb = &pipeline.embedder;
    let model_id = gallery_db::model_row(&conn, &emb.model_id, &emb.name, emb.dim())?;
    let (faces, damaged) = store::faces(&conn, model_id, store::Whose::All, true)?;
    ensure!(
        damaged.is_empty(),
        "{}: faces {damaged:?} are damaged",
        db_path.display()
    );

    // The labelled face of each photo.
    let failed: HashMap<&str, &str> = report
        .failed
        .iter()
        .map(|f| (f.path.as_str(), f.error.as_str()))
        .collect();
    let mut by_path: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, f) in faces.iter().enumerate() {
        by_path.entry(f.path.as_str()).or_default().push(i);
    }
    let images: Vec<(u32, &Path)> = people
        .iter()
        .enumerate()
        .flat_map(|(person, identity)| {
            identity
                .images
                .iter()
                .map(move |i| (person as u32, i.as_path()))
        })
        .collect();
    let photos = images.len();
    // The labelled face of each photo, or why it has none; in parallel, since choosing the
    // central face decodes the photo for its size (as oriented, the boxes' frame).
    let chosen: Vec<(u32, Result<usize, Missing>)> = images
        .par_iter()
        .map(|&(person, image)| {
            let key = image
                .canonicalize()
                .unwrap_or_else(|_| image.to_path_buf())
                .to_string_lossy()
                .into_owned();
            let missing = |reason: String| Missing {
                path: image.display().to_string(),
                reason,
            };
            let face = match by_path.get(key.as_str()) {
                Some(rows) => choose(pipeline, &faces, rows, image, pick).map_err(missing),
                None => Err(missing(
                    failed
                        .get(key.as_str())
                        .map_or("no face found".into(), |e| e.to_string()),
                )),
            };
            (person, face)
        })
        .collect();
    let (mut labelled, mut truth, mut missing) = (Vec::new(), Vec::new(), Vec::new());
    for (person, face) in chosen {
        match face {
            Ok(i) => {
                labelled.push(i);
                truth.push(person);
            }
            Err(m) => missing.push(m),
        }
    }
    ensure!(
        !labelled.is_empty(),
        "{}: no photo has a face",
        dir.display()
    );
    let grouped: Vec<usize> = (0..faces.len())
        .filter(|&i| faces[i].eligible(eligibility))
        .collect();
    let row_of: HashMap<usize, usize> = grouped.iter().enumerate().map(|(r, &i)| (i, r)).collect();
    let data: Vec<f32> = grouped
        .iter()
        .flat_map(|&i| faces[i].embedding.clone().unwrap_or_default())
        .collect();
    Ok(Prepared {
        photos,
        faces,
        labelled,
        truth,
        missing,
        grouped,
        row_of,
        data,
        dim: emb.dim(),
    })
}

/// Runs `eval people` on a folder-per-person tree, in the gallery `db` (a temporary one when
/// `None`).
pub fn people(
    pipeline: &Pipeline,
    dir: &Path,
    db: Option<&Path>,
    options: &PeopleEvalOptions,
    progress: bool,
) -> Result<PeopleEval> {
    let p = prepare(
        pipeline,
        dir,
        db,
        options.pick,
        &options.eligibility,
        progress,
    )?;
    let (ours, our_people) = p.score_grouping(&|g| linkage::group(g, &options.linkage))?;
    let suggestions = vec![
        p.suggestions(&our_people, 20),
        p.suggestions(&our_people, 100),
    ];
    let immich = p.score(&|g| immich::group(g, &options.immich))?;
    let ente = p.score(&|g| ente::group(g, &options.ente))?;

    // Fusions of search --person, on the labelled faces and their true people.
    let dim = p.dim;
    let (labelled, truth) = (&p.labelled, &p.truth);
    let vectors: Vec<f32> = labelled
        .iter()
        .flat_map(|&i| p.embedding(i).to_vec())
        .collect();
    let mut members: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (pos, &t) in truth.iter().enumerate() {
        members.entry(t).or_default().push(pos);
    }
    let queries: Vec<&Vec<usize>> = members.values().filter(|m| m.len() >= 2).collect();
    let rows_of = |known: &[usize]| -> Vec<f32> {
        known
            .iter()
            .flat_map(|&p| vectors[p * dim..(p + 1) * dim].to_vec())
            .collect()
    };
    let mut fusion_map = BTreeMap::new();
    for f in Fusion::ALL {
        let map = half_query_map(&queries, truth, |known| {
            fusion::scores(&vectors, &rows_of(known), dim, f)
        });
        fusion_map.insert(f.name(), map);
    }
    // Track poolings on the same queries: one vector from the known faces.
    let face_scores: Vec<f32> = labelled.iter().map(|&i| p.faces[i].score).collect();
    let mut pooling_map = BTreeMap::new();
    for pooling in Pooling::ALL {
        let map = half_query_map(&queries, truth, |known| {
            let weights: Vec<f32> = known.iter().map(|&p| face_scores[p]).collect();
            let template = tracks::pool(&rows_of(known), &weights, dim, pooling);
            // One face to match: every fusion is its plain similarity.
            fusion::scores(&vectors, &template, dim, Fusion::Best)
        });
        pooling_map.insert(pooling.name(), map);
    }

    Ok(PeopleEval {
        photos: p.photos,
        gallery_faces: p.faces.len(),
        grouped_faces: p.grouped.len(),
        labelled_faces: labelled.len(),
        true_people: members.len(),
        missing: p.missing.clone(),
        ours,
        immich,
        ente,
        suggestions,
        linkage: options.linkage,
        immich_config: options.immich,
        ente_config: options.ente,
        eligibility: options.eligibility,
        fusion_map,
        fusion_queries: queries.len(),
        pooling_map,
    })
}

/// Pairs of rows seen together (one photo, or one moment of a video) that a grouping put in
/// one person: each is a certain mistake.
pub fn same_photo_pairs(grouping: &Grouping, gallery: &Gallery) -> usize {
    let labels = grouping.labels(gallery);
    let mut buckets: HashMap<(u32, i64), Vec<usize>> = HashMap::new();
    for (row, seen) in gallery.seen.iter().enumerate() {
        buckets
            .entry((labels[row], seen.media))
            .or_default()
            .push(row);
    }
    buckets
        .values()
        .map(|rows| {
            let mut pairs = 0;
            for (i, &a) in rows.iter().enumerate() {
                for &b in &rows[i + 1..] {
                    pairs += gallery.seen[a].together(&gallery.seen[b]) as usize;
                }
            }
            pairs
        })
        .sum()
}

/// mAP when each query (a true person's labelled faces, as positions) searches with the first
/// half of its faces (at least one) for the rest among all other labelled faces; `score` gives
/// every labelled face's score for the known half.
fn half_query_map(
    queries: &[&Vec<usize>],
    truth: &[u32],
    score: impl Fn(&[usize]) -> Vec<f32>,
) -> f64 {
    let mut sum = 0.0;
    for m in queries {
        let known = &m[..m.len().div_ceil(2)];
        let (mut scores, mut relevant) = (Vec::new(), Vec::new());
        for (pos, s) in score(known).into_iter().enumerate() {
            if !known.contains(&pos) {
                scores.push(s);
                relevant.push(truth[pos] == truth[m[0]]);
            }
        }
        sum += average_precision(&scores, &relevant).unwrap_or(0.0);
    }
    if queries.is_empty() {
        0.0
    } else {
        sum / queries.len() as f64
    }
}

/// The labelled face of a photo among its faces (gallery indices, largest first), or why the
/// photo cannot say.
fn choose(
    pipeline: &Pipeline,
    faces: &[FaceRow],
    rows: &[usize],
    image: &Path,
    pick: FacePick,
) -> Result<usize, String> {
    match pick {
        FacePick::Largest => Ok(rows[0]),
        FacePick::Central => {
            let (w, h) = pipeline.decode(image).map_err(|e| e.reason())?.dimensions();
            let (cx, cy) = (w as f32 / 2.0, h as f32 / 2.0);
            let d = |i: &usize| {
                let b = faces[*i].bbox;
                ((b[0] + b[2]) / 2.0 - cx).powi(2) + ((b[1] + b[3]) / 2.0 - cy).powi(2)
            };
            rows.iter()
                .copied()
                .min_by(|a, b| d(a).total_cmp(&d(b)))
                .ok_or_else(|| "no face found".into())
        }
    }
}
