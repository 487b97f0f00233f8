//! Launchers for kernels/dropout.cu.

use super::{elementwise_config, kernel_params, kernels, launch, Gpu, GpuBuffer};
use crate::core::error::Result;
use crate::cuda::params::{to_i64, StorageFormat};

/// Mirrors `DropoutFwdParams` in kernels/dropout.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct DropoutFwdParams {
    x: u64,
    y: u64,
    mask: u64,
    scalars: u64,
    seed: u64,
    step: u64,
    step_offset: u64,
    threshold: u64,
    n: i64,
    scale: f32,
}

/// Mirrors `DropoutBwdParams` in kernels/dropout.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct DropoutBwdParams {
    dy: u64,
    mask: u64,
    dx: u64,
    n: i64,
    scale: f32,
}

kernel_params!(DropoutFwdParams, DropoutBwdParams);

/// What decides the mask and scales the survivors (see `cpu::dropout`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct DropoutDraw {
    pub seed: u64,
    /// The mask's step is step + offset; a graph capture replaces `step` by its device value.
    pub step: u64,
    pub offset: u64,
    pub threshold: u64,
    pub scale: f32,
}

/// mask = keep(seed, i), y = mask ? x·scale : 0 over `n` f32 elements.
pub(crate) fn dropout_fwd(
    gpu: &Gpu,
    s: StorageFormat,
    x: &GpuBuffer,
    draw: DropoutDraw,
    y: &mut GpuBuffer,
    mask: &mut GpuBuffer,
    n: usize,
) -> Result<()> {
    let params = DropoutFwdParams {
        x: x.address(),
        y: y.address(),
        mask: mask.address(),
        scalars: gpu.step_scalars_address(),
        seed: draw.seed,
        step: draw.step,
        step_offset: draw.offset,
        threshold: draw.threshold,
        n: to_i64("dropout length", n)?,
        scale: draw.scale,
    };
    launch(
        gpu,
        kernels::DROPOUT_FWD.of(s),
        elementwise_config(n),
        &params,
    )
}

/// dx = mask ? dy·scale : 0 over `n` f32 elements.
pub(crate) fn dropout_bwd(
    gpu: &Gpu,
    s: StorageFormat,
    dy: &GpuBuffer,
    mask: &GpuBuffer,
    scale: f32,
    dx: &mut GpuBuffer,
    n: usize,
) -> Result<()> {
    let params = DropoutBwdParams {
        dy: dy.address(),
        mask: mask.address(),
        dx: dx.address(),
        n: to_i64("dropout length", n)?,
        scale,
    };
    launch(
        gpu,
        kernels::DROPOUT_BWD.of(s),
        elementwise_config(n),
        &params,
    )
}
