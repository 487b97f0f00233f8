//! 2-d max pooling with argmax; the gradient goes only to the element that won each window.

use crate::backend;
use crate::error::Result;
use crate::shape::{as_nchw, ConvGeometry, Window2d};
use crate::tensor::Tensor;

/// The output of [`max_pool2d`] and what its backward needs.
#[derive(Clone, Debug)]
pub struct MaxPool2d {
    pub y: Tensor,
    pub argmax: Tensor,
    pub geometry: ConvGeometry,
}

/// Max over each `window` of `x` [N,C,H,W]; output sizes floor like PyTorch's.
pub fn max_pool2d(x: &Tensor, window: Window2d) -> Result<MaxPool2d> {
    let shape = as_nchw("max_pool2d", x.shape())?;
    let geometry = ConvGeometry::new(shape, window, false)?;
    let (y, argmax) = backend::maxpool_fwd(x, &geometry)?;
    Ok(MaxPool2d {
        y,
        argmax,
        geometry,
    })
}

/// dx: each dy routed to its window's argmax.
pub fn max_pool2d_backward(dy: &Tensor, saved: &MaxPool2d) -> Result<Tensor> {
    dy.expect_shape("max_pool2d backward", saved.y.shape())?;
    backend::maxpool_bwd(dy, &saved.argmax, &saved.geometry)
}
