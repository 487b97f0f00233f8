//! Losses (twins of kernels/loss.cu): softmax cross-entropy over `[rows][classes]` logits with one
//! integer label per row; elementwise squared error and binary cross-entropy on logits, whose
//! reductions are the caller's; the sum of squares of the L2 penalty.

use rayon::prelude::*;

use super::{Float, MIN_PAR_LEN};

/// The label of a row as an index, or `None` (with a debug assertion) when out of range.
fn label_index(label: i32, classes: usize) -> Option<usize> {
    let index = usize::try_from(label).ok().filter(|&l| l < classes);
    debug_assert!(index.is_some(), "label {label} outside 0..{classes}");
    index
}

/// `p = softmax(z)` for one row, the row max subtracted first; returns (max, Σ exp(z − max)), from
/// which `−log p_c = ln(sum) − (z_c − max)`.
fn softmax_row<T: Float>(z: &[T], p: &mut [T]) -> (T, T) {
    let max = z.iter().copied().fold(T::neg_infinity(), T::max);
    let mut sum = T::zero();
    for (p, &z) in p.iter_mut().zip(z) {
        *p = (z - max).exp();
        sum = sum + *p;
    }
    p.iter_mut().for_each(|p| *p = *p / sum);
    (max, sum)
}

/// The row loop of the softmax cross-entropies: per row of `logits` `[rows][classes]`, `probs` =
/// softmax and `losses[row] = loss_of(z, max, ln Σ exp(z − max), label)`, or NaN for a label outside
/// `0..classes`.
fn softmax_rows<T: Float>(
    (logits, labels): (&[T], &[i32]),
    classes: usize,
    probs: &mut [T],
    losses: &mut [T],
    loss_of: impl Fn(&[T], T, T, usize) -> T + Sync,
) {
    if classes == 0 {
        return;
    }
    probs
        .par_chunks_mut(classes)
        .zip(logits.par_chunks(classes))
        .zip(labels.par_iter().zip(losses.par_iter_mut()))
        .for_each(|((p, z), (&label, loss))| {
            let (max, sum) = softmax_row(z, p);
            *loss = match label_index(label, classes) {
                Some(l) => loss_of(z, max, sum.ln(), l),
                None => T::nan(),
            };
        });
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
    softmax_rows(
        (logits, labels),
        classes,
        probs,
        losses,
        |z, max, log_s, l| log_s - (z[l] - max),
    );
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

/// Class weights `[classes]` and label smoothing of softmax cross-entropy, as the twins take them.
#[derive(Clone, Copy, Debug)]
pub struct XentTargets<'a, T> {
    pub weights: &'a [T],
    /// The weights' sum (the kernels take it rather than adding them up per thread).
    pub weight_sum: T,
    pub smoothing: T,
}

impl<T: Float> XentTargets<'_, T> {
    /// (`(1 − eps)·w_label`, `eps/C`): the label's and every class's share of the target.
    fn shares(&self, label: usize) -> (T, T) {
        let classes = T::from(self.weights.len()).expect("a count converts to f32 and f64");
        (
            (T::one() - self.smoothing) * self.weights[label],
            self.smoothing / classes,
        )
    }
}

/// Per row of `logits` `[rows][classes]` with label `y`: `probs` = softmax and
/// `losses[row] = (1 − eps)·w_y·(−log p_y) + (eps/C)·Σ_c w_c·(−log p_c)`, PyTorch's
/// `cross_entropy(weight=w, label_smoothing=eps)` before its division by `Σ_rows w_y`. A label
/// outside `0..classes` gives a NaN loss.
pub fn softmax_xent_smooth_fwd<T: Float>(
    (logits, labels): (&[T], &[i32]),
    targets: XentTargets<T>,
    probs: &mut [T],
    losses: &mut [T],
) {
    let classes = targets.weights.len();
    debug_assert_eq!(logits.len(), losses.len() * classes, "smooth_fwd: logits");
    debug_assert_eq!(probs.len(), logits.len(), "smooth_fwd: probs length");
    debug_assert_eq!(labels.len(), losses.len(), "smooth_fwd: labels length");
    softmax_rows(
        (logits, labels),
        classes,
        probs,
        losses,
        |z, max, log_s, l| {
            let smooth = z
                .iter()
                .zip(targets.weights)
                .fold(T::zero(), |acc, (&z, &w)| acc + w * (log_s - (z - max)));
            let (label_share, per_class) = targets.shares(l);
            label_share * (log_s - (z[l] - max)) + per_class * smooth
        },
    );
}

