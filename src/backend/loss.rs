//! Loss primitives: softmax cross-entropy; elementwise squared error and binary cross-entropy on
//! logits (their means are `backend::sum`); the sum of squares of the L2 penalty.

use super::storage::widen_only;
use super::RawTensor;
use super::{common_device, gpu_f32, gpu_output, host_output, with_float, Factor};
use crate::core::device::Device;
use crate::core::dtype::{DType, Element};
use crate::core::error::{invalid, Error, Result};
use crate::cpu::{self, Float};
use crate::cuda::{self, Gpu, GpuBuffer};

/// Softmax cross-entropy per row: (probs [R,K], losses [R]). Labels are validated by the caller.
pub fn softmax_xent_fwd(logits: &RawTensor, labels: &RawTensor) -> Result<(RawTensor, RawTensor)> {
    check_logits_and_labels("softmax_cross_entropy", logits, labels)?;
    softmax_xent_fwd_unchecked_labels(logits, labels)
}

/// [`softmax_xent_fwd`] without reading the labels back to check their values (shapes are
/// checked): a label outside `0..classes` gives that row a NaN loss. For a training step, which
/// reads its loss back anyway and looks at the labels only when the loss is not finite.
pub(crate) fn softmax_xent_fwd_unchecked_labels(
    logits: &RawTensor,
    labels: &RawTensor,
) -> Result<(RawTensor, RawTensor)> {
    let (rows, classes) = check_logits_and_label_shapes("softmax_cross_entropy", logits, labels)?;
    match logits.device() {
        Device::Cpu => with_float!("softmax_cross_entropy", logits, |T| {
            let zs = logits.host_slice::<T>("softmax_cross_entropy")?;
            let ls = labels.host_slice::<i32>("softmax_cross_entropy")?;
            let mut losses = vec![0.0 as T; rows];
            let probs = host_output::<T>(vec![rows, classes], |p| {
                cpu::loss::softmax_xent_fwd(zs, ls, rows, classes, p, &mut losses)
            });
            Ok((
                probs,
                RawTensor::host(T::wrap(losses), vec![rows], T::DTYPE),
            ))
        }),
        _ => {
            let (gpu, zb) = gpu_f32("softmax_cross_entropy", logits)?;
            let lb = labels.gpu_buffer("softmax_cross_entropy")?;
            let mut losses = gpu.alloc(rows * 4)?;
            let probs = gpu_output(&gpu, vec![rows, classes], DType::F32, |p| {
                cuda::loss::softmax_xent_fwd(&gpu, zb, lb, rows, classes, p, &mut losses)
            })?;
            Ok((probs, RawTensor::from_gpu(losses, vec![rows], DType::F32)))
        }
    }
}

/// The number of rows of `logits` [rows, classes] whose first largest value is at the row's
/// label, as a one-element tensor on the logits' device (f32 on a GPU, exact up to 2^24 rows):
/// a batch's correct predictions, read back together with its loss.
pub fn count_correct(logits: &RawTensor, labels: &RawTensor) -> Result<RawTensor> {
    widen_only(&["count_correct"], [logits], |[logits]| {
        let (rows, classes) = check_logits_and_label_shapes("count_correct", logits, labels)?;
        match logits.device() {
            Device::Cpu => with_float!("count_correct", logits, |T| {
                let zs = logits.host_slice::<T>("count_correct")?;
                let ls = labels.host_slice::<i32>("count_correct")?;
                let count = cpu::loss::count_correct(zs, ls, classes) as T;
                Ok(RawTensor::host(T::wrap(vec![count]), vec![1], T::DTYPE))
            }),
            _ => {
                let (gpu, zb) = gpu_f32("count_correct", logits)?;
                let lb = labels.gpu_buffer("count_correct")?;
                gpu_output(&gpu, vec![1], DType::F32, |count| {
                    cuda::loss::count_correct(&gpu, zb, lb, rows, classes, count)
                })
            }
        }
    })
}

/// dlogits = scale·(probs − onehot(labels)).
pub fn softmax_xent_bwd(probs: &RawTensor, labels: &RawTensor, scale: f64) -> Result<RawTensor> {
    check_logits_and_labels("softmax_cross_entropy backward", probs, labels)?;
    softmax_xent_bwd_checked_labels(probs, labels, scale, None)
}

