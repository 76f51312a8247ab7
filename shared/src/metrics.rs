//! Retrieval and verification metrics for face embeddings.
//!
//! Two families of numbers are reported for a face model, and both live here so that the trainer
//! and the device compute them identically:
//!
//! * **Retrieval** ([`retrieval_metrics`]): the protocol of the Smooth-AP paper. Every embedding
//!   queries all the others, ranked by cosine similarity; we report mean average precision and
//!   Recall@K.
//! * **Verification** ([`kfold_accuracy`], [`roc`], [`tar_at_far`]): pairs of faces are declared
//!   "same person" when their similarity reaches a threshold. The LFW protocol chooses that
//!   threshold on nine folds and measures accuracy on the tenth; ROC-style numbers (TAR at a given
//!   FAR) need no threshold choice at all.
//!
//! Embeddings are row-major `&[f32]` (`n` rows of `dim` columns) and are expected to be
//! L2-normalised already, so the dot product is the cosine similarity. Ties between equal scores
//! are always broken by input order, which makes every number here deterministic and lets tests
//! compare against straightforward reference implementations.
//!
//! Inputs that a real evaluation can produce but that have no meaningful number (NaN or infinite
//! values from a diverged model, pairs that do not cover every fold, pairs of one kind only) are
//! a [`MetricsError`] saying what is wrong. Mismatched slice lengths are programming errors in the
//! caller and panic rather than produce a plausible-looking number.

use std::collections::HashMap;

use serde::Serialize;

/// Why a metric cannot be computed on these inputs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricsError {
    /// Some scores or embedding values are NaN or infinite: the model that made them diverged.
    #[error("{count} of {total} values are NaN or infinite (a diverged model?)")]
    NonFinite {
        /// Values that are not finite.
        count: usize,
        /// All values.
        total: usize,
    },
    /// There is nothing to score.
    #[error("no pairs to score")]
    NoPairs,
    /// Cross-validation needs at least two folds.
    #[error("need pairs in at least two folds for cross-validation, found {0} fold(s)")]
    TooFewFolds(usize),
    /// A fold between two others has no pairs.
    #[error("fold {fold} of 0..{folds} has no pairs (too few pairs for {folds} folds?)")]
    EmptyFold {
        /// The empty fold.
        fold: usize,
        /// Number of folds.
        folds: usize,
    },
    /// Rates need both kinds of pair.
    #[error("need both same-person and different-person pairs, found {same} same and {different} different")]
    OneKindOfPair {
        /// Same-person pairs.
        same: usize,
        /// Different-person pairs.
        different: usize,
    },
}

/// Average precision of one ranking.
///
/// Items are sorted by `scores` descending (ties keep their input order) and AP is the mean, over
/// the relevant items, of the precision at that item's rank. Returns `None` when no item is
/// relevant, since AP is undefined there (and averaging a made-up value would bias a mean).
///
/// # Panics
///
/// If the slices differ in length or a score is NaN.
pub fn average_precision(scores: &[f32], relevant: &[bool]) -> Option<f64> {
    assert_eq!(
        scores.len(),
        relevant.len(),
        "average_precision: {} scores but {} relevance flags",
        scores.len(),
        relevant.len()
    );
    assert_no_nan(scores, "average_precision");
    let keys = |wanted: bool| {
        scores
            .iter()
            .zip(relevant)
            .enumerate()
            .filter(move |&(_, (_, &r))| r == wanted)
            .map(|(i, (&s, _))| rank_key(s, i))
    };
    let mut relevant_keys: Vec<u64> = keys(true).collect();
    if relevant_keys.is_empty() {
        return None;
    }
    let stats = rank_stats(&mut relevant_keys, keys(false), &mut Vec::new());
    Some(stats.average_precision)
}

/// Retrieval quality over a labelled set of embeddings (see [`retrieval_metrics`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetrievalReport {
    /// Queries that were evaluated (items with at least one other item of the same label).
    pub queries: usize,
    /// Items that could not be queries because no other item shares their label.
    pub skipped_queries: usize,
    /// Mean average precision over the evaluated queries (0 when there are none).
    pub map: f64,
    /// `(K, Recall@K)` for each requested K, in the order requested: the fraction of evaluated
    /// queries with at least one same-label item among their top K results.
    pub recall_at: Vec<(usize, f64)>,
}

/// Queries whose similarity rows are computed together. Every strip of items (see
/// [`pack_strips`]) is then read from memory once per block rather than once per query, which is
/// what keeps a 10,000 x 512 set from being limited by memory bandwidth; 64 query rows of 512
/// floats (128 KiB) stay in L2 meanwhile.
const QUERY_BLOCK: usize = 64;

