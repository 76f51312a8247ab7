//! The IJB protocols' numbers from template features: 1:1 TAR at FAR as insightface reports it,
//! 1:N CMC and TPIR at FPIR the NIST way (each gallery searched on its own), and insightface's
//! `ijb_1n.py` variant (the two galleries joined), which papers quote.

use super::meta::{SubjectTemplate, TemplatePair};
use super::pool::Templates;
use crate::embedding::dot;
use crate::metrics::{self, MetricsError, RocPoint};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// The FARs of the 1:1 table, as insightface prints it.
pub const FARS: [f64; 6] = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1];
/// The FPIRs of the 1:N open-set table.
pub const FPIRS: [f64; 2] = [0.01, 0.1];
/// The ranks of the CMC.
pub const RANKS: [usize; 3] = [1, 5, 10];

/// The key of a FAR in reports: `1e-06` ... `1e-01`, as numpy prints them.
pub fn far_key(far: f64) -> String {
    format!("1e-{:02}", (-far.log10()).round() as i32)
}

/// Why a protocol cannot be scored.
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    /// A pair or a 1:N list names a template that no face belongs to.
    #[error("{list} names template {template}, which no face in the face list belongs to")]
    UnknownTemplate {
        /// Which list.
        list: &'static str,
        /// The template.
        template: u32,
    },
    /// The scores cannot make an ROC (one kind of pair only, NaN).
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// insightface's joined-gallery variant needs each probe subject exactly once in the
    /// galleries.
    #[error("probe subject {subject} is in the joined galleries {count} times (expected once)")]
    GallerySubject {
        /// The subject.
        subject: u32,
        /// How many gallery templates have it.
        count: usize,
    },
}

/// The template features of `list`, in its order.
fn rows<'a>(
    templates: &'a Templates,
    ids: impl Iterator<Item = u32>,
    list: &'static str,
) -> Result<Vec<&'a [f32]>, ScoreError> {
    ids.map(|template| {
        templates
            .get(template)
            .ok_or(ScoreError::UnknownTemplate { list, template })
    })
    .collect()
}

/// The similarity of each pair: the dot product of the two unit template features.
pub fn pair_scores(templates: &Templates, pairs: &[TemplatePair]) -> Result<Vec<f32>, ScoreError> {
    let a = rows(templates, pairs.iter().map(|p| p.a), "the pairs file")?;
    let b = rows(templates, pairs.iter().map(|p| p.b), "the pairs file")?;
    Ok(a.iter().zip(&b).map(|(x, y)| dot(x, y)).collect())
}

/// The ROC curve as `sklearn.metrics.roc_curve` returns it (and insightface reads it): the
/// point (0, 0) first, then one point per distinct score, with the points that lie on a straight
/// line between their neighbours dropped (`drop_intermediate=True`; sklearn always keeps the
/// first and last score's points).
pub fn sklearn_roc(scores: &[f32], same: &[bool]) -> Result<Vec<RocPoint>, MetricsError> {
    let mut all = vec![RocPoint {
        threshold: f32::INFINITY,
        far: 0.0,
        tar: 0.0,
    }];
    all.extend(metrics::roc(scores, same)?);
    // sklearn keeps a point where the second difference of the counts is non-zero, and both
    // ends; rates are counts over a fixed total, so the test on rates is the same, done exactly
    // on counts to keep floating point out of it.
    let (pos, neg) = (
        same.iter().filter(|&&s| s).count() as f64,
        same.iter().filter(|&&s| !s).count() as f64,
    );
    let counts: Vec<(i64, i64)> = all
        .iter()
        .map(|p| ((p.far * neg).round() as i64, (p.tar * pos).round() as i64))
        .collect();
    let last = all.len() - 1;
    Ok(all
        .iter()
        .enumerate()
        .filter(|&(i, _)| {
            i <= 1 || i == last || {
                let (a, b, c) = (counts[i - 1], counts[i], counts[i + 1]);
                c.0 - 2 * b.0 + a.0 != 0 || c.1 - 2 * b.1 + a.1 != 0
            }
        })
        .map(|(_, p)| *p)
        .collect())
}

