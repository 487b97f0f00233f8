//! SGD: plain, with classic momentum, or with Nesterov momentum (PyTorch's `torch.optim.SGD`,
//! without dampening), and coupled L2 weight decay.

use std::sync::Arc;

use super::optimizer::LrOnly;
use super::{Optimizer, Step, UpdateRule};
use crate::backend;
use crate::core::error::{Error, Result};
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

/// SGD with (PyTorch-convention) momentum and L2 weight decay:
/// `g' = g + wd·w; v = μ·v + g'; w −= lr·v` (classic) or `w −= lr·(g' + μ·v)` (Nesterov);
/// `w −= lr·g'` without momentum.
pub type Sgd = Optimizer<SgdRule>;

/// SGD's update rule: [`SgdConfig`] but the learning rate (which [`Optimizer`] keeps).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdRule {
    momentum: f64,
    weight_decay: f64,
    nesterov: bool,
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
        let rule = SgdRule {
            momentum: config.momentum,
            weight_decay: config.weight_decay,
            nesterov: config.nesterov,
        };
        Optimizer::build(params, config.lr, rule, Some(Arc::new(LrOnly)))
    }

    /// The hyper-parameters, with the learning rate of the next step.
    pub fn config(&self) -> SgdConfig {
        let r = self.rule();
        SgdConfig {
            lr: self.lr(),
            momentum: r.momentum,
            weight_decay: r.weight_decay,
            nesterov: r.nesterov,
        }
    }
}

impl UpdateRule for SgdRule {
    fn name(&self) -> &'static str {
        NAME
    }

    /// `momentum_buffer` with momentum, nothing without.
    fn state_names(&self) -> &'static [&'static str] {
        if self.momentum > 0.0 {
            &["momentum_buffer"]
        } else {
            &[]
        }
    }

    fn update(&self, w: &mut Tensor, g: &Tensor, state: &mut [Tensor], step: Step) -> Result<()> {
        let hp = backend::MomentumStep {
            lr: step.lr,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            nesterov: self.nesterov,
        };
        match state {
            [] => backend::sgd(w, g, hp.lr, hp.weight_decay),
            [v] => backend::sgd_momentum(w, g, v, &hp),
            _ => Err(Error::Internal(format!(
                "{NAME}: {} state tensors",
                state.len()
            ))),
        }
    }
}
