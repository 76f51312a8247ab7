//! The compact codes of a large gallery: every face also as 4 bits a dimension (256 bytes for a
//! 512-d face against 2 KiB of float32), scanned first; the best few hundred are then re-ranked
//! on their float32 rows ([`super::search::FaceMatrix::rank_media_compact`]).
//!
//! Why 4 bits, not 8: one query over a million faces is a read of memory (the exact scan reads
//! its 2 GB at 39 GB/s on this machine's two cores, docs/benchmarks.md, "Search"): 8-bit codes are 512 MB,
//! 13 ms of reading alone against the 20 ms goal; 4-bit codes are 256 MB. Their error is far
//! below the gaps between the scores that decide a top 10 (the recall the benchmark measures).
//!
//! Each dimension is cut into 16 levels over its mean ± 3 standard deviations across the gallery
//! (values outside, about 0.3% of them, take the end levels): a face's value `x_d` is stored as
//! `c_d`, with `x_d ≈ low_d + c_d step_d`. A query `q` then scores
//! `sum q_d x_d ≈ sum q_d low_d + sum c_d (step_d q_d)`, and the first term is the same for every
//! face: so faces are ranked by `sum c_d w_d`, with `w_d` the query's `step_d q_d` rounded to
//! 8 bits, an integer dot product ([`nibble::dots`]).

use super::top::Best;
use crate::kernels::nibble;
use rayon::prelude::*;

/// Rows scanned per parallel task (1 MiB of 512-d codes).
const CHUNK_ROWS: usize = 4096;

/// Levels a dimension's range is cut into, less one.
const TOP_LEVEL: f32 = 15.0;

/// Standard deviations either side of the mean that the levels span.
const SPAN: f32 = 3.0;

/// 4-bit codes of every row of a matrix of unit vectors.
#[derive(Debug, Clone)]
pub struct Codes {
    dims: usize,
    low: Vec<f32>,
    step: Vec<f32>,
    bytes: Vec<u8>,
}

impl Codes {
    /// Codes for the rows of `data`, `dims` floats each, with the levels fitted to them.
    pub fn build(data: &[f32], dims: usize) -> Codes {
        assert!(dims > 0 && data.len().is_multiple_of(dims), "whole rows");
        let rows = data.len() / dims;
        let (sum, squares) = data
            .par_chunks(CHUNK_ROWS * dims)
            .map(|chunk| {
                let (mut sum, mut squares) = (vec![0f64; dims], vec![0f64; dims]);
                for row in chunk.chunks_exact(dims) {
                    for (d, &x) in row.iter().enumerate() {
                        sum[d] += f64::from(x);
                        squares[d] += f64::from(x) * f64::from(x);
                    }
                }
                (sum, squares)
            })
            .reduce(
                || (vec![0f64; dims], vec![0f64; dims]),
                |(mut s, mut q), (s2, q2)| {
                    s.iter_mut().zip(&s2).for_each(|(a, b)| *a += b);
                    q.iter_mut().zip(&q2).for_each(|(a, b)| *a += b);
                    (s, q)
                },
            );
        let n = rows.max(1) as f64;
        let (mut low, mut step) = (Vec::with_capacity(dims), Vec::with_capacity(dims));
        for d in 0..dims {
            let mean = sum[d] / n;
            let sd = (squares[d] / n - mean * mean).max(0.0).sqrt() as f32;
            // A constant dimension still gets a positive step: its codes are then all alike.
            let s = (2.0 * SPAN * sd / TOP_LEVEL).max(f32::MIN_POSITIVE);
            low.push(mean as f32 - SPAN * sd);
            step.push(s);
        }
        let row_bytes = nibble::padded(dims) / 2;
        let mut bytes = vec![0u8; rows * row_bytes];
        bytes
            .par_chunks_mut(row_bytes)
            .zip(data.par_chunks(dims))
            .for_each_init(
                || vec![0u8; dims],
                |codes, (packed, row)| {
                    for (d, (c, &x)) in codes.iter_mut().zip(row).enumerate() {
                        *c = ((x - low[d]) / step[d]).round().clamp(0.0, TOP_LEVEL) as u8;
                    }
                    nibble::pack(codes, packed);
                },
            );
        Codes {
            dims,
            low,
            step,
            bytes,
        }
    }

