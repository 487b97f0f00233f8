//! 2-d max pooling with argmax; the gradient goes only to the element that won each window.

use crate::autograd::record;
use crate::backend;
use crate::error::Result;
use crate::shape::{as_nchw, ConvGeometry, Window2d};
use crate::tensor::Tensor;

/// Max over each `window` of `x` [N,C,H,W]; output sizes floor like PyTorch's.
pub fn max_pool2d(x: &Tensor, window: Window2d) -> Result<Tensor> {
    let shape = as_nchw("max_pool2d", x.shape())?;
    let g = ConvGeometry::new(shape, window, false)?;
    let (y, argmax) = backend::maxpool_fwd(x, &g)?;
    Ok(record("max_pool2d", &[x], y, move || {
        move |dy: &Tensor| Ok(vec![Some(backend::maxpool_bwd(dy, &argmax, &g)?)])
    }))
}
