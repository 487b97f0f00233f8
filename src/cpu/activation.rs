//! Activations: ReLU (with a byte mask), leaky ReLU, ELU, ReLU6, sigmoid, tanh; softmax and log-softmax
//! along any axis; maxout over groups of channels. The twins of kernels/activation.cu.

use rayon::prelude::*;

use super::{Float, MIN_PAR_LEN};
pub use crate::core::layout::{MaxoutLayout, RowLayout};

/// `y = max(x, 0)` and `mask = 1` where `x > 0`, else 0 (NaN gives `y = 0`, `mask = 0`).
pub fn relu_fwd<T: Float>(x: &[T], y: &mut [T], mask: &mut [u8]) {
    debug_assert_eq!(y.len(), x.len(), "relu_fwd: y length");
    debug_assert_eq!(mask.len(), x.len(), "relu_fwd: mask length");
    x.par_iter()
        .zip(y.par_iter_mut())
        .zip(mask.par_iter_mut())
        .with_min_len(MIN_PAR_LEN)
        .for_each(|((&x, y), m)| {
            let on = x > T::zero();
            *y = if on { x } else { T::zero() };
            *m = u8::from(on);
        });
}

/// `dx = dy` where `mask` is set, else 0: the gradient at exactly `x = 0` is 0, as in PyTorch.
pub fn relu_bwd<T: Float>(dy: &[T], mask: &[u8], dx: &mut [T]) {
    debug_assert_eq!(mask.len(), dy.len(), "relu_bwd: mask length");
    debug_assert_eq!(dx.len(), dy.len(), "relu_bwd: dx length");
    dy.par_iter()
        .zip(mask.par_iter())
        .zip(dx.par_iter_mut())
        .with_min_len(MIN_PAR_LEN)
        .for_each(|((&dy, &m), dx)| *dx = if m != 0 { dy } else { T::zero() });
}

/// `y = f(x)` element-wise, split over rayon like the other element-wise loops.
fn map<T: Float>(x: &[T], y: &mut [T], f: impl Fn(T) -> T + Sync) {
    debug_assert_eq!(y.len(), x.len(), "activation: y length");
    x.par_iter()
        .zip(y.par_iter_mut())
        .with_min_len(MIN_PAR_LEN)
        .for_each(|(&x, y)| *y = f(x));
}

/// `dx = f(saved, dy)` element-wise.
fn map2<T: Float>(saved: &[T], dy: &[T], dx: &mut [T], f: impl Fn(T, T) -> T + Sync) {
    debug_assert_eq!(dy.len(), saved.len(), "activation backward: dy length");
    debug_assert_eq!(dx.len(), saved.len(), "activation backward: dx length");
    saved
        .par_iter()
        .zip(dy.par_iter())
        .zip(dx.par_iter_mut())
        .with_min_len(MIN_PAR_LEN)
        .for_each(|((&s, &d), dx)| *dx = f(s, d));
}

/// Leaky ReLU: `y = x > 0 ? x : slope·x`.
pub fn leaky_relu_fwd<T: Float>(x: &[T], slope: T, y: &mut [T]) {
    map(x, y, |v| if v > T::zero() { v } else { slope * v });
}

/// `dx = dy · (x > 0 ? 1 : slope)`: the slope at exactly `x = 0` is `slope`, as PyTorch's
/// `leaky_relu_backward` (`self > 0 ? grad : grad·negval`).
pub fn leaky_relu_bwd<T: Float>(x: &[T], dy: &[T], slope: T, dx: &mut [T]) {
    map2(x, dy, dx, |v, d| if v > T::zero() { d } else { slope * d });
}

/// ELU: `y = x > 0 ? x : alpha·(exp(x) − 1)` (with `exp_m1`).
pub fn elu_fwd<T: Float>(x: &[T], alpha: T, y: &mut [T]) {
    map(x, y, |v| if v > T::zero() { v } else { alpha * v.exp_m1() });
}

