//! SGD: plain, with classic momentum, or with Nesterov momentum (PyTorch's `torch.optim.SGD`,
//! without dampening), and coupled L2 weight decay.

use super::state::Params;
use super::{Optimizer, OptimizerState};
use crate::backend;
use crate::core::error::Result;
use crate::cuda::StepScalars;
use crate::tensor::Tensor;

/// SGD's hyper-parameters. `Default` is PyTorch's: lr 1e-3, no momentum, no weight decay.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    pub lr: f64,
    /// In [0, 1); 0 is plain SGD (and keeps no state).
    pub momentum: f64,
    /// L2, added to the gradient: `g' = g + weight_decay·w`.
    pub weight_decay: f64,
    /// Nesterov momentum (needs momentum > 0): the update is `g' + momentum·v` instead of `v`.
    pub nesterov: bool,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig {
            lr: 1e-3,
            momentum: 0.0,
            weight_decay: 0.0,
            nesterov: false,
        }
    }
}

impl SgdConfig {
    fn validate(&self) -> Result<()> {
        backend::check_lr(NAME, self.lr)?;
        backend::check_rate(NAME, "momentum", self.momentum)?;
        backend::check_weight_decay(NAME, self.weight_decay)?;
        backend::check_nesterov(NAME, self.momentum, self.nesterov)
    }
}

const NAME: &str = "sgd";
const MOMENTUM_STATE: &[&str] = &["momentum_buffer"];

/// SGD with (PyTorch-convention) momentum and L2 weight decay:
/// `g' = g + wd·w; v = μ·v + g'; w −= lr·v` (classic) or `w −= lr·(g' + μ·v)` (Nesterov);
/// `w −= lr·g'` without momentum.
#[derive(Clone, Debug)]
pub struct Sgd {
    config: SgdConfig,
    params: Params,
    steps: u64,
}

impl Sgd {
    /// Classic-momentum SGD for `params` (momentum 0: plain SGD). Its state (one velocity per
    /// parameter, none without momentum) is allocated here, not at the first step, so training
    /// steps after the first make no new device allocation.
    pub fn new(params: &[Tensor], lr: f64, momentum: f64, weight_decay: f64) -> Result<Sgd> {
        Sgd::with_config(
            params,
            SgdConfig {
                lr,
                momentum,
                weight_decay,
                nesterov: false,
            },
        )
    }

    /// Nesterov-momentum SGD for `params` (PyTorch's `nesterov=True`; momentum must be > 0).
    pub fn nesterov(params: &[Tensor], lr: f64, momentum: f64, weight_decay: f64) -> Result<Sgd> {
        Sgd::with_config(
            params,
            SgdConfig {
                lr,
                momentum,
                weight_decay,
                nesterov: true,
            },
        )
    }

    /// SGD for `params` with every hyper-parameter given.
    pub fn with_config(params: &[Tensor], config: SgdConfig) -> Result<Sgd> {
        config.validate()?;
        let names = if config.momentum > 0.0 {
            MOMENTUM_STATE
        } else {
            &[]
        };
        Ok(Sgd {
            config,
            params: Params::new(NAME, params, names)?,
            steps: 0,
        })
    }

    pub fn config(&self) -> SgdConfig {
        self.config
    }

    /// Updates `params[i]` in place with `grads[i]` (the parameters it was created for, in order).
    pub fn step(&mut self, params: &mut [&mut Tensor], grads: &[&Tensor]) -> Result<()> {
        self.params.check(params, grads)?;
        let c = self.config;
        match self.params.state.first_mut() {
            None => {
                for (p, g) in params.iter_mut().zip(grads) {
                    backend::sgd(p, g, c.lr, c.weight_decay)?;
                }
            }
            Some(velocity) => {
                let update = if c.nesterov {
                    backend::sgd_nesterov
                } else {
                    backend::sgd_momentum
                };
                for ((p, g), v) in params.iter_mut().zip(grads).zip(velocity) {
                    update(p, g, v, c.lr, c.momentum, c.weight_decay)?;
                }
            }
        }
        self.steps += 1;
        Ok(())
    }
}

impl Optimizer for Sgd {
    fn name(&self) -> &'static str {
        NAME
    }

    fn step(&mut self, params: &mut [&mut Tensor], grads: &[&Tensor]) -> Result<()> {
        Sgd::step(self, params, grads)
    }

    fn lr(&self) -> f64 {
        self.config.lr
    }

    fn set_lr(&mut self, lr: f64) -> Result<()> {
        backend::check_lr(NAME, lr)?;
        self.config.lr = lr;
        Ok(())
    }

    fn steps(&self) -> u64 {
        self.steps
    }

    fn state(&self) -> OptimizerState {
        OptimizerState {
            optimizer: NAME.into(),
            step: self.steps,
            lr: self.config.lr,
            tensors: self.params.named_state(),
        }
    }

    fn load_state(&mut self, state: &OptimizerState) -> Result<()> {
        self.params.state = self.params.loaded_state(NAME, state)?;
        self.steps = state.step;
        self.config.lr = state.lr;
        Ok(())
    }

    fn graph_scalars(&self) -> StepScalars {
        StepScalars {
            lr: self.config.lr as f32,
            ..StepScalars::default()
        }
    }

    fn set_steps(&mut self, steps: u64) {
        self.steps = steps;
    }

    fn state_tensors(&self) -> Vec<&Tensor> {
        self.params.state_tensors()
    }

    fn state_tensors_mut(&mut self) -> Vec<&mut Tensor> {
        self.params.state_tensors_mut()
    }
}
