//! Softmax cross-entropy over `[rows][classes]` logits with one integer label per row.

use rayon::prelude::*;

use super::Float;

/// The label of a row as an index, or `None` (with a debug assertion) when out of range.
fn label_index(label: i32, classes: usize) -> Option<usize> {
    let index = usize::try_from(label).ok().filter(|&l| l < classes);
    debug_assert!(index.is_some(), "label {label} outside 0..{classes}");
    index
}

/// Per row of `logits` `[rows][classes]`: `probs` = softmax (row max subtracted first) and
/// `losses[row] = logsumexp(logits) − logits[label]`, finite for logits of any magnitude.
/// A label outside `0..classes` gives a NaN loss.
pub fn softmax_xent_fwd<T: Float>(
    logits: &[T],
    labels: &[i32],
    rows: usize,
    classes: usize,
    probs: &mut [T],
    losses: &mut [T],
) {
    debug_assert_eq!(
        logits.len(),
        rows * classes,
        "softmax_xent_fwd: logits length"
    );
    debug_assert_eq!(
        probs.len(),
        rows * classes,
        "softmax_xent_fwd: probs length"
    );
    debug_assert_eq!(labels.len(), rows, "softmax_xent_fwd: labels length");
    debug_assert_eq!(losses.len(), rows, "softmax_xent_fwd: losses length");
    if classes == 0 {
        return;
    }
    probs
        .par_chunks_mut(classes)
        .zip(logits.par_chunks(classes))
        .zip(labels.par_iter().zip(losses.par_iter_mut()))
        .for_each(|((p, z), (&label, loss))| {
            let max = z.iter().copied().fold(T::neg_infinity(), T::max);
            let mut sum = T::zero();
            for (p, &z) in p.iter_mut().zip(z) {
                *p = (z - max).exp();
                sum = sum + *p;
            }
            p.iter_mut().for_each(|p| *p = *p / sum);
            *loss = match label_index(label, classes) {
                Some(l) => sum.ln() - (z[l] - max),
                None => T::nan(),
            };
        });
}

