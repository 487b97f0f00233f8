//! Optimizer update primitives: one fused, in-place update per optimizer on every device. Each
//! validates its tensors (one device, one shape, one float dtype) and its hyper-parameters before
//! touching anything, so a rejected call leaves `w` and the state as they were.

use super::primitive::{run_in_place, HostFloat, InPlace, Op, Updating};
use super::RawTensor;
use crate::core::adam::AdamCoefficients;
use crate::core::error::{invalid, Result};
pub use crate::core::optim::{MomentumStep, RmsPropStep};
use crate::cpu;
use crate::cuda;
use crate::cuda::GpuBuffer;

/// A learning rate must be finite and ≥ 0 (0 is allowed: a warm-up may start there).
pub(crate) fn check_lr(op: &'static str, lr: f64) -> Result<()> {
    if !(lr.is_finite() && lr >= 0.0) {
        return Err(invalid(
            "learning rate",
            format!("{op}: must be finite and ≥ 0, got {lr}"),
        ));
    }
    Ok(())
}

/// Momentum, RMSprop's alpha and Adam's betas: decay rates in [0, 1).
pub(crate) fn check_rate(op: &'static str, name: &str, x: f64) -> Result<()> {
    if !(0.0..1.0).contains(&x) {
        return Err(invalid(
            "decay rate",
            format!("{op}: {name} must be in [0, 1), got {x}"),
        ));
    }
    Ok(())
}

/// The epsilon added to a denominator: finite and > 0.
pub(crate) fn check_eps(op: &'static str, eps: f64) -> Result<()> {
    if !(eps.is_finite() && eps > 0.0) {
        return Err(invalid(
            "epsilon",
            format!("{op}: must be finite and > 0, got {eps}"),
        ));
    }
    Ok(())
}

/// A weight decay (L2 or decoupled): finite and ≥ 0.
pub(crate) fn check_weight_decay(op: &'static str, wd: f64) -> Result<()> {
    if !(wd.is_finite() && wd >= 0.0) {
        return Err(invalid(
            "weight decay",
            format!("{op}: must be finite and ≥ 0, got {wd}"),
        ));
    }
    Ok(())
}

/// Nesterov momentum needs a momentum (as in PyTorch).
pub(crate) fn check_nesterov(op: &'static str, momentum: f64, nesterov: bool) -> Result<()> {
    if nesterov && momentum <= 0.0 {
        return Err(invalid(
            "nesterov",
            format!("{op}: Nesterov momentum needs momentum > 0, got {momentum}"),
        ));
    }
    Ok(())
}

/// Every tensor of an update has `w`'s shape (the runner checks one device and one dtype).
fn check_shapes(op: &'static str, targets: &[&RawTensor], g: &RawTensor) -> Result<()> {
    let w = targets[0];
    for t in targets[1..].iter().chain([&g]) {
        t.expect_shape(op, w.shape())?;
    }
    Ok(())
}

/// One plain SGD step (no state) on `w`, in place: `w −= lr·(g + weight_decay·w)`.
pub fn sgd(w: &mut RawTensor, g: &RawTensor, lr: f64, weight_decay: f64) -> Result<()> {
    run_in_place(&Sgd { lr, weight_decay }, [w], [g])
}

struct Sgd {
    lr: f64,
    weight_decay: f64,
}

impl InPlace<1, 1> for Sgd {
    fn op(&self) -> Op {
        Op::new("sgd", &["sgd"])
    }
    fn check(&self, targets: [&RawTensor; 1], [g]: [&RawTensor; 1]) -> Result<()> {
        check_shapes("sgd", &targets, g)?;
        check_lr("sgd", self.lr)?;
        check_weight_decay("sgd", self.weight_decay)
    }
    fn cpu<T: HostFloat>(&self, [w]: [&mut [T]; 1], [g]: [&[T]; 1]) -> Result<()> {
        cpu::optim::sgd_update(w, g, T::of(self.lr), T::of(self.weight_decay));
        Ok(())
    }
    fn gpu(&self, on: Updating, [w]: [&mut GpuBuffer; 1], [g]: [&GpuBuffer; 1]) -> Result<()> {
        let (lr, wd) = (self.lr as f32, self.weight_decay as f32);
        cuda::optim::sgd(on.gpu, w, g, on.len, lr, wd)
    }
}

impl MomentumStep {
    fn validate(&self, op: &'static str) -> Result<()> {
        check_lr(op, self.lr)?;
        check_rate(op, "momentum", self.momentum)?;
        check_weight_decay(op, self.weight_decay)?;
        check_nesterov(op, self.momentum, self.nesterov)
    }
}

/// One SGD-with-momentum step on `w` and its `velocity`, in place (PyTorch's convention):
/// `g' = g + weight_decay·w; v = momentum·v + g'; w −= lr·v` (Nesterov: `w −= lr·(g' + momentum·v)`).
pub fn sgd_momentum(
    w: &mut RawTensor,
    g: &RawTensor,
    velocity: &mut RawTensor,
    hp: &MomentumStep,
) -> Result<()> {
    run_in_place(hp, [w, velocity], [g])
}

