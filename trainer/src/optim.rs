//! Adam with L2 weight decay, as `torch.optim.Adam(weight_decay=...)` computes it, with its
//! state readable and writable as named tensors.
//!
//! tch's own optimisers keep their moments inside libtorch where they can be neither saved nor
//! restored, so a resumed run would restart Adam from zero moments and diverge from the run it
//! continues. This one keeps them as tensors that go into the checkpoint ([`crate::checkpoint`]).
//! The update, for each trainable variable `p` with gradient `g`, at step `t` (from 1):
//!
//! ```text
//! g ← g + weight_decay · p
//! m ← β1 m + (1 − β1) g          v ← β2 v + (1 − β2) g²
//! p ← p − lr · (m / (1 − β1^t)) / (sqrt(v / (1 − β2^t)) + eps)
//! ```
//!
//! [`OptimizerConfig`] is its `[optimizer]` section of a training configuration.

use anyhow::{anyhow, ensure, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use tch::{nn, Tensor};

/// Adam with L2 weight decay (torch's `Adam(weight_decay=...)`, as the Smooth-AP paper used).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerConfig {
    /// Learning rate.
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// L2 penalty added to every gradient.
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    /// Decay of the first moment.
    #[serde(default = "default_beta1")]
    pub beta1: f64,
    /// Decay of the second moment.
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    /// Added to the second moment's square root.
    #[serde(default = "default_eps")]
    pub eps: f64,
}

fn default_lr() -> f64 {
    1e-5
}
fn default_weight_decay() -> f64 {
    4e-4
}
fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.999
}
fn default_eps() -> f64 {
    1e-8
}

/// The defaults of an empty `[optimizer]` table.
impl Default for OptimizerConfig {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

/// Adam over the trainable variables of one var store.
#[derive(Debug)]
pub struct Adam {
    config: OptimizerConfig,
    /// `(name, variable, first moment, second moment)`, sorted by name.
    params: Vec<(String, Tensor, Tensor, Tensor)>,
    step: i64,
}

impl Adam {
    /// Adam over every variable of `vs` that requires a gradient, moments at zero.
    pub fn new(vs: &nn::VarStore, config: &OptimizerConfig) -> Self {
        let mut params: Vec<(String, Tensor, Tensor, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, v)| v.requires_grad())
            .map(|(name, v)| {
                let (m, v2) = (v.zeros_like(), v.zeros_like());
                (name, v, m, v2)
            })
            .collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        Adam {
            config: config.clone(),
            params,
            step: 0,
        }
    }

    /// Steps taken.
    pub fn steps(&self) -> i64 {
        self.step
    }

