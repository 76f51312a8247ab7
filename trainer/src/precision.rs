//! Mixed precision, as PyTorch's autocast and `GradScaler` do it, for tch (whose `autocast`
//! binds only libtorch's CUDA float16 switch, so that it could not train in bfloat16 on a CPU).
//!
//! The variables, their gradients and Adam's moments stay in float32 (the master weights). Inside
//! [`autocast`], the layers that do the arithmetic (convolutions and fully connected layers)
//! cast their input and a copy of their weights to the run's compute kind; PReLU and residual
//! additions follow their input, and batch norm runs on the low-precision activations with its
//! float32 scale, shift and statistics, as under PyTorch's autocast. The cast is differentiable,
//! so the backward pass runs in the compute kind too and hands float32 gradients to the master
//! weights. The caller casts the embeddings back to float32 before the loss: Smooth-AP's
//! sigmoids at τ = 0.01 resolve similarity differences that bfloat16's 8 bits of mantissa would
//! round away.
//!
//! float16 overflows where bfloat16 does not (its largest value is 65504), and its small
//! gradients underflow to zero: a [`LossScaler`] multiplies the loss before the backward pass
//! and divides the gradients after it, skipping the steps whose gradients overflowed and
//! adjusting the factor as `torch.cuda.amp.GradScaler` does.

use crate::optim::Adam;
use anyhow::{bail, Result};
use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use tch::{Device, Kind, Tensor};

/// The arithmetic precision of a training step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in float32.
    #[default]
    F32,
    /// Convolutions and fully connected layers in bfloat16 (float32's range, 8-bit mantissa):
    /// no loss scaling needed. CPU and GPU.
    Bf16,
    /// Convolutions and fully connected layers in float16, with a dynamic [`LossScaler`]. GPU.
    F16,
}

impl Precision {
    /// Every precision, in the order the command line lists them.
    pub const ALL: [Precision; 3] = [Precision::F32, Precision::Bf16, Precision::F16];

    /// The name in configurations and on the command line (`f32`, `bf16`, `f16`).
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        }
    }

    /// The kind the casting layers compute in.
    pub fn compute_kind(self) -> Kind {
        match self {
            Precision::F32 => Kind::Float,
            Precision::Bf16 => Kind::BFloat16,
            Precision::F16 => Kind::Half,
        }
    }

    /// Whether `device` can train in this precision: float16 needs a GPU (libtorch's CPU
    /// kernels lack float16 for much of a backward pass, and are slow where they have it).
    pub fn check(self, device: Device) -> Result<()> {
        if self == Precision::F16 && device == Device::Cpu {
            bail!(
                "[train] precision \"f16\" needs a CUDA device; on the CPU use \"bf16\" (the same \
                 saving in memory, float32's range, no loss scaling)"
            );
        }
        Ok(())
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Precision {
    type Err = String;

    /// Parses a precision's [`Precision::name`].
    fn from_str(s: &str) -> Result<Self, String> {
        crate::parse_choice(s, &Precision::ALL, Precision::name, "precision")
    }
}

thread_local! {
    /// The compute kind of the [`autocast`] region this thread is in; float32 outside any.
    static COMPUTE_KIND: Cell<Kind> = const { Cell::new(Kind::Float) };
}

/// Runs `f` with the casting layers computing in `precision`'s kind, on this thread (libtorch's
/// autograd records the casts, so the backward pass needs no region of its own).
pub fn autocast<T>(precision: Precision, f: impl FnOnce() -> T) -> T {
    /// Restores the enclosing region's kind, even when `f` unwinds.
    struct Restore(Kind);
    impl Drop for Restore {
        fn drop(&mut self) {
            COMPUTE_KIND.with(|k| k.set(self.0));
        }
    }
    let _restore = Restore(COMPUTE_KIND.with(|k| k.replace(precision.compute_kind())));
    f()
}

/// A floating-point `x` in the current [`autocast`] region's compute kind (`x` itself,
/// shallowly, when it is already of that kind, float32 outside any region, or not floating).
pub fn cast(x: &Tensor) -> Tensor {
    let kind = COMPUTE_KIND.with(Cell::get);
    if x.kind() == kind || !x.is_floating_point() {
        x.shallow_clone()
    } else {
        x.to_kind(kind)
    }
}

/// What a [`LossScaler`] decided about one step's gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The gradients are finite (and unscaled): take the step.
    Step,
    /// Some gradient overflowed: skip the step; the scale has been lowered.
    Skip,
}

