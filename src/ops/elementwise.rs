//! Elementwise arithmetic and reductions with their backward rules.

use crate::backend::{self, RawTensor};
use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::ops::cast;
use crate::tensor::record;
use crate::tensor::Tensor;

/// `a` and `b` in one float type: an f32 and a 16-bit tensor (16-bit activations meeting f32 ones,
/// e.g. a residual block's shortcut from the network's input), or bf16 and f16, meet in f32, as
/// PyTorch promotes them; the narrower one is widened on the tape, so its gradient comes back in
/// its own type. Other pairs are left as they are (and mismatched types stay an error).
fn promoted(a: &Tensor, b: &Tensor) -> Result<(Tensor, Tensor)> {
    let sixteen = |t: &Tensor| matches!(t.dtype(), DType::BF16 | DType::F16);
    let floats = |t: &Tensor| sixteen(t) || t.dtype() == DType::F32;
    if a.dtype() == b.dtype() || !floats(a) || !floats(b) {
        return Ok((a.clone(), b.clone()));
    }
    let wide = |t: &Tensor| {
        if sixteen(t) {
            cast(t, DType::F32)
        } else {
            Ok(t.clone())
        }
    };
    Ok((wide(a)?, wide(b)?))
}

/// a + b (same shapes; an f32 and a 16-bit tensor meet in f32).
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (a, b) = &promoted(a, b)?;
    let y = backend::add(a, b)?;
    Ok(record("add", &[a, b], y, || {
        |dy: &RawTensor| Ok(vec![Some(dy.clone()), Some(dy.clone())])
    }))
}

/// a · b elementwise (same shapes; an f32 and a 16-bit tensor meet in f32).
pub fn mul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (a, b) = &promoted(a, b)?;
    let y = backend::mul(a, b)?;
    let (a_saved, b_saved) = (a.detach(), b.detach());
    Ok(record("mul", &[a, b], y, move || {
        move |dy: &RawTensor| {
            Ok(vec![
                Some(backend::mul(dy, &b_saved)?),
                Some(backend::mul(dy, &a_saved)?),
            ])
        }
    }))
}

/// s · x.
pub fn scale(x: &Tensor, s: f64) -> Result<Tensor> {
    let y = backend::affine(x, s, 0.0)?;
    Ok(record("scale", &[x], y, move || {
        move |dy: &RawTensor| Ok(vec![Some(backend::affine(dy, s, 0.0)?)])
    }))
}

/// Σ x, a one-element tensor.
pub fn sum(x: &Tensor) -> Result<Tensor> {
    scaled_sum("sum", x, 1.0)
}

/// The mean of x, a one-element tensor; NaN for an empty x (0 / 0, as `torch.mean`).
pub fn mean(x: &Tensor) -> Result<Tensor> {
    let scale = match x.numel() {
        0 => f64::NAN,
        n => 1.0 / n as f64,
    };
    scaled_sum("mean", x, scale)
}

fn scaled_sum(op: &'static str, x: &Tensor, s: f64) -> Result<Tensor> {
    // A 16-bit tensor is summed in f32 (as PyTorch's autocast does): the result is a loss or a
    // statistic, not an activation; the gradient goes back through the cast in x's format.
    if matches!(x.dtype(), DType::BF16 | DType::F16) {
        return scaled_sum(op, &cast(x, DType::F32)?, s);
    }
    let y = backend::sum(x, s)?.reshape(&[])?;
    let shape = x.shape().to_vec();
    Ok(record(op, &[x], y, move || {
        move |dy: &RawTensor| {
            // dy stays on the device: the fill kernel reads it (no wait for the device).
            let value = backend::Factor::new(s, Some(dy));
            Ok(vec![Some(backend::full_like_times(dy, &shape, value)?)])
        }
    }))
}
