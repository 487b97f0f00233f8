//! Batch-normalization primitives: per-channel statistics, the normalize map, and the backward
//! pass (per-channel reductions, then dx).

use super::primitive::{run, HostFloat, OnGpu, Op, Primitive};
use super::storage::Unrounded;
use super::{common_device, gpu_f32, gpu_output, host_output, RawTensor};
use crate::core::dtype::DType;
use crate::core::error::{invalid, Result};
use crate::core::layout::ChannelLayout;
use crate::core::shape::as_nchw;
use crate::cpu;
use crate::cpu::norm::ChannelNorm;
use crate::cuda;
use crate::cuda::norm::GpuChannelNorm;
use crate::cuda::GpuBuffer;

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

/// A batch-norm pass over x: its shape, seen per channel, and the statistics it normalizes with.
struct Channels<'a> {
    shape: &'a [usize],
    layout: ChannelLayout,
    stats: BatchNormStats<'a>,
}

impl<'a> Channels<'a> {
    fn new(op: &'static str, x: &'a RawTensor, stats: &BatchNormStats<'a>) -> Result<Self> {
        let layout = batch_norm_layout(op, x)?;
        Ok(Channels {
            shape: x.shape(),
            layout,
            stats: *stats,
        })
    }

    /// Checks the statistics against x, and eps.
    fn check(&self, op: &'static str, x: &RawTensor) -> Result<()> {
        let s = &self.stats;
        check_per_channel(op, x, self.layout.channels, &[s.mean, s.var, s.gamma])?;
        if !(s.eps >= 0.0 && s.eps.is_finite()) {
            return Err(invalid(
                "batch norm eps",
                format!("{op}: eps must be finite and ≥ 0, got {}", s.eps),
            ));
        }
        Ok(())
    }

    fn host_norm<T: HostFloat>(&self, op: &'static str) -> Result<ChannelNorm<'a, T>> {
        let s = &self.stats;
        Ok(ChannelNorm {
            mean: s.mean.host_slice::<T>(op)?,
            var: s.var.host_slice::<T>(op)?,
            gamma: s.gamma.host_slice::<T>(op)?,
            eps: <T as num_traits::NumCast>::from(s.eps).unwrap_or_else(T::nan),
        })
    }

    fn gpu_norm(&self, op: &'static str) -> Result<GpuChannelNorm<'a>> {
        let s = &self.stats;
        Ok(GpuChannelNorm {
            mean: gpu_f32(op, s.mean)?.1,
            var: gpu_f32(op, s.var)?.1,
            gamma: gpu_f32(op, s.gamma)?.1,
            eps: s.eps as f32,
        })
    }
}

/// Per-channel mean and biased variance Σ(x − mean)²/M over the M = N·H·W values of each channel
/// of `x` [N, C, H, W]: two [C] tensors, computed in two passes (sound for a large mean).
pub fn batch_norm_stats(x: &RawTensor) -> Result<(RawTensor, RawTensor)> {
    let layout = batch_norm_layout("batch norm statistics", x)?;
    let Unrounded(stats) = run(&Stats(layout), [x])?;
    Ok(stats)
}

struct Stats(ChannelLayout);

impl Primitive<1> for Stats {
    type Output = Unrounded<(RawTensor, RawTensor)>;
    fn op(&self) -> Op {
        Op::new("batch norm statistics", &["batch_norm_stats"])
    }
    fn cpu<T: HostFloat>(&self, [x]: [&[T]; 1]) -> Result<Self::Output> {
        let c = self.0.channels;
        let mut var = vec![T::zero(); c];
        let mean = host_output::<T>(vec![c], |mean| {
            cpu::norm::batch_norm_stats(x, self.0, mean, &mut var)
        });
        let var = RawTensor::host(T::wrap(var), vec![c], T::DTYPE);
        Ok(Unrounded((mean, var)))
    }
    fn gpu(&self, on: &OnGpu, [x]: [&GpuBuffer; 1]) -> Result<Self::Output> {
        let c = self.0.channels;
        let mut var = on.gpu.alloc(c * DType::F32.size_in_bytes())?;
        let mean = gpu_output(on.gpu, vec![c], DType::F32, |mean| {
            cuda::norm::batch_norm_stats(on.gpu, on.format, x, self.0, mean, &mut var)
        })?;
        let var = RawTensor::from_gpu(var, vec![c], DType::F32);
        Ok(Unrounded((mean, var)))
    }
}

/// y = γ·(x − mean)/√(var + eps) + β per channel of `x` [N, C, H, W].
pub fn batch_norm_fwd(
    x: &RawTensor,
    stats: &BatchNormStats<'_>,
    beta: &RawTensor,
) -> Result<RawTensor> {
    let on = Channels::new("batch norm", x, stats)?;
    run(&Normalize { on, beta }, [x])
}

struct Normalize<'a> {
    on: Channels<'a>,
    beta: &'a RawTensor,
}

impl Primitive<1> for Normalize<'_> {
    type Output = RawTensor;
    fn op(&self) -> Op {
        Op::new("batch norm", &["batch_norm_fwd"])
    }
    fn check(&self, [x]: [&RawTensor; 1]) -> Result<()> {
        self.on.check(self.op().name, x)?;
        check_per_channel(self.op().name, x, self.on.layout.channels, &[self.beta])
    }
    fn cpu<T: HostFloat>(&self, [x]: [&[T]; 1]) -> Result<RawTensor> {
        let norm = self.on.host_norm::<T>(self.op().name)?;
        let beta = self.beta.host_slice::<T>(self.op().name)?;
        Ok(host_output::<T>(self.on.shape.to_vec(), |y| {
            cpu::norm::batch_norm_fwd(x, self.on.layout, norm, beta, y)
        }))
    }
    fn gpu(&self, on: &OnGpu, [x]: [&GpuBuffer; 1]) -> Result<RawTensor> {
        let norm = self.on.gpu_norm(self.op().name)?;
        let (_, beta) = gpu_f32(self.op().name, self.beta)?;
        on.output(self.on.shape.to_vec(), |y| {
            cuda::norm::batch_norm_fwd(on.gpu, on.format, x, self.on.layout, &norm, beta, y)
        })
    }
}