/// Mean average precision and Recall@K with the Smooth-AP protocol.
///
/// `embeddings` holds `labels.len()` rows of `dim` floats. Every item queries all the *other*
/// items (a query never retrieves itself), ranked by dot product descending with ties in input
/// order. Items whose label occurs only once have nothing to retrieve and are skipped, counted in
/// [`RetrievalReport::skipped_queries`].
///
/// The cost is O(n² d) for the similarities plus O(n log m) per query for the ranking (m items
/// share its label); n = 10,000 and d = 512 take a few seconds on one core in a release build.
///
/// # Errors
///
/// [`MetricsError::NonFinite`] when an embedding value is NaN or infinite.
///
/// # Panics
///
/// If `dim` is zero, `embeddings.len() != labels.len() * dim`, or there are more than `u32::MAX`
/// items.
pub fn retrieval_metrics(
    embeddings: &[f32],
    dim: usize,
    labels: &[u32],
    ks: &[usize],
) -> Result<RetrievalReport, MetricsError> {
    assert!(dim > 0, "retrieval_metrics: dim must be positive");
    let n = labels.len();
    assert_eq!(
        Some(embeddings.len()),
        n.checked_mul(dim),
        "retrieval_metrics: {} floats do not make {n} rows of {dim}",
        embeddings.len()
    );
    assert!(
        u32::try_from(n).is_ok(),
        "retrieval_metrics: too many items"
    );
    check_finite(embeddings)?;

    let mut members: HashMap<u32, Vec<usize>> = HashMap::new();
    for (i, &label) in labels.iter().enumerate() {
        members.entry(label).or_default().push(i);
    }
    let queries: Vec<usize> = (0..n).filter(|&i| members[&labels[i]].len() > 1).collect();

    let mut ap_sum = 0.0;
    let mut hits_at = vec![0usize; ks.len()];
    let strips = pack_strips(embeddings, dim);
    let mut similarities = vec![0.0f32; QUERY_BLOCK.min(queries.len()) * n];
    let (mut relevant, mut gaps) = (Vec::new(), Vec::new());
    for block in queries.chunks(QUERY_BLOCK) {
        let rows = &mut similarities[..block.len() * n];
        similarity_block(&strips, embeddings, dim, block, rows);
        for (&query, row) in block.iter().zip(rows.chunks_exact(n)) {
            let label = labels[query];
            relevant.clear();
            relevant.extend(
                members[&label]
                    .iter()
                    .filter(|&&j| j != query)
                    .map(|&j| rank_key(row[j], j)),
            );
            // The query shares its own label, so this also leaves it out of its ranking.
            let others = row
                .iter()
                .zip(labels)
                .enumerate()
                .filter(|&(_, (_, &l))| l != label)
                .map(|(j, (&s, _))| rank_key(s, j));
            let stats = rank_stats(&mut relevant, others, &mut gaps);
            ap_sum += stats.average_precision;
            for (hits, &k) in hits_at.iter_mut().zip(ks) {
                if stats.first_hit_rank <= k {
                    *hits += 1;
                }
            }
        }
    }

    let evaluated = queries.len();
    let mean = |total: f64| {
        if evaluated == 0 {
            0.0
        } else {
            total / evaluated as f64
        }
    };
    Ok(RetrievalReport {
        queries: evaluated,
        skipped_queries: n - evaluated,
        map: mean(ap_sum),
        recall_at: ks
            .iter()
            .zip(&hits_at)
            .map(|(&k, &hits)| (k, mean(hits as f64)))
            .collect(),
    })
}

/// Items per strip, the output width of [`strip_kernel`]: two SSE registers or one AVX register.
const STRIP: usize = 8;
/// Queries per call of [`strip_kernel`]: with [`STRIP`] = 8 their accumulators fill eight of the
/// sixteen SSE registers of baseline x86-64, leaving room for the operands.
const QUERY_TILE: usize = 4;

/// The embeddings regrouped for [`strip_kernel`]: strip `s` holds items `s * STRIP ..` as `dim`
/// consecutive `[f32; STRIP]`, element `k` being coordinate `k` of each of its items (zero past the
/// last item). Costs one copy of the embeddings.
fn pack_strips(embeddings: &[f32], dim: usize) -> Vec<[f32; STRIP]> {
    let n = embeddings.len() / dim;
    let mut strips = vec![[0.0f32; STRIP]; n.div_ceil(STRIP) * dim];
    for (i, row) in embeddings.chunks_exact(dim).enumerate() {
        let strip = &mut strips[i / STRIP * dim..][..dim];
        for (slot, &x) in strip.iter_mut().zip(row) {
            slot[i % STRIP] = x;
        }
    }
    strips
}

/// Fills `out` (row-major, `queries.len()` rows of `n`) with the similarity of each query to every
/// item. Strips are the outer loop, so each is fetched from memory once and then served from L1
/// to every query tile of the block.
fn similarity_block(
    strips: &[[f32; STRIP]],
    embeddings: &[f32],
    dim: usize,
    queries: &[usize],
    out: &mut [f32],
) {
    let n = embeddings.len() / dim;
    for (s, strip) in strips.chunks_exact(dim).enumerate() {
        let first_item = s * STRIP;
        let width = STRIP.min(n - first_item);
        for (t, tile) in queries.chunks(QUERY_TILE).enumerate() {
            // A short last tile repeats its last query and drops the extra rows: at most three
            // wasted rows per block, and no separate code path for the remainder.
            let rows = std::array::from_fn(|k| {
                let q = tile[k.min(tile.len() - 1)];
                &embeddings[q * dim..(q + 1) * dim]
            });
            let tile_sims = strip_kernel(strip, &rows);
            for (k, sims) in tile_sims.iter().take(tile.len()).enumerate() {
                let row_start = (t * QUERY_TILE + k) * n + first_item;
                out[row_start..row_start + width].copy_from_slice(&sims[..width]);
            }
        }
    }
}

