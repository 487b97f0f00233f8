//! Loss primitives.

use super::{common_device, gpu_f32, gpu_output, host_output, with_float};
use crate::cpu;
use crate::cuda;
use crate::device::Device;
use crate::error::{invalid, Error, Result};
use crate::tensor::{DType, Element, Tensor};

/// Softmax cross-entropy per row: (probs [R,K], losses [R]). Labels are validated by the caller.
pub fn softmax_xent_fwd(logits: &Tensor, labels: &Tensor) -> Result<(Tensor, Tensor)> {
    let (rows, classes) = check_logits_and_labels("softmax_cross_entropy", logits, labels)?;
    match logits.device() {
        Device::Cpu => with_float!("softmax_cross_entropy", logits, |T| {
            let zs = logits.host_slice::<T>("softmax_cross_entropy")?;
            let ls = labels.host_slice::<i32>("softmax_cross_entropy")?;
            let mut losses = vec![0.0 as T; rows];
            let probs = host_output::<T>(vec![rows, classes], |p| {
                cpu::loss::softmax_xent_fwd(zs, ls, rows, classes, p, &mut losses)
            });
            Ok((probs, Tensor::host(T::wrap(losses), vec![rows], T::DTYPE)))
        }),
        _ => {
            let (gpu, zb) = gpu_f32("softmax_cross_entropy", logits)?;
            let lb = labels.gpu_buffer("softmax_cross_entropy")?;
            let mut losses = gpu.alloc(rows * 4)?;
            let probs = gpu_output(&gpu, vec![rows, classes], DType::F32, |p| {
                cuda::loss::softmax_xent_fwd(&gpu, zb, lb, rows, classes, p, &mut losses)
            })?;
            Ok((probs, Tensor::from_gpu(losses, vec![rows], DType::F32)))
        }
    }
}

/// dlogits = scale·(probs − onehot(labels)).
pub fn softmax_xent_bwd(probs: &Tensor, labels: &Tensor, scale: f64) -> Result<Tensor> {
    let (rows, classes) = check_logits_and_labels("softmax_cross_entropy backward", probs, labels)?;
    match probs.device() {
        Device::Cpu => with_float!("softmax_cross_entropy backward", probs, |T| {
            let ps = probs.host_slice::<T>("softmax_cross_entropy backward")?;
            let ls = labels.host_slice::<i32>("softmax_cross_entropy backward")?;
            Ok(host_output::<T>(vec![rows, classes], |d| {
                cpu::loss::softmax_xent_bwd(ps, ls, rows, classes, scale as T, d)
            }))
        }),
        _ => {
            let (gpu, pb) = gpu_f32("softmax_cross_entropy backward", probs)?;
            let lb = labels.gpu_buffer("softmax_cross_entropy backward")?;
            gpu_output(&gpu, vec![rows, classes], DType::F32, |d| {
                cuda::loss::softmax_xent_bwd(&gpu, pb, lb, rows, classes, scale as f32, d)
            })
        }
    }
}

/// Checks logits [rows, classes] and i32 labels [rows] with every label in 0..classes. Labels are
/// few, so they are checked on the host: a bad label is an error, never an out-of-bounds read.
fn check_logits_and_labels(
    op: &'static str,
    logits: &Tensor,
    labels: &Tensor,
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
    Ok((rows, classes))
}
