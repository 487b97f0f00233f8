//! Element-wise activations. The forward keeps a byte mask for the backward.

use rayon::prelude::*;

use super::{Float, MIN_PAR_LEN};

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
}
