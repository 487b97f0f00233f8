//! Launchers for kernels/reduce.cu.

use super::params::to_i64;
use super::{kernel_params, kernels, launch, Gpu, GpuBuffer, LaunchConfig};
use crate::core::error::Result;

/// Mirrors `SumParams` in kernels/reduce.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct SumParams {
    x: u64,
    out: u64,
    n: i64,
    scale: f32,
}

kernel_params!(SumParams);

/// out[0] = scale·Σ x[..n], in one block (deterministic).
pub(crate) fn sum(
    gpu: &Gpu,
    x: &GpuBuffer,
    n: usize,
    scale: f32,
    out: &mut GpuBuffer,
) -> Result<()> {
    let params = SumParams {
        x: x.address(),
        out: out.address(),
        n: to_i64("sum length", n)?,
        scale,
    };
    let cfg = LaunchConfig {
        grid: (1, 1, 1),
        block: (256, 1, 1),
        shared_bytes: 0,
    };
    launch(gpu, kernels::SUM_F32, cfg, &params)
}
