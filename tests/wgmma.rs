//! The Hopper tensor-core GEMM (kernels/gemm_wgmma.cu, opt-in with `KernelPolicy::wgmma`)
//! against the CPU reference on every device under test where it runs: always under the kernel
//! emulation, which decodes its shared-memory descriptors and swizzle as the PTX ISA defines them
//! and defers each wgmma to the wait that retires it; on a real GPU only with compute capability
//! 9.0 (elsewhere the products fall back to gemm_tc, and the tests say so).
//!
//! The kernels take operands whose contiguous dimension is a multiple of 8 elements; the cases
//! cover both major orders of both operands with both loaders (TMA for single products, in 128- and
//! 256-wide tiles, and cp.async),
//! partial 128-tiles, k panels that wrap the 4-stage ring with a partial last panel, batches,
//! groups, batch sums, and whole layers under autocast.

mod tensor_core_support;

use kiln::backend::RawTensor;
use kiln::cuda::{count_launches, with_kernel_policy, KernelPolicy};
use kiln::testing::check_parity;
use kiln::{autocast, backend, ops, DType, Device, GemmSpec, Tensor, Window2d};
use tensor_core_support::{check_product, grouped_conv_products, random, transposed};

/// Products the wgmma kernels ran: (all, those loaded with TMA).
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
struct Launches {
    all: u64,
    tma: u64,
}

/// How single products load and tile: TMA with 128- or 256-wide tiles, or cp.async.
#[derive(Debug, Clone, Copy)]
enum Loader {
    Tma,
    TmaWide,
    CpAsync,
}

/// Runs `work` with the wgmma kernels enabled on `device`, single products taking `loader`, and
/// returns how many products they ran on this thread (the per-kernel launch counts of
/// `kiln::cuda::count_launches`: tests running in parallel count apart).
fn wgmma_launches_during(device: Device, loader: Loader, work: impl FnOnce()) -> Launches {
    let policy = KernelPolicy {
        wgmma: true,
        wgmma_tma: !matches!(loader, Loader::CpAsync),
        wgmma_wide: matches!(loader, Loader::TmaWide),
        ..KernelPolicy::DEFAULT
    };
    let ((), counts) = count_launches(|| with_kernel_policy(device, policy, work));
    let sum = |prefix: &str| {
        counts
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(_, n)| n)
            .sum()
    };
    Launches {
        all: sum("gemm_wgmma_"),
        tma: sum("gemm_wgmma_tma_"),
    }
}

/// Whether `device` runs the wgmma kernel; prints why not when it does not.
fn runs_wgmma(device: Device) -> bool {
    let runs = wgmma_launches_during(device, Loader::Tma, || {
        let spec = GemmSpec::new(8, 8, 8);
        let a = backend::cast(&random(64, 1), DType::BF16).unwrap();
        let on = |t: &RawTensor| t.to_device(device).unwrap();
        backend::gemm(&spec, 1.0, &on(&a), &on(&a), vec![64]).unwrap();
    })
    .all > 0;
    if !runs {
        eprintln!("wgmma: skipped on {device:?}: not a compute capability 9.0 GPU");
    }
    runs
}

fn wgmma_gemm_matches_the_cpu_for_both_major_orders_of_both_operands(device: Device) {
    if !runs_wgmma(device) {
        return;
    }
    for (i, dtype) in [DType::BF16, DType::F16].into_iter().enumerate() {
        for (j, (ta, tb)) in [(false, false), (false, true), (true, false), (true, true)]
            .into_iter()
            .enumerate()
        {
            // An MN-major operand needs its m or n to be a multiple of 8; a K-major one
            // does not. k = 5·64 + 8: six panels, wrapping the ring, the last one partial.
            let m = if ta { 136 } else { 131 };
            let n = if tb { 133 } else { 200 };
            let spec = transposed(m, n, 328, ta, tb);
            // Loaded by TMA (a single product's default) into 128- and 256-wide tiles (n is
            // past one 128 tile), and by cp.async.
            for loader in [Loader::Tma, Loader::TmaWide, Loader::CpAsync] {
                let seed = 500 + 10 * i as u64 + j as u64;
                let launches = wgmma_launches_during(device, loader, || {
                    check_product(device, dtype, &spec, seed)
                });
                let expected = Launches {
                    all: 1,
                    tma: !matches!(loader, Loader::CpAsync) as u64,
                };
                assert_eq!(launches, expected, "{spec:?}, {loader:?}");
            }
        }
    }
}
kiln::test_device!(
    wgmma_gemm_matches_the_cpu_for_both_major_orders_of_both_operands,
    gpu
);

