//! Pooling over NCHW planes: max (with the argmax kept for a deterministic gather backward),
//! average, L2 norm, global average, and adaptive average (`adaptive.rs`).
//!
//! Windows are the convolution windows of [`ConvGeometry`] (stride, padding, dilation). A window
//! may overhang the input on either side (padding, or a `ceil_mode` window past the padded input,
//! even one larger than the whole input): taps outside the input never win a max and count as 0
//! in sums. `x`/`dx` are `[N][C][H][W]`; `y`, `dy` and `argmax` are
//! `[N][C][OH][OW]`. Every backward pass is a gather per input pixel, summing over the windows that
//! read it in row-major `(kh, kw)` tap order, like the kernels in kernels/pool.cu.

use rayon::prelude::*;

mod adaptive;
pub use adaptive::{adaptive_avgpool_bwd, adaptive_avgpool_fwd};

use super::im2col::{tap_input, tap_output};
use super::Float;
use crate::core::shape::ConvGeometry;

/// Max pooling. `argmax` holds the winner's index `h·W + w` within its input plane; ties go to the
/// first tap in row-major window order (only a strictly greater value replaces the best so far, so
/// a NaN wins only as the first tap). A window that covers only padding gets `y = 0`, `argmax = −1`.
pub fn maxpool_fwd<T: Float>(x: &[T], g: &ConvGeometry, y: &mut [T], argmax: &mut [i32]) {
    let out_plane = g.out_h * g.out_w;
    debug_assert_eq!(x.len(), g.input_len(), "maxpool_fwd: x length");
    debug_assert_eq!(
        y.len(),
        g.batch * g.in_channels * out_plane,
        "maxpool_fwd: y length"
    );
    debug_assert_eq!(argmax.len(), y.len(), "maxpool_fwd: argmax length");
    debug_assert!(
        g.in_h * g.in_w <= i32::MAX as usize,
        "maxpool_fwd: plane too large for i32"
    );
    if x.is_empty() || y.is_empty() {
        return;
    }
    // The in-bounds taps of each window row and column, worked out once (they cost divisions).
    let taps = WindowTaps::new(g);
    let two_by_two = (g.kernel_h, g.kernel_w, g.stride_h, g.stride_w) == (2, 2, 2, 2)
        && (g.pad_h, g.pad_w, g.dilation_h, g.dilation_w) == (0, 0, 1, 1)
        && 2 * g.out_h <= g.in_h
        && 2 * g.out_w <= g.in_w;
    let planes_per_task = super::MIN_PAR_LEN.div_ceil(g.in_h * g.in_w);
    y.par_chunks_mut(out_plane)
        .zip(argmax.par_chunks_mut(out_plane))
        .zip(x.par_chunks(g.in_h * g.in_w))
        .with_min_len(planes_per_task)
        .for_each(|((y, argmax), plane)| {
            if two_by_two {
                maxpool_fwd_plane_2x2(plane, g, y, argmax)
            } else {
                maxpool_fwd_plane(plane, g, &taps, y, argmax)
            }
        });
}

/// [`maxpool_fwd_plane`] for the common 2x2 window with stride 2 and no padding, every window
/// inside the plane: the same four taps in the same order and the same strict comparison, without
/// the per-window tap ranges.
fn maxpool_fwd_plane_2x2<T: Float>(plane: &[T], g: &ConvGeometry, y: &mut [T], argmax: &mut [i32]) {
    let w = g.in_w;
    let rows = y
        .chunks_exact_mut(g.out_w)
        .zip(argmax.chunks_exact_mut(g.out_w));
    for (oh, (y_row, argmax_row)) in rows.enumerate() {
        let top = &plane[2 * oh * w..][..w];
        let bottom = &plane[(2 * oh + 1) * w..][..w];
        for (ow, (y, argmax)) in y_row.iter_mut().zip(argmax_row.iter_mut()).enumerate() {
            let (c, i) = (2 * ow, 2 * oh * w + 2 * ow);
            let (mut best, mut best_i) = (top[c], i);
            for (v, at) in [
                (top[c + 1], i + 1),
                (bottom[c], i + w),
                (bottom[c + 1], i + w + 1),
            ] {
                let better = v > best;
                best_i = if better { at } else { best_i };
                best = if better { v } else { best };
            }
            (*y, *argmax) = (best, best_i as i32);
        }
    }
}

/// For each output row (column), the range of kernel rows (columns) that read the input.
struct WindowTaps {
    rows: Vec<std::ops::Range<usize>>,
    cols: Vec<std::ops::Range<usize>>,
}

impl WindowTaps {
    fn new(g: &ConvGeometry) -> Self {
        WindowTaps {
            rows: (0..g.out_h)
                .map(|oh| taps_inside(oh, g.kernel_h, g.stride_h, g.pad_h, g.dilation_h, g.in_h))
                .collect(),
            cols: (0..g.out_w)
                .map(|ow| taps_inside(ow, g.kernel_w, g.stride_w, g.pad_w, g.dilation_w, g.in_w))
                .collect(),
        }
    }
}

