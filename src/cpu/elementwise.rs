//! Elementwise arithmetic on equal-length slices (twins of kernels/elementwise.cu).

use rayon::prelude::*;

use super::{Float, MIN_PAR_LEN};

/// `out = alpha·a + beta·b`.
pub fn axpby<T: Float>(alpha: T, a: &[T], beta: T, b: &[T], out: &mut [T]) {
    debug_assert!(
        a.len() == out.len() && b.len() == out.len(),
        "axpby: lengths"
    );
    out.par_iter_mut()
        .zip(a.par_iter().zip(b.par_iter()))
        .with_min_len(MIN_PAR_LEN)
        .for_each(|(o, (&a, &b))| *o = alpha * a + beta * b);
}

/// `out = a·b`.
pub fn mul<T: Float>(a: &[T], b: &[T], out: &mut [T]) {
    debug_assert!(a.len() == out.len() && b.len() == out.len(), "mul: lengths");
    out.par_iter_mut()
        .zip(a.par_iter().zip(b.par_iter()))
        .with_min_len(MIN_PAR_LEN)
        .for_each(|(o, (&a, &b))| *o = a * b);
}

/// `out = scale·x + shift`.
pub fn affine<T: Float>(x: &[T], scale: T, shift: T, out: &mut [T]) {
    debug_assert_eq!(x.len(), out.len(), "affine: lengths");
    out.par_iter_mut()
        .zip(x.par_iter())
        .with_min_len(MIN_PAR_LEN)
        .for_each(|(o, &x)| *o = scale * x + shift);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_by_hand() {
        let (a, b) = ([1.0f64, -2.0, 3.5], [0.5f64, 4.0, -1.0]);
        let mut out = [0.0; 3];
        axpby(2.0, &a, -1.0, &b, &mut out);
        assert_eq!(out, [1.5, -8.0, 8.0]);
        mul(&a, &b, &mut out);
        assert_eq!(out, [0.5, -8.0, -3.5]);
        affine(&a, 3.0, 1.0, &mut out);
        assert_eq!(out, [4.0, -5.0, 11.5]);
    }
}
