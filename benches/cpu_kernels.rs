//! CPU reference backend: one criterion group per primitive, on `Device::Cpu`.
//!
//! Shapes are those of a small conv layer: x [N=64, C=16, 14, 14], 3x3 window, stride 1, pad 1;
//! max-pool 2x2 stride 2 on the same x. Inputs are seeded normal samples (never zeros, so no
//! branch is decided by a constant input).
//!
//! Throughput: memory-bound ops report `Throughput::Bytes` = bytes of every operand read once plus
//! every output written once (gathers that re-read an input, like im2col, count it once); GEMM
//! reports `Throughput::Elements` = floating-point operations (2·m·n·k per product), so criterion's
//! "elem/s" is FLOP/s. Higher throughput is better; lower time is better.
//! Each timed call includes allocating its output, as the backend functions return new tensors.
//!
//! Run: `cargo bench --bench cpu_kernels` (about a minute); one group: `cargo bench --bench
//! cpu_kernels -- cpu_gemm`.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kiln::backend;
use kiln::{ConvGeometry, Device, GemmSpec, Tensor, Window2d};

const N: usize = 64;
const C: usize = 16;
const H: usize = 14;
const W: usize = 14;
/// Output channels of the conv-shaped GEMM.
const K_OUT: usize = 16;
const F32: u64 = 4;

/// Seeded N(0, 1) samples on the CPU.
fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, 1.0, seed, Device::Cpu).expect("a host tensor can always be made")
}

fn conv_geometry() -> ConvGeometry {
    ConvGeometry::new([N, C, H, W], Window2d::square(3, 1, 1), true).expect("3x3 pad 1 fits 14x14")
}

fn pool_geometry() -> ConvGeometry {
    ConvGeometry::new([N, C, H, W], Window2d::square(2, 2, 0), true).expect("2x2 s2 fits 14x14")
}

/// A criterion group with the short settings this file uses everywhere.
fn group<'c>(
    c: &'c mut Criterion,
    name: &str,
    throughput: Throughput,
) -> criterion::BenchmarkGroup<'c, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .throughput(throughput);
    g
}

fn shape_label(shape: &[usize]) -> String {
    shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("x")
}

fn bench_im2col(c: &mut Criterion) {
    let g = conv_geometry();
    let x = randn(&[N, C, H, W], 1);
    let bytes = (g.input_len() + g.col_len()) as u64 * F32;
    let mut grp = group(c, "cpu_im2col", Throughput::Bytes(bytes));
    grp.bench_function(BenchmarkId::new("3x3_pad1", shape_label(x.shape())), |b| {
        b.iter(|| backend::im2col(&x, &g).expect("im2col"))
    });
    grp.finish();
}

fn bench_col2im(c: &mut Criterion) {
    let g = conv_geometry();
    let col = randn(&[g.batch, g.col_rows(), g.col_cols()], 2);
    let bytes = (g.input_len() + g.col_len()) as u64 * F32;
    let mut grp = group(c, "cpu_col2im", Throughput::Bytes(bytes));
    grp.bench_function(
        BenchmarkId::new("3x3_pad1", shape_label(col.shape())),
        |b| b.iter(|| backend::col2im(&col, &g).expect("col2im")),
    );
    grp.finish();
}

fn bench_gemm(c: &mut Criterion) {
    // A square product.
    let s = 256;
    let a = randn(&[s, s], 3);
    let bm = randn(&[s, s], 4);
    let spec = GemmSpec::new(s, s, s);
    let flops = 2 * (s * s * s) as u64;
    let mut grp = group(c, "cpu_gemm", Throughput::Elements(flops));
    grp.bench_function(BenchmarkId::new("square", format!("{s}x{s}x{s}")), |b| {
        b.iter(|| backend::gemm(&spec, 1.0, &a, &bm, vec![s, s]).expect("gemm"))
    });
    grp.finish();

    // The conv forward as a batched product: W [K_OUT, C·3·3] (shared) times each image's
    // columns [C·3·3, OH·OW] into y [N, K_OUT, OH·OW].
    let g = conv_geometry();
    let (m, n, k) = (K_OUT, g.col_cols(), g.col_rows());
    let w = randn(&[m, k], 5);
    let col = randn(&[g.batch, k, n], 6);
    let spec = GemmSpec::new(m, n, k).batched(g.batch, 0, k * n, m * n);
    let flops = 2 * (g.batch * m * n * k) as u64;
    let mut grp = group(c, "cpu_gemm_conv", Throughput::Elements(flops));
    grp.bench_function(
        BenchmarkId::new("batched", format!("{}x[{m}x{n}x{k}]", g.batch)),
        |b| b.iter(|| backend::gemm(&spec, 1.0, &w, &col, vec![g.batch, m, n]).expect("gemm")),
    );
    grp.finish();
}

