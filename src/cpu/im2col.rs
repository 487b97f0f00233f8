//! im2col / col2im: unfold convolution windows into a matrix so convolution becomes a GEMM.
//!
//! Layouts (NCHW): `x` is `[N][C][H][W]`; `col` is `[N][C·KH·KW][OH·OW]`, row `(c·KH + kh)·KW + kw`,
//! column `oh·OW + ow`. Tap `(kh, kw)` of output `(oh, ow)` reads input
//! `(oh·stride_h − pad_h + kh·dilation_h, ow·stride_w − pad_w + kw·dilation_w)`, 0 outside.

use rayon::prelude::*;

use super::Float;
use crate::core::shape::ConvGeometry;

/// Input coordinate read by tap `k` of output `o` along one axis, or `None` in the padding.
pub(crate) fn tap_input(
    o: usize,
    k: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
    in_len: usize,
) -> Option<usize> {
    (o * stride + k * dilation)
        .checked_sub(pad)
        .filter(|&i| i < in_len)
}

/// The output whose tap `k` reads input `i` along one axis (the inverse of [`tap_input`]), if any.
pub(crate) fn tap_output(
    i: usize,
    k: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
    out_len: usize,
) -> Option<usize> {
    let offset = (i + pad).checked_sub(k * dilation)?;
    (offset % stride == 0)
        .then_some(offset / stride)
        .filter(|&o| o < out_len)
}

/// Unfolds the whole batch `x` `[N][C][H][W]` into `col` `[N][C·KH·KW][OH·OW]` (see module docs).
pub fn im2col<T: Float>(x: &[T], g: &ConvGeometry, col: &mut [T]) {
    debug_assert_eq!(x.len(), g.input_len(), "im2col: x length");
    debug_assert_eq!(col.len(), g.col_len(), "im2col: col length");
    if x.is_empty() || col.is_empty() {
        return;
    }
    // One (image, channel) plane of x owns KH·KW consecutive rows of col.
    let rows_per_channel = g.kernel_h * g.kernel_w * g.col_cols();
    col.par_chunks_mut(rows_per_channel)
        .zip(x.par_chunks(g.in_h * g.in_w))
        .for_each(|(col, plane)| im2col_plane(plane, g, col));
}

/// im2col of one image `[C][H][W]` into its `[C·KH·KW][OH·OW]` column rows, on this thread.
pub(crate) fn im2col_image<T: Float>(x: &[T], g: &ConvGeometry, col: &mut [T]) {
    let rows_per_channel = g.kernel_h * g.kernel_w * g.col_cols();
    col.chunks_exact_mut(rows_per_channel)
        .zip(x.chunks_exact(g.in_h * g.in_w))
        .for_each(|(col, plane)| im2col_plane(plane, g, col));
}

/// col2im of one image's `[C·KH·KW][OH·OW]` rows into its `[C][H][W]` (overwritten), on this
/// thread. `col` is scratch: the unit-stride path zeroes its entries that read the padding.
pub(crate) fn col2im_image<T: Float>(col: &mut [T], g: &ConvGeometry, dx: &mut [T]) {
    let rows_per_channel = g.kernel_h * g.kernel_w * g.col_cols();
    let unit_stride = g.stride_h == 1 && g.stride_w == 1 && g.out_w == g.in_w;
    dx.chunks_exact_mut(g.in_h * g.in_w)
        .zip(col.chunks_exact_mut(rows_per_channel))
        .for_each(|(plane, col)| {
            if unit_stride {
                col2im_plane_unit_stride(col, g, plane)
            } else {
                col2im_plane(col, g, plane)
            }
        });
}

/// The outputs `o` in `0..out_len` whose tap `k` lands inside the input (`tap_input` is `Some`),
/// as a range: `o·stride + k·dilation − pad` in `0..in_len`.
fn valid_outputs(
    k: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
    in_len: usize,
    out_len: usize,
) -> std::ops::Range<usize> {
    let offset = k * dilation; // input = o·stride + offset − pad
    let first = pad.saturating_sub(offset).div_ceil(stride);
    let end = (in_len + pad)
        .saturating_sub(offset)
        .div_ceil(stride)
        .min(out_len);
    first.min(end)..end
}

