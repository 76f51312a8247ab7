//! Smooth-AP (Brown, Xie, Kalogeiton and Zisserman, "Smooth-AP: Smoothing the Path Towards
//! Large-Scale Image Retrieval", ECCV 2020), exact, in O(B·P·B) memory and work.
//!
//! Every sample `q` of the batch is a query. With `s` the cosine similarities and
//! `σ_τ(x) = 1 / (1 + exp(-x/τ))`, the smoothed rank of a sample `i` within a set `S` is
//! `R(i, S) = 1 + Σ_{j ∈ S, j ≠ i} σ_τ(s_qj − s_qi)`, and
//!
//! ```text
//! AP_q = 1/|P_q| · Σ_{i ∈ P_q} R(i, P_q) / R(i, Ω_q)        loss = 1 − mean_q AP_q
//! ```
//!
//! over the queries with at least one positive. [`Mode::Paper`] uses the paper's sets: the
//! retrieval set `Ω_q` is the batch without `q`, the positives `P_q` the other samples with `q`'s
//! label. [`Mode::Official`] reproduces the authors' released code: `q` stays in its own retrieval
//! set and positive set (`Ω_q` is the whole batch, `P_q` every sample with `q`'s label, `q`
//! included). Their `sigmoid` also clamps its argument `x/τ` to `[-50, 50]`; that moves a term
//! by less than `σ(-50) = 2e-22` (and its gradient by as little), below float64's resolution of
//! ranks that are at least 1, so it is left out here, where it would double what autograd keeps.
//! The tests hold both modes to a naive implementation with the authors' clamp.
//!
//! The authors materialise `s_qj − s_qi` for every `(q, i, j)`: `B³` numbers, several times over.
//! Only `i ∈ P_q` is ever used, so this implementation gathers, for each query, the similarities
//! of its positives (padded to the largest positive set `P` with a mask) and forms the
//! `[queries, P, B]` differences for a chunk of queries at a time. Autograd keeps one such tensor
//! per chunk for the backward pass (the sigmoid's output), so memory is `O(B·P·B)`; at
//! `B = 4096` and 4 samples per identity that is 201 MB in float32 in paper mode (P = 3 others)
//! and 268 MB in official mode (P = 4).

use super::{check_batch, check_parameter, l2_normalize, LossError};
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use tch::Tensor;

/// The temperature of the sigmoid that smooths the ranking: the paper's 0.01.
pub const DEFAULT_TAU: f64 = 0.01;

/// Elements of a `[chunk, P, B]` difference tensor formed at once: 2^22 (16 MiB in float32),
/// which measured faster than larger chunks at B = 4096.
pub const DEFAULT_CHUNK_ELEMENTS: i64 = 1 << 22;

/// Which sets Smooth-AP ranks against; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The paper's definition: the query is neither retrieved nor its own positive.
    #[default]
    Paper,
    /// The authors' released code: the query is in its own retrieval and positive sets.
    Official,
}

impl Mode {
    /// Every mode, in the order the command line lists them.
    pub const ALL: [Mode; 2] = [Mode::Paper, Mode::Official];

