//! Convolution on the CPU, one image at a time: each image's im2col columns live only in a
//! per-thread scratch buffer that fits in L2, and go straight into the GEMM.
//!
//! The batch-wide im2col + GEMM (what the GPU runs) streams a column buffer KH·KW times the
//! size of the input through memory, allocated and written for every call, and for the weight
//! gradient keeps it alive from the forward to the backward pass. Here nothing that large ever
//! exists: the weight gradient recomputes each image's columns from the saved input.
//! Products and layouts are [`GroupedConv`]'s; results match the batch-wide path.

use rayon::prelude::*;

use super::gemm::{bias_add, gemm_on, Threads};
use super::im2col::{col2im_image, im2col_image};
use super::scratch::{with_scratch, ScratchElement};
use crate::core::shape::{GemmSpec, GroupedConv};

/// Images whose partial weight gradients are summed separately (in parallel) and then added in
/// order, so the result does not depend on the number of threads.
const WEIGHT_GRAD_CHUNKS: usize = 8;

/// `y` [N, K, OH, OW] (overwritten) = conv(x [N, C, H, W], w [K, C/G, KH, KW]) + bias [K].
pub fn forward<T: ScratchElement>(
    conv: &GroupedConv,
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    y: &mut [T],
) {
    let g = &conv.geometry;
    let (image_len, out_len) = (image_len(conv), output_image_len(conv));
    if out_len == 0 {
        return;
    }
    let spec = conv.forward_spec(1);
    y.par_chunks_mut(out_len)
        .zip(x.par_chunks(image_len))
        .with_min_len(images_per_task(conv))
        .for_each(|(y, x)| {
            with_scratch(g.col_rows() * g.col_cols(), |col| {
                im2col_image(x, g, col);
                gemm_on(Threads::ThisOne, &spec, T::one(), w, col, T::zero(), y);
            });
            if let Some(bias) = bias {
                bias_add(y, bias, 1, conv.out_channels, g.col_cols());
            }
        });
}

/// `dx` [N, C, H, W] (overwritten) = col2im(Wᵀ · dy) for dy [N, K, OH, OW].
pub fn input_grad<T: ScratchElement>(conv: &GroupedConv, w: &[T], dy: &[T], dx: &mut [T]) {
    let g = &conv.geometry;
    let (image_len, out_len) = (image_len(conv), output_image_len(conv));
    if image_len == 0 {
        return;
    }
    let spec = conv.input_grad_spec(1);
    dx.par_chunks_mut(image_len)
        .zip(dy.par_chunks(out_len.max(1)))
        .with_min_len(images_per_task(conv))
        .for_each(|(dx, dy)| {
            with_scratch(g.col_rows() * g.col_cols(), |dcol| {
                gemm_on(Threads::ThisOne, &spec, T::one(), w, dy, T::zero(), dcol);
                col2im_image(dcol, g, dx);
            })
        });
}

/// `dw` [K, C/G, KH, KW] (overwritten) = Σ_n dy[n] · im2col(x[n])ᵀ.
///
/// Computed transposed, dWᵀ [C/G·KH·KW, K] = Σ_n im2col(x[n]) · dy[n]ᵀ per group, and transposed
/// once at the end: the product then has the long side (the column rows) as its M and the few
/// output channels as its N, which the GEMM's micro-kernel runs ~2.5x faster than the M = K, N =
/// rows shape (measured: 16x144x1024 at 33 GFLOP/s against 144x16x1024 at 90 on one thread).
///
/// With many output channels (64: 576x64x64) the untransposed product is as fast, and it is kept
/// there and where the rows are few (the 3-channel stem, 1x1 shortcuts).
pub fn weight_grad<T: ScratchElement>(conv: &GroupedConv, x: &[T], dy: &[T], dw: &mut [T]) {
    let g = &conv.geometry;
    let groups = conv.groups;
    let (rows_g, pixels, k_g) = (
        g.col_rows() / groups,
        g.col_cols(),
        conv.out_channels / groups,
    );
    if k_g > 32 || rows_g < 4 * k_g {
        return weight_grad_untransposed(conv, x, dy, dw);
    }
    // dWᵀ_g [rows_g, K/G] += col_g [rows_g, P] · dy_gᵀ [P, K/G].
    let spec = GemmSpec::new(rows_g, k_g, pixels).transpose_b().grouped(
        groups,
        rows_g * pixels,
        k_g * pixels,
        rows_g * k_g,
    );
    let work = g.col_len() * k_g;
    let dw_t = summed_over_images(conv, x, dy, dw.len(), work, |col, dy, partial| {
        gemm_on(
            Threads::ThisOne,
            &spec,
            T::one(),
            col,
            dy,
            T::one(),
            partial,
        )
    });
    // dw[g·K/G + k][r] = dWᵀ_g[r][k].
    for (group, dw_t) in dw_t.chunks_exact(rows_g * k_g).enumerate() {
        let dw = &mut dw[group * k_g * rows_g..][..k_g * rows_g];
        for (r, row) in dw_t.chunks_exact(k_g).enumerate() {
            for (k, &v) in row.iter().enumerate() {
                dw[k * rows_g + r] = v;
            }
        }
    }
}