/// im2col of one `[H][W]` plane into its `[KH·KW][OH·OW]` rows. Rows are written with contiguous
/// inner loops over the in-bounds outputs; the padding part is zero-filled.
fn im2col_plane<T: Float>(plane: &[T], g: &ConvGeometry, col: &mut [T]) {
    if g.stride_h == 1 && g.stride_w == 1 && g.out_w == g.in_w {
        return im2col_plane_unit_stride(plane, g, col);
    }
    let taps = (0..g.kernel_h).flat_map(|kh| (0..g.kernel_w).map(move |kw| (kh, kw)));
    for ((kh, kw), row) in taps.zip(col.chunks_exact_mut(g.col_cols())) {
        let ows = valid_outputs(kw, g.stride_w, g.pad_w, g.dilation_w, g.in_w, g.out_w);
        for (oh, out_row) in row.chunks_exact_mut(g.out_w).enumerate() {
            let Some(ih) = tap_input(oh, kh, g.stride_h, g.pad_h, g.dilation_h, g.in_h) else {
                out_row.fill(T::zero());
                continue;
            };
            out_row[..ows.start].fill(T::zero());
            out_row[ows.end..].fill(T::zero());
            if ows.is_empty() {
                continue;
            }
            let src = &plane[ih * g.in_w..(ih + 1) * g.in_w];
            let first = ows.start * g.stride_w + kw * g.dilation_w - g.pad_w;
            if g.stride_w == 1 {
                out_row[ows.clone()].copy_from_slice(&src[first..first + ows.len()]);
            } else {
                let taps = src[first..].iter().step_by(g.stride_w);
                out_row[ows.clone()]
                    .iter_mut()
                    .zip(taps)
                    .for_each(|(o, &v)| *o = v);
            }
        }
    }
}

/// [`im2col_plane`] for stride 1 with as many output as input columns ('same' width, the common
/// 3x3-pad-1 case): a tap's rows are then the input rows shifted by one offset, so each tap is one
/// block copy instead of a short copy per output row, followed by zeroing the columns the shift
/// carried across a row edge (those read the padding).
fn im2col_plane_unit_stride<T: Float>(plane: &[T], g: &ConvGeometry, col: &mut [T]) {
    let width = g.in_w;
    let taps = (0..g.kernel_h).flat_map(|kh| (0..g.kernel_w).map(move |kw| (kh, kw)));
    for ((kh, kw), row) in taps.zip(col.chunks_exact_mut(g.col_cols())) {
        let ohs = valid_outputs(kh, 1, g.pad_h, g.dilation_h, g.in_h, g.out_h);
        row[..ohs.start * width].fill(T::zero());
        row[ohs.end * width..].fill(T::zero());
        if ohs.is_empty() {
            continue;
        }
        let block = &mut row[ohs.start * width..ohs.end * width];
        let first_input_row = ohs.start + kh * g.dilation_h - g.pad_h;
        let src = &plane[first_input_row * width..][..block.len()];
        // Output column ow reads input column ow + shift.
        let shift = (kw * g.dilation_w) as isize - g.pad_w as isize;
        let s = shift.unsigned_abs().min(width);
        if shift >= 0 {
            let n = block.len() - s;
            block[..n].copy_from_slice(&src[s..]);
            block
                .chunks_exact_mut(width)
                .for_each(|r| r[width - s..].fill(T::zero()));
        } else {
            let n = block.len() - s;
            block[s..].copy_from_slice(&src[..n]);
            block
                .chunks_exact_mut(width)
                .for_each(|r| r[..s].fill(T::zero()));
        }
    }
}

/// The adjoint of [`im2col`]: `dx` `[N][C][H][W]` (overwritten) gets, per pixel, the sum of every
/// `col` entry im2col read from it. Each `[H][W]` plane is accumulated by one thread, tap by tap
/// in row-major `(kh, kw)` order, so the result is deterministic.
pub fn col2im<T: Float>(col: &[T], g: &ConvGeometry, dx: &mut [T]) {
    debug_assert_eq!(col.len(), g.col_len(), "col2im: col length");
    debug_assert_eq!(dx.len(), g.input_len(), "col2im: dx length");
    if dx.is_empty() {
        return;
    }
    if col.is_empty() {
        dx.fill(T::zero());
        return;
    }
    let rows_per_channel = g.kernel_h * g.kernel_w * g.col_cols();
    dx.par_chunks_mut(g.in_h * g.in_w)
        .zip(col.par_chunks(rows_per_channel))
        .for_each(|(plane, col)| col2im_plane(col, g, plane));
}