/// Similarities of [`QUERY_TILE`] queries with the [`STRIP`] items of one strip.
///
/// A small matrix-multiply kernel: for each coordinate it multiplies one query value into a whole
/// strip row and adds to that query's accumulators, so every loaded value serves several
/// multiply-adds and the work is plain element-wise arithmetic on fixed-size arrays, which the
/// compiler reliably turns into SIMD code. Computing each dot product separately instead would
/// need a horizontal sum per pair and twice the loads per multiply-add.
fn strip_kernel(
    strip: &[[f32; STRIP]],
    queries: &[&[f32]; QUERY_TILE],
) -> [[f32; STRIP]; QUERY_TILE] {
    // Re-slicing to the strip's length lets the compiler drop the bounds checks in the loop.
    let queries = queries.map(|q| &q[..strip.len()]);
    let mut acc = [[0.0f32; STRIP]; QUERY_TILE];
    for (k, items) in strip.iter().enumerate() {
        for (acc, query) in acc.iter_mut().zip(&queries) {
            let x = query[k];
            for (a, y) in acc.iter_mut().zip(items) {
                *a += x * y;
            }
        }
    }
    acc
}

/// A key whose ascending order is "score descending, then index ascending": the ranking order,
/// ties included, as plain integers that are cheap to sort and compare.
fn rank_key(score: f32, index: usize) -> u64 {
    // Adding +0.0 turns -0.0 into +0.0: the two compare equal, so they must tie.
    let bits = (score + 0.0).to_bits();
    // Standard order-preserving map of IEEE floats onto unsigned integers: flip all bits of
    // negatives (larger magnitude = smaller), set the sign bit of non-negatives.
    let ascending = if bits >> 31 == 1 {
        !bits
    } else {
        bits | 1 << 31
    };
    (u64::from(!ascending) << 32) | index as u64
}

/// What one ranking contributes to retrieval metrics.
struct RankStats {
    average_precision: f64,
    /// 1-based rank of the first relevant item.
    first_hit_rank: usize,
}

/// AP and first-hit rank of one ranking, given the [`rank_key`]s of its relevant items (at least
/// one) and of all its other items; `gaps` is a reusable buffer.
///
/// Only the relevant items are sorted. A relevant item's rank is its position among the relevant
/// items plus the number of other items ahead of it, so each other item merely has to be counted
/// in the gap between relevant items where it falls, found by binary search. With m relevant items
/// among n this is O(n log m) rather than the O(n log n) of sorting the whole ranking, which
/// matters because retrieval does it for every query and m is usually a handful.
fn rank_stats(
    relevant: &mut [u64],
    others: impl Iterator<Item = u64>,
    gaps: &mut Vec<usize>,
) -> RankStats {
    relevant.sort_unstable();
    let last = relevant[relevant.len() - 1];
    // gaps[t]: other items ranked between relevant items t - 1 and t.
    gaps.clear();
    gaps.resize(relevant.len(), 0);
    for key in others {
        // Items ranked after the last relevant one change neither AP nor the first hit. Keys are
        // unique (they embed the index), so `<` is a strict ranking.
        if key < last {
            gaps[relevant.partition_point(|&r| r < key)] += 1;
        }
    }
    let mut others_ahead = 0;
    let mut precision_sum = 0.0;
    for (t, &gap) in gaps.iter().enumerate() {
        others_ahead += gap;
        let hits = t + 1;
        precision_sum += hits as f64 / (hits + others_ahead) as f64;
    }
    RankStats {
        average_precision: precision_sum / relevant.len() as f64,
        first_hit_rank: 1 + gaps[0],
    }
}

/// Fraction of pairs classified correctly when "same" is predicted for `score >= threshold`.
///
/// # Errors
///
/// [`MetricsError::NoPairs`] for no pairs, [`MetricsError::NonFinite`] for a NaN or infinite score.
///
/// # Panics
///
/// If the slices differ in length.
pub fn accuracy_at(scores: &[f32], same: &[bool], threshold: f32) -> Result<f64, MetricsError> {
    check_pairs(scores, same, "accuracy_at")?;
    let correct = scores
        .iter()
        .zip(same)
        .filter(|&(&s, &y)| (s >= threshold) == y)
        .count();
    Ok(correct as f64 / scores.len() as f64)
}

