//! The flat-tile tensor-core GEMMs (gemm_tc_16x256_*, gemm_tc_32x256_*: products with at most 32
//! rows, opt-in with `KernelPolicy::flat_tiles`) against the CPU reference on every device
//! under test: m on and off the tile edges, n and k no multiples of any tile or panel, every
//! transpose, the 16-byte-load path (A [m][k], B [n][k], k a multiple of 8), batches and groups,
//! and convolution layers with 16 and 30 output channels under autocast, bias included.

mod tensor_core_support;

use std::collections::BTreeMap;

use kiln::cuda::{count_launches, with_kernel_policy, KernelPolicy};
use kiln::testing::check_parity;
use kiln::{autocast, ops, DType, Device, GemmSpec, Tensor, Window2d};
use tensor_core_support::{check_product, transposed};

const TRANSPOSES: [(bool, bool); 4] = [(false, false), (false, true), (true, false), (true, true)];

const FLAT: KernelPolicy = KernelPolicy {
    flat_tiles: true,
    ..KernelPolicy::DEFAULT
};

/// Runs `work` with flat tiles on `device` (for this thread only) and checks that both flat
/// tensor-core tiles ran.
fn on_flat_tiles(device: Device, work: impl FnOnce()) {
    let ((), launched) = count_launches(|| with_kernel_policy(device, FLAT, work));
    assert!(
        ran_flat(&launched, 16) && ran_flat(&launched, 32),
        "on {device}: {launched:?}"
    );
}

/// Whether a flat tensor-core kernel with `rows` rows is among `launched`.
fn ran_flat(launched: &BTreeMap<&str, u64>, rows: usize) -> bool {
    let prefix = format!("gemm_tc_{rows}x256_");
    launched.keys().any(|k| k.starts_with(&prefix))
}

fn flat_tensor_core_gemms_match_the_cpu(device: Device) {
    on_flat_tiles(device, || flat_products(device));
}
kiln::test_device!(flat_tensor_core_gemms_match_the_cpu, gpu);

fn flat_products(device: Device) {
    for (i, dtype) in [DType::BF16, DType::F16].into_iter().enumerate() {
        for (m, n, k) in [
            (1, 300, 37),
            (16, 257, 72),
            (17, 129, 40),
            (32, 520, 29),
            (30, 5, 96),
        ] {
            for (j, (ta, tb)) in TRANSPOSES.into_iter().enumerate() {
                let seed = 800 + 100 * i as u64 + 10 * j as u64 + m as u64;
                check_product(device, dtype, &transposed(m, n, k, ta, tb), seed);
            }
        }
    }
    // Batches with a shared A and groups, as a grouped convolution's forward.
    let (m, n, k) = (16, 300, 48);
    let spec = GemmSpec::new(m, n, k)
        .batched(2, 0, 2 * k * n, 2 * m * n)
        .grouped(2, m * k, k * n, m * n);
    check_product(device, DType::BF16, &spec, 900);
}

fn convolutions_with_few_channels_agree_with_the_cpu_on_flat_tensor_core_tiles(device: Device) {
    let randn = |shape: &[usize], seed| Tensor::randn(shape, 1.0, seed, Device::Cpu).unwrap();
    let (atol, rtol) = (1e-4, 1e-4);
    for channels in [16, 30] {
        let inputs = [
            randn(&[3, 6, 11, 13], 1),
            randn(&[channels, 6, 3, 3], 2),
            randn(&[channels], 3),
        ];
        let run = || {
            check_parity("flat tensor-core conv", device, &inputs, atol, rtol, |t| {
                let window = Window2d::square(3, 1, 1);
                autocast(DType::BF16, || {
                    ops::conv2d(&t[0], &t[1], Some(&t[2]), window)
                })?
            })
        };
        // 16 channels take the 16-row tile, 30 the 32-row one.
        let ((), launched) = count_launches(|| with_kernel_policy(device, FLAT, run));
        let rows = if channels == 16 { 16 } else { 32 };
        assert!(
            ran_flat(&launched, rows),
            "{channels} channels on {device}: {launched:?}"
        );
    }
}
kiln::test_device!(
    convolutions_with_few_channels_agree_with_the_cpu_on_flat_tensor_core_tiles,
    gpu
);