/// [`softmax_xent_bwd`] for labels whose values [`softmax_xent_fwd`] already checked (the tape's
/// backward rule): only shapes are checked, so a training step reads the labels back once, not
/// twice. The factor is `scale · upstream` when a one-element `upstream` gradient is given; a
/// GPU kernel reads it from device memory, so the backward pass does not wait for the device.
pub(crate) fn softmax_xent_bwd_checked_labels(
    probs: &RawTensor,
    labels: &RawTensor,
    scale: f64,
    upstream: Option<&RawTensor>,
) -> Result<RawTensor> {
    const OP: &str = "softmax_cross_entropy backward";
    let (rows, classes) = check_logits_and_label_shapes(OP, probs, labels)?;
    if let Some(u) = upstream {
        common_device(OP, &[probs, u])?;
        u.expect_dtype(OP, probs.dtype())?;
        if u.numel() != 1 {
            return Err(invalid(
                "loss gradient",
                format!("{OP}: {:?} is not one element", u.shape()),
            ));
        }
    }
    match probs.device() {
        Device::Cpu => with_float!(OP, probs, |T| {
            let ps = probs.host_slice::<T>(OP)?;
            let ls = labels.host_slice::<i32>(OP)?;
            let factor = match upstream {
                Some(u) => scale as T * u.host_slice::<T>(OP)?[0],
                None => scale as T,
            };
            Ok(host_output::<T>(vec![rows, classes], |d| {
                cpu::loss::softmax_xent_bwd(ps, ls, rows, classes, factor, d)
            }))
        }),
        _ => {
            let (gpu, pb) = gpu_f32(OP, probs)?;
            let lb = labels.gpu_buffer(OP)?;
            let ub = upstream.map(|u| u.gpu_buffer(OP)).transpose()?;
            gpu_output(&gpu, vec![rows, classes], DType::F32, |d| {
                cuda::loss::softmax_xent_bwd(&gpu, pb, lb, (rows, classes), scale as f32, ub, d)
            })
        }
    }
}

/// (prediction − target)², elementwise, for two tensors of one shape, dtype and device.
pub fn squared_error_fwd(prediction: &RawTensor, target: &RawTensor) -> Result<RawTensor> {
    const OP: &str = "squared error";
    check_pair(OP, prediction, target)?;
    let shape = prediction.shape().to_vec();
    match prediction.device() {
        Device::Cpu => with_float!(OP, prediction, |T| {
            let (ps, ts) = (prediction.host_slice::<T>(OP)?, target.host_slice::<T>(OP)?);
            Ok(host_output::<T>(shape, |sq| {
                cpu::loss::squared_error_fwd(ps, ts, sq)
            }))
        }),
        _ => {
            let (gpu, pb) = gpu_f32(OP, prediction)?;
            let (_, tb) = gpu_f32(OP, target)?;
            let n = prediction.numel();
            gpu_output(&gpu, shape, DType::F32, |sq| {
                cuda::loss::squared_error_fwd(&gpu, pb, tb, sq, n)
            })
        }
    }
}

/// dprediction = scale·(prediction − target) and, if `with_target_grad`, dtarget = −dprediction.
/// The mean squared error's backward passes scale = 2·dloss/n.
pub fn squared_error_bwd(
    prediction: &RawTensor,
    target: &RawTensor,
    factor: Factor,
    with_target_grad: bool,
) -> Result<(RawTensor, Option<RawTensor>)> {
    const OP: &str = "squared error backward";
    check_pair(OP, prediction, target)?;
    factor.check(OP, prediction)?;
    match prediction.device() {
        Device::Cpu => with_float!(OP, prediction, |T| {
            let scale = factor.on_host::<T>(OP)?;
            host_pair_bwd::<T>(OP, prediction, target, with_target_grad, |p, t, dp, dt| {
                cpu::loss::squared_error_bwd(p, t, scale, dp, dt)
            })
        }),
        _ => {
            let upstream = factor.device_address(OP)?;
            let scale = factor.scale as f32;
            gpu_pair_bwd(
                OP,
                prediction,
                target,
                with_target_grad,
                |gpu, p, t, dp, dt, n| {
                    cuda::loss::squared_error_bwd(gpu, p, t, scale, upstream, (dp, dt), n)
                },
            )
        }
    }
}

