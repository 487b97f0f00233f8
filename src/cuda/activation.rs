//! Launchers for kernels/activation.cu.

use super::{
    elementwise_config, kernel_params, kernels, launch, Gpu, GpuBuffer, Kernel, LaunchConfig,
    StorageKernels,
};
use crate::core::error::Result;
use crate::core::layout::{MaxoutLayout, RowLayout};
use crate::cuda::params::{to_i32, to_i64, StorageFormat};

/// Mirrors `ReluFwdParams` in kernels/activation.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct ReluFwdParams {
    x: u64,
    y: u64,
    mask: u64,
    n: i64,
}

/// Mirrors `ReluBwdParams` in kernels/activation.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct ReluBwdParams {
    dy: u64,
    mask: u64,
    dx: u64,
    n: i64,
}

kernel_params!(ReluFwdParams, ReluBwdParams);

/// Threads per block of the block-per-row softmax kernels (`KILN_THREADS_PER_BLOCK`).
const KILN_THREADS_PER_BLOCK: u32 = 256;

/// y = max(x, 0) and mask = (x > 0) over `n` elements of storage `s`.
pub(crate) fn relu_fwd(
    gpu: &Gpu,
    s: StorageFormat,
    x: &GpuBuffer,
    y: &mut GpuBuffer,
    mask: &mut GpuBuffer,
    n: usize,
) -> Result<()> {
    let params = ReluFwdParams {
        x: x.address(),
        y: y.address(),
        mask: mask.address(),
        n: to_i64("relu length", n)?,
    };
    let (kernel, per_thread) = relu_kernel(&RELU_FWD, s);
    launch(
        gpu,
        kernel,
        elementwise_config(n.div_ceil(per_thread)),
        &params,
    )
}

/// dx = dy · mask over `n` elements of storage `s`.
pub(crate) fn relu_bwd(
    gpu: &Gpu,
    s: StorageFormat,
    dy: &GpuBuffer,
    mask: &GpuBuffer,
    dx: &mut GpuBuffer,
    n: usize,
) -> Result<()> {
    let params = ReluBwdParams {
        dy: dy.address(),
        mask: mask.address(),
        dx: dx.address(),
        n: to_i64("relu length", n)?,
    };
    let (kernel, per_thread) = relu_kernel(&RELU_BWD, s);
    launch(
        gpu,
        kernel,
        elementwise_config(n.div_ceil(per_thread)),
        &params,
    )
}

/// The ReLU kernels by storage. They are registered one by one (the 16-bit ones read
/// `Relu16FwdParams<T>` / `Relu16BwdParams<T>`, which kernels/activation.cu declares mirrored by
/// the same Rust structs as the f32 ones).
const RELU_FWD: StorageKernels<ReluFwdParams> = StorageKernels::new(
    kernels::RELU_FWD_F32,
    kernels::RELU_FWD_BF16,
    kernels::RELU_FWD_F16,
);
const RELU_BWD: StorageKernels<ReluBwdParams> = StorageKernels::new(
    kernels::RELU_BWD_F32,
    kernels::RELU_BWD_BF16,
    kernels::RELU_BWD_F16,
);

/// The ReLU kernel for storage `s` and the elements each thread takes: one 16-byte access holds 4
/// f32 or 8 16-bit values.
fn relu_kernel<P>(kernels: &StorageKernels<P>, s: StorageFormat) -> (Kernel<P>, usize) {
    let per_thread = match s {
        StorageFormat::F32 => 4,
        StorageFormat::Bf16 | StorageFormat::F16 => 8,
    };
    (kernels.of(s), per_thread)
}

/// The pointwise activations of kernels/activation.cu that share [`PointwiseFwdParams`] and
/// [`PointwiseBwdParams`]; `alpha` is the negative slope (leaky ReLU) or ELU's alpha.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ActivationKernel {
    LeakyRelu { slope: f32 },
    Elu { alpha: f32 },
    Relu6,
    Sigmoid,
    Tanh,
}

