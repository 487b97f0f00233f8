//! Max pooling over NCHW planes, with the argmax kept for a deterministic gather backward.
//!
//! Windows are the convolution windows of [`ConvGeometry`] (stride, padding, dilation); padded taps
//! never win. `x`/`dx` are `[N][C][H][W]`; `y`, `dy` and `argmax` are `[N][C][OH][OW]`.

use rayon::prelude::*;

use super::im2col::{tap_input, tap_output};
use super::Float;
use crate::shape::ConvGeometry;

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
    y.par_chunks_mut(out_plane)
        .zip(argmax.par_chunks_mut(out_plane))
        .zip(x.par_chunks(g.in_h * g.in_w))
        .for_each(|((y, argmax), plane)| maxpool_fwd_plane(plane, g, y, argmax));
}

/// Max pooling of one `[H][W]` plane into its `[OH][OW]` outputs.
fn maxpool_fwd_plane<T: Float>(plane: &[T], g: &ConvGeometry, y: &mut [T], argmax: &mut [i32]) {
    for (o, (y, argmax)) in y.iter_mut().zip(argmax.iter_mut()).enumerate() {
        let (oh, ow) = (o / g.out_w, o % g.out_w);
        let mut best: Option<(T, usize)> = None;
        for kh in 0..g.kernel_h {
            let Some(ih) = tap_input(oh, kh, g.stride_h, g.pad_h, g.dilation_h, g.in_h) else {
                continue;
            };
            for kw in 0..g.kernel_w {
                let Some(iw) = tap_input(ow, kw, g.stride_w, g.pad_w, g.dilation_w, g.in_w) else {
                    continue;
                };
                let i = ih * g.in_w + iw;
                if best.is_none_or(|(v, _)| plane[i] > v) {
                    best = Some((plane[i], i));
                }
            }
        }
        (*y, *argmax) = match best {
            Some((v, i)) => (v, i as i32),
            None => (T::zero(), -1),
        };
    }
}

/// Max-pooling backward as a gather: each input pixel of `dx` (overwritten) sums `dy` over the
/// windows that contain it and chose it as their argmax, in row-major `(kh, kw)` tap order.
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
        .for_each(|(dx, (dy, argmax))| maxpool_bwd_plane(dy, argmax, g, dx));
}

/// Max-pooling backward of one plane: `[OH][OW]` gradients and argmax into `[H][W]`.
fn maxpool_bwd_plane<T: Float>(dy: &[T], argmax: &[i32], g: &ConvGeometry, dx: &mut [T]) {
    for (i, dst) in dx.iter_mut().enumerate() {
        let (h, w) = (i / g.in_w, i % g.in_w);
        let mut sum = T::zero();
        for kh in 0..g.kernel_h {
            let Some(oh) = tap_output(h, kh, g.stride_h, g.pad_h, g.dilation_h, g.out_h) else {
                continue;
            };
            for kw in 0..g.kernel_w {
                let Some(ow) = tap_output(w, kw, g.stride_w, g.pad_w, g.dilation_w, g.out_w) else {
                    continue;
                };
                let o = oh * g.out_w + ow;
                if argmax[o] == i as i32 {
                    sum = sum + dy[o];
                }
            }
        }
        *dst = sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testutil::{assert_close, random_vec, rng};
    use crate::shape::Window2d;

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

    /// Padding at least the kernel size leaves windows that see only padding: y = 0, argmax = −1.
    #[test]
    fn padding_only_window_gives_zero_and_no_gradient() {
        let g = ConvGeometry::new([1, 1, 1, 2], Window2d::square(1, 1, 1), true).expect("fits");
        assert_eq!((g.out_h, g.out_w), (3, 4));
        let (y, argmax) = run_fwd(&[-3.0, -4.0], &g);
        let mut expected_y = [0.0; 12];
        let mut expected_argmax = [-1; 12];
        (expected_y[5], expected_argmax[5]) = (-3.0, 0);
        (expected_y[6], expected_argmax[6]) = (-4.0, 1);
        assert_eq!(y, expected_y);
        assert_eq!(argmax, expected_argmax);
        let dx = run_bwd(&[1.0; 12], &argmax, &g);
        assert_eq!(dx, [1.0, 1.0]);
    }
}
