//! 2-d pooling: max (with argmax; the gradient goes only to the element that won each window),
//! average, L2 norm, global average and adaptive average. Output sizes floor like PyTorch's, or
//! round up with `ceil_mode`; every window is a [`PoolWindow`] (a `Window2d`: stride, per-side
//! padding, dilation; and `ceil_mode`).

use crate::backend::{self, RawTensor};
use crate::core::error::Result;
use crate::core::shape::{AdaptivePool2d, PoolWindow};
use crate::tensor::record;
use crate::tensor::Tensor;

/// Max over each `window` of `x` [N,C,H,W] (a [`Window2d`](crate::core::shape::Window2d), or a
/// [`PoolWindow`] from `window.ceil_mode()`); output sizes floor like PyTorch's, or round up with
/// `ceil_mode` (PyTorch's rule: the last window may overhang the padded input by up to
/// `stride − 1`, even a window larger than the whole input, and takes the max of the elements it
/// covers; a last window that would start past the input and the leading padding is dropped).
/// Padding never wins; ties go to the first element in row-major window order. As PyTorch, no
/// side's padding may exceed half the window's span; a dilated window whose taps all fall in the
/// padding gives −∞ and passes no gradient (PyTorch's `max_pool2d`).
pub fn max_pool2d(x: &Tensor, window: impl Into<PoolWindow>) -> Result<Tensor> {
    let window = window.into();
    let g = window.geometry("max_pool2d", x.shape())?;
    window.window.check_pool_padding("max_pool2d")?;
    let (y, argmax) = backend::maxpool_fwd(x, &g)?;
    Ok(record("max_pool2d", &[x], y, move || {
        move |dy: &RawTensor| Ok(vec![Some(backend::maxpool_bwd(dy, &argmax, &g)?)])
    }))
}

/// Mean over each `window` of `x` [N,C,H,W] → [N,C,OH,OW], with PyTorch's `avg_pool2d` semantics
/// (no divisor override): the divisor is the window size `KH·KW` (padding included) when
/// `count_include_pad`, else the number of taps inside the input. With `ceil_mode`
/// (`window.ceil_mode()`), a last window that overhangs the end counts, when `count_include_pad`,
/// only its taps inside the padded input (the input and its trailing padding), as PyTorch's.
///
/// Dilation is supported (PyTorch's `avg_pool2d` has none): a dilated window has `KH·KW` taps
/// spread over its span, and the divisor counts taps, not the span. As PyTorch, no side's padding
/// may exceed half the window's span; when `!count_include_pad`, a dilated window whose taps all
/// fall in the padding gives 0 and passes no gradient.
pub fn avg_pool2d(
    x: &Tensor,
    window: impl Into<PoolWindow>,
    count_include_pad: bool,
) -> Result<Tensor> {
    let window = window.into();
    let g = window.geometry("avg_pool2d", x.shape())?;
    window.window.check_pool_padding("avg_pool2d")?;
    let y = backend::avgpool_fwd(x, &g, count_include_pad)?;
    Ok(record("avg_pool2d", &[x], y, move || {
        move |dy: &RawTensor| Ok(vec![Some(backend::avgpool_bwd(dy, &g, count_include_pad)?)])
    }))
}

/// L2-norm pooling of `x` [N,C,H,W] → [N,C,OH,OW]: `y = sqrt(Σ x²)` over the taps of each
/// `window` inside the input (padding counts as 0). This is PyTorch's `LPPool2d` with `p = 2`,
/// which sums rather than averages; unlike it, padding and dilation are accepted. `ceil_mode`
/// rounds the output size up as for max pooling, and a window that overhangs the input sums only
/// the taps it covers (PyTorch's `lp_pool2d`, an average pool times `KH·KW`, would scale such a
/// window up by `KH·KW` over its taps).
///
/// Gradient: `dx = Σ dy · x / y` over the windows containing each pixel. Where `y = 0` (every tap
/// of the window is 0) the norm has no derivative and that window passes 0 gradient.
pub fn l2_pool2d(x: &Tensor, window: impl Into<PoolWindow>) -> Result<Tensor> {
    let g = window.into().geometry("l2_pool2d", x.shape())?;
    let y = backend::l2pool_fwd(x, &g)?;
    let (x_saved, y_saved) = (x.detach(), y.clone());
    Ok(record("l2_pool2d", &[x], y, move || {
        move |dy: &RawTensor| Ok(vec![Some(backend::l2pool_bwd(&x_saved, &y_saved, dy, &g)?)])
    }))
}

/// Global average pooling: the mean of each plane of `x` [N,C,H,W], as `[N,C,1,1]` (the shape of
/// PyTorch's `AdaptiveAvgPool2d(1)`, so it can feed another NCHW op; `ops::flatten` gives [N,C]).
pub fn global_avg_pool2d(x: &Tensor) -> Result<Tensor> {
    let y = backend::global_avgpool_fwd(x)?;
    let shape = x.shape().to_vec();
    Ok(record("global_avg_pool2d", &[x], y, move || {
        move |dy: &RawTensor| Ok(vec![Some(backend::global_avgpool_bwd(dy, &shape)?)])
    }))
}

/// Adaptive average pooling of `x` [N,C,H,W] to [N,C,OH,OW] with `output` = (OH, OW), PyTorch's
/// `adaptive_avg_pool2d`: output row `i` averages input rows `[⌊i·H/OH⌋, ⌈(i + 1)·H/OH⌉)`, and
/// likewise for columns, so windows overlap and differ in size when OH does not divide H, and an
/// output larger than the input repeats rows. `(1, 1)` is a global average; a zero output size or
/// a zero dimension of `x` is an error.
pub fn adaptive_avg_pool2d(x: &Tensor, output: (usize, usize)) -> Result<Tensor> {
    let a = AdaptivePool2d::new("adaptive_avg_pool2d", x.shape(), output)?;
    let y = backend::adaptive_avgpool_fwd(x, &a)?;
    Ok(record("adaptive_avg_pool2d", &[x], y, move || {
        move |dy: &RawTensor| Ok(vec![Some(backend::adaptive_avgpool_bwd(dy, &a)?)])
    }))
}