impl InPlace<2, 1> for MomentumStep {
    fn op(&self) -> Op {
        let name = if self.nesterov { "sgd nesterov" } else { "sgd" };
        Op::new(name, &["sgd_momentum"])
    }
    fn check(&self, targets: [&RawTensor; 2], [g]: [&RawTensor; 1]) -> Result<()> {
        check_shapes(self.op().name, &targets, g)?;
        self.validate(self.op().name)
    }
    fn cpu<T: HostFloat>(&self, [w, v]: [&mut [T]; 2], [g]: [&[T]; 1]) -> Result<()> {
        let (lr, momentum, wd) = (
            T::of(self.lr),
            T::of(self.momentum),
            T::of(self.weight_decay),
        );
        cpu::optim::sgd_momentum_update(w, g, v, lr, momentum, wd, self.nesterov);
        Ok(())
    }
    fn gpu(&self, on: Updating, [w, v]: [&mut GpuBuffer; 2], [g]: [&GpuBuffer; 1]) -> Result<()> {
        cuda::optim::sgd_momentum(on.gpu, w, g, v, on.len, self)
    }
}

impl RmsPropStep {
    fn validate(&self, op: &'static str) -> Result<()> {
        check_lr(op, self.lr)?;
        check_rate(op, "alpha", self.alpha)?;
        check_eps(op, self.eps)?;
        check_weight_decay(op, self.weight_decay)
    }
}

/// One RMSprop step on `w` and its running mean of squared gradients, in place (PyTorch's, not
/// centered): `g' = g + weight_decay·w; s = alpha·s + (1 − alpha)·g'²; w −= lr·g'/(sqrt(s) + eps)`.
pub fn rmsprop(
    w: &mut RawTensor,
    g: &RawTensor,
    square_avg: &mut RawTensor,
    hp: &RmsPropStep,
) -> Result<()> {
    run_in_place(hp, [w, square_avg], [g])
}

impl InPlace<2, 1> for RmsPropStep {
    fn op(&self) -> Op {
        Op::new("rmsprop", &["rmsprop"])
    }
    fn check(&self, targets: [&RawTensor; 2], [g]: [&RawTensor; 1]) -> Result<()> {
        check_shapes("rmsprop", &targets, g)?;
        self.validate("rmsprop")
    }
    fn cpu<T: HostFloat>(&self, [w, s]: [&mut [T]; 2], [g]: [&[T]; 1]) -> Result<()> {
        let (lr, alpha, eps, wd) = (
            T::of(self.lr),
            T::of(self.alpha),
            T::of(self.eps),
            T::of(self.weight_decay),
        );
        cpu::optim::rmsprop_update(w, g, s, lr, alpha, eps, wd);
        Ok(())
    }
    fn gpu(&self, on: Updating, [w, s]: [&mut GpuBuffer; 2], [g]: [&GpuBuffer; 1]) -> Result<()> {
        cuda::optim::rmsprop(on.gpu, w, g, s, on.len, self)
    }
}

/// The hyper-parameters of one Adam/AdamW step. `step` is the 1-based count of steps taken,
/// including this one (it sets the bias corrections `1 − beta^step`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamStep {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Coupled L2 weight decay, added to the gradient (Adam's `weight_decay`).
    pub weight_decay: f64,
    /// Decoupled weight decay, `w ← (1 − lr·wd)·w` (AdamW's `weight_decay`).
    pub decoupled_weight_decay: f64,
    pub step: u64,
}

impl AdamStep {
    fn validate(&self, op: &'static str) -> Result<()> {
        check_lr(op, self.lr)?;
        check_rate(op, "beta1", self.beta1)?;
        check_rate(op, "beta2", self.beta2)?;
        check_eps(op, self.eps)?;
        check_weight_decay(op, self.weight_decay)?;
        check_weight_decay(op, self.decoupled_weight_decay)?;
        if self.step == 0 {
            return Err(invalid(
                "step count",
                format!("{op}: the first step is 1 (the bias corrections divide by 1 − beta^step)"),
            ));
        }
        Ok(())
    }

    /// The per-step scalars, computed in f64 (the bias corrections from the step count).
    pub fn coefficients(&self) -> AdamCoefficients<f64> {
        AdamCoefficients::new(
            self.lr,
            self.beta1,
            self.beta2,
            self.eps,
            self.weight_decay,
            self.decoupled_weight_decay,
            self.step,
        )
    }
}

/// One Adam (or, with `decoupled_weight_decay`, AdamW) step on `w` and its first and second
/// moment estimates, in place, with bias correction (PyTorch's, no amsgrad):
/// `m = β1·m + (1 − β1)·g'; v = β2·v + (1 − β2)·g'²; w −= lr·m̂/(sqrt(v̂) + eps)` with
/// `g' = g + weight_decay·w`, `m̂ = m/(1 − β1^t)`, `v̂ = v/(1 − β2^t)`.
pub fn adam(
    w: &mut RawTensor,
    g: &RawTensor,
    exp_avg: &mut RawTensor,
    exp_avg_sq: &mut RawTensor,
    hp: &AdamStep,
) -> Result<()> {
    run_in_place(hp, [w, exp_avg, exp_avg_sq], [g])
}

impl InPlace<3, 1> for AdamStep {
    fn op(&self) -> Op {
        Op::new("adam", &["adam"])
    }
    fn check(&self, targets: [&RawTensor; 3], [g]: [&RawTensor; 1]) -> Result<()> {
        check_shapes("adam", &targets, g)?;
        self.validate("adam")
    }
    fn cpu<T: HostFloat>(&self, [w, m, v]: [&mut [T]; 3], [g]: [&[T]; 1]) -> Result<()> {
        cpu::optim::adam_update(w, g, m, v, &self.coefficients().cast::<T>());
        Ok(())
    }
    fn gpu(
        &self,
        on: Updating,
        [w, m, v]: [&mut GpuBuffer; 3],
        [g]: [&GpuBuffer; 1],
    ) -> Result<()> {
        let c = self.coefficients().cast::<f32>();
        cuda::optim::adam(on.gpu, w, g, m, v, on.len, &c)
    }
}