/// `dlogits = scale·(a·p − t)` per row, with the weighted smoothed target
/// `t_c = (1 − eps)·w_y·[c = y] + (eps/C)·w_c` and `a = Σ_c t_c`: the gradient of
/// [`softmax_xent_smooth_fwd`]'s loss times `scale`. A bad label fills its row with NaN.
pub fn softmax_xent_smooth_bwd<T: Float>(
    (probs, labels): (&[T], &[i32]),
    targets: XentTargets<T>,
    scale: T,
    dlogits: &mut [T],
) {
    let classes = targets.weights.len();
    debug_assert_eq!(probs.len(), labels.len() * classes, "smooth_bwd: probs");
    debug_assert_eq!(dlogits.len(), probs.len(), "smooth_bwd: dlogits length");
    if classes == 0 {
        return;
    }
    let weight_sum = targets.weight_sum;
    dlogits
        .par_chunks_mut(classes)
        .zip(probs.par_chunks(classes))
        .zip(labels.par_iter())
        .for_each(|((d, p), &label)| {
            let Some(l) = label_index(label, classes) else {
                d.fill(T::nan());
                return;
            };
            let (label_share, per_class) = targets.shares(l);
            let a = label_share + per_class * weight_sum;
            for (c, (d, &p)) in d.iter_mut().zip(p).enumerate() {
                let own = if c == l { label_share } else { T::zero() };
                *d = scale * (a * p - (own + per_class * targets.weights[c]));
            }
        });
}

/// `sq = (prediction − target)²`, elementwise.
pub fn squared_error_fwd<T: Float>(prediction: &[T], target: &[T], sq: &mut [T]) {
    debug_assert!(
        prediction.len() == sq.len() && target.len() == sq.len(),
        "squared_error_fwd: lengths"
    );
    sq.par_iter_mut()
        .zip(prediction.par_iter().zip(target.par_iter()))
        .with_min_len(MIN_PAR_LEN)
        .for_each(|(s, (&p, &t))| {
            let d = p - t;
            *s = d * d;
        });
}

/// `dprediction = scale·(prediction − target)` and, when given, `dtarget = −dprediction`. For the
/// mean of the squared errors the caller passes `scale = 2·dloss/n`.
pub fn squared_error_bwd<T: Float>(
    prediction: &[T],
    target: &[T],
    scale: T,
    dprediction: &mut [T],
    dtarget: Option<&mut [T]>,
) {
    debug_assert!(
        prediction.len() == dprediction.len() && target.len() == dprediction.len(),
        "squared_error_bwd: lengths"
    );
    dprediction
        .par_iter_mut()
        .zip(prediction.par_iter().zip(target.par_iter()))
        .with_min_len(MIN_PAR_LEN)
        .for_each(|(g, (&p, &t))| *g = scale * (p - t));
    if let Some(dtarget) = dtarget {
        debug_assert_eq!(
            dtarget.len(),
            dprediction.len(),
            "squared_error_bwd: dtarget"
        );
        dtarget
            .par_iter_mut()
            .zip(dprediction.par_iter())
            .with_min_len(MIN_PAR_LEN)
            .for_each(|(d, &g)| *d = -g);
    }
}

