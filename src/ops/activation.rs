//! Activations on the tape: ReLU (with a mask), leaky ReLU, ELU, ReLU6, sigmoid, tanh, softmax and
//! log-softmax along an axis, and maxout. Each backward rule reads what its forward saved: the input
//! (ReLU's mask, leaky ReLU, ELU, ReLU6), the output (sigmoid, tanh, softmax, log-softmax) or the winners
//! (maxout).

use crate::backend::{self, RawTensor};
use crate::core::error::Result;
use crate::tensor::record;
use crate::tensor::Tensor;

/// y = max(x, 0); the gradient is 0 at x = 0, as PyTorch's.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    let (y, mask) = backend::relu_fwd(x)?;
    Ok(record("relu", &[x], y, move || {
        move |dy: &RawTensor| Ok(vec![Some(backend::relu_bwd(dy, &mask)?)])
    }))
}

/// y = x > 0 ? x : negative_slope·x (PyTorch's `leaky_relu`; its default slope is 0.01). The
/// gradient at exactly x = 0 is `negative_slope`, as PyTorch's (`x > 0 ? 1 : slope`). Any finite
/// slope is accepted, negative ones included; NaN or ±∞ is an error.
pub fn leaky_relu(x: &Tensor, negative_slope: f64) -> Result<Tensor> {
    let y = backend::leaky_relu_fwd(x, negative_slope)?;
    let x_saved = x.detach();
    Ok(record("leaky_relu", &[x], y, move || {
        move |dy: &RawTensor| {
            Ok(vec![Some(backend::leaky_relu_bwd(
                &x_saved,
                dy,
                negative_slope,
            )?)])
        }
    }))
}

/// ELU: y = x > 0 ? x : alpha·(exp(x) − 1) (PyTorch's `elu`; its default alpha is 1). The gradient
/// is `x > 0 ? 1 : alpha·exp(x)`, so `alpha` at exactly x = 0, as PyTorch's (`alpha·exp(x)` is
/// PyTorch's `y + alpha`, computed from the saved input to keep its precision for very negative x).
/// Any finite alpha is accepted (PyTorch checks none; a negative alpha flips the negative branch);
/// NaN or ±∞ is an error.
pub fn elu(x: &Tensor, alpha: f64) -> Result<Tensor> {
    let y = backend::elu_fwd(x, alpha)?;
    let x_saved = x.detach();
    Ok(record("elu", &[x], y, move || {
        move |dy: &RawTensor| Ok(vec![Some(backend::elu_bwd(&x_saved, dy, alpha)?)])
    }))
}

/// ReLU6 (MobileNetV2's activation; PyTorch's `relu6` = `hardtanh(x, 0, 6)`): y = min(max(x, 0),
/// 6). The gradient passes only where 0 < x < 6 (and at NaN), so exactly x = 0 and x = 6 get 0, as
/// PyTorch's `hardtanh_backward`.
pub fn relu6(x: &Tensor) -> Result<Tensor> {
    let y = backend::relu6_fwd(x)?;
    let x_saved = x.detach();
    Ok(record("relu6", &[x], y, move || {
        move |dy: &RawTensor| Ok(vec![Some(backend::relu6_bwd(&x_saved, dy)?)])
    }))
}

/// y = 1 / (1 + exp(−x)), exact to rounding for any |x| (no overflow); gradient y(1 − y).
pub fn sigmoid(x: &Tensor) -> Result<Tensor> {
    let y = backend::sigmoid_fwd(x)?;
    let y_saved = y.clone();
    Ok(record("sigmoid", &[x], y, move || {
        move |dy: &RawTensor| Ok(vec![Some(backend::sigmoid_bwd(&y_saved, dy)?)])
    }))
}

/// y = tanh(x); gradient 1 − y².
pub fn tanh(x: &Tensor) -> Result<Tensor> {
    let y = backend::tanh_fwd(x)?;
    let y_saved = y.clone();
    Ok(record("tanh", &[x], y, move || {
        move |dy: &RawTensor| Ok(vec![Some(backend::tanh_bwd(&y_saved, dy)?)])
    }))
}

/// Softmax along `axis` (0-based; e.g. the last axis of [N, K] logits, or axis 1, the channels, of
/// an NCHW tensor): y = exp(x − max) / Σ exp(x − max), stable for logits in the thousands. An axis
/// outside the tensor's rank is an error.
pub fn softmax(x: &Tensor, axis: usize) -> Result<Tensor> {
    let y = backend::softmax_fwd(x, axis)?;
    let y_saved = y.clone();
    Ok(record("softmax", &[x], y, move || {
        move |dy: &RawTensor| Ok(vec![Some(backend::softmax_bwd(&y_saved, dy, axis)?)])
    }))
}

/// Log-softmax along `axis`: y = x − max − log Σ exp(x − max) (finite where log(softmax) would
/// underflow to −∞); gradient dy − softmax ⊙ Σ dy.
pub fn log_softmax(x: &Tensor, axis: usize) -> Result<Tensor> {
    let y = backend::log_softmax_fwd(x, axis)?;
    let y_saved = y.clone();
    Ok(record("log_softmax", &[x], y, move || {
        move |dy: &RawTensor| Ok(vec![Some(backend::log_softmax_bwd(&y_saved, dy, axis)?)])
    }))
}

/// Maxout (Goodfellow et al., 2013): the max over groups of `pieces` consecutive channels,
/// x [N, units·pieces, ...] → [N, units, ...] (2-d [N, C], 4-d [N, C, H, W], any rank ≥ 2). The
/// pieces come from a preceding linear or conv layer with `units·pieces` outputs. The gradient goes
/// to the winning piece only (the first on ties). `pieces` = 0 or not dividing C is an error.
pub fn maxout(x: &Tensor, pieces: usize) -> Result<Tensor> {
    let (y, argmax) = backend::maxout_fwd(x, pieces)?;
    Ok(record("maxout", &[x], y, move || {
        move |dy: &RawTensor| Ok(vec![Some(backend::maxout_bwd(dy, &argmax, pieces)?)])
    }))
}
