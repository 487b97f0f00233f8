//! Launchers for kernels/loss.cu.

use super::params::{to_i32, to_i64};
use super::{elementwise_config, kernel_params, kernels, launch, Gpu, GpuBuffer, LaunchConfig};
use crate::core::error::Result;

/// Mirrors `SoftmaxXentFwdParams` in kernels/loss.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct SoftmaxXentFwdParams {
    logits: u64,
    labels: u64,
    probs: u64,
    losses: u64,
    rows: i32,
    classes: i32,
}

/// Mirrors `SoftmaxXentBwdParams` in kernels/loss.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct SoftmaxXentBwdParams {
    probs: u64,
    labels: u64,
    dlogits: u64,
    upstream: u64,
    total: i64,
    classes: i32,
    scale: f32,
}

/// Mirrors `SquaredErrorFwdParams` in kernels/loss.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct SquaredErrorFwdParams {
    prediction: u64,
    target: u64,
    sq: u64,
    n: i64,
}

/// Mirrors `SquaredErrorBwdParams` in kernels/loss.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct SquaredErrorBwdParams {
    prediction: u64,
    target: u64,
    dprediction: u64,
    dtarget: u64,
    upstream: u64,
    n: i64,
    scale: f32,
}

/// Mirrors `BceLogitsFwdParams` in kernels/loss.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct BceLogitsFwdParams {
    logits: u64,
    targets: u64,
    losses: u64,
    n: i64,
}

/// Mirrors `BceLogitsBwdParams` in kernels/loss.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct BceLogitsBwdParams {
    logits: u64,
    targets: u64,
    dlogits: u64,
    dtargets: u64,
    upstream: u64,
    n: i64,
    scale: f32,
}

/// Mirrors `SumSquaresParams` in kernels/loss.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct SumSquaresParams {
    x: u64,
    partial: u64,
    n: i64,
}

/// Mirrors `CountCorrectParams` in kernels/loss.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct CountCorrectParams {
    logits: u64,
    labels: u64,
    count: u64,
    rows: i32,
    classes: i32,
}

/// Mirrors `SmoothXentFwdParams` in kernels/loss.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct SmoothXentFwdParams {
    logits: u64,
    labels: u64,
    weights: u64,
    probs: u64,
    losses: u64,
    rows: i32,
    classes: i32,
    smoothing: f32,
}

/// Mirrors `SmoothXentBwdParams` in kernels/loss.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct SmoothXentBwdParams {
    probs: u64,
    labels: u64,
    weights: u64,
    dlogits: u64,
    upstream: u64,
    total: i64,
    classes: i32,
    smoothing: f32,
    weight_sum: f32,
    scale: f32,
}

/// Class weights and label smoothing of softmax cross-entropy as the kernels take them: the
/// weights [classes] on the device, their sum, and eps.
#[derive(Clone, Copy)]
pub(crate) struct XentTargetsOnGpu<'a> {
    pub weights: &'a GpuBuffer,
    pub weight_sum: f32,
    pub smoothing: f32,
}

kernel_params!(
    SmoothXentFwdParams,
    SmoothXentBwdParams,
    CountCorrectParams,
    SoftmaxXentFwdParams,
    SoftmaxXentBwdParams,
    SquaredErrorFwdParams,
    SquaredErrorBwdParams,
    BceLogitsFwdParams,
    BceLogitsBwdParams,
    SumSquaresParams,
);

/// Per-row softmax probabilities and cross-entropy losses; labels must already be validated.
pub(crate) fn softmax_xent_fwd(
    gpu: &Gpu,
    logits: &GpuBuffer,
    labels: &GpuBuffer,
    rows: usize,
    classes: usize,
    probs: &mut GpuBuffer,
    losses: &mut GpuBuffer,
) -> Result<()> {
    let params = SoftmaxXentFwdParams {
        logits: logits.address(),
        labels: labels.address(),
        probs: probs.address(),
        losses: losses.address(),
        rows: to_i32("rows", rows)?,
        classes: to_i32("classes", classes)?,
    };
    let cfg = LaunchConfig {
        grid: (rows as u32, 1, 1),
        block: (256, 1, 1),
        shared_bytes: 0,
    };
    launch(gpu, kernels::SOFTMAX_XENT_FWD_F32, cfg, &params)
}