/// col2im of one channel's `[KH·KW][OH·OW]` rows into its `[H][W]` plane: a scatter-add per tap
/// row with a contiguous inner loop over the in-bounds outputs.
fn col2im_plane<T: Float>(col: &[T], g: &ConvGeometry, plane: &mut [T]) {
    plane.fill(T::zero());
    let taps = (0..g.kernel_h).flat_map(|kh| (0..g.kernel_w).map(move |kw| (kh, kw)));
    for ((kh, kw), row) in taps.zip(col.chunks_exact(g.col_cols())) {
        let ows = valid_outputs(kw, g.stride_w, g.pad_w, g.dilation_w, g.in_w, g.out_w);
        for (oh, out_row) in row.chunks_exact(g.out_w).enumerate() {
            let Some(ih) = tap_input(oh, kh, g.stride_h, g.pad_h, g.dilation_h, g.in_h) else {
                continue;
            };
            if ows.is_empty() {
                continue;
            }
            let dst = &mut plane[ih * g.in_w..(ih + 1) * g.in_w];
            let first = ows.start * g.stride_w + kw * g.dilation_w - g.pad_w;
            let src = &out_row[ows.clone()];
            if g.stride_w == 1 {
                let dst = &mut dst[first..first + src.len()];
                dst.iter_mut().zip(src).for_each(|(d, &v)| *d = *d + v);
            } else {
                let taps = dst[first..].iter_mut().step_by(g.stride_w);
                taps.zip(src).for_each(|(d, &v)| *d = *d + v);
            }
        }
    }
}