/// `dlogits = scale·(probs − onehot(label))` per row of `[rows][classes]` (overwritten). For a mean
/// loss the caller passes `scale = dloss/rows`. A label outside `0..classes` gives a NaN row.
pub fn softmax_xent_bwd<T: Float>(
    probs: &[T],
    labels: &[i32],
    rows: usize,
    classes: usize,
    scale: T,
    dlogits: &mut [T],
) {
    debug_assert_eq!(
        probs.len(),
        rows * classes,
        "softmax_xent_bwd: probs length"
    );
    debug_assert_eq!(
        dlogits.len(),
        rows * classes,
        "softmax_xent_bwd: dlogits length"
    );
    debug_assert_eq!(labels.len(), rows, "softmax_xent_bwd: labels length");
    if classes == 0 {
        return;
    }
    dlogits
        .par_chunks_mut(classes)
        .zip(probs.par_chunks(classes))
        .zip(labels.par_iter())
        .for_each(|((d, p), &label)| {
            let Some(l) = label_index(label, classes) else {
                d.fill(T::nan());
                return;
            };
            for (c, (d, &p)) in d.iter_mut().zip(p).enumerate() {
                let target = if c == l { T::one() } else { T::zero() };
                *d = scale * (p - target);
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testutil::{assert_close, random_vec, rng};

    fn fwd<T: Float>(logits: &[T], labels: &[i32], classes: usize) -> (Vec<T>, Vec<T>) {
        let rows = labels.len();
        let (mut probs, mut losses) = (vec![T::nan(); rows * classes], vec![T::nan(); rows]);
        softmax_xent_fwd(logits, labels, rows, classes, &mut probs, &mut losses);
        (probs, losses)
    }

    /// The lecture's logits (9, 5, 0). Exact values: p_i = e^(z_i − 9) / (1 + e^−4 + e^−9) =
    /// (0.981895, 0.0179840, 0.000121175), checked to f32 precision. The lecture quotes 0.9819,
    /// 0.01799 and 0.000123, good to about 1e-5 absolute (its 0.000123 is e^−9 before dividing by
    /// the sum 1.0184, 1.5% off relatively), so those are checked with atol 1e-5 and no rtol.
    #[test]
    fn lecture_softmax_probabilities() {
        let (probs, losses) = fwd(&[9.0_f32, 5.0, 0.0], &[0], 3);
        let sum = 1.0 + (-4.0_f64).exp() + (-9.0_f64).exp();
        let exact = [1.0 / sum, (-4.0_f64).exp() / sum, (-9.0_f64).exp() / sum];
        let exact32 = exact.map(|p| p as f32);
        assert_close(&probs, &exact32, 0.0, 1e-6);
        assert_close(&losses, &[sum.ln() as f32], 0.0, 1e-5); // −ln 0.981895 = 0.0182711
        assert_close(&probs, &[0.9819, 0.01799, 0.000123], 1e-5, 0.0);
    }

    /// Logits of magnitude 1000 overflow a naive exp in f32; the stable form stays finite.
    #[test]
    fn large_logits_give_finite_losses() {
        let logits = [
            1000.0_f32, 999.0, 998.0, 1000.0, -1000.0, 1000.0, 3.0e4, -3.0e4, 2.9e4,
        ];
        let (probs, losses) = fwd(&logits, &[2, 0, 1], 3);
        assert!(
            probs.iter().chain(&losses).all(|v| v.is_finite()),
            "{probs:?} {losses:?}"
        );
        // Row 0: 2 + ln(1 + e^−1 + e^−2) = 2.40761; row 1: ln 2; row 2: 6e4 (e^−1000 vanishes).
        assert_close(&losses, &[2.407_606, 2f32.ln(), 6.0e4], 0.0, 1e-6);
        for row in probs.chunks(3) {
            assert_close(&[row.iter().sum::<f32>()], &[1.0], 1e-6, 0.0);
        }
    }

    #[test]
    fn backward_rows_sum_to_zero() {
        let (rows, classes) = (5, 7);
        let logits: Vec<f32> = random_vec(&mut rng(41), rows * classes);
        let labels = [0, 6, 3, 3, 1];
        let (probs, _) = fwd(&logits, &labels, classes);
        let mut d = vec![f32::NAN; rows * classes];
        softmax_xent_bwd(&probs, &labels, rows, classes, 0.5, &mut d);
        for (row, &label) in d.chunks(classes).zip(&labels) {
            assert_close(&[row.iter().sum::<f32>()], &[0.0], 1e-6, 0.0);
            assert!(
                row[label as usize] < 0.0,
                "the label's gradient is negative"
            );
        }
    }

    /// Central differences of the mean loss in f64 against the backward with scale = 1/rows.
    #[test]
    fn backward_matches_finite_differences() {
        let (rows, classes) = (3, 5);
        let logits: Vec<f64> = random_vec::<f64>(&mut rng(42), rows * classes)
            .iter()
            .map(|v| 4.0 * v)
            .collect();
        let labels = [4, 0, 2];
        let mean_loss = |z: &[f64]| fwd(z, &labels, classes).1.iter().sum::<f64>() / rows as f64;
        let (probs, _) = fwd(&logits, &labels, classes);
        let mut grad = vec![0.0; rows * classes];
        softmax_xent_bwd(&probs, &labels, rows, classes, 1.0 / rows as f64, &mut grad);
        let h = 1e-5;
        let numeric: Vec<f64> = (0..logits.len())
            .map(|i| {
                let (mut up, mut down) = (logits.clone(), logits.clone());
                up[i] += h;
                down[i] -= h;
                (mean_loss(&up) - mean_loss(&down)) / (2.0 * h)
            })
            .collect();
        assert_close(&grad, &numeric, 1e-9, 1e-6);
    }
}
