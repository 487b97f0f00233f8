//! Fully connected layer: y = x·Wᵀ + b for x [N, in], W [out, in] (PyTorch's layout), b [out].

use crate::backend::ProductFormats;
use crate::backend::{self, common_device, RawTensor};
use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::core::shape::GemmSpec;
use crate::ops::cast::gradient_as;
use crate::tensor::record;
use crate::tensor::Tensor;

/// y = x·Wᵀ + b.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    common_device("linear", &[x, w])?;
    let (n, fan_in, out) = backend::linear_dims(x, w)?;
    // The precision of the products, kept for the backward pass (see crate::autocast).
    let mixed = crate::autocast::current();
    let store = crate::autocast::activation_format();
    // The weight as the products read it (rounded once for both passes, as autocast's cache).
    let w_product = backend::product_operand(w, mixed)?;
    // The bias is added, and y stored in the activation format, by the GEMM's epilogue.
    let y = backend::linear_forward(
        x,
        &w_product,
        b.map(Tensor::raw),
        ProductFormats::operands(mixed).stored_in(store),
    )?;
    let mut inputs = vec![x, w];
    inputs.extend(b);
    let (x_saved, w_saved, has_bias) = (x.detach(), w_product.clone(), b.is_some());
    let x_dtype = x.dtype();
    Ok(record("linear", &inputs, y, move || {
        // dx = dy·W, dW = dyᵀ·x, db = Σ_n dy.
        move |dy: &RawTensor| {
            let dx_spec = GemmSpec::new(n, fan_in, out);
            // A 16-bit input gets its gradient in its format, written so by the GEMM.
            let store = matches!(x_dtype, DType::BF16 | DType::F16).then_some(x_dtype);
            let dx_shape = vec![n, fan_in];
            let dx = backend::gemm_mixed(
                &dx_spec,
                1.0,
                dy,
                &w_saved,
                dx_shape,
                ProductFormats::operands(mixed).stored_in(store),
            )?;
            let dx = gradient_as(dx, x_dtype)?;
            let dw_spec = GemmSpec::new(out, fan_in, n).transpose_a();
            let dw = backend::gemm_mixed(
                &dw_spec,
                1.0,
                dy,
                &x_saved,
                vec![out, fan_in],
                ProductFormats::operands(mixed),
            )?;
            let mut grads = vec![Some(dx), Some(dw)];
            if has_bias {
                grads.push(Some(backend::bias_grad(dy, n, out, 1)?));
            }
            Ok(grads)
        }
    }))
}
