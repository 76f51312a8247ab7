//! The ArcFace margin head (Deng et al., CVPR 2019): a classifier over the training identities
//! whose target logit carries an additive angular margin, trained with cross-entropy.
//!
//! With `x` the L2-normalised embedding, `w_c` the L2-normalised weight row of class `c` and
//! `θ_c` the angle between them, the logits are `s · cos θ_c` for the other classes and
//! `s · cos(θ_y + m)` for the sample's own class `y`. Where `θ_y + m` would pass π (and
//! `cos(θ + m)` would stop decreasing in θ) the target logit is `s · (cos θ_y − m · sin m)`
//! instead, the linear continuation insightface uses. The loss is the mean cross-entropy.
//!
//! Unlike the ranking losses the head has parameters (one row per training identity), so it
//! lives in the var store under its own name and is trained with the backbone; it is not part
//! of the exported embedder.

use super::{check_batch, check_parameter, l2_normalize, LossError};
use tch::{nn, Tensor};

/// arcface_torch's scale `s` of the cosine logits.
pub const DEFAULT_ARCFACE_SCALE: f64 = 64.0;
/// arcface_torch's additive angular margin `m`, in radians.
pub const DEFAULT_ARCFACE_MARGIN: f64 = 0.5;

/// An ArcFace head over `classes` identities.
#[derive(Debug)]
pub struct ArcFace {
    /// Class centres, `[classes, dim]`, normalised in every forward pass.
    pub weight: Tensor,
    scale: f64,
    margin: f64,
}

impl ArcFace {
    /// A head under `p` for `classes` identities and `dim`-dimensional embeddings, with scale
    /// `scale` (> 0) and margin `margin` (radians, in [0, π/2)); the centres start as small
    /// random vectors, as in arcface_torch.
    pub fn new(
        p: &nn::Path,
        classes: i64,
        dim: i64,
        scale: f64,
        margin: f64,
    ) -> Result<Self, LossError> {
        check_parameter("the ArcFace scale", scale, true)?;
        check_parameter("the ArcFace margin", margin, false)?;
        if margin >= std::f64::consts::FRAC_PI_2 {
            return Err(LossError::Parameter {
                name: "the ArcFace margin",
                range: "below π/2 radians",
                value: margin,
            });
        }
        let init = nn::Init::Randn {
            mean: 0.0,
            stdev: 0.01,
        };
        Ok(Self {
            weight: p.var("weight", &[classes, dim], init),
            scale,
            margin,
        })
    }

    /// The `[batch, classes]` logits of `embeddings` (raw, `[batch, dim]`) for true classes
    /// `labels`, margin applied.
    pub fn logits(&self, embeddings: &Tensor, labels: &Tensor) -> Result<Tensor, LossError> {
        let values = check_batch(embeddings, labels)?;
        let classes = self.weight.size()[0];
        if values.iter().any(|&y| y < 0 || y >= classes) {
            return Err(LossError::NothingToCompare {
                loss: "arcface",
                reason: "every label must be a training identity, 0 <= label < classes",
            });
        }
        let weight = l2_normalize(&self.weight.to_kind(embeddings.kind()));
        let cosines = l2_normalize(embeddings).matmul(&weight.tr());
        let index = labels.unsqueeze(1);
        let target = cosines.gather(1, &index, false);
        // sin θ from cos θ; the floor keeps the square root's gradient finite at θ = 0.
        let sine = (-target.square() + 1.0).clamp_min(1e-12).sqrt();
        let (m, pi) = (self.margin, std::f64::consts::PI);
        let with_margin = &target * m.cos() - sine * m.sin();
        let linear = &target - m * m.sin();
        let past_pi = target.le((pi - m).cos());
        let target = with_margin.where_self(&past_pi.logical_not(), &linear);
        Ok(cosines.scatter(1, &index, &target) * self.scale)
    }

