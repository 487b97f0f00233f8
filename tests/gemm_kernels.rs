//! The two GEMM kernels against the CPU reference, through `kiln::backend::gemm`, on every device
//! under test (the kernel emulation always, a real GPU where one is usable).
//!
//! src/cuda/gemm.rs sends a product to `gemm_128x128_f32` when m ≥ 128, n ≥ 128 and k ≥ 8, and to
//! `gemm_f32` otherwise; the big kernel uses 16-byte loads and stores per operand only when that
//! operand's base, strides and leading dimension allow them, and guarded scalar accesses otherwise
//! and at partial tiles. The cases below are chosen to hit each of those paths.

use kiln::cuda::{count_launches, with_kernel_policy, KernelPolicy};
use kiln::testing::{assert_close, random_away_from_zero};
use kiln::{backend, Device, GemmSpec, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// fp32 sums of up to ~1000 products of values in [-1, 1): rounding stays far below these.
const ATOL: f64 = 1e-4;
const RTOL: f64 = 1e-4;

/// The 128x128-tile kernel is opt-in until a GPU benchmark shows it winning.
const LARGE: KernelPolicy = KernelPolicy {
    large_tiles: true,
    ..KernelPolicy::DEFAULT
};

fn random(len: usize, seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    Tensor::from_vec(
        random_away_from_zero(&mut rng, len, 1e-3),
        &[len],
        Device::Cpu,
    )
    .unwrap()
}

/// Runs `spec` with fresh random operands of the lengths it needs on the CPU and on `device` and
/// compares the results.
#[track_caller]
fn check(device: Device, what: &str, spec: &GemmSpec, alpha: f64, seed: u64) {
    // Large tiles on, beside whatever the calling test chose.
    let policy = KernelPolicy {
        large_tiles: true,
        ..kiln::cuda::kernel_policy(device).unwrap()
    };
    let (la, lb, lc) = spec.required_lens();
    let a = random(la, seed);
    let b = random(lb, seed + 1);
    let cpu = backend::gemm(spec, alpha, &a, &b, vec![lc]).unwrap();
    let (a, b) = (a.to_device(device).unwrap(), b.to_device(device).unwrap());
    let gpu = with_kernel_policy(device, policy, || {
        backend::gemm(spec, alpha, &a, &b, vec![lc]).unwrap()
    });
    eprintln!("{what}: {spec:?} on {device:?}");
    assert_close(
        &gpu.to_vec::<f32>().unwrap(),
        &cpu.to_vec::<f32>().unwrap(),
        ATOL,
        RTOL,
    );
}

fn with_transposes(spec: GemmSpec, ta: bool, tb: bool) -> GemmSpec {
    let mut spec = spec;
    spec.trans_a = ta;
    spec.trans_b = tb;
    spec
}

const TRANSPOSES: [(bool, bool); 4] = [(false, false), (true, false), (false, true), (true, true)];

fn big_tile_gemm_matches_cpu_for_every_transpose(device: Device) {
    // (m, n, k): one exact tile; several full tiles with vector accesses everywhere; partial
    // tiles in m, n and a partial last k panel (k = 37: k-major operands lose their vector
    // loads, n = 129 the vector stores); m = 130 (a transposed A loses its vector loads) with
    // a short k of 9 (one full panel and a 1-deep one).
    for (m, n, k) in [
        (128, 128, 8),
        (256, 384, 64),
        (257, 129, 37),
        (130, 1000, 9),
    ] {
        for (i, (ta, tb)) in TRANSPOSES.into_iter().enumerate() {
            let spec = with_transposes(GemmSpec::new(m, n, k), ta, tb);
            check(device, "single", &spec, 1.0, 10 * i as u64 + m as u64);
        }
    }
}
kiln::test_device!(big_tile_gemm_matches_cpu_for_every_transpose, gpu);

fn big_tile_gemm_matches_cpu_for_batches_groups_and_alpha(device: Device) {
    let (m, n, k) = (136, 132, 20);
    for (i, (ta, tb)) in TRANSPOSES.into_iter().enumerate() {
        let seed = 100 + 10 * i as u64;
        // Batch of 3 sharing one A (stride 0), alpha 0.5.
        let shared_a = with_transposes(GemmSpec::new(m, n, k).batched(3, 0, k * n, m * n), ta, tb);
        check(device, "batch, shared A", &shared_a, 0.5, seed);
        // Two groups per batch entry, batch 2 (grouped convolution's layout).
        let grouped = with_transposes(
            GemmSpec::new(m, n, k)
                .batched(2, 2 * m * k, 2 * k * n, 2 * m * n)
                .grouped(2, m * k, k * n, m * n),
            ta,
            tb,
        );
        check(device, "batch and groups", &grouped, 1.0, seed + 1);
        // The batch summed into one C (weight gradients), per group.
        check(
            device,
            "reduced batch",
            &grouped.summed_over_batch(),
            0.5,
            seed + 2,
        );
    }
}
kiln::test_device!(big_tile_gemm_matches_cpu_for_batches_groups_and_alpha, gpu);

fn big_tile_gemm_matches_cpu_with_misaligned_operands(device: Device) {
    // Batch strides of A and B one float past a multiple of 4: every batch entry after the first
    // starts off 16-byte alignment, so the kernel must use its scalar loads for A and B. (C
    // keeps a dense stride: a gap would hold unwritten values; n = 129 above covers C's
    // scalar stores.)
    let (m, n, k) = (128, 136, 16);
    for (i, (ta, tb)) in TRANSPOSES.into_iter().enumerate() {
        let spec = with_transposes(
            GemmSpec::new(m, n, k).batched(2, m * k + 1, k * n + 1, m * n),
            ta,
            tb,
        );
        check(device, "misaligned batch", &spec, 1.0, 200 + i as u64);
        check(
            device,
            "misaligned reduced batch",
            &spec.summed_over_batch(),
            1.0,
            210 + i as u64,
        );
    }
}
kiln::test_device!(big_tile_gemm_matches_cpu_with_misaligned_operands, gpu);

fn small_gemms_keep_the_64_tile_kernel_and_match_cpu(device: Device) {
    // m < 128, n < 128, k < 8: each sends the product to gemm_f32.
    for (m, n, k) in [(127, 300, 40), (200, 100, 33), (160, 140, 7)] {
        for (i, (ta, tb)) in TRANSPOSES.into_iter().enumerate() {
            let spec = with_transposes(GemmSpec::new(m, n, k).batched(2, m * k, 0, m * n), ta, tb);
            check(
                device,
                "fallback",
                &spec,
                0.5,
                300 + 10 * i as u64 + m as u64,
            );
        }
    }
}
kiln::test_device!(small_gemms_keep_the_64_tile_kernel_and_match_cpu, gpu);

/// A convolution's bias is added in the GEMM's epilogue: with 130 output channels (one group, and
/// two groups of 65) and 13x12 = 156 output pixels, the forward product takes the 128x128-tile
/// kernel's vector and scalar stores (and the 64x64 kernel for the groups); outputs and every
/// gradient match the CPU.
fn convolution_bias_in_the_gemm_epilogue_matches_the_cpu(device: Device) {
    use kiln::testing::check_parity;
    use kiln::{ops, Window2d};
    let randn = |shape: &[usize], seed| Tensor::randn(shape, 1.0, seed, Device::Cpu).unwrap();
    // 130 channels: one group (128x128 kernel), two of 65 (64x64); 256 in two groups of 128
    // (the 128x128 kernel's bias of group 1).
    for (channels, groups) in [(130, 1), (130, 2), (256, 2)] {
        let inputs = [
            randn(&[2, 4, 13, 12], 1),
            randn(&[channels, 4 / groups, 3, 3], 2),
            randn(&[channels], 3),
        ];
        with_kernel_policy(device, LARGE, || {
            check_parity("conv bias", device, &inputs, ATOL, RTOL, |t| {
                let window = Window2d::square(3, 1, 1);
                ops::conv2d_groups(&t[0], &t[1], Some(&t[2]), window, groups)
            })
        });
    }
}
kiln::test_device!(convolution_bias_in_the_gemm_epilogue_matches_the_cpu, gpu);

/// A linear layer's bias is added per column in the GEMM's epilogue (`backend::linear_forward`):
/// 130 x 150 and 130 x 152 outputs take the 128x128-tile kernel's scalar and vector stores, 5 x 37
/// the 64x64 kernel, and with flat tiles on, 5 and 20 rows the 16x256 and 32x128 kernels; outputs
/// and every gradient match the CPU.
fn linear_bias_in_the_gemm_epilogue_matches_the_cpu(device: Device) {
    use kiln::ops;
    use kiln::testing::check_parity;
    let randn = |shape: &[usize], seed| Tensor::randn(shape, 1.0, seed, Device::Cpu).unwrap();
    for (rows, out, flat) in [
        (130, 150, false),
        (130, 152, false),
        (5, 37, false),
        (5, 37, true),
        (20, 41, true),
    ] {
        let policy = KernelPolicy {
            flat_tiles: flat,
            ..LARGE
        };
        let inputs = [
            randn(&[rows, 67], 4),
            randn(&[out, 67], 5),
            randn(&[out], 6),
        ];
        with_kernel_policy(device, policy, || {
            check_parity("linear bias", device, &inputs, ATOL, RTOL, |t| {
                ops::linear(&t[0], &t[1], Some(&t[2]))
            })
        });
    }
}
kiln::test_device!(linear_bias_in_the_gemm_epilogue_matches_the_cpu, gpu);

/// The flat-tile kernels for products with few rows (`KernelPolicy::flat_tiles`):
/// gemm_16x256_f32 for m ≤ 16 and gemm_32x128_f32 for m ≤ 32, at m on and off their tile edges,
/// n and k not multiples of any tile or panel, every transpose, batches with a shared A, groups,
/// batch sums and alpha, and the convolution (with its bias) that uses them.
fn flat_tile_gemms_match_cpu(device: Device) {
    use kiln::testing::check_parity;
    use kiln::{ops, Window2d};
    let flat = KernelPolicy {
        flat_tiles: true,
        ..KernelPolicy::DEFAULT
    };
    let ((), launched) = count_launches(|| {
        with_kernel_policy(device, flat, || {
            for (m, n, k) in [
                (1, 300, 7),
                (16, 257, 37),
                (17, 129, 16),
                (32, 1000, 9),
                (30, 5, 50),
            ] {
                for (i, (ta, tb)) in TRANSPOSES.into_iter().enumerate() {
                    let seed = 300 + 10 * i as u64 + m as u64;
                    let single = with_transposes(GemmSpec::new(m, n, k), ta, tb);
                    check(device, "flat single", &single, 1.0, seed);
                    let grouped = with_transposes(
                        GemmSpec::new(m, n, k)
                            .batched(2, 0, 2 * k * n, 2 * m * n)
                            .grouped(2, m * k, k * n, m * n),
                        ta,
                        tb,
                    );
                    check(device, "flat batch and groups", &grouped, 0.5, seed + 1);
                    check(
                        device,
                        "flat reduced batch",
                        &grouped.summed_over_batch(),
                        1.0,
                        seed + 2,
                    );
                }
            }
            let randn =
                |shape: &[usize], seed| Tensor::randn(shape, 1.0, seed, Device::Cpu).unwrap();
            // 16 and 30 channels in one group; 32 in two groups of 16 (the bias of group 1).
            for (channels, groups) in [(16, 1), (30, 1), (32, 2)] {
                let inputs = [
                    randn(&[3, 6, 11, 13], 1),
                    randn(&[channels, 6 / groups, 3, 3], 2),
                    randn(&[channels], 3),
                ];
                check_parity("flat conv", device, &inputs, ATOL, RTOL, |t| {
                    let window = Window2d::square(3, 1, 1);
                    ops::conv2d_groups(&t[0], &t[1], Some(&t[2]), window, groups)
                });
            }
        });
    });
    let launches = |kernel| launched.get(kernel).copied().unwrap_or(0);
    assert!(
        launches("gemm_16x256_f32") > 0 && launches("gemm_32x128_f32") > 0,
        "the flat kernels did not run on {device}: {launched:?}"
    );
}
kiln::test_device!(flat_tile_gemms_match_cpu, gpu);
