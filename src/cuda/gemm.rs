//! Launchers for kernels/gemm.cu: the tiled f32 GEMMs (`gemm_f32`, and as the context's
//! [`super::KernelPolicy`] chooses, `gemm_128x128_f32` for large products or the flat tiles for
//! products with few rows: see [`super::gemm_select::select_gemm`]) and the bias add /
//! bias-gradient kernels.

use super::gemm_select::{select_gemm, GemmFormat, GemmHandle, GemmOperands};
use super::params::{to_i32, to_i64, StorageFormat};
use super::{elementwise_config, kernel_params, kernels, launch, Gpu, GpuBuffer, LaunchConfig};
use crate::core::error::{invalid, Error, Result};
use crate::core::shape::GemmSpec;

/// Rows of C per block of `gemm_f32` (GEMM_BM in kernels/gemm.cu), the smallest tile height any
/// f32 kernel has in y but the flat ones; every GEMM block has 256 threads.
const TILE_M: usize = 64;
const THREADS: u32 = 256;

/// Mirrors `GemmParams` in kernels/gemm.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct GemmParams {
    a: u64,
    b: u64,
    c: u64,
    layout: GemmLayout,
    vec_a: i32,
    vec_b: i32,
    vec_c: i32,
    epilogue: GemmEpilogue,
}

/// The fields every GEMM kernel's parameter struct ends with (`KILN_GEMM_EPILOGUE_FIELDS` in
/// kernels/common.cuh, declared flat there at the same offsets): what the epilogue adds to
/// alpha·op(A)·op(B) + beta·C and how it stores C.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct GemmEpilogue {
    row_bias: u64,
    col_bias: u64,
    alpha: f32,
    beta: f32,
    c_16bit: i32,
}

impl GemmEpilogue {
    pub(crate) fn of(operands: &GemmAddresses, alpha: f32, beta: f32) -> GemmEpilogue {
        GemmEpilogue {
            row_bias: operands.row_bias,
            col_bias: operands.col_bias,
            alpha,
            beta,
            c_16bit: operands.c_16bit.into(),
        }
    }
}

/// The shape fields of every GEMM kernel's parameter struct, nested right after its three operand
/// addresses (`KILN_GEMM_LAYOUT_FIELDS` in kernels/common.cuh: the C structs declare them flat, at
/// the same offsets).
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct GemmLayout {
    stride_a: i64,
    stride_b: i64,
    stride_c: i64,
    group_stride_a: i64,
    group_stride_b: i64,
    group_stride_c: i64,
    m: i32,
    n: i32,
    k: i32,
    trans_a: i32,
    trans_b: i32,
    batch: i32,
    reduce_batch: i32,
    groups: i32,
}

// The nested layout sits where the C structs' flat fields do: after three 8-byte addresses, and
// its 80 bytes end where the next field starts, with no padding either side.
const _: () = assert!(std::mem::size_of::<GemmLayout>() == 80);
const _: () = assert!(std::mem::offset_of!(GemmParams, layout) == 24);
const _: () = assert!(std::mem::offset_of!(GemmParams, vec_a) == 104);
// The C side asserts the same offset of its first epilogue field (kernels/gemm.cu).
const _: () = assert!(std::mem::offset_of!(GemmParams, epilogue) == 120);

impl GemmLayout {
    /// `spec`'s shape, each size checked to fit the kernel's integer type.
    pub(crate) fn of(spec: &GemmSpec) -> Result<Self> {
        Ok(GemmLayout {
            stride_a: to_i64("gemm stride", spec.stride_a)?,
            stride_b: to_i64("gemm stride", spec.stride_b)?,
            stride_c: to_i64("gemm stride", spec.stride_c)?,
            group_stride_a: to_i64("gemm group stride", spec.group_stride_a)?,
            group_stride_b: to_i64("gemm group stride", spec.group_stride_b)?,
            group_stride_c: to_i64("gemm group stride", spec.group_stride_c)?,
            m: to_i32("gemm m", spec.m)?,
            n: to_i32("gemm n", spec.n)?,
            k: to_i32("gemm k", spec.k)?,
            trans_a: spec.trans_a as i32,
            trans_b: spec.trans_b as i32,
            batch: to_i32("gemm batch", spec.batch)?,
            reduce_batch: spec.reduce_batch as i32,
            groups: to_i32("gemm groups", spec.groups)?,
        })
    }
}

/// Mirrors `BiasAddParams` in kernels/gemm.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct BiasAddParams {
    y: u64,
    bias: u64,
    total: i64,
    channels: i32,
    inner: i32,
}

/// Mirrors `BiasGradParams` in kernels/gemm.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct BiasGradParams {
    dy: u64,
    db: u64,
    outer: i32,
    channels: i32,
    inner: i32,
}

kernel_params!(GemmParams, BiasAddParams, BiasGradParams);

/// CUDA's limit on gridDim.z; the kernel walks the remaining output matrices in steps of it.
const MAX_GRID_Z: usize = 65_535;

/// The grid: one block per `tile`x`tile` tile of C, one z-slice per output matrix (batch entry ×
/// group, or group alone when the batch is reduced), at most [`MAX_GRID_Z`] slices.
pub(crate) fn grid_config(spec: &GemmSpec, tile_m: usize, tile_n: usize) -> LaunchConfig {
    LaunchConfig {
        grid: (
            spec.n.div_ceil(tile_n).max(1) as u32,
            spec.m.div_ceil(tile_m).max(1) as u32,
            spec.outputs().clamp(1, MAX_GRID_Z) as u32,
        ),
        block: (THREADS, 1, 1),
        shared_bytes: 0,
    }
}