/// Max pooling of one `[H][W]` plane into its `[OH][OW]` outputs, taps in row-major order (the
/// first of equal maxima wins). A window that sees only padding gives −∞ with argmax −1, as
/// PyTorch's `max_pool2d` (the max of no values).
fn maxpool_fwd_plane<T: Float>(
    plane: &[T],
    g: &ConvGeometry,
    taps: &WindowTaps,
    y: &mut [T],
    argmax: &mut [i32],
) {
    let rows = y
        .chunks_exact_mut(g.out_w)
        .zip(argmax.chunks_exact_mut(g.out_w));
    for (oh, (y_row, argmax_row)) in rows.enumerate() {
        let khs = taps.rows[oh].clone();
        let ih0 = (oh * g.stride_h).wrapping_sub(g.pad_h);
        let outputs = y_row.iter_mut().zip(argmax_row.iter_mut());
        for (ow, (y, argmax)) in outputs.enumerate() {
            let kws = taps.cols[ow].clone();
            let iw0 = (ow * g.stride_w).wrapping_sub(g.pad_w);
            if khs.is_empty() || kws.is_empty() {
                (*y, *argmax) = (T::neg_infinity(), -1);
                continue;
            }
            // Input index of tap (kh, kw); the offsets wrap back into range for in-bounds taps.
            let at = |kh: usize, kw: usize| {
                ih0.wrapping_add(kh * g.dilation_h) * g.in_w + iw0.wrapping_add(kw * g.dilation_w)
            };
            let mut best_i = at(khs.start, kws.start);
            let mut best = plane[best_i];
            for kh in khs.clone() {
                for kw in kws.clone() {
                    // Selects rather than branches: which tap wins is data-dependent and
                    // unpredictable, and a mispredicted branch per tap costs more than the tap.
                    let i = at(kh, kw);
                    let better = plane[i] > best;
                    best_i = if better { i } else { best_i };
                    best = if better { plane[i] } else { best };
                }
            }
            (*y, *argmax) = (best, best_i as i32);
        }
    }
}

/// The taps `k` of window `o` along one axis that read the input rather than the padding, as a
/// range: `o·stride + k·dilation − pad` in `0..in_len`, `k < kernel`.
fn taps_inside(
    o: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
    in_len: usize,
) -> std::ops::Range<usize> {
    let start = o * stride; // input = start + k·dilation − pad
    let first = pad.saturating_sub(start).div_ceil(dilation);
    let end = (in_len + pad)
        .saturating_sub(start)
        .div_ceil(dilation)
        .min(kernel);
    first.min(end)..end
}

/// Max-pooling backward: each input pixel of `dx` (overwritten) gets the sum of `dy` over the
/// windows that chose it as their argmax. On the CPU this is a scatter through the argmax, one
/// plane per thread in output order, so it is deterministic (the GPU kernel gathers instead; the
/// two differ only in the order of the few additions where windows overlap).
pub fn maxpool_bwd<T: Float>(dy: &[T], argmax: &[i32], g: &ConvGeometry, dx: &mut [T]) {
    let out_plane = g.out_h * g.out_w;
    debug_assert_eq!(
        dy.len(),
        g.batch * g.in_channels * out_plane,
        "maxpool_bwd: dy length"
    );
    debug_assert_eq!(argmax.len(), dy.len(), "maxpool_bwd: argmax length");
    debug_assert_eq!(dx.len(), g.input_len(), "maxpool_bwd: dx length");
    if dx.is_empty() {
        return;
    }
    if dy.is_empty() {
        dx.fill(T::zero());
        return;
    }
    dx.par_chunks_mut(g.in_h * g.in_w)
        .zip(dy.par_chunks(out_plane).zip(argmax.par_chunks(out_plane)))
        .with_min_len(super::MIN_PAR_LEN.div_ceil(g.in_h * g.in_w))
        .for_each(|(dx, (dy, argmax))| maxpool_bwd_plane(dy, argmax, g, dx));
}

/// Max-pooling backward of one plane: `[OH][OW]` gradients and argmax into `[H][W]`.
fn maxpool_bwd_plane<T: Float>(dy: &[T], argmax: &[i32], _g: &ConvGeometry, dx: &mut [T]) {
    dx.fill(T::zero());
    for (&d, &a) in dy.iter().zip(argmax) {
        if let Some(dst) = usize::try_from(a).ok().and_then(|i| dx.get_mut(i)) {
            *dst = *dst + d;
        }
    }
}

/// Calls `visit(oh, ow)` for every window that reads input pixel `(h, w)`, in row-major `(kh, kw)`
/// tap order (the CPU twin of `for_each_window_reading` in kernels/common.cuh).
fn for_each_window_reading(
    g: &ConvGeometry,
    h: usize,
    w: usize,
    mut visit: impl FnMut(usize, usize),
) {
    for kh in 0..g.kernel_h {
        let Some(oh) = tap_output(h, kh, g.stride_h, g.pad_h, g.dilation_h, g.out_h) else {
            continue;
        };
        for kw in 0..g.kernel_w {
            if let Some(ow) = tap_output(w, kw, g.stride_w, g.pad_w, g.dilation_w, g.out_w) {
                visit(oh, ow);
            }
        }
    }
}

