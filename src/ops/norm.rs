//! Batch normalization over the channels of an NCHW batch (`BatchNorm2d`, as PyTorch's).
//!
//! Training normalizes each channel with the batch's mean and biased variance over (N, H, W) and
//! moves the running statistics towards them (the variance unbiased, as PyTorch does); evaluation
//! normalizes with the running statistics, an affine map. Both record one op on the tape with inputs
//! x, γ and β; its backward rule is `backend::batch_norm_bwd`.
//!
//! Synchronized batch norm (PyTorch's `SyncBatchNorm`): a batch split over replicas (data-parallel
//! ranks) is normalized with the statistics of the whole batch. Each replica computes its own
//! shard's mean and variance, and a [`ReplicaSum`] combines them exactly: with M_r values on
//! replica r and M = Σ M_r, mean = Σ (M_r/M)·mean_r and var = Σ (M_r/M)·(var_r + (mean_r − mean)²)
//! (no E[x²] − mean² cancellation). Backward sums Σdy and Σdy·x̂ over the replicas for dx; dγ and
//! dβ stay the shard's own (data parallelism averages them like every other gradient).

use std::fmt::Debug;
use std::sync::Arc;

use crate::backend::RawTensor;
use crate::backend::{self, BatchNormGrads, BatchNormStats, BatchNormSums};
use crate::core::device::Device;
use crate::core::dtype::DType;
use crate::core::error::{invalid, Result};
use crate::core::shape::as_nchw;
use crate::tensor::record;
use crate::tensor::Tensor;

/// Sums over the replicas that share a batch (the ranks of a data-parallel run), for synchronized
/// batch norm. Every replica makes the same calls in the same order; each call returns once every
/// replica has made it.
pub trait ReplicaSum: Send + Sync + Debug {
    /// Σ over the replicas of each one's `local` count.
    fn count(&self, local: usize) -> Result<usize>;
    /// For each of `locals`, the element-wise Σ over the replicas of each one's tensor (the same
    /// shapes and dtypes on every replica), on its device and of its dtype: one exchange for all.
    fn values(&self, locals: &[&RawTensor]) -> Result<Vec<RawTensor>>;
}

/// The Σ over the replicas of each of `locals`, in one exchange.
fn summed<const N: usize>(sum: &dyn ReplicaSum, locals: [&RawTensor; N]) -> Result<[RawTensor; N]> {
    <[RawTensor; N]>::try_from(sum.values(&locals)?).map_err(|_| {
        crate::core::error::Error::Internal(
            "a replica sum returned another number of tensors than it was given".into(),
        )
    })
}

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
    /// With `Some`, training normalizes with the statistics of the whole batch across the
    /// replicas ([`BatchNorm2d::synchronize`]).
    sync: Option<Arc<dyn ReplicaSum>>,
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
            sync: None,
        })
    }

    /// Training normalizes with the statistics of the batch summed by `sum` over the replicas
    /// (synchronized batch norm), or with `None` with this replica's batch alone.
    pub fn synchronize(&mut self, sum: Option<Arc<dyn ReplicaSum>>) {
        self.sync = sum;
    }

    /// Whether training normalizes over the replicas ([`BatchNorm2d::synchronize`]).
    pub fn is_synchronized(&self) -> bool {
        self.sync.is_some()
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
            return normalize(
                x,
                &self.gamma,
                &self.beta,
                (mean, var),
                self.eps,
                Statistics::Running,
            );
        }
        let local = n * h * w;
        let too_few = |count: usize, across: &str| {
            invalid(
                "batch norm input",
                format!(
                    "{OP}: training needs more than one value per channel{across}, got {count} \
                     (shape {:?})",
                    x.shape()
                ),
            )
        };
        let (mean, var, from) = match &self.sync {
            None if local <= 1 => return Err(too_few(local, "")),
            None => {
                let (mean, var) = backend::batch_norm_stats(x)?;
                (mean, var, Statistics::Batch)
            }
            Some(sum) => {
                // Every replica takes part in the sums, an empty shard too (it adds nothing).
                let count = sum.count(local)?;
                if count <= 1 {
                    return Err(too_few(count, " across the replicas"));
                }
                let shard = match local {
                    0 => {
                        let zeros = || RawTensor::zeros(&[c], self.gamma.dtype(), x.device());
                        (zeros()?, zeros()?)
                    }
                    _ => backend::batch_norm_stats(x)?,
                };
                let (mean, var) = whole_batch_statistics(sum.as_ref(), shard, local, count)?;
                let synced = Synced {
                    sum: Arc::clone(sum),
                    count,
                };
                (mean, var, Statistics::Replicas(synced))
            }
        };
        let count = match &from {
            Statistics::Replicas(synced) => synced.count,
            _ => local,
        };
        let stats = (mean.clone(), var.clone());
        let y = normalize(x, &self.gamma, &self.beta, stats, self.eps, from)?;
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