/// `dx = dy · (x > 0 ? 1 : alpha·exp(x))`: the slope at exactly `x = 0` is `alpha`, as PyTorch's
/// `elu_backward` (whose `x ≤ 0` branch is `alpha·exp(x)`, i.e. `y + alpha`).
pub fn elu_bwd<T: Float>(x: &[T], dy: &[T], alpha: T, dx: &mut [T]) {
    map2(x, dy, dx, |v, d| {
        if v > T::zero() {
            d
        } else {
            d * alpha * v.exp()
        }
    });
}

/// ReLU6's upper bound, 6.
fn relu6_cap<T: Float>() -> T {
    T::from(6.0).expect("6 converts to f32 and f64")
}

/// ReLU6 (PyTorch's `relu6` = `hardtanh(x, 0, 6)`): `y = min(max(x, 0), 6)`; NaN and −0 stay.
pub fn relu6_fwd<T: Float>(x: &[T], y: &mut [T]) {
    let six = relu6_cap::<T>();
    map(x, y, |v| {
        if v < T::zero() {
            T::zero()
        } else if v > six {
            six
        } else {
            v
        }
    });
}

/// `dx = 0` where `x ≤ 0` or `x ≥ 6`, else `dy`: exactly `x = 0` and `x = 6` get 0 and NaN passes
/// `dy`, as PyTorch's `hardtanh_backward` (`x <= min || x >= max ? 0 : grad`).
pub fn relu6_bwd<T: Float>(x: &[T], dy: &[T], dx: &mut [T]) {
    let six = relu6_cap::<T>();
    map2(x, dy, dx, |v, d| {
        if v <= T::zero() || v >= six {
            T::zero()
        } else {
            d
        }
    });
}

/// The logistic function without overflow: `exp` only sees non-positive arguments.
pub fn stable_sigmoid<T: Float>(v: T) -> T {
    if v >= T::zero() {
        T::one() / (T::one() + (-v).exp())
    } else {
        let e = v.exp();
        e / (T::one() + e)
    }
}

/// `y = 1 / (1 + exp(−x))`.
pub fn sigmoid_fwd<T: Float>(x: &[T], y: &mut [T]) {
    map(x, y, stable_sigmoid);
}

/// `dx = dy · y(1 − y)` from the saved output `y`.
pub fn sigmoid_bwd<T: Float>(y: &[T], dy: &[T], dx: &mut [T]) {
    map2(y, dy, dx, |y, d| d * y * (T::one() - y));
}

/// `y = tanh(x)`.
pub fn tanh_fwd<T: Float>(x: &[T], y: &mut [T]) {
    map(x, y, T::tanh);
}

/// `dx = dy · (1 − y²)` from the saved output `y`.
pub fn tanh_bwd<T: Float>(y: &[T], dy: &[T], dx: &mut [T]) {
    map2(y, dy, dx, |y, d| d * (T::one() - y * y));
}

/// Softmax along the rows of `layout` (or log-softmax when `log`), stable for logits of any
/// magnitude: `y = exp(x − m) / Σ exp(x − m)`, `log y = (x − m) − log Σ exp(x − m)` with `m` the
/// row max (subtracted first, so logits in the thousands keep their digits). Each row is summed in
/// order.
pub fn softmax_fwd<T: Float>(x: &[T], layout: RowLayout, log: bool, y: &mut [T]) {
    debug_assert_eq!(x.len(), layout.numel(), "softmax_fwd: x length");
    debug_assert_eq!(y.len(), layout.numel(), "softmax_fwd: y length");
    let RowLayout { len, inner, .. } = layout;
    if len * inner == 0 {
        return;
    }
    y.par_chunks_mut(len * inner)
        .zip(x.par_chunks(len * inner))
        .for_each(|(y, x)| {
            for i in 0..inner {
                let at = |j: usize| j * inner + i;
                let m = (0..len).map(|j| x[at(j)]).fold(T::neg_infinity(), T::max);
                let s = (0..len).fold(T::zero(), |s, j| s + (x[at(j)] - m).exp());
                if log {
                    let log_s = s.ln();
                    (0..len).for_each(|j| y[at(j)] = (x[at(j)] - m) - log_s);
                } else {
                    (0..len).for_each(|j| y[at(j)] = (x[at(j)] - m).exp() / s);
                }
            }
        });
}

