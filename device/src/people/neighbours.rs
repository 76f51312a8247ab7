//! Nearest neighbours of faces by cosine similarity, the first step of every grouping.
//!
//! Exact: every query against every face, one block matrix product per batch of queries, each a
//! `matrixmultiply` GEMM (through ndarray), which runs the dot products at several times the
//! speed of a loop over pairs. The grouping keeps the number of faces searched at once bounded
//! (it groups large galleries in batches), so no approximate index is needed, and none of its
//! misses can split a person.

use ndarray::{linalg::general_mat_mul, Array2, ArrayView2};
use rayon::prelude::*;

/// Queries per block of the exact search.
const QUERY_BLOCK: usize = 256;

/// One neighbour: the row of the face in the searched set and its cosine similarity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbour {
    /// Row index in the searched set.
    pub row: u32,
    /// Cosine similarity to the query.
    pub sim: f32,
}

/// For each query row, up to `k` other rows of `data` (`n x dim`, unit rows) with similarity at
/// least `floor`, most similar first (ties by row). A query never lists itself.
pub fn neighbours(
    data: &[f32],
    dim: usize,
    queries: &[u32],
    k: usize,
    floor: f32,
) -> Vec<Vec<Neighbour>> {
    let n = data.len() / dim.max(1);
    if n == 0 || dim == 0 || k == 0 {
        return vec![Vec::new(); queries.len()];
    }
    let mut found = exact(data, dim, queries, floor);
    found.par_iter_mut().for_each(|hits| top_k(hits, k));
    found
}

/// Keeps the `k` most similar, sorted, ties by row for determinism.
fn top_k(hits: &mut Vec<Neighbour>, k: usize) {
    let order = |a: &Neighbour, b: &Neighbour| b.sim.total_cmp(&a.sim).then(a.row.cmp(&b.row));
    if hits.len() > k {
        hits.select_nth_unstable_by(k - 1, order);
        hits.truncate(k);
    }
    hits.sort_by(order);
}

/// The rows `rows` of `data`, gathered into one contiguous matrix.
pub(crate) fn gather(data: &[f32], dim: usize, rows: &[u32]) -> Array2<f32> {
    let mut out = Array2::zeros((rows.len(), dim));
    for (mut dst, &r) in out.rows_mut().into_iter().zip(rows) {
        let r = r as usize;
        dst.as_slice_mut()
            .expect("standard layout")
            .copy_from_slice(&data[r * dim..(r + 1) * dim]);
    }
    out
}

/// `a · bᵀ` for row-major `a` (`m x dim`) and `b` (`n x dim`).
pub(crate) fn similarities(a: ArrayView2<f32>, b: ArrayView2<f32>) -> Array2<f32> {
    let mut out = Array2::zeros((a.nrows(), b.nrows()));
    general_mat_mul(1.0, &a, &b.t(), 0.0, &mut out);
    out
}

/// Every query against every row, in parallel blocks of queries.
fn exact(data: &[f32], dim: usize, queries: &[u32], floor: f32) -> Vec<Vec<Neighbour>> {
    let n = data.len() / dim;
    let all = ArrayView2::from_shape((n, dim), data).expect("n x dim");
    queries
        .par_chunks(QUERY_BLOCK)
        .flat_map_iter(|block| {
            let sims = similarities(gather(data, dim, block).view(), all);
            block
                .iter()
                .zip(sims.rows())
                .map(|(&q, row)| {
                    row.iter()
                        .enumerate()
                        .filter(|&(r, &s)| s >= floor && r as u32 != q)
                        .map(|(r, &s)| Neighbour {
                            row: r as u32,
                            sim: s,
                        })
                        .collect()
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::people::tests::clustered;
    use smoothface_shared::embedding::dot;

    fn brute_force(data: &[f32], dim: usize, q: u32, k: usize, floor: f32) -> Vec<Neighbour> {
        let qv = &data[q as usize * dim..(q as usize + 1) * dim];
        let mut all: Vec<Neighbour> = data
            .chunks_exact(dim)
            .enumerate()
            .filter(|&(r, _)| r as u32 != q)
            .map(|(r, v)| Neighbour {
                row: r as u32,
                sim: dot(qv, v),
            })
            .filter(|h| h.sim >= floor)
            .collect();
        top_k(&mut all, k);
        all
    }

    #[test]
    fn exact_search_matches_brute_force() {
        let dim = 16;
        let data = clustered(30, 7, dim, 0.8, 1);
        let queries: Vec<u32> = (0..210).step_by(3).collect();
        let got = neighbours(&data, dim, &queries, 5, 0.2);
        for (&q, hits) in queries.iter().zip(&got) {
            let want = brute_force(&data, dim, q, 5, 0.2);
            assert_eq!(
                hits.iter().map(|h| h.row).collect::<Vec<_>>(),
                want.iter().map(|h| h.row).collect::<Vec<_>>(),
                "query {q}"
            );
            for (h, w) in hits.iter().zip(&want) {
                assert!((h.sim - w.sim).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn empty_inputs_give_empty_lists() {
        assert_eq!(
            neighbours(&[], 4, &[], 3, 0.0),
            Vec::<Vec<Neighbour>>::new()
        );
        let data = [1.0, 0.0];
        assert_eq!(neighbours(&data, 2, &[0], 3, -1.0), vec![vec![]]);
    }
}
