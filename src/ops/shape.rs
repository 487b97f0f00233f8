//! Concatenation along an axis and its inverse, the slice `narrow`, with their backward rules.

use crate::backend::{self, RawTensor};
use crate::core::error::Result;
use crate::tensor::record;
use crate::tensor::Tensor;

/// The tensors joined along `axis`: the channels (axis 1) of NCHW images or the features (axis 1)
/// of [N, F] rows, or any other axis. Every other dim must match; parts may be empty along `axis`.
/// An empty list, a bad axis, mismatched shapes, dtypes or devices are errors.
///
/// Backward: each input's gradient is its slice of dy (`backend::narrow`).
pub fn concat(inputs: &[&Tensor], axis: usize) -> Result<Tensor> {
    let y = backend::concat(inputs, axis)?;
    let parts: Vec<(usize, bool)> = inputs
        .iter()
        .map(|t| (t.shape()[axis], t.needs_grad()))
        .collect();
    Ok(record("concat", inputs, y, move || {
        move |dy: &RawTensor| {
            let mut start = 0;
            parts
                .iter()
                .map(|&(len, needs_grad)| {
                    start += len;
                    needs_grad
                        .then(|| backend::narrow(dy, axis, start - len, len))
                        .transpose()
                })
                .collect()
        }
    }))
}

/// The slice `start..start + len` of `x` along `axis`, as a new tensor. The range must lie inside
/// the axis.
///
/// Backward: dy padded back to x's shape with zeros (a concatenation with zero blocks).
pub fn narrow(x: &Tensor, axis: usize, start: usize, len: usize) -> Result<Tensor> {
    let y = backend::narrow(x, axis, start, len)?;
    let shape = x.shape().to_vec();
    Ok(record("narrow", &[x], y, move || {
        move |dy: &RawTensor| {
            let zeros = |n: usize| {
                let mut s = shape.clone();
                s[axis] = n;
                backend::full_like(dy, &s, 0.0)
            };
            let before = zeros(start)?;
            let after = zeros(shape[axis] - start - len)?;
            Ok(vec![Some(backend::concat(&[&before, dy, &after], axis)?)])
        }
    }))
}
