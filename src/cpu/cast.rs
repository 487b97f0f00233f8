//! Conversions between f32 and the 16-bit storage formats (bf16, IEEE f16), rounding to nearest
//! even (the `half` crate's conversions, which match PyTorch's): the twin of kernels/cast.cu.

use rayon::prelude::*;

use super::MIN_PAR_LEN;

/// f32 → bf16, rounded to nearest even.
pub fn f32_to_bf16(x: &[f32], y: &mut [half::bf16]) {
    y.par_iter_mut()
        .with_min_len(MIN_PAR_LEN)
        .zip(x)
        .for_each(|(y, &x)| *y = half::bf16::from_f32(x));
}

/// f32 → f16, rounded to nearest even (overflow gives infinity).
pub fn f32_to_f16(x: &[f32], y: &mut [half::f16]) {
    y.par_iter_mut()
        .with_min_len(MIN_PAR_LEN)
        .zip(x)
        .for_each(|(y, &x)| *y = half::f16::from_f32(x));
}

/// bf16 → f32 (exact).
pub fn bf16_to_f32(x: &[half::bf16], y: &mut [f32]) {
    y.par_iter_mut()
        .with_min_len(MIN_PAR_LEN)
        .zip(x)
        .for_each(|(y, &x)| *y = x.to_f32());
}

/// f16 → f32 (exact).
pub fn f16_to_f32(x: &[half::f16], y: &mut [f32]) {
    y.par_iter_mut()
        .with_min_len(MIN_PAR_LEN)
        .zip(x)
        .for_each(|(y, &x)| *y = x.to_f32());
}
