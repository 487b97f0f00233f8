//! 2-d convolution as im2col + GEMM over the whole batch.
//!
//! Forward:  col = im2col(x) [N, C·KH·KW, OH·OW];  y[n] = W [K, C·KH·KW] · col[n]  (+ bias).
//! Backward: dW = Σ_n dy[n] · col[n]ᵀ;  db = Σ dy over N and pixels;  dx = col2im(Wᵀ · dy[n]).
//! Each product is one batched GEMM launch, not one launch per image.

use crate::autograd::record;
use crate::backend::{self, common_device};
use crate::error::{invalid, Result};
use crate::shape::{as_nchw, ConvGeometry, GemmSpec, Window2d};
use crate::tensor::Tensor;

/// y = conv(x, w) + b for x [N,C,H,W], w [K,C,KH,KW], b [K]. The stride must tile the padded
/// input exactly (the lecture's rule); otherwise the error says why.
pub fn conv2d(x: &Tensor, w: &Tensor, b: Option<&Tensor>, window: Window2d) -> Result<Tensor> {
    let (g, k) = geometry(x, w, b, window)?;
    let col = backend::im2col(x, &g)?;
    let (rows, pixels) = (g.col_rows(), g.col_cols());
    let spec = GemmSpec::new(k, pixels, rows).batched(g.batch, 0, rows * pixels, k * pixels);
    let mut y = backend::gemm(&spec, 1.0, w, &col, vec![g.batch, k, g.out_h, g.out_w])?;
    if let Some(b) = b {
        backend::bias_add(&mut y, b, g.batch, k, pixels)?;
    }
    let mut inputs = vec![x, w];
    inputs.extend(b);
    let (w_saved, x_needs_grad, has_bias) = (w.detach(), x.needs_grad(), b.is_some());
    Ok(record("conv2d", &inputs, y, move || {
        move |dy: &Tensor| {
            let grads = conv2d_backward(dy, &w_saved, &col, &g, x_needs_grad, has_bias)?;
            let mut out = vec![grads.dx, Some(grads.dw)];
            if has_bias {
                out.push(grads.db);
            }
            Ok(out)
        }
    }))
}

fn geometry(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    window: Window2d,
) -> Result<(ConvGeometry, usize)> {
    common_device("conv2d", &[x, w])?;
    let [n, c, h, wd] = as_nchw("conv2d", x.shape())?;
    let [k, wc, kh, kw] = as_nchw("conv2d weight", w.shape())?;
    if wc != c {
        return Err(invalid(
            "conv2d weight",
            format!("weight expects {wc} input channels but the input has {c}"),
        ));
    }
    if window.kernel != (kh, kw) {
        return Err(invalid(
            "conv2d window",
            format!(
                "window kernel {:?} differs from the weight's {:?}",
                window.kernel,
                (kh, kw)
            ),
        ));
    }
    if let Some(b) = b {
        common_device("conv2d", &[x, b])?;
        b.expect_shape("conv2d bias", &[k])?;
    }
    Ok((ConvGeometry::new([n, c, h, wd], window, true)?, k))
}

/// Gradients of a convolution.
pub(crate) struct Conv2dGrads {
    pub dx: Option<Tensor>,
    pub dw: Tensor,
    pub db: Option<Tensor>,
}

/// The backward rule, from dy [N,K,OH,OW], the weight and the forward pass's columns.
pub(crate) fn conv2d_backward(
    dy: &Tensor,
    w: &Tensor,
    col: &Tensor,
    g: &ConvGeometry,
    want_dx: bool,
    want_db: bool,
) -> Result<Conv2dGrads> {
    let k = w.shape()[0];
    let (rows, pixels) = (g.col_rows(), g.col_cols());
    dy.expect_shape("conv2d backward", &[g.batch, k, g.out_h, g.out_w])?;
    // dW [K, rows] = Σ_n dy[n] [K, P] · col[n]ᵀ [P, rows]
    let dw_spec = GemmSpec::new(k, rows, pixels)
        .transpose_b()
        .batched(g.batch, k * pixels, rows * pixels, 0)
        .summed_over_batch();
    let dw = backend::gemm(&dw_spec, 1.0, dy, col, w.shape().to_vec())?;
    let dx = if want_dx {
        // dcol[n] [rows, P] = Wᵀ [rows, K] · dy[n] [K, P]
        let dcol_spec = GemmSpec::new(rows, pixels, k).transpose_a().batched(
            g.batch,
            0,
            k * pixels,
            rows * pixels,
        );
        let dcol = backend::gemm(&dcol_spec, 1.0, w, dy, vec![g.batch, rows, pixels])?;
        Some(backend::col2im(&dcol, g)?)
    } else {
        None
    };
    let db = if want_db {
        Some(backend::bias_grad(dy, g.batch, k, pixels)?)
    } else {
        None
    };
    Ok(Conv2dGrads { dx, dw, db })
}