    /// Rows coded.
    pub fn len(&self) -> usize {
        self.bytes.len() / self.bytes_per_face()
    }

    /// True when no row is coded.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Bytes of codes a face takes.
    pub fn bytes_per_face(&self) -> usize {
        nibble::padded(self.dims) / 2
    }

    /// The values dimension `d`'s lowest and highest levels stand for.
    pub fn range(&self, d: usize) -> (f32, f32) {
        (self.low[d], self.low[d] + TOP_LEVEL * self.step[d])
    }

    /// The value the codes give dimension `d` of row `row` (its level's value).
    pub fn value(&self, row: usize, d: usize) -> f32 {
        let packed = &self.bytes[row * self.bytes_per_face()..][..self.bytes_per_face()];
        self.low[d] + f32::from(nibble::code(packed, d)) * self.step[d]
    }

    /// The query's weights: `step_d q_d`, scaled so the largest is ±127 and rounded, padded
    /// with zeros to whole blocks.
    pub fn weights(&self, query: &[f32]) -> Vec<i8> {
        assert_eq!(query.len(), self.dims, "query size");
        let w: Vec<f32> = query.iter().zip(&self.step).map(|(q, s)| q * s).collect();
        let largest = w.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = if largest > 0.0 { 127.0 / largest } else { 0.0 };
        let mut out = vec![0i8; nibble::padded(self.dims)];
        for (o, v) in out.iter_mut().zip(&w) {
            *o = (v * scale).round() as i8;
        }
        out
    }

    /// The `keep` rows the codes score highest for `query`, best first (ties by row).
    pub fn candidates(&self, query: &[f32], keep: usize) -> Vec<u32> {
        let weights = self.weights(query);
        let row_bytes = self.bytes_per_face();
        self.bytes
            .par_chunks(CHUNK_ROWS * row_bytes)
            .enumerate()
            .fold(
                || (Best::new(keep), vec![0i32; CHUNK_ROWS]),
                |(mut best, mut scores), (chunk, rows)| {
                    let n = rows.len() / row_bytes;
                    nibble::dots(rows, &weights, &mut scores[..n]);
                    let first = chunk * CHUNK_ROWS;
                    for (i, &s) in scores[..n].iter().enumerate() {
                        best.offer(s, (first + i) as u32);
                    }
                    (best, scores)
                },
            )
            .map(|(best, _)| best)
            .reduce(|| Best::new(keep), Best::merge)
            .into_sorted()
            .into_iter()
            .map(|(_, row)| row)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_are_the_rows_the_integer_scores_rank_first() {
        let (dims, rows) = (70, 3 * CHUNK_ROWS + 11);
        let mut rng = smoothface_tests::Rng::new(5);
        let data: Vec<f32> = (0..dims * rows).map(|_| rng.normal() as f32).collect();
        let codes = Codes::build(&data, dims);
        let query: Vec<f32> = (0..dims).map(|_| rng.normal() as f32).collect();
        let w = codes.weights(&query);
        assert_eq!(w.len(), 128);
        assert!(w[dims..].iter().all(|&v| v == 0));
        assert_eq!(w.iter().map(|v| v.unsigned_abs()).max(), Some(127));
        // Scores from the definition: each row's codes, read back one by one, times the weights.
        let row_bytes = codes.bytes_per_face();
        let mut reference: Vec<(i32, u32)> = (0..rows)
            .map(|r| {
                let packed = &codes.bytes[r * row_bytes..][..row_bytes];
                let s = (0..dims)
                    .map(|d| i32::from(nibble::code(packed, d)) * i32::from(w[d]))
                    .sum();
                (s, r as u32)
            })
            .collect();
        reference.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let expect: Vec<u32> = reference.iter().take(300).map(|r| r.1).collect();
        assert_eq!(codes.candidates(&query, 300), expect);
    }
}