/// `Σ f(x)` over the in-bounds taps of window `(oh, ow)` of `plane`, in row-major tap order.
fn window_sum<T: Float>(
    plane: &[T],
    g: &ConvGeometry,
    oh: usize,
    ow: usize,
    f: impl Fn(T) -> T,
) -> T {
    let mut sum = T::zero();
    for kh in 0..g.kernel_h {
        let Some(ih) = tap_input(oh, kh, g.stride_h, g.pad_h, g.dilation_h, g.in_h) else {
            continue;
        };
        for kw in 0..g.kernel_w {
            if let Some(iw) = tap_input(ow, kw, g.stride_w, g.pad_w, g.dilation_w, g.in_w) {
                sum = sum + f(plane[ih * g.in_w + iw]);
            }
        }
    }
    sum
}

/// Number of taps of window `o` along one axis that read the input rather than the padding.
fn taps_in_bounds(
    o: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
    in_len: usize,
) -> usize {
    let taps = taps_inside(o, kernel, stride, pad, dilation, in_len);
    debug_assert_eq!(
        taps.len(),
        (0..kernel)
            .filter(|&k| tap_input(o, k, stride, pad, dilation, in_len).is_some())
            .count()
    );
    taps.len()
}

/// Number of taps of window `o` along one axis before `end` (the padded extent, input plus
/// trailing padding): the taps that read the input or its padding, not a `ceil_mode` overhang.
fn taps_before(
    o: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
    end: usize,
) -> usize {
    (0..kernel)
        .filter(|&k| o * stride + k * dilation < end + pad)
        .count()
}

/// Divisor of average-pool window `(oh, ow)`, as PyTorch's: when `count_include_pad`, the taps
/// inside the padded input (`KH·KW`, fewer only where a `ceil_mode` window overhangs the trailing
/// padding); else the number of in-bounds taps (0 for a window that sees only padding). With
/// dilation the taps are the `KH·KW` dilated positions, not the span they cover.
pub fn avgpool_divisor(g: &ConvGeometry, oh: usize, ow: usize, count_include_pad: bool) -> usize {
    if count_include_pad {
        let rows = taps_before(
            oh,
            g.kernel_h,
            g.stride_h,
            g.pad_h,
            g.dilation_h,
            g.in_h + g.pad_h_end,
        );
        let cols = taps_before(
            ow,
            g.kernel_w,
            g.stride_w,
            g.pad_w,
            g.dilation_w,
            g.in_w + g.pad_w_end,
        );
        return rows * cols;
    }
    taps_in_bounds(oh, g.kernel_h, g.stride_h, g.pad_h, g.dilation_h, g.in_h)
        * taps_in_bounds(ow, g.kernel_w, g.stride_w, g.pad_w, g.dilation_w, g.in_w)
}

fn count<T: Float>(n: usize) -> T {
    T::from(n).expect("a count converts to f32 and f64")
}

/// Average pooling (PyTorch's `avg_pool2d` semantics, plus dilation): the sum of each window's
/// in-bounds taps divided by [`avgpool_divisor`]. A window with divisor 0 gives `y = 0`.
pub fn avgpool_fwd<T: Float>(x: &[T], g: &ConvGeometry, count_include_pad: bool, y: &mut [T]) {
    let out_plane = g.out_h * g.out_w;
    debug_assert_eq!(x.len(), g.input_len(), "avgpool_fwd: x length");
    debug_assert_eq!(
        y.len(),
        g.batch * g.in_channels * out_plane,
        "avgpool_fwd: y length"
    );
    if x.is_empty() || y.is_empty() {
        return;
    }
    y.par_chunks_mut(out_plane)
        .zip(x.par_chunks(g.in_h * g.in_w))
        .for_each(|(y, plane)| {
            for (o, y) in y.iter_mut().enumerate() {
                let (oh, ow) = (o / g.out_w, o % g.out_w);
                let divisor = avgpool_divisor(g, oh, ow, count_include_pad);
                *y = if divisor > 0 {
                    window_sum(plane, g, oh, ow, |v| v) / count(divisor)
                } else {
                    T::zero()
                };
            }
        });
}

