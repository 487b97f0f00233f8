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

/// The planes of channel `c`, image by image.
fn planes<'a, T>(
    layout: &ChannelLayout,
    x: &'a [T],
    c: usize,
) -> impl Iterator<Item = &'a [T]> + 'a {
    let (channels, plane) = (layout.channels, layout.plane);
    (0..layout.batch).map(move |n| &x[(n * channels + c) * plane..][..plane])
}

/// Independent partial sums: [`LANES`] accumulators, one per position modulo `LANES`, so the
/// compiler can keep them in one vector register; added pairwise at the end. The order is fixed
/// (it depends only on the length), so results are deterministic.
const LANES: usize = 8;

/// A channel with fewer values than [`MIN_PAR_LEN`] is summed strictly in memory order, in lane 0
/// (speed does not matter there, and the sums then equal a plain sequential loop's bit for bit).
#[derive(Clone, Copy)]
struct Lanes<T> {
    lanes: [T; LANES],
    in_order: bool,
}

impl<T: Float> Lanes<T> {
    fn zero(layout: &ChannelLayout) -> Self {
        Lanes {
            lanes: [T::zero(); LANES],
            in_order: layout.count() < MIN_PAR_LEN,
        }
    }

    /// Adds `f(a[i], b[i])` for every `i` (lane `i mod LANES`).
    #[inline(always)]
    fn add_map2(&mut self, a: &[T], b: &[T], f: impl Fn(T, T) -> T) {
        if self.in_order {
            for (&a, &b) in a.iter().zip(b) {
                self.lanes[0] = self.lanes[0] + f(a, b);
            }
            return;
        }
        let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
        let (ra, rb) = (ca.remainder(), cb.remainder());
        for (a, b) in ca.zip(cb) {
            for l in 0..LANES {
                self.lanes[l] = self.lanes[l] + f(a[l], b[l]);
            }
        }
        for (l, (&a, &b)) in ra.iter().zip(rb).enumerate() {
            self.lanes[l] = self.lanes[l] + f(a, b);
        }
    }

    #[inline(always)]
    fn add_map(&mut self, a: &[T], f: impl Fn(T) -> T) {
        self.add_map2(a, a, |a, _| f(a));
    }

    fn total(self) -> T {
        let l = self.lanes;
        ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]))
    }
}

/// Planes per rayon task of an element-wise pass, so a task holds at least `MIN_PAR_LEN` values.
fn planes_per_task(plane: usize) -> usize {
    MIN_PAR_LEN.div_ceil(plane.max(1))
}