/// Per-row probabilities and weighted, smoothed cross-entropy losses (see kernels/loss.cu); labels
/// must already be validated.
pub(crate) fn softmax_xent_smooth_fwd(
    gpu: &Gpu,
    (logits, labels): (&GpuBuffer, &GpuBuffer),
    (rows, classes): (usize, usize),
    targets: XentTargetsOnGpu,
    probs: &mut GpuBuffer,
    losses: &mut GpuBuffer,
) -> Result<()> {
    let params = SmoothXentFwdParams {
        logits: logits.address(),
        labels: labels.address(),
        weights: targets.weights.address(),
        probs: probs.address(),
        losses: losses.address(),
        rows: to_i32("rows", rows)?,
        classes: to_i32("classes", classes)?,
        smoothing: targets.smoothing,
    };
    let cfg = LaunchConfig {
        grid: (rows as u32, 1, 1),
        block: (256, 1, 1),
        shared_bytes: 0,
    };
    launch(gpu, kernels::SOFTMAX_XENT_SMOOTH_FWD_F32, cfg, &params)
}

/// dlogits = scale·upstream·(a·probs − t) for the weighted smoothed targets t (kernels/loss.cu).
pub(crate) fn softmax_xent_smooth_bwd(
    gpu: &Gpu,
    (probs, labels): (&GpuBuffer, &GpuBuffer),
    (rows, classes): (usize, usize),
    targets: XentTargetsOnGpu,
    (scale, upstream): (f32, Option<&GpuBuffer>),
    dlogits: &mut GpuBuffer,
) -> Result<()> {
    let total = rows * classes;
    let params = SmoothXentBwdParams {
        probs: probs.address(),
        labels: labels.address(),
        weights: targets.weights.address(),
        dlogits: dlogits.address(),
        upstream: upstream.map_or(0, GpuBuffer::address),
        total: to_i64("logits length", total)?,
        classes: to_i32("classes", classes)?,
        smoothing: targets.smoothing,
        weight_sum: targets.weight_sum,
        scale,
    };
    launch(
        gpu,
        kernels::SOFTMAX_XENT_SMOOTH_BWD_F32,
        elementwise_config(total),
        &params,
    )
}

/// dlogits = scale·(probs − onehot(labels)) for probs [rows, classes].
pub(crate) fn softmax_xent_bwd(
    gpu: &Gpu,
    probs: &GpuBuffer,
    labels: &GpuBuffer,
    (rows, classes): (usize, usize),
    scale: f32,
    upstream: Option<&GpuBuffer>,
    dlogits: &mut GpuBuffer,
) -> Result<()> {
    let total = rows * classes;
    let params = SoftmaxXentBwdParams {
        probs: probs.address(),
        labels: labels.address(),
        dlogits: dlogits.address(),
        upstream: upstream.map_or(0, GpuBuffer::address),
        total: to_i64("logits length", total)?,
        classes: to_i32("classes", classes)?,
        scale,
    };
    launch(
        gpu,
        kernels::SOFTMAX_XENT_BWD_F32,
        elementwise_config(total),
        &params,
    )
}

/// sq = (prediction − target)² over `n` elements.
pub(crate) fn squared_error_fwd(
    gpu: &Gpu,
    prediction: &GpuBuffer,
    target: &GpuBuffer,
    sq: &mut GpuBuffer,
    n: usize,
) -> Result<()> {
    let params = SquaredErrorFwdParams {
        prediction: prediction.address(),
        target: target.address(),
        sq: sq.address(),
        n: to_i64("squared error length", n)?,
    };
    launch(
        gpu,
        kernels::SQUARED_ERROR_FWD_F32,
        elementwise_config(n),
        &params,
    )
}