/// TAR at the ROC point whose FAR is nearest `far` (the first such point on a tie), as
/// insightface's tables report it: `tpr[argmin(|fpr - far|)]`.
pub fn tar_at_nearest_far(curve: &[RocPoint], far: f64) -> f64 {
    curve
        .iter()
        .fold((f64::INFINITY, 0.0), |(best, tar), p| {
            let d = (p.far - far).abs();
            if d < best {
                (d, p.tar)
            } else {
                (best, tar)
            }
        })
        .1
}

/// Area under the ROC curve, by the trapezoid rule (`sklearn.metrics.auc`), from (0, 0) to (1, 1).
pub fn auc(curve: &[RocPoint]) -> f64 {
    curve
        .windows(2)
        .map(|w| (w[1].far - w[0].far) * (w[1].tar + w[0].tar) / 2.0)
        .sum()
}

/// The 1:1 report.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// Pairs scored.
    pub pairs: usize,
    /// Of which same-subject.
    pub mated: usize,
    /// TAR at each FAR of [`FARS`], keyed by [`far_key`].
    pub tar_at_far: BTreeMap<String, f64>,
    /// The highest TAR whose FAR does not exceed each target (the strict reading, which
    /// insightface's nearest point is not: with few non-mated pairs, or none accepted at the
    /// strictest threshold, the nearest point can be (0, 0) and its TAR 0).
    pub tar_at_far_at_most: BTreeMap<String, f64>,
    /// Area under the ROC curve.
    pub auc: f64,
    /// The curve (not in the JSON report: `--roc` writes it).
    #[serde(skip)]
    pub roc: Vec<RocPoint>,
}

/// The 1:1 protocol on the pairs.
pub fn verification(
    templates: &Templates,
    pairs: &[TemplatePair],
) -> Result<Verification, ScoreError> {
    let scores = pair_scores(templates, pairs)?;
    let same: Vec<bool> = pairs.iter().map(|p| p.same).collect();
    let roc = sklearn_roc(&scores, &same)?;
    Ok(Verification {
        pairs: pairs.len(),
        mated: same.iter().filter(|&&s| s).count(),
        tar_at_far: FARS
            .iter()
            .map(|&f| (far_key(f), tar_at_nearest_far(&roc, f)))
            .collect(),
        tar_at_far_at_most: FARS
            .iter()
            .map(|&f| {
                let best = roc.iter().filter(|p| p.far <= f).map(|p| p.tar);
                (far_key(f), best.fold(0.0, f64::max))
            })
            .collect(),
        auc: auc(&roc),
        roc,
    })
}

/// Probe-by-gallery similarities, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreMatrix {
    /// One row per probe.
    pub probes: usize,
    /// One column per gallery template.
    pub gallery: usize,
    /// `probes * gallery` scores.
    pub scores: Vec<f32>,
}

impl ScoreMatrix {
    /// Scores every probe template against every gallery template.
    pub fn compute(
        templates: &Templates,
        probes: &[SubjectTemplate],
        gallery: &[SubjectTemplate],
        list: &'static str,
    ) -> Result<ScoreMatrix, ScoreError> {
        let p = rows(
            templates,
            probes.iter().map(|t| t.template),
            "the probe list",
        )?;
        let g = rows(templates, gallery.iter().map(|t| t.template), list)?;
        Ok(ScoreMatrix {
            probes: p.len(),
            gallery: g.len(),
            scores: p
                .iter()
                .flat_map(|x| g.iter().map(move |y| dot(x, y)))
                .collect(),
        })
    }

    /// The matrix of the given gallery columns, in that order.
    pub fn columns(&self, cols: &[usize]) -> ScoreMatrix {
        ScoreMatrix {
            probes: self.probes,
            gallery: cols.len(),
            scores: (0..self.probes)
                .flat_map(|i| cols.iter().map(move |&j| self.row(i)[j]))
                .collect(),
        }
    }

