//! Optimizer updates, in place over flat parameter buffers: the CPU twins of kernels/optim.cu,
//! with the same formulas in the same order of operations (PyTorch's), generic over f32/f64.
//! Hyper-parameters are taken as given; src/backend/optim.rs validates them.

use rayon::prelude::*;

use super::{Float, MIN_PAR_LEN};
pub use crate::core::adam::AdamCoefficients;

/// Plain SGD with L2 weight decay and no state: `w −= lr·(g + weight_decay·w)`.
pub fn sgd_update<T: Float>(w: &mut [T], g: &[T], lr: T, weight_decay: T) {
    debug_assert_eq!(g.len(), w.len(), "sgd_update: g length");
    w.par_iter_mut()
        .zip(g.par_iter())
        .with_min_len(MIN_PAR_LEN)
        .for_each(|(w, &g)| *w = *w - lr * (g + weight_decay * *w));
}

/// SGD with momentum and L2 weight decay, PyTorch's convention (no dampening):
/// `g' = g + weight_decay·w; v = momentum·v + g'`, then `w −= lr·v` (classic) or
/// `w −= lr·(g' + momentum·v)` (`nesterov`). With `momentum = 0` and classic it is plain SGD
/// (and `v` ends up holding `g'`).
pub fn sgd_momentum_update<T: Float>(
    w: &mut [T],
    g: &[T],
    velocity: &mut [T],
    lr: T,
    momentum: T,
    weight_decay: T,
    nesterov: bool,
) {
    debug_assert_eq!(g.len(), w.len(), "sgd_momentum_update: g length");
    debug_assert_eq!(velocity.len(), w.len(), "sgd_momentum_update: velocity");
    w.par_iter_mut()
        .zip(velocity.par_iter_mut())
        .zip(g.par_iter())
        .with_min_len(MIN_PAR_LEN)
        .for_each(|((w, v), &g)| {
            let g = g + weight_decay * *w;
            *v = momentum * *v + g;
            let update = if nesterov { g + momentum * *v } else { *v };
            *w = *w - lr * update;
        });
}

/// PyTorch's RMSprop (not centered, no momentum) with L2 weight decay: `g' = g + weight_decay·w;
/// s = alpha·s + (1 − alpha)·g'²; w −= lr·g'/(sqrt(s) + eps)`.
pub fn rmsprop_update<T: Float>(
    w: &mut [T],
    g: &[T],
    square_avg: &mut [T],
    lr: T,
    alpha: T,
    eps: T,
    weight_decay: T,
) {
    debug_assert_eq!(g.len(), w.len(), "rmsprop_update: g length");
    debug_assert_eq!(square_avg.len(), w.len(), "rmsprop_update: square_avg");
    let one = T::one();
    w.par_iter_mut()
        .zip(square_avg.par_iter_mut())
        .zip(g.par_iter())
        .with_min_len(MIN_PAR_LEN)
        .for_each(|((w, s), &g)| {
            let g = g + weight_decay * *w;
            *s = alpha * *s + (one - alpha) * g * g;
            *w = *w - lr * g / (s.sqrt() + eps);
        });
}

