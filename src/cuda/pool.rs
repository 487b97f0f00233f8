//! Launchers for kernels/pool.cu.

use super::params::{to_i32, to_i64, ConvGeom, StorageFormat};
use super::{elementwise_config, kernel_params, kernels, launch, Gpu, GpuBuffer, LaunchConfig};
use crate::core::error::Result;
use crate::core::shape::{AdaptivePool2d, ConvGeometry};

/// Mirrors `MaxPoolFwdParams` in kernels/pool.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct MaxPoolFwdParams {
    x: u64,
    y: u64,
    argmax: u64,
    g: ConvGeom,
}

/// Mirrors `MaxPoolBwdParams` in kernels/pool.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct MaxPoolBwdParams {
    dy: u64,
    argmax: u64,
    dx: u64,
    g: ConvGeom,
}

/// Mirrors `AvgPoolFwdParams` in kernels/pool.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct AvgPoolFwdParams {
    x: u64,
    y: u64,
    g: ConvGeom,
    count_include_pad: i32,
    extent_h: i32,
    extent_w: i32,
}

/// Mirrors `AvgPoolBwdParams` in kernels/pool.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct AvgPoolBwdParams {
    dy: u64,
    dx: u64,
    g: ConvGeom,
    count_include_pad: i32,
    extent_h: i32,
    extent_w: i32,
}

/// Mirrors `L2PoolFwdParams` in kernels/pool.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct L2PoolFwdParams {
    x: u64,
    y: u64,
    g: ConvGeom,
}

/// Mirrors `L2PoolBwdParams` in kernels/pool.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct L2PoolBwdParams {
    x: u64,
    y: u64,
    dy: u64,
    dx: u64,
    g: ConvGeom,
}

/// Mirrors `GlobalAvgPoolFwdParams` in kernels/pool.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct GlobalAvgPoolFwdParams {
    x: u64,
    y: u64,
    planes: i64,
    plane_len: i64,
}

/// Mirrors `GlobalAvgPoolBwdParams` in kernels/pool.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct GlobalAvgPoolBwdParams {
    dy: u64,
    dx: u64,
    n: i64,
    plane_len: i64,
}

/// Mirrors `AdaptiveAvgPoolParams` in kernels/pool.cu (both directions).
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct AdaptiveAvgPoolParams {
    src: u64,
    dst: u64,
    planes: i64,
    in_h: i32,
    in_w: i32,
    out_h: i32,
    out_w: i32,
}

kernel_params!(
    AdaptiveAvgPoolParams,
    MaxPoolFwdParams,
    MaxPoolBwdParams,
    AvgPoolFwdParams,
    AvgPoolBwdParams,
    L2PoolFwdParams,
    L2PoolBwdParams,
    GlobalAvgPoolFwdParams,
    GlobalAvgPoolBwdParams,
);

/// Max over each window of `x`, recording the winner's index in its input plane.
pub(crate) fn maxpool_fwd(
    gpu: &Gpu,
    s: StorageFormat,
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
    launch(
        gpu,
        kernels::MAXPOOL_FWD.of(s),
        elementwise_config(outputs),
        &params,
    )
}

/// Routes `dy` to the recorded winners (gather per input pixel; `dx` is overwritten).
pub(crate) fn maxpool_bwd(
    gpu: &Gpu,
    s: StorageFormat,
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
        kernels::MAXPOOL_BWD.of(s),
        elementwise_config(g.input_len()),
        &params,
    )
}

/// Mean over each window of `x` (see `cpu::pool::avgpool_fwd` for the divisor).
pub(crate) fn avgpool_fwd(
    gpu: &Gpu,
    s: StorageFormat,
    x: &GpuBuffer,
    g: &ConvGeometry,
    count_include_pad: bool,
    y: &mut GpuBuffer,
) -> Result<()> {
    let params = AvgPoolFwdParams {
        x: x.address(),
        y: y.address(),
        g: ConvGeom::new(g)?,
        count_include_pad: count_include_pad.into(),
        extent_h: to_i32("avg pool padded height", g.in_h + g.pad_h_end)?,
        extent_w: to_i32("avg pool padded width", g.in_w + g.pad_w_end)?,
    };
    let outputs = g.batch * g.in_channels * g.out_h * g.out_w;
    launch(
        gpu,
        kernels::AVGPOOL_FWD.of(s),
        elementwise_config(outputs),
        &params,
    )
}

/// Average-pool backward (gather per input pixel; `dx` is overwritten).
pub(crate) fn avgpool_bwd(
    gpu: &Gpu,
    s: StorageFormat,
    dy: &GpuBuffer,
    g: &ConvGeometry,
    count_include_pad: bool,
    dx: &mut GpuBuffer,
) -> Result<()> {
    let params = AvgPoolBwdParams {
        dy: dy.address(),
        dx: dx.address(),
        g: ConvGeom::new(g)?,
        count_include_pad: count_include_pad.into(),
        extent_h: to_i32("avg pool padded height", g.in_h + g.pad_h_end)?,
        extent_w: to_i32("avg pool padded width", g.in_w + g.pad_w_end)?,
    };
    launch(
        gpu,
        kernels::AVGPOOL_BWD.of(s),
        elementwise_config(g.input_len()),
        &params,
    )
}

