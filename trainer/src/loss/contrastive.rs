//! Pairwise contrastive loss on cosine similarities, a baseline for Smooth-AP.
//!
//! Over the unordered pairs `i < j` of the batch: a pair with the same label is pulled towards
//! similarity 1 with the term `1 − s_ij`; a pair with different labels is pushed below the margin
//! with `max(0, s_ij − margin)`. The loss is the mean positive term plus the mean negative term
//! (a kind of pair absent from the batch contributes 0), so that the many negative pairs do not
//! drown the few positive ones.

use super::{check_batch, cosine_similarities, pair_masks, LossError};
use tch::Tensor;

/// The default similarity below which negative pairs stop contributing.
pub const DEFAULT_CONTRASTIVE_MARGIN: f64 = 0.5;

/// The contrastive loss with its margin.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Contrastive {
    margin: f64,
}

impl Contrastive {
    /// The contrastive loss that pushes negative pairs below similarity `margin` (finite, in
    /// [-1, 1]).
    pub fn new(margin: f64) -> Result<Self, LossError> {
        if !(-1.0..=1.0).contains(&margin) {
            return Err(LossError::Parameter {
                name: "margin",
                range: "in [-1, 1]",
                value: margin,
            });
        }
        Ok(Self { margin })
    }

    /// Mean positive term plus mean negative term, as a scalar tensor differentiable with
    /// respect to `embeddings`. Fails when the shapes or kinds are wrong or the batch has a
    /// single sample (no pair).
    pub fn loss(&self, embeddings: &Tensor, labels: &Tensor) -> Result<Tensor, LossError> {
        check_batch(embeddings, labels)?;
        let (kind, batch) = (embeddings.kind(), embeddings.size()[0]);
        if batch < 2 {
            return Err(LossError::NothingToCompare {
                loss: "contrastive",
                reason: "a batch of one sample has no pair",
            });
        }
        let labels = labels.to_device(embeddings.device());
        let (positives, negatives) = pair_masks(&labels, batch);
        // Each unordered pair once: the upper triangle.
        let upper = positives.ones_like().triu(1);
        let positives = positives.logical_and(&upper).to_kind(kind);
        let negatives = negatives.logical_and(&upper).to_kind(kind);
        let similarities = cosine_similarities(embeddings);
        let pulled = ((-&similarities + 1.0) * &positives).sum(kind);
        let pushed = ((&similarities - self.margin).relu() * &negatives).sum(kind);
        // A mean over no pair is 0: clamping the count at 1 divides a zero sum by 1.
        let mean = |sum: Tensor, mask: &Tensor| sum / mask.sum(kind).clamp_min(1.0);
        Ok(mean(pulled, &positives) + mean(pushed, &negatives))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::testing::{labels_tensor, leaf, value_and_grad};
    use tch::Kind;

    /// Unit embeddings e0 = (1, 0), e1 = (0.6, 0.8), e2 = (0, 1), e3 = (−1, 0), labels
    /// [0, 0, 1, 1], margin 0.5. Positive pairs: (0, 1) with s = 0.6 → 0.4, (2, 3) with s = 0 → 1;
    /// mean 0.7. Negative pairs: (0, 2) s = 0 → 0, (0, 3) s = −1 → 0, (1, 2) s = 0.8 → 0.3,
    /// (1, 3) s = −0.6 → 0; mean 0.075. Loss = 0.775.
    /// Gradient of e1 (unit, so d s_1j / d e1 = e_j − s_1j e1): from the positive term
    /// −(e0 − 0.6 e1)/2 = (−0.32, 0.24), from the negative term (e2 − 0.8 e1)/4 = (−0.12, 0.09):
    /// (−0.44, 0.33).
    #[test]
    fn hand_computed_batch() {
        let embeddings = [1.0, 0.0, 0.6, 0.8, 0.0, 1.0, -1.0, 0.0];
        let labels = labels_tensor(&[0, 0, 1, 1]);
        for kind in [Kind::Double, Kind::Float] {
            let x = leaf(&embeddings, 2, kind);
            let loss = Contrastive::new(0.5).unwrap().loss(&x, &labels).unwrap();
            let (value, grad) = value_and_grad(&loss, &x);
            assert!((value - 0.775).abs() < 1e-6, "{kind:?}: {value}");
            assert!(
                (grad[2] + 0.44).abs() < 1e-6 && (grad[3] - 0.33).abs() < 1e-6,
                "{grad:?}"
            );
        }
    }

    /// A batch without positive pairs is only pushed; a single sample has no pair.
    #[test]
    fn missing_pairs() {
        let x = leaf(&[1.0, 0.0, 0.6, 0.8], 2, Kind::Double);
        let value = Contrastive::new(0.5)
            .unwrap()
            .loss(&x, &labels_tensor(&[1, 2]))
            .unwrap();
        assert!((value.double_value(&[]) - 0.1).abs() < 1e-12);
        let value = Contrastive::new(0.5)
            .unwrap()
            .loss(&x, &labels_tensor(&[1, 1]))
            .unwrap();
        assert!((value.double_value(&[]) - 0.4).abs() < 1e-12);
        let one = leaf(&[1.0, 0.0], 2, Kind::Double);
        let err = Contrastive::new(0.5)
            .unwrap()
            .loss(&one, &labels_tensor(&[1]))
            .unwrap_err();
        assert!(matches!(err, LossError::NothingToCompare { .. }), "{err}");
        assert!(Contrastive::new(1.5).is_err() && Contrastive::new(f64::NAN).is_err());
    }
}
