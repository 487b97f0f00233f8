//! Transposed convolution (the 'deconvolution layer'), as the adjoint of a grouped convolution.
//!
//! `conv_transpose2d(x, w)` is the gradient of `conv2d_groups(y, w)` with respect to its input y,
//! applied to x: with the *forward* convolution whose input is y [N, C_out, OH, OW] and whose output
//! is x [N, C_in, H, W] (weight [C_in, C_out/G, KH, KW], the same layout PyTorch's
//! `conv_transpose2d` uses),
//!
//! Forward:  y = col2im(dcol) (+ bias) with dcol[n, g] = W_gᵀ · x[n, g];
//! Backward: col = im2col(dy);  dx[n, g] = W_g · col[n, g];  dW_g = Σ_n x[n, g] · col[n, g]ᵀ;
//!           db = Σ dy over N and pixels.
//!
//! Output size per axis: (H − 1)·stride − pad_begin − pad_end + dilation·(KH − 1) +
//! output_padding + 1. The output padding extends the bottom (right) edge: it gives back rows
//! that pad_end would crop, and rows beyond that, which no window of the forward convolution
//! reads, get only the bias.

use super::conv::{check_groups, check_kernel};
use crate::backend::ProductFormats;
use crate::backend::{self, common_device, RawTensor};
use crate::core::dtype::DType;
use crate::core::error::{invalid, Result};
use crate::core::shape::{as_nchw, ConvGeometry, GroupedConv, Window2d};
use crate::ops::cast::{as_activation, gradient_as};
use crate::tensor::record;
use crate::tensor::Tensor;

/// PyTorch's `conv_transpose2d(x, w, b, stride, padding, output_padding, groups, dilation)`:
/// x [N, C_in, H, W], w [C_in, C_out/groups, KH, KW], b [C_out]; `window` gives the kernel (which
/// must be the weight's), stride, per-side padding and dilation. `output_padding` must be smaller
/// than the stride or the dilation of its axis; `groups` must divide C_in.
pub fn conv_transpose2d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    window: Window2d,
    output_padding: (usize, usize),
    groups: usize,
) -> Result<Tensor> {
    let conv = checked_conv_transpose(x, w, b, window, output_padding, groups)?;
    let g = conv.geometry;
    let out_shape = [g.batch, g.in_channels, g.in_h, g.in_w];
    // The precision of the products, kept for the backward pass (see crate::autocast).
    let mixed = crate::autocast::current();
    // The weight as the products read it (rounded once for both passes, as autocast's cache).
    let w_product = backend::product_operand(w, mixed)?;
    let store = crate::autocast::activation_format();
    let y = match b {
        // Without a bias col2im stores y in the activation format itself.
        None => backend::conv_input_grad(
            &w_product,
            x,
            &conv,
            ProductFormats::operands(mixed).stored_in(store),
        )?,
        Some(b) => {
            let mut y =
                backend::conv_input_grad(&w_product, x, &conv, ProductFormats::operands(mixed))?;
            backend::bias_add(&mut y, b, g.batch, g.in_channels, g.in_h * g.in_w)?;
            as_activation(y)?
        }
    };
    let mut inputs = vec![x, w];
    inputs.extend(b);
    let has_bias = b.is_some();
    // Save only what the wanted gradients read: W for dx, x for dW.
    let w_saved = x.needs_grad().then(|| w_product.clone());
    let x_saved = w.needs_grad().then(|| x.detach());
    let x_dtype = x.dtype();
    Ok(record("conv_transpose2d", &inputs, y, move || {
        move |dy: &RawTensor| {
            dy.expect_shape("conv_transpose2d backward", &out_shape)?;
            let dx = match &w_saved {
                Some(w) => {
                    // A 16-bit input gets its gradient in its format, written so by the GEMM.
                    let store = matches!(x_dtype, DType::BF16 | DType::F16).then_some(x_dtype);
                    let dx = backend::conv_forward(
                        dy,
                        w,
                        None,
                        &conv,
                        ProductFormats::operands(mixed).stored_in(store),
                    )?;
                    Some(gradient_as(dx, x_dtype)?)
                }
                None => None,
            };
            let dw = match &x_saved {
                Some(x) => Some(backend::conv_weight_grad(dy, x, &conv, mixed)?),
                None => None,
            };
            let mut grads = vec![dx, dw];
            if has_bias {
                grads.push(Some(backend::bias_grad(
                    dy,
                    g.batch,
                    g.in_channels,
                    g.in_h * g.in_w,
                )?));
            }
            Ok(grads)
        }
    }))
}

