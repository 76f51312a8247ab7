//! Clustering quality metrics: how well a predicted grouping of faces matches true identities.
//!
//! [`score`] compares two labelings of the same items, `truth[i]` and `predicted[i]` being the
//! cluster labels of item `i`. Label values mean nothing beyond "same or different", so every
//! number here is invariant to renaming labels. Items that a clustering leaves unassigned should
//! be given their own unique predicted label by the caller: a singleton is then simply a cluster
//! of one, which is exactly how it should be scored (it merges nothing falsely and recalls
//! nothing).
//!
//! Three families are reported because each fails differently:
//!
//! * **Pairwise** precision / recall / F over all unordered pairs of distinct items. Easy to
//!   explain, but dominated by the largest clusters (pairs grow quadratically with size).
//! * **BCubed** (Bagga & Baldwin 1998; Amigó et al. 2009): per-item precision and recall,
//!   averaged over items, so every face weighs the same whatever the size of its cluster.
//! * **NMI**, normalised mutual information with the arithmetic-mean normalisation (scikit-learn's
//!   default), for comparison with published numbers.
//!
//! Everything is computed from the contingency table (how many items have each pair of true and
//! predicted labels), never by looping over pairs, so a million items take a sort, not 5 * 10^11
//! pair visits. The table is built by sorting rather than hashing, so cells are always summed in
//! the same order and the floating-point results are identical from run to run.

use serde::Serialize;

/// Why a clustering cannot be scored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusteringError {
    /// The two labelings are not of the same items.
    #[error("truth has {truth} labels but predicted has {predicted}: not the same items")]
    LengthMismatch {
        /// Length of the true labeling.
        truth: usize,
        /// Length of the predicted labeling.
        predicted: usize,
    },
    /// There is nothing to score: every metric would be 0 / 0.
    #[error("no items to score")]
    NoItems,
}

/// Scores of a predicted clustering against the truth, over the same items.
///
/// Every score lies in `[0, 1]`, 1 being a perfect match.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClusteringScores {
    /// Of the unordered pairs of distinct items put in the same predicted cluster, the fraction
    /// that also share a true cluster: TP / Σ_j C(|P_j|, 2), where TP = Σ_ij C(n_ij, 2) and
    /// n_ij counts items in true cluster i and predicted cluster j. 1.0 when no predicted cluster
    /// has two items (no pair was merged, so none was merged falsely).
    pub pairwise_precision: f64,
    /// Of the unordered pairs of distinct items that share a true cluster, the fraction also put
    /// in the same predicted cluster: TP / Σ_i C(|T_i|, 2). 1.0 when no true cluster has two
    /// items (there was no pair to miss).
    pub pairwise_recall: f64,
    /// Harmonic mean of [`Self::pairwise_precision`] and [`Self::pairwise_recall`]; 0 when both
    /// are 0.
    pub pairwise_f: f64,
    /// Mean over items of |items in its predicted cluster with its true label| / |its predicted
    /// cluster|, the item itself counted: (1/N) Σ_ij n_ij² / |P_j|.
    pub bcubed_precision: f64,
    /// Mean over items of |items in its predicted cluster with its true label| / |its true
    /// cluster|, the item itself counted: (1/N) Σ_ij n_ij² / |T_i|.
    pub bcubed_recall: f64,
    /// Harmonic mean of [`Self::bcubed_precision`] and [`Self::bcubed_recall`]; 0 when both are
    /// 0 (which cannot happen: both are at least 1/N).
    pub bcubed_f: f64,
    /// Normalised mutual information 2 I(T;P) / (H(T) + H(P)), natural logarithms, with the
    /// empirical distributions p_ij = n_ij / N (scikit-learn's `normalized_mutual_info_score`
    /// with `average_method='arithmetic'`). 1.0 when H(T) + H(P) = 0, i.e. both labelings are a
    /// single cluster. Clamped to `[0, 1]`: rounding can otherwise put a perfect match a few ulps
    /// above 1 or an independent one a few below 0.
    pub nmi: f64,
    /// Number of items scored, N.
    pub items: usize,
    /// Distinct true labels.
    pub true_clusters: usize,
    /// Distinct predicted labels (singletons included).
    pub predicted_clusters: usize,
}

