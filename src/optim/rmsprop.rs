//! RMSprop (PyTorch's `torch.optim.RMSprop`, not centered, without momentum), with coupled L2
//! weight decay.

use std::sync::Arc;

use super::optimizer::LrOnly;
use super::{Optimizer, Step, UpdateRule};
use crate::backend;
use crate::core::error::{Error, Result};
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
pub type RmsProp = Optimizer<RmsPropRule>;

/// RMSprop's update rule: [`RmsPropConfig`] but the learning rate (which [`Optimizer`] keeps).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RmsPropRule {
    alpha: f64,
    eps: f64,
    weight_decay: f64,
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
        let rule = RmsPropRule {
            alpha: config.alpha,
            eps: config.eps,
            weight_decay: config.weight_decay,
        };
        Optimizer::build(params, config.lr, rule, Some(Arc::new(LrOnly)))
    }

    /// The hyper-parameters, with the learning rate of the next step.
    pub fn config(&self) -> RmsPropConfig {
        let r = self.rule();
        RmsPropConfig {
            lr: self.lr(),
            alpha: r.alpha,
            eps: r.eps,
            weight_decay: r.weight_decay,
        }
    }
}

impl UpdateRule for RmsPropRule {
    fn name(&self) -> &'static str {
        NAME
    }

    fn state_names(&self) -> &'static [&'static str] {
        &["square_avg"]
    }

    fn update(&self, w: &mut Tensor, g: &Tensor, state: &mut [Tensor], step: Step) -> Result<()> {
        let [s] = state else {
            return Err(Error::Internal(format!(
                "{NAME}: {} state tensors",
                state.len()
            )));
        };
        let hp = backend::RmsPropStep {
            lr: step.lr,
            alpha: self.alpha,
            eps: self.eps,
            weight_decay: self.weight_decay,
        };
        backend::rmsprop(w, g, s, &hp)
    }
}
