//! Optimizer update primitives: one fused, in-place update per optimizer on every device. Each
//! validates its tensors (one device, one shape, one float dtype) and its hyper-parameters before
//! touching anything, so a rejected call leaves `w` and the state as they were.

use super::RawTensor;
use super::{common_device, gpu_f32, with_float};
use crate::core::adam::AdamCoefficients;
use crate::core::device::Device;
use crate::core::dtype::DType;
use crate::core::error::{invalid, Error, Result};
pub use crate::core::optim::{MomentumStep, RmsPropStep};
use crate::cpu;
use crate::cuda;

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

/// `g` and every state tensor share `w`'s device, shape and dtype; the dtype is f32 or f64.
fn check_tensors(
    op: &'static str,
    w: &RawTensor,
    g: &RawTensor,
    state: &[&RawTensor],
) -> Result<()> {
    let mut all = vec![w, g];
    all.extend_from_slice(state);
    common_device(op, &all)?;
    if !matches!(w.dtype(), DType::F32 | DType::F64) {
        return Err(Error::DTypeMismatch {
            op,
            expected: DType::F32,
            got: w.dtype(),
        });
    }
    for t in &all[1..] {
        t.expect_shape(op, w.shape())?;
        t.expect_dtype(op, w.dtype())?;
    }
    Ok(())
}

/// One plain SGD step (no state) on `w`, in place: `w −= lr·(g + weight_decay·w)`.
pub fn sgd(w: &mut RawTensor, g: &RawTensor, lr: f64, weight_decay: f64) -> Result<()> {
    const OP: &str = "sgd";
    check_tensors(OP, w, g, &[])?;
    check_lr(OP, lr)?;
    check_weight_decay(OP, weight_decay)?;
    match w.device() {
        Device::Cpu => with_float!(OP, w, |T| {
            let gs = g.host_slice::<T>(OP)?;
            let ws = w.host_vec_mut::<T>(OP)?;
            cpu::optim::sgd_update(ws, gs, lr as T, weight_decay as T);
            Ok(())
        }),
        _ => {
            let (gpu, gb) = gpu_f32(OP, g)?;
            let n = w.numel();
            let wb = w.gpu_buffer_mut(OP)?;
            cuda::optim::sgd(&gpu, wb, gb, n, lr as f32, weight_decay as f32)
        }
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
    let op = if hp.nesterov { "sgd nesterov" } else { "sgd" };
    check_tensors(op, w, g, &[velocity])?;
    hp.validate(op)?;
    let MomentumStep {
        lr,
        momentum,
        weight_decay: wd,
        nesterov,
    } = *hp;
    match w.device() {
        Device::Cpu => with_float!(op, w, |T| {
            let gs = g.host_slice::<T>(op)?;
            let vs = velocity.host_vec_mut::<T>(op)?;
            let ws = w.host_vec_mut::<T>(op)?;
            cpu::optim::sgd_momentum_update(ws, gs, vs, lr as T, momentum as T, wd as T, nesterov);
            Ok(())
        }),
        _ => {
            let (gpu, gb) = gpu_f32(op, g)?;
            let n = w.numel();
            let wb = w.gpu_buffer_mut(op)?;
            let vb = velocity.gpu_buffer_mut(op)?;
            cuda::optim::sgd_momentum(&gpu, wb, gb, vb, n, hp)
        }
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
    const OP: &str = "rmsprop";
    check_tensors(OP, w, g, &[square_avg])?;
    hp.validate(OP)?;
    let RmsPropStep {
        lr,
        alpha,
        eps,
        weight_decay: wd,
    } = *hp;
    match w.device() {
        Device::Cpu => with_float!(OP, w, |T| {
            let gs = g.host_slice::<T>(OP)?;
            let ss = square_avg.host_vec_mut::<T>(OP)?;
            let ws = w.host_vec_mut::<T>(OP)?;
            cpu::optim::rmsprop_update(ws, gs, ss, lr as T, alpha as T, eps as T, wd as T);
            Ok(())
        }),
        _ => {
            let (gpu, gb) = gpu_f32(OP, g)?;
            let n = w.numel();
            let wb = w.gpu_buffer_mut(OP)?;
            let sb = square_avg.gpu_buffer_mut(OP)?;
            cuda::optim::rmsprop(&gpu, wb, gb, sb, n, hp)
        }
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
    const OP: &str = "adam";
    check_tensors(OP, w, g, &[exp_avg, exp_avg_sq])?;
    hp.validate(OP)?;
    let c = hp.coefficients();
    match w.device() {
        Device::Cpu => with_float!(OP, w, |T| {
            let gs = g.host_slice::<T>(OP)?;
            let ms = exp_avg.host_vec_mut::<T>(OP)?;
            let vs = exp_avg_sq.host_vec_mut::<T>(OP)?;
            let ws = w.host_vec_mut::<T>(OP)?;
            cpu::optim::adam_update(ws, gs, ms, vs, &c.cast::<T>());
            Ok(())
        }),
        _ => {
            let (gpu, gb) = gpu_f32(OP, g)?;
            let n = w.numel();
            let wb = w.gpu_buffer_mut(OP)?;
            let mb = exp_avg.gpu_buffer_mut(OP)?;
            let vb = exp_avg_sq.gpu_buffer_mut(OP)?;
            cuda::optim::adam(&gpu, wb, gb, mb, vb, n, &c.cast::<f32>())
        }
    }
}