/// Average-pooling backward as a gather: each pixel of `dx` (overwritten) sums `dy / divisor` over
/// the windows that read it. Windows with divisor 0 read no pixel, so they pass no gradient.
pub fn avgpool_bwd<T: Float>(dy: &[T], g: &ConvGeometry, count_include_pad: bool, dx: &mut [T]) {
    let out_plane = g.out_h * g.out_w;
    debug_assert_eq!(
        dy.len(),
        g.batch * g.in_channels * out_plane,
        "avgpool_bwd: dy length"
    );
    debug_assert_eq!(dx.len(), g.input_len(), "avgpool_bwd: dx length");
    if dx.is_empty() {
        return;
    }
    if dy.is_empty() {
        dx.fill(T::zero());
        return;
    }
    dx.par_chunks_mut(g.in_h * g.in_w)
        .zip(dy.par_chunks(out_plane))
        .for_each(|(dx, dy)| {
            for (i, dst) in dx.iter_mut().enumerate() {
                let mut sum = T::zero();
                for_each_window_reading(g, i / g.in_w, i % g.in_w, |oh, ow| {
                    let divisor = avgpool_divisor(g, oh, ow, count_include_pad);
                    sum = sum + dy[oh * g.out_w + ow] / count(divisor);
                });
                *dst = sum;
            }
        });
}

/// L2-norm pooling: `y = sqrt(Σ x²)` over each window's in-bounds taps (padding counts as 0). This
/// is PyTorch's `LPPool2d` with `p = 2`, which sums rather than averages.
pub fn l2pool_fwd<T: Float>(x: &[T], g: &ConvGeometry, y: &mut [T]) {
    let out_plane = g.out_h * g.out_w;
    debug_assert_eq!(x.len(), g.input_len(), "l2pool_fwd: x length");
    debug_assert_eq!(
        y.len(),
        g.batch * g.in_channels * out_plane,
        "l2pool_fwd: y length"
    );
    if x.is_empty() || y.is_empty() {
        return;
    }
    y.par_chunks_mut(out_plane)
        .zip(x.par_chunks(g.in_h * g.in_w))
        .for_each(|(y, plane)| {
            for (o, y) in y.iter_mut().enumerate() {
                *y = window_sum(plane, g, o / g.out_w, o % g.out_w, |v| v * v).sqrt();
            }
        });
}

/// L2-pooling backward as a gather: `dx = x · Σ dy / y` over the windows that read the pixel
/// (`dx` overwritten). A window with `y = 0` (all its taps are 0) passes no gradient: 0 is used
/// where the derivative of the norm does not exist.
pub fn l2pool_bwd<T: Float>(x: &[T], y: &[T], dy: &[T], g: &ConvGeometry, dx: &mut [T]) {
    let (plane, out_plane) = (g.in_h * g.in_w, g.out_h * g.out_w);
    debug_assert_eq!(x.len(), g.input_len(), "l2pool_bwd: x length");
    debug_assert_eq!(
        y.len(),
        g.batch * g.in_channels * out_plane,
        "l2pool_bwd: y length"
    );
    debug_assert_eq!(dy.len(), y.len(), "l2pool_bwd: dy length");
    debug_assert_eq!(dx.len(), x.len(), "l2pool_bwd: dx length");
    if dx.is_empty() {
        return;
    }
    if dy.is_empty() {
        dx.fill(T::zero());
        return;
    }
    dx.par_chunks_mut(plane)
        .zip(x.par_chunks(plane))
        .zip(y.par_chunks(out_plane).zip(dy.par_chunks(out_plane)))
        .for_each(|((dx, x), (y, dy))| {
            for (i, dst) in dx.iter_mut().enumerate() {
                let mut sum = T::zero();
                for_each_window_reading(g, i / g.in_w, i % g.in_w, |oh, ow| {
                    let o = oh * g.out_w + ow;
                    if y[o] > T::zero() {
                        sum = sum + dy[o] / y[o];
                    }
                });
                *dst = x[i] * sum;
            }
        });
}

/// Global average pooling: `y[p]` = the mean of plane `p` of `x` (planes of `plane_len` elements,
/// summed in order).
pub fn global_avgpool_fwd<T: Float>(x: &[T], plane_len: usize, y: &mut [T]) {
    debug_assert_eq!(x.len(), y.len() * plane_len, "global_avgpool_fwd: x length");
    if plane_len == 0 {
        y.fill(T::zero());
        return;
    }
    y.par_iter_mut()
        .zip(x.par_chunks(plane_len))
        .for_each(|(y, plane)| *y = plane.iter().fold(T::zero(), |s, &v| s + v) / count(plane_len));
}

/// Global average pooling backward: `dx[p][i] = dy[p] / plane_len` (`dx` overwritten).
pub fn global_avgpool_bwd<T: Float>(dy: &[T], plane_len: usize, dx: &mut [T]) {
    debug_assert_eq!(
        dx.len(),
        dy.len() * plane_len,
        "global_avgpool_bwd: dx length"
    );
    if plane_len == 0 {
        return;
    }
    dx.par_chunks_mut(plane_len)
        .zip(dy.par_iter())
        .for_each(|(dx, &d)| dx.fill(d / count(plane_len)));
}

#[cfg(test)]
mod tests {