/// The threshold that maximises [`accuracy_at`] on these pairs, and that accuracy.
///
/// Candidates are a value below the lowest score (everything "same"), the midpoint between each
/// two consecutive distinct scores, and a value above the highest score (everything
/// "different"); these realise every split a threshold can make. Midpoints rather than the scores
/// themselves keep the chosen threshold away from the training scores, so it generalises
/// symmetrically to unseen pairs. When several candidates tie, the lowest threshold wins. One sort
/// and one sweep: O(n log n).
///
/// # Errors
///
/// As [`accuracy_at`].
///
/// # Panics
///
/// If the slices differ in length.
pub fn best_threshold(scores: &[f32], same: &[bool]) -> Result<(f32, f64), MetricsError> {
    check_pairs(scores, same, "best_threshold")?;
    let n = scores.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_unstable_by(|&a, &b| scores[a].total_cmp(&scores[b]));

    // Sweep the threshold upwards; each group of equal scores it passes flips from predicted
    // "same" to predicted "different".
    let mut correct = same.iter().filter(|&&y| y).count();
    let mut best = (scores[order[0]].next_down(), correct);
    let mut i = 0;
    while i < n {
        let score = scores[order[i]];
        while i < n && scores[order[i]] == score {
            if same[order[i]] {
                correct -= 1;
            } else {
                correct += 1;
            }
            i += 1;
        }
        let threshold = match order.get(i) {
            Some(&next) => midpoint(score, scores[next]),
            None => score.next_up(),
        };
        if correct > best.1 {
            best = (threshold, correct);
        }
    }
    Ok((best.0, best.1 as f64 / n as f64))
}

/// A threshold strictly above `low` and at most `high` (for `low < high`), as close to halfway as
/// `f32` allows. When the two are adjacent floats the rounded midpoint can land on `low`, which
/// would put `low` on the wrong side, so `high` is used instead.
fn midpoint(low: f32, high: f32) -> f32 {
    let mid = ((f64::from(low) + f64::from(high)) / 2.0) as f32;
    if mid > low {
        mid
    } else {
        high
    }
}

/// Outcome of one cross-validation fold (see [`kfold_accuracy`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FoldResult {
    /// Threshold chosen on the other folds.
    pub threshold: f32,
    /// Accuracy of that threshold on this fold.
    pub accuracy: f64,
}

/// Cross-validated verification accuracy (see [`kfold_accuracy`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KFoldReport {
    /// One result per fold, in fold order.
    pub folds: Vec<FoldResult>,
    /// Mean of the fold accuracies.
    pub mean_accuracy: f64,
    /// Population standard deviation of the fold accuracies (divide by the number of folds), as
    /// LFW results are conventionally reported.
    pub std_accuracy: f64,
}

/// Verification accuracy with the LFW protocol: for each fold, the threshold is chosen with
/// [`best_threshold`] on all the other folds and accuracy is measured on that fold, so no pair
/// ever helps choose the threshold it is judged by.
///
/// `fold_of[i]` is the fold of pair `i`; folds are numbered `0..F`.
///
/// # Errors
///
/// As [`accuracy_at`]; also [`MetricsError::TooFewFolds`] for fewer than two folds and
/// [`MetricsError::EmptyFold`] when some fold in `0..F` has no pairs.
///
/// # Panics
///
/// If the slices differ in length.
pub fn kfold_accuracy(
    scores: &[f32],
    same: &[bool],
    fold_of: &[usize],
) -> Result<KFoldReport, MetricsError> {
    check_pairs(scores, same, "kfold_accuracy")?;
    assert_eq!(
        scores.len(),
        fold_of.len(),
        "kfold_accuracy: {} scores but {} fold numbers",
        scores.len(),
        fold_of.len()
    );
    let fold_count = fold_of.iter().max().map_or(0, |&f| f + 1);
    if fold_count < 2 {
        return Err(MetricsError::TooFewFolds(fold_count));
    }
    // Checked up front so the message names the empty fold rather than some fold left with an
    // empty training set.
    let mut fold_sizes = vec![0usize; fold_count];
    for &f in fold_of {
        fold_sizes[f] += 1;
    }
    if let Some(empty) = fold_sizes.iter().position(|&size| size == 0) {
        return Err(MetricsError::EmptyFold {
            fold: empty,
            folds: fold_count,
        });
    }

    let mut folds = Vec::with_capacity(fold_count);
    for fold in 0..fold_count {
        let (mut train_scores, mut train_same) = (Vec::new(), Vec::new());
        let (mut test_scores, mut test_same) = (Vec::new(), Vec::new());
        for ((&score, &y), &f) in scores.iter().zip(same).zip(fold_of) {
            if f == fold {
                test_scores.push(score);
                test_same.push(y);
            } else {
                train_scores.push(score);
                train_same.push(y);
            }
        }
        let (threshold, _) = best_threshold(&train_scores, &train_same)?;
        folds.push(FoldResult {
            threshold,
            accuracy: accuracy_at(&test_scores, &test_same, threshold)?,
        });
    }

    let count = folds.len() as f64;
    let mean_accuracy = folds.iter().map(|f| f.accuracy).sum::<f64>() / count;
    let variance = folds
        .iter()
        .map(|f| (f.accuracy - mean_accuracy).powi(2))
        .sum::<f64>()
        / count;
    Ok(KFoldReport {
        folds,
        mean_accuracy,
        std_accuracy: variance.sqrt(),
    })
}