    fn row(&self, i: usize) -> &[f32] {
        &self.scores[i * self.gallery..(i + 1) * self.gallery]
    }
}

/// The 1-based rank of column `j` in `row` sorted by score descending, ties in column order
/// (a stable sort, as numpy's `argsort` of `-similarity` gives on small rows).
fn rank_of(row: &[f32], j: usize) -> usize {
    let s = row[j];
    1 + row
        .iter()
        .enumerate()
        .filter(|&(k, &v)| v > s || (v == s && k < j))
        .count()
}

/// One gallery's open-set identification report (NIST's way: probes whose subject is not in
/// this gallery are its non-mated searches).
#[derive(Debug, Clone, Serialize)]
pub struct GalleryReport {
    /// Gallery templates.
    pub gallery: usize,
    /// Probes whose subject is in the gallery.
    pub mated: usize,
    /// Probes whose subject is not.
    pub non_mated: usize,
    /// Fraction of mated searches with the mate at rank 1 (closed-set CMC at 1).
    pub rank1: f64,
    /// ... within the top 5.
    pub rank5: f64,
    /// ... within the top 10.
    pub rank10: f64,
    /// TPIR (rank 1) at each FPIR of [`FPIRS`], keyed `"0.01"`, `"0.1"`; null without
    /// non-mated searches.
    pub tpir_at_fpir: BTreeMap<String, Option<f64>>,
}

/// The TPIR at `fpir`: the threshold lets through at most `floor(fpir * N)` of the non-mated
/// searches' top scores (a score equal to the threshold is rejected, so tied non-mated scores
/// never push FPIR past its target); a mated search counts when its mate is at rank 1 and
/// scores above the threshold. `None` without non-mated searches.
pub fn tpir_at_fpir(mated_top: &[Option<f32>], non_mated_top: &[f32], fpir: f64) -> Option<f64> {
    if non_mated_top.is_empty() || mated_top.is_empty() {
        return None;
    }
    let mut sorted = non_mated_top.to_vec();
    sorted.sort_unstable_by(|a, b| b.total_cmp(a));
    let allowed = (fpir * sorted.len() as f64 + 1e-9).floor() as usize;
    let threshold = sorted.get(allowed).copied().unwrap_or(f32::NEG_INFINITY);
    let hits = mated_top
        .iter()
        .filter(|s| s.is_some_and(|s| s > threshold))
        .count();
    Some(hits as f64 / mated_top.len() as f64)
}

/// Searches `probes` in one gallery (scores in `matrix`, probes by gallery).
pub fn search_gallery(
    matrix: &ScoreMatrix,
    probes: &[SubjectTemplate],
    gallery: &[SubjectTemplate],
) -> GalleryReport {
    let column: HashMap<u32, usize> = gallery
        .iter()
        .enumerate()
        .map(|(j, t)| (t.subject, j))
        .collect();
    let mut ranks = Vec::new();
    // The mate's score when the mate is at rank 1, else None: what open-set TPIR counts.
    let mut mated_top = Vec::new();
    let mut non_mated_top = Vec::new();
    for (i, probe) in probes.iter().enumerate() {
        let row = matrix.row(i);
        match column.get(&probe.subject) {
            Some(&j) => {
                let rank = rank_of(row, j);
                ranks.push(rank);
                mated_top.push((rank == 1).then_some(row[j]));
            }
            None => {
                non_mated_top.push(row.iter().copied().fold(f32::NEG_INFINITY, f32::max));
            }
        }
    }
    let within = |k: usize| {
        if ranks.is_empty() {
            0.0
        } else {
            ranks.iter().filter(|&&r| r <= k).count() as f64 / ranks.len() as f64
        }
    };
    GalleryReport {
        gallery: gallery.len(),
        mated: ranks.len(),
        non_mated: non_mated_top.len(),
        rank1: within(1),
        rank5: within(5),
        rank10: within(10),
        tpir_at_fpir: FPIRS
            .iter()
            .map(|&f| (f.to_string(), tpir_at_fpir(&mated_top, &non_mated_top, f)))
            .collect(),
    }
}

