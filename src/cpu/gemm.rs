//! GEMM (as specified by [`GemmSpec`]) and the bias add / bias gradient of dense and conv layers.

use rayon::prelude::*;

use super::Float;
use crate::core::shape::GemmSpec;

/// `C = alpha·op(A)·op(B) + beta·C`, row-major, batched (two levels: batch entries and groups) and
/// optionally summed over the batch, exactly as documented on [`GemmSpec`]. `beta` scales the old
/// `C` once; with `beta == 0` the old `C` is never read (NaN in it does not propagate), as in BLAS.
pub fn gemm<T: Float>(spec: &GemmSpec, alpha: T, a: &[T], b: &[T], beta: T, c: &mut [T]) {
    gemm_on(Threads::All, spec, alpha, a, b, beta, c)
}

/// Which threads a GEMM may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Threads {
    /// Spread over the pool: batch entries and groups in parallel, a lone large product split
    /// over output blocks.
    All,
    /// Only the calling thread, for a GEMM inside a loop that is already parallel.
    ThisOne,
}

/// [`gemm`] on the given threads.
pub(crate) fn gemm_on<T: Float>(
    threads: Threads,
    spec: &GemmSpec,
    alpha: T,
    a: &[T],
    b: &[T],
    beta: T,
    c: &mut [T],
) {
    let (len_a, len_b, len_c) = spec.required_lens();
    debug_assert!(a.len() >= len_a, "gemm: a has {} < {len_a}", a.len());
    debug_assert!(b.len() >= len_b, "gemm: b has {} < {len_b}", b.len());
    debug_assert!(c.len() >= len_c, "gemm: c has {} < {len_c}", c.len());
    let mn = spec.m * spec.n;
    if mn == 0 {
        return;
    }
    // Output matrix (slot, g): C at slot·stride_c + g·group_stride_c, where slot is the batch entry,
    // or 0 when the batch is summed into it.
    let slots = if spec.reduce_batch { 1 } else { spec.batch };
    let (groups, stride_c, group_stride_c) = (spec.groups, spec.stride_c, spec.group_stride_c);
    // `alone`: no other product runs beside this one, so it may use every thread.
    let product = |slot: usize, g: usize, c: &mut [T], alone: bool| {
        let c = &mut c[..mn];
        let threads = if alone { threads } else { Threads::ThisOne };
        if spec.reduce_batch {
            scale_by_beta(c, beta);
            accumulate_batch_sum(threads, spec, g, alpha, a, b, c);
        } else if beta == T::zero() && spec.k > 0 {
            // The product overwrites c without reading it: no pass to clear it first.
            accumulate(threads, spec, (slot, g), (alpha, false), a, b, c);
        } else {
            scale_by_beta(c, beta);
            accumulate(threads, spec, (slot, g), (alpha, true), a, b, c);
        }
    };
    if slots == 0 || groups == 0 {
        return;
    }
    if threads == Threads::ThisOne || (slots == 1 && groups == 1) {
        for slot in 0..slots {
            for g in 0..groups {
                product(
                    slot,
                    g,
                    &mut c[slot * stride_c + g * group_stride_c..],
                    true,
                );
            }
        }
    } else if slots > 1 && stride_c >= (groups - 1) * group_stride_c + mn {
        // Batch-major: each batch entry's chunk holds all its groups.
        c.par_chunks_mut(stride_c)
            .take(slots)
            .enumerate()
            .for_each(|(slot, chunk)| {
                (0..groups).for_each(|g| product(slot, g, &mut chunk[g * group_stride_c..], false));
            });
    } else if groups > 1 && group_stride_c >= (slots - 1) * stride_c + mn {
        // Group-major: each group's chunk holds all its batch entries.
        c.par_chunks_mut(group_stride_c)
            .take(groups)
            .enumerate()
            .for_each(|(g, chunk)| {
                (0..slots).for_each(|slot| product(slot, g, &mut chunk[slot * stride_c..], false));
            });
    } else {
        // Interleaved layouts: one output matrix after another.
        for slot in 0..slots {
            for g in 0..groups {
                product(
                    slot,
                    g,
                    &mut c[slot * stride_c + g * group_stride_c..],
                    true,
                );
            }
        }
    }
}

