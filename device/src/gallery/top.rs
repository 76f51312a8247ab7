//! The best few of a stream of scored rows, in bounded memory: kept loosely (up to twice the
//! number wanted) and cut back by selection, so that past the first rows nearly every row costs
//! one comparison with the floor. Partial results of parallel scans merge.

use std::cmp::Ordering;

/// The `keep` best `(score, row)` pairs offered so far.
#[derive(Debug, Clone)]
pub struct Best<S> {
    keep: usize,
    floor: Option<S>,
    items: Vec<(S, u32)>,
}

/// Best first; equal scores by row, so a result does not depend on how a scan was split.
pub fn best_first<S: PartialOrd>(a: &(S, u32), b: &(S, u32)) -> Ordering {
    b.0.partial_cmp(&a.0)
        .unwrap_or(Ordering::Equal)
        .then(a.1.cmp(&b.1))
}

impl<S: Copy + PartialOrd> Best<S> {
    /// Keeps the best `keep`.
    pub fn new(keep: usize) -> Best<S> {
        Best {
            keep,
            floor: None,
            items: Vec::with_capacity(2 * keep),
        }
    }

    /// Offers one scored row.
    #[inline]
    pub fn offer(&mut self, score: S, row: u32) {
        if self.keep == 0 || self.floor.is_some_and(|floor| score <= floor) {
            return;
        }
        self.items.push((score, row));
        if self.items.len() >= 2 * self.keep {
            self.cut();
        }
    }

    /// Cuts back to the best `keep`; the worst of those becomes the floor.
    fn cut(&mut self) {
        if self.items.len() > self.keep {
            self.items.select_nth_unstable_by(self.keep - 1, best_first);
            self.items.truncate(self.keep);
            self.floor = Some(self.items[self.keep - 1].0);
        }
    }

    /// The best of both.
    pub fn merge(mut self, other: Best<S>) -> Best<S> {
        for (score, row) in other.items {
            self.offer(score, row);
        }
        self
    }

    /// The best `keep` (fewer if fewer were offered), best first.
    pub fn into_sorted(mut self) -> Vec<(S, u32)> {
        self.cut();
        self.items.sort_by(best_first);
        self.items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distinct pseudo-random scores.
    fn scores(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as u64 * 2_654_435_761) % 1_000_003) as f32)
            .collect()
    }

    #[test]
    fn keeps_what_a_full_sort_puts_first_however_the_stream_is_split() {
        let s = scores(10_000);
        let mut sorted: Vec<(f32, u32)> =
            s.iter().enumerate().map(|(i, &v)| (v, i as u32)).collect();
        sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
        for keep in [1, 7, 100, 20_000] {
            let expect: Vec<_> = sorted.iter().take(keep).copied().collect();
            let mut whole = Best::new(keep);
            s.iter()
                .enumerate()
                .for_each(|(i, &v)| whole.offer(v, i as u32));
            assert_eq!(whole.into_sorted(), expect, "keep {keep}");
            // Three parts, merged as a parallel scan's would be.
            let parts: Vec<Best<f32>> = s
                .chunks(3_333)
                .enumerate()
                .map(|(c, chunk)| {
                    let mut b = Best::new(keep);
                    for (i, &v) in chunk.iter().enumerate() {
                        b.offer(v, (c * 3_333 + i) as u32);
                    }
                    b
                })
                .collect();
            let merged = parts.into_iter().reduce(Best::merge).unwrap();
            assert_eq!(merged.into_sorted(), expect, "keep {keep}, merged");
        }
        assert!(Best::<f32>::new(0).into_sorted().is_empty());
    }
}