/// dprediction = scale·(prediction − target) and, when given, dtarget = −dprediction.
pub(crate) fn squared_error_bwd(
    gpu: &Gpu,
    prediction: &GpuBuffer,
    target: &GpuBuffer,
    scale: f32,
    upstream: u64,
    (dprediction, dtarget): (&mut GpuBuffer, Option<&mut GpuBuffer>),
    n: usize,
) -> Result<()> {
    let params = SquaredErrorBwdParams {
        prediction: prediction.address(),
        target: target.address(),
        dprediction: dprediction.address(),
        dtarget: dtarget.map_or(0, |b| b.address()),
        upstream,
        n: to_i64("squared error length", n)?,
        scale,
    };
    launch(
        gpu,
        kernels::SQUARED_ERROR_BWD_F32,
        elementwise_config(n),
        &params,
    )
}

/// losses = max(z, 0) − z·t + log(1 + exp(−|z|)) over `n` elements.
pub(crate) fn bce_logits_fwd(
    gpu: &Gpu,
    logits: &GpuBuffer,
    targets: &GpuBuffer,
    losses: &mut GpuBuffer,
    n: usize,
) -> Result<()> {
    let params = BceLogitsFwdParams {
        logits: logits.address(),
        targets: targets.address(),
        losses: losses.address(),
        n: to_i64("binary cross-entropy length", n)?,
    };
    launch(
        gpu,
        kernels::BCE_LOGITS_FWD_F32,
        elementwise_config(n),
        &params,
    )
}

/// dlogits = scale·(sigmoid(z) − t) and, when given, dtargets = −scale·z.
pub(crate) fn bce_logits_bwd(
    gpu: &Gpu,
    logits: &GpuBuffer,
    targets: &GpuBuffer,
    scale: f32,
    upstream: u64,
    (dlogits, dtargets): (&mut GpuBuffer, Option<&mut GpuBuffer>),
    n: usize,
) -> Result<()> {
    let params = BceLogitsBwdParams {
        logits: logits.address(),
        targets: targets.address(),
        dlogits: dlogits.address(),
        dtargets: dtargets.map_or(0, |b| b.address()),
        upstream,
        n: to_i64("binary cross-entropy length", n)?,
        scale,
    };
    launch(
        gpu,
        kernels::BCE_LOGITS_BWD_F32,
        elementwise_config(n),
        &params,
    )
}

/// Blocks of the first stage of [`sum_squares`]: one per 256 elements, at most 128, so the second
/// stage (one block) adds few partials. A fixed function of `n`, which keeps the sum deterministic.
pub(crate) fn sum_squares_blocks(n: usize) -> usize {
    n.div_ceil(256).clamp(1, 128)
}

/// partial[b] = Σ x² over block b's elements, for b < `sum_squares_blocks(n)`.
pub(crate) fn sum_squares(
    gpu: &Gpu,
    x: &GpuBuffer,
    n: usize,
    partial: &mut GpuBuffer,
) -> Result<()> {
    let params = SumSquaresParams {
        x: x.address(),
        partial: partial.address(),
        n: to_i64("sum of squares length", n)?,
    };
    let cfg = LaunchConfig {
        grid: (sum_squares_blocks(n) as u32, 1, 1),
        block: (256, 1, 1),
        shared_bytes: 0,
    };
    launch(gpu, kernels::SUM_SQUARES_F32, cfg, &params)
}

/// count[0] = the number of rows of `logits` [rows][classes] whose first largest value is at the
/// row's label (one block).
pub(crate) fn count_correct(
    gpu: &Gpu,
    logits: &GpuBuffer,
    labels: &GpuBuffer,
    rows: usize,
    classes: usize,
    count: &mut GpuBuffer,
) -> Result<()> {
    let params = CountCorrectParams {
        logits: logits.address(),
        labels: labels.address(),
        count: count.address(),
        rows: to_i32("rows", rows)?,
        classes: to_i32("classes", classes)?,
    };
    let cfg = LaunchConfig {
        grid: (1, 1, 1),
        block: (256, 1, 1),
        shared_bytes: 0,
    };
    launch(gpu, kernels::COUNT_CORRECT_F32, cfg, &params)
}