/// The backward pass of [`batch_norm_fwd`] for output gradient `dy`: dγ = Σdy·x̂, dβ = Σdy, and
/// (when `want_dx`) dx = γ/σ·(dy − mean(dy) − x̂·mean(dy·x̂)) if `training` (the statistics are
/// this batch's, so they depend on x), else dx = γ/σ·dy (the statistics are constants).
/// [`batch_norm_bwd_sums`] then [`batch_norm_bwd_dx`] over this batch's own M = N·H·W values.
pub fn batch_norm_bwd(
    dy: &RawTensor,
    x: &RawTensor,
    stats: &BatchNormStats<'_>,
    training: bool,
    want_dx: bool,
) -> Result<BatchNormGrads> {
    let (dbeta, dgamma) = batch_norm_bwd_sums(dy, x, stats)?;
    let dx = match want_dx {
        true => {
            let count = batch_norm_layout("batch norm backward", x)?.count();
            let sums = BatchNormSums {
                sum_dy: &dbeta,
                sum_dy_xhat: &dgamma,
                count,
            };
            Some(batch_norm_bwd_dx(dy, x, stats, &sums, training)?)
        }
        false => None,
    };
    Ok(BatchNormGrads { dx, dgamma, dbeta })
}

/// Per channel of `x` [N, C, H, W] and its output gradient `dy`: (Σdy, Σdy·x̂), each [C] of the
/// statistics' dtype. They are dβ and dγ, and what dx needs of the whole batch.
pub fn batch_norm_bwd_sums(
    dy: &RawTensor,
    x: &RawTensor,
    stats: &BatchNormStats<'_>,
) -> Result<(RawTensor, RawTensor)> {
    let on = Channels::new("batch norm backward", x, stats)?;
    let Unrounded(sums) = run(&GradSums(on), [x, dy])?;
    Ok(sums)
}

/// What dx needs of the batch that the statistics came from: (Σdy, Σdy·x̂) per channel and the
/// number of values M per channel. For this batch alone they are [`batch_norm_bwd_sums`] and
/// N·H·W; a batch split over ranks (synchronized batch norm) sums them over the ranks.
#[derive(Clone, Copy, Debug)]
pub struct BatchNormSums<'a> {
    pub sum_dy: &'a RawTensor,
    pub sum_dy_xhat: &'a RawTensor,
    pub count: usize,
}

/// dx = γ/σ·(dy − Σdy/M − x̂·Σdy·x̂/M) if `training`, else γ/σ·dy, for `x` and `dy` [N, C, H, W].
pub fn batch_norm_bwd_dx(
    dy: &RawTensor,
    x: &RawTensor,
    stats: &BatchNormStats<'_>,
    sums: &BatchNormSums<'_>,
    training: bool,
) -> Result<RawTensor> {
    if sums.count == 0 {
        return Err(invalid(
            "batch norm backward",
            "the batch the statistics came from has no values",
        ));
    }
    let on = Channels::new("batch norm backward", x, stats)?;
    let grad = InputGrad {
        on,
        sums: *sums,
        training,
    };
    run(&grad, [x, dy])
}