/// The softmax backward pass from the saved output `y`: `dx = y ⊙ (dy − Σ dy⊙y)`; for log-softmax
/// (`y` = log-probabilities) `dx = dy − exp(y) ⊙ Σ dy`.
pub fn softmax_bwd<T: Float>(y: &[T], dy: &[T], layout: RowLayout, log: bool, dx: &mut [T]) {
    debug_assert_eq!(y.len(), layout.numel(), "softmax_bwd: y length");
    debug_assert_eq!(dy.len(), layout.numel(), "softmax_bwd: dy length");
    debug_assert_eq!(dx.len(), layout.numel(), "softmax_bwd: dx length");
    let RowLayout { len, inner, .. } = layout;
    if len * inner == 0 {
        return;
    }
    dx.par_chunks_mut(len * inner)
        .zip(y.par_chunks(len * inner).zip(dy.par_chunks(len * inner)))
        .for_each(|(dx, (y, dy))| {
            for i in 0..inner {
                let at = |j: usize| j * inner + i;
                if log {
                    let t = (0..len).fold(T::zero(), |t, j| t + dy[at(j)]);
                    (0..len).for_each(|j| dx[at(j)] = dy[at(j)] - y[at(j)].exp() * t);
                } else {
                    let t = (0..len).fold(T::zero(), |t, j| t + dy[at(j)] * y[at(j)]);
                    (0..len).for_each(|j| dx[at(j)] = y[at(j)] * (dy[at(j)] - t));
                }
            }
        });
}

/// Maxout: `y[b][u][s]` = the max over `q` of `x[b][u·pieces + q][s]`, and `argmax` the winning
/// `q` (the first on ties; NaN wins only as piece 0, like max-pool). `pieces ≥ 1`.
pub fn maxout_fwd<T: Float>(x: &[T], layout: MaxoutLayout, y: &mut [T], argmax: &mut [i32]) {
    debug_assert_eq!(x.len(), layout.inputs(), "maxout_fwd: x length");
    debug_assert_eq!(y.len(), layout.outputs(), "maxout_fwd: y length");
    debug_assert_eq!(argmax.len(), layout.outputs(), "maxout_fwd: argmax length");
    let MaxoutLayout {
        pieces, spatial, ..
    } = layout;
    if layout.outputs() == 0 {
        return;
    }
    // One chunk per (batch, unit): `pieces` input planes → one output plane.
    y.par_chunks_mut(spatial)
        .zip(argmax.par_chunks_mut(spatial))
        .zip(x.par_chunks(pieces * spatial))
        .for_each(|((y, argmax), x)| {
            for s in 0..spatial {
                let (mut best, mut winner) = (x[s], 0);
                for q in 1..pieces {
                    let v = x[q * spatial + s];
                    if v > best {
                        (best, winner) = (v, q);
                    }
                }
                y[s] = best;
                argmax[s] = winner as i32;
            }
        });
}

