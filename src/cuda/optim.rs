//! Launchers for kernels/optim.cu: one fused, in-place update per optimizer, one thread per four
//! parameters (the kernels' 16-byte accesses). The hyper-parameters arrive validated and converted to f32 by src/backend/optim.rs;
//! while a CUDA graph is recorded the per-step ones are read from the graph's step scalars instead.

use super::params::to_i64;
use super::{elementwise_config, kernel_params, kernels, launch, Gpu, GpuBuffer};
use crate::core::error::Result;
use crate::core::optim::{MomentumStep, RmsPropStep};

/// Mirrors `SgdParams` in kernels/optim.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct SgdParams {
    w: u64,
    g: u64,
    scalars: u64,
    n: i64,
    lr: f32,
    weight_decay: f32,
}

/// Mirrors `SgdMomentumParams` in kernels/optim.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct SgdMomentumParams {
    w: u64,
    g: u64,
    velocity: u64,
    scalars: u64,
    n: i64,
    lr: f32,
    momentum: f32,
    weight_decay: f32,
    nesterov: i32,
}

/// Mirrors `RmspropParams` in kernels/optim.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct RmspropParams {
    w: u64,
    g: u64,
    square_avg: u64,
    scalars: u64,
    n: i64,
    lr: f32,
    alpha: f32,
    eps: f32,
    weight_decay: f32,
}

/// Mirrors `AdamParams` in kernels/optim.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct AdamParams {
    w: u64,
    g: u64,
    exp_avg: u64,
    exp_avg_sq: u64,
    scalars: u64,
    n: i64,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    decay: f32,
    step_size: f32,
    bias_correction2_sqrt: f32,
}

kernel_params!(SgdParams, SgdMomentumParams, RmspropParams, AdamParams);

/// One plain SGD step (no state) over `n` parameters, in place.
pub(crate) fn sgd(
    gpu: &Gpu,
    w: &mut GpuBuffer,
    g: &GpuBuffer,
    n: usize,
    lr: f32,
    weight_decay: f32,
) -> Result<()> {
    let params = SgdParams {
        w: w.address(),
        g: g.address(),
        scalars: gpu.step_scalars_address(),
        n: to_i64("parameter count", n)?,
        lr,
        weight_decay,
    };
    launch(
        gpu,
        kernels::SGD_F32,
        elementwise_config(n.div_ceil(4)),
        &params,
    )
}

/// One fused SGD-with-momentum step (classic or Nesterov) over `n` parameters, in place.
pub(crate) fn sgd_momentum(
    gpu: &Gpu,
    w: &mut GpuBuffer,
    g: &GpuBuffer,
    velocity: &mut GpuBuffer,
    n: usize,
    hp: &MomentumStep,
) -> Result<()> {
    let params = SgdMomentumParams {
        w: w.address(),
        g: g.address(),
        velocity: velocity.address(),
        scalars: gpu.step_scalars_address(),
        n: to_i64("parameter count", n)?,
        lr: hp.lr as f32,
        momentum: hp.momentum as f32,
        weight_decay: hp.weight_decay as f32,
        nesterov: i32::from(hp.nesterov),
    };
    launch(
        gpu,
        kernels::SGD_MOMENTUM_F32,
        elementwise_config(n.div_ceil(4)),
        &params,
    )
}

/// One fused RMSprop step over `n` parameters and their running mean of squared gradients.
pub(crate) fn rmsprop(
    gpu: &Gpu,
    w: &mut GpuBuffer,
    g: &GpuBuffer,
    square_avg: &mut GpuBuffer,
    n: usize,
    hp: &RmsPropStep,
) -> Result<()> {
    let params = RmspropParams {
        w: w.address(),
        g: g.address(),
        square_avg: square_avg.address(),
        scalars: gpu.step_scalars_address(),
        n: to_i64("parameter count", n)?,
        lr: hp.lr as f32,
        alpha: hp.alpha as f32,
        eps: hp.eps as f32,
        weight_decay: hp.weight_decay as f32,
    };
    launch(
        gpu,
        kernels::RMSPROP_F32,
        elementwise_config(n.div_ceil(4)),
        &params,
    )
}

/// One fused Adam/AdamW step over `n` parameters and their two moment estimates; `c` holds the
/// per-step scalars computed on the host (see `cpu::optim::AdamCoefficients`).
pub(crate) fn adam(
    gpu: &Gpu,
    w: &mut GpuBuffer,
    g: &GpuBuffer,
    exp_avg: &mut GpuBuffer,
    exp_avg_sq: &mut GpuBuffer,
    n: usize,
    c: &crate::core::adam::AdamCoefficients<f32>,
) -> Result<()> {
    let params = AdamParams {
        w: w.address(),
        g: g.address(),
        exp_avg: exp_avg.address(),
        exp_avg_sq: exp_avg_sq.address(),
        scalars: gpu.step_scalars_address(),
        n: to_i64("parameter count", n)?,
        beta1: c.beta1,
        beta2: c.beta2,
        eps: c.eps,
        weight_decay: c.weight_decay,
        decay: c.decay,
        step_size: c.step_size,
        bias_correction2_sqrt: c.bias_correction2_sqrt,
    };
    launch(
        gpu,
        kernels::ADAM_F32,
        elementwise_config(n.div_ceil(4)),
        &params,
    )
}