/// `c += alpha·Σ_i op(A_ig)·op(B_ig)` over the whole batch. The batch is cut into a fixed number of
/// contiguous chunks whose partial sums are computed in parallel and then added in chunk order,
/// so the result does not depend on the number of threads.
fn accumulate_batch_sum<T: Float>(
    threads: Threads,
    spec: &GemmSpec,
    g: usize,
    alpha: T,
    a: &[T],
    b: &[T],
    c: &mut [T],
) {
    const CHUNKS: usize = 8;
    let per_chunk = spec.batch.div_ceil(CHUNKS).max(1);
    if spec.batch <= per_chunk || threads == Threads::ThisOne {
        (0..spec.batch).for_each(|i| accumulate(threads, spec, (i, g), (alpha, true), a, b, c));
        return;
    }
    let starts: Vec<usize> = (0..spec.batch).step_by(per_chunk).collect();
    let partials: Vec<Vec<T>> = starts
        .into_par_iter()
        .map(|start| {
            let mut partial = vec![T::zero(); c.len()];
            let end = (start + per_chunk).min(spec.batch);
            (start..end).for_each(|i| {
                accumulate(
                    Threads::ThisOne,
                    spec,
                    (i, g),
                    (alpha, true),
                    a,
                    b,
                    &mut partial,
                )
            });
            partial
        })
        .collect();
    for partial in partials {
        c.iter_mut().zip(&partial).for_each(|(c, &p)| *c = *c + p);
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

/// `c += alpha·op(A_ig)·op(B_ig)` for batch entry `i` of group `g`, or with `read_c` false
/// `c = alpha·op(A_ig)·op(B_ig)` (c is written, never read); `c` is the `m×n` output.
fn accumulate<T: Float>(
    threads: Threads,
    spec: &GemmSpec,
    (i, g): (usize, usize),
    (alpha, read_c): (T, bool),
    a: &[T],
    b: &[T],
    c: &mut [T],
) {
    let (m, n, k) = (spec.m, spec.n, spec.k);
    let a = operand(
        a,
        i * spec.stride_a + g * spec.group_stride_a,
        m,
        k,
        spec.trans_a,
    );
    let b = operand(
        b,
        i * spec.stride_b + g * spec.group_stride_b,
        k,
        n,
        spec.trans_b,
    );
    let c = &mut c[..m * n];
    // SAFETY: `operand` bounds-checked both stored matrices and `c` holds m·n elements; the strides
    // describe exactly those row-major (or transposed) layouts. T is f32 or f64, both of which
    // the `gemm` crate implements.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            read_c,
            a.data.as_ptr(),
            a.col_stride,
            a.row_stride,
            b.data.as_ptr(),
            b.col_stride,
            b.row_stride,
            T::one(),
            alpha,
            false,
            false,
            false,
            parallelism(threads, m * n * k),
        )
    }
}

/// A lone product (a linear layer) of at least this many multiply-adds is split over every
/// thread; products inside a parallel loop over images, groups or batch chunks stay on their
/// thread, which the loop already keeps busy. The split is over output blocks, so each element's
/// sum order, and the result, does not depend on the thread count.
const PARALLEL_GEMM_WORK: usize = 1 << 18;

fn parallelism(threads: Threads, work: usize) -> gemm::Parallelism {
    if threads == Threads::All && work >= PARALLEL_GEMM_WORK {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    }
}

/// A `rows×cols` matrix `op(X)` in borrowed storage, with its element strides.
struct Operand<'a, T> {
    data: &'a [T],
    row_stride: isize,
    col_stride: isize,
}