/// Scores `predicted` against `truth` (see [`ClusteringScores`] for each definition).
///
/// Runs in O(N log N) time and O(N) memory, however the items are clustered; it never panics.
///
/// # Errors
///
/// [`ClusteringError::LengthMismatch`] when the slices differ in length,
/// [`ClusteringError::NoItems`] when they are empty.
pub fn score(truth: &[u32], predicted: &[u32]) -> Result<ClusteringScores, ClusteringError> {
    if truth.len() != predicted.len() {
        return Err(ClusteringError::LengthMismatch {
            truth: truth.len(),
            predicted: predicted.len(),
        });
    }
    if truth.is_empty() {
        return Err(ClusteringError::NoItems);
    }
    let n = truth.len();
    let n_f = n as f64;

    // Predicted cluster sizes, sorted by label so each cell can look its column up by binary
    // search.
    let mut sorted_predicted = predicted.to_vec();
    sorted_predicted.sort_unstable();
    let predicted_sizes = run_lengths(&sorted_predicted);

    // Cells of the contingency table: sorting (truth, predicted) pairs puts each cell in one run
    // and each true cluster's cells next to each other, so the true cluster sizes come from the
    // same pass.
    let mut pairs: Vec<(u32, u32)> = truth
        .iter()
        .copied()
        .zip(predicted.iter().copied())
        .collect();
    pairs.sort_unstable();
    let cells = run_lengths(&pairs);

    // Exact integer pair counts: u128 cannot overflow, as C(n, 2) < 2^127 for any usize n and
    // each sum is at most C(N, 2).
    let mut same_both: u128 = 0;
    let mut same_true: u128 = 0;
    let mut bcubed_precision_sum = 0.0;
    let mut bcubed_recall_sum = 0.0;
    let mut mutual_information = 0.0;
    let mut true_entropy = 0.0;
    let mut true_clusters = 0;

    let mut start = 0;
    while start < cells.len() {
        let true_label = cells[start].0 .0;
        let end = start
            + cells[start..]
                .iter()
                .take_while(|((t, _), _)| *t == true_label)
                .count();
        let row = &cells[start..end];
        let true_size: usize = row.iter().map(|(_, count)| count).sum();
        let true_size_f = true_size as f64;
        true_clusters += 1;
        same_true += pairs_of(true_size);
        true_entropy -= plogp(true_size_f / n_f);
        for &((_, predicted_label), count) in row {
            // Every cell's predicted label is in `predicted_sizes` by construction; 1 keeps the
            // arithmetic finite rather than panicking should that ever not hold.
            let predicted_size = predicted_sizes
                .binary_search_by_key(&predicted_label, |&(label, _)| label)
                .map_or(1, |found| predicted_sizes[found].1);
            let count_f = count as f64;
            same_both += pairs_of(count);
            bcubed_precision_sum += count_f * count_f / predicted_size as f64;
            bcubed_recall_sum += count_f * count_f / true_size_f;
            // p_ij ln(p_ij / (p_i p_j)) = (n_ij / N) ln(N n_ij / (|T_i| |P_j|)).
            mutual_information +=
                count_f / n_f * (n_f * count_f / (true_size_f * predicted_size as f64)).ln();
        }
        start = end;
    }

    let same_predicted: u128 = predicted_sizes
        .iter()
        .map(|&(_, size)| pairs_of(size))
        .sum();
    let predicted_entropy: f64 = -predicted_sizes
        .iter()
        .map(|&(_, size)| plogp(size as f64 / n_f))
        .sum::<f64>();

    let pairwise_precision = ratio_or_one(same_both, same_predicted);
    let pairwise_recall = ratio_or_one(same_both, same_true);
    let bcubed_precision = bcubed_precision_sum / n_f;
    let bcubed_recall = bcubed_recall_sum / n_f;
    let entropies = true_entropy + predicted_entropy;
    let nmi = if entropies > 0.0 {
        (2.0 * mutual_information / entropies).clamp(0.0, 1.0)
    } else {
        // Both labelings put everything in one cluster: they agree completely.
        1.0
    };

    Ok(ClusteringScores {
        pairwise_precision,
        pairwise_recall,
        pairwise_f: harmonic_mean(pairwise_precision, pairwise_recall),
        bcubed_precision,
        bcubed_recall,
        bcubed_f: harmonic_mean(bcubed_precision, bcubed_recall),
        nmi,
        items: n,
        true_clusters,
        predicted_clusters: predicted_sizes.len(),
    })
}