/// PyTorch's Adam/AdamW (no amsgrad): `g' = g + weight_decay·w; m = β1·m + (1 − β1)·g';
/// v = β2·v + (1 − β2)·g'²; w = decay·w − step_size·m/(sqrt(v)/sqrt(1 − β2^t) + eps)`, which is
/// `w −= lr·m̂/(sqrt(v̂) + eps)` with `m̂ = m/(1 − β1^t)`, `v̂ = v/(1 − β2^t)` (after AdamW's
/// `w ← (1 − lr·wd)·w`).
pub fn adam_update<T: Float>(
    w: &mut [T],
    g: &[T],
    exp_avg: &mut [T],
    exp_avg_sq: &mut [T],
    c: &AdamCoefficients<T>,
) {
    debug_assert_eq!(g.len(), w.len(), "adam_update: g length");
    debug_assert_eq!(exp_avg.len(), w.len(), "adam_update: exp_avg");
    debug_assert_eq!(exp_avg_sq.len(), w.len(), "adam_update: exp_avg_sq");
    let one = T::one();
    let c = *c;
    w.par_iter_mut()
        .zip(exp_avg.par_iter_mut())
        .zip(exp_avg_sq.par_iter_mut())
        .zip(g.par_iter())
        .with_min_len(MIN_PAR_LEN)
        .for_each(|(((w, m), v), &g)| {
            let g = g + c.weight_decay * *w;
            *m = c.beta1 * *m + (one - c.beta1) * g;
            *v = c.beta2 * *v + (one - c.beta2) * g * g;
            let denom = v.sqrt() / c.bias_correction2_sqrt + c.eps;
            *w = *w * c.decay - c.step_size * *m / denom;
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
        sgd_momentum_update(&mut w, &[0.5, 0.25], &mut v, 0.1, 0.9, 0.01, false);
        assert_close(&v, &[0.51, 0.23], 1e-15, 1e-14);
        assert_close(&w, &[0.949, -2.023], 1e-15, 1e-14);
        sgd_momentum_update(&mut w, &[-0.1, 0.4], &mut v, 0.1, 0.9, 0.01, false);
        assert_close(&v, &[0.36849, 0.58677], 1e-15, 1e-14);
        assert_close(&w, &[0.912151, -2.081677], 1e-15, 1e-14);
    }

    #[test]
    fn momentum_zero_is_plain_sgd() {
        let (mut w, mut v) = (vec![1.0_f32, -2.0, 0.5], vec![7.0; 3]);
        sgd_momentum_update(&mut w, &[0.5, 0.25, -1.0], &mut v, 0.1, 0.0, 0.0, false);
        assert_close(&w, &[0.95, -2.025, 0.6], 1e-7, 1e-6);
        assert_close(&v, &[0.5, 0.25, -1.0], 0.0, 0.0);
        let mut w2 = vec![1.0_f32, -2.0, 0.5];
        sgd_update(&mut w2, &[0.5, 0.25, -1.0], 0.1, 0.0);
        assert_close(&w2, &w, 0.0, 0.0);
    }

    /// Plain SGD by hand, lr 0.5, weight decay 0.1: w = (2, −1, 0.25), g = (1, −0.5, 0.125):
    /// g' = (1.2, −0.6, 0.15), w = (1.4, −0.7, 0.175).
    #[test]
    fn hand_computed_plain_sgd_step() {
        let mut w = vec![2.0_f64, -1.0, 0.25];
        sgd_update(&mut w, &[1.0, -0.5, 0.125], 0.5, 0.1);
        assert_close(&w, &[1.4, -0.7, 0.175], 1e-15, 1e-14);
    }

    /// Nesterov by hand (formula of PyTorch's nesterov=True), lr 0.1, momentum 0.9, wd 0.01.
    /// Step 1, w = (1, −2), g = (0.5, 0.25): g' = (0.51, 0.23) = v;
    ///   update = g' + 0.9·v = (0.969, 0.437); w = (0.9031, −2.0437).
    /// Step 2, g = (−0.1, 0.4): g' = (−0.1 + 0.009031, 0.4 − 0.020437) = (−0.090969, 0.379563);
    ///   v = 0.9·(0.51, 0.23) + g' = (0.368031, 0.586563);
    ///   update = g' + 0.9·v = (0.2402589, 0.9074697); w = (0.87907411, −2.13444697).
    #[test]
    fn two_hand_computed_nesterov_steps() {
        let (mut w, mut v) = (vec![1.0_f64, -2.0], vec![0.0; 2]);
        sgd_momentum_update(&mut w, &[0.5, 0.25], &mut v, 0.1, 0.9, 0.01, true);
        assert_close(&v, &[0.51, 0.23], 1e-15, 1e-14);
        assert_close(&w, &[0.9031, -2.0437], 1e-15, 1e-14);
        sgd_momentum_update(&mut w, &[-0.1, 0.4], &mut v, 0.1, 0.9, 0.01, true);
        assert_close(&v, &[0.368031, 0.586563], 1e-15, 1e-14);
        assert_close(&w, &[0.87907411, -2.13444697], 1e-15, 1e-14);
    }

    /// RMSprop by hand, lr 0.01, alpha 0.99, eps 1e-8, no weight decay, s starting at 0.
    /// Step 1, w = (1, −2), g = (0.5, −0.2): s = 0.01·g² = (0.0025, 0.0004); sqrt(s) = (0.05, 0.02);
    ///   w −= 0.01·g/(sqrt(s) + 1e-8) = 0.01·(0.5/0.05000001, −0.2/0.02000001)
    ///   → w = (1 − 0.09999998000000400, −2 + 0.09999995000002500) = (0.900000019999996, −1.900000049999975).
    /// Step 2, g = (0.5, 0.4): s = 0.99·s + 0.01·g² = (0.004975, 0.001996);
    ///   sqrt(s) = (0.0705336799, 0.0446766158);
    ///   w −= 0.01·(0.5/0.0705336899, 0.4/0.0446766258) = (0.0708881105, 0.0895322762)
    ///   → w = (0.8291119095, −1.9895323262) (values from the formula, in f64, with a calculator).
    #[test]
    fn two_hand_computed_rmsprop_steps() {
        let (mut w, mut s) = (vec![1.0_f64, -2.0], vec![0.0; 2]);
        rmsprop_update(&mut w, &[0.5, -0.2], &mut s, 0.01, 0.99, 1e-8, 0.0);
        assert_close(&s, &[0.0025, 0.0004], 1e-18, 1e-14);
        assert_close(&w, &[0.900000019999996, -1.900000049999975], 1e-15, 1e-14);
        rmsprop_update(&mut w, &[0.5, 0.4], &mut s, 0.01, 0.99, 1e-8, 0.0);
        assert_close(&s, &[0.004975, 0.001996], 1e-18, 1e-14);
        assert_close(&w, &[0.8291119095, -1.9895323262], 1e-9, 0.0);
    }

    /// RMSprop with L2 weight decay 0.5: w = 2, g = 1 → g' = 2; s = 0.1·4 = 0.4 (alpha 0.9);
    /// w = 2 − 0.1·2/(sqrt(0.4) + 0.001) = 2 − 0.2/0.6334555320 = 1.6842714447 (lr 0.1, eps 1e-3).
    #[test]
    fn rmsprop_weight_decay_is_added_to_the_gradient() {
        let (mut w, mut s) = (vec![2.0_f64], vec![0.0]);
        rmsprop_update(&mut w, &[1.0], &mut s, 0.1, 0.9, 1e-3, 0.5);
        assert_close(&s, &[0.4], 1e-16, 1e-14);
        assert_close(&w, &[1.6842714447], 1e-9, 0.0);
    }

    /// Adam by hand, lr 0.1, β = (0.9, 0.999), eps 1e-8, no weight decay, one element.
    /// Step 1, w = 1, g = 0.5: m = 0.05, v = 0.00025; m̂ = 0.5, v̂ = 0.25;
    ///   w = 1 − 0.1·0.5/(0.5 + 1e-8) = 0.90000000200 (the first Adam step is ≈ lr·sign(g)).
    /// Step 2, g = −0.25: m = 0.045 − 0.025 = 0.02, v = 0.00024975 + 0.0000625 = 0.00031225;
    ///   m̂ = 0.02/0.19 = 0.1052631579, v̂ = 0.00031225/0.001999 = 0.1562031016, sqrt = 0.3952253807;
    ///   w = 0.900000002 − 0.1·0.1052631579/(0.3952253807 + 1e-8) = 0.900000002 − 0.0266337033
    ///     = 0.8733662987 (values from the formula, in f64, with a calculator).
    /// Step 3, g = 0.75: m = 0.018 + 0.075 = 0.093, v = 0.00031193775 + 0.0005625 = 0.00087443775;
    ///   m̂ = 0.093/0.271 = 0.3431734317, v̂ = 0.00087443775/0.002997001 = 0.2917709237,
    ///   sqrt = 0.5401582395; w = 0.8733662987 − 0.0635320172 = 0.8098342815.
    #[test]
    fn three_hand_computed_adam_steps() {
        let (mut w, mut m, mut v) = (vec![1.0_f64], vec![0.0], vec![0.0]);
        let c = |t| AdamCoefficients::new(0.1, 0.9, 0.999, 1e-8, 0.0, 0.0, t);
        adam_update(&mut w, &[0.5], &mut m, &mut v, &c(1));
        assert_close(&m, &[0.05], 1e-17, 1e-14);
        assert_close(&v, &[0.00025], 1e-18, 1e-14);
        assert_close(&w, &[0.900000002], 1e-15, 1e-12);
        adam_update(&mut w, &[-0.25], &mut m, &mut v, &c(2));
        assert_close(&m, &[0.02], 1e-17, 1e-14);
        assert_close(&v, &[0.00031225], 1e-18, 1e-14);
        assert_close(&w, &[0.8733662987], 1e-9, 0.0);
        adam_update(&mut w, &[0.75], &mut m, &mut v, &c(3));
        assert_close(&m, &[0.093], 1e-17, 1e-14);
        assert_close(&v, &[0.00087443775], 1e-17, 1e-14);
        assert_close(&w, &[0.8098342815], 1e-9, 0.0);
    }

    /// AdamW by hand, lr 0.1, wd 0.1, β = (0.9, 0.999), eps 1e-8: w = 2, g = 0.5.
    /// w ← (1 − 0.01)·2 = 1.98, then the Adam step 0.1·0.5/(0.5 + 1e-8) = 0.099999998:
    /// w = 1.880000002. The moments see the raw gradient: m = 0.05, v = 0.00025.
    /// Adam with L2 wd 0.1 instead: g' = 0.7, m = 0.07, v = 0.00049, m̂ = 0.7, v̂ = 0.49,
    /// w = 2 − 0.1·0.7/(0.7 + 1e-8) = 1.9000000014 (the first step is ≈ lr·sign(g') whatever wd).
    #[test]
    fn adamw_decays_weights_outside_the_moments() {
        let (mut w, mut m, mut v) = (vec![2.0_f64], vec![0.0], vec![0.0]);
        let c = AdamCoefficients::new(0.1, 0.9, 0.999, 1e-8, 0.0, 0.1, 1);
        adam_update(&mut w, &[0.5], &mut m, &mut v, &c);
        assert_close(&m, &[0.05], 1e-17, 1e-14);
        assert_close(&v, &[0.00025], 1e-18, 1e-14);
        assert_close(&w, &[1.880000002], 1e-15, 1e-12);
        let (mut w, mut m, mut v) = (vec![2.0_f64], vec![0.0], vec![0.0]);
        let c = AdamCoefficients::new(0.1, 0.9, 0.999, 1e-8, 0.1, 0.0, 1);
        adam_update(&mut w, &[0.5], &mut m, &mut v, &c);
        assert_close(&m, &[0.07], 1e-17, 1e-14);
        assert_close(&v, &[0.00049], 1e-18, 1e-14);
        assert_close(&w, &[1.9000000014], 1e-10, 0.0);
    }

    /// The f32 twins agree with the f64 ones on an odd size larger than one rayon chunk.
    #[test]
    fn f32_matches_f64_on_odd_sizes() {
        use crate::cpu::testutil::{random_vec, rng};
        let n = 3 * super::MIN_PAR_LEN + 7;
        let mut r = rng(11);
        let w0: Vec<f64> = random_vec(&mut r, n);
        let g: Vec<f64> = random_vec(&mut r, n);
        let to32 = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
        let to64 = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
        let z64 = || vec![0.0_f64; n];
        let z32 = || vec![0.0_f32; n];
        let (mut w64, mut m64, mut v64, mut s64, mut b64) =
            (w0.clone(), z64(), z64(), z64(), z64());
        let (mut w32, mut m32, mut v32, mut s32, mut b32) = (to32(&w0), z32(), z32(), z32(), z32());
        let g32 = to32(&g);
        for t in 1..=3 {
            let c = AdamCoefficients::new(0.01, 0.9, 0.999, 1e-8, 0.01, 0.0, t);
            adam_update(&mut w64, &g, &mut m64, &mut v64, &c);
            adam_update(&mut w32, &g32, &mut m32, &mut v32, &c.cast());
            rmsprop_update(&mut w64, &g, &mut s64, 0.01, 0.99, 1e-8, 0.01);
            rmsprop_update(&mut w32, &g32, &mut s32, 0.01, 0.99, 1e-8, 0.01);
            sgd_momentum_update(&mut w64, &g, &mut b64, 0.01, 0.9, 0.01, true);
            sgd_momentum_update(&mut w32, &g32, &mut b32, 0.01, 0.9, 0.01, true);
            sgd_update(&mut w64, &g, 0.01, 0.01);
            sgd_update(&mut w32, &g32, 0.01, 0.01);
        }
        for (a, b) in [
            (&w32, &w64),
            (&m32, &m64),
            (&v32, &v64),
            (&s32, &s64),
            (&b32, &b64),
        ] {
            assert_close(&to64(a), b, 1e-5, 1e-4);
        }
    }
}