/// [`col2im_plane`] for the geometry of [`im2col_plane_unit_stride`]: per tap, the entries that
/// read the padding are zeroed in `col`, and then the tap's rows are one shifted block add.
fn col2im_plane_unit_stride<T: Float>(col: &mut [T], g: &ConvGeometry, plane: &mut [T]) {
    plane.fill(T::zero());
    let width = g.in_w;
    let taps = (0..g.kernel_h).flat_map(|kh| (0..g.kernel_w).map(move |kw| (kh, kw)));
    for ((kh, kw), row) in taps.zip(col.chunks_exact_mut(g.col_cols())) {
        let ohs = valid_outputs(kh, 1, g.pad_h, g.dilation_h, g.in_h, g.out_h);
        if ohs.is_empty() {
            continue;
        }
        let block = &mut row[ohs.start * width..ohs.end * width];
        let first_input_row = ohs.start + kh * g.dilation_h - g.pad_h;
        let dst = &mut plane[first_input_row * width..][..block.len()];
        // Output column ow read input column ow + shift.
        let shift = (kw * g.dilation_w) as isize - g.pad_w as isize;
        let s = shift.unsigned_abs().min(width);
        let add = |d: &mut [T], c: &[T]| d.iter_mut().zip(c).for_each(|(d, &c)| *d = *d + c);
        if shift >= 0 {
            block
                .chunks_exact_mut(width)
                .for_each(|r| r[width - s..].fill(T::zero()));
            let n = block.len() - s;
            add(&mut dst[s..], &block[..n]);
        } else {
            block
                .chunks_exact_mut(width)
                .for_each(|r| r[..s].fill(T::zero()));
            let n = block.len() - s;
            add(&mut dst[..n], &block[s..]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::shape::{GemmSpec, Window2d};
    use crate::cpu::gemm::gemm;
    use crate::cpu::testutil::{assert_close, random_vec, rng};

    /// Convolution `[N][O][OH][OW]` through im2col and one batched GEMM (weights shared, stride 0).
    fn conv_via_im2col(x: &[f64], w: &[f64], out_ch: usize, g: &ConvGeometry) -> Vec<f64> {
        let mut col = vec![0.0; g.col_len()];
        im2col(x, g, &mut col);
        let (k, n) = (g.col_rows(), g.col_cols());
        let spec = GemmSpec::new(out_ch, n, k).batched(g.batch, 0, k * n, out_ch * n);
        let mut y = vec![0.0; g.batch * out_ch * n];
        gemm(&spec, 1.0, w, &col, 0.0, &mut y);
        y
    }

    /// The textbook seven-loop cross-correlation, weights `[O][C][KH][KW]`.
    fn conv_direct(x: &[f64], w: &[f64], out_ch: usize, g: &ConvGeometry) -> Vec<f64> {
        let (c_in, kh_len, kw_len) = (g.in_channels, g.kernel_h, g.kernel_w);
        let mut y = vec![0.0; g.batch * out_ch * g.out_h * g.out_w];
        for n in 0..g.batch {
            for o in 0..out_ch {
                for oh in 0..g.out_h {
                    for ow in 0..g.out_w {
                        let mut sum = 0.0;
                        for c in 0..c_in {
                            for kh in 0..kh_len {
                                for kw in 0..kw_len {
                                    let ih = (oh * g.stride_h + kh * g.dilation_h) as isize
                                        - g.pad_h as isize;
                                    let iw = (ow * g.stride_w + kw * g.dilation_w) as isize
                                        - g.pad_w as isize;
                                    if ih < 0
                                        || iw < 0
                                        || ih >= g.in_h as isize
                                        || iw >= g.in_w as isize
                                    {
                                        continue;
                                    }
                                    let xi = ((n * c_in + c) * g.in_h + ih as usize) * g.in_w
                                        + iw as usize;
                                    let wi = ((o * c_in + c) * kh_len + kh) * kw_len + kw;
                                    sum += x[xi] * w[wi];
                                }
                            }
                        }
                        y[((n * out_ch + o) * g.out_h + oh) * g.out_w + ow] = sum;
                    }
                }
            }
        }
        y
    }

    /// Odd shapes: stride 2, padding 1 and 2, dilation 2, rectangular kernels, stride > kernel,
    /// batch 1 and 3. PyTorch-style floor division so sizes need not tile exactly.
    fn geometries() -> Vec<ConvGeometry> {
        let window = |kernel, stride, padding, dilation| Window2d {
            kernel,
            stride,
            padding,
            padding_end: padding,
            dilation,
            floor_output: true,
        };
        [
            ([1, 3, 7, 9], window((3, 3), (2, 2), (1, 1), (1, 1))),
            ([3, 2, 11, 10], window((3, 5), (2, 2), (2, 2), (2, 2))),
            ([3, 5, 9, 13], window((5, 3), (2, 1), (2, 1), (1, 2))),
            ([1, 1, 5, 5], window((3, 3), (1, 1), (1, 1), (1, 1))),
            ([3, 3, 13, 11], window((2, 3), (3, 4), (1, 2), (1, 1))),
            ([1, 2, 3, 3], window((3, 3), (2, 2), (2, 2), (2, 2))),
        ]
        .into_iter()
        .map(|(shape, w)| ConvGeometry::new(shape, w, false).expect("valid test geometry"))
        .collect()
    }

    #[test]
    fn im2col_gemm_matches_direct_convolution() {
        let mut rng = rng(1);
        for g in geometries() {
            let out_ch = 5;
            let x = random_vec(&mut rng, g.input_len());
            let w = random_vec(&mut rng, out_ch * g.col_rows());
            let expected = conv_direct(&x, &w, out_ch, &g);
            assert_close(
                &conv_via_im2col(&x, &w, out_ch, &g),
                &expected,
                1e-12,
                1e-12,
            );
        }
    }

    #[test]
    fn im2col_f32_matches_f64() {
        let mut rng = rng(2);
        for g in geometries() {
            let x: Vec<f64> = random_vec(&mut rng, g.input_len());
            let mut col64 = vec![0.0; g.col_len()];
            im2col(&x, &g, &mut col64);
            let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            let mut col32 = vec![f32::NAN; g.col_len()];
            im2col(&x32, &g, &mut col32);
            let col64_as_32: Vec<f32> = col64.iter().map(|&v| v as f32).collect();
            assert_close(&col32, &col64_as_32, 0.0, 0.0);
        }
    }

    /// `<im2col(x), c> == <x, col2im(c)>` for random `x` and `c`: col2im is exactly the adjoint.
    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        let mut rng = rng(3);
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(a, b)| a * b).sum::<f64>();
        for g in geometries() {
            let x = random_vec(&mut rng, g.input_len());
            let c = random_vec(&mut rng, g.col_len());
            let mut col = vec![0.0; g.col_len()];
            im2col(&x, &g, &mut col);
            let mut dx = vec![f64::NAN; g.input_len()]; // overwritten, not accumulated
            col2im(&c, &g, &mut dx);
            let (lhs, rhs) = (dot(&col, &c), dot(&x, &dx));
            assert!(
                (lhs - rhs).abs() <= 1e-10 * lhs.abs().max(rhs.abs()),
                "{g:?}: <im2col(x), c> = {lhs}, <x, col2im(c)> = {rhs}"
            );
        }
    }

    /// The lecture's edge detector: a 6x6 image, left half 10 and right half 0, convolved with a
    /// 3x3 filter whose rows are all (1, 0, −1), gives a 4x4 output whose rows are (0, 30, 30, 0).
    #[test]
    fn lecture_vertical_edge_detector() {
        let g = ConvGeometry::new([1, 1, 6, 6], Window2d::square(3, 1, 0), true).expect("fits");
        let x: Vec<f64> = (0..36)
            .map(|i| if i % 6 < 3 { 10.0 } else { 0.0 })
            .collect();
        let w = [1.0, 0.0, -1.0].repeat(3);
        let y = conv_via_im2col(&x, &w, 1, &g);
        assert_eq!((g.out_h, g.out_w), (4, 4));
        assert_close(&y, &[0.0, 30.0, 30.0, 0.0].repeat(4), 0.0, 0.0);
    }
}
