//! Metric-learning losses on one batch of embeddings and their identity labels.
//!
//! Every loss takes raw embeddings `[batch, dim]` (float32 or float64, any device), L2-normalises
//! them itself, compares them by cosine similarity and returns a scalar tensor that autograd
//! differentiates back to the raw embeddings. Labels are an int64 tensor `[batch]`: any values, any
//! number of samples per identity, in any order.
//!
//! - [`SmoothAp`]: Smooth-AP (Brown et al., ECCV 2020), a smooth surrogate of average precision,
//!   the retrieval metric the product is judged by.
//! - [`Triplet`]: batch-hard triplet loss, a baseline.
//! - [`Contrastive`]: pairwise contrastive loss, a baseline.
//! - [`ArcFace`]: the additive angular margin classifier head, alone or beside Smooth-AP.

mod arcface;
mod contrastive;
mod smooth_ap;
mod triplet;

pub use arcface::{ArcFace, DEFAULT_ARCFACE_MARGIN, DEFAULT_ARCFACE_SCALE};
pub use contrastive::{Contrastive, DEFAULT_CONTRASTIVE_MARGIN};
pub use smooth_ap::{Mode, SmoothAp, DEFAULT_CHUNK_ELEMENTS, DEFAULT_TAU};
pub use triplet::{Triplet, DEFAULT_TRIPLET_MARGIN};

use tch::{Kind, Tensor};

/// Why a loss could not be computed for a batch.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LossError {
    /// The embeddings are not a `[batch, dim]` matrix.
    #[error("embeddings must have shape [batch, dim], got {0:?}")]
    EmbeddingShape(Vec<i64>),
    /// The embeddings are not floating point numbers the losses compute in.
    #[error("embeddings must be float32 or float64, got {0:?}")]
    EmbeddingKind(Kind),
    /// The labels are not one value per embedding.
    #[error("labels must have shape [{batch}] (one per embedding), got {shape:?}")]
    LabelShape {
        /// Number of embeddings.
        batch: i64,
        /// Shape of the labels tensor.
        shape: Vec<i64>,
    },
    /// The labels are not int64.
    #[error("labels must be int64, got {0:?}")]
    LabelKind(Kind),
    /// The batch has no sample at all.
    #[error("the batch is empty")]
    EmptyBatch,
    /// The batch gives the loss nothing to learn from, e.g. no two samples share a label.
    #[error("{loss}: {reason}")]
    NothingToCompare {
        /// The loss that refused the batch.
        loss: &'static str,
        /// What the batch lacks.
        reason: &'static str,
    },
    /// A hyper-parameter is out of its range.
    #[error("{name} must be {range}, got {value}")]
    Parameter {
        /// The parameter's name.
        name: &'static str,
        /// The allowed range, in words.
        range: &'static str,
        /// The value given.
        value: f64,
    },
}

/// Checks that `embeddings` is a non-empty float32/float64 `[batch, dim]` matrix and `labels` an
/// int64 `[batch]` vector; returns the labels as a `Vec` for the losses' bookkeeping.
fn check_batch(embeddings: &Tensor, labels: &Tensor) -> Result<Vec<i64>, LossError> {
    let shape = embeddings.size();
    if shape.len() != 2 {
        return Err(LossError::EmbeddingShape(shape));
    }
    let kind = embeddings.kind();
    if kind != Kind::Float && kind != Kind::Double {
        return Err(LossError::EmbeddingKind(kind));
    }
    if labels.size() != [shape[0]] {
        return Err(LossError::LabelShape {
            batch: shape[0],
            shape: labels.size(),
        });
    }
    if labels.kind() != Kind::Int64 {
        return Err(LossError::LabelKind(labels.kind()));
    }
    if shape[0] == 0 || shape[1] == 0 {
        return Err(LossError::EmptyBatch);
    }
    Vec::<i64>::try_from(&labels.to_device(tch::Device::Cpu).contiguous())
        .map_err(|_| LossError::LabelKind(labels.kind()))
}

/// Checks that a hyper-parameter is finite and `> 0` (`positive`) or `>= 0` (not `positive`).
fn check_parameter(name: &'static str, value: f64, positive: bool) -> Result<f64, LossError> {
    let ok = value.is_finite() && if positive { value > 0.0 } else { value >= 0.0 };
    if ok {
        Ok(value)
    } else {
        let range = if positive {
            "finite and > 0"
        } else {
            "finite and >= 0"
        };
        Err(LossError::Parameter { name, range, value })
    }
}

/// Each row divided by its L2 norm (rows of norm below 1e-12 are divided by 1e-12, as
/// `torch.nn.functional.normalize` does).
pub fn l2_normalize(embeddings: &Tensor) -> Tensor {
    embeddings / embeddings.norm_scalaropt_dim(2, [1], true).clamp_min(1e-12)
}

/// The `[batch, batch]` cosine similarities of the rows of `embeddings`.
fn cosine_similarities(embeddings: &Tensor) -> Tensor {
    let unit = l2_normalize(embeddings);
    unit.matmul(&unit.tr())
}

/// `[batch, batch]` boolean masks of the pairs `(i, j)`, `i != j`, that share a label
/// (positives) and that do not (negatives).
fn pair_masks(labels: &Tensor, batch: i64) -> (Tensor, Tensor) {
    let same = labels.unsqueeze(0).eq_tensor(&labels.unsqueeze(1));
    let other = Tensor::eye(batch, (Kind::Bool, labels.device())).logical_not();
    let positives = same.logical_and(&other);
    let negatives = same.logical_not();
    (positives, negatives)
}

#[cfg(test)]
mod testing;
