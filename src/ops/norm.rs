//! Batch normalization over the channels of an NCHW batch (`BatchNorm2d`, as PyTorch's).
//!
//! Training normalizes each channel with the batch's mean and biased variance over (N, H, W) and
//! moves the running statistics towards them (the variance unbiased, as PyTorch does); evaluation
//! normalizes with the running statistics, an affine map. Both record one op on the tape with inputs
//! x, γ and β; its backward rule is `backend::batch_norm_bwd`.

use crate::backend::RawTensor;
use crate::backend::{self, BatchNormStats};
use crate::core::device::Device;
use crate::core::dtype::DType;
use crate::core::error::{invalid, Result};
use crate::core::shape::as_nchw;
use crate::tensor::record;
use crate::tensor::Tensor;

/// y = γ·(x − mean)/√(var + eps) + β per channel, with learnable γ (`gamma`) and β (`beta`).
#[derive(Debug)]
pub struct BatchNorm2d {
    /// Scale γ [C], a leaf that requires gradients (starts at 1).
    pub gamma: Tensor,
    /// Shift β [C], a leaf that requires gradients (starts at 0).
    pub beta: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    /// Weight of the new batch in the running statistics: r ← (1 − momentum)·r + momentum·batch.
    pub momentum: f64,
    /// Added to the variance before the square root.
    pub eps: f64,
}

impl BatchNorm2d {
    /// f32 parameters for `channels` channels on `device`: γ = 1, β = 0, running mean 0 and variance
    /// 1, momentum 0.1, eps 1e-5 (PyTorch's defaults).
    pub fn new(channels: usize, device: Device) -> Result<Self> {
        Self::with_dtype(channels, DType::F32, device)
    }

    /// As [`BatchNorm2d::new`] with parameters of `dtype` (f64 on the CPU for gradient checks).
    pub fn with_dtype(channels: usize, dtype: DType, device: Device) -> Result<Self> {
        if channels == 0 {
            return Err(invalid("batch norm channels", "needs at least one channel"));
        }
        let filled = |value: f64| -> Result<Tensor> {
            let host = Tensor::from_vec(vec![value; channels], &[channels], Device::Cpu)?;
            host.to_dtype(dtype)?.to_device(device)
        };
        Ok(BatchNorm2d {
            gamma: filled(1.0)?.with_grad(),
            beta: filled(0.0)?.with_grad(),
            running_mean: filled(0.0)?,
            running_var: filled(1.0)?,
            momentum: 0.1,
            eps: 1e-5,
        })
    }

    /// The running mean and variance, mutable (checkpoint loading writes them in place).
    pub fn running_stats_mut(&mut self) -> (&mut Tensor, &mut Tensor) {
        (&mut self.running_mean, &mut self.running_var)
    }

    /// The running mean [C] that evaluation normalizes with.
    pub fn running_mean(&self) -> &Tensor {
        &self.running_mean
    }

    /// The running (unbiased) variance [C] that evaluation normalizes with.
    pub fn running_var(&self) -> &Tensor {
        &self.running_var
    }

    /// Replaces the running statistics (e.g. loaded from a checkpoint); each must be [C] with γ's
    /// dtype and device.
    pub fn set_running_stats(&mut self, mean: Tensor, var: Tensor) -> Result<()> {
        let channels = self.gamma.numel();
        for t in [&mean, &var] {
            backend::common_device("batch norm running statistics", &[&self.gamma, t])?;
            if t.dtype() != self.gamma.dtype() || t.shape() != [channels] {
                return Err(invalid(
                    "batch norm running statistics",
                    format!(
                        "expected [{channels}] {:?}, got {:?} {:?}",
                        self.gamma.dtype(),
                        t.shape(),
                        t.dtype()
                    ),
                ));
            }
        }
        self.running_mean = mean.detach();
        self.running_var = var.detach();
        Ok(())
    }

    /// Normalizes `x` [N, C, H, W]. Training uses the batch statistics (and needs more than one
    /// value per channel, N·H·W > 1) and then updates the running statistics; evaluation uses the
    /// running statistics and changes nothing.
    pub fn forward(&mut self, x: &Tensor, training: bool) -> Result<Tensor> {
        const OP: &str = "batch_norm2d";
        self.check_hyperparameters()?;
        let [n, c, h, w] = as_nchw(OP, x.shape())?;
        if c != self.gamma.numel() {
            return Err(invalid(
                "batch norm input",
                format!(
                    "{OP}: the layer has {} channels but the input has {c} (shape {:?})",
                    self.gamma.numel(),
                    x.shape()
                ),
            ));
        }
        backend::common_device(OP, &[x, &self.gamma, &self.beta, &self.running_mean])?;
        if !training {
            let (mean, var) = (
                self.running_mean.raw().clone(),
                self.running_var.raw().clone(),
            );
            return normalize(x, &self.gamma, &self.beta, mean, var, self.eps, false);
        }
        let count = n * h * w;
        if count <= 1 {
            return Err(invalid(
                "batch norm input",
                format!(
                    "{OP}: training needs more than one value per channel, got shape {:?}",
                    x.shape()
                ),
            ));
        }
        let (mean, var) = backend::batch_norm_stats(x)?;
        let y = normalize(
            x,
            &self.gamma,
            &self.beta,
            mean.clone(),
            var.clone(),
            self.eps,
            true,
        )?;
        // PyTorch's rule: the running variance follows the unbiased estimate var·M/(M − 1).
        let m = self.momentum;
        let unbiased = count as f64 / (count - 1) as f64;
        // In place, so the buffers keep their addresses (a captured CUDA graph updates them).
        backend::axpby_in_place(1.0 - m, &mut self.running_mean, m, &mean)?;
        backend::axpby_in_place(1.0 - m, &mut self.running_var, m * unbiased, &var)?;
        Ok(y)
    }

    fn check_hyperparameters(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.momentum) {
            return Err(invalid(
                "batch norm momentum",
                format!("must lie in [0, 1], got {}", self.momentum),
            ));
        }
        if !(self.eps >= 0.0 && self.eps.is_finite()) {
            return Err(invalid(
                "batch norm eps",
                format!("must be finite and ≥ 0, got {}", self.eps),
            ));
        }
        Ok(())
    }
}

/// y = γ·(x − mean)/√(var + eps) + β, recorded with inputs (x, γ, β). `training` says whether
/// `mean` and `var` are x's own batch statistics (so the backward rule differentiates through them).
fn normalize(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    mean: RawTensor,
    var: RawTensor,
    eps: f64,
    training: bool,
) -> Result<Tensor> {
    let stats = BatchNormStats {
        mean: &mean,
        var: &var,
        gamma,
        eps,
    };
    let y = backend::batch_norm_fwd(x, &stats, beta)?;
    let (x_saved, gamma_saved, x_needs_grad) = (x.detach(), gamma.detach(), x.needs_grad());
    Ok(record("batch_norm2d", &[x, gamma, beta], y, move || {
        move |dy: &RawTensor| {
            let stats = BatchNormStats {
                mean: &mean,
                var: &var,
                gamma: &gamma_saved,
                eps,
            };
            let g = backend::batch_norm_bwd(dy, &x_saved, &stats, training, x_needs_grad)?;
            Ok(vec![g.dx, Some(g.dgamma), Some(g.dbeta)])
        }
    }))
}
