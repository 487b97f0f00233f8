//! CPU reference of kernels/norm.cu: batch normalization per channel of an NCHW batch.
//!
//! For channel c over its M = N·H·W values: x̂ = (x − mean[c])/√(var[c] + eps), y = γ[c]·x̂ + β[c].
//! The per-channel sums run in a fixed order (image by image, pixel by pixel), so results are
//! deterministic; rayon spreads channels (the reductions) or elements (the maps) over threads.

use rayon::prelude::*;

use super::{Float, MIN_PAR_LEN};
pub use crate::core::layout::ChannelLayout;

/// The per-channel numbers a pass normalizes with: x̂ = (x − mean)/√(var + eps), scaled by γ.
#[derive(Clone, Copy, Debug)]
pub struct ChannelNorm<'a, T> {
    pub mean: &'a [T],
    pub var: &'a [T],
    pub gamma: &'a [T],
    pub eps: T,
}

impl<T: Float> ChannelNorm<'_, T> {
    fn inv_std(&self, c: usize) -> T {
        T::one() / (self.var[c] + self.eps).sqrt()
    }
}

/// `n` as a float (rounded for counts beyond 2⁵³ or 2²⁴).
fn as_float<T: Float>(n: usize) -> T {
    <T as num_traits::NumCast>::from(n).unwrap_or_else(T::nan)
}

/// The values of channel `c`, image by image.
fn channel<'a, T: Copy>(
    layout: &ChannelLayout,
    x: &'a [T],
    c: usize,
) -> impl Iterator<Item = &'a T> + 'a {
    let (channels, plane) = (layout.channels, layout.plane);
    (0..layout.batch).flat_map(move |n| {
        let start = (n * channels + c) * plane;
        x[start..start + plane].iter()
    })
}

/// Per channel: mean = Σx/M, then var = Σ(x − mean)²/M (biased), in two passes so a large common
/// offset does not cancel the variance away.
pub fn batch_norm_stats<T: Float>(x: &[T], layout: ChannelLayout, mean: &mut [T], var: &mut [T]) {
    debug_assert_eq!(x.len(), layout.len(), "batch_norm_stats: x length");
    debug_assert_eq!(mean.len(), layout.channels, "batch_norm_stats: mean length");
    debug_assert_eq!(var.len(), layout.channels, "batch_norm_stats: var length");
    let count: T = as_float(layout.count());
    mean.par_iter_mut()
        .zip(var.par_iter_mut())
        .enumerate()
        .for_each(|(c, (m, v))| {
            let mu = channel(&layout, x, c).fold(T::zero(), |s, &x| s + x) / count;
            let sq = channel(&layout, x, c).fold(T::zero(), |s, &x| {
                let d = x - mu;
                s + d * d
            });
            *m = mu;
            *v = sq / count;
        });
}

/// `y = γ·x̂ + β` per element.
pub fn batch_norm_fwd<T: Float>(
    x: &[T],
    layout: ChannelLayout,
    norm: ChannelNorm<'_, T>,
    beta: &[T],
    y: &mut [T],
) {
    debug_assert_eq!(x.len(), layout.len(), "batch_norm_fwd: x length");
    debug_assert_eq!(y.len(), x.len(), "batch_norm_fwd: y length");
    let (channels, plane) = (layout.channels, layout.plane.max(1));
    x.par_iter()
        .zip(y.par_iter_mut())
        .enumerate()
        .with_min_len(MIN_PAR_LEN)
        .for_each(|(i, (&x, y))| {
            let c = (i / plane) % channels;
            *y = norm.gamma[c] * ((x - norm.mean[c]) * norm.inv_std(c)) + beta[c];
        });
}

/// Per channel: `sum_dy = Σ dy` (= dβ) and `sum_dy_xhat = Σ dy·x̂` (= dγ).
pub fn batch_norm_bwd_reduce<T: Float>(
    dy: &[T],
    x: &[T],
    layout: ChannelLayout,
    norm: ChannelNorm<'_, T>,
    sum_dy: &mut [T],
    sum_dy_xhat: &mut [T],
) {
    debug_assert_eq!(x.len(), layout.len(), "batch_norm_bwd_reduce: x length");
    debug_assert_eq!(dy.len(), x.len(), "batch_norm_bwd_reduce: dy length");
    sum_dy
        .par_iter_mut()
        .zip(sum_dy_xhat.par_iter_mut())
        .enumerate()
        .for_each(|(c, (s, sx))| {
            let (mean, inv_std) = (norm.mean[c], norm.inv_std(c));
            let (mut a, mut b) = (T::zero(), T::zero());
            for (&d, &x) in channel(&layout, dy, c).zip(channel(&layout, x, c)) {
                a = a + d;
                b = b + d * ((x - mean) * inv_std);
            }
            *s = a;
            *sx = b;
        });
}

