//! Shapes and the output-size formulas of convolution and pooling, in one place.

use crate::core::error::{invalid, Result};

/// Geometry of a 2-d convolution over an NCHW batch (also used by im2col/col2im).
///
/// Output size per axis: `(in + 2·pad − dil·(k − 1) − 1) / stride + 1`, which must divide exactly
/// (the lecture's rule: a 7x7 input with a 3x3 filter and stride 3 does not fit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    pub batch: usize,
    pub in_channels: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    /// Zero padding before the first row / column (top, left).
    pub pad_h: usize,
    pub pad_w: usize,
    /// Zero padding after the last row / column (bottom, right); differs from the leading padding
    /// only for asymmetric ('same' with an even window) padding.
    pub pad_h_end: usize,
    pub pad_w_end: usize,
    pub dilation_h: usize,
    pub dilation_w: usize,
    pub out_h: usize,
    pub out_w: usize,
}

/// The user-facing knobs of a convolution or pooling window: (height, width) pairs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window2d {
    pub kernel: (usize, usize),
    pub stride: (usize, usize),
    /// Zero padding before the input (top, left).
    pub padding: (usize, usize),
    /// Zero padding after the input (bottom, right).
    pub padding_end: (usize, usize),
    pub dilation: (usize, usize),
    /// Convolution only: let the output size round down when the stride does not tile the padded
    /// input (PyTorch's behaviour; the last rows/columns are then never read). Off by default, so a
    /// window that does not fit is an error (the lecture's rule). Pooling rounds down, or up with
    /// [`PoolWindow`]'s `ceil_mode`.
    pub floor_output: bool,
}

impl Window2d {
    /// A window with the same padding on both sides of each axis.
    pub fn new(kernel: (usize, usize), stride: (usize, usize), padding: (usize, usize)) -> Self {
        Window2d {
            kernel,
            stride,
            padding,
            padding_end: padding,
            dilation: (1, 1),
            floor_output: false,
        }
    }

    /// A square window: kernel `k`, stride `s`, padding `p` on every side, no dilation.
    pub fn square(k: usize, s: usize, p: usize) -> Self {
        Window2d::new((k, k), (s, s), (p, p))
    }

    /// 'valid': no padding.
    pub fn valid(kernel: (usize, usize), stride: (usize, usize)) -> Self {
        Window2d::new(kernel, stride, (0, 0))
    }

    /// 'same' at stride 1: the output has the input's size. An odd total padding puts the extra row
    /// or column at the end (bottom, right), as PyTorch and TensorFlow do.
    pub fn same(kernel: (usize, usize), dilation: (usize, usize)) -> Self {
        let total = |k: usize, d: usize| d * k.saturating_sub(1);
        let (th, tw) = (total(kernel.0, dilation.0), total(kernel.1, dilation.1));
        Window2d {
            kernel,
            stride: (1, 1),
            padding: (th / 2, tw / 2),
            padding_end: (th - th / 2, tw - tw / 2),
            dilation,
            floor_output: false,
        }
    }

    /// The same window with dilation `d` on both axes.
    pub fn with_dilation(mut self, d: usize) -> Self {
        self.dilation = (d, d);
        self
    }

    /// The same window with output sizes rounded down when the stride does not tile the input.
    pub fn floored(mut self) -> Self {
        self.floor_output = true;
        self
    }

    /// The same window with explicit per-side padding.
    pub fn with_padding(mut self, top: usize, bottom: usize, left: usize, right: usize) -> Self {
        self.padding = (top, left);
        self.padding_end = (bottom, right);
        self
    }