    /// The mean cross-entropy of the margin logits.
    pub fn loss(&self, embeddings: &Tensor, labels: &Tensor) -> Result<Tensor, LossError> {
        let logits = self.logits(embeddings, labels)?;
        Ok(logits.log_softmax(1, embeddings.kind()).nll_loss(labels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::testing::{central_differences, leaf, relative_error, value_and_grad};
    use tch::{Device, Kind};

    /// A head with given centres (float64) in a fresh var store.
    fn head(centres: &[f64], dim: i64, scale: f64, margin: f64) -> (nn::VarStore, ArcFace) {
        let vs = nn::VarStore::new(Device::Cpu);
        let classes = centres.len() as i64 / dim;
        let head = ArcFace::new(&vs.root(), classes, dim, scale, margin).unwrap();
        tch::no_grad(|| {
            head.weight.shallow_clone().copy_(
                &Tensor::from_slice(centres)
                    .reshape([classes, dim])
                    .to_kind(Kind::Float),
            )
        });
        (vs, head)
    }

    fn labels(values: &[i64]) -> Tensor {
        Tensor::from_slice(values)
    }

    /// 2-d embeddings at angles φ and centres at angles ψ: every θ is a difference of angles, so
    /// the logits can be written down by hand.
    #[test]
    fn logits_add_the_margin_to_the_target_angle_only() {
        let (s, m) = (64.0, 0.5);
        let psi = [0.0f64, 1.0, 2.5];
        let centres: Vec<f64> = psi.iter().flat_map(|a| [a.cos(), a.sin()]).collect();
        let (_vs, head) = head(&centres, 2, s, m);
        // Scaled by 3: the head normalises the embeddings.
        let phi = [0.3f64, 2.0];
        let x: Vec<f64> = phi
            .iter()
            .flat_map(|a| [3.0 * a.cos(), 3.0 * a.sin()])
            .collect();
        let x = leaf(&x, 2, Kind::Double);
        let y = [0i64, 2];
        let logits = head.logits(&x, &labels(&y)).unwrap();
        for (i, &a) in phi.iter().enumerate() {
            for (c, &b) in psi.iter().enumerate() {
                let theta = (a - b).abs();
                let expected = if c as i64 == y[i] {
                    s * (theta + m).cos()
                } else {
                    s * theta.cos()
                };
                let got = logits.double_value(&[i as i64, c as i64]);
                assert!(
                    (got - expected).abs() < 1e-4,
                    "[{i},{c}]: {got} vs {expected}"
                );
            }
        }
    }

    #[test]
    fn past_pi_minus_margin_the_target_logit_continues_linearly() {
        let (s, m) = (10.0, 0.5);
        let (_vs, head) = head(&[1.0, 0.0, 0.0, 1.0], 2, s, m);
        // θ = 3.0 > π - 0.5 from class 0.
        let x = leaf(&[3.0f64.cos(), 3.0f64.sin()], 2, Kind::Double);
        let logits = head.logits(&x, &labels(&[0])).unwrap();
        let expected = s * (3.0f64.cos() - m * m.sin());
        assert!((logits.double_value(&[0, 0]) - expected).abs() < 1e-4);
    }

    #[test]
    fn the_loss_is_the_cross_entropy_of_the_margin_logits() {
        let (s, m) = (8.0, 0.3);
        let psi = [0.0f64, 1.2, 2.9];
        let centres: Vec<f64> = psi.iter().flat_map(|a| [a.cos(), a.sin()]).collect();
        let (_vs, head) = head(&centres, 2, s, m);
        let phi = [0.1f64, 1.0, 2.0];
        let y = [0usize, 1, 1];
        let x: Vec<f64> = phi.iter().flat_map(|a| [a.cos(), a.sin()]).collect();
        let loss = head
            .loss(&leaf(&x, 2, Kind::Double), &labels(&[0, 1, 1]))
            .unwrap();
        let mut expected = 0.0;
        for (i, &a) in phi.iter().enumerate() {
            let z: Vec<f64> = psi
                .iter()
                .enumerate()
                .map(|(c, &b)| {
                    let theta = (a - b).abs();
                    s * if c == y[i] {
                        (theta + m).cos()
                    } else {
                        theta.cos()
                    }
                })
                .collect();
            let log_sum = z.iter().map(|v| v.exp()).sum::<f64>().ln();
            expected += (log_sum - z[y[i]]) / 3.0;
        }
        // The head's centres are float32: their rounding bounds the agreement.
        assert!((loss.double_value(&[]) - expected).abs() < 1e-4);
    }

    #[test]
    fn gradients_match_finite_differences() {
        let (s, m) = (4.0, 0.5);
        let centres = [0.9, 0.1, -0.2, -0.3, 0.8, 0.4, 0.1, -0.7, 0.6];
        let (_vs, head) = head(&centres, 3, s, m);
        let x = [
            0.5, -0.2, 0.3, 0.1, 0.9, -0.4, -0.6, 0.2, 0.8, 0.3, 0.3, -0.9,
        ];
        let y = labels(&[0, 1, 2, 1]);
        let input = leaf(&x, 3, Kind::Double);
        let (_, grad) = value_and_grad(&head.loss(&input, &y).unwrap(), &input);
        let numeric = central_differences(
            |v| {
                head.loss(&leaf(v, 3, Kind::Double), &y)
                    .unwrap()
                    .double_value(&[])
            },
            &x,
            1e-6,
        );
        let error = relative_error(&grad, &numeric);
        assert!(error < 1e-5, "relative error {error}");
    }

    #[test]
    fn rejects_labels_outside_the_classes_and_bad_parameters() {
        let (_vs, head) = head(&[1.0, 0.0, 0.0, 1.0], 2, 64.0, 0.5);
        let x = leaf(&[1.0, 0.0], 2, Kind::Double);
        assert!(head.loss(&x, &labels(&[2])).is_err());
        assert!(head.loss(&x, &labels(&[-1])).is_err());
        let vs = nn::VarStore::new(Device::Cpu);
        assert!(ArcFace::new(&vs.root(), 2, 2, 0.0, 0.5).is_err());
        assert!(ArcFace::new(&vs.root(), 2, 2, 64.0, 2.0).is_err());
    }
}
