//! Batch-normalization primitives: per-channel statistics, the normalize map, and the backward
//! pass (per-channel reductions, then dx).

use super::storage::{in_storage, widen_only, StoredOutputs};
use super::RawTensor;
use super::{common_device, gpu_f32, gpu_float, gpu_output, host_output, with_float};
use crate::core::device::Device;
use crate::core::dtype::{DType, Element};
use crate::core::error::{invalid, Error, Result};
use crate::core::layout::ChannelLayout;
use crate::core::shape::as_nchw;
use crate::cpu;
use crate::cpu::norm::ChannelNorm;
use crate::cuda;
use crate::cuda::norm::GpuChannelNorm;

/// The per-channel tensors (each [C] on x's device, of x's dtype, or f32 for bf16/f16 activations)
/// a batch-norm pass normalizes with:
/// x̂ = (x − mean)/√(var + eps), y = γ·x̂ + β.
#[derive(Clone, Copy, Debug)]
pub struct BatchNormStats<'a> {
    pub mean: &'a RawTensor,
    pub var: &'a RawTensor,
    pub gamma: &'a RawTensor,
    pub eps: f64,
}

/// Gradients of a batch-norm pass: dx (when asked for), dγ = Σdy·x̂ and dβ = Σdy per channel.
#[derive(Debug)]
pub struct BatchNormGrads {
    pub dx: Option<RawTensor>,
    pub dgamma: RawTensor,
    pub dbeta: RawTensor,
}

/// Only dx is a value of x's storage: dγ and dβ are f32 (the parameters' gradients).
impl StoredOutputs for BatchNormGrads {
    fn stored(self, format: DType) -> Result<Self> {
        let dx = self.dx.map(|dx| dx.stored(format)).transpose()?;
        Ok(BatchNormGrads { dx, ..self })
    }
}

/// `x` seen per channel; an error unless it is a 4-d NCHW tensor with at least one channel.
pub fn batch_norm_layout(op: &'static str, x: &RawTensor) -> Result<ChannelLayout> {
    let [batch, channels, h, w] = as_nchw(op, x.shape())?;
    if channels == 0 {
        return Err(invalid(
            "input shape",
            format!("{op}: the input has no channels"),
        ));
    }
    Ok(ChannelLayout {
        batch,
        channels,
        plane: h * w,
    })
}

/// The dtype of the per-channel tensors (statistics, γ, β) that go with `x`: x's own, or f32 for
/// 16-bit activations.
fn channel_dtype(x: &RawTensor) -> DType {
    match x.dtype() {
        DType::BF16 | DType::F16 => DType::F32,
        other => other,
    }
}

/// Checks that each of `per_channel` is a [C] tensor of [`channel_dtype`] on x's device.
fn check_per_channel(
    op: &'static str,
    x: &RawTensor,
    channels: usize,
    per_channel: &[&RawTensor],
) -> Result<()> {
    for t in per_channel {
        common_device(op, &[x, t])?;
        t.expect_dtype(op, channel_dtype(x))?;
        t.expect_shape(op, &[channels])?;
    }
    Ok(())
}

fn check_stats(
    op: &'static str,
    x: &RawTensor,
    stats: &BatchNormStats<'_>,
) -> Result<ChannelLayout> {
    let layout = batch_norm_layout(op, x)?;
    check_per_channel(
        op,
        x,
        layout.channels,
        &[stats.mean, stats.var, stats.gamma],
    )?;
    if !(stats.eps >= 0.0 && stats.eps.is_finite()) {
        return Err(invalid(
            "batch norm eps",
            format!("{op}: eps must be finite and ≥ 0, got {}", stats.eps),
        ));
    }
    Ok(layout)
}

fn host_norm<'a, T: cpu::Float + Element>(
    op: &'static str,
    stats: &BatchNormStats<'a>,
) -> Result<ChannelNorm<'a, T>> {
    Ok(ChannelNorm {
        mean: stats.mean.host_slice::<T>(op)?,
        var: stats.var.host_slice::<T>(op)?,
        gamma: stats.gamma.host_slice::<T>(op)?,
        eps: <T as num_traits::NumCast>::from(stats.eps).unwrap_or_else(T::nan),
    })
}

fn gpu_norm<'a>(op: &'static str, stats: &BatchNormStats<'a>) -> Result<GpuChannelNorm<'a>> {
    Ok(GpuChannelNorm {
        mean: gpu_f32(op, stats.mean)?.1,
        var: gpu_f32(op, stats.var)?.1,
        gamma: gpu_f32(op, stats.gamma)?.1,
        eps: stats.eps as f32,
    })
}

/// Per-channel mean and biased variance Σ(x − mean)²/M over the M = N·H·W values of each channel
/// of `x` [N, C, H, W]: two [C] tensors, computed in two passes (sound for a large mean).
pub fn batch_norm_stats(x: &RawTensor) -> Result<(RawTensor, RawTensor)> {
    const OP: &str = "batch norm statistics";
    widen_only(&["batch_norm_stats"], [x], |[x]| {
        let layout = batch_norm_layout(OP, x)?;
        let c = layout.channels;
        match x.device() {
            Device::Cpu => with_float!(OP, x, |T| {
                let xs = x.host_slice::<T>(OP)?;
                let mut var = vec![0.0 as T; c];
                let mean = host_output::<T>(vec![c], |mean| {
                    cpu::norm::batch_norm_stats(xs, layout, mean, &mut var)
                });
                Ok((mean, RawTensor::host(T::wrap(var), vec![c], T::DTYPE)))
            }),
            _ => {
                let (gpu, xb, s) = gpu_float(OP, x)?;
                let mut var = gpu.alloc(c * DType::F32.size_in_bytes())?;
                let mean = gpu_output(&gpu, vec![c], DType::F32, |mean| {
                    cuda::norm::batch_norm_stats(&gpu, s, xb, layout, mean, &mut var)
                })?;
                Ok((mean, RawTensor::from_gpu(var, vec![c], DType::F32)))
            }
        }
    })
}