    /// The 2x2 stride-2 fast path against the general window loop on odd planes (the last row
    /// and column are dropped), with ties (small integers) and NaN, batch and channels > 1.
    #[test]
    fn maxpool_2x2_fast_path_matches_the_general_windows() {
        use crate::cpu::testutil::{random_vec, rng};
        for (h, w) in [(7, 9), (2, 2), (8, 6), (3, 5)] {
            let g = ConvGeometry::new(
                [2, 3, h, w],
                crate::core::shape::Window2d::square(2, 2, 0),
                false,
            )
            .unwrap();
            let mut x: Vec<f64> = random_vec(&mut rng((h * w) as u64), g.input_len())
                .into_iter()
                .map(|v: f64| (v * 2.0).round())
                .collect();
            x[3] = f64::NAN;
            x[g.in_w] = f64::NAN;
            let taps = WindowTaps::new(&g);
            let out_plane = g.out_h * g.out_w;
            for (p, plane) in x.chunks(h * w).enumerate() {
                let (mut y, mut a) = (vec![0.0; out_plane], vec![0; out_plane]);
                let (mut y2, mut a2) = (vec![1.0; out_plane], vec![7; out_plane]);
                maxpool_fwd_plane(plane, &g, &taps, &mut y, &mut a);
                maxpool_fwd_plane_2x2(plane, &g, &mut y2, &mut a2);
                assert_eq!(a, a2, "plane {p} of {h}x{w}: argmax");
                let same = |u: f64, v: f64| u == v || (u.is_nan() && v.is_nan());
                assert!(
                    y.iter().zip(&y2).all(|(&u, &v)| same(u, v)),
                    "plane {p} of {h}x{w}: {y:?} vs {y2:?}"
                );
            }
        }
    }

    use super::*;
    use crate::core::shape::Window2d;
    use crate::cpu::testutil::{assert_close, random_vec, rng};

    fn run_fwd(x: &[f64], g: &ConvGeometry) -> (Vec<f64>, Vec<i32>) {
        let out = g.batch * g.in_channels * g.out_h * g.out_w;
        let (mut y, mut argmax) = (vec![f64::NAN; out], vec![i32::MIN; out]);
        maxpool_fwd(x, g, &mut y, &mut argmax);
        (y, argmax)
    }

    fn run_bwd(dy: &[f64], argmax: &[i32], g: &ConvGeometry) -> Vec<f64> {
        let mut dx = vec![f64::NAN; g.input_len()]; // overwritten, not accumulated
        maxpool_bwd(dy, argmax, g, &mut dx);
        dx
    }

    /// The lecture's 4x4 example, 2x2 windows with stride 2.
    #[test]
    fn lecture_2x2_stride_2() {
        let g = ConvGeometry::new([1, 1, 4, 4], Window2d::square(2, 2, 0), true).expect("fits");
        let x = [
            1., 3., 2., 4., 2., 9., 1., 1., 1., 3., 2., 3., 5., 6., 1., 2.,
        ];
        let (y, argmax) = run_fwd(&x, &g);
        assert_eq!(y, [9., 4., 6., 3.]);
        assert_eq!(argmax, [5, 3, 13, 11]); // (1,1), (0,3), (3,1), (2,3)
        let dx = run_bwd(&[1., 2., 3., 4.], &argmax, &g);
        let mut expected = [0.0; 16];
        for (&at, dy) in argmax.iter().zip([1., 2., 3., 4.]) {
            expected[at as usize] = dy;
        }
        assert_eq!(dx, expected);
    }

    /// Naive forward with the same tie rule, in signed coordinates.
    fn naive_fwd(x: &[f64], g: &ConvGeometry) -> (Vec<f64>, Vec<i32>) {
        let (mut y, mut argmax) = (Vec::new(), Vec::new());
        for plane in x.chunks(g.in_h * g.in_w) {
            for oh in 0..g.out_h as isize {
                for ow in 0..g.out_w as isize {
                    let mut best = (0.0, -1);
                    for kh in 0..g.kernel_h as isize {
                        for kw in 0..g.kernel_w as isize {
                            let h = oh * g.stride_h as isize - g.pad_h as isize
                                + kh * g.dilation_h as isize;
                            let w = ow * g.stride_w as isize - g.pad_w as isize
                                + kw * g.dilation_w as isize;
                            if h < 0 || w < 0 || h >= g.in_h as isize || w >= g.in_w as isize {
                                continue;
                            }
                            let i = (h * g.in_w as isize + w) as usize;
                            if best.1 < 0 || plane[i] > best.0 {
                                best = (plane[i], i as i32);
                            }
                        }
                    }
                    y.push(best.0);
                    argmax.push(best.1);
                }
            }
        }
        (y, argmax)
    }

    /// The scatter formulation: `dx[argmax] += dy`, per plane.
    fn naive_bwd(dy: &[f64], argmax: &[i32], g: &ConvGeometry) -> Vec<f64> {
        let (plane, out_plane) = (g.in_h * g.in_w, g.out_h * g.out_w);
        let mut dx = vec![0.0; g.input_len()];
        for (o, (&d, &at)) in dy.iter().zip(argmax).enumerate() {
            if at >= 0 {
                dx[o / out_plane * plane + at as usize] += d;
            }
        }
        dx
    }