/// One operating point of a verification ROC curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RocPoint {
    /// Pairs with `score >= threshold` are accepted as "same".
    pub threshold: f32,
    /// False accept rate: accepted different-person pairs / all different-person pairs.
    pub far: f64,
    /// True accept rate: accepted same-person pairs / all same-person pairs.
    pub tar: f64,
}

/// The ROC curve: one point per distinct score used as threshold, thresholds descending (so FAR
/// and TAR both rise along the vector). The trivial point above every score (FAR = TAR = 0) is
/// not listed.
///
/// # Errors
///
/// As [`accuracy_at`]; also [`MetricsError::OneKindOfPair`] when the pairs are not a mix of
/// same-person and different-person pairs (either rate would divide by zero).
///
/// # Panics
///
/// If the slices differ in length.
pub fn roc(scores: &[f32], same: &[bool]) -> Result<Vec<RocPoint>, MetricsError> {
    check_pairs(scores, same, "roc")?;
    let positives = same.iter().filter(|&&y| y).count();
    let negatives = same.len() - positives;
    if positives == 0 || negatives == 0 {
        return Err(MetricsError::OneKindOfPair {
            same: positives,
            different: negatives,
        });
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_unstable_by(|&a, &b| scores[b].total_cmp(&scores[a]));

    let mut points = Vec::new();
    let (mut true_accepts, mut false_accepts) = (0usize, 0usize);
    let mut i = 0;
    while i < order.len() {
        let threshold = scores[order[i]];
        while i < order.len() && scores[order[i]] == threshold {
            if same[order[i]] {
                true_accepts += 1;
            } else {
                false_accepts += 1;
            }
            i += 1;
        }
        points.push(RocPoint {
            threshold,
            far: false_accepts as f64 / negatives as f64,
            tar: true_accepts as f64 / positives as f64,
        });
    }
    Ok(points)
}

/// The highest TAR among ROC points whose FAR does not exceed `far`; 0 when even the strictest
/// threshold exceeds it (the implicit "accept nothing" point).
///
/// # Errors and panics
///
/// As [`roc`].
pub fn tar_at_far(scores: &[f32], same: &[bool], far: f64) -> Result<f64, MetricsError> {
    Ok(roc(scores, same)?
        .iter()
        .filter(|p| p.far <= far)
        .map(|p| p.tar)
        .fold(0.0, f64::max))
}

/// Shared argument checks of the verification functions.
fn check_pairs(scores: &[f32], same: &[bool], caller: &str) -> Result<(), MetricsError> {
    assert_eq!(
        scores.len(),
        same.len(),
        "{caller}: {} scores but {} same/different flags",
        scores.len(),
        same.len()
    );
    if scores.is_empty() {
        return Err(MetricsError::NoPairs);
    }
    check_finite(scores)
}

/// Refuses NaN and infinite values: they have no place in a ranking or against a threshold.
pub fn check_finite(values: &[f32]) -> Result<(), MetricsError> {
    match values.iter().filter(|v| !v.is_finite()).count() {
        0 => Ok(()),
        count => Err(MetricsError::NonFinite {
            count,
            total: values.len(),
        }),
    }
}

/// NaN has no place in a ranking or against a threshold; refusing it keeps results meaningful.
fn assert_no_nan(values: &[f32], caller: &str) {
    assert!(!values.iter().any(|v| v.is_nan()), "{caller}: NaN in input");
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoothface_tests::Rng;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn rank_keys_sort_by_score_descending_then_index() {
        let scores = [
            -1.5,
            2.0,
            -0.0,
            0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.25,
            -0.25,
        ];
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by_key(|&i| rank_key(scores[i], i));
        // -0.0 and 0.0 are equal scores, so they keep input order (2 before 3).
        assert_eq!(order, [4, 1, 6, 2, 3, 7, 0, 5]);
    }

    #[test]
    fn average_precision_by_hand() {
        // Ranking [rel, non, rel]: precisions 1/1 and 2/3.
        let ap = average_precision(&[0.9, 0.5, 0.3], &[true, false, true]).unwrap();
        assert!(close(ap, (1.0 + 2.0 / 3.0) / 2.0));
        // Same ranking given in shuffled input order.
        let ap = average_precision(&[0.3, 0.9, 0.5], &[true, true, false]).unwrap();
        assert!(close(ap, (1.0 + 2.0 / 3.0) / 2.0));
        // Ranking [non, non, rel, non, rel]: precisions 1/3 and 2/5.
        let ap = average_precision(
            &[5.0, 4.0, 3.0, 2.0, 1.0],
            &[false, false, true, false, true],
        )
        .unwrap();
        assert!(close(ap, (1.0 / 3.0 + 2.0 / 5.0) / 2.0));
        assert_eq!(average_precision(&[0.1, 0.2], &[false, false]), None);
        assert_eq!(average_precision(&[], &[]), None);
    }

    #[test]
    fn average_precision_ties_keep_input_order() {
        // All tied: ranking is input order [non, rel, rel]: precisions 1/2 and 2/3.
        let ap = average_precision(&[0.5, 0.5, 0.5], &[false, true, true]).unwrap();
        assert!(close(ap, (0.5 + 2.0 / 3.0) / 2.0));
        // -0.0 ties with 0.0 even though the bit patterns differ: [non, rel] gives 1/2.
        let ap = average_precision(&[-0.0, 0.0], &[false, true]).unwrap();
        assert!(close(ap, 0.5));
    }

    fn unit(degrees: f32) -> [f32; 2] {
        let r = degrees.to_radians();
        [r.cos(), r.sin()]
    }

    #[test]
    fn retrieval_metrics_on_points_of_the_unit_circle() {
        // Cosine similarity falls with the angle between points, so rankings follow angular
        // distance. Item 4 is the only "C" and is skipped as a query but still ranked.
        let angles = [0.0, 40.0, 90.0, 210.0, 300.0];
        let labels = [0, 0, 1, 1, 2];
        let embeddings: Vec<f32> = angles.iter().flat_map(|&a| unit(a)).collect();
        let report = retrieval_metrics(&embeddings, 2, &labels, &[1, 2, 3]).unwrap();
        // Angular distances from each query, nearest first ('*' = same label):
        //   q0 (0°):   1*(40) 4(60) 2(90) 3(150)   -> AP 1,   first hit 1
        //   q1 (40°):  0*(40) 2(50) 4(100) 3(170)  -> AP 1,   first hit 1
        //   q2 (90°):  1(50) 0(90) 3*(120) 4(150)  -> AP 1/3, first hit 3
        //   q3 (210°): 4(90) 2*(120) 0(150) 1(170) -> AP 1/2, first hit 2
        assert_eq!(report.queries, 4);
        assert_eq!(report.skipped_queries, 1);
        assert!(close(report.map, (1.0 + 1.0 + 1.0 / 3.0 + 0.5) / 4.0));
        let ks: Vec<usize> = report.recall_at.iter().map(|&(k, _)| k).collect();
        assert_eq!(ks, [1, 2, 3]);
        assert!(close(report.recall_at[0].1, 0.5));
        assert!(close(report.recall_at[1].1, 0.75));
        assert!(close(report.recall_at[2].1, 1.0));
    }

    #[test]
    fn a_query_never_retrieves_itself() {
        // Item 2 is identical to item 0; had query 0 ranked itself first it would score AP 1.
        let embeddings = [1.0, 0.0, 0.0, 1.0, 1.0, 0.0];
        let labels = [7, 7, 9];
        let report = retrieval_metrics(&embeddings, 2, &labels, &[1]).unwrap();
        // q0: others 1*(sim 0), 2(sim 1)       -> ranking [2, 1*]: AP 1/2, no hit at 1
        // q1: others 0*(sim 0), 2(sim 0), tied -> input order [0*, 2]: AP 1, hit at 1
        assert_eq!(report.queries, 2);
        assert_eq!(report.skipped_queries, 1);
        assert!(close(report.map, 0.75));
        assert!(close(report.recall_at[0].1, 0.5));
    }

    #[test]
    fn retrieval_metrics_without_queries() {
        let report = retrieval_metrics(&[1.0, 0.0, 0.0, 1.0], 2, &[1, 2], &[1]).unwrap();
        assert_eq!(report.queries, 0);
        assert_eq!(report.skipped_queries, 2);
        assert_eq!(report.map, 0.0);
        assert_eq!(report.recall_at, [(1, 0.0)]);
    }

    /// Straightforward Smooth-AP protocol: stable sort of (score, index) pairs per query and AP
    /// from its definition.
    fn reference_retrieval(
        embeddings: &[f32],
        dim: usize,
        labels: &[u32],
        ks: &[usize],
    ) -> (usize, usize, f64, Vec<f64>) {
        let n = labels.len();
        let row = |i: usize| &embeddings[i * dim..(i + 1) * dim];
        let (mut evaluated, mut skipped, mut ap_sum) = (0, 0, 0.0);
        let mut recall_hits = vec![0usize; ks.len()];
        for q in 0..n {
            let mut ranked: Vec<(f32, usize)> = (0..n)
                .filter(|&j| j != q)
                .map(|j| (row(q).iter().zip(row(j)).map(|(a, b)| a * b).sum(), j))
                .collect();
            ranked.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap());
            let relevant: Vec<bool> = ranked
                .iter()
                .map(|&(_, j)| labels[j] == labels[q])
                .collect();
            let total = relevant.iter().filter(|&&r| r).count();
            if total == 0 {
                skipped += 1;
                continue;
            }
            evaluated += 1;
            let mut ap = 0.0;
            for r in 0..relevant.len() {
                if relevant[r] {
                    let hits_so_far = relevant[..=r].iter().filter(|&&x| x).count();
                    ap += hits_so_far as f64 / (r + 1) as f64;
                }
            }
            ap_sum += ap / total as f64;
            for (hits, &k) in recall_hits.iter_mut().zip(ks) {
                if relevant.iter().take(k).any(|&x| x) {
                    *hits += 1;
                }
            }
        }
        let recall = recall_hits
            .iter()
            .map(|&h| h as f64 / evaluated as f64)
            .collect();
        (evaluated, skipped, ap_sum / evaluated as f64, recall)
    }

    #[test]
    fn retrieval_metrics_match_brute_force_on_random_data() {
        // Small integer coordinates make every dot product exact in f32 whatever the summation
        // order, and produce many tied scores, so tie-breaking is exercised too.
        let mut rng = Rng::new(42);
        let (n, dim) = (150, 19);
        let embeddings: Vec<f32> = (0..n * dim).map(|_| rng.small(2)).collect();
        // 40 labels over 150 items: some labels occur once, so some queries are skipped.
        let labels: Vec<u32> = (0..n).map(|_| rng.below(40) as u32).collect();
        let ks = [1, 2, 5, 10, 100];
        let report = retrieval_metrics(&embeddings, dim, &labels, &ks).unwrap();
        let (evaluated, skipped, map, recall) = reference_retrieval(&embeddings, dim, &labels, &ks);
        assert_eq!(report.queries, evaluated);
        assert_eq!(report.skipped_queries, skipped);
        assert!(
            evaluated > 0,
            "the random set should have evaluable queries"
        );
        assert!(close(report.map, map), "{} vs {map}", report.map);
        for ((&(k, got), &want), &asked) in report.recall_at.iter().zip(&recall).zip(&ks) {
            assert_eq!(k, asked);
            assert!(close(got, want), "Recall@{k}: {got} vs {want}");
        }
    }

    #[test]
    fn accuracy_at_counts_ties_as_same() {
        let scores = [0.5, 0.5, 0.2, 0.9];
        let same = [true, false, false, true];
        // At 0.5: predictions same, same, diff, same -> 3 of 4 right.
        assert!(close(accuracy_at(&scores, &same, 0.5).unwrap(), 0.75));
        // Just above 0.5: diff, diff, diff, same -> 3 of 4 right.
        assert!(close(accuracy_at(&scores, &same, 0.6).unwrap(), 0.75));
        assert!(close(accuracy_at(&scores, &same, 1.0).unwrap(), 0.5));
    }

    #[test]
    fn best_threshold_by_hand() {
        // Separable: the only perfect split lies between 0.3 and 0.7; its midpoint is 0.5.
        let (t, acc) = best_threshold(&[0.2, 0.9, 0.3, 0.7], &[false, true, false, true]).unwrap();
        assert!((t - 0.5).abs() < 1e-6, "{t}");
        assert!(close(acc, 1.0));
        // Sorted: 0.1 F, 0.35 T, 0.4 F, 0.8 T. Splits below 0.35, below 0.4 and below 0.8 all get
        // 3 of 4 right; the lowest, between 0.1 and 0.35, wins.
        let (t, acc) = best_threshold(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]).unwrap();
        assert!((t - 0.225).abs() < 1e-6, "{t}");
        assert!(close(acc, 0.75));
        // All different: the best threshold lies above every score.
        let (t, acc) = best_threshold(&[0.3, 0.6], &[false, false]).unwrap();
        assert!(t > 0.6);
        assert!(close(acc, 1.0));
        // All same: below every score.
        let (t, acc) = best_threshold(&[0.3, 0.6], &[true, true]).unwrap();
        assert!(t < 0.3);
        assert!(close(acc, 1.0));
    }

    #[test]
    fn best_threshold_between_adjacent_floats() {
        let low = 0.5f32;
        let high = low.next_up();
        let (t, acc) = best_threshold(&[high, low], &[true, false]).unwrap();
        assert!(close(acc, 1.0));
        assert!(t > low && t <= high, "{t}");
    }

    #[test]
    fn best_threshold_matches_brute_force() {
        let mut rng = Rng::new(7);
        for round in 0..20 {
            let n = 1 + round * 3;
            // Quarter steps in [-1, 1] give many tied scores.
            let scores: Vec<f32> = (0..n).map(|_| rng.small(4) / 4.0).collect();
            let same: Vec<bool> = (0..n).map(|_| rng.below(2) == 0).collect();
            // Every split a threshold can make is "score >= s" for some score s, or nothing.
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let brute = scores
                .iter()
                .copied()
                .chain([max + 1.0])
                .map(|t| {
                    let right = scores
                        .iter()
                        .zip(&same)
                        .filter(|&(&s, &y)| (s >= t) == y)
                        .count();
                    right as f64 / n as f64
                })
                .fold(0.0, f64::max);
            let (t, acc) = best_threshold(&scores, &same).unwrap();
            assert!(close(acc, brute), "round {round}: {acc} vs {brute}");
            assert!(
                close(accuracy_at(&scores, &same, t).unwrap(), acc),
                "round {round}"
            );
            // A midpoint never coincides with a score.
            assert!(
                !scores.contains(&t),
                "round {round}: threshold {t} is a score"
            );
        }
    }

    #[test]
    fn kfold_accuracy_by_hand() {
        // Pairs alternate between folds 0 and 1.
        //   fold 0: 0.9 T, 0.6 T, 0.5 F, 0.2 F -> its best split is at (0.5 + 0.6) / 2 = 0.55
        //   fold 1: 0.8 T, 0.3 F, 0.6 T, 0.1 F -> its best split is at (0.3 + 0.6) / 2 = 0.45
        // Fold 0 is judged at 0.45 (from fold 1): 0.5 F is accepted -> 3/4.
        // Fold 1 is judged at 0.55 (from fold 0): all right -> 1.
        let scores = [0.9, 0.8, 0.6, 0.3, 0.5, 0.6, 0.2, 0.1];
        let same = [true, true, true, false, false, true, false, false];
        let fold_of = [0, 1, 0, 1, 0, 1, 0, 1];
        let report = kfold_accuracy(&scores, &same, &fold_of).unwrap();
        assert_eq!(report.folds.len(), 2);
        assert!((report.folds[0].threshold - 0.45).abs() < 1e-6);
        assert!(close(report.folds[0].accuracy, 0.75));
        assert!((report.folds[1].threshold - 0.55).abs() < 1e-6);
        assert!(close(report.folds[1].accuracy, 1.0));
        assert!(close(report.mean_accuracy, 0.875));
        // Population std of {0.75, 1.0}: both are 0.125 from the mean.
        assert!(close(report.std_accuracy, 0.125));
    }

    #[test]
    fn kfold_accuracy_refuses_too_few_or_empty_folds() {
        // All pairs in fold 1, so fold 0 is empty (and fold 1 would have nothing to train on).
        assert_eq!(
            kfold_accuracy(&[0.1, 0.2], &[false, true], &[1, 1]),
            Err(MetricsError::EmptyFold { fold: 0, folds: 2 })
        );
        assert_eq!(
            kfold_accuracy(&[0.1, 0.2], &[false, true], &[0, 0]),
            Err(MetricsError::TooFewFolds(1))
        );
        assert_eq!(kfold_accuracy(&[], &[], &[]), Err(MetricsError::NoPairs));
    }

    #[test]
    fn rates_need_both_kinds_of_pair() {
        assert_eq!(
            roc(&[0.1, 0.2], &[true, true]),
            Err(MetricsError::OneKindOfPair {
                same: 2,
                different: 0
            })
        );
        assert_eq!(
            tar_at_far(&[0.1], &[false], 0.1),
            Err(MetricsError::OneKindOfPair {
                same: 0,
                different: 1
            })
        );
    }

    #[test]
    fn roc_and_tar_at_far_by_hand() {
        // 4 same (T) and 3 different (F) pairs, with a tie at 0.7.
        let scores = [0.9, 0.8, 0.7, 0.7, 0.6, 0.2, 0.1];
        let same = [true, false, true, false, true, false, true];
        let points = roc(&scores, &same).unwrap();
        let expected = [
            (0.9, 0.0, 0.25),
            (0.8, 1.0 / 3.0, 0.25),
            (0.7, 2.0 / 3.0, 0.5),
            (0.6, 2.0 / 3.0, 0.75),
            (0.2, 1.0, 0.75),
            (0.1, 1.0, 1.0),
        ];
        assert_eq!(points.len(), expected.len());
        for (p, &(threshold, far, tar)) in points.iter().zip(&expected) {
            assert_eq!(p.threshold, threshold);
            assert!(close(p.far, far) && close(p.tar, tar), "{p:?}");
        }
        assert!(close(tar_at_far(&scores, &same, 0.0).unwrap(), 0.25));
        assert!(close(tar_at_far(&scores, &same, 0.5).unwrap(), 0.25));
        assert!(close(tar_at_far(&scores, &same, 2.0 / 3.0).unwrap(), 0.75));
        assert!(close(tar_at_far(&scores, &same, 1.0).unwrap(), 1.0));
        // The strictest threshold already accepts an impostor: nothing reaches FAR 0.
        assert!(close(
            tar_at_far(&[0.9, 0.5], &[false, true], 0.0).unwrap(),
            0.0
        ));
    }

    #[test]
    fn non_finite_scores_and_embeddings_are_refused() {
        let non_finite = |count, total| MetricsError::NonFinite { count, total };
        assert_eq!(
            best_threshold(&[0.1, f32::NAN], &[true, false]).unwrap_err(),
            non_finite(1, 2)
        );
        assert_eq!(
            accuracy_at(&[f32::INFINITY, 0.2, f32::NAN], &[true, false, true], 0.5).unwrap_err(),
            non_finite(2, 3)
        );
        assert_eq!(
            retrieval_metrics(&[1.0, f32::NAN, 0.0, 1.0], 2, &[1, 1], &[1]).unwrap_err(),
            non_finite(1, 4)
        );
    }
}