/// Per channel: mean = Σx/M, then var = Σ(x − mean)²/M (biased), in two passes so a large common
/// offset does not cancel the variance away.
pub fn batch_norm_stats<T: Float>(x: &[T], layout: ChannelLayout, mean: &mut [T], var: &mut [T]) {
    debug_assert_eq!(x.len(), layout.len(), "batch_norm_stats: x length");
    debug_assert_eq!(mean.len(), layout.channels, "batch_norm_stats: mean length");
    debug_assert_eq!(var.len(), layout.channels, "batch_norm_stats: var length");
    let count: T = as_float(layout.count());
    let stats = |c: usize, (m, v): (&mut T, &mut T)| {
        let mut sum = Lanes::zero(&layout);
        planes(&layout, x, c).for_each(|p| sum.add_map(p, |x| x));
        let mu = sum.total() / count;
        let mut sq = Lanes::zero(&layout);
        planes(&layout, x, c).for_each(|p| {
            sq.add_map(p, |x| {
                let d = x - mu;
                d * d
            })
        });
        *m = mu;
        *v = sq.total() / count;
    };
    if layout.len() < MIN_PAR_LEN {
        mean.iter_mut()
            .zip(var.iter_mut())
            .enumerate()
            .for_each(|(c, mv)| stats(c, mv));
    } else {
        mean.par_iter_mut()
            .zip(var.par_iter_mut())
            .enumerate()
            .for_each(|(c, mv)| stats(c, mv));
    }
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
    let (channels, plane) = (layout.channels, layout.plane);
    if plane == 0 || channels == 0 {
        return;
    }
    y.par_chunks_mut(plane)
        .zip(x.par_chunks(plane))
        .enumerate()
        .with_min_len(planes_per_task(plane))
        .for_each(|(i, (y, x))| {
            let c = i % channels;
            let (gamma, mean, inv_std, beta) =
                (norm.gamma[c], norm.mean[c], norm.inv_std(c), beta[c]);
            y.iter_mut()
                .zip(x)
                .for_each(|(y, &x)| *y = gamma * ((x - mean) * inv_std) + beta);
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
    let sums = |c: usize, (s, sx): (&mut T, &mut T)| {
        let (mean, inv_std) = (norm.mean[c], norm.inv_std(c));
        let (mut a, mut b) = (Lanes::zero(&layout), Lanes::zero(&layout));
        for (d, x) in planes(&layout, dy, c).zip(planes(&layout, x, c)) {
            a.add_map(d, |d| d);
            b.add_map2(d, x, |d, x| d * ((x - mean) * inv_std));
        }
        *s = a.total();
        *sx = b.total();
    };
    if layout.len() < MIN_PAR_LEN {
        sum_dy
            .iter_mut()
            .zip(sum_dy_xhat.iter_mut())
            .enumerate()
            .for_each(|(c, s)| sums(c, s));
    } else {
        sum_dy
            .par_iter_mut()
            .zip(sum_dy_xhat.par_iter_mut())
            .enumerate()
            .for_each(|(c, s)| sums(c, s));
    }
}

/// What [`batch_norm_bwd_dx`] needs of the batch the statistics came from: per channel Σdy and
/// Σdy·x̂ ([`batch_norm_bwd_reduce`] for this batch alone) and the count M of values they sum over.
#[derive(Clone, Copy, Debug)]
pub struct ChannelSums<'a, T> {
    pub sum_dy: &'a [T],
    pub sum_dy_xhat: &'a [T],
    pub count: usize,
}

/// `dx = γ/σ·(dy − Σdy/M − x̂·Σdy·x̂/M)` when `training` (the statistics came from the batch that
/// `sums` sums over), else `dx = γ/σ·dy`.
pub fn batch_norm_bwd_dx<T: Float>(
    dy: &[T],
    x: &[T],
    layout: ChannelLayout,
    norm: ChannelNorm<'_, T>,
    sums: ChannelSums<'_, T>,
    training: bool,
    dx: &mut [T],
) {
    debug_assert_eq!(x.len(), layout.len(), "batch_norm_bwd_dx: x length");
    debug_assert_eq!(dy.len(), x.len(), "batch_norm_bwd_dx: dy length");
    debug_assert_eq!(dx.len(), x.len(), "batch_norm_bwd_dx: dx length");
    let (channels, plane) = (layout.channels, layout.plane);
    if plane == 0 || channels == 0 {
        return;
    }
    let inv_count = T::one() / as_float::<T>(sums.count);
    let (sum_dy, sum_dy_xhat) = (sums.sum_dy, sums.sum_dy_xhat);
    dx.par_chunks_mut(plane)
        .zip(dy.par_chunks(plane).zip(x.par_chunks(plane)))
        .enumerate()
        .with_min_len(planes_per_task(plane))
        .for_each(|(i, (dx, (dy, x)))| {
            let c = i % channels;
            let (mean, inv_std, gamma) = (norm.mean[c], norm.inv_std(c), norm.gamma[c]);
            let (mean_dy, mean_dy_xhat) = (sum_dy[c] * inv_count, sum_dy_xhat[c] * inv_count);
            let scale = gamma * inv_std;
            if training {
                dx.iter_mut()
                    .zip(dy.iter().zip(x))
                    .for_each(|(dx, (&dy, &x))| {
                        let xhat = (x - mean) * inv_std;
                        *dx = scale * (dy - (mean_dy + xhat * mean_dy_xhat));
                    });
            } else {
                dx.iter_mut().zip(dy).for_each(|(dx, &dy)| *dx = scale * dy);
            }
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
            let vals: Vec<f64> = planes(&layout, &x, c)
                .flatten()
                .map(|&v| v as f64)
                .collect();
            let m = vals.iter().sum::<f64>() / vals.len() as f64;
            let v = vals.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / vals.len() as f64;
            assert_close(&[mean[c] as f64], &[m], 1e-3, 0.0);
            assert_close(&[var[c] as f64], &[v], 0.0, 1e-2);
        }
    }

    /// The statistics of the hand-worked batch x = [1, 3, 5, 7]: mean 4, var 5, eps 0, γ = 2.
    const HAND_NORM: ChannelNorm<'static, f64> = ChannelNorm {
        mean: &[4.0],
        var: &[5.0],
        gamma: &[2.0],
        eps: 0.0,
    };

    /// x = [1, 3, 5, 7] (one channel), mean 4, var 5, eps 0, γ = 2, β = 1:
    /// x̂ = [−3, −1, 1, 3]/√5 and y = 2x̂ + 1.
    #[test]
    fn forward_by_hand() {
        let layout = ChannelLayout {
            batch: 2,
            channels: 1,
            plane: 2,
        };
        let norm = HAND_NORM;
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
        let norm = HAND_NORM;
        let (x, dy) = ([1.0, 3.0, 5.0, 7.0], [1.0, 0.0, 0.0, 0.0]);
        let (mut s, mut sx) = ([0.0_f64], [0.0_f64]);
        batch_norm_bwd_reduce(&dy, &x, layout, norm, &mut s, &mut sx);
        let r5 = 5.0_f64.sqrt();
        assert_close(&[s[0], sx[0]], &[1.0, -3.0 / r5], 1e-15, 1e-15);
        let mut dx = [0.0; 4];
        let sums = ChannelSums {
            sum_dy: &s,
            sum_dy_xhat: &sx,
            count: layout.count(),
        };
        batch_norm_bwd_dx(&dy, &x, layout, norm, sums, true, &mut dx);
        let k = 2.0 / r5;
        assert_close(&dx, &[0.3 * k, -0.4 * k, -0.1 * k, 0.2 * k], 1e-15, 1e-14);
        batch_norm_bwd_dx(&dy, &x, layout, norm, sums, false, &mut dx);
        assert_close(&dx, &[k, 0.0, 0.0, 0.0], 1e-15, 1e-15);
    }

    /// The batch of `backward_by_hand` split in two images of one value pair each (a batch
    /// sharded over ranks): each half's dx from the whole batch's sums and count M = 4 is its
    /// slice of the whole batch's dx, (2/√5)·[0.3, −0.4] and (2/√5)·[−0.1, 0.2].
    #[test]
    fn a_shard_with_the_whole_batchs_sums_gets_its_slice_of_the_whole_dx() {
        let half = ChannelLayout {
            batch: 1,
            channels: 1,
            plane: 2,
        };
        let norm = HAND_NORM;
        let r5 = 5.0_f64.sqrt();
        let sums = ChannelSums {
            sum_dy: &[1.0],
            sum_dy_xhat: &[-3.0 / r5],
            count: 4,
        };
        let k = 2.0 / r5;
        let mut dx = [0.0; 2];
        batch_norm_bwd_dx(&[1.0, 0.0], &[1.0, 3.0], half, norm, sums, true, &mut dx);
        assert_close(&dx, &[0.3 * k, -0.4 * k], 1e-15, 1e-14);
        batch_norm_bwd_dx(&[0.0, 0.0], &[5.0, 7.0], half, norm, sums, true, &mut dx);
        assert_close(&dx, &[-0.1 * k, 0.2 * k], 1e-15, 1e-14);
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
