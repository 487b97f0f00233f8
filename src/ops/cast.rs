//! Element-type conversion on the tape: the entry and exit of the mixed-precision path.

use crate::backend::{self, RawTensor};
use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::tensor::record;
use crate::tensor::Tensor;

/// `x` converted to `dtype`: f32 ⇄ bf16/f16 on every device (to 16 bits rounded to nearest even,
/// back exactly), f32 ⇄ f64 on the CPU. The gradient flows back converted to `x`'s type.
pub fn cast(x: &Tensor, dtype: DType) -> Result<Tensor> {
    let from = x.dtype();
    if from == dtype {
        return Ok(x.clone());
    }
    let y = backend::cast(x, dtype)?;
    Ok(record("cast", &[x], y, move || {
        move |dy: &RawTensor| Ok(vec![Some(backend::cast(dy, from)?)])
    }))
}

/// A layer's output (convolution, linear) in the activation format of the current mixed-precision
/// mode ([`crate::autocast_activations`]), else as computed.
pub(crate) fn as_activation(y: RawTensor) -> Result<RawTensor> {
    match crate::autocast::activation_format() {
        Some(format) => backend::cast(&y, format),
        None => Ok(y),
    }
}

/// A gradient computed in f32 for an input of `dtype` (a 16-bit activation gets a 16-bit one).
pub(crate) fn gradient_as(g: RawTensor, dtype: DType) -> Result<RawTensor> {
    backend::cast(&g, dtype)
}
