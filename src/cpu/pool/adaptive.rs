//! Adaptive average pooling, the twin of `adaptive_avgpool_*` in kernels/pool.cu: output row `i` of
//! `OH` reads input rows `[⌊i·H/OH⌋, ⌈(i + 1)·H/OH⌉)` (likewise for columns), as PyTorch's
//! `adaptive_avg_pool2d`.

use rayon::prelude::*;

use super::count;
use crate::core::shape::{adaptive_window, adaptive_windows_reading, AdaptivePool2d};
use crate::cpu::Float;

/// `y` [N,C,OH,OW] = the mean of each adaptive window of `x` [N,C,H,W], summed in row-major order
/// and divided by the window's size.
pub fn adaptive_avgpool_fwd<T: Float>(x: &[T], a: &AdaptivePool2d, y: &mut [T]) {
    let (in_plane, out_plane) = (a.in_h * a.in_w, a.out_h * a.out_w);
    debug_assert_eq!(
        x.len(),
        a.planes() * in_plane,
        "adaptive_avgpool_fwd: x length"
    );
    debug_assert_eq!(
        y.len(),
        a.planes() * out_plane,
        "adaptive_avgpool_fwd: y length"
    );
    if y.is_empty() {
        return;
    }
    y.par_chunks_mut(out_plane)
        .zip(x.par_chunks(in_plane))
        .for_each(|(y, x)| {
            for (o, y) in y.iter_mut().enumerate() {
                let (h0, h1) = adaptive_window(o / a.out_w, a.in_h, a.out_h);
                let (w0, w1) = adaptive_window(o % a.out_w, a.in_w, a.out_w);
                let mut sum = T::zero();
                for h in h0..h1 {
                    for w in w0..w1 {
                        sum = sum + x[h * a.in_w + w];
                    }
                }
                *y = sum / count((h1 - h0) * (w1 - w0));
            }
        });
}

/// The backward pass as a gather: each pixel of `dx` (overwritten) sums `dy / window size` over
/// the windows that read it, in row-major window order.
pub fn adaptive_avgpool_bwd<T: Float>(dy: &[T], a: &AdaptivePool2d, dx: &mut [T]) {
    let (in_plane, out_plane) = (a.in_h * a.in_w, a.out_h * a.out_w);
    debug_assert_eq!(
        dy.len(),
        a.planes() * out_plane,
        "adaptive_avgpool_bwd: dy length"
    );
    debug_assert_eq!(
        dx.len(),
        a.planes() * in_plane,
        "adaptive_avgpool_bwd: dx length"
    );
    if dx.is_empty() {
        return;
    }
    let size = |oh: usize, ow: usize| {
        let (h0, h1) = adaptive_window(oh, a.in_h, a.out_h);
        let (w0, w1) = adaptive_window(ow, a.in_w, a.out_w);
        (h1 - h0) * (w1 - w0)
    };
    dx.par_chunks_mut(in_plane)
        .zip(dy.par_chunks(out_plane))
        .for_each(|(dx, dy)| {
            for (i, dst) in dx.iter_mut().enumerate() {
                let (oh0, oh1) = adaptive_windows_reading(i / a.in_w, a.in_h, a.out_h);
                let (ow0, ow1) = adaptive_windows_reading(i % a.in_w, a.in_w, a.out_w);
                let mut sum = T::zero();
                for oh in oh0..oh1 {
                    for ow in ow0..ow1 {
                        sum = sum + dy[oh * a.out_w + ow] / count(size(oh, ow));
                    }
                }
                *dst = sum;
            }
        });
}
