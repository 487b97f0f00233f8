//! Adam with bias correction and coupled L2 weight decay (PyTorch's `torch.optim.Adam`), and AdamW
//! with decoupled weight decay (`torch.optim.AdamW`); no amsgrad. One fused kernel serves both.

use super::state::Params;
use super::{Optimizer, OptimizerState};
use crate::backend::{self, AdamStep};
use crate::core::error::Result;
use crate::cuda::StepScalars;
use crate::tensor::Tensor;

/// Adam's and AdamW's hyper-parameters. `Default` is PyTorch's Adam: lr 1e-3, betas (0.9, 0.999),
/// eps 1e-8, no weight decay ([`AdamW::new`] uses PyTorch AdamW's weight decay 0.01).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    pub lr: f64,
    /// Decay of the first moment (mean of gradients), in [0, 1).
    pub beta1: f64,
    /// Decay of the second moment (mean of squared gradients), in [0, 1).
    pub beta2: f64,
    /// Added to the root of the corrected second moment, > 0.
    pub eps: f64,
    /// Adam: L2, added to the gradient (`g' = g + wd·w`). AdamW: decoupled, `w ← (1 − lr·wd)·w`.
    pub weight_decay: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

impl AdamConfig {
    fn validate(&self, op: &'static str) -> Result<()> {
        backend::check_lr(op, self.lr)?;
        backend::check_rate(op, "beta1", self.beta1)?;
        backend::check_rate(op, "beta2", self.beta2)?;
        backend::check_eps(op, self.eps)?;
        backend::check_weight_decay(op, self.weight_decay)
    }
}

const STATE: &[&str] = &["exp_avg", "exp_avg_sq"];

/// What Adam and AdamW share: everything but where the weight decay goes.
#[derive(Clone, Debug)]
struct AdamCore {
    name: &'static str,
    decoupled: bool,
    config: AdamConfig,
    params: Params,
    steps: u64,
}

impl AdamCore {
    fn new(
        name: &'static str,
        decoupled: bool,
        params: &[Tensor],
        config: AdamConfig,
    ) -> Result<AdamCore> {
        config.validate(name)?;
        Ok(AdamCore {
            name,
            decoupled,
            config,
            params: Params::new(name, params, STATE)?,
            steps: 0,
        })
    }

    /// The hyper-parameters of the next step.
    fn next_step(&self) -> AdamStep {
        let c = self.config;
        let (l2, decoupled) = if self.decoupled {
            (0.0, c.weight_decay)
        } else {
            (c.weight_decay, 0.0)
        };
        AdamStep {
            lr: c.lr,
            beta1: c.beta1,
            beta2: c.beta2,
            eps: c.eps,
            weight_decay: l2,
            decoupled_weight_decay: decoupled,
            step: self.steps + 1,
        }
    }

    fn graph_scalars(&self) -> StepScalars {
        let c = self.next_step().coefficients().cast::<f32>();
        StepScalars {
            step: 0,
            lr: self.config.lr as f32,
            step_size: c.step_size,
            bias_correction2_sqrt: c.bias_correction2_sqrt,
            decay: c.decay,
        }
    }

    fn step(&mut self, params: &mut [&mut Tensor], grads: &[&Tensor]) -> Result<()> {
        self.params.check(params, grads)?;
        let hp = self.next_step();
        let (m, v) = self.params.state.split_at_mut(1);
        for (((p, g), m), v) in params.iter_mut().zip(grads).zip(&mut m[0]).zip(&mut v[0]) {
            backend::adam(p, g, m, v, &hp)?;
        }
        self.steps = hp.step;
        Ok(())
    }

    fn set_lr(&mut self, lr: f64) -> Result<()> {
        backend::check_lr(self.name, lr)?;
        self.config.lr = lr;
        Ok(())
    }

    fn state(&self) -> OptimizerState {
        OptimizerState {
            optimizer: self.name.into(),
            step: self.steps,
            lr: self.config.lr,
            tensors: self.params.named_state(),
        }
    }

    fn load_state(&mut self, state: &OptimizerState) -> Result<()> {
        self.params.state = self.params.loaded_state(self.name, state)?;
        self.steps = state.step;
        self.config.lr = state.lr;
        Ok(())
    }
}