struct GradSums<'a>(Channels<'a>);

impl Primitive<2> for GradSums<'_> {
    type Output = Unrounded<(RawTensor, RawTensor)>;
    fn op(&self) -> Op {
        Op::new("batch norm backward sums", &["batch_norm_bwd_reduce"])
    }
    fn check(&self, [x, dy]: [&RawTensor; 2]) -> Result<()> {
        self.0.check(self.op().name, x)?;
        dy.expect_shape(self.op().name, x.shape())
    }
    fn cpu<T: HostFloat>(&self, [x, dy]: [&[T]; 2]) -> Result<Self::Output> {
        let (layout, c) = (self.0.layout, self.0.layout.channels);
        let norm = self.0.host_norm::<T>(self.op().name)?;
        let (mut sum_dy, mut sum_dy_xhat) = (vec![T::zero(); c], vec![T::zero(); c]);
        cpu::norm::batch_norm_bwd_reduce(dy, x, layout, norm, &mut sum_dy, &mut sum_dy_xhat);
        let host = |v: Vec<T>| RawTensor::host(T::wrap(v), vec![c], T::DTYPE);
        Ok(Unrounded((host(sum_dy), host(sum_dy_xhat))))
    }
    fn gpu(&self, on: &OnGpu, [x, dy]: [&GpuBuffer; 2]) -> Result<Self::Output> {
        let (layout, c) = (self.0.layout, self.0.layout.channels);
        let inputs = cuda::norm::BackwardInputs {
            dy,
            x,
            storage: on.format,
        };
        let norm = self.0.gpu_norm(self.op().name)?;
        let bytes = c * DType::F32.size_in_bytes();
        let (mut sum_dy, mut sum_dy_xhat) = (on.gpu.alloc(bytes)?, on.gpu.alloc(bytes)?);
        cuda::norm::batch_norm_bwd_reduce(
            on.gpu,
            inputs,
            layout,
            &norm,
            &mut sum_dy,
            &mut sum_dy_xhat,
        )?;
        let device = |b| RawTensor::from_gpu(b, vec![c], DType::F32);
        Ok(Unrounded((device(sum_dy), device(sum_dy_xhat))))
    }
}

struct InputGrad<'a> {
    on: Channels<'a>,
    sums: BatchNormSums<'a>,
    training: bool,
}

impl Primitive<2> for InputGrad<'_> {
    type Output = RawTensor;
    fn op(&self) -> Op {
        Op::new("batch norm input gradient", &["batch_norm_bwd_dx"])
    }
    fn check(&self, [x, dy]: [&RawTensor; 2]) -> Result<()> {
        let name = self.op().name;
        self.on.check(name, x)?;
        dy.expect_shape(name, x.shape())?;
        let sums = [self.sums.sum_dy, self.sums.sum_dy_xhat];
        check_per_channel(name, x, self.on.layout.channels, &sums)
    }
    fn cpu<T: HostFloat>(&self, [x, dy]: [&[T]; 2]) -> Result<RawTensor> {
        let name = self.op().name;
        let norm = self.on.host_norm::<T>(name)?;
        let sums = (
            self.sums.sum_dy.host_slice::<T>(name)?,
            self.sums.sum_dy_xhat.host_slice::<T>(name)?,
        );
        let sums = cpu::norm::ChannelSums {
            sum_dy: sums.0,
            sum_dy_xhat: sums.1,
            count: self.sums.count,
        };
        Ok(host_output::<T>(self.on.shape.to_vec(), |dx| {
            cpu::norm::batch_norm_bwd_dx(dy, x, self.on.layout, norm, sums, self.training, dx)
        }))
    }
    fn gpu(&self, on: &OnGpu, [x, dy]: [&GpuBuffer; 2]) -> Result<RawTensor> {
        let name = self.op().name;
        let inputs = cuda::norm::BackwardInputs {
            dy,
            x,
            storage: on.format,
        };
        let norm = self.on.gpu_norm(name)?;
        let sums = cuda::norm::BackwardSums {
            sum_dy: gpu_f32(name, self.sums.sum_dy)?.1,
            sum_dy_xhat: gpu_f32(name, self.sums.sum_dy_xhat)?.1,
            count: self.sums.count,
        };
        on.output(self.on.shape.to_vec(), |dx| {
            let layout = self.on.layout;
            cuda::norm::batch_norm_bwd_dx(on.gpu, inputs, layout, &norm, sums, self.training, dx)
        })
    }
}
