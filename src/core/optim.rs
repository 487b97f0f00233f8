//! The hyper-parameters of one SGD-with-momentum or RMSprop step: what the primitive validates and
//! the kernel's launcher reads (Adam's per-step scalars are in [`super::adam`]).

/// The hyper-parameters of one SGD-with-momentum step (PyTorch's `SGD` with `momentum > 0`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MomentumStep {
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    /// Nesterov momentum (PyTorch's `nesterov=True`): `w −= lr·(g' + momentum·v)`.
    pub nesterov: bool,
}

impl MomentumStep {
    /// Classic momentum; [`MomentumStep::nesterov`] for Nesterov's.
    pub fn new(lr: f64, momentum: f64, weight_decay: f64) -> MomentumStep {
        MomentumStep {
            lr,
            momentum,
            weight_decay,
            nesterov: false,
        }
    }

    pub fn nesterov(self) -> MomentumStep {
        MomentumStep {
            nesterov: true,
            ..self
        }
    }
}

/// The hyper-parameters of one RMSprop step (PyTorch's `RMSprop`, not centered).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RmsPropStep {
    pub lr: f64,
    /// The decay of the running mean of squared gradients.
    pub alpha: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl RmsPropStep {
    pub fn new(lr: f64, alpha: f64, eps: f64, weight_decay: f64) -> RmsPropStep {
        RmsPropStep {
            lr,
            alpha,
            eps,
            weight_decay,
        }
    }
}
