//! 2-d convolution as im2col + GEMM over the whole batch.
//!
//! Forward:  col = im2col(x) [N, C·KH·KW, OH·OW];  y[n] = W [K, C·KH·KW] · col[n]  (+ bias).
//! Backward: dW = Σ_n dy[n] · col[n]ᵀ;  db = Σ dy over N and pixels;  dx = col2im(Wᵀ · dy[n]).
//! Each product is one batched GEMM launch, not one launch per image.

use crate::backend::{self, common_device};
use crate::error::{invalid, Result};
use crate::shape::{as_nchw, ConvGeometry, GemmSpec, Window2d};
use crate::tensor::Tensor;

/// The output of [`conv2d`] and what its backward needs.
#[derive(Clone, Debug)]
pub struct Conv2d {
    pub y: Tensor,
    pub col: Tensor,
    pub geometry: ConvGeometry,
    pub out_channels: usize,
}

/// Gradients of a convolution with respect to its input, weight and (optional) bias.
#[derive(Clone, Debug)]
pub struct Conv2dGrads {
    pub dx: Tensor,
    pub dw: Tensor,
    pub db: Option<Tensor>,
}

/// y = conv(x, w) + b for x [N,C,H,W], w [K,C,KH,KW], b [K]. The stride must tile the padded
/// input exactly (the lecture's rule); otherwise the error says why.
pub fn conv2d(x: &Tensor, w: &Tensor, b: Option<&Tensor>, window: Window2d) -> Result<Conv2d> {
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
    let g = ConvGeometry::new([n, c, h, wd], window, true)?;
    let col = backend::im2col(x, &g)?;
    let (rows, pixels) = (g.col_rows(), g.col_cols());
    let spec = GemmSpec::new(k, pixels, rows).batched(n, 0, rows * pixels, k * pixels);
    let mut y = backend::gemm(&spec, 1.0, w, &col, vec![n, k, g.out_h, g.out_w])?;
    if let Some(b) = b {
        common_device("conv2d", &[x, b])?;
        b.expect_shape("conv2d bias", &[k])?;
        backend::bias_add(&mut y, b, n, k, pixels)?;
    }
    Ok(Conv2d {
        y,
        col,
        geometry: g,
        out_channels: k,
    })
}

/// Gradients from dy [N,K,OH,OW]; `with_bias` says whether the forward had a bias.
pub fn conv2d_backward(
    dy: &Tensor,
    w: &Tensor,
    saved: &Conv2d,
    with_bias: bool,
) -> Result<Conv2dGrads> {
    let g = &saved.geometry;
    let k = saved.out_channels;
    let (rows, pixels) = (g.col_rows(), g.col_cols());
    dy.expect_shape("conv2d backward", saved.y.shape())?;
    common_device("conv2d backward", &[dy, w, &saved.col])?;
    // dW [K, rows] = Σ_n dy[n] [K, P] · col[n]ᵀ [P, rows]
    let dw_spec = GemmSpec::new(k, rows, pixels)
        .transpose_b()
        .batched(g.batch, k * pixels, rows * pixels, 0)
        .summed_over_batch();
    let dw = backend::gemm(&dw_spec, 1.0, dy, &saved.col, w.shape().to_vec())?;
    // dcol[n] [rows, P] = Wᵀ [rows, K] · dy[n] [K, P]
    let dcol_spec =
        GemmSpec::new(rows, pixels, k)
            .transpose_a()
            .batched(g.batch, 0, k * pixels, rows * pixels);
    let dcol = backend::gemm(&dcol_spec, 1.0, w, dy, vec![g.batch, rows, pixels])?;
    let dx = backend::col2im(&dcol, g)?;
    let db = if with_bias {
        Some(backend::bias_grad(dy, g.batch, k, pixels)?)
    } else {
        None
    };
    Ok(Conv2dGrads { dx, dw, db })
}