/// max(z, 0) − z·t + ln(1 + e^−|z|), elementwise: binary cross-entropy of sigmoid(logits) against
/// `targets` (one shape, dtype and device), stable for logits of any magnitude.
pub fn bce_logits_fwd(logits: &RawTensor, targets: &RawTensor) -> Result<RawTensor> {
    const OP: &str = "binary_cross_entropy_with_logits";
    check_pair(OP, logits, targets)?;
    let shape = logits.shape().to_vec();
    match logits.device() {
        Device::Cpu => with_float!(OP, logits, |T| {
            let (zs, ts) = (logits.host_slice::<T>(OP)?, targets.host_slice::<T>(OP)?);
            Ok(host_output::<T>(shape, |l| {
                cpu::loss::bce_logits_fwd(zs, ts, l)
            }))
        }),
        _ => {
            let (gpu, zb) = gpu_f32(OP, logits)?;
            let (_, tb) = gpu_f32(OP, targets)?;
            let n = logits.numel();
            gpu_output(&gpu, shape, DType::F32, |l| {
                cuda::loss::bce_logits_fwd(&gpu, zb, tb, l, n)
            })
        }
    }
}

/// dlogits = scale·(sigmoid(z) − t) and, if `with_target_grad`, dtargets = −scale·z. The mean
/// loss's backward passes scale = dloss/n.
pub fn bce_logits_bwd(
    logits: &RawTensor,
    targets: &RawTensor,
    factor: Factor,
    with_target_grad: bool,
) -> Result<(RawTensor, Option<RawTensor>)> {
    const OP: &str = "binary_cross_entropy_with_logits backward";
    check_pair(OP, logits, targets)?;
    factor.check(OP, logits)?;
    match logits.device() {
        Device::Cpu => with_float!(OP, logits, |T| {
            let scale = factor.on_host::<T>(OP)?;
            host_pair_bwd::<T>(OP, logits, targets, with_target_grad, |z, t, dz, dt| {
                cpu::loss::bce_logits_bwd(z, t, scale, dz, dt)
            })
        }),
        _ => {
            let upstream = factor.device_address(OP)?;
            let scale = factor.scale as f32;
            gpu_pair_bwd(
                OP,
                logits,
                targets,
                with_target_grad,
                |gpu, z, t, dz, dt, n| {
                    cuda::loss::bce_logits_bwd(gpu, z, t, scale, upstream, (dz, dt), n)
                },
            )
        }
    }
}

/// scale·Σx² as a one-element tensor [1]; deterministic on every device (on a GPU: fixed per-block
/// partial sums, then one block adds them).
pub fn sum_squares(x: &RawTensor, scale: f64) -> Result<RawTensor> {
    const OP: &str = "sum of squares";
    match x.device() {
        Device::Cpu => with_float!(OP, x, |T| {
            let s = cpu::loss::sum_squares(x.host_slice::<T>(OP)?) * scale as T;
            Ok(RawTensor::host(T::wrap(vec![s]), vec![1], T::DTYPE))
        }),
        _ => {
            let (gpu, xb) = gpu_f32(OP, x)?;
            let n = x.numel();
            let blocks = cuda::loss::sum_squares_blocks(n);
            let mut partial = gpu.alloc(blocks * 4)?;
            cuda::loss::sum_squares(&gpu, xb, n, &mut partial)?;
            gpu_output(&gpu, vec![1], DType::F32, |out| {
                cuda::reduce::sum(&gpu, &partial, blocks, scale as f32, out)
            })
        }
    }
}

/// Two tensors of one shape, dtype and device, with at least one element (a mean of nothing is
/// not a loss).
fn check_pair(op: &'static str, a: &RawTensor, b: &RawTensor) -> Result<()> {
    common_device(op, &[a, b])?;
    b.expect_dtype(op, a.dtype())?;
    b.expect_shape(op, a.shape())?;
    if a.numel() == 0 {
        return Err(invalid(
            "loss input",
            format!("{op}: the inputs have no elements (shape {:?})", a.shape()),
        ));
    }
    Ok(())
}

