//! Regularization penalties.

use crate::backend::{self, common_device, RawTensor};
use crate::core::dtype::DType;
use crate::core::error::{invalid, Error, Result};
use crate::tensor::record;
use crate::tensor::Tensor;

/// The L2 penalty (weight decay as a loss term), with the ½ convention:
/// `weight/2 · Σ_p ‖p‖²` over every element of every tensor in `params`, so that its gradient is
/// `weight·p` (what SGD's weight decay adds). A one-element tensor (shape `[]`) on the parameters'
/// device.
///
/// The parameters must share a device and a float dtype; `weight` must be finite and ≥ 0; an empty
/// list is an error. A tensor listed twice is penalized twice.
pub fn l2_penalty(params: &[&Tensor], weight: f64) -> Result<Tensor> {
    const OP: &str = "l2_penalty";
    let Some(first) = params.first() else {
        return Err(invalid("l2_penalty params", "needs at least one tensor"));
    };
    if !(weight.is_finite() && weight >= 0.0) {
        return Err(invalid(
            "l2_penalty weight",
            format!("{weight} must be finite and ≥ 0"),
        ));
    }
    common_device(OP, params)?;
    if !matches!(first.dtype(), DType::F32 | DType::F64) {
        return Err(Error::DTypeMismatch {
            op: OP,
            expected: DType::F32,
            got: first.dtype(),
        });
    }
    let mut total: Option<RawTensor> = None;
    for p in params {
        p.expect_dtype(OP, first.dtype())?;
        let term = backend::sum_squares(p, weight / 2.0)?;
        total = Some(match total {
            None => term,
            Some(acc) => backend::add(&acc, &term)?,
        });
    }
    let loss = total
        .ok_or_else(|| invalid("l2_penalty params", "needs at least one tensor"))?
        .reshape(&[])?;
    let saved: Vec<(Tensor, bool)> = params
        .iter()
        .map(|p| (p.detach(), p.needs_grad()))
        .collect();
    Ok(record(OP, params, loss, move || {
        move |dloss: &RawTensor| {
            let factor = backend::Factor::new(weight, Some(dloss));
            saved
                .iter()
                .map(|(p, needs_grad)| {
                    needs_grad
                        .then(|| backend::scale_times(p, factor))
                        .transpose()
                })
                .collect()
        }
    }))
}
