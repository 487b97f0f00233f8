//! ReLU with a mask: the forward pass records where x > 0, the backward pass applies it.

use crate::backend;
use crate::error::Result;
use crate::tensor::Tensor;

/// The output of [`relu`] and the mask its backward needs.
#[derive(Clone, Debug)]
pub struct Relu {
    pub y: Tensor,
    pub mask: Tensor,
}

/// y = max(x, 0).
pub fn relu(x: &Tensor) -> Result<Relu> {
    let (y, mask) = backend::relu_fwd(x)?;
    Ok(Relu { y, mask })
}

/// dx = dy where x > 0, else 0 (0 at x = 0, as PyTorch).
pub fn relu_backward(dy: &Tensor, saved: &Relu) -> Result<Tensor> {
    backend::relu_bwd(dy, &saved.mask)
}
