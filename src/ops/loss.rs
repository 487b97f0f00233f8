//! Softmax cross-entropy, fused and stable for large logits; the mean over the batch.

use crate::backend::{self, common_device};
use crate::error::{invalid, Result};
use crate::tensor::{DType, Tensor};

/// The mean loss and what the backward needs.
#[derive(Clone, Debug)]
pub struct SoftmaxCrossEntropy {
    /// Mean over rows of −log softmax(logits)[label], a one-element tensor on the logits' device.
    pub loss: Tensor,
    pub probs: Tensor,
    pub labels: Tensor,
}

/// logits [N, K], labels i32 [N] with values in 0..K (checked; a bad label is an error).
pub fn softmax_cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<SoftmaxCrossEntropy> {
    common_device("softmax_cross_entropy", &[logits, labels])?;
    let &[rows, classes] = logits.shape() else {
        return Err(invalid(
            "logits",
            format!("expected [N, classes], got {:?}", logits.shape()),
        ));
    };
    labels.expect_dtype("softmax_cross_entropy labels", DType::I32)?;
    labels.expect_shape("softmax_cross_entropy labels", &[rows])?;
    if rows == 0 || classes == 0 {
        return Err(invalid("logits", "need at least one row and one class"));
    }
    // Labels are few; checking them on the host keeps a bad label from becoming a NaN.
    let host_labels = labels.to_vec::<i32>()?;
    if let Some((i, bad)) = host_labels
        .iter()
        .enumerate()
        .find(|(_, &l)| l < 0 || l as usize >= classes)
    {
        return Err(invalid(
            "labels",
            format!("label {bad} at row {i} is outside 0..{classes}"),
        ));
    }
    let (probs, losses) = backend::softmax_xent_fwd(logits, labels)?;
    let loss = backend::sum(&losses, 1.0 / rows as f64)?;
    Ok(SoftmaxCrossEntropy {
        loss,
        probs,
        labels: labels.clone(),
    })
}

/// d(mean loss)/d(logits), times `dloss` (1 for a plain loss).
pub fn softmax_cross_entropy_backward(saved: &SoftmaxCrossEntropy, dloss: f64) -> Result<Tensor> {
    let rows = saved.probs.shape()[0];
    backend::softmax_xent_bwd(&saved.probs, &saved.labels, dloss / rows as f64)
}
