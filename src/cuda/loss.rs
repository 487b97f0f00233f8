//! Launchers for kernels/loss.cu.

use super::params::{to_i32, to_i64};
use super::{elementwise_config, kernel_params, launch, Gpu, GpuBuffer, LaunchConfig};
use crate::error::Result;

/// Mirrors `SoftmaxXentFwdParams` in kernels/loss.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct SoftmaxXentFwdParams {
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
struct SoftmaxXentBwdParams {
    probs: u64,
    labels: u64,
    dlogits: u64,
    total: i64,
    classes: i32,
    scale: f32,
}

kernel_params!(SoftmaxXentFwdParams, SoftmaxXentBwdParams);

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
    };
    launch(gpu, "softmax_xent_fwd_f32", cfg, &params)
}

/// dlogits = scale·(probs − onehot(labels)).
pub(crate) fn softmax_xent_bwd(
    gpu: &Gpu,
    probs: &GpuBuffer,
    labels: &GpuBuffer,
    rows: usize,
    classes: usize,
    scale: f32,
    dlogits: &mut GpuBuffer,
) -> Result<()> {
    let total = rows * classes;
    let params = SoftmaxXentBwdParams {
        probs: probs.address(),
        labels: labels.address(),
        dlogits: dlogits.address(),
        total: to_i64("logits length", total)?,
        classes: to_i32("classes", classes)?,
        scale,
    };
    launch(
        gpu,
        "softmax_xent_bwd_f32",
        elementwise_config(total),
        &params,
    )
}
