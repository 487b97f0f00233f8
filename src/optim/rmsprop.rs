//! RMSprop (PyTorch's `torch.optim.RMSprop`, not centered, without momentum), with coupled L2
//! weight decay.

use super::state::Params;
use super::{Optimizer, OptimizerState};
use crate::backend;
use crate::core::error::Result;
use crate::cuda::StepScalars;
use crate::tensor::Tensor;

/// RMSprop's hyper-parameters. `Default` is PyTorch's: lr 0.01, alpha 0.99, eps 1e-8, no weight
/// decay.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RmsPropConfig {
    pub lr: f64,
    /// Decay of the running mean of squared gradients, in [0, 1).
    pub alpha: f64,
    /// Added to the root mean square, > 0.
    pub eps: f64,
    /// L2, added to the gradient: `g' = g + weight_decay·w`.
    pub weight_decay: f64,
}

impl Default for RmsPropConfig {
    fn default() -> Self {
        RmsPropConfig {
            lr: 0.01,
            alpha: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

impl RmsPropConfig {
    fn validate(&self) -> Result<()> {
        backend::check_lr(NAME, self.lr)?;
        backend::check_rate(NAME, "alpha", self.alpha)?;
        backend::check_eps(NAME, self.eps)?;
        backend::check_weight_decay(NAME, self.weight_decay)
    }
}

const NAME: &str = "rmsprop";

/// RMSprop: `g' = g + wd·w; s = α·s + (1 − α)·g'²; w −= lr·g'/(sqrt(s) + eps)`.
#[derive(Clone, Debug)]
pub struct RmsProp {
    config: RmsPropConfig,
    params: Params,
    steps: u64,
}

impl RmsProp {
    /// RMSprop for `params` with learning rate `lr` and PyTorch's other defaults. Its state (one
    /// running mean of squared gradients per parameter) is allocated here.
    pub fn new(params: &[Tensor], lr: f64) -> Result<RmsProp> {
        RmsProp::with_config(
            params,
            RmsPropConfig {
                lr,
                ..RmsPropConfig::default()
            },
        )
    }

    /// RMSprop for `params` with every hyper-parameter given.
    pub fn with_config(params: &[Tensor], config: RmsPropConfig) -> Result<RmsProp> {
        config.validate()?;
        Ok(RmsProp {
            config,
            params: Params::new(NAME, params, &["square_avg"])?,
            steps: 0,
        })
    }

    pub fn config(&self) -> RmsPropConfig {
        self.config
    }

    /// Updates `params[i]` in place with `grads[i]` (the parameters it was created for, in order).
    pub fn step(&mut self, params: &mut [&mut Tensor], grads: &[&Tensor]) -> Result<()> {
        self.params.check(params, grads)?;
        let c = self.config;
        for ((p, g), s) in params.iter_mut().zip(grads).zip(&mut self.params.state[0]) {
            backend::rmsprop(p, g, s, c.lr, c.alpha, c.eps, c.weight_decay)?;
        }
        self.steps += 1;
        Ok(())
    }
}

impl Optimizer for RmsProp {
    fn name(&self) -> &'static str {
        NAME
    }

    fn step(&mut self, params: &mut [&mut Tensor], grads: &[&Tensor]) -> Result<()> {
        RmsProp::step(self, params, grads)
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