    /// The mode's name on the command line and in configurations (`paper`, `official`).
    pub fn name(self) -> &'static str {
        match self {
            Mode::Paper => "paper",
            Mode::Official => "official",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Mode {
    type Err = String;

    /// Parses a mode's [`Mode::name`].
    fn from_str(s: &str) -> Result<Self, String> {
        crate::parse_choice(s, &Mode::ALL, Mode::name, "Smooth-AP mode")
    }
}

/// Smooth-AP with its temperature and mode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SmoothAp {
    mode: Mode,
    tau: f64,
    chunk_elements: i64,
}

/// For each query with at least one positive, the indices of its positives, padded with its
/// first positive to the size of the largest positive set.
struct PositiveSets {
    /// The queries, in batch order.
    queries: Vec<i64>,
    /// `[queries.len(), width]`, row-major: positives first, then padding.
    index: Vec<i64>,
    /// `[queries.len(), width]`: 1 for a positive, 0 for padding.
    mask: Vec<f64>,
    /// The size of the largest positive set.
    width: i64,
}

impl PositiveSets {
    fn new(labels: &[i64], mode: Mode) -> Self {
        let mut classes: HashMap<i64, Vec<i64>> = HashMap::new();
        for (i, label) in labels.iter().enumerate() {
            classes.entry(*label).or_default().push(i as i64);
        }
        let positives = |q: usize| -> Vec<i64> {
            let class = &classes[&labels[q]];
            match mode {
                Mode::Paper => class.iter().copied().filter(|&i| i != q as i64).collect(),
                Mode::Official => class.clone(),
            }
        };
        let width = (0..labels.len())
            .map(|q| positives(q).len())
            .max()
            .unwrap_or(0);
        let mut sets = Self {
            queries: vec![],
            index: vec![],
            mask: vec![],
            width: width as i64,
        };
        for q in 0..labels.len() {
            let p = positives(q);
            if p.is_empty() {
                continue;
            }
            sets.queries.push(q as i64);
            sets.index
                .extend((0..width).map(|k| p.get(k).copied().unwrap_or(p[0])));
            sets.mask
                .extend((0..width).map(|k| if k < p.len() { 1.0 } else { 0.0 }));
        }
        sets
    }
}

impl SmoothAp {
    /// Smooth-AP in `mode` with sigmoid temperature `tau` (finite and > 0; the paper uses
    /// [`DEFAULT_TAU`]).
    pub fn new(mode: Mode, tau: f64) -> Result<Self, LossError> {
        let tau = check_parameter("tau", tau, true)?;
        Ok(Self {
            mode,
            tau,
            chunk_elements: DEFAULT_CHUNK_ELEMENTS,
        })
    }

    /// Bounds the difference tensor formed at once to about `elements` numbers (at least one
    /// query's worth). Chunking changes memory, never the result.
    pub fn with_chunk_elements(self, elements: i64) -> Self {
        Self {
            chunk_elements: elements.max(1),
            ..self
        }
    }

    /// The loss of a batch: `1 − mean AP` over the queries that have a positive, as a scalar
    /// tensor of the embeddings' kind, differentiable with respect to `embeddings`.
    ///
    /// Fails when the shapes or kinds are wrong, or in paper mode when no two samples share a
    /// label.
    pub fn loss(&self, embeddings: &Tensor, labels: &Tensor) -> Result<Tensor, LossError> {
        let labels = check_batch(embeddings, labels)?;
        let sets = PositiveSets::new(&labels, self.mode);
        if sets.queries.is_empty() {
            return Err(LossError::NothingToCompare {
                loss: "smooth-ap",
                reason: "no two samples of the batch share a label",
            });
        }
        let (kind, device) = (embeddings.kind(), embeddings.device());
        let (batch, count, width) = (labels.len() as i64, sets.queries.len() as i64, sets.width);
        let queries = Tensor::from_slice(&sets.queries).to_device(device);
        let index = Tensor::from_slice(&sets.index)
            .view([count, width])
            .to_device(device);
        let mask = Tensor::from_slice(&sets.mask)
            .view([count, width])
            .to_kind(kind)
            .to_device(device);
        let unit = l2_normalize(embeddings);
        let chunk = (self.chunk_elements / (width * batch)).max(1);
        let mut ap_sums = vec![];
        let mut start = 0;
        while start < count {
            let len = chunk.min(count - start);
            let ap = self.average_precisions(
                &unit,
                &queries.narrow(0, start, len),
                &index.narrow(0, start, len),
                &mask.narrow(0, start, len),
            );
            ap_sums.push(ap.sum(kind));
            start += len;
        }
        Ok(-Tensor::stack(&ap_sums, 0).sum(kind) / count as f64 + 1.0)
    }