/// insightface `ijb_1n.py`'s figures: the galleries joined, every probe mated.
#[derive(Debug, Clone, Serialize)]
pub struct JoinedReport {
    /// Top-1 accuracy.
    pub rank1: f64,
    /// Top-5 accuracy.
    pub rank5: f64,
    /// Top-10 accuracy.
    pub rank10: f64,
    /// Its "far"/"pr" figures keyed `"0.01"`, `"0.1"`: the fraction of probes whose mate
    /// scores above the `ceil(probes * far)`-th highest non-mated probe-gallery score.
    pub tpir_at_fpir: BTreeMap<String, f64>,
}

/// insightface's joined-gallery figures; `gallery` is G1 and G2 together, sorted by template.
pub fn search_joined(
    matrix: &ScoreMatrix,
    probes: &[SubjectTemplate],
    gallery: &[SubjectTemplate],
) -> Result<JoinedReport, ScoreError> {
    let mut mask = Vec::with_capacity(probes.len());
    for probe in probes {
        let hits: Vec<usize> = (0..gallery.len())
            .filter(|&j| gallery[j].subject == probe.subject)
            .collect();
        if hits.len() != 1 {
            return Err(ScoreError::GallerySubject {
                subject: probe.subject,
                count: hits.len(),
            });
        }
        mask.push(hits[0]);
    }
    let ranks: Vec<usize> = (0..probes.len())
        .map(|i| rank_of(matrix.row(i), mask[i]))
        .collect();
    let positives: Vec<f32> = (0..probes.len()).map(|i| matrix.row(i)[mask[i]]).collect();
    let required = |far: f64| ((probes.len() as f64 * far).ceil() as usize).max(1);
    // Only the highest non-mated scores are ever thresholds (`heapq.nlargest` in ijb_1n.py):
    // IJB-C has 69 million of them, so they are never all held.
    let wanted = FPIRS.iter().map(|&f| required(f)).max().unwrap_or(1);
    let mut top = std::collections::BinaryHeap::with_capacity(wanted + 1);
    for (i, &mate) in mask.iter().enumerate() {
        for (j, &score) in matrix.row(i).iter().enumerate() {
            if j != mate {
                top.push(std::cmp::Reverse(TotalOrder(score)));
                if top.len() > wanted {
                    top.pop();
                }
            }
        }
    }
    // Highest first.
    let negatives: Vec<f32> = top.into_sorted_vec().into_iter().map(|r| r.0 .0).collect();
    let n = probes.len().max(1) as f64;
    let within = |k: usize| ranks.iter().filter(|&&r| r <= k).count() as f64 / n;
    let tpir = FPIRS
        .iter()
        .map(|&far| {
            let required = required(far);
            let threshold = negatives
                .get(required - 1)
                .or(negatives.last())
                .copied()
                .unwrap_or(f32::NEG_INFINITY);
            let hits = positives.iter().filter(|&&p| p > threshold).count();
            (far.to_string(), hits as f64 / n)
        })
        .collect();
    Ok(JoinedReport {
        rank1: within(1),
        rank5: within(5),
        rank10: within(10),
        tpir_at_fpir: tpir,
    })
}

/// An `f32` ordered by [`f32::total_cmp`], for a heap of scores.
#[derive(Debug, Clone, Copy, PartialEq)]
struct TotalOrder(f32);

impl Eq for TotalOrder {}

impl PartialOrd for TotalOrder {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for TotalOrder {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(far: f64, tar: f64) -> (f64, f64) {
        (far, tar)
    }

    fn pts(curve: &[RocPoint]) -> Vec<(f64, f64)> {
        curve.iter().map(|p| point(p.far, p.tar)).collect()
    }

