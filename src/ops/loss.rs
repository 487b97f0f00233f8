//! Losses, each a one-element tensor (shape `[]`) on its inputs' device: softmax cross-entropy
//! (fused and stable for large logits; with label smoothing and class weights), mean squared error and sum of squared errors, binary
//! cross-entropy on logits, and sums of losses.

use crate::backend::RawTensor;
use crate::backend::{self, common_device, Factor};
use crate::core::device::Device;
use crate::core::dtype::DType;
use crate::core::error::{invalid, Error, Result};
use crate::ops::{add, cast, scale};
use crate::tensor::record;
use crate::tensor::Tensor;

/// Mean over rows of −log softmax(logits)[label]: logits [N, K], labels i32 [N] in 0..K (checked;
/// a bad label is an error). Returns a one-element tensor on the logits' device.
pub fn softmax_cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let logits = &in_f32(logits)?;
    let (probs, losses) = backend::softmax_xent_fwd(logits, labels)?;
    record_softmax_cross_entropy(logits, labels, probs, losses)
}

/// [`softmax_cross_entropy`] that does not copy the labels to the host to check them: a label
/// outside `0..classes` makes the loss NaN. The caller reads the loss back and checks the labels
/// (with `backend::check_label_values`) only when it is not finite.
pub(crate) fn softmax_cross_entropy_deferred_label_check(
    logits: &Tensor,
    labels: &Tensor,
) -> Result<Tensor> {
    let logits = &in_f32(logits)?;
    let (probs, losses) = backend::softmax_xent_fwd_unchecked_labels(logits, labels)?;
    record_softmax_cross_entropy(logits, labels, probs, losses)
}

/// The mean of the per-row `losses` and its backward rule, from the forward's softmax `probs`.
fn record_softmax_cross_entropy(
    logits: &Tensor,
    labels: &Tensor,
    probs: RawTensor,
    losses: RawTensor,
) -> Result<Tensor> {
    let rows = probs.shape()[0];
    let loss = backend::sum(&losses, 1.0 / rows as f64)?.reshape(&[])?;
    let labels = labels.clone();
    Ok(record(
        "softmax_cross_entropy",
        &[logits],
        loss,
        move || {
            move |dloss: &RawTensor| {
                // dlogits = dloss/N · (probs − onehot(labels)); dloss (one element) stays on the
                // device, so the backward pass need not wait for it.
                let scale = 1.0 / rows as f64;
                Ok(vec![Some(backend::softmax_xent_bwd_checked_labels(
                    &probs,
                    &labels,
                    scale,
                    Some(dloss),
                )?)])
            }
        },
    ))
}

/// Options of softmax cross-entropy: PyTorch's `F.cross_entropy(logits, y, weight=class_weights,
/// label_smoothing=label_smoothing, reduction="mean")`. The default (no smoothing, no weights) is
/// [`softmax_cross_entropy`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CrossEntropy {
    /// eps in [0, 1): the target puts `1 − eps` on the label and `eps/K` on every class.
    pub label_smoothing: f64,
    /// One finite weight ≥ 0 per class, or `None` for 1 each.
    pub class_weights: Option<Vec<f64>>,
}

impl CrossEntropy {
    /// Checks eps and the weights against `classes`; returns the weights (1 each without any).
    fn weights(&self, classes: usize) -> Result<Vec<f64>> {
        let eps = self.label_smoothing;
        if !(0.0..1.0).contains(&eps) {
            return Err(invalid(
                "label smoothing",
                format!("softmax_cross_entropy: must be in [0, 1), got {eps}"),
            ));
        }
        let Some(weights) = &self.class_weights else {
            return Ok(vec![1.0; classes]);
        };
        if weights.len() != classes {
            return Err(invalid(
                "class weights",
                format!(
                    "softmax_cross_entropy: {} weights for {classes} classes (one per class)",
                    weights.len()
                ),
            ));
        }
        if let Some((c, w)) = weights
            .iter()
            .enumerate()
            .find(|(_, w)| !w.is_finite() || **w < 0.0)
        {
            return Err(invalid(
                "class weights",
                format!(
                    "softmax_cross_entropy: the weight of class {c} is {w}, not finite and ≥ 0"
                ),
            ));
        }
        Ok(weights.clone())
    }
}

