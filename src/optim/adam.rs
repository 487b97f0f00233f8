//! Adam with bias correction and coupled L2 weight decay (PyTorch's `torch.optim.Adam`), and AdamW
//! with decoupled weight decay (`torch.optim.AdamW`); no amsgrad. One fused kernel serves both.

use std::sync::Arc;

use super::optimizer::GraphScalars;
use super::{Optimizer, Step, UpdateRule};
use crate::backend::{self, AdamStep};
use crate::core::error::{Error, Result};
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

/// What Adam's and AdamW's rules share: everything but the learning rate (which [`Optimizer`]
/// keeps) and where the weight decay goes.
#[derive(Clone, Copy, Debug, PartialEq)]
struct AdamCore {
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    decoupled: bool,
}

impl AdamCore {
    fn new(config: AdamConfig, decoupled: bool) -> AdamCore {
        AdamCore {
            beta1: config.beta1,
            beta2: config.beta2,
            eps: config.eps,
            weight_decay: config.weight_decay,
            decoupled,
        }
    }

    fn config(&self, lr: f64) -> AdamConfig {
        AdamConfig {
            lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
        }
    }

    /// The hyper-parameters of `step`.
    fn at(&self, step: Step) -> AdamStep {
        let (l2, decoupled) = if self.decoupled {
            (0.0, self.weight_decay)
        } else {
            (self.weight_decay, 0.0)
        };
        AdamStep {
            lr: step.lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: l2,
            decoupled_weight_decay: decoupled,
            step: step.number,
        }
    }

    fn update(&self, w: &mut Tensor, g: &Tensor, state: &mut [Tensor], step: Step) -> Result<()> {
        let [m, v] = state else {
            return Err(Error::Internal(format!(
                "adam: {} state tensors",
                state.len()
            )));
        };
        backend::adam(w, g, m, v, &self.at(step))
    }
}

impl GraphScalars for AdamCore {
    fn graph_scalars(&self, step: Step) -> StepScalars {
        let c = self.at(step).coefficients().cast::<f32>();
        StepScalars {
            step: 0,
            lr: step.lr as f32,
            step_size: c.step_size,
            bias_correction2_sqrt: c.bias_correction2_sqrt,
            decay: c.decay,
        }
    }
}

/// Adam's update rule (L2 weight decay).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamRule(AdamCore);

/// AdamW's update rule (decoupled weight decay).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWRule(AdamCore);

/// Adam with bias correction and L2 weight decay: `g' = g + wd·w; m = β1·m + (1 − β1)·g';
/// v = β2·v + (1 − β2)·g'²; w −= lr·m̂/(sqrt(v̂) + eps)` with `m̂ = m/(1 − β1^t)`,
/// `v̂ = v/(1 − β2^t)` and `t` the step count kept here.
pub type Adam = Optimizer<AdamRule>;

/// AdamW: Adam whose weight decay is decoupled from the gradient, `w ← (1 − lr·wd)·w` before the
/// Adam step (PyTorch's order); the moments see the raw gradient.
pub type AdamW = Optimizer<AdamWRule>;

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
        config.validate("adam")?;
        let core = AdamCore::new(config, false);
        Optimizer::build(params, config.lr, AdamRule(core), Some(Arc::new(core)))
    }

    /// The hyper-parameters, with the learning rate of the next step.
    pub fn config(&self) -> AdamConfig {
        self.rule().0.config(self.lr())
    }
}

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
        config.validate("adamw")?;
        let core = AdamCore::new(config, true);
        Optimizer::build(params, config.lr, AdamWRule(core), Some(Arc::new(core)))
    }

    /// The hyper-parameters, with the learning rate of the next step.
    pub fn config(&self) -> AdamConfig {
        self.rule().0.config(self.lr())
    }
}

impl UpdateRule for AdamRule {
    fn name(&self) -> &'static str {
        "adam"
    }
    fn state_names(&self) -> &'static [&'static str] {
        STATE
    }
    fn update(&self, w: &mut Tensor, g: &Tensor, state: &mut [Tensor], step: Step) -> Result<()> {
        self.0.update(w, g, state, step)
    }
}

impl UpdateRule for AdamWRule {
    fn name(&self) -> &'static str {
        "adamw"
    }
    fn state_names(&self) -> &'static [&'static str] {
        STATE
    }
    fn update(&self, w: &mut Tensor, g: &Tensor, state: &mut [Tensor], step: Step) -> Result<()> {
        self.0.update(w, g, state, step)
    }
}