/// A dynamic loss scale, `torch.cuda.amp.GradScaler`'s algorithm: the loss is multiplied by
/// `scale` before the backward pass; after it, the gradients are divided by `scale` and checked.
/// A step with an infinite or NaN gradient is skipped and the scale multiplied by
/// [`LossScaler::BACKOFF`]; after [`LossScaler::GROWTH_INTERVAL`] good steps in a row it is
/// multiplied by [`LossScaler::GROWTH`]. Disabled (scale 1, every step taken unchecked) for
/// float32 and bfloat16, which do not underflow as float16 does.
#[derive(Debug, Clone, PartialEq)]
pub struct LossScaler {
    enabled: bool,
    scale: f64,
    growth_interval: u32,
    good_steps: u32,
}

impl LossScaler {
    /// The first scale, GradScaler's default (2^16).
    pub const INITIAL_SCALE: f64 = 65536.0;
    /// Factor on the scale after a skipped step.
    pub const BACKOFF: f64 = 0.5;
    /// Factor on the scale after [`Self::GROWTH_INTERVAL`] good steps.
    pub const GROWTH: f64 = 2.0;
    /// Good steps in a row before the scale grows (GradScaler's default).
    pub const GROWTH_INTERVAL: u32 = 2000;

    /// The scaler `precision` trains with: enabled for float16 only.
    pub fn new(precision: Precision) -> Self {
        Self::with(
            precision == Precision::F16,
            Self::INITIAL_SCALE,
            Self::GROWTH_INTERVAL,
        )
    }

    /// A scaler with its own first scale and growth interval (an enabled one needs both
    /// positive).
    pub fn with(enabled: bool, scale: f64, growth_interval: u32) -> Self {
        LossScaler {
            enabled,
            scale: if enabled { scale } else { 1.0 },
            growth_interval: growth_interval.max(1),
            good_steps: 0,
        }
    }

    /// Whether it scales at all.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The current scale (1 when disabled).
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// The loss to call `backward` on.
    pub fn scale_loss(&self, loss: &Tensor) -> Tensor {
        if self.enabled {
            loss * self.scale
        } else {
            loss.shallow_clone()
        }
    }

    /// Divides the gradients the last backward pass left in `adam`'s variables by the scale,
    /// checks them, and updates the scale; one synchronisation with the device in all.
    pub fn unscale(&mut self, adam: &Adam) -> Verdict {
        if !self.enabled {
            return Verdict::Step;
        }
        let inverse = 1.0 / self.scale;
        let mut overflowed: Option<Tensor> = None;
        tch::no_grad(|| {
            for mut grad in adam.gradients() {
                let _ = grad.g_mul_scalar_(inverse);
                let bad = grad.isfinite().logical_not().any();
                overflowed = Some(match overflowed.take() {
                    Some(o) => o.logical_or(&bad),
                    None => bad,
                });
            }
        });
        let overflowed = overflowed.is_some_and(|o| o.int64_value(&[]) != 0);
        if overflowed {
            self.scale *= Self::BACKOFF;
            self.good_steps = 0;
            Verdict::Skip
        } else {
            self.good_steps += 1;
            if self.good_steps >= self.growth_interval {
                self.scale *= Self::GROWTH;
                self.good_steps = 0;
            }
            Verdict::Step
        }
    }

    /// The scale and the good steps since it last changed, as `amp.scale` and
    /// `amp.good_steps`, for a checkpoint (nothing when disabled).
    pub fn state(&self) -> Vec<(String, Tensor)> {
        if !self.enabled {
            return Vec::new();
        }
        vec![
            ("amp.scale".into(), Tensor::from_slice(&[self.scale])),
            (
                "amp.good_steps".into(),
                Tensor::from_slice(&[i64::from(self.good_steps)]),
            ),
        ]
    }

