//! Ranking the gallery for a person from all of their faces, not one: how the similarities of a
//! gallery face to each of the person's faces are fused into one score.
//!
//! `eval people` measures every fusion by mAP on labelled photos; [`Fusion::DEFAULT`] is the
//! best there (docs/benchmarks.md, "People"). Mean of scores and centroid rank identically (both are
//! monotone in the dot product with the sum of the person's faces); both are kept so the
//! evaluation shows it.

use ndarray::{linalg::general_mat_mul, Array2, ArrayView2};
use rayon::prelude::*;
use serde::Serialize;
use smoothface_shared::embedding::{dot, l2_normalize};

/// How a gallery face's similarities to a person's faces become one score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fusion {
    /// The most similar of the person's faces.
    Best,
    /// The mean similarity over the person's faces.
    MeanOfScores,
    /// Similarity to the person's normalised mean face.
    Centroid,
    /// The mean of the [`TOP_K`] highest similarities.
    TopKMean,
}

/// Faces averaged by [`Fusion::TopKMean`].
pub const TOP_K: usize = 3;

impl Fusion {
    /// Every fusion, in the order `eval people` reports them.
    pub const ALL: [Fusion; 4] = [
        Fusion::Best,
        Fusion::MeanOfScores,
        Fusion::Centroid,
        Fusion::TopKMean,
    ];
    /// The fusion `search --person` uses: the best by mAP on `lfw-devtrain`.
    pub const DEFAULT: Fusion = Fusion::TopKMean;

    /// The name used in JSON and tables.
    pub fn name(self) -> &'static str {
        match self {
            Fusion::Best => "best_face",
            Fusion::MeanOfScores => "mean_of_scores",
            Fusion::Centroid => "centroid",
            Fusion::TopKMean => "top3_mean",
        }
    }
}

/// Gallery rows scored per parallel task.
const CHUNK_ROWS: usize = 2048;

/// The fused score of every row of `gallery` (`n x dim`) for the person whose faces are the
/// rows of `person` (`m x dim`, m >= 1).
pub fn scores(gallery: &[f32], person: &[f32], dim: usize, fusion: Fusion) -> Vec<f32> {
    let m = person.len() / dim;
    if m == 0 {
        return vec![f32::NEG_INFINITY; gallery.len() / dim];
    }
    if fusion == Fusion::Centroid {
        let mut centre = vec![0.0f32; dim];
        for face in person.chunks_exact(dim) {
            centre.iter_mut().zip(face).for_each(|(c, x)| *c += x);
        }
        l2_normalize(&mut centre);
        return gallery
            .par_chunks(dim)
            .map(|row| dot(row, &centre))
            .collect();
    }
    let p = ArrayView2::from_shape((m, dim), person).expect("m x dim");
    gallery
        .par_chunks(CHUNK_ROWS * dim)
        .flat_map_iter(|chunk| {
            let g = ArrayView2::from_shape((chunk.len() / dim, dim), chunk).expect("rows x dim");
            let mut sims = Array2::zeros((g.nrows(), m));
            general_mat_mul(1.0, &g, &p.t(), 0.0, &mut sims);
            sims.rows()
                .into_iter()
                .map(|row| fuse(row.as_slice().expect("row-major"), fusion))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// One gallery face's similarities to the person's faces, fused.
pub fn fuse(sims: &[f32], fusion: Fusion) -> f32 {
    match fusion {
        Fusion::Best => sims.iter().copied().fold(f32::NEG_INFINITY, f32::max),
        Fusion::MeanOfScores | Fusion::Centroid => sims.iter().sum::<f32>() / sims.len() as f32,
        Fusion::TopKMean => {
            let mut top = [f32::NEG_INFINITY; TOP_K];
            for &s in sims {
                if s > top[TOP_K - 1] {
                    top[TOP_K - 1] = s;
                    top.sort_by(|a, b| b.total_cmp(a));
                }
            }
            let k = sims.len().min(TOP_K);
            top[..k].iter().sum::<f32>() / k as f32
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fusions_by_hand() {
        let sims = [0.2, 0.9, 0.5, 0.7];
        assert_eq!(fuse(&sims, Fusion::Best), 0.9);
        assert!((fuse(&sims, Fusion::MeanOfScores) - 0.575).abs() < 1e-6);
        assert!((fuse(&sims, Fusion::TopKMean) - (0.9 + 0.7 + 0.5) / 3.0).abs() < 1e-6);
        assert!((fuse(&[0.4, 0.6], Fusion::TopKMean) - 0.5).abs() < 1e-6);
    }

    #[test]
    fn gallery_scores_match_a_loop_and_centroid_ranks_as_the_mean() {
        let dim = 3;
        let unit = |v: [f32; 3]| {
            let mut v = v.to_vec();
            l2_normalize(&mut v);
            v
        };
        let person: Vec<f32> = [[1.0, 0.1, 0.0], [0.9, 0.3, 0.1]]
            .into_iter()
            .flat_map(unit)
            .collect();
        let gallery: Vec<f32> = (0..5000)
            .flat_map(|i| unit([(i % 7) as f32 - 3.0, (i % 5) as f32 - 2.0, 1.0]))
            .collect();
        for fusion in Fusion::ALL {
            let got = scores(&gallery, &person, dim, fusion);
            for (i, row) in gallery.chunks_exact(dim).enumerate().step_by(97) {
                let sims: Vec<f32> = person.chunks_exact(dim).map(|p| dot(p, row)).collect();
                if fusion != Fusion::Centroid {
                    assert!(
                        (got[i] - fuse(&sims, fusion)).abs() < 1e-5,
                        "{fusion:?} row {i}"
                    );
                }
            }
        }
        let (mean, centre) = (
            scores(&gallery, &person, dim, Fusion::MeanOfScores),
            scores(&gallery, &person, dim, Fusion::Centroid),
        );
        let order = |s: &[f32]| {
            let mut o: Vec<usize> = (0..s.len()).collect();
            o.sort_by(|&a, &b| s[b].total_cmp(&s[a]).then(a.cmp(&b)));
            o
        };
        // Equal up to rounding: compare the order of clearly different scores.
        let (om, oc) = (order(&mean), order(&centre));
        assert_eq!(
            om[0..5]
                .iter()
                .map(|&i| (mean[i] * 1e4).round())
                .collect::<Vec<_>>(),
            oc[0..5]
                .iter()
                .map(|&i| (mean[i] * 1e4).round())
                .collect::<Vec<_>>()
        );
    }
}
