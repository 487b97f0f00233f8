//! Launchers for kernels/optim.cu.

use super::params::to_i64;
use super::{elementwise_config, kernel_params, launch, Gpu, GpuBuffer};
use crate::error::Result;

/// Mirrors `SgdMomentumParams` in kernels/optim.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct SgdMomentumParams {
    w: u64,
    g: u64,
    velocity: u64,
    n: i64,
    lr: f32,
    momentum: f32,
    weight_decay: f32,
}

kernel_params!(SgdMomentumParams);

/// One fused SGD-with-momentum step over `n` parameters, in place.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgd_momentum(
    gpu: &Gpu,
    w: &mut GpuBuffer,
    g: &GpuBuffer,
    velocity: &mut GpuBuffer,
    n: usize,
    lr: f32,
    momentum: f32,
    weight_decay: f32,
) -> Result<()> {
    let params = SgdMomentumParams {
        w: w.address(),
        g: g.address(),
        velocity: velocity.address(),
        n: to_i64("parameter count", n)?,
        lr,
        momentum,
        weight_decay,
    };
    launch(gpu, "sgd_momentum_f32", elementwise_config(n), &params)
}