/// Adam with bias correction and L2 weight decay: `g' = g + wd·w; m = β1·m + (1 − β1)·g';
/// v = β2·v + (1 − β2)·g'²; w −= lr·m̂/(sqrt(v̂) + eps)` with `m̂ = m/(1 − β1^t)`,
/// `v̂ = v/(1 − β2^t)` and `t` the step count kept here.
#[derive(Clone, Debug)]
pub struct Adam(AdamCore);

impl Adam {
    /// Adam for `params` with learning rate `lr` and PyTorch's other defaults. Its state (two
    /// moment estimates per parameter) is allocated here.
    pub fn new(params: &[Tensor], lr: f64) -> Result<Adam> {
        Adam::with_config(
            params,
            AdamConfig {
                lr,
                ..AdamConfig::default()
            },
        )
    }

    /// Adam for `params` with every hyper-parameter given (`weight_decay` is L2).
    pub fn with_config(params: &[Tensor], config: AdamConfig) -> Result<Adam> {
        AdamCore::new("adam", false, params, config).map(Adam)
    }

    pub fn config(&self) -> AdamConfig {
        self.0.config
    }

    /// Updates `params[i]` in place with `grads[i]` (the parameters it was created for, in order).
    pub fn step(&mut self, params: &mut [&mut Tensor], grads: &[&Tensor]) -> Result<()> {
        self.0.step(params, grads)
    }
}

/// AdamW: Adam whose weight decay is decoupled from the gradient, `w ← (1 − lr·wd)·w` before the
/// Adam step (PyTorch's order); the moments see the raw gradient.
#[derive(Clone, Debug)]
pub struct AdamW(AdamCore);

impl AdamW {
    /// AdamW for `params` with learning rate `lr` and PyTorch AdamW's defaults (betas (0.9, 0.999),
    /// eps 1e-8, weight decay 0.01). Its state is allocated here.
    pub fn new(params: &[Tensor], lr: f64) -> Result<AdamW> {
        AdamW::with_config(
            params,
            AdamConfig {
                lr,
                weight_decay: 0.01,
                ..AdamConfig::default()
            },
        )
    }

    /// AdamW for `params` with every hyper-parameter given (`weight_decay` is decoupled).
    pub fn with_config(params: &[Tensor], config: AdamConfig) -> Result<AdamW> {
        AdamCore::new("adamw", true, params, config).map(AdamW)
    }

    pub fn config(&self) -> AdamConfig {
        self.0.config
    }

    /// Updates `params[i]` in place with `grads[i]` (the parameters it was created for, in order).
    pub fn step(&mut self, params: &mut [&mut Tensor], grads: &[&Tensor]) -> Result<()> {
        self.0.step(params, grads)
    }
}

macro_rules! impl_optimizer {
    ($t:ty) => {
        impl Optimizer for $t {
            fn name(&self) -> &'static str {
                self.0.name
            }
            fn step(&mut self, params: &mut [&mut Tensor], grads: &[&Tensor]) -> Result<()> {
                self.0.step(params, grads)
            }
            fn lr(&self) -> f64 {
                self.0.config.lr
            }
            fn set_lr(&mut self, lr: f64) -> Result<()> {
                self.0.set_lr(lr)
            }
            fn steps(&self) -> u64 {
                self.0.steps
            }
            fn state(&self) -> OptimizerState {
                self.0.state()
            }
            fn load_state(&mut self, state: &OptimizerState) -> Result<()> {
                self.0.load_state(state)
            }
            fn graph_scalars(&self) -> StepScalars {
                self.0.graph_scalars()
            }
            fn set_steps(&mut self, steps: u64) {
                self.0.steps = steps;
            }
            fn state_tensors(&self) -> Vec<&Tensor> {
                self.0.params.state_tensors()
            }
            fn state_tensors_mut(&mut self) -> Vec<&mut Tensor> {
                self.0.params.state_tensors_mut()
            }
        }
    };
}

impl_optimizer!(Adam);
impl_optimizer!(AdamW);