    /// The gradients the last backward pass left, one per variable it reached (sharing their
    /// storage: changing one in place changes the gradient [`Adam::step`] uses).
    pub fn gradients(&self) -> impl Iterator<Item = Tensor> + '_ {
        self.params
            .iter()
            .map(|(_, p, _, _)| p.grad())
            .filter(Tensor::defined)
    }

    /// [`Adam::gradients`] with the names of their variables, in name order.
    pub fn named_gradients(&self) -> impl Iterator<Item = (&str, Tensor)> + '_ {
        self.params
            .iter()
            .map(|(name, p, _, _)| (name.as_str(), p.grad()))
            .filter(|(_, g)| g.defined())
    }

    /// Clears every variable's gradient; call before each backward pass.
    pub fn zero_grad(&mut self) {
        for (_, p, _, _) in &mut self.params {
            let mut grad = p.grad();
            if grad.defined() {
                let _ = grad.detach_().zero_();
            }
        }
    }

    /// One update from the gradients the last backward pass left; variables without a
    /// gradient (not reached by the loss) are left as they are.
    pub fn step(&mut self) {
        self.step += 1;
        let c = &self.config;
        let t = self.step as i32;
        let (bias1, bias2) = (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t));
        tch::no_grad(|| {
            for (_, p, m, v) in &mut self.params {
                let grad = p.grad();
                if !grad.defined() {
                    continue;
                }
                let g = if c.weight_decay > 0.0 {
                    &grad + &*p * c.weight_decay
                } else {
                    grad
                };
                let _ = m.g_mul_scalar_(c.beta1).g_add_(&(&g * (1.0 - c.beta1)));
                let _ = v
                    .g_mul_scalar_(c.beta2)
                    .g_add_(&(g.square() * (1.0 - c.beta2)));
                let denominator = (&*v / bias2).sqrt() + c.eps;
                let update = &*m / &denominator * (c.lr / bias1);
                let _ = p.g_sub_(&update);
            }
        });
    }

    /// The moments as `adam.m.<variable>` and `adam.v.<variable>`, and the step count as
    /// `adam.step`, for a checkpoint.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut state = vec![("adam.step".to_string(), Tensor::from_slice(&[self.step]))];
        for (name, _, m, v) in &self.params {
            state.push((format!("adam.m.{name}"), m.shallow_clone()));
            state.push((format!("adam.v.{name}"), v.shallow_clone()));
        }
        state
    }

    /// Restores what [`Adam::state`] wrote; every variable's moments must be there.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        let step = tensors
            .get("adam.step")
            .ok_or_else(|| anyhow!("no `adam.step`: not a checkpoint written by fit"))?;
        // A damaged or tampered checkpoint may hold anything under these names: every value is
        // checked, so that it is an error rather than a panic in libtorch.
        self.step = step
            .f_int64_value(&[0])
            .map_err(|e| anyhow!("`adam.step` is not a step count: {e}"))?;
        tch::no_grad(|| {
            for (name, _, m, v) in &mut self.params {
                for (moment, key) in [(m, format!("adam.m.{name}")), (v, format!("adam.v.{name}"))]
                {
                    let value = tensors
                        .get(&key)
                        .ok_or_else(|| anyhow!("no `{key}`: not a checkpoint of this model"))?;
                    ensure!(
                        value.size() == moment.size(),
                        "`{key}` has shape {:?}, the model needs {:?}",
                        value.size(),
                        moment.size()
                    );
                    moment.f_copy_(value)?;
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::OptimizerConfig as _;
    use tch::{Device, Kind};

    fn config(weight_decay: f64) -> OptimizerConfig {
        OptimizerConfig {
            lr: 0.05,
            weight_decay,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }

    /// A small least-squares problem in a var store: `|A w - b|^2` with a fixed A, b.
    fn problem() -> (nn::VarStore, Tensor) {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().var("w", &[3, 2], nn::Init::Const(0.0));
        tch::no_grad(|| {
            w.shallow_clone()
                .copy_(&Tensor::from_slice(&[0.3f32, -0.2, 0.5, 0.1, -0.4, 0.7]).reshape([3, 2]))
        });
        (vs, w)
    }

    fn objective(w: &Tensor) -> Tensor {
        let a = Tensor::from_slice(&[1.0f32, 2.0, -1.0, 0.5, 0.0, 3.0, 1.5, -2.0]).reshape([4, 2]);
        let b = Tensor::from_slice(&[1.0f32, 0.0, -1.0, 2.0, 0.5, 1.0, 0.0, -0.5]).reshape([4, 2]);
        (a.matmul(&w.tr()).sum(Kind::Float) - b.sum(Kind::Float)).square()
            + (a.matmul(&w.tr()) - 0.1).square().sum(Kind::Float)
    }

    /// libtorch's own Adam (through tch) is the independent reference.
    #[test]
    fn steps_equal_libtorchs_adam_with_weight_decay() {
        for wd in [0.0, 0.01] {
            let (vs_ours, w_ours) = problem();
            let mut ours = Adam::new(&vs_ours, &config(wd));
            let (vs_ref, w_ref) = problem();
            let mut reference = nn::Adam {
                wd,
                ..Default::default()
            }
            .build(&vs_ref, 0.05)
            .unwrap();
            for _ in 0..20 {
                ours.zero_grad();
                objective(&w_ours).backward();
                ours.step();
                reference.backward_step(&objective(&w_ref));
            }
            let diff = (&w_ours - &w_ref).abs().max().double_value(&[]);
            assert!(diff < 1e-5, "weight decay {wd}: max difference {diff}");
            assert_eq!(ours.steps(), 20);
        }
    }

    #[test]
    fn a_restored_state_continues_exactly() {
        let (vs_a, w_a) = problem();
        let mut a = Adam::new(&vs_a, &config(0.01));
        for _ in 0..5 {
            a.zero_grad();
            objective(&w_a).backward();
            a.step();
        }
        // A second optimiser on a copy of the weights, given the first one's state.
        let (vs_b, w_b) = problem();
        tch::no_grad(|| w_b.shallow_clone().copy_(&w_a));
        let mut b = Adam::new(&vs_b, &config(0.01));
        let state: HashMap<String, Tensor> = a.state().into_iter().collect();
        b.load_state(&state).unwrap();
        for opt in [(&mut a, &w_a), (&mut b, &w_b)] {
            for _ in 0..5 {
                opt.0.zero_grad();
                objective(opt.1).backward();
                opt.0.step();
            }
        }
        assert_eq!(w_a, w_b);
        assert!(b.load_state(&HashMap::new()).is_err());
    }

    /// A tampered checkpoint: moments of another shape, an empty step count. Errors naming the
    /// entry, not panics in libtorch.
    #[test]
    fn a_tampered_state_is_an_error() {
        let (vs, _) = problem();
        let mut adam = Adam::new(&vs, &config(0.0));
        let state = |adam: &Adam| -> HashMap<String, Tensor> { adam.state().into_iter().collect() };
        let mut wrong_shape = state(&adam);
        wrong_shape.insert("adam.m.w".into(), Tensor::zeros([5], tch::kind::FLOAT_CPU));
        let err = adam.load_state(&wrong_shape).unwrap_err().to_string();
        assert!(err.contains("adam.m.w") && err.contains("shape"), "{err}");
        let mut no_step = state(&adam);
        no_step.insert("adam.step".into(), Tensor::zeros([0], tch::kind::INT64_CPU));
        let err = adam.load_state(&no_step).unwrap_err().to_string();
        assert!(err.contains("adam.step"), "{err}");
        let good = state(&adam);
        adam.load_state(&good).unwrap();
    }
}