    /// PyTorch's rule for pooling windows: no side's padding may exceed half the window's
    /// (dilated) span, `(dil·(k − 1) + 1) / 2`, so every window reaches the input. Call it after
    /// [`ConvGeometry::new`] has checked the kernel and dilation.
    pub fn check_pool_padding(&self, op: &str) -> Result<()> {
        let axes = [
            ("height", "top", "bottom", 0),
            ("width", "left", "right", 1),
        ];
        for (axis, before, after, i) in axes {
            let pick = |p: (usize, usize)| if i == 0 { p.0 } else { p.1 };
            let (kernel, dilation) = (pick(self.kernel), pick(self.dilation));
            let span = dilation * kernel.saturating_sub(1) + 1;
            let limit = span / 2;
            for (side, pad) in [
                (before, pick(self.padding)),
                (after, pick(self.padding_end)),
            ] {
                if pad > limit {
                    let dilated = if dilation > 1 {
                        format!(" (dilation {dilation}: span {span})")
                    } else {
                        String::new()
                    };
                    return Err(invalid(
                        "padding",
                        format!(
                            "{op}: {side} padding {pad} on the {axis} exceeds half the kernel size \
                             {kernel}{dilated}, at most {limit} (PyTorch: pad should be at most \
                             half of effective kernel size)"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// How an output size rounds when the stride does not tile the padded input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputRounding {
    /// The stride must tile the padded input exactly (the lecture's rule for convolutions).
    Exact,
    /// Round down: trailing rows or columns that no whole window covers are never read (PyTorch's
    /// default).
    Floor,
    /// PyTorch's `ceil_mode`: round up, so the last window may overhang the end of the padded
    /// input by up to `stride − 1` (it reads only the input and the padding it reaches), even when
    /// the window is larger than the padded input; a last window that would start at or beyond the
    /// input's end plus the leading padding is dropped, so every window starts inside the input or
    /// the leading padding.
    Ceil,
}

/// One axis of a window: kernel, stride, dilation and the zero padding on each side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AxisWindow {
    pub kernel: usize,
    pub stride: usize,
    pub dilation: usize,
    pub pad_begin: usize,
    pub pad_end: usize,
}

/// Output length of one axis (the one formula for convolution and pooling, PyTorch's
/// `pooling_output_shape_pad_lr`), or an error saying why the window does not fit:
/// `(input + pad_begin + pad_end − span + slack) / stride + 1` with `span = dilation·(kernel − 1) + 1`,
/// rounded down; `slack` is `stride − 1` under [`OutputRounding::Ceil`] (rounding up, so the last
/// window may overhang the padded input, even when the window is larger than it) and 0 otherwise.
/// Under `Ceil`, a last window that would start at or past `input + pad_begin` is dropped. An
/// output shorter than 1 is an error (PyTorch: "Output size is too small").
pub fn window_output_len(
    axis: &'static str,
    input: usize,
    w: AxisWindow,
    rounding: OutputRounding,
) -> Result<usize> {
    let AxisWindow {
        kernel,
        stride,
        dilation,
        pad_begin,
        pad_end,
    } = w;
    if kernel == 0 {
        return Err(invalid(
            "kernel size",
            format!("{axis}: must be at least 1"),
        ));
    }
    if stride == 0 {
        return Err(invalid("stride", format!("{axis}: must be at least 1")));
    }
    if dilation == 0 {
        return Err(invalid("dilation", format!("{axis}: must be at least 1")));
    }
    let span = dilation * (kernel - 1) + 1;
    let pad = pad_begin + pad_end;
    let padded = input + pad;
    let slack = match rounding {
        OutputRounding::Ceil => stride - 1,
        OutputRounding::Exact | OutputRounding::Floor => 0,
    };
    if span > padded + slack {
        let overhang = match rounding {
            OutputRounding::Ceil => format!(
                " plus the {slack} that ceil_mode lets the window overhang it (stride {stride} − 1)"
            ),
            OutputRounding::Exact | OutputRounding::Floor => String::new(),
        };
        return Err(invalid(
            "kernel size",
            format!(
                "{axis}: output size is too small: the window spans {span} but the padded \
                 input is only {padded} (input {input} + padding {pad}){overhang}"
            ),
        ));
    }
    let steps = padded + slack - span;
    match rounding {
        OutputRounding::Exact if steps % stride != 0 => Err(invalid(
            "stride",
            format!(
                "{axis}: stride {stride} does not fit: (input {input} + padding {pad} − window {span}) / {stride} is not an integer"
            ),
        )),
        OutputRounding::Exact | OutputRounding::Floor => Ok(steps / stride + 1),
        OutputRounding::Ceil => {
            let out = steps / stride + 1;
            // PyTorch's pooling_output_shape: the last window must start before input + pad_begin.
            // Never drops the only window: window 0 starts at 0 < input + pad_begin.
            Ok(if (out - 1) * stride >= input + pad_begin {
                out - 1
            } else {
                out
            })
        }
    }
}

/// A pooling window and whether its output size rounds up (PyTorch's `ceil_mode`). A plain
/// [`Window2d`] converts to one that rounds down, so the pooling ops take either.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolWindow {
    pub window: Window2d,
    pub ceil_mode: bool,
}

impl From<Window2d> for PoolWindow {
    fn from(window: Window2d) -> Self {
        PoolWindow {
            window,
            ceil_mode: false,
        }
    }
}

impl Window2d {
    /// This window as a pooling window with PyTorch's `ceil_mode = True`.
    pub fn ceil_mode(self) -> PoolWindow {
        PoolWindow {
            window: self,
            ceil_mode: true,
        }
    }
}

impl PoolWindow {
    /// The geometry of this window over an NCHW input of `shape` (`op` names the caller in errors).
    pub fn geometry(&self, op: &'static str, shape: &[usize]) -> Result<ConvGeometry> {
        let rounding = match self.ceil_mode {
            true => OutputRounding::Ceil,
            false => OutputRounding::Floor,
        };
        ConvGeometry::with_rounding(as_nchw(op, shape)?, self.window, rounding)
    }
}

impl ConvGeometry {
    /// Geometry for an input of shape `[n, c, h, w]` under `window`.
    ///
    /// `require_exact` enforces the lecture's rule that the stride must tile the padded input
    /// exactly; frameworks such as PyTorch floor instead, which `require_exact = false` gives.
    pub fn new(input: [usize; 4], window: Window2d, require_exact: bool) -> Result<Self> {
        let rounding = match require_exact {
            true => OutputRounding::Exact,
            false => OutputRounding::Floor,
        };
        ConvGeometry::with_rounding(input, window, rounding)
    }

    /// Geometry for an input of shape `[n, c, h, w]` under `window`, its output sizes rounded as
    /// `rounding` says.
    pub fn with_rounding(
        input: [usize; 4],
        window: Window2d,
        rounding: OutputRounding,
    ) -> Result<Self> {
        let [n, c, h, w] = input;
        if n == 0 || c == 0 || h == 0 || w == 0 {
            return Err(invalid(
                "input shape",
                format!("{input:?} has a zero dimension"),
            ));
        }
        let axis = |i: usize| {
            let pick = |p: (usize, usize)| if i == 0 { p.0 } else { p.1 };
            AxisWindow {
                kernel: pick(window.kernel),
                stride: pick(window.stride),
                dilation: pick(window.dilation),
                pad_begin: pick(window.padding),
                pad_end: pick(window.padding_end),
            }
        };
        let out_h = window_output_len("height", h, axis(0), rounding)?;
        let out_w = window_output_len("width", w, axis(1), rounding)?;
        Ok(ConvGeometry {
            batch: n,
            in_channels: c,
            in_h: h,
            in_w: w,
            kernel_h: window.kernel.0,
            kernel_w: window.kernel.1,
            stride_h: window.stride.0,
            stride_w: window.stride.1,
            pad_h: window.padding.0,
            pad_w: window.padding.1,
            pad_h_end: window.padding_end.0,
            pad_w_end: window.padding_end.1,
            dilation_h: window.dilation.0,
            dilation_w: window.dilation.1,
            out_h,
            out_w,
        })
    }

    /// Rows of one image's column matrix: `C·KH·KW`.
    pub fn col_rows(&self) -> usize {
        self.in_channels * self.kernel_h * self.kernel_w
    }

    /// Columns of one image's column matrix: `OH·OW`.
    pub fn col_cols(&self) -> usize {
        self.out_h * self.out_w
    }

    /// Elements of the column buffer for the whole batch: `N·C·KH·KW·OH·OW`.
    pub fn col_len(&self) -> usize {
        self.batch * self.col_rows() * self.col_cols()
    }

    pub fn input_len(&self) -> usize {
        self.batch * self.in_channels * self.in_h * self.in_w
    }

    /// The window this geometry was made from.
    pub fn window(&self) -> Window2d {
        Window2d {
            kernel: (self.kernel_h, self.kernel_w),
            stride: (self.stride_h, self.stride_w),
            padding: (self.pad_h, self.pad_w),
            padding_end: (self.pad_h_end, self.pad_w_end),
            dilation: (self.dilation_h, self.dilation_w),
            floor_output: false,
        }
    }
}

/// A (grouped) convolution with `geometry` (its input: N images of C channels; its output:
/// `out_channels` K channels of OH·OW pixels) and a weight [K, C/G, KH, KW], as three matrix
/// products over im2col columns. With G groups, group g maps input channels [g·C/G, (g+1)·C/G)
/// to output channels [g·K/G, (g+1)·K/G); one image's column rows are ordered by channel, so a
/// group's rows are a contiguous block of C/G·KH·KW rows and its weights a contiguous block of W.
///
/// Forward:  y[n, g] = W_g · col[n, g];  input gradient: dcol[n, g] = W_gᵀ · dy[n, g];
/// weight gradient: dW_g = Σ_n dy[n, g] · col[n, g]ᵀ. Each `*_spec(images)` is one GEMM over
/// `images` consecutive images and every group. Transposed convolution uses the same products as
/// the adjoint (its forward is the input gradient).
#[derive(Clone, Copy, Debug)]
pub struct GroupedConv {
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

    /// [N, C, H, W].
    pub fn input_shape(&self) -> Vec<usize> {
        let g = &self.geometry;
        vec![g.batch, g.in_channels, g.in_h, g.in_w]
    }

    /// [N, K, OH, OW].
    pub fn output_shape(&self) -> Vec<usize> {
        let g = &self.geometry;
        vec![g.batch, self.out_channels, g.out_h, g.out_w]
    }

    /// [K, C/G, KH, KW].
    pub fn weight_shape(&self) -> Vec<usize> {
        let g = &self.geometry;
        let c_g = g.in_channels / self.groups;
        vec![self.out_channels, c_g, g.kernel_h, g.kernel_w]
    }

    /// y [images, K, P] = W_g [K/G, rows_g] · col [images, rows, P], per image and group.
    pub fn forward_spec(&self, images: usize) -> GemmSpec {
        let (rows, rows_g, pixels, k_g) = self.dims();
        let k = self.out_channels;
        GemmSpec::new(k_g, pixels, rows_g)
            .batched(images, 0, rows * pixels, k * pixels)
            .grouped(self.groups, k_g * rows_g, rows_g * pixels, k_g * pixels)
    }

    /// dcol [images, rows, P] = W_gᵀ [rows_g, K/G] · dy [images, K, P], per image and group.
    pub fn input_grad_spec(&self, images: usize) -> GemmSpec {
        let (rows, rows_g, pixels, k_g) = self.dims();
        let k = self.out_channels;
        GemmSpec::new(rows_g, pixels, k_g)
            .transpose_a()
            .batched(images, 0, k * pixels, rows * pixels)
            .grouped(self.groups, k_g * rows_g, k_g * pixels, rows_g * pixels)
    }

    /// dW_g [K/G, rows_g] = Σ over `images` of dy[n, g] [K/G, P] · col[n, g]ᵀ [P, rows_g].
    pub fn weight_grad_spec(&self, images: usize) -> GemmSpec {
        let (rows, rows_g, pixels, k_g) = self.dims();
        let k = self.out_channels;
        GemmSpec::new(k_g, rows_g, pixels)
            .transpose_b()
            .batched(images, k * pixels, rows * pixels, 0)
            .grouped(self.groups, k_g * pixels, rows_g * pixels, k_g * rows_g)
            .summed_over_batch()
    }
}

/// Adaptive pooling of `[N, C, H, W]` to `[N, C, OH, OW]` (PyTorch's `adaptive_avg_pool2d`): output
/// row `i` of `OH` reads input rows `[⌊i·H/OH⌋, ⌈(i + 1)·H/OH⌉)`, and likewise for columns, so
/// windows overlap and differ in size when `OH` does not divide `H`, and `OH > H` repeats rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdaptivePool2d {
    pub batch: usize,
    pub channels: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub out_h: usize,
    pub out_w: usize,
}

impl AdaptivePool2d {
    /// The pooling of an `input` of shape [N, C, H, W] to `output` = (OH, OW); a zero dimension of
    /// either is an error.
    pub fn new(op: &'static str, input: &[usize], output: (usize, usize)) -> Result<Self> {
        let [batch, channels, in_h, in_w] = as_nchw(op, input)?;
        if input.contains(&0) {
            return Err(invalid(
                "input shape",
                format!("{op}: {input:?} has a zero dimension"),
            ));
        }
        let (out_h, out_w) = output;
        if out_h == 0 || out_w == 0 {
            return Err(invalid(
                "output size",
                format!("{op}: output size must be at least 1x1, got {out_h}x{out_w}"),
            ));
        }
        Ok(AdaptivePool2d {
            batch,
            channels,
            in_h,
            in_w,
            out_h,
            out_w,
        })
    }

    pub fn input_shape(&self) -> Vec<usize> {
        vec![self.batch, self.channels, self.in_h, self.in_w]
    }

    pub fn output_shape(&self) -> Vec<usize> {
        vec![self.batch, self.channels, self.out_h, self.out_w]
    }

    /// N·C.
    pub fn planes(&self) -> usize {
        self.batch * self.channels
    }
}

/// The input range `[start, end)` of adaptive window `i` of `out_len` over `in_len`:
/// `start = ⌊i·in/out⌋`, `end = ⌈(i + 1)·in/out⌉` (never empty when `in_len, out_len ≥ 1`).
pub fn adaptive_window(i: usize, in_len: usize, out_len: usize) -> (usize, usize) {
    (i * in_len / out_len, ((i + 1) * in_len).div_ceil(out_len))
}

/// The windows of [`adaptive_window`] that read input index `j`: `[⌊j·out/in⌋, ⌈(j + 1)·out/in⌉)`
/// (window `i` reads `j` iff `⌊i·in/out⌋ ≤ j` and `⌈(i + 1)·in/out⌉ > j`, which solve to that).
pub fn adaptive_windows_reading(j: usize, in_len: usize, out_len: usize) -> (usize, usize) {
    adaptive_window(j, out_len, in_len)
}

/// Number of elements of a shape.
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Checks that `shape` is 4-d and returns it as an array.
pub fn as_nchw(op: &'static str, shape: &[usize]) -> Result<[usize; 4]> {
    <[usize; 4]>::try_from(shape).map_err(|_| {
        invalid(
            "input shape",
            format!("{op} expects a 4-d NCHW tensor, got shape {shape:?}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // The lecture's 7x7 input with a 3x3 filter.
    /// Every window reads exactly the inputs [`adaptive_windows_reading`] says, for sizes that
    /// divide, do not divide, and shrink or grow.
    #[test]
    fn adaptive_windows_and_their_readers_agree() {
        for in_len in 1..=9 {
            for out_len in 1..=11 {
                for j in 0..in_len {
                    let (lo, hi) = adaptive_windows_reading(j, in_len, out_len);
                    let readers: Vec<usize> = (0..out_len)
                        .filter(|&i| {
                            let (s, e) = adaptive_window(i, in_len, out_len);
                            s <= j && j < e
                        })
                        .collect();
                    assert_eq!(
                        readers,
                        (lo..hi).collect::<Vec<_>>(),
                        "{in_len} -> {out_len}, {j}"
                    );
                }
            }
        }
        // PyTorch's AdaptiveAvgPool1d(3) over 7 inputs: [0, 3), [2, 5), [4, 7).
        let windows: Vec<_> = (0..3).map(|i| adaptive_window(i, 7, 3)).collect();
        assert_eq!(windows, [(0, 3), (2, 5), (4, 7)]);
    }

    #[test]
    fn ceil_mode_output_sizes_follow_pytorch() {
        // (H, k, s, p) → F.max_pool2d(torch.zeros(1, 1, H, H), k, s, p, ceil_mode=True).shape[-1]
        // in PyTorch 2.15; (5, 2, 2, 1) and (4, 3, 2, 1) drop a last window that would start in
        // the trailing padding.
        let torch = [
            (112, 3, 2, 0, 56),
            (56, 3, 2, 0, 28),
            (28, 3, 2, 0, 14),
            (14, 2, 2, 0, 7),
            (7, 3, 1, 1, 7),
            (5, 2, 2, 1, 3),
            (6, 3, 2, 1, 4),
            (9, 3, 3, 1, 4),
            (8, 3, 2, 1, 5),
            (10, 4, 3, 2, 4),
            (1, 1, 2, 0, 1),
            (4, 3, 2, 1, 3),
        ];
        for (h, k, s, p, out) in torch {
            let g = Window2d::square(k, s, p)
                .ceil_mode()
                .geometry("test", &[1, 1, h, h])
                .unwrap();
            assert_eq!((g.out_h, g.out_w), (out, out), "H {h}, k {k}, s {s}, p {p}");
            let floor = ConvGeometry::new([1, 1, h, h], Window2d::square(k, s, p), false).unwrap();
            assert!(floor.out_h <= g.out_h && g.out_h <= floor.out_h + 1);
        }
    }

    /// Windows as large as or larger than 1x1, 2x2 and 3x3 planes: (H, k, s, p, ceil_mode size,
    /// floor size), 0 where PyTorch 2.15 raised "Output size is too small":
    /// `F.max_pool2d(torch.zeros(1, 1, H, H), k, s, p, ceil_mode=c).shape[-1]` for c in (True, False).
    #[test]
    fn windows_larger_than_the_input_follow_pytorch() {
        #[rustfmt::skip]
        let torch = [
            (1, 2, 1, 0, 0, 0), (1, 2, 1, 1, 2, 2), (1, 2, 2, 0, 1, 0), (1, 2, 2, 1, 1, 1),
            (1, 2, 3, 0, 1, 0), (1, 2, 3, 1, 1, 1), (1, 3, 1, 0, 0, 0), (1, 3, 1, 1, 1, 1),
            (1, 3, 2, 0, 0, 0), (1, 3, 2, 1, 1, 1), (1, 3, 3, 0, 1, 0), (1, 3, 3, 1, 1, 1),
            (2, 2, 1, 0, 1, 1), (2, 2, 1, 1, 3, 3), (2, 2, 2, 0, 1, 1), (2, 2, 2, 1, 2, 2),
            (2, 2, 3, 0, 1, 1), (2, 2, 3, 1, 1, 1), (2, 3, 1, 0, 0, 0), (2, 3, 1, 1, 2, 2),
            (2, 3, 2, 0, 1, 0), (2, 3, 2, 1, 2, 1), (2, 3, 3, 0, 1, 0), (2, 3, 3, 1, 1, 1),
            (3, 2, 1, 0, 2, 2), (3, 2, 1, 1, 4, 4), (3, 2, 2, 0, 2, 1), (3, 2, 2, 1, 2, 2),
            (3, 2, 3, 0, 1, 1), (3, 2, 3, 1, 2, 2), (3, 3, 1, 0, 1, 1), (3, 3, 1, 1, 3, 3),
            (3, 3, 2, 0, 1, 1), (3, 3, 2, 1, 2, 2), (3, 3, 3, 0, 1, 1), (3, 3, 3, 1, 2, 1),
        ];
        for (h, k, s, p, ceil, floor) in torch {
            let window = Window2d::square(k, s, p);
            for (pool, expected) in [(window.ceil_mode(), ceil), (window.into(), floor)] {
                let got = pool.geometry("test", &[1, 1, h, h]);
                let case = format!("H {h}, k {k}, s {s}, p {p}, ceil_mode {}", pool.ceil_mode);
                match got {
                    Ok(g) => assert_eq!((g.out_h, g.out_w), (expected, expected), "{case}"),
                    Err(err) => {
                        assert_eq!(expected, 0, "{case}: {err}");
                        assert!(
                            err.to_string().contains("output size is too small"),
                            "{err}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn lecture_output_sizes() {
        let out = |s, p| ConvGeometry::new([1, 1, 7, 7], Window2d::square(3, s, p), true);
        assert_eq!(out(1, 0).unwrap().out_h, 5);
        assert_eq!(out(2, 0).unwrap().out_h, 3);
        assert!(
            out(3, 0).is_err(),
            "stride 3 does not fit a 7x7 input with a 3x3 filter"
        );
        assert_eq!(out(1, 1).unwrap().out_w, 7);
    }

    #[test]
    fn dilation_widens_the_window() {
        let g = ConvGeometry::new(
            [1, 1, 9, 9],
            Window2d::square(3, 1, 0).with_dilation(2),
            true,
        )
        .unwrap();
        assert_eq!((g.out_h, g.out_w), (5, 5));
    }

    #[test]
    fn same_padding_keeps_the_size_even_for_even_kernels() {
        for k in [1, 2, 3, 4, 5] {
            let g = ConvGeometry::new([1, 1, 9, 8], Window2d::same((k, k), (1, 1)), true).unwrap();
            assert_eq!((g.out_h, g.out_w), (9, 8), "kernel {k}");
            assert_eq!(g.pad_h + g.pad_h_end, k - 1);
        }
        let g = ConvGeometry::new([1, 1, 9, 9], Window2d::same((3, 2), (2, 3)), true).unwrap();
        assert_eq!((g.out_h, g.out_w, g.pad_w, g.pad_w_end), (9, 9, 1, 2));
    }

    #[test]
    fn bad_windows_are_errors() {
        assert!(ConvGeometry::new([1, 1, 5, 5], Window2d::square(3, 0, 0), true).is_err());
        assert!(ConvGeometry::new([1, 1, 2, 2], Window2d::square(5, 1, 1), true).is_err());
        assert!(ConvGeometry::new([0, 1, 5, 5], Window2d::square(3, 1, 0), true).is_err());
    }
}

/// A (possibly batched) row-major matrix product `C = alpha·op(A)·op(B) + beta·C`.
///
/// `op(A)` is `m×k`: stored as `[m][k]`, or as `[k][m]` when `trans_a`. `op(B)` is `k×n`: stored as
/// `[k][n]`, or as `[n][k]` when `trans_b`. `C` is `[m][n]`. Matrix `b` of a batch starts at
/// `b·stride_*` (a stride of 0 shares one matrix across the batch). With `reduce_batch`, the batch
/// is part of the reduction instead: `C = alpha·Σ_b op(A_b)·op(B_b) + beta·C`, one `C`.
///
/// A second batch level, `groups` (grouped convolution), multiplies the products: entry `(b, g)`
/// reads A at `b·stride_a + g·group_stride_a` (likewise B) and writes C at
/// `b·stride_c + g·group_stride_c`. With `reduce_batch` only `b` is summed: one `C` per group, at
/// `g·group_stride_c`. `groups = 1` (the default) is the plain batched product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmSpec {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub trans_a: bool,
    pub trans_b: bool,
    pub batch: usize,
    pub stride_a: usize,
    pub stride_b: usize,
    pub stride_c: usize,
    pub reduce_batch: bool,
    pub groups: usize,
    pub group_stride_a: usize,
    pub group_stride_b: usize,
    pub group_stride_c: usize,
}

impl GemmSpec {
    /// A single product of an `m×k` by a `k×n` matrix.
    pub fn new(m: usize, n: usize, k: usize) -> Self {
        GemmSpec {
            m,
            n,
            k,
            trans_a: false,
            trans_b: false,
            batch: 1,
            stride_a: 0,
            stride_b: 0,
            stride_c: 0,
            reduce_batch: false,
            groups: 1,
            group_stride_a: 0,
            group_stride_b: 0,
            group_stride_c: 0,
        }
    }

    pub fn transpose_a(mut self) -> Self {
        self.trans_a = true;
        self
    }

    pub fn transpose_b(mut self) -> Self {
        self.trans_b = true;
        self
    }

    /// `batch` products, operand `i` starting at `i·stride` (0 = shared).
    pub fn batched(
        mut self,
        batch: usize,
        stride_a: usize,
        stride_b: usize,
        stride_c: usize,
    ) -> Self {
        self.batch = batch;
        self.stride_a = stride_a;
        self.stride_b = stride_b;
        self.stride_c = stride_c;
        self
    }

    /// `groups` products per batch entry, group `g`'s operands starting `g·group_stride` further
    /// on (0 = shared across groups).
    pub fn grouped(
        mut self,
        groups: usize,
        group_stride_a: usize,
        group_stride_b: usize,
        group_stride_c: usize,
    ) -> Self {
        self.groups = groups;
        self.group_stride_a = group_stride_a;
        self.group_stride_b = group_stride_b;
        self.group_stride_c = group_stride_c;
        self
    }

    /// Output matrices: one per (batch entry, group), or one per group when the batch is summed.
    pub fn outputs(&self) -> usize {
        let per_group = if self.reduce_batch { 1 } else { self.batch };
        per_group * self.groups
    }

    /// Sum the batch's products into one `C` (used for weight gradients).
    pub fn summed_over_batch(mut self) -> Self {
        self.reduce_batch = true;
        self.stride_c = 0;
        self
    }

    /// Elements each operand must hold at least.
    pub fn required_lens(&self) -> (usize, usize, usize) {
        let last = self.batch.saturating_sub(1);
        let last_group = self.groups.saturating_sub(1);
        let c_batches = if self.reduce_batch { 0 } else { last };
        (
            last * self.stride_a + last_group * self.group_stride_a + self.m * self.k,
            last * self.stride_b + last_group * self.group_stride_b + self.k * self.n,
            c_batches * self.stride_c + last_group * self.group_stride_c + self.m * self.n,
        )
    }

    /// Floating-point operations of the whole product (2·m·n·k per batch entry and group).
    pub fn flops(&self) -> f64 {
        2.0 * (self.m * self.n * self.k * self.batch * self.groups) as f64
    }
}