fn bench_maxpool(c: &mut Criterion) {
    let g = pool_geometry();
    let x = randn(&[N, C, H, W], 7);
    let out = (g.batch * g.in_channels * g.out_h * g.out_w) as u64;
    let input = g.input_len() as u64;

    // Reads x, writes y (f32) and argmax (i32).
    let fwd_bytes = input * F32 + out * (F32 + 4);
    let mut grp = group(c, "cpu_maxpool_fwd", Throughput::Bytes(fwd_bytes));
    grp.bench_function(BenchmarkId::new("2x2_s2", shape_label(x.shape())), |b| {
        b.iter(|| backend::maxpool_fwd(&x, &g).expect("maxpool_fwd"))
    });
    grp.finish();

    // Reads dy and argmax, writes dx.
    let (_, argmax) = backend::maxpool_fwd(&x, &g).expect("maxpool_fwd");
    let dy = randn(&[g.batch, g.in_channels, g.out_h, g.out_w], 8);
    let bwd_bytes = out * (F32 + 4) + input * F32;
    let mut grp = group(c, "cpu_maxpool_bwd", Throughput::Bytes(bwd_bytes));
    grp.bench_function(BenchmarkId::new("2x2_s2", shape_label(x.shape())), |b| {
        b.iter(|| backend::maxpool_bwd(&dy, &argmax, &g).expect("maxpool_bwd"))
    });
    grp.finish();
}

fn bench_relu(c: &mut Criterion) {
    let shape = [N, C, H, W];
    let x = randn(&shape, 9);
    let n = x.numel() as u64;

    // Reads x, writes y (f32) and the mask (u8).
    let mut grp = group(c, "cpu_relu_fwd", Throughput::Bytes(n * (F32 + F32 + 1)));
    grp.bench_function(BenchmarkId::from_parameter(shape_label(&shape)), |b| {
        b.iter(|| backend::relu_fwd(&x).expect("relu_fwd"))
    });
    grp.finish();

    // Reads dy and the mask, writes dx.
    let (_, mask) = backend::relu_fwd(&x).expect("relu_fwd");
    let dy = randn(&shape, 10);
    let mut grp = group(c, "cpu_relu_bwd", Throughput::Bytes(n * (F32 + 1 + F32)));
    grp.bench_function(BenchmarkId::from_parameter(shape_label(&shape)), |b| {
        b.iter(|| backend::relu_bwd(&dy, &mask).expect("relu_bwd"))
    });
    grp.finish();
}

fn bench_softmax_xent(c: &mut Criterion) {
    let (rows, classes) = (1024, 1000);
    let logits = randn(&[rows, classes], 11);
    let labels: Vec<i32> = (0..rows).map(|r| ((r * 7919) % classes) as i32).collect();
    let labels = Tensor::from_vec(labels, &[rows], Device::Cpu).expect("labels");
    // Reads logits and labels, writes probs and one loss per row.
    let bytes = (rows * classes) as u64 * (F32 + F32) + rows as u64 * (4 + F32);
    let mut grp = group(c, "cpu_softmax_xent_fwd", Throughput::Bytes(bytes));
    grp.bench_function(
        BenchmarkId::from_parameter(format!("{rows}x{classes}")),
        |b| b.iter(|| backend::softmax_xent_fwd(&logits, &labels).expect("softmax_xent_fwd")),
    );
    grp.finish();
}

fn bench_sum(c: &mut Criterion) {
    let shape = [N, C, H, W];
    let x = randn(&shape, 12);
    let mut grp = group(c, "cpu_sum", Throughput::Bytes(x.numel() as u64 * F32));
    grp.bench_function(BenchmarkId::from_parameter(shape_label(&shape)), |b| {
        b.iter(|| backend::sum(&x, 1.0).expect("sum"))
    });
    grp.finish();
}

criterion_group!(
    cpu_kernels,
    bench_im2col,
    bench_col2im,
    bench_gemm,
    bench_maxpool,
    bench_relu,
    bench_softmax_xent,
    bench_sum
);
criterion_main!(cpu_kernels);
