//! Launchers for kernels/activation.cu.

use super::{elementwise_config, kernel_params, launch, Gpu, GpuBuffer};
use crate::cuda::params::to_i64;
use crate::error::Result;

/// Mirrors `ReluFwdParams` in kernels/activation.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct ReluFwdParams {
    x: u64,
    y: u64,
    mask: u64,
    n: i64,
}

/// Mirrors `ReluBwdParams` in kernels/activation.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct ReluBwdParams {
    dy: u64,
    mask: u64,
    dx: u64,
    n: i64,
}

kernel_params!(ReluFwdParams, ReluBwdParams);

/// y = max(x, 0) and mask = (x > 0) over `n` f32 elements.
pub(crate) fn relu_fwd(
    gpu: &Gpu,
    x: &GpuBuffer,
    y: &mut GpuBuffer,
    mask: &mut GpuBuffer,
    n: usize,
) -> Result<()> {
    let params = ReluFwdParams {
        x: x.address(),
        y: y.address(),
        mask: mask.address(),
        n: to_i64("relu length", n)?,
    };
    launch(gpu, "relu_fwd_f32", elementwise_config(n), &params)
}

/// dx = dy · mask over `n` f32 elements.
pub(crate) fn relu_bwd(
    gpu: &Gpu,
    dy: &GpuBuffer,
    mask: &GpuBuffer,
    dx: &mut GpuBuffer,
    n: usize,
) -> Result<()> {
    let params = ReluBwdParams {
        dy: dy.address(),
        mask: mask.address(),
        dx: dx.address(),
        n: to_i64("relu length", n)?,
    };
    launch(gpu, "relu_bwd_f32", elementwise_config(n), &params)
}