/// `losses = max(z, 0) − z·t + ln(1 + e^−|z|)`, elementwise: the binary cross-entropy of
/// `sigmoid(z)` against `t`, written (as PyTorch does) so that no exponential can overflow.
pub fn bce_logits_fwd<T: Float>(logits: &[T], targets: &[T], losses: &mut [T]) {
    debug_assert!(
        logits.len() == losses.len() && targets.len() == losses.len(),
        "bce_logits_fwd: lengths"
    );
    losses
        .par_iter_mut()
        .zip(logits.par_iter().zip(targets.par_iter()))
        .with_min_len(MIN_PAR_LEN)
        .for_each(|(l, (&z, &t))| *l = z.max(T::zero()) - z * t + (-z.abs()).exp().ln_1p());
}

/// `sigmoid(z)` from `e = e^−|z| ≤ 1`, so neither branch overflows.
fn stable_sigmoid<T: Float>(z: T) -> T {
    let e = (-z.abs()).exp();
    if z >= T::zero() {
        T::one() / (T::one() + e)
    } else {
        e / (T::one() + e)
    }
}

/// `dlogits = scale·(sigmoid(z) − t)` and, when given, `dtargets = −scale·z` (the loss is linear in
/// `t` with slope `−z`). For the mean loss the caller passes `scale = dloss/n`.
pub fn bce_logits_bwd<T: Float>(
    logits: &[T],
    targets: &[T],
    scale: T,
    dlogits: &mut [T],
    dtargets: Option<&mut [T]>,
) {
    debug_assert!(
        logits.len() == dlogits.len() && targets.len() == dlogits.len(),
        "bce_logits_bwd: lengths"
    );
    dlogits
        .par_iter_mut()
        .zip(logits.par_iter().zip(targets.par_iter()))
        .with_min_len(MIN_PAR_LEN)
        .for_each(|(g, (&z, &t))| *g = scale * (stable_sigmoid(z) - t));
    if let Some(dtargets) = dtargets {
        debug_assert_eq!(dtargets.len(), logits.len(), "bce_logits_bwd: dtargets");
        dtargets
            .par_iter_mut()
            .zip(logits.par_iter())
            .with_min_len(MIN_PAR_LEN)
            .for_each(|(d, &z)| *d = -(scale * z));
    }
}

/// `Σ x²`, in chunks of [`MIN_PAR_LEN`] summed in order (the same result every run).
pub fn sum_squares<T: Float>(x: &[T]) -> T {
    let partials: Vec<T> = x
        .par_chunks(MIN_PAR_LEN)
        .map(|c| c.iter().fold(T::zero(), |acc, &v| acc + v * v))
        .collect();
    partials.into_iter().fold(T::zero(), |acc, v| acc + v)
}

