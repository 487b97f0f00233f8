//! Helpers shared by tests/tensor_core.rs (the mma.sync GEMM) and tests/wgmma.rs (the Hopper one).
#![allow(dead_code)]

use kiln::backend::RawTensor;
use kiln::testing::{assert_close, random_away_from_zero};
use kiln::{backend, DType, Device, GemmSpec, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;

pub fn random(len: usize, seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    Tensor::from_vec(
        random_away_from_zero(&mut rng, len, 1e-3),
        &[len],
        Device::Cpu,
    )
    .unwrap()
}

/// The product of the operands rounded to `dtype`, in f64 on the CPU.
pub fn reference(
    spec: &GemmSpec,
    alpha: f64,
    a: &RawTensor,
    b: &RawTensor,
    len_c: usize,
) -> Vec<f32> {
    let widen = |t: &RawTensor| {
        backend::cast(t, DType::F32)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
    };
    backend::gemm(spec, alpha, &widen(a), &widen(b), vec![len_c])
        .unwrap()
        .to_vec::<f64>()
        .unwrap()
        .iter()
        .map(|&v| v as f32)
        .collect()
}

/// Runs `spec` on fresh random operands rounded to `dtype` on the CPU and on `device`, and
/// compares both with the f64 product of the rounded operands.
#[track_caller]
pub fn check_product(device: Device, dtype: DType, spec: &GemmSpec, seed: u64) {
    let (la, lb, lc) = spec.required_lens();
    let a = backend::cast(&random(la, seed), dtype).unwrap();
    let b = backend::cast(&random(lb, seed + 1), dtype).unwrap();
    let alpha = 0.75;
    let expected = reference(spec, alpha, &a, &b, lc);
    let cpu = backend::gemm(spec, alpha, &a, &b, vec![lc]).unwrap();
    let on_device = |t: &RawTensor| t.to_device(device).unwrap();
    let gpu = backend::gemm(spec, alpha, &on_device(&a), &on_device(&b), vec![lc]).unwrap();
    eprintln!("{dtype:?} {spec:?} on {device:?}");
    // Only the output matrices: a device result's gaps between them are never written.
    let outputs = |v: Vec<f32>| -> Vec<f32> {
        let mn = spec.m * spec.n;
        let slots = if spec.reduce_batch { 1 } else { spec.batch };
        (0..slots)
            .flat_map(|z| {
                (0..spec.groups).map(move |g| z * spec.stride_c + g * spec.group_stride_c)
            })
            .flat_map(|at| v[at..][..mn].to_vec())
            .collect()
    };
    let expected = outputs(expected);
    // f32 sums of up to ~200 products of values in [-1, 1], in different orders.
    let tol = 2e-5 * (spec.k as f64).sqrt();
    assert_close(&outputs(cpu.to_vec::<f32>().unwrap()), &expected, tol, 1e-5);
    assert_close(&outputs(gpu.to_vec::<f32>().unwrap()), &expected, tol, 1e-5);
}

pub fn transposed(m: usize, n: usize, k: usize, ta: bool, tb: bool) -> GemmSpec {
    let mut spec = GemmSpec::new(m, n, k);
    spec.trans_a = ta;
    spec.trans_b = tb;
    spec
}

/// A grouped convolution's three products (forward, input gradient, weight gradient summed over
/// the batch) as GroupedConv specifies them: `images` images, `groups` groups of `k_g` output
/// channels, `rows_g` column rows (C/groups·kh·kw) and `pixels` output pixels per group.
pub fn grouped_conv_products(
    images: usize,
    groups: usize,
    k_g: usize,
    rows_g: usize,
    pixels: usize,
) -> [GemmSpec; 3] {
    let (rows, k) = (rows_g * groups, k_g * groups);
    let forward = GemmSpec::new(k_g, pixels, rows_g)
        .batched(images, 0, rows * pixels, k * pixels)
        .grouped(groups, k_g * rows_g, rows_g * pixels, k_g * pixels);
    let input_grad = transposed(rows_g, pixels, k_g, true, false)
        .batched(images, 0, k * pixels, rows * pixels)
        .grouped(groups, k_g * rows_g, k_g * pixels, rows_g * pixels);
    let weight_grad = transposed(k_g, rows_g, pixels, false, true)
        .batched(images, k * pixels, rows * pixels, 0)
        .grouped(groups, k_g * pixels, rows_g * pixels, k_g * rows_g)
        .summed_over_batch();
    [forward, input_grad, weight_grad]
}