/// 16-byte vector accesses are valid for an operand whose base address is 16-byte aligned and whose
/// batch stride, group stride and leading dimension are multiples of 4 floats.
fn vector_ok(address: u64, strides: [usize; 2], leading: usize) -> i32 {
    (address % 16 == 0 && strides.iter().all(|s| s % 4 == 0) && leading % 4 == 0) as i32
}

/// C = alpha·op(A)·op(B) + beta·C as described by `spec`.
pub(crate) fn gemm(
    gpu: &Gpu,
    spec: &GemmSpec,
    alpha: f32,
    a: &GpuBuffer,
    b: &GpuBuffer,
    beta: f32,
    c: &mut GpuBuffer,
) -> Result<()> {
    let operands = GemmAddresses {
        a: a.address(),
        b: b.address(),
        c: c.address(),
        row_bias: 0,
        col_bias: 0,
        c_16bit: false,
    };
    gemm_at(gpu, spec, alpha, operands, beta)
}

/// Device addresses of a GEMM's operands (ranges checked by the caller, e.g. with
/// `GpuBuffer::address_of_range`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct GemmAddresses {
    pub a: u64,
    pub b: u64,
    pub c: u64,
    /// [groups·m] f32 added to each row of C (a convolution's bias), or 0 for none.
    pub row_bias: u64,
    /// [groups·n] f32 added to each column of C (a linear layer's bias), or 0 for none.
    pub col_bias: u64,
    /// C holds the 16-bit format of the operands (16-bit GEMMs with beta = 0 only): each result
    /// rounded once, e.g. a layer's output stored as a 16-bit activation. Else C is f32.
    pub c_16bit: bool,
}

/// [`gemm`] on device addresses.
pub(crate) fn gemm_at(
    gpu: &Gpu,
    spec: &GemmSpec,
    alpha: f32,
    operands: GemmAddresses,
    beta: f32,
) -> Result<()> {
    let GemmAddresses { a, b, c, .. } = operands;
    if operands.c_16bit {
        return Err(invalid(
            "gemm output",
            "the f32 GEMM writes an f32 C; a 16-bit C needs 16-bit operands",
        ));
    }
    if spec.m == 0 || spec.n == 0 || spec.outputs() == 0 {
        return Ok(());
    }
    let params = GemmParams {
        a,
        b,
        c,
        layout: GemmLayout::of(spec)?,
        // Leading dimensions: A is [m][k] or, transposed, [k][m]; B is [k][n] or [n][k]; C is [m][n].
        vec_a: vector_ok(
            a,
            [spec.stride_a, spec.group_stride_a],
            if spec.trans_a { spec.m } else { spec.k },
        ),
        vec_b: vector_ok(
            b,
            [spec.stride_b, spec.group_stride_b],
            if spec.trans_b { spec.k } else { spec.n },
        ),
        vec_c: vector_ok(c, [spec.stride_c, spec.group_stride_c], spec.n),
        epilogue: GemmEpilogue::of(&operands, alpha, beta),
    };
    to_i32("gemm grid", spec.m.div_ceil(TILE_M))?;
    to_i32("gemm output matrices", spec.outputs())?;
    let inputs = GemmOperands {
        format: GemmFormat::F32,
        a,
        b,
    };
    // An f32 product gets one of the f32 kernels, which all read `GemmParams`.
    let kernel = select_gemm(spec, &inputs, &gpu.kernel_policy(), &gpu.capabilities());
    let GemmHandle::F32(handle) = kernel.handle() else {
        return Err(Error::Internal(format!(
            "select_gemm chose {} for an f32 product",
            kernel.name()
        )));
    };
    let (tile_m, tile_n) = kernel.tile();
    launch(gpu, handle, grid_config(spec, tile_m, tile_n), &params)
}

/// y[o][c][i] += bias[c].
pub(crate) fn bias_add(
    gpu: &Gpu,
    y: &mut GpuBuffer,
    bias: &GpuBuffer,
    outer: usize,
    channels: usize,
    inner: usize,
) -> Result<()> {
    let total = outer * channels * inner;
    let params = BiasAddParams {
        y: y.address(),
        bias: bias.address(),
        total: to_i64("bias length", total)?,
        channels: to_i32("channels", channels)?,
        inner: to_i32("bias inner size", inner)?,
    };
    launch(
        gpu,
        kernels::BIAS_ADD_F32,
        elementwise_config(total),
        &params,
    )
}

/// db[c] = Σ over outer and inner of dy[o][c][i] (one block per channel, deterministic).
pub(crate) fn bias_grad(
    gpu: &Gpu,
    s: StorageFormat,
    dy: &GpuBuffer,
    outer: usize,
    channels: usize,
    inner: usize,
    db: &mut GpuBuffer,
) -> Result<()> {
    let params = BiasGradParams {
        dy: dy.address(),
        db: db.address(),
        outer: to_i32("bias outer size", outer)?,
        channels: to_i32("channels", channels)?,
        inner: to_i32("bias inner size", inner)?,
    };
    let cfg = LaunchConfig {
        grid: (channels.max(1) as u32, 1, 1),
        block: (THREADS, 1, 1),
        shared_bytes: 0,
    };
    launch(gpu, kernels::BIAS_GRAD.of(s), cfg, &params)
}
