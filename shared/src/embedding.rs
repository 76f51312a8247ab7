//! Embedding math: L2 normalisation and cosine similarity of face vectors.

/// Dot product of two vectors of the same length. Written over fixed-size chunks so the compiler
/// vectorises it: a gallery search is a long run of these.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "vectors differ in length");
    const LANES: usize = 16;
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Scales `v` to unit length in place and returns its former norm. A zero vector stays zero.
pub fn l2_normalize(v: &mut [f32]) -> f32 {
    let norm = dot(v, v).sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    norm
}

/// Cosine similarity; for unit vectors this is their dot product.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (na, nb) = (dot(a, a).sqrt(), dot(b, b).sqrt());
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    dot(a, b) / (na * nb)
}

/// The normalised mean of unit vectors: one vector for a set of views of the same face.
pub fn mean_embedding<'a>(vectors: impl IntoIterator<Item = &'a [f32]>) -> Option<Vec<f32>> {
    let mut sum: Option<Vec<f32>> = None;
    for v in vectors {
        match &mut sum {
            None => sum = Some(v.to_vec()),
            Some(s) => s.iter_mut().zip(v).for_each(|(s, x)| *s += x),
        }
    }
    let mut s = sum?;
    l2_normalize(&mut s);
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_hand_values_across_chunk_boundaries() {
        let a: Vec<f32> = (1..=19).map(|i| i as f32).collect();
        let b = vec![1.0f32; 19];
        assert_eq!(dot(&a, &b), 190.0); // 1 + ... + 19
        assert_eq!(dot(&[3.0, 4.0], &[3.0, 4.0]), 25.0);
    }

    #[test]
    fn normalise_gives_unit_length_and_returns_the_norm() {
        let mut v = vec![3.0, 4.0];
        assert_eq!(l2_normalize(&mut v), 5.0);
        assert_eq!(v, [0.6, 0.8]);
        let mut z = vec![0.0; 3];
        assert_eq!(l2_normalize(&mut z), 0.0);
        assert_eq!(z, [0.0; 3]);
    }

    #[test]
    fn cosine_by_hand() {
        assert!((cosine(&[1.0, 0.0], &[1.0, 1.0]) - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        assert_eq!(cosine(&[1.0, 0.0], &[0.0, 2.0]), 0.0);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
    }

    #[test]
    fn mean_of_two_orthogonal_units_is_the_diagonal() {
        let m = mean_embedding([&[1.0f32, 0.0][..], &[0.0, 1.0][..]]).unwrap();
        assert!((m[0] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        assert!((m[1] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        assert!(mean_embedding(std::iter::empty::<&[f32]>()).is_none());
    }
}