/// [`weight_grad`] as dW_g [K/G, rows_g] = Σ_n dy[n, g] · col[n, g]ᵀ directly.
fn weight_grad_untransposed<T: ScratchElement>(
    conv: &GroupedConv,
    x: &[T],
    dy: &[T],
    dw: &mut [T],
) {
    let spec = conv.weight_grad_spec(1);
    let work = conv.geometry.col_len() * conv.out_channels;
    let sum = summed_over_images(conv, x, dy, dw.len(), work, |col, dy, partial| {
        gemm_on(
            Threads::ThisOne,
            &spec,
            T::one(),
            dy,
            col,
            T::one(),
            partial,
        )
    });
    dw.copy_from_slice(&sum);
}

/// Σ over the batch of `product(im2col(x[n]), dy[n], partial)` into a fresh vector of `len`: the
/// batch in [`WEIGHT_GRAD_CHUNKS`] chunks, each summed into its own partial (on rayon workers when
/// `work` multiply-adds are worth it), the partials then added in chunk order, so the result does
/// not depend on the threads.
fn summed_over_images<T: ScratchElement>(
    conv: &GroupedConv,
    x: &[T],
    dy: &[T],
    len: usize,
    work: usize,
    product: impl Fn(&[T], &[T], &mut [T]) + Sync,
) -> Vec<T> {
    let g = &conv.geometry;
    let (image_len, out_len) = (image_len(conv), output_image_len(conv));
    let per_chunk = g.batch.div_ceil(WEIGHT_GRAD_CHUNKS).max(1);
    let partial_sum = |first: usize| {
        let mut partial = vec![T::zero(); len];
        with_scratch(g.col_rows() * g.col_cols(), |col| {
            for n in first..(first + per_chunk).min(g.batch) {
                im2col_image(&x[n * image_len..][..image_len], g, col);
                product(col, &dy[n * out_len..][..out_len], &mut partial);
            }
        });
        partial
    };
    let starts: Vec<usize> = (0..g.batch).step_by(per_chunk).collect();
    let partials: Vec<Vec<T>> = if starts.len() > 1 && work >= PARALLEL_WORK {
        starts.into_par_iter().map(partial_sum).collect()
    } else {
        starts.into_iter().map(partial_sum).collect()
    };
    let mut sum = vec![T::zero(); len];
    for partial in partials {
        sum.iter_mut().zip(&partial).for_each(|(d, &p)| *d = *d + p);
    }
    sum
}

/// Multiply-adds below which a conv pass stays on the calling thread: waking a rayon worker
/// costs a few microseconds, about what this much work takes.
const PARALLEL_WORK: usize = 1 << 17;

/// Images per rayon task, so that a task holds at least [`PARALLEL_WORK`] multiply-adds (a
/// batch of small images stays on one thread, and each task allocates its scratch once).
fn images_per_task(conv: &GroupedConv) -> usize {
    let g = &conv.geometry;
    let per_image = g.col_rows() * g.col_cols() * (conv.out_channels / conv.groups.max(1));
    PARALLEL_WORK.div_ceil(per_image.max(1))
}

/// Elements of one input image: C·H·W.
fn image_len(conv: &GroupedConv) -> usize {
    let g = &conv.geometry;
    g.in_channels * g.in_h * g.in_w
}

