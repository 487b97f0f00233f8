//! Optimizers. For now: SGD with momentum and weight decay, fused into one kernel on the GPU.

use crate::backend;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// SGD with (PyTorch-convention) momentum and L2 weight decay.
#[derive(Clone, Debug)]
pub struct Sgd {
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    velocity: Vec<Tensor>,
}

impl Sgd {
    /// An optimizer for `params`. Its state (one velocity per parameter) is allocated here, not at
    /// the first step, so training steps after the first make no new device allocation.
    pub fn new(params: &[Tensor], lr: f64, momentum: f64, weight_decay: f64) -> Result<Sgd> {
        let velocity = params
            .iter()
            .map(|p| Tensor::zeros(p.shape(), p.dtype(), p.device()))
            .collect::<Result<_>>()?;
        Ok(Sgd {
            lr,
            momentum,
            weight_decay,
            velocity,
        })
    }

    /// Updates `params[i]` in place with `grads[i]` (the parameters it was created for, in order).
    pub fn step(&mut self, params: &mut [&mut Tensor], grads: &[&Tensor]) -> Result<()> {
        if params.len() != grads.len() {
            return Err(Error::InvalidArgument {
                what: "sgd step",
                why: format!("{} parameters but {} gradients", params.len(), grads.len()),
            });
        }
        if self.velocity.len() != params.len() {
            return Err(Error::InvalidArgument {
                what: "sgd step",
                why: format!(
                    "created for {} parameters, called with {}",
                    self.velocity.len(),
                    params.len()
                ),
            });
        }
        for ((p, g), v) in params.iter_mut().zip(grads).zip(&mut self.velocity) {
            backend::sgd_momentum(p, g, v, self.lr, self.momentum, self.weight_decay)?;
        }
        Ok(())
    }
}