/// Rows of `logits` [rows][classes] whose first largest value is at the row's label: the
/// accuracy count of a batch (the twin of kernels/loss.cu `count_correct_f32`).
pub fn count_correct<T: Float>(logits: &[T], labels: &[i32], classes: usize) -> usize {
    logits
        .chunks_exact(classes)
        .zip(labels)
        .filter(|(row, &label)| {
            let best = (1..classes).fold(0, |best, j| if row[j] > row[best] { j } else { best });
            best as i32 == label
        })
        .count()
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

    #[test]
    fn squared_error_by_hand() {
        // (1−1)², (2−0)², (3−0)², (−1.5−0.5)² = 0, 4, 9, 4.
        let (p, t) = ([1.0_f64, 2.0, 3.0, -1.5], [1.0, 0.0, 0.0, 0.5]);
        let mut sq = [f64::NAN; 4];
        squared_error_fwd(&p, &t, &mut sq);
        assert_eq!(sq, [0.0, 4.0, 9.0, 4.0]);
        let (mut dp, mut dt) = ([f64::NAN; 4], [f64::NAN; 4]);
        squared_error_bwd(&p, &t, 0.5, &mut dp, Some(&mut dt));
        assert_eq!(dp, [0.0, 1.0, 1.5, -1.0]);
        assert_eq!(dt, [0.0, -1.0, -1.5, 1.0]);
        squared_error_bwd(&p, &t, 2.0, &mut dp, None);
        assert_eq!(dp, [0.0, 4.0, 6.0, -4.0]);
    }

    /// Against the textbook form −t·ln σ(z) − (1 − t)·ln(1 − σ(z)) in f64 where it is accurate
    /// (|z| ≤ 4), and by hand at z = 0 (ln 2) and at |z| = 1000, where the textbook form overflows.
    #[test]
    fn bce_logits_by_hand_and_against_the_textbook_form() {
        let z = [0.0_f64, 2.0, -3.5, 0.25, 4.0, -0.75, 1.0];
        let t = [1.0_f64, 0.25, 0.0, 1.0, 0.5, 0.9, 0.0];
        let mut losses = [f64::NAN; 7];
        bce_logits_fwd(&z, &t, &mut losses);
        let textbook: Vec<f64> = z
            .iter()
            .zip(&t)
            .map(|(&z, &t)| {
                let s = 1.0 / (1.0 + (-z).exp());
                -t * s.ln() - (1.0 - t) * (1.0 - s).ln()
            })
            .collect();
        assert_close(&losses, &textbook, 1e-14, 1e-12);
        assert_close(&losses[..1], &[2f64.ln()], 0.0, 1e-15);

        // z = ±1000 in f32: 1000·(1 − t) for z = 1000, 1000·t for z = −1000, exactly.
        let z = [1000.0_f32, 1000.0, -1000.0, -1000.0, 1000.0];
        let t = [1.0_f32, 0.0, 1.0, 0.0, 0.25];
        let mut losses = [f32::NAN; 5];
        bce_logits_fwd(&z, &t, &mut losses);
        assert_eq!(losses, [0.0, 1000.0, 1000.0, 0.0, 750.0]);
        let (mut dz, mut dt) = ([f32::NAN; 5], [f32::NAN; 5]);
        bce_logits_bwd(&z, &t, 0.5, &mut dz, Some(&mut dt));
        // 0.5·(σ(z) − t) with σ(1000) = 1, σ(−1000) = 0; dt = −0.5·z.
        assert_eq!(dz, [0.0, 0.5, -0.5, 0.0, 0.375]);
        assert_eq!(dt, [-500.0, -500.0, 500.0, 500.0, -500.0]);
    }

    #[test]
    fn bce_logits_backward_matches_finite_differences() {
        let n = 9;
        let mut r = rng(43);
        let z: Vec<f64> = random_vec::<f64>(&mut r, n)
            .iter()
            .map(|v| 5.0 * v)
            .collect();
        let t: Vec<f64> = random_vec::<f64>(&mut r, n)
            .iter()
            .map(|v| 0.5 + 0.5 * v)
            .collect();
        let (mut dz, mut dt) = (vec![0.0; n], vec![0.0; n]);
        bce_logits_bwd(&z, &t, 1.0, &mut dz, Some(&mut dt));
        let loss = |z: &[f64], t: &[f64]| {
            let mut l = vec![0.0; n];
            bce_logits_fwd(z, t, &mut l);
            l.iter().sum::<f64>()
        };
        let h = 1e-6;
        for i in 0..n {
            let bump = |v: &[f64], d: f64| {
                let mut v = v.to_vec();
                v[i] += d;
                v
            };
            let nz = (loss(&bump(&z, h), &t) - loss(&bump(&z, -h), &t)) / (2.0 * h);
            let nt = (loss(&z, &bump(&t, h)) - loss(&z, &bump(&t, -h))) / (2.0 * h);
            assert_close(&[dz[i], dt[i]], &[nz, nt], 1e-8, 1e-6);
        }
    }

    #[test]
    fn sum_squares_by_hand_and_over_many_chunks() {
        assert_eq!(sum_squares(&[3.0_f64, -4.0, 0.5]), 25.25);
        assert_eq!(sum_squares::<f32>(&[]), 0.0);
        // 1² + 2² + … + m² = m(m+1)(2m+1)/6, exact in f64 at this size.
        let m = 3 * MIN_PAR_LEN + 5;
        let x: Vec<f64> = (1..=m).map(|v| v as f64).collect();
        let mf = m as f64;
        assert_eq!(sum_squares(&x), mf * (mf + 1.0) * (2.0 * mf + 1.0) / 6.0);
    }
}
