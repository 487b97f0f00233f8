//! Launchers for kernels/pool.cu.

use super::params::ConvGeom;
use super::{elementwise_config, kernel_params, launch, Gpu, GpuBuffer};
use crate::error::Result;
use crate::shape::ConvGeometry;

/// Mirrors `MaxPoolFwdParams` in kernels/pool.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct MaxPoolFwdParams {
    x: u64,
    y: u64,
    argmax: u64,
    g: ConvGeom,
}

/// Mirrors `MaxPoolBwdParams` in kernels/pool.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct MaxPoolBwdParams {
    dy: u64,
    argmax: u64,
    dx: u64,
    g: ConvGeom,
}

kernel_params!(MaxPoolFwdParams, MaxPoolBwdParams);

/// Max over each window of `x`, recording the winner's index in its input plane.
pub(crate) fn maxpool_fwd(
    gpu: &Gpu,
    x: &GpuBuffer,
    g: &ConvGeometry,
    y: &mut GpuBuffer,
    argmax: &mut GpuBuffer,
) -> Result<()> {
    let params = MaxPoolFwdParams {
        x: x.address(),
        y: y.address(),
        argmax: argmax.address(),
        g: ConvGeom::new(g)?,
    };
    let outputs = g.batch * g.in_channels * g.out_h * g.out_w;
    launch(gpu, "maxpool_fwd_f32", elementwise_config(outputs), &params)
}

/// Routes `dy` to the recorded winners (gather per input pixel; `dx` is overwritten).
pub(crate) fn maxpool_bwd(
    gpu: &Gpu,
    dy: &GpuBuffer,
    argmax: &GpuBuffer,
    g: &ConvGeometry,
    dx: &mut GpuBuffer,
) -> Result<()> {
    let params = MaxPoolBwdParams {
        dy: dy.address(),
        argmax: argmax.address(),
        dx: dx.address(),
        g: ConvGeom::new(g)?,
    };
    launch(
        gpu,
        "maxpool_bwd_f32",
        elementwise_config(g.input_len()),
        &params,
    )
}
