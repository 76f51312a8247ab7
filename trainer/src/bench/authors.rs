//! The authors' Smooth-AP (`Smooth_AP_loss.py` in github.com/Andrew-Brown1/Smooth_AP), line by
//! line on tch: the `[B, B, B]` difference-tensor form the benchmark measures the scalable
//! [`SmoothAp`](crate::loss::SmoothAp) against.
//!
//! Like the original it needs the batch sorted by identity in `num_id` equal groups, and it
//! keeps every intermediate alive until it returns, as the Python locals do; it computes the
//! loss of [`Mode::Official`](crate::loss::Mode::Official). The one addition is the L2
//! normalisation of the raw embeddings (the original expects normalised input), so that both
//! forms take the same input.

use crate::loss::l2_normalize;
use tch::{Kind, Tensor};

/// Tensors of `B³` (or `num_id · group³`) numbers alive at the peak of forward and backward:
/// the memory estimate the benchmark uses to skip batches that would not fit.
pub const CUBES_AT_PEAK: f64 = 11.0;

/// `sigmoid(tensor, temp)` of the original: `1 / (1 + exp(clamp(-tensor / temp, -50, 50)))`.
fn sigmoid(tensor: &Tensor, temp: f64) -> Tensor {
    let exponent = (-tensor / temp).clamp(-50.0, 50.0);
    (exponent.exp() + 1.0).reciprocal()
}

/// `SmoothAP.forward(preds)` for a batch of `num_id` identities with `B / num_id` consecutive
/// samples each, temperature `anneal`: `1 − AP` as a one-element tensor.
pub fn smooth_ap(embeddings: &Tensor, num_id: i64, anneal: f64) -> Tensor {
    let (batch_size, feat_dims) = (embeddings.size()[0], embeddings.size()[1]);
    let group = batch_size / num_id;
    let options = (embeddings.kind(), embeddings.device());
    let preds = l2_normalize(embeddings);
    // Differentiable ranking of the whole retrieval set; the mask ignores each item's comparison
    // with itself.
    let mask = (Tensor::ones([batch_size, batch_size], options) - Tensor::eye(batch_size, options))
        .unsqueeze(0)
        .repeat([batch_size, 1, 1]);
    let sim_all = preds.mm(&preds.tr());
    let sim_all_repeat = sim_all.unsqueeze(1).repeat([1, batch_size, 1]);
    let sim_diff = &sim_all_repeat - sim_all_repeat.permute([0, 2, 1]);
    let sim_sg = sigmoid(&sim_diff, anneal) * &mask;
    let sim_all_rk = sim_sg.sum_dim_intlist(-1, false, None::<Kind>) + 1.0;
    // Differentiable ranking of the positive set only.
    let xs = preds.view([num_id, group, feat_dims]);
    let pos_mask = (Tensor::ones([group, group], options) - Tensor::eye(group, options))
        .unsqueeze(0)
        .unsqueeze(0)
        .repeat([num_id, group, 1, 1]);
    let sim_pos = xs.bmm(&xs.permute([0, 2, 1]));
    let sim_pos_repeat = sim_pos.unsqueeze(2).repeat([1, 1, group, 1]);
    let sim_pos_diff = &sim_pos_repeat - sim_pos_repeat.permute([0, 1, 3, 2]);
    let sim_pos_sg = sigmoid(&sim_pos_diff, anneal) * &pos_mask;
    let sim_pos_rk = sim_pos_sg.sum_dim_intlist(-1, false, None::<Kind>) + 1.0;
    // Smooth-AP summed over every query of the batch.
    let mut ap = Tensor::zeros([1], options);
    for ind in 0..num_id {
        let block = sim_all_rk
            .narrow(0, ind * group, group)
            .narrow(1, ind * group, group);
        let pos_divide = (sim_pos_rk.get(ind) / block).sum(embeddings.kind());
        ap += pos_divide / group as f64 / batch_size as f64;
    }
    -ap + 1.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::{Mode, SmoothAp};

    /// The authors' form and the scalable one in official mode are the same function: same
    /// value, same gradient.
    #[test]
    fn is_official_smooth_ap() {
        tch::manual_seed(21);
        let (num_id, group, dim) = (6, 4, 8);
        let x = Tensor::randn([num_id * group, dim], (Kind::Double, tch::Device::Cpu));
        let labels = Tensor::arange(num_id * group, (Kind::Int64, tch::Device::Cpu))
            .floor_divide_scalar(group);
        for tau in [0.01, 0.1] {
            let a = x.detach().set_requires_grad(true);
            let theirs = smooth_ap(&a, num_id, tau);
            theirs.backward();
            let b = x.detach().set_requires_grad(true);
            let ours = SmoothAp::new(Mode::Official, tau)
                .unwrap()
                .loss(&b, &labels)
                .unwrap();
            ours.backward();
            let value_error = (theirs.double_value(&[0]) - ours.double_value(&[])).abs();
            assert!(value_error < 1e-12, "tau {tau}: value off by {value_error}");
            let grad_error = (a.grad() - b.grad()).abs().max().double_value(&[]);
            assert!(
                grad_error < 1e-10,
                "tau {tau}: gradient off by {grad_error}"
            );
        }
    }
}
