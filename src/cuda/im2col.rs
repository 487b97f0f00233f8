//! Launchers for kernels/im2col.cu.

use super::params::ConvGeom;
use super::{elementwise_config, kernel_params, launch, Gpu, GpuBuffer};
use crate::error::Result;
use crate::shape::ConvGeometry;

/// Mirrors `Im2colParams` in kernels/im2col.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct Im2colParams {
    im: u64,
    col: u64,
    g: ConvGeom,
}

/// Mirrors `Col2imParams` in kernels/im2col.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct Col2imParams {
    col: u64,
    im: u64,
    g: ConvGeom,
}

kernel_params!(Im2colParams, Col2imParams);

/// Unfolds the whole batch `im` [N][C][H][W] into `col` [N][C·KH·KW][OH·OW].
pub(crate) fn im2col(
    gpu: &Gpu,
    im: &GpuBuffer,
    g: &ConvGeometry,
    col: &mut GpuBuffer,
) -> Result<()> {
    let params = Im2colParams {
        im: im.address(),
        col: col.address(),
        g: ConvGeom::new(g)?,
    };
    launch(gpu, "im2col_f32", elementwise_config(g.col_len()), &params)
}

/// Folds `col` back into `im` (overwritten), summing overlapping taps: the adjoint of im2col.
pub(crate) fn col2im(
    gpu: &Gpu,
    col: &GpuBuffer,
    g: &ConvGeometry,
    im: &mut GpuBuffer,
) -> Result<()> {
    let params = Col2imParams {
        col: col.address(),
        im: im.address(),
        g: ConvGeom::new(g)?,
    };
    launch(
        gpu,
        "col2im_f32",
        elementwise_config(g.input_len()),
        &params,
    )
}