/// Elements of one output image: K·OH·OW.
fn output_image_len(conv: &GroupedConv) -> usize {
    conv.out_channels * conv.geometry.col_cols()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::shape::{ConvGeometry, Window2d};
    use crate::cpu::gemm::gemm;
    use crate::cpu::im2col::{col2im, im2col};
    use crate::cpu::testutil::{assert_close, random_vec, rng};

    /// Odd sizes, padding, stride, dilation and groups, none a multiple of a tile.
    fn cases() -> Vec<GroupedConv> {
        let make = |input: [usize; 4], window: Window2d, k: usize, groups: usize| GroupedConv {
            geometry: ConvGeometry::new(input, window, false).unwrap(),
            out_channels: k,
            groups,
        };
        vec![
            make([3, 5, 9, 7], Window2d::square(3, 1, 1), 7, 1),
            make(
                [2, 6, 11, 8],
                Window2d::square(3, 2, 0).with_dilation(2),
                9,
                3,
            ),
            make([5, 4, 7, 9], Window2d::new((2, 3), (1, 2), (1, 0)), 4, 4),
            make([1, 3, 5, 5], Window2d::square(1, 1, 0), 2, 1),
            make([9, 2, 6, 6], Window2d::square(5, 1, 2), 3, 1),
            // 'Same' stride-1 windows (the block-copy im2col): even and asymmetric, and dilated
            // so far that some taps shift past the whole row.
            make([2, 3, 5, 4], Window2d::same((2, 4), (1, 2)), 5, 1),
            make([2, 2, 3, 2], Window2d::same((3, 3), (3, 3)), 3, 1),
            // Taps that never land inside the 1x1 input for some outputs, and one that never does.
            make(
                [2, 3, 1, 1],
                Window2d::square(3, 1, 4).with_dilation(3),
                2,
                1,
            ),
        ]
    }

    /// The batch-wide im2col + one GEMM over every image, as the GPU computes it.
    fn batch_forward(conv: &GroupedConv, x: &[f64], w: &[f64]) -> Vec<f64> {
        let g = &conv.geometry;
        let mut col = vec![0.0; g.col_len()];
        im2col(x, g, &mut col);
        let mut y = vec![0.0; g.batch * output_image_len(conv)];
        gemm(&conv.forward_spec(g.batch), 1.0, w, &col, 0.0, &mut y);
        y
    }

    fn operands(conv: &GroupedConv, seed: u64) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
        let g = &conv.geometry;
        let mut rng = rng(seed);
        let w_len: usize = conv.weight_shape().iter().product();
        (
            random_vec(&mut rng, g.input_len()),
            random_vec(&mut rng, w_len),
            random_vec(&mut rng, conv.out_channels),
            random_vec(&mut rng, g.batch * output_image_len(conv)),
        )
    }

    #[test]
    fn forward_matches_the_batch_wide_products() {
        for (i, conv) in cases().iter().enumerate() {
            let (x, w, b, _) = operands(conv, 10 + i as u64);
            let mut expected = batch_forward(conv, &x, &w);
            let g = &conv.geometry;
            bias_add(&mut expected, &b, g.batch, conv.out_channels, g.col_cols());
            let mut y = vec![f64::NAN; expected.len()];
            forward(conv, &x, &w, Some(&b), &mut y);
            assert_close(&y, &expected, 1e-12, 1e-12);
        }
    }

    #[test]
    fn input_grad_matches_the_batch_wide_products() {
        for (i, conv) in cases().iter().enumerate() {
            let (_, w, _, dy) = operands(conv, 20 + i as u64);
            let g = &conv.geometry;
            let mut dcol = vec![0.0; g.col_len()];
            gemm(&conv.input_grad_spec(g.batch), 1.0, &w, &dy, 0.0, &mut dcol);
            let mut expected = vec![0.0; g.input_len()];
            col2im(&dcol, g, &mut expected);
            let mut dx = vec![f64::NAN; g.input_len()];
            input_grad(conv, &w, &dy, &mut dx);
            assert_close(&dx, &expected, 1e-12, 1e-12);
        }
    }

    #[test]
    fn weight_grad_matches_the_batch_wide_products() {
        for (i, conv) in cases().iter().enumerate() {
            let (x, w, _, dy) = operands(conv, 30 + i as u64);
            let g = &conv.geometry;
            let mut col = vec![0.0; g.col_len()];
            im2col(&x, g, &mut col);
            let mut expected = vec![0.0; w.len()];
            gemm(
                &conv.weight_grad_spec(g.batch),
                1.0,
                &dy,
                &col,
                0.0,
                &mut expected,
            );
            let mut dw = vec![f64::NAN; w.len()];
            weight_grad(conv, &x, &dy, &mut dw);
            assert_close(&dw, &expected, 1e-12, 1e-12);
        }
    }

    /// ⟨conv(x), dy⟩ = ⟨x, input_grad(dy)⟩ = ⟨w, weight_grad(x, dy)⟩: the three products are
    /// adjoint, checked independently of any other implementation.
    #[test]
    fn the_three_products_are_adjoint() {
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(a, b)| a * b).sum::<f64>();
        for (i, conv) in cases().iter().enumerate() {
            let (x, w, _, dy) = operands(conv, 40 + i as u64);
            let mut y = vec![0.0; dy.len()];
            forward(conv, &x, &w, None, &mut y);
            let mut dx = vec![0.0; x.len()];
            input_grad(conv, &w, &dy, &mut dx);
            let mut dw = vec![0.0; w.len()];
            weight_grad(conv, &x, &dy, &mut dw);
            let (yd, xd, wd) = (dot(&y, &dy), dot(&x, &dx), dot(&w, &dw));
            assert!(
                (yd - xd).abs() <= 1e-9 * yd.abs().max(1.0),
                "{conv:?}: {yd} vs {xd}"
            );
            assert!(
                (yd - wd).abs() <= 1e-9 * yd.abs().max(1.0),
                "{conv:?}: {yd} vs {wd}"
            );
        }
    }
}
