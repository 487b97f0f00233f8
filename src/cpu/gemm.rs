//! GEMM (as specified by [`GemmSpec`]) and the bias add / bias gradient of dense and conv layers.

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

use super::Float;
use crate::shape::GemmSpec;

/// `C = alpha·op(A)·op(B) + beta·C`, row-major, batched and optionally summed over the batch,
/// exactly as documented on [`GemmSpec`]. `beta` scales the old `C` once; with `beta == 0` the
/// old `C` is never read (NaN in it does not propagate), as in BLAS.
pub fn gemm<T: Float>(spec: &GemmSpec, alpha: T, a: &[T], b: &[T], beta: T, c: &mut [T]) {
    let (len_a, len_b, len_c) = spec.required_lens();
    debug_assert!(a.len() >= len_a, "gemm: a has {} < {len_a}", a.len());
    debug_assert!(b.len() >= len_b, "gemm: b has {} < {len_b}", b.len());
    debug_assert!(c.len() >= len_c, "gemm: c has {} < {len_c}", c.len());
    let mn = spec.m * spec.n;
    if mn == 0 {
        return;
    }
    let product = |i: usize, c: &mut [T]| accumulate(spec, i, alpha, a, b, c);
    if spec.reduce_batch {
        let c = &mut c[..mn];
        scale_by_beta(c, beta);
        (0..spec.batch).for_each(|i| product(i, c));
    } else if spec.batch == 1 {
        let c = &mut c[..mn];
        scale_by_beta(c, beta);
        product(0, c);
    } else if spec.batch > 1 {
        debug_assert!(spec.stride_c >= mn, "gemm: batched outputs overlap");
        c.par_chunks_mut(spec.stride_c)
            .take(spec.batch)
            .enumerate()
            .for_each(|(i, c)| {
                let c = &mut c[..mn];
                scale_by_beta(c, beta);
                product(i, c);
            });
    }
}

/// `c = beta·c`, or `c = 0` when `beta == 0` without reading `c`.
fn scale_by_beta<T: Float>(c: &mut [T], beta: T) {
    if beta == T::zero() {
        c.fill(T::zero());
    } else if beta != T::one() {
        c.iter_mut().for_each(|v| *v = *v * beta);
    }
}

/// `c += alpha·op(A_i)·op(B_i)` for batch entry `i`; `c` is the `m×n` output.
fn accumulate<T: Float>(spec: &GemmSpec, i: usize, alpha: T, a: &[T], b: &[T], c: &mut [T]) {
    let (m, n, k) = (spec.m, spec.n, spec.k);
    let a = operand(a, i * spec.stride_a, m, k, spec.trans_a);
    let b = operand(b, i * spec.stride_b, k, n, spec.trans_b);
    let mut c = ArrayViewMut2::from_shape((m, n), c).expect("checked length");
    general_mat_mul(alpha, &a, &b, T::one(), &mut c);
}

/// The `rows×cols` matrix `op(X)` whose storage starts at `data[start]`: `[rows][cols]`, or
/// `[cols][rows]` read transposed when `trans`.
fn operand<T: Float>(
    data: &[T],
    start: usize,
    rows: usize,
    cols: usize,
    trans: bool,
) -> ArrayView2<'_, T> {
    let stored = if trans { (cols, rows) } else { (rows, cols) };
    let view =
        ArrayView2::from_shape(stored, &data[start..start + rows * cols]).expect("checked length");
    if trans {
        view.reversed_axes()
    } else {
        view
    }
}

/// `y[o][c][i] += bias[c]` for `y` of shape `[outer][channels][inner]`.
pub fn bias_add<T: Float>(y: &mut [T], bias: &[T], outer: usize, channels: usize, inner: usize) {
    debug_assert_eq!(y.len(), outer * channels * inner, "bias_add: y length");
    debug_assert_eq!(bias.len(), channels, "bias_add: bias length");
    if y.is_empty() {
        return;
    }
    y.par_chunks_mut(channels * inner).for_each(|item| {
        for (row, &b) in item.chunks_exact_mut(inner).zip(bias) {
            row.iter_mut().for_each(|v| *v = *v + b);
        }
    });
}