/// `dx = γ/σ·(dy − Σdy/M − x̂·Σdy·x̂/M)` when `training` (the statistics came from this batch),
/// else `dx = γ/σ·dy`. `sums` = (Σdy, Σdy·x̂) from [`batch_norm_bwd_reduce`].
pub fn batch_norm_bwd_dx<T: Float>(
    dy: &[T],
    x: &[T],
    layout: ChannelLayout,
    norm: ChannelNorm<'_, T>,
    sums: (&[T], &[T]),
    training: bool,
    dx: &mut [T],
) {
    debug_assert_eq!(x.len(), layout.len(), "batch_norm_bwd_dx: x length");
    debug_assert_eq!(dy.len(), x.len(), "batch_norm_bwd_dx: dy length");
    debug_assert_eq!(dx.len(), x.len(), "batch_norm_bwd_dx: dx length");
    let (channels, plane) = (layout.channels, layout.plane.max(1));
    let inv_count = T::one() / as_float::<T>(layout.count());
    let (sum_dy, sum_dy_xhat) = sums;
    dy.par_iter()
        .zip(x.par_iter())
        .zip(dx.par_iter_mut())
        .enumerate()
        .with_min_len(MIN_PAR_LEN)
        .for_each(|(i, ((&dy, &x), dx))| {
            let c = (i / plane) % channels;
            let inv_std = norm.inv_std(c);
            let mut g = dy;
            if training {
                let xhat = (x - norm.mean[c]) * inv_std;
                g = g - (sum_dy[c] * inv_count + xhat * (sum_dy_xhat[c] * inv_count));
            }
            *dx = norm.gamma[c] * inv_std * g;
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testutil::{assert_close, random_vec, rng};

    /// N = 2, C = 1, H×W = 1×2: the channel holds 1, 3, 5, 7, so mean = 4 and the biased variance is
    /// (9 + 1 + 1 + 9)/4 = 5.
    #[test]
    fn stats_by_hand() {
        let layout = ChannelLayout {
            batch: 2,
            channels: 1,
            plane: 2,
        };
        let (mut mean, mut var) = ([0.0_f64], [0.0_f64]);
        batch_norm_stats(&[1.0, 3.0, 5.0, 7.0], layout, &mut mean, &mut var);
        assert_eq!((mean[0], var[0]), (4.0, 5.0));
    }

    /// Two channels interleaved by image: channel 0 holds {1, 2, 3, 4}, channel 1 holds {10, 30}
    /// repeated. The f64 reference sums each channel separately.
    #[test]
    fn stats_pick_each_channels_values() {
        let layout = ChannelLayout {
            batch: 2,
            channels: 2,
            plane: 2,
        };
        let x = [1.0, 2.0, 10.0, 30.0, 3.0, 4.0, 10.0, 30.0];
        let (mut mean, mut var) = ([0.0_f64; 2], [0.0_f64; 2]);
        batch_norm_stats(&x, layout, &mut mean, &mut var);
        // channel 0: mean 2.5, var (2.25 + 0.25 + 0.25 + 2.25)/4 = 1.25; channel 1: mean 20, var 100.
        assert_eq!(mean, [2.5, 20.0]);
        assert_eq!(var, [1.25, 100.0]);
    }

    /// Mean 1000 and spread 0.1 in f32: E[x²] − E[x]² would lose every digit (ulp(10⁶) ≈ 0.06 is
    /// larger than the variance); the two passes keep it to f32 rounding.
    #[test]
    fn stats_survive_a_large_mean() {
        let layout = ChannelLayout {
            batch: 3,
            channels: 2,
            plane: 35,
        };
        let mut r = rng(5);
        let x: Vec<f32> = random_vec::<f32>(&mut r, layout.len())
            .into_iter()
            .map(|v| 1000.0 + 0.1 * v)
            .collect();
        let (mut mean, mut var) = ([0.0_f32; 2], [0.0_f32; 2]);
        batch_norm_stats(&x, layout, &mut mean, &mut var);
        for c in 0..2 {
            let vals: Vec<f64> = channel(&layout, &x, c).map(|&v| v as f64).collect();
            let m = vals.iter().sum::<f64>() / vals.len() as f64;
            let v = vals.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / vals.len() as f64;
            assert_close(&[mean[c] as f64], &[m], 1e-3, 0.0);
            assert_close(&[var[c] as f64], &[v], 0.0, 1e-2);
        }
    }

    /// x = [1, 3, 5, 7] (one channel), mean 4, var 5, eps 0, γ = 2, β = 1:
    /// x̂ = [−3, −1, 1, 3]/√5 and y = 2x̂ + 1.
    #[test]
    fn forward_by_hand() {
        let layout = ChannelLayout {
            batch: 2,
            channels: 1,
            plane: 2,
        };
        let norm = ChannelNorm {
            mean: &[4.0],
            var: &[5.0],
            gamma: &[2.0],
            eps: 0.0,
        };
        let mut y = [0.0_f64; 4];
        batch_norm_fwd(&[1.0, 3.0, 5.0, 7.0], layout, norm, &[1.0], &mut y);
        let s = 5.0_f64.sqrt();
        assert_close(
            &y,
            &[1.0 - 6.0 / s, 1.0 - 2.0 / s, 1.0 + 2.0 / s, 1.0 + 6.0 / s],
            1e-15,
            1e-15,
        );
    }

    /// Same input, dy = [1, 0, 0, 0]: Σdy = 1, Σdy·x̂ = −3/√5. Training:
    /// dx = γ/σ·(dy − 1/4 − x̂·(−3/√5)/4) = (2/√5)·(dy − 1/4 + 3x̂/(4√5)), with x̂ = [−3, −1, 1, 3]/√5,
    /// i.e. (2/√5)·[1 − 1/4 − 9/20, −1/4 − 3/20, −1/4 + 3/20, −1/4 + 9/20] = (2/√5)·[0.3, −0.4, −0.1, 0.2].
    /// Evaluation: dx = (2/√5)·dy.
    #[test]
    fn backward_by_hand() {
        let layout = ChannelLayout {
            batch: 2,
            channels: 1,
            plane: 2,
        };
        let norm = ChannelNorm {
            mean: &[4.0],
            var: &[5.0],
            gamma: &[2.0],
            eps: 0.0,
        };
        let (x, dy) = ([1.0, 3.0, 5.0, 7.0], [1.0, 0.0, 0.0, 0.0]);
        let (mut s, mut sx) = ([0.0_f64], [0.0_f64]);
        batch_norm_bwd_reduce(&dy, &x, layout, norm, &mut s, &mut sx);
        let r5 = 5.0_f64.sqrt();
        assert_close(&[s[0], sx[0]], &[1.0, -3.0 / r5], 1e-15, 1e-15);
        let mut dx = [0.0; 4];
        batch_norm_bwd_dx(&dy, &x, layout, norm, (&s, &sx), true, &mut dx);
        let k = 2.0 / r5;
        assert_close(&dx, &[0.3 * k, -0.4 * k, -0.1 * k, 0.2 * k], 1e-15, 1e-14);
        batch_norm_bwd_dx(&dy, &x, layout, norm, (&s, &sx), false, &mut dx);
        assert_close(&dx, &[k, 0.0, 0.0, 0.0], 1e-15, 1e-15);
    }

    /// Long enough (above [`MIN_PAR_LEN`]) that rayon splits the element loops; checks the channel
    /// index of every element against a naive loop.
    #[test]
    fn forward_matches_naive_on_random_input() {
        let layout = ChannelLayout {
            batch: 3,
            channels: 5,
            plane: 13 * 23,
        };
        let mut r = rng(9);
        let x: Vec<f64> = random_vec(&mut r, layout.len());
        let gamma: Vec<f64> = random_vec(&mut r, 5);
        let beta: Vec<f64> = random_vec(&mut r, 5);
        let (mut mean, mut var) = (vec![0.0; 5], vec![0.0; 5]);
        batch_norm_stats(&x, layout, &mut mean, &mut var);
        let norm = ChannelNorm {
            mean: &mean,
            var: &var,
            gamma: &gamma,
            eps: 1e-5,
        };
        let mut y = vec![0.0; x.len()];
        batch_norm_fwd(&x, layout, norm, &beta, &mut y);
        let mut y_ref = vec![0.0; x.len()];
        for n in 0..3 {
            for c in 0..5 {
                for q in 0..layout.plane {
                    let i = (n * 5 + c) * layout.plane + q;
                    y_ref[i] = gamma[c] * (x[i] - mean[c]) / (var[c] + 1e-5).sqrt() + beta[c];
                }
            }
        }
        assert_close(&y, &y_ref, 1e-14, 1e-13);
    }
}