    /// Restores what [`LossScaler::state`] wrote; a checkpoint without it (a run started in
    /// another precision) leaves the scaler as it is.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let (Some(scale), Some(good)) = (tensors.get("amp.scale"), tensors.get("amp.good_steps"))
        else {
            return Ok(());
        };
        let scale = scale
            .f_double_value(&[0])
            .ok()
            .filter(|s| *s > 0.0 && s.is_finite());
        let good = good
            .f_int64_value(&[0])
            .ok()
            .and_then(|g| u32::try_from(g).ok());
        match (scale, good) {
            (Some(scale), Some(good)) => {
                (self.scale, self.good_steps) = (scale, good);
                Ok(())
            }
            _ => bail!("`amp.scale` or `amp.good_steps` is not a loss scaler's state"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OptimizerConfig;
    use tch::nn;

    #[test]
    fn cast_follows_the_innermost_region_and_restores_it() {
        let x = Tensor::from_slice(&[1.0f32, 2.0]);
        assert_eq!(cast(&x).kind(), Kind::Float);
        autocast(Precision::Bf16, || {
            assert_eq!(cast(&x).kind(), Kind::BFloat16);
            autocast(Precision::F32, || assert_eq!(cast(&x).kind(), Kind::Float));
            assert_eq!(cast(&x).kind(), Kind::BFloat16);
        });
        assert_eq!(cast(&x).kind(), Kind::Float);
        // Integer tensors are never cast.
        let labels = Tensor::from_slice(&[1i64]);
        assert_eq!(cast(&labels).kind(), Kind::Int64);
        autocast(Precision::Bf16, || {
            assert_eq!(cast(&labels).kind(), Kind::Int64)
        });
    }

    #[test]
    fn names_parse_and_f16_needs_a_gpu() {
        for p in Precision::ALL {
            assert_eq!(p.name().parse::<Precision>().unwrap(), p);
        }
        assert!("fp16".parse::<Precision>().unwrap_err().contains("bf16"));
        assert!(Precision::F16.check(Device::Cpu).is_err());
        assert!(Precision::Bf16.check(Device::Cpu).is_ok());
        assert!(Precision::F16.check(Device::Cuda(0)).is_ok());
    }

    /// One variable `w` and an Adam over it.
    fn one_variable() -> (nn::VarStore, Tensor, Adam) {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().var("w", &[4], nn::Init::Const(1.0));
        let config = OptimizerConfig {
            lr: 0.1,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        };
        let adam = Adam::new(&vs, &config);
        (vs, w, adam)
    }

    /// A step as `fit` takes it: scaled backward, unscale, step unless skipped.
    fn scaled_step(scaler: &mut LossScaler, adam: &mut Adam, loss: Tensor) -> Verdict {
        adam.zero_grad();
        scaler.scale_loss(&loss).backward();
        let verdict = scaler.unscale(adam);
        if verdict == Verdict::Step {
            adam.step();
        }
        verdict
    }

    /// A gradient of 1e35 per element is finite in float32, but times the scale 2^16 it is
    /// 6.6e39, past float32's largest value: the scaled backward pass overflows to infinity, as
    /// a float16 one does past 65504. The step must be skipped (weights and Adam untouched), the
    /// scale halved, and a finite step afterwards taken with the true (unscaled) gradient.
    #[test]
    fn an_overflowing_step_is_skipped_and_the_scale_backs_off() {
        let (_vs, w, mut adam) = one_variable();
        let mut scaler = LossScaler::with(true, LossScaler::INITIAL_SCALE, 3);
        let verdict = scaled_step(&mut scaler, &mut adam, (&w * 1e35).sum(Kind::Float));
        assert_eq!(verdict, Verdict::Skip);
        assert_eq!(adam.steps(), 0);
        assert_eq!(w, Tensor::ones([4], tch::kind::FLOAT_CPU));
        assert_eq!(scaler.scale(), LossScaler::INITIAL_SCALE * 0.5);

        // A NaN gradient is skipped the same way.
        let nan = (&w * f64::NAN).sum(Kind::Float);
        assert_eq!(scaled_step(&mut scaler, &mut adam, nan), Verdict::Skip);
        assert_eq!(scaler.scale(), LossScaler::INITIAL_SCALE * 0.25);

        // A finite step: the gradient Adam sees is the unscaled one. Loss sum(3 w) has
        // gradient 3; Adam's first step moves each weight by lr = 0.1 against its sign
        // whatever the gradient's size, so check the gradient itself.
        let verdict = scaled_step(&mut scaler, &mut adam, (&w * 3.0).sum(Kind::Float));
        assert_eq!(verdict, Verdict::Step);
        let grad = w.grad();
        assert!((grad - 3.0).abs().max().double_value(&[]) < 1e-6);
        assert_eq!(adam.steps(), 1);
        let moved = (&w - 0.9).abs().max().double_value(&[]);
        assert!(moved < 1e-6, "w should be 0.9, off by {moved}");

        // Three good steps in a row (the interval given) double the scale.
        let before = scaler.scale();
        for _ in 0..2 {
            scaled_step(&mut scaler, &mut adam, (&w * 3.0).sum(Kind::Float));
        }
        assert_eq!(scaler.scale(), before * 2.0);
    }

    #[test]
    fn a_disabled_scaler_changes_nothing_and_its_state_round_trips() {
        let (_vs, w, mut adam) = one_variable();
        let mut off = LossScaler::new(Precision::Bf16);
        assert!(!off.enabled() && off.scale() == 1.0 && off.state().is_empty());
        scaled_step(&mut off, &mut adam, (&w * 2.0).sum(Kind::Float));
        assert_eq!(adam.steps(), 1);
        assert!((w.grad() - 2.0).abs().max().double_value(&[]) < 1e-7);

        let mut on = LossScaler::new(Precision::F16);
        on.unscale(&adam);
        let saved: HashMap<String, Tensor> = on.state().into_iter().collect();
        let mut restored = LossScaler::new(Precision::F16);
        restored.load_state(&saved).unwrap();
        assert_eq!(restored, on);
        let mut bad = saved;
        bad.insert("amp.scale".into(), Tensor::from_slice(&[-1.0f64]));
        assert!(restored.load_state(&bad).is_err());
    }
}
