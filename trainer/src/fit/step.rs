//! One optimiser step: forward in the run's precision, the loss in float32, backward through
//! the loss scaler, Adam unless the scaler skips. `fit` and `bench-step` both take this step, so
//! the benchmark times what training does.
//!
//! Data-parallel ([`Trainee::group`] set), each process holds a share of the global batch: its
//! embeddings are all-gathered (detached) and the global batch rebuilt with the process's own
//! share still on the graph, so every query is ranked against the whole global batch and every
//! process computes the same global loss. Its backward pass then gives the derivative of the
//! global loss through this process's share only; the sum of those over the processes (a c10d
//! all-reduce of the parameter gradients) is the gradient one process would get from the whole
//! batch, and every process takes the same Adam step from it. Parameters the loss reaches
//! directly rather than through the embeddings (the ArcFace head) get the whole derivative on
//! every process: their sum is divided by the number of processes.

use super::{Objective, HEAD};
use crate::backbone::Backbone;
use crate::dist::ProcessGroup;
use crate::loss::LossError;
use crate::optim::Adam;
use crate::precision::{autocast, LossScaler, Precision, Verdict};
use tch::{Kind, Tensor};

/// The model and how it trains: what every step of a run shares.
pub struct Trainee<'a> {
    /// The network.
    pub backbone: &'a dyn Backbone,
    /// The loss (with the ArcFace head where it has one).
    pub objective: &'a Objective,
    /// The arithmetic of the forward and backward passes.
    pub precision: Precision,
    /// The process group of a data-parallel run (None: one process trains on whole batches).
    pub group: Option<&'a ProcessGroup>,
    /// Whether the batch norms in training mode use the statistics of the global batch
    /// (`[train] sync_batch_norm`); only in a run of more than one process.
    pub sync_batch_norm: bool,
}

/// The gradients are all-reduced in flat buckets of this many bytes at most (DDP's default).
pub const BUCKET_BYTES: usize = 25 << 20;

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The loss refused the batch.
    #[error(transparent)]
    Loss(#[from] LossError),
    /// A collective failed (a process is gone, or timed out).
    #[error("{0:#}")]
    Dist(anyhow::Error),
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepOutcome {
    /// The batch's loss (unscaled), before the update.
    pub loss: f64,
    /// Whether Adam updated the weights (false when the loss scaler found an overflow).
    pub taken: bool,
    /// Faces in the (global) batch.
    pub images: usize,
}

impl Trainee<'_> {
    /// Trains on one batch: `input` and `labels` already on the model's device.
    pub fn step(
        &self,
        adam: &mut Adam,
        scaler: &mut LossScaler,
        input: &Tensor,
        labels: &Tensor,
    ) -> Result<StepOutcome, StepError> {
        let forward = || {
            autocast(self.precision, || self.backbone.forward_t(input, true)).to_kind(Kind::Float)
        };
        let embeddings = match self.group {
            Some(group) if self.sync_batch_norm && group.world() > 1 => {
                crate::dist::sync_batch_norm(group, forward).map_err(StepError::Dist)?
            }
            _ => forward(),
        };
        let (embeddings, labels) = match self.group {
            None => (embeddings, labels.shallow_clone()),
            Some(group) => global_batch(group, &embeddings, labels).map_err(StepError::Dist)?,
        };
        let images = embeddings.size().first().copied().unwrap_or(0) as usize;
        let loss = self.objective.loss(&embeddings, &labels)?;
        adam.zero_grad();
        // The backward pass of a synchronised batch norm runs collectives, which may fail.
        scaler
            .scale_loss(&loss)
            .f_backward()
            .map_err(|e| StepError::Dist(anyhow::Error::new(e).context("backward pass")))?;
        if let Some(group) = self.group {
            sum_gradients(group, adam).map_err(StepError::Dist)?;
        }
        let taken = scaler.unscale(adam) == Verdict::Step;
        if taken {
            adam.step();
        }
        Ok(StepOutcome {
            loss: loss.double_value(&[]),
            taken,
            images,
        })
    }
}

