//! CPU reference of kernels/dropout.cu: inverted dropout with a mask drawn from a counter-based hash
//! of (seed, element index), bit for bit the kernel's, so a mask is the same on every device.

use rayon::prelude::*;

use super::{Float, MIN_PAR_LEN};

/// SplitMix64's increment, ⌊2⁶⁴/φ⌋.
const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function (`dropout_mix` in kernels/dropout.cu).
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// 64 random bits for element `index`: output `index + 1` of a SplitMix64 stream whose state starts
/// at mix(seed) (`dropout_bits` in kernels/dropout.cu).
pub fn dropout_bits(seed: u64, index: u64) -> u64 {
    mix(mix(seed).wrapping_add(index.wrapping_add(1).wrapping_mul(GOLDEN_GAMMA)))
}

/// The seed of the mask drawn at `step` from a layer's `seed` (`dropout_fwd_f32` in
/// kernels/dropout.cu mixes it the same way, so a step replayed from a CUDA graph, which reads its
/// step from device memory, draws the same mask as an eager one).
pub fn step_seed(seed: u64, step: u64) -> u64 {
    seed ^ step.wrapping_mul(GOLDEN_GAMMA)
}

/// The keep threshold for drop probability `p` ∈ [0, 1]: an element is kept iff the top 32 bits of
/// its draw are ≥ round(p·2³²), so it is kept with probability 1 − p (within 2⁻³³); p = 1 gives 2³²,
/// which no 32-bit value reaches.
pub fn dropout_threshold(p: f64) -> u64 {
    (p.clamp(0.0, 1.0) * 4_294_967_296.0).round() as u64
}

/// Whether element `index` is kept.
pub fn dropout_keeps(seed: u64, index: u64, threshold: u64) -> bool {
    (dropout_bits(seed, index) >> 32) >= threshold
}

/// The survivors' scale 1/(1 − p); 0 when p = 1 (nothing survives, and nothing is divided by 0).
pub fn dropout_scale(p: f64) -> f64 {
    if p >= 1.0 {
        0.0
    } else {
        1.0 / (1.0 - p)
    }
}

/// `mask[i] = keep(seed, i)`, `y[i] = mask[i] ? x[i]·scale : 0`.
pub fn dropout_fwd<T: Float>(
    x: &[T],
    seed: u64,
    threshold: u64,
    scale: T,
    y: &mut [T],
    mask: &mut [u8],
) {
    debug_assert_eq!(y.len(), x.len(), "dropout_fwd: y length");
    debug_assert_eq!(mask.len(), x.len(), "dropout_fwd: mask length");
    x.par_iter()
        .zip(y.par_iter_mut())
        .zip(mask.par_iter_mut())
        .enumerate()
        .with_min_len(MIN_PAR_LEN)
        .for_each(|(i, ((&x, y), m))| {
            let keep = dropout_keeps(seed, i as u64, threshold);
            *y = if keep { x * scale } else { T::zero() };
            *m = u8::from(keep);
        });
}

/// `dx[i] = mask[i] ? dy[i]·scale : 0`.
pub fn dropout_bwd<T: Float>(dy: &[T], mask: &[u8], scale: T, dx: &mut [T]) {
    debug_assert_eq!(mask.len(), dy.len(), "dropout_bwd: mask length");
    debug_assert_eq!(dx.len(), dy.len(), "dropout_bwd: dx length");
    dy.par_iter()
        .zip(mask.par_iter())
        .zip(dx.par_iter_mut())
        .with_min_len(MIN_PAR_LEN)
        .for_each(|((&dy, &m), dx)| *dx = if m != 0 { dy * scale } else { T::zero() });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first outputs of SplitMix64 started at state 0 (Vigna's splitmix64.c with x = 0), which is
    /// our stream for seed 0 since mix(0) = 0; checked against a Python transcription of splitmix64.c.
    #[test]
    fn bits_are_splitmix64() {
        assert_eq!(mix(0), 0);
        assert_eq!(dropout_bits(0, 0), 0xE220_A839_7B1D_CDAF);
        assert_eq!(dropout_bits(0, 1), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(dropout_bits(0, 2), 0x06C4_5D18_8009_454F);
    }

    #[test]
    fn threshold_and_scale_at_the_ends() {
        assert_eq!(dropout_threshold(0.0), 0);
        assert_eq!(dropout_threshold(0.5), 1 << 31);
        assert_eq!(dropout_threshold(1.0), 1 << 32);
        assert_eq!(dropout_scale(0.0), 1.0);
        assert_eq!(dropout_scale(0.75), 4.0);
        assert_eq!(dropout_scale(1.0), 0.0);
        // No 32-bit draw reaches 2³², and every draw reaches 0.
        assert!(!dropout_keeps(0, 0, 1 << 32));
        assert!(dropout_keeps(0, 0, 0));
    }

    /// p = 0.5, seed 0: the top 32 bits of the three draws above are 0xE220A839, 0x6E789E6A and
    /// 0x06C45D18; only the first is ≥ 2³¹, so only element 0 survives, scaled by 2.
    #[test]
    fn forward_and_backward_by_hand() {
        let x = [1.5_f32, -2.0, 3.0];
        let (mut y, mut mask) = ([f32::NAN; 3], [9_u8; 3]);
        dropout_fwd(&x, 0, dropout_threshold(0.5), 2.0, &mut y, &mut mask);
        assert_eq!(mask, [1, 0, 0]);
        assert_eq!(y, [3.0, 0.0, 0.0]);
        let mut dx = [f32::NAN; 3];
        dropout_bwd(&[0.25, 7.0, -1.0], &mask, 2.0, &mut dx);
        assert_eq!(dx, [0.5, 0.0, 0.0]);
    }

    /// Long enough that rayon splits the work: the mask still depends only on (seed, index), and a
    /// dropped NaN gives 0.
    #[test]
    fn mask_is_a_function_of_seed_and_index() {
        let n = 3 * MIN_PAR_LEN + 5;
        let mut x = vec![1.0_f64; n];
        x[7] = f64::NAN;
        let threshold = dropout_threshold(0.3);
        let (mut y, mut mask) = (vec![0.0; n], vec![0; n]);
        dropout_fwd(&x, 42, threshold, 1.0 / 0.7, &mut y, &mut mask);
        for i in 0..n {
            let keep = dropout_keeps(42, i as u64, threshold);
            assert_eq!(mask[i], u8::from(keep), "element {i}");
            if i != 7 {
                assert_eq!(y[i], if keep { 1.0 / 0.7 } else { 0.0 }, "element {i}");
            } else {
                assert_eq!(y[i].is_nan(), keep);
            }
        }
        let (mut y2, mut mask2) = (vec![0.0; n], vec![0; n]);
        dropout_fwd(&x, 43, threshold, 1.0 / 0.7, &mut y2, &mut mask2);
        assert_ne!(mask, mask2, "another seed gives another mask");
    }
}
