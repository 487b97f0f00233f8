//! 2-d convolution, grouped or not, as im2col + GEMM over the whole batch.
//!
//! With G groups, group g maps input channels [g·C/G, (g+1)·C/G) to output channels
//! [g·K/G, (g+1)·K/G). The column rows of one image are ordered by channel, so each group's rows
//! are a contiguous block of C/G·KH·KW rows, and its weights [K/G, C/G·KH·KW] a contiguous block
//! of W; the groups are the GEMM's second batch level (`GemmSpec::grouped`).
//!
//! Forward:  col = im2col(x) [N, C·KH·KW, OH·OW];  y[n, g] = W_g · col[n, g]  (+ bias).
//! Backward: dW_g = Σ_n dy[n, g] · col[n, g]ᵀ;  db = Σ dy over N and pixels;
//!           dx = col2im(dcol) with dcol[n, g] = W_gᵀ · dy[n, g].
//! Each product is one GEMM launch over every image and group, not one launch per image.

use crate::autograd::record;
use crate::backend::{self, common_device};
use crate::error::{invalid, Result};
use crate::shape::{as_nchw, ConvGeometry, GemmSpec, Window2d};
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
    let g = conv.geometry;
    let col = backend::im2col(x, &g)?;
    let mut y = conv.apply_weight(w, &col)?;
    if let Some(b) = b {
        backend::bias_add(&mut y, b, g.batch, conv.out_channels, g.col_cols())?;
    }
    let mut inputs = vec![x, w];
    inputs.extend(b);
    let has_bias = b.is_some();
    // Save only what the wanted gradients read: W for dx, the columns for dW.
    let w_saved = x.needs_grad().then(|| w.detach());
    let col_saved = w.needs_grad().then_some(col);
    Ok(record("conv2d", &inputs, y, move || {
        move |dy: &Tensor| {
            dy.expect_shape("conv2d backward", &conv.output_shape())?;
            let dx = match &w_saved {
                Some(w) => Some(backend::col2im(&conv.apply_weight_transposed(w, dy)?, &g)?),
                None => None,
            };
            let dw = match &col_saved {
                Some(col) => Some(conv.weight_grad(dy, col)?),
                None => None,
            };
            let mut grads = vec![dx, dw];
            if has_bias {
                grads.push(Some(conv.bias_grad(dy)?));
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

/// The three matrix products of a grouped convolution with `geometry` (its input: N images of C
/// channels; its output: `out_channels` K channels of OH·OW pixels) and a weight
/// [K, C/G, KH, KW]. Each is one GEMM launch batched over the images and the groups.
/// Transposed convolution uses them too, as the adjoint: its forward is `apply_weight_transposed`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GroupedConv {
    pub geometry: ConvGeometry,
    pub out_channels: usize,
    pub groups: usize,
}

impl GroupedConv {
    /// (column rows of one image, column rows per group, pixels OH·OW, output channels per group).
    fn dims(&self) -> (usize, usize, usize, usize) {
        let g = &self.geometry;
        let rows = g.col_rows();
        (
            rows,
            rows / self.groups,
            g.col_cols(),
            self.out_channels / self.groups,
        )
    }

    /// [N, K, OH, OW].
    pub fn output_shape(&self) -> Vec<usize> {
        let g = &self.geometry;
        vec![g.batch, self.out_channels, g.out_h, g.out_w]
    }

    /// y [N, K, OH, OW] with y[n, g] = W_g [K/G, rows_g] · col[n, g] [rows_g, P].
    pub fn apply_weight(&self, w: &Tensor, col: &Tensor) -> Result<Tensor> {
        let (rows, rows_g, pixels, k_g) = self.dims();
        let k = self.out_channels;
        let spec = GemmSpec::new(k_g, pixels, rows_g)
            .batched(self.geometry.batch, 0, rows * pixels, k * pixels)
            .grouped(self.groups, k_g * rows_g, rows_g * pixels, k_g * pixels);
        backend::gemm(&spec, 1.0, w, col, self.output_shape())
    }

    /// dcol [N, rows, P] with dcol[n, g] = W_gᵀ [rows_g, K/G] · dy[n, g] [K/G, P].
    pub fn apply_weight_transposed(&self, w: &Tensor, dy: &Tensor) -> Result<Tensor> {
        let (rows, rows_g, pixels, k_g) = self.dims();
        let k = self.out_channels;
        let spec = GemmSpec::new(rows_g, pixels, k_g)
            .transpose_a()
            .batched(self.geometry.batch, 0, k * pixels, rows * pixels)
            .grouped(self.groups, k_g * rows_g, k_g * pixels, rows_g * pixels);
        backend::gemm(&spec, 1.0, w, dy, vec![self.geometry.batch, rows, pixels])
    }

    /// dW [K, C/G, KH, KW] with dW_g = Σ_n dy[n, g] [K/G, P] · col[n, g]ᵀ [P, rows_g].
    pub fn weight_grad(&self, dy: &Tensor, col: &Tensor) -> Result<Tensor> {
        let (rows, rows_g, pixels, k_g) = self.dims();
        let (g, k) = (&self.geometry, self.out_channels);
        let spec = GemmSpec::new(k_g, rows_g, pixels)
            .transpose_b()
            .batched(g.batch, k * pixels, rows * pixels, 0)
            .grouped(self.groups, k_g * pixels, rows_g * pixels, k_g * rows_g)
            .summed_over_batch();
        let shape = vec![k, g.in_channels / self.groups, g.kernel_h, g.kernel_w];
        backend::gemm(&spec, 1.0, dy, col, shape)
    }

    /// db [K] = Σ dy over the images and pixels.
    pub fn bias_grad(&self, dy: &Tensor) -> Result<Tensor> {
        let g = &self.geometry;
        backend::bias_grad(dy, g.batch, self.out_channels, g.col_cols())
    }
}