    #[test]
    fn far_keys_as_numpy_prints_them() {
        let keys: Vec<String> = FARS.iter().map(|&f| far_key(f)).collect();
        assert_eq!(keys, ["1e-06", "1e-05", "1e-04", "1e-03", "1e-02", "1e-01"]);
    }

    #[test]
    fn sklearn_roc_by_hand_with_ties_and_collinear_points() {
        // Scores (label): 0.9(1) 0.8(1) 0.7(0) 0.6(1) 0.6(0) 0.5(0) 0.4(0).
        // 3 positives, 4 negatives. Cumulative (fp, tp) per distinct threshold:
        // 0.9:(0,1) 0.8:(0,2) 0.7:(1,2) 0.6:(2,3) 0.5:(3,3) 0.4:(4,3); with (0,0) first.
        // (0,1) lies between (0,0) and (0,2) but is the first score's point, which sklearn
        // keeps; (3,3) lies between (2,3) and (4,3): dropped.
        let scores = [0.9, 0.8, 0.7, 0.6, 0.6, 0.5, 0.4];
        let same = [true, true, false, true, false, false, false];
        let curve = sklearn_roc(&scores, &same).unwrap();
        assert_eq!(
            pts(&curve),
            [
                (0.0, 0.0),
                (0.0, 1.0 / 3.0),
                (0.0, 2.0 / 3.0),
                (0.25, 2.0 / 3.0),
                (0.5, 1.0),
                (1.0, 1.0)
            ]
        );
        // Nearest FAR to 0.3 is 0.25 -> 2/3; to 0.4 is 0.5 -> 1; to 1e-6 is 0: the first
        // point at FAR 0 wins the tie, TAR 0, as insightface reports.
        assert_eq!(tar_at_nearest_far(&curve, 0.3), 2.0 / 3.0);
        assert_eq!(tar_at_nearest_far(&curve, 0.4), 1.0);
        assert_eq!(tar_at_nearest_far(&curve, 1e-6), 0.0);
        // Area: 0.25 * 2/3 + 0.25 * (2/3 + 1) / 2 + 0.5 * 1 = 1/6 + 5/24 + 1/2 = 7/8.
        assert!((auc(&curve) - 0.875).abs() < 1e-12);
    }