    #[test]
    fn overlapping_windows_match_naive_scatter() {
        let mut rng = rng(21);
        let geometries = [
            ([2, 3, 9, 7], Window2d::square(3, 2, 1)),
            ([1, 2, 11, 13], Window2d::square(3, 2, 1).with_dilation(2)),
            ([3, 1, 7, 5], Window2d::square(2, 3, 1)),
        ];
        for (shape, window) in geometries {
            let g = ConvGeometry::new(shape, window, false).expect("valid test geometry");
            let x = random_vec(&mut rng, g.input_len());
            let (y, argmax) = run_fwd(&x, &g);
            let (y_ref, argmax_ref) = naive_fwd(&x, &g);
            assert_eq!(argmax, argmax_ref, "{g:?}");
            assert_close(&y, &y_ref, 0.0, 0.0);
            let dy = random_vec(&mut rng, y.len());
            assert_close(
                &run_bwd(&dy, &argmax, &g),
                &naive_bwd(&dy, &argmax, &g),
                1e-15,
                1e-15,
            );
        }
    }

    /// On a constant input every window's gradient goes to exactly one element: its first tap.
    #[test]
    fn ties_go_to_the_first_tap() {
        let g = ConvGeometry::new([1, 1, 5, 5], Window2d::square(3, 2, 1), true).expect("fits");
        let (y, argmax) = run_fwd(&[2.5; 25], &g);
        assert_eq!(y, [2.5; 9]);
        // First in-bounds tap of window (oh, ow) is (max(2·oh − 1, 0), max(2·ow − 1, 0)).
        let first = |o: usize| (2 * o).saturating_sub(1) as i32;
        let expected: Vec<i32> = (0..9).map(|o| first(o / 3) * 5 + first(o % 3)).collect();
        assert_eq!(argmax, expected);
        let dx = run_bwd(&[1.0; 9], &argmax, &g);
        assert_eq!(dx.iter().sum::<f64>(), 9.0);
        assert_eq!(dx.iter().filter(|&&v| v != 0.0).count(), 9);
    }

    /// Padding at least the kernel size leaves windows that see only padding: y = −∞ (the max of
    /// no values, as PyTorch's), argmax = −1, no gradient.
    #[test]
    fn padding_only_window_gives_minus_infinity_and_no_gradient() {
        let g = ConvGeometry::new([1, 1, 1, 2], Window2d::square(1, 1, 1), true).expect("fits");
        assert_eq!((g.out_h, g.out_w), (3, 4));
        let (y, argmax) = run_fwd(&[-3.0, -4.0], &g);
        let mut expected_y = [f64::NEG_INFINITY; 12];
        let mut expected_argmax = [-1; 12];
        (expected_y[5], expected_argmax[5]) = (-3.0, 0);
        (expected_y[6], expected_argmax[6]) = (-4.0, 1);
        assert_eq!(y, expected_y);
        assert_eq!(argmax, expected_argmax);
        let dx = run_bwd(&[1.0; 12], &argmax, &g);
        assert_eq!(dx, [1.0, 1.0]);
    }
}

#[cfg(test)]
mod avg_l2_global_tests {
    use super::*;
    use crate::core::shape::Window2d;
    use crate::cpu::testutil::{assert_close, random_vec, rng};

    /// The lecture's 4x4 example.
    const LECTURE: [f64; 16] = [
        1., 3., 2., 4., 2., 9., 1., 1., 1., 3., 2., 3., 5., 6., 1., 2.,
    ];

    fn geometry(shape: [usize; 4], window: Window2d) -> ConvGeometry {
        ConvGeometry::new(shape, window, false).expect("valid test geometry")
    }

    fn out_len(g: &ConvGeometry) -> usize {
        g.batch * g.in_channels * g.out_h * g.out_w
    }

    fn avg(x: &[f64], g: &ConvGeometry, include: bool) -> Vec<f64> {
        let mut y = vec![f64::NAN; out_len(g)]; // overwritten
        avgpool_fwd(x, g, include, &mut y);
        y
    }

    fn avg_bwd(dy: &[f64], g: &ConvGeometry, include: bool) -> Vec<f64> {
        let mut dx = vec![f64::NAN; g.input_len()]; // overwritten, not accumulated
        avgpool_bwd(dy, g, include, &mut dx);
        dx
    }

    fn l2(x: &[f64], g: &ConvGeometry) -> Vec<f64> {
        let mut y = vec![f64::NAN; out_len(g)];
        l2pool_fwd(x, g, &mut y);
        y
    }

    fn l2_bwd(x: &[f64], y: &[f64], dy: &[f64], g: &ConvGeometry) -> Vec<f64> {
        let mut dx = vec![f64::NAN; g.input_len()];
        l2pool_bwd(x, y, dy, g, &mut dx);
        dx
    }

