//! 2-d convolution, grouped or not, as im2col + GEMM (the products of [`GroupedConv`]).
//!
//! Forward:  col = im2col(x) [N, C·KH·KW, OH·OW];  y[n, g] = W_g · col[n, g]  (+ bias).
//! Backward: dW_g = Σ_n dy[n, g] · col[n, g]ᵀ (col recomputed from the saved x);
//!           db = Σ dy over N and pixels;  dx = col2im(dcol) with dcol[n, g] = W_gᵀ · dy[n, g].
//! On the GPU each product is one GEMM launch over every image and group, not one per image.

use crate::backend::ProductFormats;
use crate::backend::{self, common_device, RawTensor};
use crate::core::dtype::DType;
use crate::core::error::{invalid, Result};
use crate::core::shape::{as_nchw, ConvGeometry, GroupedConv, Window2d};
use crate::ops::cast::gradient_as;
use crate::tensor::record;
use crate::tensor::Tensor;

/// y = conv(x, w) + b for x [N,C,H,W], w [K,C,KH,KW], b [K]. The stride must tile the padded
/// input exactly (the lecture's rule); otherwise the error says why.
pub fn conv2d(x: &Tensor, w: &Tensor, b: Option<&Tensor>, window: Window2d) -> Result<Tensor> {
    conv2d_groups(x, w, b, window, 1)
}

/// Grouped convolution, PyTorch's `conv2d(x, w, b, groups=groups)`: x [N,C,H,W],
/// w [K, C/groups, KH, KW], b [K]; `groups` must divide both C and K. `groups == C` is the
/// depthwise convolution (K = m·C gives a channel multiplier m). The stride must tile the padded
/// input exactly, as for [`conv2d`].
pub fn conv2d_groups(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    window: Window2d,
    groups: usize,
) -> Result<Tensor> {
    let conv = checked_conv(x, w, b, window, groups)?;
    // The precision of the products, kept for the backward pass, and y stored in the activation
    // format when activations are 16-bit (written so by the GEMM); see crate::autocast.
    let formats = backend::ProductFormats::of_autocast();
    let mixed = formats.operands;
    // The weight as the products read it (rounded once for both passes, as autocast's cache).
    let w_product = backend::product_operand(w, mixed)?;
    let y = backend::conv_forward(x, &w_product, b.map(Tensor::raw), &conv, formats)?;
    let mut inputs = vec![x, w];
    inputs.extend(b);
    let has_bias = b.is_some();
    // Save only what the wanted gradients read: W for dx, x for dW (whose columns the backward
    // recomputes, as cuDNN does, instead of keeping KH·KW copies of x alive until then).
    let w_saved = x.needs_grad().then(|| w_product.clone());
    let x_saved = w.needs_grad().then(|| x.detach());
    let x_dtype = x.dtype();
    Ok(record("conv2d", &inputs, y, move || {
        move |dy: &RawTensor| {
            dy.expect_shape("conv2d backward", &conv.output_shape())?;
            let dx = match &w_saved {
                Some(w) => {
                    // A 16-bit input gets its gradient in its format, written so by col2im.
                    let store = matches!(x_dtype, DType::BF16 | DType::F16).then_some(x_dtype);
                    let dx = backend::conv_input_grad(
                        w,
                        dy,
                        &conv,
                        ProductFormats::operands(mixed).stored_in(store),
                    )?;
                    Some(gradient_as(dx, x_dtype)?)
                }
                None => None,
            };
            let dw = match &x_saved {
                Some(x) => Some(backend::conv_weight_grad(x, dy, &conv, mixed)?),
                None => None,
            };
            let mut grads = vec![dx, dw];
            if has_bias {
                let g = &conv.geometry;
                grads.push(Some(backend::bias_grad(
                    dy,
                    g.batch,
                    conv.out_channels,
                    g.col_cols(),
                )?));
            }
            Ok(grads)
        }
    }))
}

/// Validates a (grouped) convolution's operands and returns its products.
fn checked_conv(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    window: Window2d,
    groups: usize,
) -> Result<GroupedConv> {
    common_device("conv2d", &[x, w])?;
    let [n, c, h, wd] = as_nchw("conv2d", x.shape())?;
    let [k, wc, kh, kw] = as_nchw("conv2d weight", w.shape())?;
    check_groups(
        groups,
        &[
            (c, "input channels"),
            (k, "output channels (the weight's first dimension)"),
        ],
    )?;
    if wc * groups != c {
        let why = if groups == 1 {
            format!("weight expects {wc} input channels but the input has {c}")
        } else {
            format!(
                "weight expects {wc} input channels per group but the input's {c} channels in {groups} groups give {} per group",
                c / groups
            )
        };
        return Err(invalid("conv2d weight", why));
    }
    check_kernel("conv2d window", window, (kh, kw))?;
    if let Some(b) = b {
        common_device("conv2d", &[x, b])?;
        b.expect_shape("conv2d bias", &[k])?;
    }
    Ok(GroupedConv {
        geometry: ConvGeometry::new([n, c, h, wd], window, !window.floor_output)?,
        out_channels: k,
        groups,
    })
}

/// `groups` must be at least 1 and divide each of the named channel counts.
pub(crate) fn check_groups(groups: usize, counts: &[(usize, &str)]) -> Result<()> {
    if groups == 0 {
        return Err(invalid("groups", "must be at least 1"));
    }
    for &(count, name) in counts {
        if count % groups != 0 {
            return Err(invalid(
                "groups",
                format!("{groups} groups do not divide the {count} {name}"),
            ));
        }
    }
    Ok(())
}

/// The window's kernel must be the weight's spatial size.
pub(crate) fn check_kernel(
    what: &'static str,
    window: Window2d,
    weight_kernel: (usize, usize),
) -> Result<()> {
    if window.kernel != weight_kernel {
        return Err(invalid(
            what,
            format!(
                "window kernel {:?} differs from the weight's {:?}",
                window.kernel, weight_kernel
            ),
        ));
    }
    Ok(())
}