/// y = γ·(x − mean)/√(var + eps) + β per channel of `x` [N, C, H, W].
pub fn batch_norm_fwd(
    x: &RawTensor,
    stats: &BatchNormStats<'_>,
    beta: &RawTensor,
) -> Result<RawTensor> {
    const OP: &str = "batch norm";
    in_storage(&["batch_norm_fwd"], [x], |[x]| {
        let layout = check_stats(OP, x, stats)?;
        check_per_channel(OP, x, layout.channels, &[beta])?;
        let shape = x.shape().to_vec();
        match x.device() {
            Device::Cpu => with_float!(OP, x, |T| {
                let xs = x.host_slice::<T>(OP)?;
                let norm = host_norm::<T>(OP, stats)?;
                let bs = beta.host_slice::<T>(OP)?;
                Ok(host_output::<T>(shape, |y| {
                    cpu::norm::batch_norm_fwd(xs, layout, norm, bs, y)
                }))
            }),
            _ => {
                let (gpu, xb, s) = gpu_float(OP, x)?;
                let norm = gpu_norm(OP, stats)?;
                let (_, bb) = gpu_f32(OP, beta)?;
                gpu_output(&gpu, shape, s.dtype(), |y| {
                    cuda::norm::batch_norm_fwd(&gpu, s, xb, layout, &norm, bb, y)
                })
            }
        }
    })
}

/// The backward pass of [`batch_norm_fwd`] for output gradient `dy`: dγ = Σdy·x̂, dβ = Σdy, and
/// (when `want_dx`) dx = γ/σ·(dy − mean(dy) − x̂·mean(dy·x̂)) if `training` (the statistics are
/// this batch's, so they depend on x), else dx = γ/σ·dy (the statistics are constants).
pub fn batch_norm_bwd(
    dy: &RawTensor,
    x: &RawTensor,
    stats: &BatchNormStats<'_>,
    training: bool,
    want_dx: bool,
) -> Result<BatchNormGrads> {
    const OP: &str = "batch norm backward";
    let kernels = &["batch_norm_bwd_reduce", "batch_norm_bwd_dx"];
    in_storage(kernels, [x, dy], |[wide_x, wide_dy]| {
        if wide_x.dtype() != x.dtype() {
            // Widened: dy must have been stored in x's format too.
            dy.expect_dtype(OP, x.dtype())?;
        }
        let (x, dy) = (wide_x, wide_dy);
        let layout = check_stats(OP, x, stats)?;
        common_device(OP, &[x, dy])?;
        dy.expect_dtype(OP, x.dtype())?;
        dy.expect_shape(OP, x.shape())?;
        let (c, shape) = (layout.channels, x.shape().to_vec());
        match x.device() {
            Device::Cpu => with_float!(OP, x, |T| {
                let (ds, xs) = (dy.host_slice::<T>(OP)?, x.host_slice::<T>(OP)?);
                let norm = host_norm::<T>(OP, stats)?;
                let (mut sum_dy, mut sum_dy_xhat) = (vec![0.0 as T; c], vec![0.0 as T; c]);
                cpu::norm::batch_norm_bwd_reduce(
                    ds,
                    xs,
                    layout,
                    norm,
                    &mut sum_dy,
                    &mut sum_dy_xhat,
                );
                let dx = want_dx.then(|| {
                    host_output::<T>(shape, |dx| {
                        let sums = (sum_dy.as_slice(), sum_dy_xhat.as_slice());
                        cpu::norm::batch_norm_bwd_dx(ds, xs, layout, norm, sums, training, dx)
                    })
                });
                Ok(BatchNormGrads {
                    dx,
                    dgamma: RawTensor::host(T::wrap(sum_dy_xhat), vec![c], T::DTYPE),
                    dbeta: RawTensor::host(T::wrap(sum_dy), vec![c], T::DTYPE),
                })
            }),
            _ => {
                let (gpu, xb, s) = gpu_float(OP, x)?;
                let inputs = cuda::norm::BackwardInputs {
                    dy: dy.gpu_buffer(OP)?, // x's dtype, checked above
                    x: xb,
                    storage: s,
                };
                let norm = gpu_norm(OP, stats)?;
                let bytes = c * DType::F32.size_in_bytes();
                let (mut sum_dy, mut sum_dy_xhat) = (gpu.alloc(bytes)?, gpu.alloc(bytes)?);
                cuda::norm::batch_norm_bwd_reduce(
                    &gpu,
                    inputs,
                    layout,
                    &norm,
                    &mut sum_dy,
                    &mut sum_dy_xhat,
                )?;
                let dx = if want_dx {
                    Some(gpu_output(&gpu, shape, s.dtype(), |dx| {
                        let sums = (&sum_dy, &sum_dy_xhat);
                        cuda::norm::batch_norm_bwd_dx(
                            &gpu, inputs, layout, &norm, sums, training, dx,
                        )
                    })?)
                } else {
                    None
                };
                Ok(BatchNormGrads {
                    dx,
                    dgamma: RawTensor::from_gpu(sum_dy_xhat, vec![c], DType::F32),
                    dbeta: RawTensor::from_gpu(sum_dy, vec![c], DType::F32),
                })
            }
        }
    })
}