/// The `rows×cols` matrix `op(X)` whose storage starts at `data[start]`: `[rows][cols]`, or
/// `[cols][rows]` read transposed when `trans`.
fn operand<T>(data: &[T], start: usize, rows: usize, cols: usize, trans: bool) -> Operand<'_, T> {
    let data = &data[start..start + rows * cols];
    let (row_stride, col_stride) = if trans { (1, rows) } else { (cols, 1) };
    Operand {
        data,
        row_stride: row_stride as isize,
        col_stride: col_stride as isize,
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
        let op_a = |i: usize, g: usize, r: usize, p: usize| {
            let at = if spec.trans_a { p * m + r } else { r * k + p };
            a[i * spec.stride_a + g * spec.group_stride_a + at]
        };
        let op_b = |i: usize, g: usize, p: usize, col: usize| {
            let at = if spec.trans_b {
                col * k + p
            } else {
                p * n + col
            };
            b[i * spec.stride_b + g * spec.group_stride_b + at]
        };
        let mut out = c.to_vec();
        let batches: Vec<Vec<usize>> = if spec.reduce_batch {
            vec![(0..spec.batch).collect()]
        } else {
            (0..spec.batch).map(|i| vec![i]).collect()
        };
        for g in 0..spec.groups {
            for (slot, entries) in batches.iter().enumerate() {
                let offset = slot * spec.stride_c + g * spec.group_stride_c;
                for r in 0..m {
                    for col in 0..n {
                        let mut sum = 0.0;
                        for &i in entries {
                            for p in 0..k {
                                sum += op_a(i, g, r, p) * op_b(i, g, p, col);
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

    /// The second batch level (grouped convolution): batch-major and group-major C layouts, a
    /// shared A per group (stride 0 over the batch), with and without the batch summed, batch 1,
    /// and gaps between output matrices that must stay untouched.
    #[test]
    fn groups_as_a_second_batch_level() {
        for (m, n, k) in SHAPES {
            let (mk, kn, mn) = (m * k, k * n, m * n);
            // Like a grouped convolution's forward: A shared over the batch, per group.
            let batch_major = GemmSpec::new(m, n, k)
                .batched(3, 0, 3 * kn + 1, 3 * mn + 2)
                .grouped(3, mk + 1, kn, mn);
            // Batch entries nested inside each group's C chunk.
            let group_major = GemmSpec::new(m, n, k).batched(2, mk, kn, mn).grouped(
                3,
                2 * mk,
                2 * kn,
                2 * mn + 1,
            );
            let single_image = GemmSpec::new(m, n, k).grouped(4, mk, kn, mn);
            let weight_grad = GemmSpec::new(m, n, k)
                .transpose_b()
                .batched(3, 2 * mk, 2 * kn, 0)
                .grouped(2, mk, kn, mn + 3)
                .summed_over_batch();
            for spec in [batch_major, group_major, single_image, weight_grad] {
                check::<f64>(&spec, 1.2, 0.5, None, 1e-12);
                check::<f64>(&spec.transpose_a(), 1.0, 0.0, Some(f64::NAN), 1e-12);
                check::<f32>(&spec, 1.2, 0.5, None, 1e-5);
            }
        }
    }

    /// By hand, 1x1 matrices: entry (b, g) of A = [1, 2, 3, 4] and B = [5, 6, 7, 8] is element
    /// 2b + g, so C = [1·5, 2·6, 3·7, 4·8] = [5, 12, 21, 32]; summed over b, C_g = [5 + 21, 12 + 32].
    #[test]
    fn groups_by_hand() {
        let (a, b) = ([1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]);
        let spec = GemmSpec::new(1, 1, 1)
            .batched(2, 2, 2, 2)
            .grouped(2, 1, 1, 1);
        let mut c = [f64::NAN; 4];
        gemm(&spec, 1.0, &a, &b, 0.0, &mut c);
        assert_eq!(c, [5.0, 12.0, 21.0, 32.0]);
        let mut c = [f64::NAN; 2];
        gemm(&spec.summed_over_batch(), 1.0, &a, &b, 0.0, &mut c);
        assert_eq!(c, [26.0, 44.0]);
    }

    /// Interleaved C matrices (at 0, 2, 3, 4, 5, 7 times m·n: neither batch- nor group-major) take
    /// the sequential path.
    #[test]
    fn interleaved_groups() {
        let (m, n, k) = (3, 4, 5);
        let spec = GemmSpec::new(m, n, k)
            .batched(3, m * k, k * n, 2 * m * n)
            .grouped(2, 3 * m * k, 3 * k * n, 3 * m * n);
        check::<f64>(&spec, 0.7, 0.3, None, 1e-12);
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