impl ActivationKernel {
    /// The forward and backward kernels, and alpha.
    fn kernels(self) -> (Kernel<PointwiseFwdParams>, Kernel<PointwiseBwdParams>, f32) {
        use kernels::*;
        match self {
            ActivationKernel::LeakyRelu { slope } => {
                (LEAKY_RELU_FWD_F32, LEAKY_RELU_BWD_F32, slope)
            }
            ActivationKernel::Elu { alpha } => (ELU_FWD_F32, ELU_BWD_F32, alpha),
            ActivationKernel::Relu6 => (RELU6_FWD_F32, RELU6_BWD_F32, 0.0),
            ActivationKernel::Sigmoid => (SIGMOID_FWD_F32, SIGMOID_BWD_F32, 0.0),
            ActivationKernel::Tanh => (TANH_FWD_F32, TANH_BWD_F32, 0.0),
        }
    }
}

/// Mirrors `PointwiseFwdParams` in kernels/activation.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct PointwiseFwdParams {
    x: u64,
    y: u64,
    n: i64,
    alpha: f32,
}

/// Mirrors `PointwiseBwdParams` in kernels/activation.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct PointwiseBwdParams {
    saved: u64,
    dy: u64,
    dx: u64,
    n: i64,
    alpha: f32,
}

/// Mirrors `SoftmaxFwdParams` in kernels/activation.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct SoftmaxFwdParams {
    x: u64,
    y: u64,
    rows: i64,
    inner: i64,
    len: i32,
    log: i32,
}

/// Mirrors `SoftmaxBwdParams` in kernels/activation.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct SoftmaxBwdParams {
    y: u64,
    dy: u64,
    dx: u64,
    rows: i64,
    inner: i64,
    len: i32,
    log: i32,
}

/// Mirrors `MaxoutFwdParams` in kernels/activation.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct MaxoutFwdParams {
    x: u64,
    y: u64,
    argmax: u64,
    outputs: i64,
    spatial: i64,
    pieces: i32,
}

/// Mirrors `MaxoutBwdParams` in kernels/activation.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct MaxoutBwdParams {
    dy: u64,
    argmax: u64,
    dx: u64,
    inputs: i64,
    spatial: i64,
    pieces: i32,
}

kernel_params!(
    PointwiseFwdParams,
    PointwiseBwdParams,
    SoftmaxFwdParams,
    SoftmaxBwdParams,
    MaxoutFwdParams,
    MaxoutBwdParams,
);

/// y = f(x) over `n` f32 elements.
pub(crate) fn pointwise_fwd(
    gpu: &Gpu,
    op: ActivationKernel,
    x: &GpuBuffer,
    y: &mut GpuBuffer,
    n: usize,
) -> Result<()> {
    let (kernel, _, alpha) = op.kernels();
    let params = PointwiseFwdParams {
        x: x.address(),
        y: y.address(),
        n: to_i64("activation length", n)?,
        alpha,
    };
    launch(gpu, kernel, elementwise_config(n), &params)
}

/// dx = dy · f'(…) over `n` f32 elements, from `saved`: the input x (leaky ReLU, ELU, ReLU6) or the
/// output y (sigmoid, tanh).
pub(crate) fn pointwise_bwd(
    gpu: &Gpu,
    op: ActivationKernel,
    saved: &GpuBuffer,
    dy: &GpuBuffer,
    dx: &mut GpuBuffer,
    n: usize,
) -> Result<()> {
    let (_, kernel, alpha) = op.kernels();
    let params = PointwiseBwdParams {
        saved: saved.address(),
        dy: dy.address(),
        dx: dx.address(),
        n: to_i64("activation length", n)?,
        alpha,
    };
    launch(gpu, kernel, elementwise_config(n), &params)
}

/// Rows at least this long, with neighbouring elements closer than this, get a block each;
/// others a thread each (see kernels/activation.cu).
const SOFTMAX_BLOCK_MIN_LEN: usize = 33;
const SOFTMAX_COALESCED_INNER: usize = 32;

/// Whether a softmax over `layout` uses one block per row (`*_rows_*`) rather than one thread per
/// row (`*_cols_*`): for rows longer than 32 whose elements are fewer than 32 apart.
pub(crate) fn softmax_uses_blocks(layout: RowLayout) -> bool {
    layout.len >= SOFTMAX_BLOCK_MIN_LEN && layout.inner < SOFTMAX_COALESCED_INNER
}

/// A softmax launch: the kernel (one block or one thread per row), its grid, and the row count,
/// stride and length as it takes them.
struct SoftmaxLaunch {
    blocks: bool,
    cfg: LaunchConfig,
    rows: i64,
    inner: i64,
    len: i32,
}