    /// `sklearn.metrics.roc_curve` 1.9.1's own output on these inputs (ties, uneven steps),
    /// and numpy's `tpr[argmin(|fpr - far|)]` at FAR 1e-6 ... 1e-1, pasted from a run.
    #[test]
    fn sklearn_roc_equals_sklearn_output() {
        let t = true;
        let f = false;
        // (scores, same, sklearn's fpr, its tpr, auc, TAR at the nearest point to each FAR)
        type Case<'a> = (&'a [f32], &'a [bool], &'a [f64], &'a [f64], f64, [f64; 6]);
        let cases: [Case; 4] = [
            (
                &[
                    0.8, 0.0, 0.2, 0.2, 0.2, 0.8, 1.0, 0.6, 0.0, 0.0, 0.2, 0.4, 0.6, 0.4,
                ],
                &[t, f, t, t, f, f, f, f, t, t, f, f, t, t],
                &[0.0, 1.0 / 7.0, 4.0 / 7.0, 6.0 / 7.0, 1.0],
                &[0.0, 0.0, 3.0 / 7.0, 5.0 / 7.0, 1.0],
                0.37755102040816324,
                [0.0; 6],
            ),
            (
                &[
                    0.2, 0.8, 0.8, 1.0, 0.8, 0.2, 0.2, 0.6, 0.6, 0.8, 1.0, 0.2, 1.0, 0.0,
                ],
                &[t, f, t, f, f, f, f, t, t, t, f, f, f, t],
                &[0.0, 0.375, 0.625, 0.625, 1.0, 1.0],
                &[0.0, 0.0, 1.0 / 3.0, 2.0 / 3.0, 5.0 / 6.0, 1.0],
                0.3229166666666667,
                [0.0; 6],
            ),
            (
                &[
                    0.4, 0.0, 0.2, 0.8, 0.6, 0.4, 0.2, 0.0, 0.6, 0.6, 0.6, 1.0, 1.0, 0.2,
                ],
                &[t, f, f, f, f, t, f, t, t, f, f, t, t, t],
                &[0.0, 0.0, 1.0 / 7.0, 4.0 / 7.0, 4.0 / 7.0, 6.0 / 7.0, 1.0],
                &[
                    0.0,
                    2.0 / 7.0,
                    2.0 / 7.0,
                    3.0 / 7.0,
                    5.0 / 7.0,
                    6.0 / 7.0,
                    1.0,
                ],
                0.5510204081632653,
                [0.0, 0.0, 0.0, 0.0, 0.0, 2.0 / 7.0],
            ),
            (
                // Perfect separation: the point nearest any small FAR is (0, 0).
                &[0.9, 0.8, 0.7, 0.3, 0.2, 0.2, 0.1],
                &[t, t, t, f, f, f, f],
                &[0.0, 0.0, 0.0, 0.25, 0.75, 1.0],
                &[0.0, 1.0 / 3.0, 1.0, 1.0, 1.0, 1.0],
                1.0,
                [0.0; 6],
            ),
        ];
        for (scores, same, fpr, tpr, area, nearest) in cases {
            let curve = sklearn_roc(scores, same).unwrap();
            let got = pts(&curve);
            assert_eq!(got.len(), fpr.len(), "{got:?}");
            for ((gf, gt), (ef, et)) in got.iter().zip(fpr.iter().zip(tpr)) {
                assert!(
                    (gf - ef).abs() < 1e-12 && (gt - et).abs() < 1e-12,
                    "{got:?}"
                );
            }
            assert!((auc(&curve) - area).abs() < 1e-12);
            for (far, want) in FARS.iter().zip(nearest) {
                assert!((tar_at_nearest_far(&curve, *far) - want).abs() < 1e-12);
            }
        }
    }

    /// Brute force: every threshold tried, the curve built by counting at each.
    #[test]
    fn sklearn_roc_matches_counting_at_every_threshold() {
        let mut rng = smoothface_tests::Rng::new(7);
        for _ in 0..50 {
            let n = 2 + rng.below(30) as usize;
            let scores: Vec<f32> = (0..n).map(|_| rng.below(6) as f32 / 5.0).collect();
            let same: Vec<bool> = (0..n)
                .map(|i| i == 0 || (i > 1 && rng.below(2) == 0))
                .collect();
            let curve = sklearn_roc(&scores, &same).unwrap();
            let (p, q) = (
                same.iter().filter(|&&s| s).count() as f64,
                same.iter().filter(|&&s| !s).count() as f64,
            );
            let mut thresholds: Vec<f32> = scores.clone();
            thresholds.sort_by(|a, b| b.total_cmp(a));
            thresholds.dedup();
            let mut full = vec![(0.0, 0.0)];
            for t in thresholds {
                let tp = (0..n).filter(|&i| same[i] && scores[i] >= t).count() as f64;
                let fp = (0..n).filter(|&i| !same[i] && scores[i] >= t).count() as f64;
                full.push((fp / q, tp / p));
            }
            // Every kept point is on the full curve, and every dropped one lies on the segment
            // between its kept neighbours.
            let kept = pts(&curve);
            assert!(kept.iter().all(|k| full.contains(k)));
            for f in &full {
                let right = kept.iter().position(|k| k.0 >= f.0 && k.1 >= f.1).unwrap();
                if kept[right] == *f {
                    continue;
                }
                let (a, b) = (kept[right - 1], kept[right]);
                let cross = (b.0 - a.0) * (f.1 - a.1) - (b.1 - a.1) * (f.0 - a.0);
                assert!(cross.abs() < 1e-12, "{f:?} not between {a:?} and {b:?}");
            }
        }
    }

