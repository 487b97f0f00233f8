//! Fully connected layer: y = x·Wᵀ + b for x [N, in], W [out, in] (PyTorch's layout), b [out].

use crate::backend::{self, common_device};
use crate::error::{invalid, Result};
use crate::shape::GemmSpec;
use crate::tensor::Tensor;

/// Gradients of a linear layer.
#[derive(Clone, Debug)]
pub struct LinearGrads {
    pub dx: Tensor,
    pub dw: Tensor,
    pub db: Option<Tensor>,
}

fn dims(x: &Tensor, w: &Tensor) -> Result<(usize, usize, usize)> {
    let (&[n, fan_in], &[out, w_in]) = (x.shape(), w.shape()) else {
        return Err(invalid(
            "linear shapes",
            format!(
                "expected x [N, in] and W [out, in], got {:?} and {:?}",
                x.shape(),
                w.shape()
            ),
        ));
    };
    if fan_in != w_in {
        return Err(invalid(
            "linear shapes",
            format!("x has {fan_in} features but W expects {w_in}"),
        ));
    }
    Ok((n, fan_in, out))
}

/// y = x·Wᵀ + b.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    common_device("linear", &[x, w])?;
    let (n, fan_in, out) = dims(x, w)?;
    let spec = GemmSpec::new(n, out, fan_in).transpose_b();
    let mut y = backend::gemm(&spec, 1.0, x, w, vec![n, out])?;
    if let Some(b) = b {
        common_device("linear", &[x, b])?;
        b.expect_shape("linear bias", &[out])?;
        backend::bias_add(&mut y, b, n, out, 1)?;
    }
    Ok(y)
}

/// dx = dy·W, dW = dyᵀ·x, db = Σ_n dy.
pub fn linear_backward(
    dy: &Tensor,
    x: &Tensor,
    w: &Tensor,
    with_bias: bool,
) -> Result<LinearGrads> {
    common_device("linear backward", &[dy, x, w])?;
    let (n, fan_in, out) = dims(x, w)?;
    dy.expect_shape("linear backward", &[n, out])?;
    let dx = backend::gemm(&GemmSpec::new(n, fan_in, out), 1.0, dy, w, vec![n, fan_in])?;
    let dw = backend::gemm(
        &GemmSpec::new(out, fan_in, n).transpose_a(),
        1.0,
        dy,
        x,
        vec![out, fan_in],
    )?;
    let db = if with_bias {
        Some(backend::bias_grad(dy, n, out, 1)?)
    } else {
        None
    };
    Ok(LinearGrads { dx, dw, db })
}
