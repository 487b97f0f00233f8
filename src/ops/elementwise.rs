//! Elementwise arithmetic and reductions with their backward rules.

use crate::autograd::record;
use crate::backend;
use crate::error::Result;
use crate::tensor::Tensor;

/// a + b (same shapes).
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let y = backend::add(a, b)?;
    Ok(record("add", &[a, b], y, || {
        |dy: &Tensor| Ok(vec![Some(dy.detach()), Some(dy.detach())])
    }))
}

/// a · b elementwise (same shapes).
pub fn mul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let y = backend::mul(a, b)?;
    let (a_saved, b_saved) = (a.detach(), b.detach());
    Ok(record("mul", &[a, b], y, move || {
        move |dy: &Tensor| {
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
        move |dy: &Tensor| Ok(vec![Some(backend::affine(dy, s, 0.0)?)])
    }))
}

/// Σ x, a one-element tensor.
pub fn sum(x: &Tensor) -> Result<Tensor> {
    scaled_sum("sum", x, 1.0)
}

/// The mean of x, a one-element tensor.
pub fn mean(x: &Tensor) -> Result<Tensor> {
    scaled_sum("mean", x, 1.0 / x.numel().max(1) as f64)
}

fn scaled_sum(op: &'static str, x: &Tensor, s: f64) -> Result<Tensor> {
    let y = backend::sum(x, s)?.reshape(&[])?;
    let shape = x.shape().to_vec();
    Ok(record(op, &[x], y, move || {
        move |dy: &Tensor| {
            // dy stays on the device: the fill kernel reads it (no wait for the device).
            let value = backend::Factor::new(s, Some(dy));
            Ok(vec![Some(backend::full_like_times(dy, &shape, value)?)])
        }
    }))
}