    /// AP_q `[c]` of a chunk of `c` queries `q` `[c]`, from the normalised embeddings `unit`
    /// `[B, D]`, the queries' positives `index` `[c, P]` and their `mask` `[c, P]`.
    fn average_precisions(
        &self,
        unit: &Tensor,
        q: &Tensor,
        index: &Tensor,
        mask: &Tensor,
    ) -> Tensor {
        let kind = unit.kind();
        // s_qj / τ [c, B], the sigmoid's arguments being differences of them, and s_qi / τ for
        // the positives i [c, P]. The chunk's rows are computed here rather than taken from a
        // [B, B] similarity matrix, whose gradient each chunk would then fill in full.
        let rows = unit.index_select(0, q).matmul(&unit.tr()) / self.tau;
        let s_pos = rows.gather(1, index, false);
        // R(i, Ω_q): the sum over every j of the batch [c, P, B], less the term j = i, which is
        // σ(0) = 1/2 exactly, and in paper mode less the term j = q.
        let all = (rows.unsqueeze(1) - s_pos.unsqueeze(2)).sigmoid();
        let all = all.sum_dim_intlist(-1, false, kind) + 0.5;
        let rank_all = match self.mode {
            Mode::Paper => {
                let s_qq = rows.gather(1, &q.unsqueeze(1), false);
                all - (s_qq - &s_pos).sigmoid()
            }
            Mode::Official => all,
        };
        // R(i, P_q): over the positives j != i of the query [c, P, P], padding excluded.
        let (width, device) = (index.size()[1], index.device());
        let off_diagonal =
            Tensor::ones([width, width], (kind, device)) - Tensor::eye(width, (kind, device));
        let pairs = mask.unsqueeze(1) * off_diagonal;
        let among = (s_pos.unsqueeze(1) - s_pos.unsqueeze(2)).sigmoid() * pairs;
        let rank_pos = among.sum_dim_intlist(-1, false, kind) + 1.0;
        (rank_pos / rank_all * mask).sum_dim_intlist(-1, false, kind)
            / mask.sum_dim_intlist(-1, false, kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::testing::{
        central_differences, labels_tensor, leaf, random_batch, relative_error, value_and_grad,
        values,
    };
    use tch::Kind;

    /// σ_τ as each mode defines it; official is the authors' `sigmoid(tensor, temp)` verbatim:
    /// `1 / (1 + exp(clamp(-x / temp, -50, 50)))`.
    fn sigma(x: f64, tau: f64, mode: Mode) -> f64 {
        match mode {
            Mode::Paper => 1.0 / (1.0 + (-x / tau).exp()),
            Mode::Official => 1.0 / (1.0 + (-x / tau).clamp(-50.0, 50.0).exp()),
        }
    }

    /// Cosine similarities of row-major embeddings, in plain f64.
    fn similarities(embeddings: &[f64], d: usize) -> Vec<Vec<f64>> {
        let unit: Vec<Vec<f64>> = embeddings
            .chunks(d)
            .map(|row| {
                let norm = row.iter().map(|x| x * x).sum::<f64>().sqrt();
                row.iter().map(|x| x / norm).collect()
            })
            .collect();
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
        unit.iter()
            .map(|a| unit.iter().map(|b| dot(a, b)).collect())
            .collect()
    }

    /// The definition, term by term, in O(B³) loops.
    fn naive_value(embeddings: &[f64], d: usize, labels: &[i64], mode: Mode, tau: f64) -> f64 {
        let s = similarities(embeddings, d);
        let b = labels.len();
        let (mut total, mut queries) = (0.0, 0);
        for q in 0..b {
            let keep = |j: usize| mode == Mode::Official || j != q;
            let omega: Vec<usize> = (0..b).filter(|&j| keep(j)).collect();
            let positives: Vec<usize> = (0..b)
                .filter(|&j| keep(j) && labels[j] == labels[q])
                .collect();
            if positives.is_empty() {
                continue;
            }
            let rank = |i: usize, set: &[usize]| {
                1.0 + set
                    .iter()
                    .filter(|&&j| j != i)
                    .map(|&j| sigma(s[q][j] - s[q][i], tau, mode))
                    .sum::<f64>()
            };
            let ap: f64 = positives
                .iter()
                .map(|&i| rank(i, &positives) / rank(i, &omega))
                .sum();
            total += ap / positives.len() as f64;
            queries += 1;
        }
        1.0 - total / queries as f64
    }

    /// The definition as dense `[B, B, B]` tensors (masks built by loops), for reference
    /// gradients through autograd.
    fn naive_tensor(embeddings: &Tensor, labels: &[i64], mode: Mode, tau: f64) -> Tensor {
        let b = labels.len();
        let kind = embeddings.kind();
        let unit = embeddings / embeddings.square().sum_dim_intlist(1, true, kind).sqrt();
        let s = unit.matmul(&unit.tr());
        let diff = s.unsqueeze(1) - s.unsqueeze(2); // [q, i, j] = s_qj − s_qi
        let sig = match mode {
            Mode::Paper => (diff / tau).sigmoid(),
            Mode::Official => ((-diff / tau).clamp(-50.0, 50.0).exp() + 1.0).reciprocal(),
        };
        let (mut omega, mut pos3, mut pos) =
            (vec![0.0; b * b * b], vec![0.0; b * b * b], vec![0.0; b * b]);
        for q in 0..b {
            let keep = |j: usize| mode == Mode::Official || j != q;
            for i in 0..b {
                let positive_i = keep(i) && labels[i] == labels[q];
                pos[q * b + i] = f64::from(u8::from(positive_i));
                for j in 0..b {
                    let in_omega = keep(j) && j != i;
                    omega[(q * b + i) * b + j] = f64::from(u8::from(in_omega));
                    pos3[(q * b + i) * b + j] =
                        f64::from(u8::from(in_omega && labels[j] == labels[q]));
                }
            }
        }
        let mask = |v: &[f64], shape: &[i64]| Tensor::from_slice(v).view(shape).to_kind(kind);
        let (bi, shape3) = (b as i64, [b as i64; 3]);
        let rank_all = (&sig * mask(&omega, &shape3)).sum_dim_intlist(-1, false, kind) + 1.0;
        let rank_pos = (&sig * mask(&pos3, &shape3)).sum_dim_intlist(-1, false, kind) + 1.0;
        let pos = mask(&pos, &[bi, bi]);
        let count = pos.sum_dim_intlist(-1, false, kind);
        let valid = count.gt(0.0).to_kind(kind);
        let ap =
            (rank_pos / rank_all * &pos).sum_dim_intlist(-1, false, kind) / count.clamp_min(1.0);
        -(ap * &valid).sum(kind) / valid.sum(kind) + 1.0
    }

    fn ours(
        embeddings: &[f64],
        d: usize,
        labels: &[i64],
        loss: SmoothAp,
        kind: Kind,
    ) -> (f64, Vec<f64>) {
        let x = leaf(embeddings, d, kind);
        let value = loss.loss(&x, &labels_tensor(labels)).unwrap();
        assert_eq!(value.kind(), kind);
        value_and_grad(&value, &x)
    }

    /// Our loss against the O(B³) loops (value) and the dense form (gradient) on one batch, in
    /// float64 and float32, both modes, two temperatures.
    fn check_against_naive(embeddings: &[f64], d: usize, labels: &[i64], batch: &str) {
        for mode in [Mode::Paper, Mode::Official] {
            for tau in [DEFAULT_TAU, 0.1] {
                let expected = naive_value(embeddings, d, labels, mode, tau);
                let x = leaf(embeddings, d, Kind::Double);
                let dense = naive_tensor(&x, labels, mode, tau);
                let (dense_value, dense_grad) = value_and_grad(&dense, &x);
                assert!(
                    (dense_value - expected).abs() < 1e-12,
                    "the two naive forms differ"
                );
                let loss = SmoothAp::new(mode, tau).unwrap();
                for kind in [Kind::Double, Kind::Float] {
                    let (value, grad) = ours(embeddings, d, labels, loss, kind);
                    let context = format!("{batch} {mode:?} tau={tau} {kind:?}");
                    // float64 agrees to rounding (measured ≤ 1e-12). float32 rounds each
                    // sigmoid argument s/τ to ~1e-7·(1/τ): measured value errors ≤ 1e-7 and
                    // gradient errors ≤ 1.6e-4 (at B = 8, τ = 0.01), against float64 truth.
                    let (value_tol, grad_tol) = if kind == Kind::Double {
                        (1e-10, 1e-10)
                    } else {
                        (1e-5, 1e-3)
                    };
                    // Relative to the largest gradient, but never to less than 1e-6: on real
                    // embeddings at τ = 0.01 every sigmoid can saturate and the whole gradient
                    // be ~1e-12, where both sides are rounding noise of σ(1 − σ).
                    let scale = dense_grad.iter().fold(0f64, |m, g| m.max(g.abs()));
                    let error = relative_error(&grad, &dense_grad) * scale / scale.max(1e-6);
                    assert!(
                        (value - expected).abs() < value_tol,
                        "{context}: {value} vs {expected}"
                    );
                    assert!(
                        error < grad_tol,
                        "{context}: gradient off by {error:e} (largest {scale:e})"
                    );
                }
            }
        }
    }

    /// Random batches with classes of every size.
    #[test]
    fn matches_the_naive_definition() {
        for (b, seed) in [(8, 1), (64, 2), (224, 3)] {
            let (embeddings, labels) = random_batch(seed, b, 8, b as u64 / 4);
            check_against_naive(&embeddings, 8, &labels, &format!("random B={b}"));
        }
    }

    /// Real embeddings: the pretrained MobileFaceNet's 512-d vectors of real aligned faces
    /// (tight same-person clusters, where the sigmoids saturate), in a shuffled order with
    /// uneven classes. Skipped, saying so, without the faces.
    #[test]
    fn matches_the_naive_definition_on_real_embeddings() {
        use crate::backbone::Arch;
        use crate::data::folder::FaceFolder;
        use rand::seq::SliceRandom;
        use rand::SeedableRng;
        let test = "matches_the_naive_definition_on_real_embeddings";
        let Some(faces) = smoothface_tests::faces(test, "glint-aligned12") else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let (_vs, net) = crate::import::testing::pretrained_mobilefacenet(dir.path());

        let folder = FaceFolder::open(&faces, 1).unwrap();
        let mut order: Vec<usize> = (0..folder.len()).collect();
        order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(5));
        order.truncate(224);
        let spec = crate::backbone::input_spec(Arch::MobileFaceNet);
        let input = folder.load_batch(&order, &spec).unwrap();
        let out = tch::no_grad(|| net.forward_t(&input, false)).to_kind(Kind::Double);
        let embeddings = Vec::<f64>::try_from(out.flatten(0, -1)).unwrap();
        let labels: Vec<i64> = order.iter().map(|&i| folder.labels[i]).collect();
        for b in [8, 64, 224] {
            let context = format!("real B={b}");
            check_against_naive(&embeddings[..b * 512], 512, &labels[..b], &context);
        }
    }

    /// Autograd against central finite differences of the loss, in float64.
    #[test]
    fn gradient_matches_finite_differences() {
        let d = 3;
        let labels = [0, 0, 1, 1, 1, 2];
        let (embeddings, _) = random_batch(7, labels.len(), d, 1);
        for mode in [Mode::Paper, Mode::Official] {
            let loss = SmoothAp::new(mode, 0.05).unwrap();
            let (_, grad) = ours(&embeddings, d, &labels, loss, Kind::Double);
            let at = |x: &[f64]| {
                let t = Tensor::from_slice(x).view([-1, d as i64]);
                loss.loss(&t, &labels_tensor(&labels))
                    .unwrap()
                    .double_value(&[])
            };
            let numeric = central_differences(at, &embeddings, 1e-6);
            let error = relative_error(&grad, &numeric);
            assert!(error < 1e-6, "{mode:?}: gradient off by {error:e}");
            assert!(
                numeric.iter().any(|g| g.abs() > 1e-3),
                "a flat loss tests nothing"
            );
        }
    }

    /// A hand-computed batch. Unit embeddings e0 = (1, 0), e1 = (0.6, 0.8), e2 = (0.6, −0.8),
    /// labels [0, 0, 1]: s01 = s02 = 0.6, s12 = −0.28, s_qq = 1; τ = 0.01.
    ///
    /// Paper. Query 0: P = {1}, Ω = {1, 2}; R(1, P) = 1 and R(1, Ω) = 1 + σ((s02 − s01)/τ) =
    /// 1 + σ(0) = 3/2, so AP_0 = 2/3. Query 1: P = {0}, Ω = {0, 2}; R(0, Ω) = 1 + σ(−88) ≈ 1,
    /// AP_1 = 1. Query 2 has no positive. Loss = 1 − (2/3 + 1)/2 = 1/6.
    ///
    /// Official (q ranks itself, σ(±40) = 1 or 0 up to 4e-18). Query 0: P = {0, 1}, Ω = {0, 1, 2};
    /// i = 0: R(0, P) = 1 + σ(−40) ≈ 1, R(0, Ω) ≈ 1, ratio 1; i = 1: R(1, P) = 1 + σ(40) ≈ 2,
    /// R(1, Ω) = 1 + σ(40) + σ(0) = 5/2, ratio 4/5; AP_0 = 9/10. Query 1: P = {0, 1}; i = 0:
    /// R = 1 + σ(40) ≈ 2 in both sets (σ(−88) ≈ 0), ratio 1; i = 1: ≈ 1/1; AP_1 = 1. Query 2:
    /// P = {2}, R(2, Ω) = 1 + σ(−40) + σ(−128) ≈ 1, AP_2 = 1. Loss = 1 − 2.9/3 = 1/30.
    #[test]
    fn hand_computed_batch() {
        let embeddings = [1.0, 0.0, 0.6, 0.8, 0.6, -0.8];
        let labels = [0, 0, 1];
        for (mode, expected) in [(Mode::Paper, 1.0 / 6.0), (Mode::Official, 1.0 / 30.0)] {
            for kind in [Kind::Double, Kind::Float] {
                let x = leaf(&embeddings, 2, kind);
                let loss = SmoothAp::new(mode, 0.01)
                    .unwrap()
                    .loss(&x, &labels_tensor(&labels))
                    .unwrap();
                let value = loss.double_value(&[]);
                assert!(
                    (value - expected).abs() < 1e-6,
                    "{mode:?} {kind:?}: {value} vs {expected}"
                );
            }
        }
    }

    /// Permuting the batch permutes the gradient and keeps the loss; renaming the classes
    /// changes nothing; chunking changes nothing.
    #[test]
    fn invariances() {
        let (b, d) = (48, 6);
        let (embeddings, labels) = random_batch(11, b, d, 12);
        let mut rng = smoothface_tests::Rng::new(5);
        let mut order: Vec<usize> = (0..b).collect();
        for k in (1..b).rev() {
            order.swap(k, rng.below(k as u64 + 1) as usize);
        }
        let permuted: Vec<f64> = order
            .iter()
            .flat_map(|&i| embeddings[i * d..(i + 1) * d].to_vec())
            .collect();
        let permuted_labels: Vec<i64> = order.iter().map(|&i| labels[i]).collect();
        let renamed: Vec<i64> = labels.iter().map(|l| 1000 - 7 * l).collect();
        for mode in [Mode::Paper, Mode::Official] {
            let loss = SmoothAp::new(mode, DEFAULT_TAU).unwrap();
            let (value, grad) = ours(&embeddings, d, &labels, loss, Kind::Double);

            let (p_value, p_grad) = ours(&permuted, d, &permuted_labels, loss, Kind::Double);
            assert!((p_value - value).abs() < 1e-12);
            let unpermuted: Vec<f64> = (0..b)
                .flat_map(|i| {
                    let row = order.iter().position(|&o| o == i).unwrap();
                    p_grad[row * d..(row + 1) * d].to_vec()
                })
                .collect();
            assert!(relative_error(&unpermuted, &grad) < 1e-10);

            let (r_value, r_grad) = ours(&embeddings, d, &renamed, loss, Kind::Double);
            assert!((r_value - value).abs() < 1e-12);
            assert!(relative_error(&r_grad, &grad) < 1e-12);

            for elements in [1, 500] {
                let chunked = loss.with_chunk_elements(elements);
                let (c_value, c_grad) = ours(&embeddings, d, &labels, chunked, Kind::Double);
                assert!((c_value - value).abs() < 1e-12);
                assert!(relative_error(&c_grad, &grad) < 1e-12);
            }
        }
    }

    /// Scaling an embedding changes nothing (the loss normalises); the gradient is orthogonal
    /// to each raw embedding.
    #[test]
    fn normalises_the_embeddings() {
        let (b, d) = (16, 5);
        let (embeddings, labels) = random_batch(13, b, d, 4);
        let scaled: Vec<f64> = embeddings
            .iter()
            .enumerate()
            .map(|(k, x)| x * (1.0 + (k / d) as f64))
            .collect();
        let loss = SmoothAp::new(Mode::Paper, 0.1).unwrap();
        let (value, grad) = ours(&embeddings, d, &labels, loss, Kind::Double);
        let (s_value, _) = ours(&scaled, d, &labels, loss, Kind::Double);
        assert!((value - s_value).abs() < 1e-12);
        for (row, g) in embeddings.chunks(d).zip(grad.chunks(d)) {
            let dot: f64 = row.iter().zip(g).map(|(x, y)| x * y).sum();
            assert!(dot.abs() < 1e-12);
        }
    }

    /// Identical embeddings per class ranked first: AP 1, loss 0; a batch of singletons has no
    /// positive in paper mode, while in official mode each query is its own positive.
    #[test]
    fn edge_batches() {
        let embeddings = [1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0];
        let perfect = SmoothAp::new(Mode::Paper, 0.01).unwrap();
        let value = perfect
            .loss(
                &leaf(&embeddings, 2, Kind::Double),
                &labels_tensor(&[3, 3, 4, 4]),
            )
            .unwrap();
        // Each query's positive first: R(i, Ω) = 1 + 2σ(−100) ≈ 1 = R(i, P).
        assert!(value.double_value(&[]).abs() < 1e-12);

        let singletons = labels_tensor(&[0, 1, 2, 3]);
        let x = leaf(&embeddings, 2, Kind::Double);
        let err = perfect.loss(&x, &singletons).unwrap_err();
        assert!(matches!(err, LossError::NothingToCompare { .. }), "{err}");
        let official = SmoothAp::new(Mode::Official, 0.01)
            .unwrap()
            .loss(&x, &singletons)
            .unwrap();
        assert!(values(&official)[0].is_finite());
    }

    #[test]
    fn refuses_bad_input() {
        let x = leaf(&[1.0, 0.0, 0.0, 1.0], 2, Kind::Double);
        let loss = SmoothAp::new(Mode::Paper, DEFAULT_TAU).unwrap();
        for tau in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                SmoothAp::new(Mode::Paper, tau),
                Err(LossError::Parameter { .. })
            ));
        }
        assert_eq!(
            loss.loss(&x, &labels_tensor(&[0, 0, 0]))
                .unwrap_err()
                .to_string(),
            "labels must have shape [2] (one per embedding), got [3]"
        );
        assert!(matches!(
            loss.loss(&x, &Tensor::from_slice(&[0i32, 0])),
            Err(LossError::LabelKind(Kind::Int))
        ));
        assert!(matches!(
            loss.loss(&x.flatten(0, -1), &labels_tensor(&[0, 0])),
            Err(LossError::EmbeddingShape(_))
        ));
        let ints = Tensor::from_slice(&[1i64, 0, 0, 1]).view([2, 2]);
        assert!(matches!(
            loss.loss(&ints, &labels_tensor(&[0, 0])),
            Err(LossError::EmbeddingKind(Kind::Int64))
        ));
        let empty = Tensor::zeros([0, 2], (Kind::Float, tch::Device::Cpu));
        assert_eq!(
            loss.loss(&empty, &labels_tensor(&[])),
            Err(LossError::EmptyBatch)
        );
    }
}