/// The statistics of the whole batch from this replica's `(mean, var)` over its `local` values,
/// `total` values in all (see the module's comment). With one replica they are `(mean, var)`
/// exactly: the weight is 1 and the deviation 0.
fn whole_batch_statistics(
    sum: &dyn ReplicaSum,
    (mean, var): (RawTensor, RawTensor),
    local: usize,
    total: usize,
) -> Result<(RawTensor, RawTensor)> {
    let weight = local as f64 / total as f64;
    let [whole_mean] = summed(sum, [&backend::affine(&mean, weight, 0.0)?])?;
    let deviation = backend::axpby(1.0, &mean, -1.0, &whole_mean)?;
    let spread = backend::mul(&deviation, &deviation)?;
    let [whole_var] = summed(sum, [&backend::axpby(weight, &var, weight, &spread)?])?;
    Ok((whole_mean, whole_var))
}

/// Where a pass's statistics came from, which says what backward differentiates through.
enum Statistics {
    /// The running statistics: constants.
    Running,
    /// This batch's own.
    Batch,
    /// The whole batch across the replicas.
    Replicas(Synced),
}

/// What the backward rule of a synchronized pass needs: the sum over the replicas and the count
/// of values in the whole batch.
struct Synced {
    sum: Arc<dyn ReplicaSum>,
    count: usize,
}

/// y = γ·(x − mean)/√(var + eps) + β, recorded with inputs (x, γ, β); `from` says where
/// `(mean, var)` came from.
fn normalize(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    (mean, var): (RawTensor, RawTensor),
    eps: f64,
    from: Statistics,
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
            let g = match &from {
                Statistics::Replicas(synced) => {
                    synced_bwd(dy, &x_saved, &stats, synced, x_needs_grad)?
                }
                plain => {
                    let training = matches!(plain, Statistics::Batch);
                    backend::batch_norm_bwd(dy, &x_saved, &stats, training, x_needs_grad)?
                }
            };
            Ok(vec![g.dx, Some(g.dgamma), Some(g.dbeta)])
        }
    }))
}

/// The backward pass of a synchronized batch norm: dx from Σdy and Σdy·x̂ summed over the
/// replicas; dγ and dβ this replica's own sums.
fn synced_bwd(
    dy: &RawTensor,
    x: &RawTensor,
    stats: &BatchNormStats<'_>,
    synced: &Synced,
    want_dx: bool,
) -> Result<BatchNormGrads> {
    let (dbeta, dgamma) = backend::batch_norm_bwd_sums(dy, x, stats)?;
    let dx = match want_dx {
        true => {
            let [sum_dy, sum_dy_xhat] = summed(synced.sum.as_ref(), [&dbeta, &dgamma])?;
            let sums = BatchNormSums {
                sum_dy: &sum_dy,
                sum_dy_xhat: &sum_dy_xhat,
                count: synced.count,
            };
            Some(backend::batch_norm_bwd_dx(dy, x, stats, &sums, true)?)
        }
        false => None,
    };
    Ok(BatchNormGrads { dx, dgamma, dbeta })
}