/// Each distinct value of a sorted slice with the number of times it occurs, in order.
fn run_lengths<T: Copy + PartialEq>(sorted: &[T]) -> Vec<(T, usize)> {
    let mut runs: Vec<(T, usize)> = Vec::new();
    for &value in sorted {
        match runs.last_mut() {
            Some((last, count)) if *last == value => *count += 1,
            _ => runs.push((value, 1)),
        }
    }
    runs
}

/// C(n, 2), the unordered pairs of distinct items among `n`, exactly.
fn pairs_of(n: usize) -> u128 {
    let n = n as u128;
    // n (n - 1) < 2^128 for n <= usize::MAX, and one of the two factors is even.
    n * n.saturating_sub(1) / 2
}

/// `numerator / denominator`, or 1 when there is nothing to count (0 / 0 means no pair could go
/// wrong).
fn ratio_or_one(numerator: u128, denominator: u128) -> f64 {
    if denominator == 0 {
        1.0
    } else {
        numerator as f64 / denominator as f64
    }
}

/// 2ab / (a + b), or 0 when both are 0.
fn harmonic_mean(a: f64, b: f64) -> f64 {
    if a + b > 0.0 {
        2.0 * a * b / (a + b)
    } else {
        0.0
    }
}

/// p ln p, with the usual limit 0 at p = 0.
fn plogp(p: f64) -> f64 {
    if p > 0.0 {
        p * p.ln()
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoothface_tests::Rng;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    /// Asserts two values agree to 1e-12, naming the metric on failure.
    #[track_caller]
    fn assert_close(name: &str, got: f64, want: f64) {
        assert!(close(got, want), "{name}: got {got}, want {want}");
    }

    /// The definitions applied literally, in O(n²): every pair and every item visited.
    fn brute_force(truth: &[u32], predicted: &[u32]) -> (f64, f64, f64, f64) {
        let n = truth.len();
        let (mut same_both, mut same_true, mut same_predicted) = (0u64, 0u64, 0u64);
        for i in 0..n {
            for j in i + 1..n {
                let t = truth[i] == truth[j];
                let p = predicted[i] == predicted[j];
                same_both += u64::from(t && p);
                same_true += u64::from(t);
                same_predicted += u64::from(p);
            }
        }
        let (mut precision, mut recall) = (0.0, 0.0);
        for i in 0..n {
            let in_predicted = (0..n).filter(|&j| predicted[j] == predicted[i]).count();
            let in_true = (0..n).filter(|&j| truth[j] == truth[i]).count();
            let in_both = (0..n)
                .filter(|&j| predicted[j] == predicted[i] && truth[j] == truth[i])
                .count();
            precision += in_both as f64 / in_predicted as f64;
            recall += in_both as f64 / in_true as f64;
        }
        let ratio = |a: u64, b: u64| if b == 0 { 1.0 } else { a as f64 / b as f64 };
        (
            ratio(same_both, same_predicted),
            ratio(same_both, same_true),
            precision / n as f64,
            recall / n as f64,
        )
    }

    /// NMI straight from its definition over a dense joint distribution of small labels.
    fn reference_nmi(truth: &[u32], predicted: &[u32]) -> f64 {
        let n = truth.len() as f64;
        let rows = *truth.iter().max().unwrap() as usize + 1;
        let cols = *predicted.iter().max().unwrap() as usize + 1;
        let mut joint = vec![vec![0.0; cols]; rows];
        for (&t, &p) in truth.iter().zip(predicted) {
            joint[t as usize][p as usize] += 1.0 / n;
        }
        let p_t: Vec<f64> = joint.iter().map(|row| row.iter().sum()).collect();
        let p_p: Vec<f64> = (0..cols)
            .map(|j| joint.iter().map(|r| r[j]).sum())
            .collect();
        let h = |ps: &[f64]| {
            -ps.iter()
                .filter(|&&p| p > 0.0)
                .map(|p| p * p.ln())
                .sum::<f64>()
        };
        let mut mi = 0.0;
        for i in 0..rows {
            for j in 0..cols {
                if joint[i][j] > 0.0 {
                    mi += joint[i][j] * (joint[i][j] / (p_t[i] * p_p[j])).ln();
                }
            }
        }
        let denominator = h(&p_t) + h(&p_p);
        if denominator == 0.0 {
            1.0
        } else {
            2.0 * mi / denominator
        }
    }

    #[test]
    fn clustering_hand_computed_example() {
        // Items 0..5. True clusters T0 = {0,1,2}, T1 = {3,4}; predicted P0 = {0,1}, P1 = {2,3,4}.
        // Contingency cells: (T0,P0) = 2, (T0,P1) = 1, (T1,P1) = 2.
        //
        // Pairs (10 in all):
        //   same predicted: {0,1}, {2,3}, {2,4}, {3,4}                 -> 4
        //   same true:      {0,1}, {0,2}, {1,2}, {3,4}                 -> 4
        //   both:           {0,1}, {3,4}                               -> 2
        //   precision = 2/4, recall = 2/4, F = 1/2.
        //
        // BCubed, per item (same-label items in its predicted cluster / cluster size):
        //   item   predicted cluster   precision   recall (true size)
        //   0      {0,1}               2/2         2/3
        //   1      {0,1}               2/2         2/3
        //   2      {2,3,4}             1/3         1/3
        //   3      {2,3,4}             2/3         2/2
        //   4      {2,3,4}             2/3         2/2
        //   precision = (1 + 1 + 1/3 + 2/3 + 2/3) / 5 = (11/3) / 5 = 11/15
        //   recall    = (2/3 + 2/3 + 1/3 + 1 + 1) / 5 = (11/3) / 5 = 11/15, F = 11/15.
        let s = score(&[0, 0, 0, 1, 1], &[0, 0, 1, 1, 1]).unwrap();
        assert_close("pairwise precision", s.pairwise_precision, 0.5);
        assert_close("pairwise recall", s.pairwise_recall, 0.5);
        assert_close("pairwise f", s.pairwise_f, 0.5);
        assert_close("bcubed precision", s.bcubed_precision, 11.0 / 15.0);
        assert_close("bcubed recall", s.bcubed_recall, 11.0 / 15.0);
        assert_close("bcubed f", s.bcubed_f, 11.0 / 15.0);
        assert_eq!((s.items, s.true_clusters, s.predicted_clusters), (5, 2, 2));
    }

    #[test]
    fn clustering_hand_computed_split_example() {
        // A pure split, so precision and recall differ. True T0 = {0,1,2,3}, T1 = {4,5};
        // predicted P0 = {0,1}, P1 = {2,3}, P2 = {4,5}.
        //
        // Pairs: same predicted {0,1}, {2,3}, {4,5} -> 3, all of them truly same -> TP = 3;
        //   same true C(4,2) + C(2,2) = 6 + 1 = 7.
        //   precision = 3/3 = 1, recall = 3/7, F = 2 (3/7) / (10/7) = 3/5.
        // BCubed: every predicted cluster is pure, so precision_i = 1 for all items.
        //   recall: items 0..4 find 2 of their 4 -> 1/2 each; items 4, 5 find 2 of 2 -> 1.
        //   recall = (4 * 1/2 + 2 * 1) / 6 = 4/6 = 2/3, F = 2 (2/3) / (5/3) = 4/5.
        let s = score(&[0, 0, 0, 0, 1, 1], &[0, 0, 1, 1, 2, 2]).unwrap();
        assert_close("pairwise precision", s.pairwise_precision, 1.0);
        assert_close("pairwise recall", s.pairwise_recall, 3.0 / 7.0);
        assert_close("pairwise f", s.pairwise_f, 3.0 / 5.0);
        assert_close("bcubed precision", s.bcubed_precision, 1.0);
        assert_close("bcubed recall", s.bcubed_recall, 2.0 / 3.0);
        assert_close("bcubed f", s.bcubed_f, 4.0 / 5.0);
        assert_eq!((s.items, s.true_clusters, s.predicted_clusters), (6, 2, 3));
    }

    #[test]
    fn clustering_nmi_hand_computed() {
        // truth [0,0,1,1], predicted [0,0,0,1]; N = 4.
        // True sizes 2, 2; predicted sizes 3, 1; cells (T0,P0) = 2, (T1,P0) = 1, (T1,P1) = 1.
        //
        // H(T) = -(1/2 ln 1/2 + 1/2 ln 1/2) = ln 2
        // H(P) = -(3/4 ln 3/4 + 1/4 ln 1/4) = 2 ln 2 - (3/4) ln 3
        // I(T;P) = Σ p_ij ln(p_ij / (p_i p_j)):
        //   (T0,P0): 1/2 ln((1/2) / (1/2 * 3/4)) = 1/2 ln(4/3) = ln 2 - (1/2) ln 3
        //   (T1,P0): 1/4 ln((1/4) / (1/2 * 3/4)) = 1/4 ln(2/3) = (1/4) ln 2 - (1/4) ln 3
        //   (T1,P1): 1/4 ln((1/4) / (1/2 * 1/4)) = 1/4 ln 2
        //   I = (3/2) ln 2 - (3/4) ln 3
        // NMI = 2I / (H(T) + H(P)) = (3 ln 2 - (3/2) ln 3) / (3 ln 2 - (3/4) ln 3) ≈ 0.343711.
        let (ln2, ln3) = (2f64.ln(), 3f64.ln());
        let want = (3.0 * ln2 - 1.5 * ln3) / (3.0 * ln2 - 0.75 * ln3);
        let s = score(&[0, 0, 1, 1], &[0, 0, 0, 1]).unwrap();
        assert_close("nmi", s.nmi, want);
        assert!((s.nmi - 0.343711).abs() < 1e-6, "nmi {}", s.nmi);
    }

    #[test]
    fn clustering_perfect_scores_one_everywhere() {
        let truth = [3, 3, 7, 7, 7, 1, 9, 9];
        // The same partition under other label names is just as perfect.
        for predicted in [truth, [0, 0, 1, 1, 1, 2, 3, 3]] {
            let s = score(&truth, &predicted).unwrap();
            for (name, value) in [
                ("pairwise precision", s.pairwise_precision),
                ("pairwise recall", s.pairwise_recall),
                ("pairwise f", s.pairwise_f),
                ("bcubed precision", s.bcubed_precision),
                ("bcubed recall", s.bcubed_recall),
                ("bcubed f", s.bcubed_f),
                ("nmi", s.nmi),
            ] {
                assert_close(name, value, 1.0);
            }
            assert_eq!((s.items, s.true_clusters, s.predicted_clusters), (8, 4, 4));
        }
    }

    #[test]
    fn clustering_all_singletons() {
        // True sizes 3, 2, 1. Singletons merge nothing, so both precisions are 1; no true pair is
        // recovered, so pairwise recall is 0; each item finds only itself in its true cluster, so
        // BCubed recall is the mean of 1/|true cluster| = (3 * 1/3 + 2 * 1/2 + 1) / 6 = 1/2.
        let truth = [0, 0, 0, 1, 1, 2];
        let predicted = [10, 11, 12, 13, 14, 15];
        let s = score(&truth, &predicted).unwrap();
        assert_close("pairwise precision", s.pairwise_precision, 1.0);
        assert_close("pairwise recall", s.pairwise_recall, 0.0);
        assert_close("pairwise f", s.pairwise_f, 0.0);
        assert_close("bcubed precision", s.bcubed_precision, 1.0);
        assert_close("bcubed recall", s.bcubed_recall, 0.5);
        assert_close("bcubed f", s.bcubed_f, 2.0 * 0.5 / 1.5);
        // I(T;P) = H(T) when P is finer than T, and H(P) = ln 6.
        let h_t = -(0.5 * 0.5f64.ln()
            + (1.0 / 3.0) * (1.0f64 / 3.0).ln()
            + (1.0 / 6.0) * (1.0f64 / 6.0).ln());
        assert_close("nmi", s.nmi, 2.0 * h_t / (h_t + 6f64.ln()));
        assert_eq!((s.items, s.true_clusters, s.predicted_clusters), (6, 3, 6));

        // When the truth is all singletons too there is no true pair: recall is 1 by definition.
        let s = score(&predicted, &[1, 2, 3, 4, 5, 6]).unwrap();
        assert_close("pairwise recall", s.pairwise_recall, 1.0);
        assert_close("pairwise f", s.pairwise_f, 1.0);
    }

    #[test]
    fn clustering_everything_in_one_cluster() {
        // True sizes 3, 2, 1 (N = 6), all predicted together. Nothing is split, so both recalls
        // are 1. Pairwise precision = true pairs / all pairs = (3 + 1 + 0) / 15 = 4/15.
        // BCubed precision = Σ |T_i|² / N² = (9 + 4 + 1) / 36 = 14/36 = 7/18.
        // NMI: H(P) = 0, so I = 0 and NMI = 0 / H(T) = 0.
        let truth = [0, 0, 0, 1, 1, 2];
        let s = score(&truth, &[5; 6]).unwrap();
        assert_close("pairwise precision", s.pairwise_precision, 4.0 / 15.0);
        assert_close("pairwise recall", s.pairwise_recall, 1.0);
        assert_close(
            "pairwise f",
            s.pairwise_f,
            2.0 * (4.0 / 15.0) / (19.0 / 15.0),
        );
        assert_close("bcubed precision", s.bcubed_precision, 7.0 / 18.0);
        assert_close("bcubed recall", s.bcubed_recall, 1.0);
        assert_close("nmi", s.nmi, 0.0);
        assert_eq!((s.items, s.true_clusters, s.predicted_clusters), (6, 3, 1));

        // Both one cluster: a perfect match, NMI defined as 1 although both entropies are 0.
        let s = score(&[4; 5], &[8; 5]).unwrap();
        assert_close("nmi", s.nmi, 1.0);
        assert_close("pairwise f", s.pairwise_f, 1.0);
        assert_close("bcubed f", s.bcubed_f, 1.0);

        // A single item is a perfect (one-cluster) match with no pairs at all.
        let s = score(&[0], &[1]).unwrap();
        assert_eq!(
            (s.pairwise_precision, s.pairwise_recall, s.nmi),
            (1.0, 1.0, 1.0)
        );
        assert_eq!((s.bcubed_precision, s.bcubed_recall), (1.0, 1.0));
    }

    #[test]
    fn clustering_invariant_to_relabelling_and_symmetric() {
        let mut rng = Rng::new(7);
        let truth: Vec<u32> = (0..300).map(|_| rng.below(12) as u32).collect();
        let predicted: Vec<u32> = (0..300).map(|_| rng.below(9) as u32).collect();
        let base = score(&truth, &predicted).unwrap();
        // Multiplying by an odd number is a bijection on u32, so these rename labels only
        // (and scramble their order, which the sorted contingency table must not care about).
        let rename = |labels: &[u32], k: u32| -> Vec<u32> {
            labels
                .iter()
                .map(|&l| l.wrapping_mul(k).wrapping_add(17))
                .collect()
        };
        for (t, p) in [
            (rename(&truth, 2654435761), predicted.clone()),
            (truth.clone(), rename(&predicted, 40503)),
            (rename(&truth, 3), rename(&predicted, u32::MAX)),
        ] {
            let s = score(&t, &p).unwrap();
            assert_close(
                "pairwise precision",
                s.pairwise_precision,
                base.pairwise_precision,
            );
            assert_close("pairwise recall", s.pairwise_recall, base.pairwise_recall);
            assert_close(
                "bcubed precision",
                s.bcubed_precision,
                base.bcubed_precision,
            );
            assert_close("bcubed recall", s.bcubed_recall, base.bcubed_recall);
            assert_close("nmi", s.nmi, base.nmi);
            assert_eq!(s.true_clusters, base.true_clusters);
            assert_eq!(s.predicted_clusters, base.predicted_clusters);
        }
        // Swapping the roles of truth and prediction swaps precision and recall; NMI is symmetric.
        let swapped = score(&predicted, &truth).unwrap();
        assert_close(
            "swapped pairwise",
            swapped.pairwise_precision,
            base.pairwise_recall,
        );
        assert_close(
            "swapped pairwise",
            swapped.pairwise_recall,
            base.pairwise_precision,
        );
        assert_close(
            "swapped bcubed",
            swapped.bcubed_precision,
            base.bcubed_recall,
        );
        assert_close(
            "swapped bcubed",
            swapped.bcubed_recall,
            base.bcubed_precision,
        );
        assert_close("swapped nmi", swapped.nmi, base.nmi);
    }

    #[test]
    fn clustering_matches_brute_force_on_random_labelings() {
        let mut rng = Rng::new(2024);
        // Label ranges from "almost everything together" to "almost all singletons".
        for (true_range, predicted_range) in
            [(5, 5), (20, 3), (3, 40), (60, 150), (1, 7), (200, 200)]
        {
            let truth: Vec<u32> = (0..200).map(|_| rng.below(true_range) as u32).collect();
            let predicted: Vec<u32> = (0..200)
                .map(|_| rng.below(predicted_range) as u32)
                .collect();
            let s = score(&truth, &predicted).unwrap();
            let (pp, pr, bp, br) = brute_force(&truth, &predicted);
            let context = format!("ranges {true_range}/{predicted_range}");
            assert_close(
                &format!("pairwise precision, {context}"),
                s.pairwise_precision,
                pp,
            );
            assert_close(
                &format!("pairwise recall, {context}"),
                s.pairwise_recall,
                pr,
            );
            assert_close(
                &format!("bcubed precision, {context}"),
                s.bcubed_precision,
                bp,
            );
            assert_close(&format!("bcubed recall, {context}"), s.bcubed_recall, br);
            let nmi = reference_nmi(&truth, &predicted).clamp(0.0, 1.0);
            assert_close(&format!("nmi, {context}"), s.nmi, nmi);
            for value in [s.pairwise_f, s.bcubed_f, s.nmi] {
                assert!(
                    (0.0..=1.0).contains(&value),
                    "{context}: {value} out of [0, 1]"
                );
            }
        }
    }

    #[test]
    fn clustering_a_million_items() {
        // True clusters of 10 consecutive items, each predicted as two halves of 5: pure splits.
        // Pairs: TP = same predicted = 200,000 C(5,2) = 2,000,000; same true = 100,000 C(10,2) =
        // 4,500,000; precision 1, recall 4/9. BCubed recall: every item finds 5 of its 10 -> 1/2.
        // An O(n²) implementation would visit 5 * 10^11 pairs and never finish here.
        let n = 1_000_000u32;
        let truth: Vec<u32> = (0..n).map(|i| i / 10).collect();
        let predicted: Vec<u32> = (0..n).map(|i| (i / 5).wrapping_mul(2654435761)).collect();
        let s = score(&truth, &predicted).unwrap();
        assert_close("pairwise precision", s.pairwise_precision, 1.0);
        assert_close("pairwise recall", s.pairwise_recall, 4.0 / 9.0);
        assert_close("bcubed precision", s.bcubed_precision, 1.0);
        assert_close("bcubed recall", s.bcubed_recall, 0.5);
        // I = H(T) = ln 100,000 (P refines T); H(P) = ln 200,000.
        let want_nmi = 2.0 * 1e5f64.ln() / (1e5f64.ln() + 2e5f64.ln());
        assert!(
            (s.nmi - want_nmi).abs() < 1e-9,
            "nmi {} want {want_nmi}",
            s.nmi
        );
        assert_eq!(
            (s.items, s.true_clusters, s.predicted_clusters),
            (1_000_000, 100_000, 200_000)
        );
    }

    #[test]
    fn clustering_errors() {
        assert_eq!(
            score(&[0, 1, 2], &[0, 1]),
            Err(ClusteringError::LengthMismatch {
                truth: 3,
                predicted: 2
            })
        );
        assert_eq!(
            score(&[], &[0]),
            Err(ClusteringError::LengthMismatch {
                truth: 0,
                predicted: 1
            })
        );
        assert_eq!(score(&[], &[]), Err(ClusteringError::NoItems));
        // Extreme label values are ordinary labels.
        // True {0,2}, {1}; predicted {0,1}, {2}: the one predicted pair is wrong, the one true
        // pair is missed.
        let s = score(&[u32::MAX, 0, u32::MAX], &[0, 0, u32::MAX]).unwrap();
        assert_close("pairwise f", s.pairwise_f, 0.0);
        assert_eq!((s.items, s.true_clusters, s.predicted_clusters), (3, 2, 2));
    }
}