/// The global batch's embeddings (this process's share still on the graph, the others'
/// detached copies) and labels, in rank order.
fn global_batch(
    group: &ProcessGroup,
    embeddings: &Tensor,
    labels: &Tensor,
) -> anyhow::Result<(Tensor, Tensor)> {
    let (all, lengths) = group.all_gather_uneven(&embeddings.detach())?;
    let (all_labels, _) = group.all_gather_uneven(&labels.to_device(embeddings.device()))?;
    // Where this share sits: the lengths before it.
    let n = embeddings.size()[0];
    let before: i64 = lengths[..group.rank()].iter().sum();
    let total = all.size()[0];
    let global = Tensor::cat(
        &[
            all.narrow(0, 0, before),
            embeddings.shallow_clone(),
            all.narrow(0, before + n, total - before - n),
        ],
        0,
    );
    Ok((global, all_labels))
}

/// Sums the gradients over the processes (bucketed); the head's, which every process computed
/// whole, are then averaged instead.
fn sum_gradients(group: &ProcessGroup, adam: &Adam) -> anyhow::Result<()> {
    let named: Vec<(&str, Tensor)> = adam.named_gradients().collect();
    let grads: Vec<&Tensor> = named.iter().map(|(_, g)| g).collect();
    group.all_reduce_sum_bucketed(&grads, BUCKET_BYTES)?;
    let head = format!("{HEAD}.");
    let world = group.world() as f64;
    tch::no_grad(|| {
        for (name, g) in &named {
            if name.starts_with(&head) {
                let _ = g.shallow_clone().g_div_scalar_(world);
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backbone::{Arch, EMBEDDING_SIZE};
    use crate::config::{LossConfig, OptimizerConfig};
    use crate::precision::cast;
    use tch::nn;

    /// Every trainable variable of `vs`, flattened and concatenated, in name order.
    fn flat(vs: &nn::VarStore, of: impl Fn(&Tensor) -> Tensor) -> Tensor {
        let mut vars: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, v)| v.requires_grad())
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        Tensor::cat(
            &vars
                .iter()
                .map(|(_, v)| of(v).flatten(0, -1))
                .collect::<Vec<_>>(),
            0,
        )
    }

    fn cosine(a: &Tensor, b: &Tensor) -> f64 {
        (a.dot(b) / (a.norm() * b.norm())).double_value(&[])
    }

    /// The pretrained MobileFaceNet (imported into `dir`) and Smooth-AP at τ = 0.1, one step
    /// in `precision` on `input` (16 faces of 4 people); returns the loss, the gradient and the
    /// weights' change (flattened), and the embeddings of the starting weights as the backbone
    /// computes them in `precision`.
    fn one_step(
        precision: Precision,
        dir: &std::path::Path,
        input: &Tensor,
        labels: &Tensor,
    ) -> (f64, Tensor, Tensor, Tensor) {
        let (vs, backbone) = crate::import::testing::pretrained_mobilefacenet(dir);
        let loss = LossConfig {
            tau: 0.1,
            ..LossConfig::default()
        };
        let objective = Objective::new(&loss, &vs.root(), 1, EMBEDDING_SIZE).unwrap();
        let optimizer = OptimizerConfig {
            lr: 1e-3,
            ..OptimizerConfig::default()
        };
        let mut adam = Adam::new(&vs, &optimizer);
        let mut scaler = LossScaler::new(precision);
        let before = flat(&vs, |v| v.detach().copy());
        let embeddings = tch::no_grad(|| autocast(precision, || backbone.forward_t(input, true)));
        let trainee = Trainee {
            backbone: backbone.as_ref(),
            objective: &objective,
            precision,
            group: None,
            sync_batch_norm: false,
        };
        let outcome = trainee.step(&mut adam, &mut scaler, input, labels).unwrap();
        assert!(outcome.taken);
        let grad = flat(&vs, Tensor::grad);
        let delta = flat(&vs, |v| v.detach().copy()) - before;
        (outcome.loss, grad, delta, embeddings)
    }

    /// A bfloat16 step (convolutions in bfloat16, weights, Adam and the loss in float32) must
    /// move the weights as the float32 step does, within bfloat16's rounding (8 bits of
    /// mantissa, a relative error of 2^-9 per operation): the loss within 2^-9, the gradient
    /// within 0.99 cosine and 2% of its norm, and Adam's update within 0.9 cosine (Adam's first
    /// step is lr·g/|g| per element, so the gradient's smallest elements, whose signs bfloat16
    /// rounding can flip, move as much as the largest). The loss bound is absolute: Smooth-AP's
    /// loss is 1 − AP, and AP (a quantity of scale 1, here about 0.95) is what bfloat16 rounds,
    /// so the error relative to the small loss depends on how the CPU's bfloat16 kernels round
    /// (measured: 5e-6 on one x86-64 machine, 3.8e-4 on CI's; gradient cosine 0.996 and norm
    /// 0.2%, update cosine 0.94).
    /// The embeddings must really be computed in bfloat16 (else the test would compare float32
    /// with itself). Real weights and faces: a randomly initialised MobileFaceNet (no batch
    /// norm) is chaotic, its float32 and bfloat16 gradients uncorrelated.
    #[test]
    fn a_bf16_step_moves_the_weights_like_an_f32_step() {
        let test = "a_bf16_step_moves_the_weights_like_an_f32_step";
        let Some(faces) = smoothface_tests::faces(test, "glint-aligned12") else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let folder = crate::data::folder::FaceFolder::open(&faces, 4).unwrap();
        // 4 photos of each of the first 4 people.
        let order: Vec<usize> = (0..4)
            .flat_map(|person| {
                let first = folder.labels.iter().position(|&l| l == person).unwrap();
                first..first + 4
            })
            .collect();
        let spec = crate::backbone::input_spec(Arch::MobileFaceNet);
        let input = folder.load_batch(&order, &spec).unwrap();
        let labels =
            Tensor::from_slice(&order.iter().map(|&i| folder.labels[i]).collect::<Vec<_>>());
        let (loss32, grad32, delta32, emb32) =
            one_step(Precision::F32, dir.path(), &input, &labels);
        let (loss16, grad16, delta16, emb16) =
            one_step(Precision::Bf16, dir.path(), &input, &labels);
        assert_eq!((emb32.kind(), emb16.kind()), (Kind::Float, Kind::BFloat16));
        let emb_diff = (emb16.to_kind(Kind::Float) - &emb32)
            .abs()
            .max()
            .double_value(&[]);
        let largest = emb32.abs().max().double_value(&[]);
        assert!(
            emb_diff > 1e-4 * largest,
            "bf16 embeddings within {emb_diff} of f32's: not computed in bf16"
        );
        assert!(
            (loss16 - loss32).abs() <= 2f64.powi(-9),
            "loss {loss16} vs {loss32}"
        );
        let g = cosine(&grad16, &grad32);
        let norm = (grad16.norm().double_value(&[]) / grad32.norm().double_value(&[]) - 1.0).abs();
        let d = cosine(&delta16, &delta32);
        eprintln!("bf16 vs f32: loss {loss16} / {loss32}, gradient cosine {g:.5}, norm {norm:.4}, update cosine {d:.5}, embeddings max diff {emb_diff:.4}");
        assert!(
            g >= 0.99 && norm <= 0.02,
            "gradient cosine {g}, norm off by {norm}"
        );
        assert!(d >= 0.9, "update cosine {d}");
        // The master weights and their gradients stay float32.
        assert_eq!((grad16.kind(), delta16.kind()), (Kind::Float, Kind::Float));
        assert_eq!(
            autocast(Precision::Bf16, || cast(&grad16)).kind(),
            Kind::BFloat16
        );
    }
}
