//! The scalars of one Adam/AdamW step, computed once on the host and shared by the CPU twin and
//! the kernel's parameter struct.

/// The scalars of one Adam/AdamW step. Those that depend on the step count (the bias corrections)
/// are computed on the host in f64 by [`AdamCoefficients::new`] and then cast to the kernel's type.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamCoefficients<T> {
    pub beta1: T,
    pub beta2: T,
    pub eps: T,
    /// Coupled L2 weight decay, added to the gradient (Adam's `weight_decay`).
    pub weight_decay: T,
    /// Decoupled weight decay as a factor on `w`: `1 − lr·wd` (AdamW), 1 for Adam.
    pub decay: T,
    /// `lr / (1 − beta1^t)`.
    pub step_size: T,
    /// `sqrt(1 − beta2^t)`.
    pub bias_correction2_sqrt: T,
}

impl AdamCoefficients<f64> {
    /// The coefficients of step `step` (the first step is 1), in f64. `weight_decay` is the coupled
    /// L2 term, `decoupled_weight_decay` AdamW's.
    pub fn new(
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
        decoupled_weight_decay: f64,
        step: u64,
    ) -> Self {
        let t = step as f64;
        AdamCoefficients {
            beta1,
            beta2,
            eps,
            weight_decay,
            decay: 1.0 - lr * decoupled_weight_decay,
            step_size: lr / (1.0 - beta1.powf(t)),
            bias_correction2_sqrt: (1.0 - beta2.powf(t)).sqrt(),
        }
    }

    /// The same coefficients in `T` (f32 for the kernels).
    pub fn cast<T: num_traits::Float>(&self) -> AdamCoefficients<T> {
        let c = |x: f64| <T as num_traits::NumCast>::from(x).unwrap_or_else(T::nan);
        AdamCoefficients {
            beta1: c(self.beta1),
            beta2: c(self.beta2),
            eps: c(self.eps),
            weight_decay: c(self.weight_decay),
            decay: c(self.decay),
            step_size: c(self.step_size),
            bias_correction2_sqrt: c(self.bias_correction2_sqrt),
        }
    }
}