    /// Windows 2x2 stride 2: [[1,3],[2,9]] = 15, [[2,4],[1,1]] = 8, [[1,3],[5,6]] = 15,
    /// [[2,3],[1,2]] = 8, each divided by 4 (no padding, so both modes agree).
    #[test]
    fn avg_lecture_2x2_stride_2() {
        let g = geometry([1, 1, 4, 4], Window2d::square(2, 2, 0));
        for include in [true, false] {
            assert_eq!(avg(&LECTURE, &g, include), [3.75, 2.0, 3.75, 2.0]);
            // Each pixel belongs to exactly one window and gets its dy / 4.
            let dx = avg_bwd(&[1., 2., 3., 4.], &g, include);
            let expected: Vec<f64> = (0..16)
                .map(|i| [1., 2., 3., 4.][(i / 8) * 2 + (i % 4) / 2] / 4.0)
                .collect();
            assert_eq!(dx, expected);
        }
    }

    /// Sums of squares computed by hand: 1+9+4+81 = 95, 4+16+1+1 = 22, 1+9+25+36 = 71,
    /// 4+9+1+4 = 18; y is their square root (LPPool2d with p = 2 sums, it does not average).
    #[test]
    fn l2_lecture_2x2_stride_2() {
        let g = geometry([1, 1, 4, 4], Window2d::square(2, 2, 0));
        let y = l2(&LECTURE, &g);
        let expected = [95.0f64, 22.0, 71.0, 18.0].map(f64::sqrt);
        assert_close(&y, &expected, 0.0, 1e-15);
        // dy = 1 everywhere: each pixel gets x / y of its one window.
        let dx = l2_bwd(&LECTURE, &y, &[1.0; 4], &g);
        let expected: Vec<f64> = (0..16)
            .map(|i| LECTURE[i] / expected[(i / 8) * 2 + (i % 4) / 2])
            .collect();
        assert_close(&dx, &expected, 0.0, 1e-15);
    }

    /// x = [[1,2,3],[4,5,6],[7,8,9]], 3x3 windows, stride 2, padding 1: a 2x2 output whose windows
    /// each see a 2x2 corner of x: 1+2+4+5 = 12, 2+3+5+6 = 16, 4+5+7+8 = 24, 5+6+8+9 = 28.
    /// count_include_pad divides by 9; otherwise by the 4 in-bounds taps.
    #[test]
    fn avg_3x3_stride_2_padding_1_both_modes() {
        let g = geometry([1, 1, 3, 3], Window2d::square(3, 2, 1));
        let x: Vec<f64> = (1..=9).map(f64::from).collect();
        assert_close(
            &avg(&x, &g, true),
            &[12. / 9., 16. / 9., 24. / 9., 28. / 9.],
            0.0,
            1e-15,
        );
        assert_eq!(avg(&x, &g, false), [3.0, 4.0, 6.0, 7.0]);
        // dy = 1: corners are in 1 window, edges in 2, the centre in all 4.
        let windows = [1., 2., 1., 2., 4., 2., 1., 2., 1.];
        let include: Vec<f64> = windows.iter().map(|n| n / 9.0).collect();
        let exclude: Vec<f64> = windows.iter().map(|n| n / 4.0).collect();
        assert_close(&avg_bwd(&[1.0; 4], &g, true), &include, 0.0, 1e-15);
        assert_eq!(avg_bwd(&[1.0; 4], &g, false), exclude);
    }

    /// Padding 1 around a 1x2 input with a 1x1 window: 10 of the 12 windows see only padding. They
    /// give 0 in both modes (0/1 when counting padding; no taps, so 0 by definition otherwise) and
    /// pass no gradient.
    #[test]
    fn padding_only_windows_give_zero_and_no_gradient() {
        let g = geometry([1, 1, 1, 2], Window2d::square(1, 1, 1));
        let mut expected = [0.0; 12];
        (expected[5], expected[6]) = (-3.0, 4.0);
        for include in [true, false] {
            assert_eq!(avg(&[-3.0, 4.0], &g, include), expected);
            assert_eq!(avg_bwd(&[1.0; 12], &g, include), [1.0, 1.0]);
        }
        let y = l2(&[-3.0, 4.0], &g);
        assert_eq!(y, expected.map(f64::abs));
        assert_eq!(l2_bwd(&[-3.0, 4.0], &y, &[1.0; 12], &g), [-1.0, 1.0]);
    }

    /// x = [[0,0],[3,4]] with 1x2 windows: norms 0 and 5. The zero window passes no gradient (not
    /// 0/0 = NaN); the other gives x/5.
    #[test]
    fn l2_zero_window_has_zero_gradient() {
        let g = geometry([1, 1, 2, 2], Window2d::valid((1, 2), (1, 1)));
        let x = [0.0, 0.0, 3.0, 4.0];
        let y = l2(&x, &g);
        assert_eq!(y, [0.0, 5.0]);
        let dx = l2_bwd(&x, &y, &[1.0, 1.0], &g);
        assert_eq!(dx[..2], [0.0, 0.0]);
        assert_close(&dx[2..], &[0.6, 0.8], 0.0, 1e-15); // 3·(1/5) rounds above 0.6
    }