/// The launch of a softmax kernel over `layout`, or `None` when there is nothing to compute.
fn softmax_launch(layout: RowLayout) -> Result<Option<SoftmaxLaunch>> {
    let rows = layout.rows();
    if rows == 0 || layout.len == 0 {
        return Ok(None);
    }
    let blocks = softmax_uses_blocks(layout);
    let cfg = if blocks {
        LaunchConfig {
            grid: (to_i32("softmax rows", rows)? as u32, 1, 1),
            block: (KILN_THREADS_PER_BLOCK, 1, 1),
            shared_bytes: 0,
        }
    } else {
        elementwise_config(rows)
    };
    // Element offsets are 64-bit in the kernels; the row length is an int.
    to_i64("softmax length", layout.numel())?;
    Ok(Some(SoftmaxLaunch {
        blocks,
        cfg,
        rows: to_i64("softmax rows", rows)?,
        inner: to_i64("softmax stride", layout.inner)?,
        len: to_i32("softmax axis length", layout.len)?,
    }))
}

/// Softmax (or log-softmax when `log`) of every row of `x` laid out as `layout`.
pub(crate) fn softmax_fwd(
    gpu: &Gpu,
    x: &GpuBuffer,
    y: &mut GpuBuffer,
    layout: RowLayout,
    log: bool,
) -> Result<()> {
    let Some(l) = softmax_launch(layout)? else {
        return Ok(());
    };
    let params = SoftmaxFwdParams {
        x: x.address(),
        y: y.address(),
        rows: l.rows,
        inner: l.inner,
        len: l.len,
        log: i32::from(log),
    };
    let kernel = if l.blocks {
        kernels::SOFTMAX_ROWS_FWD_F32
    } else {
        kernels::SOFTMAX_COLS_FWD_F32
    };
    launch(gpu, kernel, l.cfg, &params)
}

/// The softmax (or log-softmax) backward pass from the saved output `y`.
pub(crate) fn softmax_bwd(
    gpu: &Gpu,
    y: &GpuBuffer,
    dy: &GpuBuffer,
    dx: &mut GpuBuffer,
    layout: RowLayout,
    log: bool,
) -> Result<()> {
    let Some(l) = softmax_launch(layout)? else {
        return Ok(());
    };
    let params = SoftmaxBwdParams {
        y: y.address(),
        dy: dy.address(),
        dx: dx.address(),
        rows: l.rows,
        inner: l.inner,
        len: l.len,
        log: i32::from(log),
    };
    let kernel = if l.blocks {
        kernels::SOFTMAX_ROWS_BWD_F32
    } else {
        kernels::SOFTMAX_COLS_BWD_F32
    };
    launch(gpu, kernel, l.cfg, &params)
}

/// Maxout forward over `x` [batch][units·pieces][spatial]: y and the winning piece (i32), both
/// [batch][units][spatial].
pub(crate) fn maxout_fwd(
    gpu: &Gpu,
    x: &GpuBuffer,
    y: &mut GpuBuffer,
    argmax: &mut GpuBuffer,
    layout: MaxoutLayout,
) -> Result<()> {
    let outputs = layout.outputs();
    let params = MaxoutFwdParams {
        x: x.address(),
        y: y.address(),
        argmax: argmax.address(),
        outputs: to_i64("maxout outputs", outputs)?,
        spatial: to_i64("maxout spatial size", layout.spatial)?,
        pieces: to_i32("maxout pieces", layout.pieces)?,
    };
    launch(
        gpu,
        kernels::MAXOUT_FWD_F32,
        elementwise_config(outputs),
        &params,
    )
}

/// Maxout backward: dx [batch][units·pieces][spatial] takes dy where its piece won, else 0.
pub(crate) fn maxout_bwd(
    gpu: &Gpu,
    dy: &GpuBuffer,
    argmax: &GpuBuffer,
    dx: &mut GpuBuffer,
    layout: MaxoutLayout,
) -> Result<()> {
    let inputs = layout.inputs();
    let params = MaxoutBwdParams {
        dy: dy.address(),
        argmax: argmax.address(),
        dx: dx.address(),
        inputs: to_i64("maxout inputs", inputs)?,
        spatial: to_i64("maxout spatial size", layout.spatial)?,
        pieces: to_i32("maxout pieces", layout.pieces)?,
    };
    launch(
        gpu,
        kernels::MAXOUT_BWD_F32,
        elementwise_config(inputs),
        &params,
    )
}
