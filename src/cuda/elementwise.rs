//! Launchers for kernels/elementwise.cu.

use super::params::{to_i64, StorageFormat};
use super::{elementwise_config, kernel_params, kernels, launch, Gpu, GpuBuffer};
use crate::core::error::Result;

/// Mirrors `AxpbyParams` in kernels/elementwise.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct AxpbyParams {
    a: u64,
    b: u64,
    out: u64,
    n: i64,
    alpha: f32,
    beta: f32,
}

/// Mirrors `MulParams` in kernels/elementwise.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct MulParams {
    a: u64,
    b: u64,
    out: u64,
    n: i64,
}

/// Mirrors `AffineParams` in kernels/elementwise.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct AffineParams {
    x: u64,
    out: u64,
    upstream: u64,
    n: i64,
    scale: f32,
    shift: f32,
}

/// Mirrors `FillParams` in kernels/elementwise.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct FillParams {
    out: u64,
    upstream: u64,
    n: i64,
    value: f32,
}

kernel_params!(AxpbyParams, MulParams, AffineParams, FillParams);

/// out = alpha·a + beta·b over `n` elements.
pub(crate) fn axpby(
    gpu: &Gpu,
    s: StorageFormat,
    (alpha, a): (f32, &GpuBuffer),
    (beta, b): (f32, &GpuBuffer),
    out: &mut GpuBuffer,
    n: usize,
) -> Result<()> {
    let params = AxpbyParams {
        a: a.address(),
        b: b.address(),
        out: out.address(),
        n: to_i64("length", n)?,
        alpha,
        beta,
    };
    launch(gpu, kernels::AXPBY.of(s), elementwise_config(n), &params)
}

/// a = alpha·a + beta·b over `n` elements, in place.
pub(crate) fn axpby_in_place(
    gpu: &Gpu,
    alpha: f32,
    a: &mut GpuBuffer,
    beta: f32,
    b: &GpuBuffer,
    n: usize,
) -> Result<()> {
    let params = AxpbyParams {
        a: a.address(),
        b: b.address(),
        out: a.address(),
        n: to_i64("length", n)?,
        alpha,
        beta,
    };
    launch(gpu, kernels::AXPBY_F32, elementwise_config(n), &params)
}

/// out = value·upstream[0] (value when `upstream` is 0, a null address) over `n` elements.
pub(crate) fn fill(
    gpu: &Gpu,
    value: f32,
    upstream: u64,
    out: &mut GpuBuffer,
    n: usize,
) -> Result<()> {
    let params = FillParams {
        out: out.address(),
        upstream,
        n: to_i64("length", n)?,
        value,
    };
    launch(gpu, kernels::FILL_F32, elementwise_config(n), &params)
}

/// out = a·b over `n` elements.
pub(crate) fn mul(
    gpu: &Gpu,
    a: &GpuBuffer,
    b: &GpuBuffer,
    out: &mut GpuBuffer,
    n: usize,
) -> Result<()> {
    let params = MulParams {
        a: a.address(),
        b: b.address(),
        out: out.address(),
        n: to_i64("length", n)?,
    };
    launch(gpu, kernels::MUL_F32, elementwise_config(n), &params)
}

/// out = scale·x + shift over `n` elements.
pub(crate) fn affine(
    gpu: &Gpu,
    x: &GpuBuffer,
    scale: f32,
    shift: f32,
    out: &mut GpuBuffer,
    n: usize,
) -> Result<()> {
    affine_times(gpu, x, scale, 0, shift, out, n)
}

/// out = scale·upstream[0]·x + shift over `n` elements (`upstream` a device address, 0 for none).
pub(crate) fn affine_times(
    gpu: &Gpu,
    x: &GpuBuffer,
    scale: f32,
    upstream: u64,
    shift: f32,
    out: &mut GpuBuffer,
    n: usize,
) -> Result<()> {
    let params = AffineParams {
        x: x.address(),
        out: out.address(),
        upstream,
        n: to_i64("length", n)?,
        scale,
        shift,
    };
    launch(gpu, kernels::AFFINE_F32, elementwise_config(n), &params)
}
