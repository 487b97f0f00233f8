//! Softmax cross-entropy, fused and stable for large logits; the mean over the batch.

use crate::autograd::record;
use crate::backend;
use crate::error::Result;
use crate::tensor::Tensor;

/// Mean over rows of −log softmax(logits)[label]: logits [N, K], labels i32 [N] in 0..K (checked;
/// a bad label is an error). Returns a one-element tensor on the logits' device.
pub fn softmax_cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let (probs, losses) = backend::softmax_xent_fwd(logits, labels)?;
    let rows = probs.shape()[0];
    let loss = backend::sum(&losses, 1.0 / rows as f64)?.reshape(&[])?;
    let labels = labels.clone();
    Ok(record(
        "softmax_cross_entropy",
        &[logits],
        loss,
        move || {
            move |dloss: &Tensor| {
                // dlogits = dloss/N · (probs − onehot(labels)); dloss is one element.
                let scale = dloss.scalar()? / rows as f64;
                Ok(vec![Some(backend::softmax_xent_bwd(
                    &probs, &labels, scale,
                )?)])
            }
        },
    ))
}
