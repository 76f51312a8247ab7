//! The objective a run minimises, built from the `[loss]` section of its configuration.

use crate::config::{LossConfig, Objective as Name};
use crate::loss::{ArcFace, Contrastive, LossError, SmoothAp, Triplet};
use tch::{nn, Tensor};

/// A configured loss, with the ArcFace head's parameters where it has one.
#[derive(Debug)]
pub enum Objective {
    /// Smooth-AP alone.
    SmoothAp(SmoothAp),
    /// Batch-hard triplet.
    Triplet(Triplet),
    /// Pairwise contrastive.
    Contrastive(Contrastive),
    /// The ArcFace head, plus `weight` · Smooth-AP when given.
    ArcFace {
        /// The margin classifier over the training identities.
        head: ArcFace,
        /// Smooth-AP and its weight λ.
        smooth_ap: Option<(SmoothAp, f64)>,
    },
}

/// Where the ArcFace head's variables live in the var store (and the checkpoint).
pub const HEAD: &str = "head";

impl Objective {
    /// The objective `config` describes; an ArcFace head over `classes` identities of
    /// `dim`-dimensional embeddings is created under [`HEAD`] in `root` when it needs one.
    pub fn new(
        config: &LossConfig,
        root: &nn::Path,
        classes: i64,
        dim: i64,
    ) -> Result<Self, LossError> {
        let smooth_ap = || SmoothAp::new(config.mode, config.tau);
        let head = || {
            ArcFace::new(
                &(root / HEAD),
                classes,
                dim,
                config.arcface_scale,
                config.arcface_margin,
            )
        };
        Ok(match config.name {
            Name::SmoothAp => Objective::SmoothAp(smooth_ap()?),
            Name::Triplet => Objective::Triplet(Triplet::new(config.margin_or_default())?),
            Name::Contrastive => {
                Objective::Contrastive(Contrastive::new(config.margin_or_default())?)
            }
            Name::ArcFace => Objective::ArcFace {
                head: head()?,
                smooth_ap: None,
            },
            Name::ArcFaceSmoothAp => Objective::ArcFace {
                head: head()?,
                smooth_ap: Some((smooth_ap()?, config.smooth_ap_weight)),
            },
        })
    }

    /// The loss of one batch of raw embeddings and their labels.
    pub fn loss(&self, embeddings: &Tensor, labels: &Tensor) -> Result<Tensor, LossError> {
        match self {
            Objective::SmoothAp(l) => l.loss(embeddings, labels),
            Objective::Triplet(l) => l.loss(embeddings, labels),
            Objective::Contrastive(l) => l.loss(embeddings, labels),
            Objective::ArcFace { head, smooth_ap } => {
                let classification = head.loss(embeddings, labels)?;
                match smooth_ap {
                    None => Ok(classification),
                    Some((l, weight)) => Ok(classification + l.loss(embeddings, labels)? * *weight),
                }
            }
        }
    }
}