/// Validates the operands and builds the forward convolution whose input is the output y.
fn checked_conv_transpose(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    window: Window2d,
    output_padding: (usize, usize),
    groups: usize,
) -> Result<GroupedConv> {
    const OP: &str = "conv_transpose2d";
    common_device(OP, &[x, w])?;
    let [n, c_in, h, wd] = as_nchw(OP, x.shape())?;
    let [w_in, c_out_g, kh, kw] = as_nchw("conv_transpose2d weight", w.shape())?;
    if [n, c_in, h, wd].contains(&0) {
        return Err(invalid(
            "input shape",
            format!("{OP}: {:?} has a zero dimension", x.shape()),
        ));
    }
    check_groups(groups, &[(c_in, "input channels")])?;
    if w_in != c_in {
        return Err(invalid(
            "conv_transpose2d weight",
            format!("weight [C_in, C_out/groups, KH, KW] expects {w_in} input channels but the input has {c_in}"),
        ));
    }
    check_kernel("conv_transpose2d window", window, (kh, kw))?;
    let c_out = c_out_g * groups;
    if let Some(b) = b {
        common_device(OP, &[x, b])?;
        b.expect_shape("conv_transpose2d bias", &[c_out])?;
    }
    let out_h = output_len("height", h, window, 0, output_padding.0)?;
    let out_w = output_len("width", wd, window, 1, output_padding.1)?;
    // The forward convolution over y [N, C_out, OH, OW] with the same kernel, stride, dilation and
    // leading padding. Its end padding is what is left of pad_end after the output padding's extra
    // rows; when those rows outnumber pad_end they lie past every window, and the floor in the
    // output size (or, when output_padding ≥ stride, the crop below) leaves them unread.
    let mut forward = window;
    forward.padding_end = (
        window.padding_end.0.saturating_sub(output_padding.0),
        window.padding_end.1.saturating_sub(output_padding.1),
    );
    let mut geometry = ConvGeometry::new([n, c_out, out_h, out_w], forward, false)?;
    if geometry.out_h < h || geometry.out_w < wd {
        return Err(invalid(
            "conv_transpose2d geometry",
            format!("the forward convolution of {geometry:?} does not reach the input's {h}x{wd}"),
        ));
    }
    (geometry.out_h, geometry.out_w) = (h, wd);
    Ok(GroupedConv {
        geometry,
        out_channels: c_in,
        groups,
    })
}

/// (in − 1)·stride − pad_begin − pad_end + dilation·(kernel − 1) + output_padding + 1 along `axis`
/// (0 = height, 1 = width), or an error when the parameters are invalid or the size is not positive.
fn output_len(
    name: &'static str,
    input: usize,
    window: Window2d,
    axis: usize,
    output_padding: usize,
) -> Result<usize> {
    let pick = |p: (usize, usize)| if axis == 0 { p.0 } else { p.1 };
    let (kernel, stride, dilation) = (
        pick(window.kernel),
        pick(window.stride),
        pick(window.dilation),
    );
    let (pad_begin, pad_end) = (pick(window.padding), pick(window.padding_end));
    for (value, what) in [
        (kernel, "kernel size"),
        (stride, "stride"),
        (dilation, "dilation"),
    ] {
        if value == 0 {
            return Err(invalid(what, format!("{name}: must be at least 1")));
        }
    }
    if output_padding >= stride && output_padding >= dilation {
        return Err(invalid(
            "output padding",
            format!(
                "{name}: output_padding {output_padding} must be smaller than the stride {stride} or the dilation {dilation}"
            ),
        ));
    }
    let full = (input as u128 - 1) * stride as u128
        + dilation as u128 * (kernel as u128 - 1)
        + output_padding as u128
        + 1;
    let cut = pad_begin as u128 + pad_end as u128;
    if full <= cut {
        return Err(invalid(
            "padding",
            format!(
                "{name}: padding {pad_begin} + {pad_end} leaves no output ((input {input} − 1)·stride {stride} + dilation {dilation}·(kernel {kernel} − 1) + output_padding {output_padding} + 1 = {full})"
            ),
        ));
    }
    usize::try_from(full - cut).map_err(|_| {
        invalid(
            "output size",
            format!("{name}: {} is too large", full - cut),
        )
    })
}