/// Softmax cross-entropy with `options` (label smoothing and class weights), with PyTorch's exact
/// `F.cross_entropy(weight=w, label_smoothing=eps, reduction="mean")` semantics: over rows i with
/// labels y_i and K classes,
///
/// `loss = Σ_i [(1 − eps)·w_{y_i}·(−log p_{i,y_i}) + (eps/K)·Σ_c w_c·(−log p_{i,c})] / Σ_i w_{y_i}`
///
/// (PyTorch's weighted mean divides its smoothing term by the same `Σ_i w_{y_i}`; see
/// `cross_entropy_loss_label_smoothing` in ATen's LossNLL.cpp). The default options take the fused
/// [`softmax_cross_entropy`] path. Errors: eps outside [0, 1), weights not one finite value ≥ 0 per
/// class, a label outside `0..K`, or labels whose weights sum to 0 (the mean has no value).
pub fn softmax_cross_entropy_with(
    logits: &Tensor,
    labels: &Tensor,
    options: &CrossEntropy,
) -> Result<Tensor> {
    if *options == CrossEntropy::default() {
        return softmax_cross_entropy(logits, labels);
    }
    let logits = &in_f32(logits)?;
    let classes = match logits.shape() {
        &[_, k] => k,
        other => {
            return Err(invalid(
                "logits",
                format!("softmax_cross_entropy: expected [rows, classes], got {other:?}"),
            ))
        }
    };
    let weights = options.weights(classes)?;
    let host_labels = labels.to_vec::<i32>()?;
    backend::check_host_labels(&host_labels, classes)?;
    let label_weight_sum: f64 = host_labels.iter().map(|&l| weights[l as usize]).sum();
    if label_weight_sum <= 0.0 {
        return Err(invalid(
            "class weights",
            "softmax_cross_entropy: the weights of this batch's labels sum to 0, so the weighted \
             mean has no value"
                .to_string(),
        ));
    }
    let weight_sum = weights.iter().sum();
    let weights = RawTensor::from_vec(weights, &[classes], Device::Cpu)?
        .to_dtype(logits.dtype())?
        .to_device(logits.device())?;
    let smoothing = options.label_smoothing;
    let targets = xent_targets(&weights, weight_sum, smoothing);
    let (probs, losses) = backend::softmax_xent_smooth_fwd_checked_labels(logits, labels, targets)?;
    let scale = 1.0 / label_weight_sum;
    let loss = backend::sum(&losses, scale)?.reshape(&[])?;
    let labels = labels.clone();
    Ok(record(
        "softmax_cross_entropy",
        &[logits],
        loss,
        move || {
            move |dloss: &RawTensor| {
                let dlogits = backend::softmax_xent_smooth_bwd(
                    &probs,
                    &labels,
                    xent_targets(&weights, weight_sum, smoothing),
                    scale,
                    Some(dloss),
                )?;
                Ok(vec![Some(dlogits)])
            }
        },
    ))
}

fn xent_targets(weights: &RawTensor, weight_sum: f64, smoothing: f64) -> backend::XentTargets<'_> {
    backend::XentTargets {
        weights,
        weight_sum,
        smoothing,
    }
}

/// `t` widened to f32 on the tape when it is stored in 16 bits (mixed-precision activations):
/// losses are computed in f32, as under PyTorch's autocast, and their gradients flow back into
/// the 16-bit tensor through the cast.
fn in_f32(t: &Tensor) -> Result<Tensor> {
    match t.dtype() {
        DType::BF16 | DType::F16 => cast(t, DType::F32),
        _ => Ok(t.clone()),
    }
}

/// Mean squared error: (1/n)·Σ (prediction − target)² over all n elements of two tensors of one
/// shape (n ≥ 1). Gradients: 2(p − t)/n to the prediction and −2(p − t)/n to the target (when it
/// requires one).
pub fn mse_loss(prediction: &Tensor, target: &Tensor) -> Result<Tensor> {
    squared_error_loss("mse_loss", prediction, target, true)
}

/// Sum of squared errors: Σ (prediction − target)², with gradients ±2(p − t).
pub fn sum_squared_error(prediction: &Tensor, target: &Tensor) -> Result<Tensor> {
    squared_error_loss("sum_squared_error", prediction, target, false)
}

