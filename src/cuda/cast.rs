//! Launchers for kernels/cast.cu: f32 ⇄ bf16/f16.

use super::params::to_i64;
use super::{elementwise_config, kernel_params, kernels, launch, Gpu, GpuBuffer, Kernel};
use crate::core::error::Result;

/// Mirrors `CastParams` in kernels/cast.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct CastParams {
    x: u64,
    y: u64,
    n: i64,
    bf16: i32,
}

kernel_params!(CastParams);

/// y (16-bit, bf16 when `bf16` else f16) = x (f32) rounded to nearest even, over `n` elements.
pub(crate) fn f32_to_16bit(
    gpu: &Gpu,
    x: &GpuBuffer,
    y: &mut GpuBuffer,
    n: usize,
    bf16: bool,
) -> Result<()> {
    cast(gpu, kernels::CAST_F32_TO_16BIT, x, y, n, bf16)
}

/// y (f32) = x (16-bit, bf16 when `bf16` else f16), exactly, over `n` elements.
pub(crate) fn f16bit_to_f32(
    gpu: &Gpu,
    x: &GpuBuffer,
    y: &mut GpuBuffer,
    n: usize,
    bf16: bool,
) -> Result<()> {
    cast(gpu, kernels::CAST_16BIT_TO_F32, x, y, n, bf16)
}

fn cast(
    gpu: &Gpu,
    kernel: Kernel<CastParams>,
    x: &GpuBuffer,
    y: &mut GpuBuffer,
    n: usize,
    bf16: bool,
) -> Result<()> {
    let params = CastParams {
        x: x.address(),
        y: y.address(),
        n: to_i64("length", n)?,
        bf16: bf16 as i32,
    };
    launch(gpu, kernel, elementwise_config(n), &params)
}