    fn st(template: u32, subject: u32) -> SubjectTemplate {
        SubjectTemplate { template, subject }
    }

    #[test]
    fn gallery_search_by_hand_with_ties() {
        // Gallery subjects 10, 20, 30. Probes: 10, 20, 30 (mated), 40, 50 (non-mated).
        let gallery = [st(1, 10), st(2, 20), st(3, 30)];
        let probes = [st(4, 10), st(5, 20), st(6, 30), st(7, 40), st(8, 50)];
        let matrix = ScoreMatrix {
            probes: 5,
            gallery: 3,
            scores: vec![
                0.9, 0.1, 0.2, // mate rank 1, score 0.9
                0.5, 0.5, 0.1, // mate tied with column 0, which comes first: rank 2
                0.3, 0.4, 0.35, // mate (col 2) behind 0.4: rank 2
                0.6, 0.2, 0.1, // non-mated top 0.6
                0.1, 0.9, 0.2, // non-mated top 0.9
            ],
        };
        let r = search_gallery(&matrix, &probes, &gallery);
        assert_eq!((r.mated, r.non_mated), (3, 2));
        assert_eq!(r.rank1, 1.0 / 3.0);
        assert_eq!(r.rank5, 1.0);
        // FPIR 0.01 and 0.1 of 2 non-mated: none may pass, threshold 0.9 (the top), and the
        // one rank-1 mate scores 0.9, not above it: TPIR 0.
        assert_eq!(r.tpir_at_fpir["0.01"], Some(0.0));
        assert_eq!(r.tpir_at_fpir["0.1"], Some(0.0));
    }

    #[test]
    fn tpir_thresholds_by_hand() {
        // 10 non-mated tops; FPIR 0.1 lets one through: threshold is the second highest, 0.8.
        let non = [0.95, 0.8, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1];
        let mated = [Some(0.9), Some(0.8), Some(0.85), None, Some(0.99)];
        // Above 0.8: 0.9, 0.85, 0.99 -> 3 of 5.
        assert_eq!(tpir_at_fpir(&mated, &non, 0.1), Some(0.6));
        // FPIR 0.01 lets none through: threshold 0.95 -> only 0.99.
        assert_eq!(tpir_at_fpir(&mated, &non, 0.01), Some(0.2));
        // FPIR 0.3: three may pass, but the 2nd and 3rd tie at 0.8 -> threshold 0.7, and the
        // FPIR actually reached is 3/10.
        assert_eq!(tpir_at_fpir(&mated, &non, 0.3), Some(0.8));
        assert_eq!(tpir_at_fpir(&mated, &[], 0.1), None);
    }

    #[test]
    fn joined_gallery_as_insightface_by_hand() {
        let gallery = [st(1, 10), st(2, 20)];
        let probes = [st(3, 10), st(4, 20), st(5, 10)];
        let matrix = ScoreMatrix {
            probes: 3,
            gallery: 2,
            scores: vec![0.9, 0.2, 0.7, 0.6, 0.3, 0.4],
        };
        let r = search_joined(&matrix, &probes, &gallery).unwrap();
        // Ranks 1, 2, 2.
        assert_eq!(r.rank1, 1.0 / 3.0);
        assert_eq!(r.rank5, 1.0);
        // Negatives: 0.2, 0.7, 0.4 -> sorted 0.7, 0.4, 0.2. ceil(3 * 0.01) = 1 -> threshold
        // 0.7: positives above it: 0.9 -> 1/3. ceil(0.3) = 1 as well for 0.1.
        assert_eq!(r.tpir_at_fpir["0.01"], 1.0 / 3.0);
        assert_eq!(r.tpir_at_fpir["0.1"], 1.0 / 3.0);
        let dup = [st(1, 10), st(2, 10)];
        let e = search_joined(&matrix, &probes, &dup).unwrap_err();
        assert!(e.to_string().contains("subject 10"), "{e}");
    }
}
