//! Launchers for kernels/cast.cu: f32 ⇄ bf16/f16.

use super::params::to_i64;
use super::{elementwise_config, kernel_params, launch, Gpu, GpuBuffer};
use crate::core::error::Result;

/// Mirrors `CastParams` in kernels/cast.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct CastParams {
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
    cast(gpu, "cast_f32_to_16bit", x, y, n, bf16)
}

/// y (f32) = x (16-bit, bf16 when `bf16` else f16), exactly, over `n` elements.
pub(crate) fn f16bit_to_f32(
    gpu: &Gpu,
    x: &GpuBuffer,
    y: &mut GpuBuffer,
    n: usize,
    bf16: bool,
) -> Result<()> {
    cast(gpu, "cast_16bit_to_f32", x, y, n, bf16)
}

fn cast(
    gpu: &Gpu,
    kernel: &'static str,
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
