//! Launchers for kernels/norm.cu.

use super::{elementwise_config, kernel_params, kernels, launch, Gpu, GpuBuffer, LaunchConfig};
use crate::core::error::Result;
use crate::core::layout::ChannelLayout;
use crate::cuda::params::{to_i32, to_i64, StorageFormat};

/// Mirrors `BatchNormStatsParams` in kernels/norm.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct BatchNormStatsParams {
    x: u64,
    mean: u64,
    var: u64,
    plane: i64,
    batch: i32,
    channels: i32,
}

/// Mirrors `BatchNormFwdParams` in kernels/norm.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct BatchNormFwdParams {
    x: u64,
    mean: u64,
    var: u64,
    gamma: u64,
    beta: u64,
    y: u64,
    n: i64,
    plane: i64,
    channels: i32,
    eps: f32,
}

/// Mirrors `BatchNormBwdReduceParams` in kernels/norm.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct BatchNormBwdReduceParams {
    dy: u64,
    x: u64,
    mean: u64,
    var: u64,
    sum_dy: u64,
    sum_dy_xhat: u64,
    plane: i64,
    batch: i32,
    channels: i32,
    eps: f32,
}

/// Mirrors `BatchNormBwdDxParams` in kernels/norm.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct BatchNormBwdDxParams {
    dy: u64,
    x: u64,
    mean: u64,
    var: u64,
    gamma: u64,
    sum_dy: u64,
    sum_dy_xhat: u64,
    dx: u64,
    n: i64,
    plane: i64,
    channels: i32,
    training: i32,
    eps: f32,
    inv_count: f32,
}

kernel_params!(
    BatchNormStatsParams,
    BatchNormFwdParams,
    BatchNormBwdReduceParams,
    BatchNormBwdDxParams
);

/// The per-channel buffers a pass normalizes with (mirrors `cpu::norm::ChannelNorm`).
pub(crate) struct GpuChannelNorm<'a> {
    pub mean: &'a GpuBuffer,
    pub var: &'a GpuBuffer,
    pub gamma: &'a GpuBuffer,
    pub eps: f32,
}

/// The kernels' sizes of `layout`: (plane as long long, batch and channels as int).
fn sizes(layout: ChannelLayout) -> Result<(i64, i32, i32)> {
    to_i64("batch norm length", layout.len())?;
    Ok((
        to_i64("batch norm plane", layout.plane)?,
        to_i32("batch norm batch", layout.batch)?,
        to_i32("batch norm channels", layout.channels)?,
    ))
}

/// One block of 256 threads per channel.
fn per_channel_config(channels: i32) -> LaunchConfig {
    LaunchConfig {
        grid: (channels as u32, 1, 1),
        block: (256, 1, 1),
        shared_bytes: 0,
    }
}

/// Per-channel mean and biased variance of `x`.
pub(crate) fn batch_norm_stats(
    gpu: &Gpu,
    s: StorageFormat,
    x: &GpuBuffer,
    layout: ChannelLayout,
    mean: &mut GpuBuffer,
    var: &mut GpuBuffer,
) -> Result<()> {
    let (plane, batch, channels) = sizes(layout)?;
    let params = BatchNormStatsParams {
        x: x.address(),
        mean: mean.address(),
        var: var.address(),
        plane,
        batch,
        channels,
    };
    launch(
        gpu,
        kernels::BATCH_NORM_STATS.of(s),
        per_channel_config(channels),
        &params,
    )
}

/// y = γ·x̂ + β.
pub(crate) fn batch_norm_fwd(
    gpu: &Gpu,
    s: StorageFormat,
    x: &GpuBuffer,
    layout: ChannelLayout,
    norm: &GpuChannelNorm<'_>,
    beta: &GpuBuffer,
    y: &mut GpuBuffer,
) -> Result<()> {
    let (plane, _, channels) = sizes(layout)?;
    let n = layout.len();
    let params = BatchNormFwdParams {
        x: x.address(),
        mean: norm.mean.address(),
        var: norm.var.address(),
        gamma: norm.gamma.address(),
        beta: beta.address(),
        y: y.address(),
        n: to_i64("batch norm length", n)?,
        plane,
        channels,
        eps: norm.eps,
    };
    launch(
        gpu,
        kernels::BATCH_NORM_FWD.of(s),
        elementwise_config(n),
        &params,
    )
}

/// What the backward kernels read of a batch-norm pass: its output gradient and input, both of
/// storage `storage`.
#[derive(Clone, Copy)]
pub(crate) struct BackwardInputs<'a> {
    pub dy: &'a GpuBuffer,
    pub x: &'a GpuBuffer,
    pub storage: StorageFormat,
}

/// Per channel: Σdy and Σdy·x̂.
pub(crate) fn batch_norm_bwd_reduce(
    gpu: &Gpu,
    BackwardInputs { dy, x, storage: s }: BackwardInputs<'_>,
    layout: ChannelLayout,
    norm: &GpuChannelNorm<'_>,
    sum_dy: &mut GpuBuffer,
    sum_dy_xhat: &mut GpuBuffer,
) -> Result<()> {
    let (plane, batch, channels) = sizes(layout)?;
    let params = BatchNormBwdReduceParams {
        dy: dy.address(),
        x: x.address(),
        mean: norm.mean.address(),
        var: norm.var.address(),
        sum_dy: sum_dy.address(),
        sum_dy_xhat: sum_dy_xhat.address(),
        plane,
        batch,
        channels,
        eps: norm.eps,
    };
    launch(
        gpu,
        kernels::BATCH_NORM_BWD_REDUCE.of(s),
        per_channel_config(channels),
        &params,
    )
}

/// What dx needs of the batch the statistics came from: per channel Σdy and Σdy·x̂ (f32 [C];
/// [`batch_norm_bwd_reduce`] for this batch alone) and the count M of values they sum over.
#[derive(Clone, Copy)]
pub(crate) struct BackwardSums<'a> {
    pub sum_dy: &'a GpuBuffer,
    pub sum_dy_xhat: &'a GpuBuffer,
    pub count: usize,
}

/// dx from dy and the batch's [`BackwardSums`].
pub(crate) fn batch_norm_bwd_dx(
    gpu: &Gpu,
    BackwardInputs { dy, x, storage: s }: BackwardInputs<'_>,
    layout: ChannelLayout,
    norm: &GpuChannelNorm<'_>,
    sums: BackwardSums<'_>,
    training: bool,
    dx: &mut GpuBuffer,
) -> Result<()> {
    let (plane, _, channels) = sizes(layout)?;
    let n = layout.len();
    let params = BatchNormBwdDxParams {
        dy: dy.address(),
        x: x.address(),
        mean: norm.mean.address(),
        var: norm.var.address(),
        gamma: norm.gamma.address(),
        sum_dy: sums.sum_dy.address(),
        sum_dy_xhat: sums.sum_dy_xhat.address(),
        dx: dx.address(),
        n: to_i64("batch norm length", n)?,
        plane,
        channels,
        training: i32::from(training),
        eps: norm.eps,
        inv_count: 1.0 / sums.count as f32,
    };
    launch(
        gpu,
        kernels::BATCH_NORM_BWD_DX.of(s),
        elementwise_config(n),
        &params,
    )
}