/// `y = sqrt(Σ x²)` over each window of `x`.
pub(crate) fn l2pool_fwd(
    gpu: &Gpu,
    x: &GpuBuffer,
    g: &ConvGeometry,
    y: &mut GpuBuffer,
) -> Result<()> {
    let params = L2PoolFwdParams {
        x: x.address(),
        y: y.address(),
        g: ConvGeom::new(g)?,
    };
    let outputs = g.batch * g.in_channels * g.out_h * g.out_w;
    launch(
        gpu,
        kernels::L2POOL_FWD_F32,
        elementwise_config(outputs),
        &params,
    )
}

/// L2-pool backward `dx = x · Σ dy / y` (gather per input pixel; `dx` is overwritten).
pub(crate) fn l2pool_bwd(
    gpu: &Gpu,
    x: &GpuBuffer,
    y: &GpuBuffer,
    dy: &GpuBuffer,
    g: &ConvGeometry,
    dx: &mut GpuBuffer,
) -> Result<()> {
    let params = L2PoolBwdParams {
        x: x.address(),
        y: y.address(),
        dy: dy.address(),
        dx: dx.address(),
        g: ConvGeom::new(g)?,
    };
    launch(
        gpu,
        kernels::L2POOL_BWD_F32,
        elementwise_config(g.input_len()),
        &params,
    )
}

/// Blocks the grid-stride loop over planes may use at most (the x-dimension limit of older GPUs).
const MAX_PLANE_BLOCKS: usize = 65_535;

/// `y[p]` = mean of plane `p` of `x` (`planes` planes of `plane_len` elements), one block per plane.
pub(crate) fn global_avgpool_fwd(
    gpu: &Gpu,
    s: StorageFormat,
    x: &GpuBuffer,
    planes: usize,
    plane_len: usize,
    y: &mut GpuBuffer,
) -> Result<()> {
    let params = GlobalAvgPoolFwdParams {
        x: x.address(),
        y: y.address(),
        planes: to_i64("global average pool planes", planes)?,
        plane_len: to_i64("global average pool plane", plane_len)?,
    };
    let cfg = LaunchConfig {
        grid: (planes.clamp(1, MAX_PLANE_BLOCKS) as u32, 1, 1),
        block: (256, 1, 1), // KILN_THREADS_PER_BLOCK: the kernel's tree assumes exactly this
        shared_bytes: 0,
    };
    launch(gpu, kernels::GLOBAL_AVGPOOL_FWD.of(s), cfg, &params)
}

/// `dx[p][i] = dy[p] / plane_len`, elementwise.
pub(crate) fn global_avgpool_bwd(
    gpu: &Gpu,
    s: StorageFormat,
    dy: &GpuBuffer,
    planes: usize,
    plane_len: usize,
    dx: &mut GpuBuffer,
) -> Result<()> {
    let n = planes * plane_len;
    let params = GlobalAvgPoolBwdParams {
        dy: dy.address(),
        dx: dx.address(),
        n: to_i64("global average pool length", n)?,
        plane_len: to_i64("global average pool plane", plane_len)?,
    };
    launch(
        gpu,
        kernels::GLOBAL_AVGPOOL_BWD.of(s),
        elementwise_config(n),
        &params,
    )
}

/// The parameters of an adaptive-pool launch from `src` to `dst`.
fn adaptive_params(
    a: &AdaptivePool2d,
    src: &GpuBuffer,
    dst: &mut GpuBuffer,
) -> Result<AdaptiveAvgPoolParams> {
    // Element offsets are 64-bit in the kernels; plane sizes are ints.
    to_i64("adaptive pool input", a.planes() * a.in_h * a.in_w)?;
    to_i64("adaptive pool output", a.planes() * a.out_h * a.out_w)?;
    to_i32("adaptive pool input plane", a.in_h * a.in_w)?;
    to_i32("adaptive pool output plane", a.out_h * a.out_w)?;
    Ok(AdaptiveAvgPoolParams {
        src: src.address(),
        dst: dst.address(),
        planes: to_i64("adaptive pool planes", a.planes())?,
        in_h: to_i32("adaptive pool input height", a.in_h)?,
        in_w: to_i32("adaptive pool input width", a.in_w)?,
        out_h: to_i32("adaptive pool output height", a.out_h)?,
        out_w: to_i32("adaptive pool output width", a.out_w)?,
    })
}

/// Adaptive average pooling of f32 `x` [N,C,H,W] into `y` [N,C,OH,OW], one thread per output.
pub(crate) fn adaptive_avgpool_fwd(
    gpu: &Gpu,
    x: &GpuBuffer,
    a: &AdaptivePool2d,
    y: &mut GpuBuffer,
) -> Result<()> {
    let params = adaptive_params(a, x, y)?;
    let outputs = a.planes() * a.out_h * a.out_w;
    launch(
        gpu,
        kernels::ADAPTIVE_AVGPOOL_FWD_F32,
        elementwise_config(outputs),
        &params,
    )
}

/// Adaptive average-pool backward (gather per input pixel; `dx` is overwritten).
pub(crate) fn adaptive_avgpool_bwd(
    gpu: &Gpu,
    dy: &GpuBuffer,
    a: &AdaptivePool2d,
    dx: &mut GpuBuffer,
) -> Result<()> {
    let params = adaptive_params(a, dy, dx)?;
    let inputs = a.planes() * a.in_h * a.in_w;
    launch(
        gpu,
        kernels::ADAPTIVE_AVGPOOL_BWD_F32,
        elementwise_config(inputs),
        &params,
    )
}