    /// Odd sizes, overlapping windows, dilation, stride > kernel, asymmetric padding, batch 1.
    fn geometries() -> Vec<ConvGeometry> {
        [
            ([2, 3, 9, 7], Window2d::square(3, 2, 1)),
            ([1, 2, 11, 13], Window2d::square(3, 2, 1).with_dilation(2)),
            ([3, 1, 7, 5], Window2d::square(2, 3, 1)),
            ([1, 1, 6, 7], Window2d::same((4, 3), (1, 1))),
            (
                [2, 2, 5, 9],
                Window2d::new((2, 3), (1, 2), (0, 1)).with_padding(1, 3, 2, 0),
            ),
        ]
        .into_iter()
        .map(|(shape, window)| geometry(shape, window))
        .collect()
    }

    /// Every window by brute force in signed coordinates: (plane offset of each in-bounds tap).
    fn naive_windows(g: &ConvGeometry) -> Vec<Vec<usize>> {
        let mut windows = Vec::new();
        for plane in 0..g.batch * g.in_channels {
            for oh in 0..g.out_h as isize {
                for ow in 0..g.out_w as isize {
                    let mut taps = Vec::new();
                    for kh in 0..g.kernel_h as isize {
                        for kw in 0..g.kernel_w as isize {
                            let h = oh * g.stride_h as isize - g.pad_h as isize
                                + kh * g.dilation_h as isize;
                            let w = ow * g.stride_w as isize - g.pad_w as isize
                                + kw * g.dilation_w as isize;
                            if h >= 0 && w >= 0 && h < g.in_h as isize && w < g.in_w as isize {
                                taps.push(
                                    plane * g.in_h * g.in_w + (h as usize) * g.in_w + w as usize,
                                );
                            }
                        }
                    }
                    windows.push(taps);
                }
            }
        }
        windows
    }

    #[test]
    fn avg_matches_brute_force_and_backward_is_its_adjoint() {
        let mut rng = rng(31);
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(a, b)| a * b).sum::<f64>();
        for g in geometries() {
            let windows = naive_windows(&g);
            let x = random_vec(&mut rng, g.input_len());
            let c = random_vec(&mut rng, out_len(&g));
            for include in [true, false] {
                let expected: Vec<f64> = windows
                    .iter()
                    .map(|taps| {
                        let n = if include {
                            g.kernel_h * g.kernel_w
                        } else {
                            taps.len()
                        };
                        // A window of padding alone averages to 0 (padding_only_windows_give_zero...).
                        if n == 0 {
                            0.0
                        } else {
                            taps.iter().map(|&i| x[i]).sum::<f64>() / n as f64
                        }
                    })
                    .collect();
                let y = avg(&x, &g, include);
                assert_close(&y, &expected, 1e-15, 1e-14);
                // Average pooling is linear, so its backward is exactly its adjoint.
                let (lhs, rhs) = (dot(&y, &c), dot(&x, &avg_bwd(&c, &g, include)));
                assert!(
                    (lhs - rhs).abs() <= 1e-12 * lhs.abs().max(1.0),
                    "{g:?}: {lhs} vs {rhs}"
                );
            }
        }
    }

    #[test]
    fn l2_matches_brute_force_forward_and_scatter_backward() {
        let mut rng = rng(32);
        for g in geometries() {
            let windows = naive_windows(&g);
            let x = random_vec(&mut rng, g.input_len());
            let dy = random_vec(&mut rng, out_len(&g));
            let expected: Vec<f64> = windows
                .iter()
                .map(|taps| taps.iter().map(|&i| x[i] * x[i]).sum::<f64>().sqrt())
                .collect();
            let y = l2(&x, &g);
            assert_close(&y, &expected, 1e-15, 1e-14);
            let mut dx_ref = vec![0.0; g.input_len()];
            for ((taps, &norm), &d) in windows.iter().zip(&expected).zip(&dy) {
                for &i in taps {
                    dx_ref[i] += d * x[i] / norm;
                }
            }
            assert_close(&l2_bwd(&x, &y, &dy, &g), &dx_ref, 1e-13, 1e-12);
        }
    }

    /// Mean of the lecture's 4x4 by hand: rows sum to 10, 13, 9, 14, so 46 / 16 = 2.875; the second
    /// plane (x + 1) has mean 3.875. Backward spreads dy evenly: dy / 16.
    #[test]
    fn global_avg_lecture() {
        let x: Vec<f64> = LECTURE
            .iter()
            .chain(&LECTURE.map(|v| v + 1.0))
            .copied()
            .collect();
        let mut y = [f64::NAN; 2];
        global_avgpool_fwd(&x, 16, &mut y);
        assert_eq!(y, [2.875, 3.875]);
        let mut dx = vec![f64::NAN; 32];
        global_avgpool_bwd(&[8.0, -4.0], 16, &mut dx);
        assert_eq!(dx, [vec![0.5; 16], vec![-0.25; 16]].concat());
    }
}