/// Maxout backward, a gather: `dx[b][u·pieces + q][s] = dy[b][u][s]` where `q` won, else 0.
pub fn maxout_bwd<T: Float>(dy: &[T], argmax: &[i32], layout: MaxoutLayout, dx: &mut [T]) {
    debug_assert_eq!(dy.len(), layout.outputs(), "maxout_bwd: dy length");
    debug_assert_eq!(argmax.len(), layout.outputs(), "maxout_bwd: argmax length");
    debug_assert_eq!(dx.len(), layout.inputs(), "maxout_bwd: dx length");
    let MaxoutLayout {
        pieces, spatial, ..
    } = layout;
    if layout.outputs() == 0 {
        return;
    }
    dx.par_chunks_mut(pieces * spatial)
        .zip(dy.par_chunks(spatial).zip(argmax.par_chunks(spatial)))
        .for_each(|(dx, (dy, argmax))| {
            for q in 0..pieces {
                for s in 0..spatial {
                    dx[q * spatial + s] = if argmax[s] == q as i32 {
                        dy[s]
                    } else {
                        T::zero()
                    };
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testutil::{assert_close, random_vec, rng};

    #[test]
    fn relu_mask_and_zero_gradient_at_zero() {
        let x = [-1.5_f32, 0.0, 2.0, -0.0, 3.25, -7.0, f32::MIN_POSITIVE];
        let (mut y, mut mask) = ([f32::NAN; 7], [9_u8; 7]);
        relu_fwd(&x, &mut y, &mut mask);
        assert_eq!(y, [0.0, 0.0, 2.0, 0.0, 3.25, 0.0, f32::MIN_POSITIVE]);
        assert_eq!(mask, [0, 0, 1, 0, 1, 0, 1]);
        let mut dx = [f32::NAN; 7];
        relu_bwd(&[0.5, 0.75, 1.5, 2.0, -1.0, 3.0, 4.0], &mask, &mut dx);
        assert_eq!(dx, [0.0, 0.0, 1.5, 0.0, -1.0, 0.0, 4.0]);
    }

    /// Long enough (odd length above [`MIN_PAR_LEN`]) that rayon splits the work.
    #[test]
    fn relu_matches_naive_on_random_input() {
        let n = 3 * MIN_PAR_LEN + 7;
        let mut rng = rng(31);
        let x: Vec<f64> = random_vec(&mut rng, n);
        let dy: Vec<f64> = random_vec(&mut rng, n);
        let (mut y, mut mask, mut dx) = (vec![0.0; n], vec![0; n], vec![0.0; n]);
        relu_fwd(&x, &mut y, &mut mask);
        relu_bwd(&dy, &mask, &mut dx);
        let y_ref: Vec<f64> = x.iter().map(|&v| v.max(0.0)).collect();
        let dx_ref: Vec<f64> = x
            .iter()
            .zip(&dy)
            .map(|(&v, &d)| if v > 0.0 { d } else { 0.0 })
            .collect();
        assert_close(&y, &y_ref, 0.0, 0.0);
        assert_close(&dx, &dx_ref, 0.0, 0.0);
    }

    // Expected values from Python's math module, e.g. `math.expm1(-1)`, `1 / (1 + math.exp(-2))`.
    #[test]
    fn leaky_relu_and_elu_hand_values_and_slope_at_zero() {
        let x = [-2.0_f64, 0.0, 3.0, -1.0];
        let dy = [1.0, 2.0, 3.0, 4.0];
        let (mut y, mut dx) = ([f64::NAN; 4], [f64::NAN; 4]);
        leaky_relu_fwd(&x, 0.1, &mut y);
        assert_eq!(y, [-0.2, 0.0, 3.0, -0.1]);
        leaky_relu_bwd(&x, &dy, 0.1, &mut dx);
        assert_eq!(dx, [0.1, 0.2, 3.0, 0.4]);

        elu_fwd(&x, 1.5, &mut y);
        let e1 = -0.6321205588285577; // math.expm1(-1)
        let e2 = -0.8646647167633873; // math.expm1(-2)
        assert_close(&y, &[1.5 * e2, 0.0, 3.0, 1.5 * e1], 1e-15, 1e-15);
        elu_bwd(&x, &dy, 1.5, &mut dx);
        let (x1, x2) = (0.36787944117144233, 0.1353352832366127); // math.exp(-1), math.exp(-2)
        assert_close(
            &dx,
            &[1.5 * x2, 2.0 * 1.5, 3.0, 4.0 * 1.5 * x1],
            1e-15,
            1e-15,
        );
    }

    #[test]
    fn sigmoid_and_tanh_hand_values_and_no_overflow() {
        let x = [0.0_f32, 2.0, -2.0, 1000.0, -1000.0, 0.5];
        let mut y = [f32::NAN; 6];
        sigmoid_fwd(&x, &mut y);
        let expected = [0.5, 0.880_797_1, 0.119_202_92, 1.0, 0.0, 0.622_459_3];
        assert_close(&y, &expected, 1e-7, 1e-6);
        let mut dx = [f32::NAN; 6];
        sigmoid_bwd(&y, &[2.0; 6], &mut dx);
        assert_eq!(dx[0], 0.5, "2 · 0.5 · (1 − 0.5)");
        assert_eq!(&dx[3..5], &[0.0, 0.0]);

        tanh_fwd(&x, &mut y);
        // math.tanh(2), math.tanh(0.5)
        let expected = [0.0, 0.964_027_6, -0.964_027_6, 1.0, -1.0, 0.462_117_16];
        assert_close(&y, &expected, 1e-7, 1e-6);
        tanh_bwd(&y, &[2.0; 6], &mut dx);
        assert_eq!(dx[0], 2.0, "2 · (1 − 0²)");
        assert_close(
            &dx[5..],
            &[2.0 * (1.0 - 0.462_117_16 * 0.462_117_16)],
            1e-7,
            1e-6,
        );
    }

    /// softmax([9, 5, 0]) = exp(v) / Σ exp: 0.9818947940807183, 0.017984030475110446,
    /// 0.00012117544417123201 (Python's math.exp); laid out along the last axis, then along axis 0
    /// of the transpose (stride 2) next to a second row.
    #[test]
    fn softmax_hand_values_along_last_and_first_axis() {
        let p = [
            0.9818947940807183,
            0.017984030475110446,
            0.00012117544417123201,
        ];
        let logp = [-0.01827111070431837, -4.018271110704318, -9.018271110704319];
        let last = RowLayout::along(&[1, 3], 1);
        let mut y = [0.0_f64; 3];
        softmax_fwd(&[9.0, 5.0, 0.0], last, false, &mut y);
        assert_close(&y, &p, 1e-16, 1e-14);
        softmax_fwd(&[9.0, 5.0, 0.0], last, true, &mut y);
        assert_close(&y, &logp, 1e-16, 1e-14);

        // [[9, 1], [5, 1], [0, 1]] along axis 0: column 0 is the row above, column 1 is uniform.
        let first = RowLayout::along(&[3, 2], 0);
        assert_eq!(
            first,
            RowLayout {
                outer: 1,
                len: 3,
                inner: 2
            }
        );
        let mut y = [0.0_f64; 6];
        softmax_fwd(&[9.0, 1.0, 5.0, 1.0, 0.0, 1.0], first, false, &mut y);
        let third = 1.0 / 3.0;
        assert_close(&y, &[p[0], third, p[1], third, p[2], third], 1e-16, 1e-14);
    }

    /// Logits in the thousands: exp(1000) overflows f32 and f64, the shifted form does not.
    /// Expected: softmax([0, 1, 2]) (Python).
    #[test]
    fn softmax_of_large_logits_is_finite() {
        let layout = RowLayout::along(&[2, 3], 1);
        let x = [1000.0_f32, 1001.0, 1002.0, -3000.0, -3001.0, -3002.0];
        let mut y = [f32::NAN; 6];
        softmax_fwd(&x, layout, false, &mut y);
        let p = [0.090_030_57, 0.244_728_48, 0.665_240_94];
        assert_close(&y, &[p[0], p[1], p[2], p[2], p[1], p[0]], 1e-7, 1e-6);
        softmax_fwd(&x, layout, true, &mut y);
        assert!(y.iter().all(|v| v.is_finite()), "{y:?}");
        assert_close(&y[..3], &p.map(f32::ln), 1e-6, 1e-6);
    }

    /// The backward passes against the Jacobian of softmax, J = diag(p) − p pᵀ, written out.
    #[test]
    fn softmax_backward_matches_the_jacobian() {
        let mut rng = rng(7);
        for (shape, axis) in [(vec![3, 5], 1), (vec![2, 3, 4, 5], 1), (vec![4, 3], 0)] {
            let layout = RowLayout::along(&shape, axis);
            let n = layout.numel();
            let x: Vec<f64> = random_vec(&mut rng, n);
            let dy: Vec<f64> = random_vec(&mut rng, n);
            let (mut p, mut logp, mut dx, mut dlog) =
                (vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n]);
            softmax_fwd(&x, layout, false, &mut p);
            softmax_fwd(&x, layout, true, &mut logp);
            softmax_bwd(&p, &dy, layout, false, &mut dx);
            softmax_bwd(&logp, &dy, layout, true, &mut dlog);
            let logp_ref: Vec<f64> = p.iter().map(|v| v.ln()).collect();
            assert_close(&logp, &logp_ref, 1e-14, 1e-12);
            let (mut dx_ref, mut dlog_ref) = (vec![0.0; n], vec![0.0; n]);
            for o in 0..layout.outer {
                for i in 0..layout.inner {
                    let at = |j: usize| (o * layout.len + j) * layout.inner + i;
                    for j in 0..layout.len {
                        for k in 0..layout.len {
                            let delta = if j == k { 1.0 } else { 0.0 };
                            // ∂p_k/∂x_j = p_k(δ − p_j); ∂log p_k/∂x_j = δ − p_j.
                            dx_ref[at(j)] += dy[at(k)] * p[at(k)] * (delta - p[at(j)]);
                            dlog_ref[at(j)] += dy[at(k)] * (delta - p[at(j)]);
                        }
                    }
                }
            }
            assert_close(&dx, &dx_ref, 1e-14, 1e-12);
            assert_close(&dlog, &dlog_ref, 1e-14, 1e-12);
        }
    }

    /// Two units of three pieces over two pixels; ties go to the first piece.
    #[test]
    fn maxout_hand_values_and_ties() {
        let layout = MaxoutLayout {
            batch: 1,
            units: 2,
            pieces: 3,
            spatial: 2,
        };
        // Channels 0..3 (unit 0), 3..6 (unit 1); each channel is [pixel 0, pixel 1].
        let x = [
            1.0_f32, -5.0, 4.0, -2.0, 3.0, -2.0, 0.0, 7.0, 0.0, 8.0, -1.0, 8.0,
        ];
        let (mut y, mut argmax) = ([f32::NAN; 4], [9; 4]);
        maxout_fwd(&x, layout, &mut y, &mut argmax);
        assert_eq!(y, [4.0, -2.0, 0.0, 8.0]);
        // Ties: unit 0 pixel 1 (−5, −2, −2), unit 1 pixel 0 (0, 0, −1), unit 1 pixel 1 (7, 8, 8).
        assert_eq!(argmax, [1, 1, 0, 1], "the first of tied pieces wins");
        let mut dx = [f32::NAN; 12];
        maxout_bwd(&[1.0, 2.0, 3.0, 4.0], &argmax, layout, &mut dx);
        assert_eq!(
            dx,
            [0.0, 0.0, 1.0, 2.0, 0.0, 0.0, 3.0, 0.0, 0.0, 4.0, 0.0, 0.0]
        );
    }

    /// Odd sizes, long enough for rayon to split: against a naive loop.
    #[test]
    fn pointwise_match_naive_on_random_input() {
        let n = 2 * MIN_PAR_LEN + 5;
        let mut rng = rng(3);
        let x: Vec<f64> = random_vec(&mut rng, n);
        let dy: Vec<f64> = random_vec(&mut rng, n);
        let (mut y, mut dx) = (vec![0.0; n], vec![0.0; n]);
        elu_fwd(&x, 0.7, &mut y);
        elu_bwd(&x, &dy, 0.7, &mut dx);
        let y_ref: Vec<f64> = x
            .iter()
            .map(|&v| if v > 0.0 { v } else { 0.7 * (v.exp() - 1.0) })
            .collect();
        assert_close(&y, &y_ref, 1e-15, 1e-12);
        let dx_ref: Vec<f64> = x
            .iter()
            .zip(&y)
            .zip(&dy)
            .map(|((&v, &y), &d)| if v > 0.0 { d } else { d * (y + 0.7) })
            .collect();
        assert_close(&dx, &dx_ref, 1e-15, 1e-12);
        sigmoid_fwd(&x, &mut y);
        let y_ref: Vec<f64> = x.iter().map(|&v| 1.0 / (1.0 + (-v).exp())).collect();
        assert_close(&y, &y_ref, 1e-15, 1e-12);
    }
}