/// A backward over two same-shaped host tensors giving the first's gradient and, if asked, the
/// second's.
fn host_pair_bwd<T: Float + Element>(
    op: &'static str,
    a: &RawTensor,
    b: &RawTensor,
    with_b_grad: bool,
    fill: impl FnOnce(&[T], &[T], &mut [T], Option<&mut [T]>),
) -> Result<(RawTensor, Option<RawTensor>)> {
    let (xa, xb) = (a.host_slice::<T>(op)?, b.host_slice::<T>(op)?);
    let mut db = with_b_grad.then(|| vec![T::zero(); xb.len()]);
    let da = host_output::<T>(a.shape().to_vec(), |da| fill(xa, xb, da, db.as_deref_mut()));
    let db = db.map(|d| RawTensor::host(T::wrap(d), b.shape().to_vec(), T::DTYPE));
    Ok((da, db))
}

/// The device form of [`host_pair_bwd`]: `launch(gpu, a, b, da, db, n)`.
fn gpu_pair_bwd(
    op: &'static str,
    a: &RawTensor,
    b: &RawTensor,
    with_b_grad: bool,
    launch: impl FnOnce(
        &Gpu,
        &GpuBuffer,
        &GpuBuffer,
        &mut GpuBuffer,
        Option<&mut GpuBuffer>,
        usize,
    ) -> Result<()>,
) -> Result<(RawTensor, Option<RawTensor>)> {
    let (gpu, ab) = gpu_f32(op, a)?;
    let (_, bb) = gpu_f32(op, b)?;
    let n = a.numel();
    let mut db = match with_b_grad {
        true => Some(gpu.alloc(n * 4)?),
        false => None,
    };
    let da = gpu_output(&gpu, a.shape().to_vec(), DType::F32, |da| {
        launch(&gpu, ab, bb, da, db.as_mut(), n)
    })?;
    let db = db.map(|d| RawTensor::from_gpu(d, b.shape().to_vec(), DType::F32));
    Ok((da, db))
}

/// Checks logits [rows, classes] and i32 labels [rows] with every label in 0..classes. Labels are
/// few, so they are checked on the host: a bad label is an error, never an out-of-bounds read.
/// Checks logits [rows, classes] and i32 labels [rows] on one device, and (reading the labels
/// back) that every label lies in `0..classes`.
fn check_logits_and_labels(
    op: &'static str,
    logits: &RawTensor,
    labels: &RawTensor,
) -> Result<(usize, usize)> {
    let (rows, classes) = check_logits_and_label_shapes(op, logits, labels)?;
    check_label_values(labels, classes)?;
    Ok((rows, classes))
}

/// Reads `labels` (i32) back and checks that each lies in `0..classes`; the error names the
/// first that does not and its row.
pub fn check_label_values(labels: &RawTensor, classes: usize) -> Result<()> {
    let host = labels.to_vec::<i32>()?;
    if let Some((i, bad)) = host
        .iter()
        .enumerate()
        .find(|(_, &l)| l < 0 || l as usize >= classes)
    {
        return Err(invalid(
            "labels",
            format!("label {bad} at row {i} is outside 0..{classes}"),
        ));
    }
    Ok(())
}

/// Checks logits [rows, classes] (non-empty) and i32 labels [rows] on the same device.
fn check_logits_and_label_shapes(
    op: &'static str,
    logits: &RawTensor,
    labels: &RawTensor,
) -> Result<(usize, usize)> {
    common_device(op, &[logits, labels])?;
    let &[rows, classes] = logits.shape() else {
        return Err(invalid(
            "logits",
            format!("{op}: expected [rows, classes], got {:?}", logits.shape()),
        ));
    };
    if rows == 0 || classes == 0 {
        return Err(invalid(
            "logits",
            format!("{op}: need at least one row and one class"),
        ));
    }
    labels.expect_dtype(op, DType::I32)?;
    labels.expect_shape(op, &[rows])?;
    Ok((rows, classes))
}
