//! Flatten: [N, ...] to [N, rest]. Its backward is a reshape back to the input's shape.

use crate::core::error::{invalid, Result};
use crate::tensor::Tensor;

/// Keeps the batch axis and flattens the others.
pub fn flatten(x: &Tensor) -> Result<Tensor> {
    let Some((&n, rest)) = x.shape().split_first() else {
        return Err(invalid("flatten input", "a 0-d tensor has no batch axis"));
    };
    x.reshape(&[n, rest.iter().product()])
}