fn squared_error_loss(
    op: &'static str,
    prediction: &Tensor,
    target: &Tensor,
    mean: bool,
) -> Result<Tensor> {
    let (prediction, target) = (&in_f32(prediction)?, &in_f32(target)?);
    let sq = backend::squared_error_fwd(prediction, target)?;
    let s = if mean { 1.0 / sq.numel() as f64 } else { 1.0 };
    let loss = backend::sum(&sq, s)?.reshape(&[])?;
    let (p, t, target_grad) = (prediction.detach(), target.detach(), target.needs_grad());
    Ok(record(op, &[prediction, target], loss, move || {
        move |dloss: &RawTensor| {
            let factor = Factor::new(2.0 * s, Some(dloss));
            let (dp, dt) = backend::squared_error_bwd(&p, &t, factor, target_grad)?;
            Ok(vec![Some(dp), dt])
        }
    }))
}

/// Binary cross-entropy of sigmoid(logits) against `targets`, averaged over all n elements of two
/// tensors of one shape (n ≥ 1): the mean of max(z, 0) − z·t + ln(1 + e^−|z|), the stable form
/// PyTorch's `binary_cross_entropy_with_logits` uses (finite for any finite z, e.g. z = ±1000).
///
/// Gradients: (sigmoid(z) − t)/n to the logits and −z/n to the targets (when they require one).
///
/// Targets are meant to lie in [0, 1] (hard labels or soft probabilities) but are not checked: that
/// would mean reading device memory back on every call. Outside [0, 1] the value is still the
/// formula above, but no longer a cross-entropy (it can be negative), and non-finite targets give
/// a non-finite loss.
pub fn binary_cross_entropy_with_logits(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let (logits, targets) = (&in_f32(logits)?, &in_f32(targets)?);
    let losses = backend::bce_logits_fwd(logits, targets)?;
    let n = losses.numel() as f64;
    let loss = backend::sum(&losses, 1.0 / n)?.reshape(&[])?;
    let (z, t, target_grad) = (logits.detach(), targets.detach(), targets.needs_grad());
    Ok(record(
        "binary_cross_entropy_with_logits",
        &[logits, targets],
        loss,
        move || {
            move |dloss: &RawTensor| {
                let factor = Factor::new(1.0 / n, Some(dloss));
                let (dz, dt) = backend::bce_logits_bwd(&z, &t, factor, target_grad)?;
                Ok(vec![Some(dz), dt])
            }
        },
    ))
}

/// The sum of one-element losses (shape `[]` or `[1]`, one float dtype, one device), shape `[]`.
/// Built from `ops::add`, so gradients reach each loss (and add up where losses share inputs or a
/// loss appears twice). An empty list is an error.
pub fn sum_losses(losses: &[&Tensor]) -> Result<Tensor> {
    let weighted: Vec<(&Tensor, f64)> = losses.iter().map(|&l| (l, 1.0)).collect();
    combine_losses("sum_losses", &weighted)
}

/// Σ weightᵢ·lossᵢ over one-element losses (as in [`sum_losses`]) with finite weights (any sign),
/// built from `ops::scale` and `ops::add`: the gradient reaching lossᵢ is weightᵢ·dloss.
pub fn weighted_sum_losses(losses: &[(&Tensor, f64)]) -> Result<Tensor> {
    combine_losses("weighted_sum_losses", losses)
}

fn combine_losses(op: &'static str, losses: &[(&Tensor, f64)]) -> Result<Tensor> {
    let Some(&(first, _)) = losses.first() else {
        return Err(invalid("losses", format!("{op}: needs at least one loss")));
    };
    let tensors: Vec<&Tensor> = losses.iter().map(|&(l, _)| l).collect();
    common_device(op, &tensors)?;
    if !matches!(first.dtype(), DType::F32 | DType::F64) {
        return Err(Error::DTypeMismatch {
            op,
            expected: DType::F32,
            got: first.dtype(),
        });
    }
    for (i, &(l, w)) in losses.iter().enumerate() {
        l.expect_dtype(op, first.dtype())?;
        if l.numel() != 1 {
            return Err(invalid(
                "losses",
                format!("{op}: loss {i} has shape {:?}, not one element", l.shape()),
            ));
        }
        if !w.is_finite() {
            return Err(invalid(
                "loss weight",
                format!("{op}: weight {w} of loss {i} is not finite"),
            ));
        }
    }
    let mut total: Option<Tensor> = None;
    for &(l, w) in losses {
        let term = l.reshape(&[])?;
        let term = if w == 1.0 { term } else { scale(&term, w)? };
        total = Some(match total {
            None => term,
            Some(acc) => add(&acc, &term)?,
        });
    }
    total.ok_or_else(|| invalid("losses", format!("{op}: needs at least one loss")))
}
