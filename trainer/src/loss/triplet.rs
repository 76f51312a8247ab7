//! Batch-hard triplet loss (Hermans, Beyer and Leibe, "In Defense of the Triplet Loss for Person
//! Re-Identification", 2017), a baseline for Smooth-AP.
//!
//! Distances are Euclidean between L2-normalised embeddings, `d_ij = sqrt(2 − 2 s_ij)` for cosine
//! similarity `s_ij`. Each anchor `a` that has a positive and a negative in the batch contributes
//! `max(0, margin + max_{p: y_p = y_a, p ≠ a} d_ap − min_{n: y_n ≠ y_a} d_an)`, its hardest
//! positive against its hardest negative; the loss is the mean over those anchors (zeros
//! included).

use super::{check_batch, check_parameter, cosine_similarities, pair_masks, LossError};
use tch::Tensor;

/// The default margin between hardest positive and hardest negative distances (on the unit
/// sphere, where distances lie in [0, 2]).
pub const DEFAULT_TRIPLET_MARGIN: f64 = 0.2;

/// Squared distances below this are raised to it before the square root, whose gradient is
/// infinite at 0 (identical embeddings).
const MIN_SQUARED_DISTANCE: f64 = 1e-12;

/// The batch-hard triplet loss with its margin.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Triplet {
    margin: f64,
}

impl Triplet {
    /// The batch-hard triplet loss with `margin` (finite and >= 0).
    pub fn new(margin: f64) -> Result<Self, LossError> {
        Ok(Self {
            margin: check_parameter("margin", margin, false)?,
        })
    }

    /// The mean hinge over the anchors that have both a positive and a negative in the batch, as
    /// a scalar tensor differentiable with respect to `embeddings`. Fails when the shapes or
    /// kinds are wrong or when no anchor has both.
    pub fn loss(&self, embeddings: &Tensor, labels: &Tensor) -> Result<Tensor, LossError> {
        check_batch(embeddings, labels)?;
        let batch = embeddings.size()[0];
        let labels = labels.to_device(embeddings.device());
        let (positives, negatives) = pair_masks(&labels, batch);
        let valid = positives
            .any_dim(1, false)
            .logical_and(&negatives.any_dim(1, false));
        let anchors = valid.nonzero().squeeze_dim(1);
        if anchors.size()[0] == 0 {
            return Err(LossError::NothingToCompare {
                loss: "triplet",
                reason: "no sample has both a positive and a negative in the batch",
            });
        }
        let squared =
            (cosine_similarities(embeddings) * -2.0 + 2.0).clamp_min(MIN_SQUARED_DISTANCE);
        let distances = squared.sqrt();
        let hardest_positive = distances
            .masked_fill(&positives.logical_not(), f64::NEG_INFINITY)
            .amax([1], false);
        let hardest_negative = distances
            .masked_fill(&negatives.logical_not(), f64::INFINITY)
            .amin([1], false);
        let hinge = (hardest_positive - hardest_negative + self.margin).relu();
        Ok(hinge.index_select(0, &anchors).mean(embeddings.kind()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::testing::{
        central_differences, labels_tensor, leaf, random_batch, relative_error, value_and_grad,
    };
    use tch::Kind;

    /// Unit embeddings e0 = (1, 0), e1 = (0.6, 0.8), e2 = (0, 1), e3 = (−1, 0), labels
    /// [0, 0, 1, 1], margin 0.2. Similarities s01 = 0.6, s02 = 0, s03 = −1, s12 = 0.8,
    /// s13 = −0.6, s23 = 0, so distances sqrt(2 − 2s): d01 = √0.8, d02 = √2, d03 = 2, d12 = √0.4,
    /// d13 = √3.2, d23 = √2.
    /// Anchor 0: 0.2 + √0.8 − min(√2, 2) = −0.320 → 0. Anchor 1: 0.2 + √0.8 − min(√0.4, √3.2)
    /// = 0.4620. Anchor 2: 0.2 + √2 − min(√2, √0.4) = 0.9818. Anchor 3: 0.2 + √2 − min(2, √3.2)
    /// = −0.175 → 0. Loss = (0.4620 + 0.9818) / 4 = 0.3609.
    #[test]
    fn hand_computed_batch() {
        let embeddings = [1.0, 0.0, 0.6, 0.8, 0.0, 1.0, -1.0, 0.0];
        let labels = labels_tensor(&[0, 0, 1, 1]);
        let expected =
            ((0.2 + 0.8f64.sqrt() - 0.4f64.sqrt()) + (0.2 + 2f64.sqrt() - 0.4f64.sqrt())) / 4.0;
        for kind in [Kind::Double, Kind::Float] {
            let x = leaf(&embeddings, 2, kind);
            let value = Triplet::new(0.2)
                .unwrap()
                .loss(&x, &labels)
                .unwrap()
                .double_value(&[]);
            assert!(
                (value - expected).abs() < 1e-6,
                "{kind:?}: {value} vs {expected}"
            );
        }
        // With no margin only anchors 1 and 2 still violate it, by 0.2 less each.
        let x = leaf(&embeddings, 2, Kind::Double);
        let value = Triplet::new(0.0)
            .unwrap()
            .loss(&x, &labels)
            .unwrap()
            .double_value(&[]);
        assert!((value - (expected - 0.1)).abs() < 1e-12);
    }

    /// Only anchors with a positive and a negative count: a singleton class adds a negative for
    /// the others but no anchor of its own.
    #[test]
    fn anchors_need_a_positive_and_a_negative() {
        let x = leaf(&[1.0, 0.0, 0.6, 0.8, 0.0, 1.0], 2, Kind::Double);
        // Anchor 0: 0.2 + √0.8 − √2; anchor 1: 0.2 + √0.8 − √0.4; sample 2 has no positive.
        let expected = (0.2 + 0.8f64.sqrt() - 0.4f64.sqrt()) / 2.0;
        let value = Triplet::new(0.2)
            .unwrap()
            .loss(&x, &labels_tensor(&[5, 5, 9]))
            .unwrap();
        assert!((value.double_value(&[]) - expected).abs() < 1e-12);
        for labels in [[1, 1, 1], [1, 2, 3]] {
            let err = Triplet::new(0.2)
                .unwrap()
                .loss(&x, &labels_tensor(&labels))
                .unwrap_err();
            assert!(matches!(err, LossError::NothingToCompare { .. }), "{err}");
        }
        assert!(Triplet::new(-0.1).is_err());
    }

    /// Autograd against central finite differences, in float64.
    #[test]
    fn gradient_matches_finite_differences() {
        let (d, labels) = (4, [0, 0, 0, 1, 1, 2]);
        let (embeddings, _) = random_batch(17, labels.len(), d, 1);
        let loss = Triplet::new(0.5).unwrap();
        let at = |x: &[f64]| {
            let t = Tensor::from_slice(x).view([-1, d as i64]);
            loss.loss(&t, &labels_tensor(&labels))
                .unwrap()
                .double_value(&[])
        };
        let x = leaf(&embeddings, d, Kind::Double);
        let (_, grad) = value_and_grad(&loss.loss(&x, &labels_tensor(&labels)).unwrap(), &x);
        let numeric = central_differences(at, &embeddings, 1e-6);
        assert!(
            numeric.iter().any(|g| g.abs() > 1e-3),
            "a flat loss tests nothing"
        );
        assert!(relative_error(&grad, &numeric) < 1e-6);
    }
}