/// `db[c] = Σ_{o,i} dy[o][c][i]` (overwritten) for `dy` of shape `[outer][channels][inner]`,
/// summed in memory order per channel.
pub fn bias_grad<T: Float>(dy: &[T], outer: usize, channels: usize, inner: usize, db: &mut [T]) {
    debug_assert_eq!(dy.len(), outer * channels * inner, "bias_grad: dy length");
    debug_assert_eq!(db.len(), channels, "bias_grad: db length");
    db.par_iter_mut().enumerate().for_each(|(c, db)| {
        *db = (0..outer)
            .flat_map(|o| &dy[(o * channels + c) * inner..][..inner])
            .fold(T::zero(), |sum, &v| sum + v);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testutil::{assert_close, from_f64, random_vec, rng, to_f64};

    /// The triple loop, in f64, of the [`GemmSpec`] documentation (reads old `c` only if beta ≠ 0).
    fn naive(spec: &GemmSpec, alpha: f64, a: &[f64], b: &[f64], beta: f64, c: &[f64]) -> Vec<f64> {
        let (m, n, k) = (spec.m, spec.n, spec.k);
        let op_a = |i: usize, r: usize, p: usize| {
            let at = if spec.trans_a { p * m + r } else { r * k + p };
            a[i * spec.stride_a + at]
        };
        let op_b = |i: usize, p: usize, col: usize| {
            let at = if spec.trans_b {
                col * k + p
            } else {
                p * n + col
            };
            b[i * spec.stride_b + at]
        };
        let mut out = c.to_vec();
        let batches: Vec<Vec<usize>> = if spec.reduce_batch {
            vec![(0..spec.batch).collect()]
        } else {
            (0..spec.batch).map(|i| vec![i]).collect()
        };
        for (slot, group) in batches.iter().enumerate() {
            let offset = slot * spec.stride_c;
            for r in 0..m {
                for col in 0..n {
                    let mut sum = 0.0;
                    for &i in group {
                        for p in 0..k {
                            sum += op_a(i, r, p) * op_b(i, p, col);
                        }
                    }
                    let old = if beta == 0.0 {
                        0.0
                    } else {
                        beta * c[offset + r * n + col]
                    };
                    out[offset + r * n + col] = alpha * sum + old;
                }
            }
        }
        out
    }

    /// Runs `gemm` in `T` on random operands and compares with [`naive`] in f64.
    fn check<T: Float>(spec: &GemmSpec, alpha: f64, beta: f64, c_fill: Option<f64>, tol: f64) {
        let mut rng = rng(spec.m as u64 * 1000 + spec.n as u64 * 10 + spec.k as u64);
        let (len_a, len_b, len_c) = spec.required_lens();
        let a: Vec<f64> = random_vec(&mut rng, len_a);
        let b: Vec<f64> = random_vec(&mut rng, len_b);
        let c: Vec<f64> = match c_fill {
            Some(v) => vec![v; len_c],
            None => random_vec(&mut rng, len_c),
        };
        let cast = |v: &[f64]| v.iter().map(|&x| from_f64::<T>(x)).collect::<Vec<T>>();
        let mut actual = cast(&c);
        gemm(
            spec,
            from_f64(alpha),
            &cast(&a),
            &cast(&b),
            from_f64(beta),
            &mut actual,
        );
        // Round the operands through T so the reference sees the same inputs.
        let back = |v: Vec<T>| v.into_iter().map(to_f64).collect::<Vec<f64>>();
        let expected = naive(spec, alpha, &back(cast(&a)), &back(cast(&b)), beta, &c);
        assert_close(&back(actual), &expected, tol, tol);
    }

    const SHAPES: [(usize, usize, usize); 4] = [(7, 13, 5), (33, 17, 29), (1, 1, 1), (5, 3, 1)];

    #[test]
    fn all_transpose_combinations() {
        for (m, n, k) in SHAPES {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let mut spec = GemmSpec::new(m, n, k);
                (spec.trans_a, spec.trans_b) = (ta, tb);
                check::<f64>(&spec, 1.3, 0.7, None, 1e-12);
                check::<f32>(&spec, 1.3, 0.7, None, 1e-5);
            }
        }
    }

    /// Weights shared across the batch (stride 0 on A), and a C stride with gaps that must stay
    /// untouched (the naive reference leaves them as they were).
    #[test]
    fn batch_with_shared_a() {
        for (m, n, k) in SHAPES {
            let spec = GemmSpec::new(m, n, k).batched(3, 0, k * n + 2, m * n + 3);
            check::<f64>(&spec, 0.9, 0.5, None, 1e-12);
            check::<f64>(&spec.transpose_a().transpose_b(), 1.0, 0.0, None, 1e-12);
            check::<f32>(&spec, 0.9, 0.5, None, 1e-5);
        }
    }

    #[test]
    fn reduce_batch_sums_into_one_c() {
        for (m, n, k) in SHAPES {
            let spec = GemmSpec::new(m, n, k)
                .transpose_b()
                .batched(4, m * k, n * k, 0)
                .summed_over_batch();
            check::<f64>(&spec, 1.1, 0.25, None, 1e-12);
            check::<f64>(&spec, 1.0, 1.0, None, 1e-12);
            check::<f32>(&spec, 1.1, 0.25, None, 1e-5);
        }
    }

    /// BLAS convention: with beta = 0 the old C is ignored, even when it holds NaN.
    #[test]
    fn beta_zero_ignores_nan_in_c() {
        for (m, n, k) in SHAPES {
            let single = GemmSpec::new(m, n, k).transpose_a();
            let batched = GemmSpec::new(m, n, k).batched(2, m * k, k * n, m * n);
            let reduced = batched.summed_over_batch();
            for spec in [single, batched, reduced] {
                check::<f64>(&spec, 2.0, 0.0, Some(f64::NAN), 1e-12);
                check::<f32>(&spec, 2.0, 0.0, Some(f64::NAN), 1e-5);
            }
        }
    }

    #[test]
    fn bias_add_matches_naive() {
        let (outer, channels, inner) = (3, 5, 7);
        let mut rng = rng(11);
        let y: Vec<f64> = random_vec(&mut rng, outer * channels * inner);
        let bias: Vec<f64> = random_vec(&mut rng, channels);
        let mut expected = y.clone();
        for o in 0..outer {
            for c in 0..channels {
                for i in 0..inner {
                    expected[(o * channels + c) * inner + i] += bias[c];
                }
            }
        }
        let mut actual = y;
        bias_add(&mut actual, &bias, outer, channels, inner);
        assert_close(&actual, &expected, 0.0, 0.0);
    }

    #[test]
    fn bias_grad_matches_naive() {
        let (outer, channels, inner) = (3, 5, 7);
        let dy: Vec<f64> = random_vec(&mut rng(12), outer * channels * inner);
        let mut expected = vec![0.0; channels];
        for o in 0..outer {
            for (c, e) in expected.iter_mut().enumerate() {
                for i in 0..inner {
                    *e += dy[(o * channels + c) * inner + i];
                }
            }
        }
        let mut db = vec![f64::NAN; channels]; // overwritten
        bias_grad(&dy, outer, channels, inner, &mut db);
        assert_close(&db, &expected, 1e-14, 1e-14);
    }
}