fn wgmma_gemm_batches_groups_and_batch_sums(device: Device) {
    if !runs_wgmma(device) {
        return;
    }
    // A grouped convolution's three products with 16-element-aligned shapes: 3 images, 2
    // groups of 16 output channels, 8·9 column rows and 48 pixels per group.
    for (i, spec) in grouped_conv_products(3, 2, 16, 72, 48).iter().enumerate() {
        let launches = wgmma_launches_during(device, Loader::Tma, || {
            check_product(device, DType::BF16, spec, 600 + i as u64)
        });
        // Batched and grouped products always load with cp.async.
        assert_eq!(launches, Launches { all: 1, tma: 0 }, "{spec:?}");
    }
}
kiln::test_device!(wgmma_gemm_batches_groups_and_batch_sums, gpu);

fn an_empty_inner_dimension_writes_zeros_without_a_tensor_map(device: Device) {
    if !runs_wgmma(device) {
        return;
    }
    // No tensor map can describe a matrix with no columns: the cp.async kernel takes it.
    let spec = transposed(72, 40, 0, false, true);
    let launches = wgmma_launches_during(device, Loader::Tma, || {
        check_product(device, DType::BF16, &spec, 710)
    });
    assert_eq!(launches, Launches { all: 1, tma: 0 });
}
kiln::test_device!(
    an_empty_inner_dimension_writes_zeros_without_a_tensor_map,
    gpu
);

fn unaligned_products_fall_back_to_the_mma_sync_kernel(device: Device) {
    // k = 29 is no multiple of 8: neither K-major operand can be copied 16 bytes at a time.
    let spec = transposed(37, 45, 29, false, true);
    let launches = wgmma_launches_during(device, Loader::Tma, || {
        check_product(device, DType::BF16, &spec, 700)
    });
    assert_eq!(launches, Launches { all: 0, tma: 0 });
}
kiln::test_device!(unaligned_products_fall_back_to_the_mma_sync_kernel, gpu);

fn layers_under_autocast_agree_with_the_cpu_through_the_wgmma_kernel(device: Device) {
    let randn = |shape: &[usize], seed| Tensor::randn(shape, 1.0, seed, Device::Cpu).unwrap();
    let (atol, rtol) = (1e-4, 1e-4);
    if !runs_wgmma(device) {
        return;
    }
    // 8x8 images: 64 pixels, 8·9 = 72 column rows, 16 output channels, so the forward, input
    // gradient and weight gradient products all qualify; the bias goes through the epilogue.
    let conv = [
        randn(&[2, 8, 8, 8], 1),
        randn(&[16, 8, 3, 3], 2),
        randn(&[16], 3),
    ];
    let linear = [randn(&[24, 40], 4), randn(&[16, 40], 5), randn(&[16], 6)];
    let launches = wgmma_launches_during(device, Loader::Tma, || {
        check_parity("wgmma conv2d", device, &conv, atol, rtol, |t| {
            let window = Window2d::square(3, 1, 1);
            autocast(DType::BF16, || {
                ops::conv2d(&t[0], &t[1], Some(&t[2]), window)
            })?
        });
        check_parity("wgmma linear", device, &linear, atol, rtol, |t| {
            autocast(DType::BF16, || ops::linear(&t[0], &t[1], Some(&t[2])))?
        });
    });
    // Both loaders: the convolution's batched products and the linear layer's single ones.
    assert!(
        launches.all >= 6,
        "only {launches:?} took the wgmma kernels"
    );
    assert!(launches.tma >= 1, "{launches:?}");
}
kiln::test_device!(
    layers_under_autocast_agree_with_the_cpu_through_the_wgmma_kernel,
    gpu
);
