//! ReLU with a mask: the forward pass records where x > 0, the backward pass applies it.

use crate::autograd::record;
use crate::backend;
use crate::error::Result;
use crate::tensor::Tensor;

/// y = max(x, 0); the gradient is 0 at x = 0, as PyTorch's.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    let (y, mask) = backend::relu_fwd(x)?;
    Ok(record("relu", &[x], y, move || {
        move |dy: &Tensor| Ok(vec![Some(backend::relu_bwd(dy, &mask)?)])
    }))
}
