//! Optimizer updates, in place over flat parameter buffers.

use rayon::prelude::*;

use super::{Float, MIN_PAR_LEN};

/// SGD with momentum and L2 weight decay, PyTorch's convention (no dampening, no Nesterov):
/// `g' = g + weight_decay·w; v = momentum·v + g'; w −= lr·v`. With `momentum = 0` it is plain SGD.
pub fn sgd_momentum_update<T: Float>(
    w: &mut [T],
    g: &[T],
    velocity: &mut [T],
    lr: T,
    momentum: T,
    weight_decay: T,
) {
    debug_assert_eq!(g.len(), w.len(), "sgd_momentum_update: g length");
    debug_assert_eq!(
        velocity.len(),
        w.len(),
        "sgd_momentum_update: velocity length"
    );
    w.par_iter_mut()
        .zip(velocity.par_iter_mut())
        .zip(g.par_iter())
        .with_min_len(MIN_PAR_LEN)
        .for_each(|((w, v), &g)| {
            let g = g + weight_decay * *w;
            *v = momentum * *v + g;
            *w = *w - lr * *v;
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testutil::assert_close;

    /// Two steps by hand, lr 0.1, momentum 0.9, weight decay 0.01, velocity starting at 0.
    /// Step 1, w = (1, −2), g = (0.5, 0.25): g' = (0.51, 0.23) = v, w = (0.949, −2.023).
    /// Step 2, g = (−0.1, 0.4): g' = (−0.09051, 0.37977), v = (0.36849, 0.58677),
    /// w = (0.912151, −2.081677).
    #[test]
    fn two_hand_computed_momentum_steps() {
        let (mut w, mut v) = (vec![1.0_f64, -2.0], vec![0.0; 2]);
        sgd_momentum_update(&mut w, &[0.5, 0.25], &mut v, 0.1, 0.9, 0.01);
        assert_close(&v, &[0.51, 0.23], 1e-15, 1e-14);
        assert_close(&w, &[0.949, -2.023], 1e-15, 1e-14);
        sgd_momentum_update(&mut w, &[-0.1, 0.4], &mut v, 0.1, 0.9, 0.01);
        assert_close(&v, &[0.36849, 0.58677], 1e-15, 1e-14);
        assert_close(&w, &[0.912151, -2.081677], 1e-15, 1e-14);
    }

    #[test]
    fn momentum_zero_is_plain_sgd() {
        let (mut w, mut v) = (vec![1.0_f32, -2.0, 0.5], vec![7.0; 3]);
        sgd_momentum_update(&mut w, &[0.5, 0.25, -1.0], &mut v, 0.1, 0.0, 0.0);
        assert_close(&w, &[0.95, -2.025, 0.6], 1e-7, 1e-6);
        assert_close(&v, &[0.5, 0.25, -1.0], 0.0, 0.0);
    }
}
