//! The Smooth-AP sampler: each batch holds `batch_size / P` classes with exactly `P` samples
//! each, no class twice in a batch and no sample twice in an epoch.

use anyhow::{ensure, Result};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

/// Draws the batches of each epoch from a fixed list of labels.
///
/// Each epoch shuffles the samples of every class and cuts them into groups of `P`; a class
/// with fewer than `P` samples is skipped, and samples beyond a multiple of `P` are unused that
/// epoch. The groups are then dealt into as many batches as the no-class-twice rule allows
/// (a class with many more groups than there are batches keeps only one group per batch), and
/// groups that do not fill a whole batch are dropped.
#[derive(Debug, Clone)]
pub struct PkSampler {
    /// Sample indices of each class that has at least `P` of them, in ascending label order.
    classes: Vec<Vec<usize>>,
    p: usize,
    classes_per_batch: usize,
    seed: u64,
}

impl PkSampler {
    /// A sampler over `labels` (one per sample) with `p` samples per class and batches of
    /// `batch_size` samples, which must be a positive multiple of `p`.
    pub fn new(labels: &[i64], p: usize, batch_size: usize, seed: u64) -> Result<Self> {
        ensure!(p > 0, "P (samples per class) must be positive");
        ensure!(
            batch_size >= p && batch_size.is_multiple_of(p),
            "the batch size {batch_size} is not a positive multiple of P = {p}"
        );
        let mut by_label: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
        for (i, &label) in labels.iter().enumerate() {
            by_label.entry(label).or_default().push(i);
        }
        let classes = by_label.into_values().filter(|s| s.len() >= p).collect();
        Ok(PkSampler {
            classes,
            p,
            classes_per_batch: batch_size / p,
            seed,
        })
    }

    /// Number of batches every epoch yields (the same each epoch: only their contents change).
    pub fn batches_per_epoch(&self) -> usize {
        let groups: Vec<usize> = self.classes.iter().map(|s| s.len() / self.p).collect();
        max_batches(&groups, self.classes_per_batch)
    }

    /// The batches of epoch `epoch`: lists of sample indices, `P` consecutive indices per class.
    ///
    /// The shuffle depends only on the seed and the epoch number (each epoch is its own ChaCha
    /// stream), so a resumed run sees the batches an uninterrupted one would have seen.
    pub fn epoch(&self, epoch: usize) -> Vec<Vec<usize>> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(epoch as u64);
        let (p, c) = (self.p, self.classes_per_batch);

        // Every class cut into groups of P after its own shuffle; the remainder sits out.
        let groups: Vec<Vec<Vec<usize>>> = self
            .classes
            .iter()
            .map(|samples| {
                let mut shuffled = samples.clone();
                shuffled.shuffle(&mut rng);
                shuffled.chunks_exact(p).map(<[usize]>::to_vec).collect()
            })
            .collect();
        let counts: Vec<usize> = groups.iter().map(Vec::len).collect();
        let b = max_batches(&counts, c);
        if b == 0 {
            return Vec::new();
        }

        // At most b groups per class (the first b of a shuffled class are a random choice),
        // then a random b * c of all those: no class is left with more than b groups.
        let mut picked: Vec<(usize, usize)> = counts
            .iter()
            .enumerate()
            .flat_map(|(class, &n)| (0..n.min(b)).map(move |g| (class, g)))
            .collect();
        picked.shuffle(&mut rng);
        picked.truncate(b * c);

        // Deal the groups class by class, in a random class order, each group of a class to a
        // different batch among those with the most free places (ties at random). Ryser's
        // construction for 0-1 matrices with given row and column sums: it fills every batch
        // whenever no class has more groups than there are batches and the total is b * c,
        // which the picking above ensures. Random ties keep the classes a class meets in its
        // batches different from batch to batch.
        let mut by_class = vec![Vec::new(); groups.len()];
        for &(class, g) in &picked {
            by_class[class].push(g);
        }
        let mut order: Vec<usize> = (0..groups.len()).collect();
        order.shuffle(&mut rng);
        // free[r]: the batches with r free places.
        let mut free: Vec<Vec<usize>> = vec![Vec::new(); c + 1];
        free[c] = (0..b).collect();
        let mut most = c;
        let mut batches = vec![Vec::with_capacity(b * p); b];
        let mut dealt = Vec::new();
        for class in order {
            for &g in &by_class[class] {
                while free[most].is_empty() {
                    most -= 1;
                }
                assert!(most > 0, "Ryser's construction cannot run out of places");
                let at = rng.gen_range(0..free[most].len());
                let batch = free[most].swap_remove(at);
                batches[batch].extend_from_slice(&groups[class][g]);
                dealt.push((batch, most - 1));
            }
            // Back only after the whole class, so that no batch takes the class twice.
            for (batch, places) in dealt.drain(..) {
                free[places].push(batch);
            }
        }
        batches.shuffle(&mut rng);
        batches
    }
}

/// The largest number of batches `b` such that `b * c` groups can be dealt with no class twice
/// in a batch: each class gives at most `b` groups, so `b` works when
/// `sum(min(groups, b)) >= b * c`. The difference of the two sides is concave in `b` and 0 at
/// `b = 0`, so the feasible `b` form an interval from 0: binary search.
fn max_batches(groups: &[usize], c: usize) -> usize {
    let feasible = |b: usize| groups.iter().map(|&g| g.min(b)).sum::<usize>() >= b * c;
    let (mut lo, mut hi) = (0, groups.iter().sum::<usize>() / c);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if feasible(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}
