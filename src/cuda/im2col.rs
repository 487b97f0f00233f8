//! Launchers for kernels/im2col.cu.

use super::params::{ConvGeom, StorageFormat};
use super::{elementwise_config, kernel_params, kernels, launch, Gpu, GpuBuffer};
use crate::core::error::Result;
use crate::core::shape::ConvGeometry;

/// Mirrors `Im2colParams` in kernels/im2col.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Im2colParams {
    im: u64,
    col: u64,
    g: ConvGeom,
}

/// Mirrors `Col2imParams` in kernels/im2col.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Col2imParams {
    col: u64,
    im: u64,
    g: ConvGeom,
}

/// Mirrors `Im2col16Params` in kernels/im2col.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Im2col16Params {
    im: u64,
    col: u64,
    g: ConvGeom,
    bf16: i32,
}

kernel_params!(Im2colParams, Col2imParams, Im2col16Params);

/// Unfolds the whole batch `im` [N][C][H][W] into `col` [N][C·KH·KW][OH·OW], both of storage `s`.
pub(crate) fn im2col(
    gpu: &Gpu,
    s: StorageFormat,
    im: &GpuBuffer,
    g: &ConvGeometry,
    col: &mut GpuBuffer,
) -> Result<()> {
    im2col_at(gpu, s, im.address(), g, col.address())
}

/// [`im2col`] on device addresses: `im` holds g.batch images, `col` their columns (the caller
/// checked both ranges, e.g. with `GpuBuffer::address_of_range`). With 16-bit storage the columns
/// are the input's values as they are: the tensor-core GEMM's operand with nothing to round.
pub(crate) fn im2col_at(
    gpu: &Gpu,
    s: StorageFormat,
    im: u64,
    g: &ConvGeometry,
    col: u64,
) -> Result<()> {
    let params = Im2colParams {
        im,
        col,
        g: ConvGeom::new(g)?,
    };
    launch(
        gpu,
        kernels::IM2COL.of(s),
        elementwise_config(g.col_len()),
        &params,
    )
}

/// [`im2col_at`] writing bf16 (`bf16`) or f16 columns, rounded to nearest even: the 16-bit
/// operand of the tensor-core GEMM in one pass.
pub(crate) fn im2col_16bit_at(
    gpu: &Gpu,
    im: u64,
    g: &ConvGeometry,
    col: u64,
    bf16: bool,
) -> Result<()> {
    let params = Im2col16Params {
        im,
        col,
        g: ConvGeom::new(g)?,
        bf16: bf16 as i32,
    };
    launch(
        gpu,
        kernels::IM2COL_16BIT,
        elementwise_config(g.col_len()),
        &params,
    )
}

/// Folds `col` back into `im` (overwritten), summing overlapping taps: the adjoint of im2col.
pub(crate) fn col2im(
    gpu: &Gpu,
    col: &GpuBuffer,
    g: &ConvGeometry,
    im: &mut GpuBuffer,
) -> Result<()> {
    col2im_at(gpu, StorageFormat::F32, col.address(), g, im.address())
}

/// [`col2im`] on device addresses (ranges checked by the caller), the image of storage `s` (the
/// columns are f32).
pub(crate) fn col2im_at(
    gpu: &Gpu,
    s: StorageFormat,
    col: u64,
    g: &ConvGeometry,
    im: u64,
) -> Result<()> {
    let params = Col2imParams {
        col,
        im,
        g: ConvGeom::new(g)?,
    };
    launch(
        gpu,
        kernels::COL2IM.of(s),
        elementwise_config(g.input_len()),
        &params,
    )
}
