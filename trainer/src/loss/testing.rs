//! Helpers for the losses' tests: seeded random batches without tch's generator (so that test
//! batches do not depend on libtorch's), and gradients read back as plain numbers.

use smoothface_tests::Rng;
use tch::{Kind, Tensor};

/// `b` Gaussian embeddings of dimension `d` (row-major) and labels drawn uniformly from
/// `0..classes`: classes of every size, singletons included, in random order.
pub fn random_batch(seed: u64, b: usize, d: usize, classes: u64) -> (Vec<f64>, Vec<i64>) {
    let mut rng = Rng::new(seed);
    let embeddings = (0..b * d).map(|_| rng.normal()).collect();
    let labels = (0..b).map(|_| rng.below(classes) as i64).collect();
    (embeddings, labels)
}

/// A `[b, d]` leaf tensor of `kind` that records gradients.
pub fn leaf(values: &[f64], d: usize, kind: Kind) -> Tensor {
    Tensor::from_slice(values)
        .view([-1, d as i64])
        .to_kind(kind)
        .set_requires_grad(true)
}

/// The int64 labels tensor.
pub fn labels_tensor(labels: &[i64]) -> Tensor {
    Tensor::from_slice(labels)
}

/// A tensor's values as f64, flattened.
pub fn values(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(&t.detach().to_kind(Kind::Double).flatten(0, -1)).unwrap()
}

/// Runs backward from the scalar `loss` and returns `(loss, d loss / d leaf)`.
pub fn value_and_grad(loss: &Tensor, leaf: &Tensor) -> (f64, Vec<f64>) {
    loss.backward();
    (loss.double_value(&[]), values(&leaf.grad()))
}

/// `max |a − b| / max |b|`: the error of `a` relative to the scale of the reference `b`.
pub fn relative_error(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let diff = a
        .iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
    diff / scale.max(f64::MIN_POSITIVE)
}

/// Central finite differences of `f` at `x`, one coordinate at a time with step `h`: the
/// independent gradient the autograd gradients are checked against.
pub fn central_differences(f: impl Fn(&[f64]) -> f64, x: &[f64], h: f64) -> Vec<f64> {
    (0..x.len())
        .map(|k| {
            let (mut up, mut down) = (x.to_vec(), x.to_vec());
            up[k] += h;
            down[k] -= h;
            (f(&up) - f(&down)) / (2.0 * h)
        })
        .collect()
}
